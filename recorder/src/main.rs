//! `gemfleet-recorder`: thin entry point; everything lives in the library.

use clap::Parser;
use gemfleet_recorder::cli::{Cli, Command};
use gemfleet_recorder::settings::{LogFormat, Settings};
use gemfleet_recorder::{Recorder, cli};
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let b = tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Errors print as one line with their causes, never as a Debug dump with a backtrace.
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gemfleet-recorder: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let mut settings = Settings::load(cli.config.as_deref())?;
    if let Some(f) = cli.log_format {
        settings.log_format = f;
    }
    init_logging(settings.log_format);
    match cli.command {
        Command::Serve => serve(settings).await,
        Command::SlackBridge(args) => gemfleet_recorder::slack_bridge::run_command(args).await,
        other => cli::run_admin(other, &settings).await,
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let running = Recorder::start(settings).await?;
    tracing::info!(http = %running.http_addr(), "recorder running");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: stopping"),
    }
    running.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}
