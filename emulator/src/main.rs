//! `gemfleet-emulator`: serve the Gemini API stand-in from a TOML config.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use gemfleet_emulator::{Config, Emulator};

/// A Gemini API stand-in faithful to quotas, error bodies and SSE streaming, with a ledger.
///
/// Point a client at it with GOOGLE_GEMINI_BASE_URL=http://ADDR and one of the configured key
/// secrets as GEMINI_API_KEY. Admin endpoints live under /_emulator/ (ledger, reset, clock,
/// keys/{name}/state); see docs/emulator.md and emulator/examples/emulator.toml.
#[derive(Parser, Debug)]
#[command(name = "gemfleet-emulator", version)]
struct Args {
    /// Address to listen on.
    #[arg(
        long,
        env = "GEMFLEET_EMULATOR_LISTEN",
        default_value = "127.0.0.1:8787"
    )]
    listen: SocketAddr,
    /// The emulator config (TOML): projects, limits, keys, models, latency, faults, script.
    #[arg(long, env = "GEMFLEET_EMULATOR_CONFIG")]
    config: PathBuf,
    /// Validate the config and exit.
    #[arg(long)]
    check: bool,
    /// Log line format (filter with RUST_LOG, default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Errors print as one line with their causes, never as a Debug dump with a backtrace.
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gemfleet-emulator: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log_format);
    let config = Config::load(&args.config)?;
    if args.check {
        println!(
            "config ok: {} projects, {} keys, {} models, minute = {} s",
            config.projects.len(),
            config.keys.len(),
            config.models.len(),
            config.minute_seconds
        );
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let running = Emulator::serve(listener, config).await?;
    tracing::info!(base_url = %running.base_url(), "ready");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}
