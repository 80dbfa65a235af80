//! Agent benchmark (not a test): the daemon's idle RSS, the latency the proxy adds per request
//! (excluding the claim round trip), and the claim round trip itself.
//!
//! ```text
//! cargo build --release -p gemfleet-agent --bin gemfleet-agent
//! cargo run --release -p gemfleet-agent --example bench [-- REQUESTS]
//! ```
//! Starts a private mosquitto, a fresh PostgreSQL database, the recorder and the emulator
//! in-process (no emulated latency, generous limits), and the agent daemon as a child process
//! (so its RSS is its own). Each request is sent twice, alternately: straight to the emulator
//! and through the proxy; the proxy reports its claim time in `Server-Timing`, so
//! added = through-proxy − claim − direct (paired).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::field_reassign_with_default)]

use base64::Engine;
use gemfleet_emulator::{Config as EmuConfig, Emulator, KeyConfig, KeyState, ProjectConfig};
use gemfleet_gemini::Tier;
use gemfleet_protocol::{KeyName, ModelName, ProjectId, Secret};
use gemfleet_recorder::arbiter::ledger::Limits;
use gemfleet_recorder::crypto::MasterKey;
use hdrhistogram::Histogram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const MODEL: &str = "gemini-2.5-flash";

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn agent_bin() -> PathBuf {
    // target/<profile>/examples/bench → target/<profile>/gemfleet-agent
    let exe = std::env::current_exe().unwrap();
    let p = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("gemfleet-agent");
    assert!(
        p.is_file(),
        "build the binary first: cargo build --release -p gemfleet-agent --bin gemfleet-agent ({})",
        p.display()
    );
    p
}

fn claim_ms(h: &reqwest::header::HeaderMap) -> f64 {
    h.get("server-timing")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .find_map(|p| p.trim().strip_prefix("claim;dur=").map(String::from))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn us(d: f64) -> u64 {
    (d.max(0.0) * 1000.0) as u64
}

fn line(name: &str, h: &Histogram<u64>) {
    println!(
        "  {name:<44} p50 {:>8.3} ms   p99 {:>8.3} ms   max {:>8.3} ms",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    gemfleet_testkit::init_crypto();
    // Mosquitto delays small writes (Nagle) unless told not to; production config should say the same.
    let broker = gemfleet_testkit::Broker::start_with("set_tcp_nodelay true\n").await?;
    let db = gemfleet_testkit::TestDb::migrated().await?;
    let secret = format!("AIzaBENCH{}", uuid::Uuid::new_v4().simple());
    let mut emu = EmuConfig {
        minute_seconds: 60.0,
        ..EmuConfig::default()
    };
    emu.projects.push(ProjectConfig {
        name: "bench".into(),
        tier: Tier::Paid,
        ..ProjectConfig::default()
    });
    emu.keys.push(KeyConfig {
        name: "bench-key".into(),
        secret: secret.clone(),
        project: "bench".into(),
        state: KeyState::Valid,
    });
    let emulator = Emulator::start(emu).await?;
    let master_b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let master = MasterKey::from_base64(&master_b64)?;
    let project = ProjectId::parse("bench")?;
    gemfleet_recorder::admin::add_project(&db.pool, &project, Tier::Paid).await?;
    let limits = Limits {
        rpm: Some(10_000_000),
        tpm: None,
        rpd: None,
        tpd: None,
    };
    gemfleet_recorder::admin::set_limits(&db.pool, &project, &ModelName::parse(MODEL)?, limits)
        .await?;
    gemfleet_recorder::admin::add_key(
        &db.pool,
        &master,
        &KeyName::parse("bench-key")?,
        &project,
        &Secret::new(secret.clone()),
    )
    .await?;
    let mut rs = gemfleet_recorder::Settings::default();
    rs.database_url = db.url.clone();
    rs.broker.host = broker.host().to_string();
    rs.broker.port = broker.port();
    rs.master_key = Some(master_b64);
    rs.http_listen = "127.0.0.1:0".parse()?;
    let recorder = gemfleet_recorder::Recorder::start(rs).await?;

    let dir = tempfile::tempdir()?;
    let mut child = tokio::process::Command::new(agent_bin())
        .args([
            "serve",
            "--agent-id",
            "bench-agent",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .args([
            "--broker",
            &format!("{}:{}", broker.host(), broker.port()),
            "--upstream",
            &emulator.base_url(),
        ])
        .env("GEMFLEET_LOG", "warn")
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or(0);
    let sf = loop {
        if let Some(sf) = gemfleet_agent::daemon::read_state_file(dir.path()) {
            break sf;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let proxy = format!("http://{}", sf.addr);
    let control = gemfleet_agent::runner::Control::new(proxy.clone())?;
    while !control
        .status(Duration::from_secs(2))
        .await
        .map(|s| s.broker.connected)
        .unwrap_or(false)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_rss = rss_kib(pid);

    let http = reqwest::Client::new();
    let body = serde_json::json!({"contents": [{"role": "user", "parts": [{"text": "Say hello in five words."}]}]}).to_string();
    let mut results = Vec::new();
    for (kind, method) in [
        ("generateContent", "generateContent"),
        (
            "streamGenerateContent (SSE)",
            "streamGenerateContent?alt=sse",
        ),
    ] {
        let mut added = Histogram::<u64>::new(3)?;
        let mut claim = Histogram::<u64>::new(3)?;
        let mut direct = Histogram::<u64>::new(3)?;
        let mut total = Histogram::<u64>::new(3)?;
        let count = if method.starts_with("stream") {
            n / 2
        } else {
            n
        };
        let started = Instant::now();
        for _ in 0..count {
            let t = Instant::now();
            let r = http
                .post(format!(
                    "{}/v1beta/models/{MODEL}:{method}",
                    emulator.base_url()
                ))
                .header("x-goog-api-key", &secret)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await?;
            assert!(r.status().is_success());
            r.bytes().await?;
            let d = t.elapsed().as_secs_f64() * 1000.0;
            let t = Instant::now();
            let r = http
                .post(format!("{proxy}/t/bench/v1beta/models/{MODEL}:{method}"))
                .header("x-goog-api-key", "placeholder")
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await?;
            assert!(r.status().is_success(), "proxy answered {}", r.status());
            let c = claim_ms(r.headers());
            r.bytes().await?;
            let p = t.elapsed().as_secs_f64() * 1000.0;
            added.record(us(p - c - d))?;
            claim.record(us(c))?;
            direct.record(us(d))?;
            total.record(us(p))?;
        }
        results.push((kind, count, started.elapsed(), added, claim, direct, total));
    }
    let loaded_rss = rss_kib(pid);
    let depth = control.flush(Duration::from_secs(30)).await?;

    println!(
        "gemfleet-agent benchmark ({} cores, {})",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        if cfg!(debug_assertions) {
            "debug build"
        } else {
            "release build"
        }
    );
    println!(
        "  daemon idle RSS: {:.1} MiB   after the runs below: {:.1} MiB",
        idle_rss as f64 / 1024.0,
        loaded_rss as f64 / 1024.0
    );
    for (kind, count, elapsed, added, claim, direct, total) in &results {
        println!(
            "{kind}: {count} sequential requests in {:.1} s",
            elapsed.as_secs_f64()
        );
        line("proxy added latency (total − claim − direct)", added);
        line("claim round trip (fsync + MQTT + recorder)", claim);
        line("direct to the emulator", direct);
        line("through the proxy, total", total);
    }
    println!("  outbox depth after flush: {depth}");
    let _ = nix_kill(&mut child).await;
    recorder.shutdown().await?;
    Ok(())
}

async fn nix_kill(child: &mut tokio::process::Child) -> std::io::Result<()> {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    Ok(())
}
