//! Command-line entry: parses arguments and dispatches to the subcommands.

use crate::daemon;
use crate::runner::{self, Control};
use crate::settings::Settings;
use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use gemfleet_protocol::{ModelName, TaskId};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "gemfleet-agent",
    version,
    about = "gemfleet's per-machine agent: a local Gemini API proxy that shares a fleet's keys without tripping quotas",
    after_help = "Settings come from --config (default <data dir>/agent.toml), then GEMFLEET_AGENT_* environment variables (e.g. GEMFLEET_AGENT_BROKER__HOST), then flags. See docs/agent.md."
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: the machine's MQTT session, the local Gemini proxy, the outbox.
    Serve(DaemonArgs),
    /// Run one Gemini CLI task through the daemon, resuming the task's conversation.
    Run(RunArgs),
    /// Show the daemon's broker connection, outbox, cold keys and quota groups, proxy address.
    Status(StatusArgs),
    /// Print what an interactive user needs to point their own `gemini` at the daemon.
    Env(StatusArgs),
    /// Classify a Gemini API error (body, SSE stream text or Gemini CLI output) the way the fleet reads it.
    Classify(crate::classify_cmd::ClassifyArgs),
}

/// Settings every daemon-starting command takes.
#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    /// Settings file (TOML).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Agent id = MQTT client id = broker username (default: the hostname).
    #[arg(long)]
    pub agent_id: Option<String>,
    /// Data directory: outbox, state file, task homes (default ~/.local/state/gemfleet).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Broker as HOST:PORT (default 127.0.0.1:1883).
    #[arg(long)]
    pub broker: Option<String>,
    /// Proxy listen address (loopback; default 127.0.0.1:8741).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Gemini API base URL (default https://generativelanguage.googleapis.com).
    #[arg(long)]
    pub upstream: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// Task id (default {hostname}-{YYYY-MM-DD}); the same id resumes the same conversation on any machine.
    #[arg(long)]
    pub task: Option<String>,
    /// Model for every request of the run (sets GEMINI_MODEL; default: the CLI's own choice).
    #[arg(long)]
    pub model: Option<String>,
    /// Working directory for gemini (default: the current directory).
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Path of the Gemini CLI (default: GEMFLEET_GEMINI, node_modules/.bin/gemini, PATH).
    #[arg(long)]
    pub gemini: Option<PathBuf>,
    /// Arguments for gemini, e.g. `-- -p "fix the tests" -o json`.
    #[arg(last = true)]
    pub gemini_args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Settings file (TOML).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory of the daemon to ask.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Classify(args) = cli.command {
        return crate::classify_cmd::run(args);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let quiet = matches!(
        cli.command,
        Command::Run(_) | Command::Status(_) | Command::Env(_)
    );
    init_logging(cli.log_format, if quiet { "warn" } else { "info" });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gemfleet-agent: cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Serve(a) => serve(a).await.map(|_| 0),
            Command::Run(a) => run(a).await,
            Command::Status(a) => status(a).await.map(|_| 0),
            Command::Env(a) => env(a).await.map(|_| 0),
            Command::Classify(_) => Ok(0),
        }
    });
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1)),
        Err(e) => {
            eprintln!("gemfleet-agent: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GEMFLEET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let b = tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

/// Settings from the file and environment, then the flags.
pub fn settings_from(a: &DaemonArgs) -> anyhow::Result<Settings> {
    let mut s = Settings::load(a.config.as_deref())?;
    if let Some(v) = &a.agent_id {
        s.agent_id = Some(v.clone());
    }
    if let Some(v) = &a.data_dir {
        s.data_dir = Some(v.clone());
    }
    if let Some(b) = &a.broker {
        let (h, p) = b
            .rsplit_once(':')
            .with_context(|| format!("--broker {b:?}: expected HOST:PORT"))?;
        s.broker.host = h.to_string();
        s.broker.port = p
            .parse()
            .with_context(|| format!("--broker {b:?}: bad port"))?;
    }
    if let Some(v) = a.listen {
        s.listen = v;
    }
    if let Some(v) = &a.upstream {
        s.upstream_base_url = v.clone();
    }
    s.validate()?;
    Ok(s)
}

async fn serve(a: DaemonArgs) -> anyhow::Result<()> {
    let s = settings_from(&a)?;
    let flush = Duration::from_millis(s.flush_timeout_ms);
    let d = daemon::start(s, true).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    d.shutdown(flush).await;
    Ok(())
}

/// The running daemon of `data_dir`, if its state file names one that answers.
async fn find_daemon(
    data_dir: &std::path::Path,
) -> Option<(Control, crate::control::StatusReport)> {
    let sf = daemon::read_state_file(data_dir)?;
    let c = Control::new(format!("http://{}", sf.addr)).ok()?;
    let st = c.status(Duration::from_secs(2)).await.ok()?;
    Some((c, st))
}

async fn run(a: RunArgs) -> anyhow::Result<i32> {
    let mut s = settings_from(&a.daemon)?;
    let task = match &a.task {
        Some(t) => {
            TaskId::parse(t.clone()).map_err(|e| anyhow::anyhow!("bad --task {t:?}: {e}"))?
        }
        None => runner::default_task_id().map_err(|e| {
            anyhow::anyhow!("cannot derive a task id from the hostname: {e}; pass --task")
        })?,
    };
    let model = match &a.model {
        Some(m) => {
            Some(ModelName::parse_api(m).map_err(|e| anyhow::anyhow!("bad --model {m:?}: {e}"))?)
        }
        None => None,
    };
    let gemini = runner::find_gemini(a.gemini.as_deref())?;
    let cwd = match &a.cwd {
        Some(c) => c.clone(),
        None => std::env::current_dir()?,
    };
    let cwd = cwd
        .canonicalize()
        .with_context(|| format!("--cwd {}", cwd.display()))?;
    if !cwd.is_dir() {
        bail!("--cwd {} is not a directory", cwd.display());
    }
    let data_dir = s.data_dir()?;
    let flush_timeout = Duration::from_millis(s.flush_timeout_ms);
    let req = runner::RunRequest {
        task: task.clone(),
        model,
        cwd,
        gemini,
        gemini_args: a.gemini_args.clone(),
        data_dir: data_dir.clone(),
        flush_timeout,
    };
    let (control, embedded) = match find_daemon(&data_dir).await {
        Some((c, _)) => (c, None),
        None => {
            // No daemon: run one for this command's lifetime, on a free port.
            s.listen = SocketAddr::from(([127, 0, 0, 1], 0));
            let d = daemon::start(s, false)
                .await
                .context("starting an embedded daemon (no running `gemfleet-agent serve` found)")?;
            wait_connected(&d).await?;
            (Control::new(d.base_url())?, Some(d))
        }
    };
    let outcome = runner::run(&control, &req).await;
    if let Some(d) = embedded {
        d.shutdown(flush_timeout).await;
    }
    let outcome = outcome?;
    eprintln!("{}", runner::summary(&task, &outcome));
    Ok(outcome.exit_code)
}

/// An embedded daemon must reach the broker before the run makes sense.
async fn wait_connected(d: &daemon::RunningDaemon) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !d.shared.mesh.is_connected() {
        if tokio::time::Instant::now() > deadline {
            let c = d.shared.mesh.connection();
            bail!(
                "cannot reach the MQTT broker at {}: {} (start mosquitto or set GEMFLEET_AGENT_BROKER__HOST/PORT or --broker)",
                c.broker,
                c.last_error.unwrap_or_else(|| "no answer".into())
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn status_settings(a: &StatusArgs) -> anyhow::Result<Settings> {
    settings_from(&DaemonArgs {
        config: a.config.clone(),
        agent_id: None,
        data_dir: a.data_dir.clone(),
        broker: None,
        listen: None,
        upstream: None,
    })
}

async fn status(a: StatusArgs) -> anyhow::Result<()> {
    let s = status_settings(&a)?;
    let data_dir = s.data_dir()?;
    let Some((_, st)) = find_daemon(&data_dir).await else {
        bail!(
            "no gemfleet-agent daemon is running for data dir {} (start one with `gemfleet-agent serve`)",
            data_dir.display()
        );
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(());
    }
    println!(
        "agent      {} (version {}, pid {})",
        st.agent_id, st.version, st.pid
    );
    println!("proxy      {}  → upstream {}", st.proxy, st.upstream);
    let b = &st.broker;
    if b.connected {
        println!(
            "broker     {} connected since {}",
            b.broker,
            b.since.map(|t| t.to_rfc3339()).unwrap_or_default()
        );
    } else {
        println!(
            "broker     {} NOT CONNECTED: {}",
            b.broker,
            b.last_error.clone().unwrap_or_else(|| "connecting".into())
        );
    }
    if let Some(o) = &st.outbox {
        let oldest = match (o.oldest_seq, o.oldest_ts) {
            (Some(q), Some(t)) => format!(", oldest #{q} from {}", t.to_rfc3339()),
            _ => String::new(),
        };
        println!(
            "outbox     {} unacknowledged events ({} of {} bytes{}){}",
            o.depth,
            o.pending_bytes,
            o.max_bytes,
            oldest,
            if o.near_full {
                " — NEARLY FULL: the recorder is not acknowledging; new claims will be refused at the bound"
            } else {
                ""
            }
        );
    }
    print_cold("cold keys ", &st.cold_keys);
    print_cold("cold groups", &st.cold_groups);
    let t = &st.totals;
    println!(
        "since start {} requests, {} input / {} output tokens, {} failures ({} absorbed), {} refused",
        t.requests, t.input_tokens, t.output_tokens, t.failures, t.absorbed, t.stopped
    );
    Ok(())
}

fn print_cold(label: &str, list: &[crate::control::ColdReport]) {
    if list.is_empty() {
        println!("{label} none");
    }
    for c in list {
        let until = c
            .until
            .map(|t| format!(" until {}", t.to_rfc3339()))
            .unwrap_or_default();
        let reason = c
            .reason
            .clone()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        println!("{label} {} {}{until}{reason}", c.what, c.state);
    }
}

async fn env(a: StatusArgs) -> anyhow::Result<()> {
    let s = status_settings(&a)?;
    let data_dir = s.data_dir()?;
    let (addr, running) = match daemon::read_state_file(&data_dir) {
        Some(sf) => (sf.addr, find_daemon(&data_dir).await.is_some()),
        None => (s.listen, false),
    };
    let settings = serde_json::json!({
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "privacy": {"usageStatisticsEnabled": false},
        "general": {"maxAttempts": 2}
    });
    if a.json {
        let v = serde_json::json!({
            "settings_json": settings,
            "env": {
                "GOOGLE_GEMINI_BASE_URL": format!("http://{addr}"),
                "GEMINI_API_KEY": runner::PLACEHOLDER_KEY,
            },
            "daemon_running": running,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "# Merge into ~/.gemini/settings.json (the auth type must be selected, telemetry off;"
    );
    println!("# the proxy absorbs throttles, so the CLI's own retries can stay low):");
    for line in serde_json::to_string_pretty(&settings)?.lines() {
        println!("#   {line}");
    }
    println!(
        "# Then, in your shell (the key is a placeholder: the proxy injects the fleet's keys):"
    );
    println!("export GOOGLE_GEMINI_BASE_URL=http://{addr}");
    println!("export GEMINI_API_KEY={}", runner::PLACEHOLDER_KEY);
    if !running {
        println!("# NOTE: no daemon answers at {addr} yet: start it with `gemfleet-agent serve`.");
    }
    Ok(())
}
