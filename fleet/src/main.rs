//! `gemfleet-fleet`: the demo (a complete local fleet doing the main job) and the fleet
//! benchmark. See README.md and docs/benchmarks.md.

use clap::{Args, Parser, Subcommand};
use gemfleet_fleet::demo::{self, DemoOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "gemfleet-fleet",
    version,
    about = "Run a complete local gemfleet (recorder, emulator, agents) on real Gemini CLI tasks, or benchmark the fleet"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local fleet — the emulator as upstream, the recorder, three agents — and run
    /// Gemini CLI tasks over a repository's source files through it: four keys in two projects
    /// with limits tight enough to queue, one key revoked upstream mid-run, one agent killed
    /// mid-task. Prints live progress and a report that checks the books; exits non-zero when
    /// the report finds a problem.
    Demo(DemoArgs),
    /// The fleet benchmark: many simulated agents (real agent daemons driven by HTTP clients
    /// instead of Gemini CLI) against the emulator with many keys and projects and a
    /// compressed minute; then the same workload under the original design's strategy (LRU key
    /// with a fixed minimum interval, no arbitration). Prints both side by side.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Simulated agents (daemons in this process).
    #[arg(long, default_value_t = 50)]
    agents: usize,
    #[arg(long, default_value_t = 10)]
    projects: usize,
    #[arg(long, default_value_t = 2)]
    keys_per_project: usize,
    /// Requests per quota minute per project.
    #[arg(long, default_value_t = 60)]
    rpm: u64,
    /// Length of the quota minute in seconds (compressed; see docs/benchmarks.md for why much
    /// shorter minutes need a margin below the machine's scheduling jitter).
    #[arg(long, default_value_t = 10.0)]
    minute_seconds: f64,
    /// Minutes the load lasts.
    #[arg(long, default_value_t = 20)]
    windows: u32,
    /// Concurrent client loops per agent.
    #[arg(long, default_value_t = 2)]
    clients_per_agent: usize,
    /// Keys revoked upstream during the run (cold-key propagation probes).
    #[arg(long, default_value_t = 3)]
    revocations: usize,
    #[arg(long, default_value = "gemini-2.5-flash")]
    model: String,
    /// The recorder's safety margin on the sliding minute, in milliseconds.
    #[arg(long, default_value_t = 250)]
    window_guard_ms: u64,
    /// Skip the baseline strategy.
    #[arg(long)]
    no_baseline: bool,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Repository whose tracked .rs files become tasks (default: the git checkout you are in).
    #[arg(long)]
    repo: Option<PathBuf>,
    /// How many files (tasks) at most.
    #[arg(long, default_value_t = 24)]
    tasks: usize,
    /// Follow-up prompts, each on another agent than the task's first run (resumed sessions).
    #[arg(long, default_value_t = 4)]
    follow_ups: usize,
    /// Agents (daemons) in the fleet.
    #[arg(long, default_value_t = 3)]
    agents: usize,
    /// Requests per quota minute per project (two projects).
    #[arg(long, default_value_t = 6)]
    rpm: u64,
    /// Length of the quota minute in seconds (compressed so the demo shows queuing quickly).
    #[arg(long, default_value_t = 15.0)]
    minute_seconds: f64,
    /// The model every task uses.
    #[arg(long, default_value = "gemini-2.5-flash")]
    model: String,
    /// Logs, configs and agents' data (default: <repo>/.demo).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// PostgreSQL server URL; the demo (re)creates database `--database` on it.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Database the demo (re)creates — dropped first if it exists, so it must start with `gemfleet_`.
    #[arg(long, default_value = "gemfleet_demo")]
    database: String,
    /// The Gemini CLI to run (default: the pinned one in node_modules).
    #[arg(long)]
    gemini: Option<PathBuf>,
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gemfleet-fleet: cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Demo(a) => run_demo(a).await,
            Command::Bench(a) => run_bench(a).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gemfleet-fleet: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run_demo(a: DemoArgs) -> anyhow::Result<ExitCode> {
    let here = git_toplevel();
    let repo = a
        .repo
        .or_else(|| here.clone())
        .unwrap_or_else(gemfleet_testkit::workspace_root);
    let gemini = match a.gemini {
        Some(g) => g,
        None => match here
            .map(|h| h.join("node_modules/.bin/gemini"))
            .filter(|g| g.exists())
        {
            Some(g) => g,
            None => gemfleet_testkit::gemini_cli()?,
        },
    };
    if !gemini.is_file() {
        anyhow::bail!(
            "Gemini CLI not found at {}: run `npm ci` in the gemfleet checkout or pass --gemini PATH",
            gemini.display()
        );
    }
    if !a.database.starts_with("gemfleet_") {
        anyhow::bail!(
            "--database {:?}: the demo drops and recreates this database, so its name must start with gemfleet_",
            a.database
        );
    }
    let opts = DemoOptions {
        work_dir: a.work_dir.unwrap_or_else(|| repo.join(".demo")),
        server_url: a.database_url,
        database: a.database,
        repo,
        gemini,
        agents: a.agents.max(1),
        max_tasks: a.tasks.max(1),
        follow_ups: a.follow_ups,
        minute_seconds: a.minute_seconds,
        rpm: a.rpm.max(1),
        model: a.model,
        progress: true,
    };
    let outcome = demo::run(opts).await?;
    println!("{}", outcome.report.render());
    println!(
        "logs: {}/logs · the recorder's database stays at {} — try `target/debug/gemfleet-recorder usage --by key` with that DATABASE_URL",
        outcome.work_dir.display(),
        gemfleet_fleet::stack::redact(&outcome.database_url)
    );
    Ok(if outcome.report.problems().is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn run_bench(a: BenchArgs) -> anyhow::Result<ExitCode> {
    use gemfleet_fleet::bench::{self, BenchOptions};
    let o = BenchOptions {
        agents: a.agents.max(1),
        projects: a.projects.max(1),
        keys_per_project: a.keys_per_project.max(1),
        rpm: a.rpm.max(1),
        minute_seconds: a.minute_seconds.max(0.1),
        windows: a.windows.max(1),
        clients_per_agent: a.clients_per_agent.max(1),
        revocations: a.revocations,
        model: a.model,
        window_guard_ms: a.window_guard_ms,
    };
    let say = |s: &str| println!("  · {s}");
    println!(
        "fleet benchmark: {} agents × {} clients, {} projects × {} keys, {} requests per {}-second minute per project, {} windows",
        o.agents,
        o.clients_per_agent,
        o.projects,
        o.keys_per_project,
        o.rpm,
        o.minute_seconds,
        o.windows
    );
    let rss = bench::fleet::idle_agent_rss().await;
    let fleet = bench::fleet::run(&o, &say).await?;
    let baseline = if a.no_baseline {
        None
    } else {
        Some(bench::baseline::run(&o, &say).await?)
    };
    println!("{}", bench::render(&o, &fleet, baseline.as_ref(), rss.ok()));
    Ok(ExitCode::SUCCESS)
}

/// The top of the git checkout the current directory is in, if any.
fn git_toplevel() -> Option<PathBuf> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--show-toplevel"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!p.is_empty()).then(|| PathBuf::from(p))
}
