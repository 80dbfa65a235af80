//! `gemfleet-fleet bench`: many simulated agents — real agent daemons (proxy, outbox, claim
//! path, cold view) in one process, driven by HTTP clients instead of Gemini CLI — against the
//! emulator with many keys and projects and a compressed minute. The same workload then runs
//! under the original design's strategy (each machine picks its least-recently-used key with a
//! fixed minimum interval; no arbitration between machines), so the two stand side by side.

pub mod baseline;
pub mod fleet;
pub mod stats;

use crate::stack::{KeyPlan, ProjectPlan};
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub agents: usize,
    pub projects: usize,
    pub keys_per_project: usize,
    /// Requests per quota minute per project (every project the same).
    pub rpm: u64,
    pub minute_seconds: f64,
    /// How many minutes the load lasts.
    pub windows: u32,
    /// Concurrent client loops per agent.
    pub clients_per_agent: usize,
    /// Keys revoked upstream during the run (cold-key propagation probes).
    pub revocations: usize,
    pub model: String,
    /// The recorder's margin on the sliding minute (see its `window_guard_ms`).
    pub window_guard_ms: u64,
}

impl BenchOptions {
    pub fn minute(&self) -> Duration {
        Duration::from_secs_f64(self.minute_seconds)
    }
    pub fn duration(&self) -> Duration {
        self.minute() * self.windows
    }
    pub fn projects(&self) -> Vec<ProjectPlan> {
        (0..self.projects)
            .map(|p| ProjectPlan {
                name: format!("bench-p{p:02}"),
                tier: "paid",
                rpm: self.rpm,
                tpm: 100_000_000,
                rpd: 100_000_000,
            })
            .collect()
    }
    pub fn keys(&self) -> Vec<KeyPlan> {
        let mut keys = Vec::new();
        for p in 0..self.projects {
            for k in 0..self.keys_per_project {
                keys.push(KeyPlan {
                    name: format!("bench-p{p:02}-k{k}"),
                    project: format!("bench-p{p:02}"),
                });
            }
        }
        keys
    }
    /// The keys revoked during the run, and when (offset from the start of the load): the last
    /// key of evenly spread projects, at evenly spread times.
    pub fn revocation_plan(&self) -> Vec<(String, Duration)> {
        let n = self.revocations.min(self.projects);
        (0..n)
            .map(|i| {
                let p = (i * self.projects) / n.max(1);
                let at = self.duration().mul_f64((i + 1) as f64 / (n + 1) as f64);
                (
                    format!("bench-p{p:02}-k{}", self.keys_per_project.saturating_sub(1)),
                    at,
                )
            })
            .collect()
    }
    /// The most requests the limits allow over the run: a sliding minute admits `rpm` per
    /// project in any window, so over `windows` whole minutes at most `rpm × windows` each.
    pub fn max_allowed(&self) -> u64 {
        self.rpm * self.projects as u64 * u64::from(self.windows)
    }
    /// A request body of a realistic shape (small: the benchmark is about quota, not bytes).
    pub fn body(n: u64) -> String {
        serde_json::json!({
            "contents": [{"role": "user", "parts": [{"text": format!("benchmark request {n}: say something short")}]}],
            "generationConfig": {"maxOutputTokens": 16}
        })
        .to_string()
    }
}

/// One strategy's figures.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub name: String,
    /// Requests admitted upstream, in all (the tail of queued requests included).
    pub accepted: u64,
    /// Requests admitted whose grant fell inside the load period (what utilisation counts);
    /// `None` where only the ledger total is known.
    pub accepted_in_window: Option<u64>,
    pub max_allowed: u64,
    pub quota_429s: u64,
    pub key_errors: u64,
    pub client_requests: u64,
    pub client_failures: u64,
    pub claim_ms: Option<stats::Percentiles>,
    pub queue_wait_ms: Option<stats::Percentiles>,
    pub propagation_ms: Option<stats::Percentiles>,
    pub propagation_samples: usize,
    pub ingest_events: u64,
    pub ingest_per_s: f64,
    pub wall: Duration,
}

impl Figures {
    pub fn utilisation(&self) -> f64 {
        let n = self.accepted_in_window.unwrap_or(self.accepted);
        if self.max_allowed == 0 {
            0.0
        } else {
            n as f64 / self.max_allowed as f64
        }
    }
}

/// The side-by-side table.
pub fn render(
    o: &BenchOptions,
    fleet: &Figures,
    baseline: Option<&Figures>,
    idle_rss_kb: Option<u64>,
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let _ = writeln!(
        s,
        "\n== fleet benchmark: {} agents, {} keys in {} projects, {} req/minute/project, minute = {} s, {} windows ({} CPUs) ==",
        o.agents,
        o.projects * o.keys_per_project,
        o.projects,
        o.rpm,
        o.minute_seconds,
        o.windows,
        cpus
    );
    let row = |s: &mut String, name: &str, f: &dyn Fn(&Figures) -> String| {
        let b = baseline.map(f).unwrap_or_else(|| "-".into());
        let _ = writeln!(s, "{name:<34} {:>28} {:>30}", f(fleet), b);
    };
    let _ = writeln!(
        s,
        "{:<34} {:>28} {:>30}",
        "",
        fleet.name,
        baseline.map(|b| b.name.as_str()).unwrap_or("-")
    );
    row(&mut s, "requests accepted upstream (all)", &|f| {
        f.accepted.to_string()
    });
    row(&mut s, "  of which in the load period", &|f| {
        f.accepted_in_window
            .map(|n| n.to_string())
            .unwrap_or_else(|| "-".into())
    });
    row(&mut s, "most the limits allow", &|f| {
        f.max_allowed.to_string()
    });
    row(&mut s, "quota utilisation", &|f| {
        format!("{:.1} %", f.utilisation() * 100.0)
    });
    row(&mut s, "quota 429s from upstream", &|f| {
        f.quota_429s.to_string()
    });
    row(&mut s, "dead-key errors from upstream", &|f| {
        f.key_errors.to_string()
    });
    row(&mut s, "client requests (failed)", &|f| {
        format!("{} ({})", f.client_requests, f.client_failures)
    });
    let _ = writeln!(
        s,
        "{:<34} {:>28}",
        "claim→grant, room at once",
        fleet
            .claim_ms
            .map(|p| format!("p50 {:.2} / p99 {:.2} ms", p.p50, p.p99))
            .unwrap_or("-".into())
    );
    let _ = writeln!(
        s,
        "{:<34} {:>28}",
        "claim→grant, all (incl. queue)",
        fleet
            .queue_wait_ms
            .map(|p| format!("p50 {:.1} / p99 {:.1} ms", p.p50, p.p99))
            .unwrap_or("-".into())
    );
    let _ = writeln!(
        s,
        "{:<34} {:>28}",
        "cold-key propagation (to every agent)",
        fleet
            .propagation_ms
            .map(|p| format!("p50 {:.2} / p99 {:.2} ms", p.p50, p.p99))
            .unwrap_or("-".into())
    );
    let _ = writeln!(
        s,
        "{:<34} {:>28}",
        "  samples (agents × revoked keys)", fleet.propagation_samples
    );
    let _ = writeln!(
        s,
        "{:<34} {:>28}",
        "recorder ingest (events, events/s)",
        format!("{} / {:.0}/s", fleet.ingest_events, fleet.ingest_per_s)
    );
    let _ = writeln!(
        s,
        "{:<34} {:>28}",
        "idle agent daemon RSS",
        idle_rss_kb
            .map(|k| format!("{:.1} MB", k as f64 / 1024.0))
            .unwrap_or("-".into())
    );
    let _ = writeln!(
        s,
        "{:<34} {:>28}",
        "wall time of the load",
        format!("{:.1} s", fleet.wall.as_secs_f64())
    );
    s
}
