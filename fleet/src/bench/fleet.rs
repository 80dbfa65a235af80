//! The gemfleet strategy under load: N real agent daemons in this process, each driven by a
//! few HTTP client loops through its proxy; a real recorder arbitrates; the emulator is
//! upstream. Keys are revoked upstream mid-run to time how fast every agent's cold view learns.

use super::stats::percentiles;
use super::{BenchOptions, Figures};
use crate::stack::{emulator_config, random_secret};
use anyhow::Context;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use gemfleet_agent::daemon::{self, RunningDaemon};
use gemfleet_emulator::{Emulator, RunningEmulator};
use gemfleet_protocol::{KeyName, ModelName, ProjectId, Secret};
use gemfleet_recorder::{Recorder, admin};
use gemfleet_testkit::{Broker, TestDb};
use rand::RngCore;
use sqlx::Row;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Starts the emulator for the options' projects and keys; returns it with the secrets.
pub async fn start_emulator(o: &BenchOptions) -> anyhow::Result<(RunningEmulator, Vec<String>)> {
    let keys = o.keys();
    let secrets: Vec<String> = keys.iter().map(|_| random_secret()).collect();
    let text = emulator_config(o.minute_seconds, &o.projects(), &keys, &secrets);
    let config = gemfleet_emulator::Config::from_toml_str(&text).context("emulator config")?;
    Ok((Emulator::start(config).await?, secrets))
}

pub async fn run(o: &BenchOptions, say: &dyn Fn(&str)) -> anyhow::Result<Figures> {
    let broker = Broker::start().await?;
    let db = TestDb::migrated().await?;
    let (emulator, secrets) = start_emulator(o).await?;
    let model = ModelName::parse(o.model.clone())?;

    let mut master = [0u8; 32];
    rand::rng().fill_bytes(&mut master);
    let master_b64 = base64::engine::general_purpose::STANDARD.encode(master);
    let mut settings = gemfleet_recorder::Settings {
        database_url: db.url.clone(),
        minute_seconds: o.minute_seconds,
        master_key: Some(master_b64),
        http_listen: "127.0.0.1:0".parse()?,
        // The grant→upstream delay on one machine is milliseconds; 50 ms of margin keeps the
        // compressed minute honest without costing a whole slot per window.
        window_guard_ms: o.window_guard_ms,
        ..Default::default()
    };
    settings.broker.host = broker.host().to_string();
    settings.broker.port = broker.port();
    let master = settings.master_key().context("master key")?;
    for p in o.projects() {
        let pid = ProjectId::parse(p.name.clone())?;
        admin::add_project(&db.pool, &pid, gemfleet_gemini::Tier::Paid).await?;
        let limits = admin::parse_limits(&format!("rpm={},tpm={},rpd={}", p.rpm, p.tpm, p.rpd))?;
        admin::set_limits(&db.pool, &pid, &model, limits).await?;
    }
    for (k, s) in o.keys().iter().zip(&secrets) {
        admin::add_key(
            &db.pool,
            &master,
            &KeyName::parse(k.name.clone())?,
            &ProjectId::parse(k.project.clone())?,
            &Secret::new(s.clone()),
        )
        .await?;
    }
    let recorder = Recorder::start(settings).await?;

    say(&format!("starting {} agent daemons", o.agents));
    let dirs = tempfile::tempdir()?;
    let mut agents: Vec<RunningDaemon> = Vec::new();
    for i in 0..o.agents {
        let mut s = gemfleet_agent::settings::Settings {
            agent_id: Some(format!("sim-{i:03}")),
            data_dir: Some(dirs.path().join(format!("sim-{i:03}"))),
            listen: "127.0.0.1:0".parse()?,
            upstream_base_url: emulator.base_url(),
            claim_max_wait_ms: (o.minute_seconds * 2000.0) as u64,
            ..Default::default()
        };
        s.broker.host = broker.host().to_string();
        s.broker.port = broker.port();
        agents.push(daemon::start(s, false).await?);
    }
    // Wait until every agent's session is up.
    let deadline = Instant::now() + Duration::from_secs(20);
    while agents.iter().any(|a| !a.shared.mesh.is_connected()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    say(&format!(
        "load: {} clients for {:.0} s ({} windows)",
        o.agents * o.clients_per_agent,
        o.duration().as_secs_f64(),
        o.windows
    ));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(8)
        .build()?;
    let requests = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let start_utc = Utc::now();
    let end = start + o.duration();
    let mut clients = tokio::task::JoinSet::new();
    for a in &agents {
        for _ in 0..o.clients_per_agent {
            let url = format!("{}/v1beta/models/{}:generateContent", a.base_url(), o.model);
            let (http, requests, failures) = (http.clone(), requests.clone(), failures.clone());
            clients.spawn(async move {
                while Instant::now() < end {
                    let n = requests.fetch_add(1, Ordering::Relaxed);
                    let r = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(BenchOptions::body(n))
                        .timeout(
                            end.saturating_duration_since(Instant::now()) + Duration::from_secs(5),
                        )
                        .send()
                        .await;
                    let ok = match r {
                        Ok(resp) => {
                            let good = resp.status().is_success();
                            let _ = resp.bytes().await;
                            good
                        }
                        Err(_) => false,
                    };
                    if !ok {
                        failures.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            });
        }
    }

    // Revoke keys upstream on schedule, and time when each agent's cold view shows them.
    let mut seen: Vec<(String, Vec<DateTime<Utc>>)> = Vec::new();
    for (key, at) in o.revocation_plan() {
        tokio::time::sleep_until((start + at).into()).await;
        let state = gemfleet_emulator::config::KeyState::Invalid;
        let _ = emulator.set_key_state(&key, state);
        let name = KeyName::parse(key.clone())?;
        let project = ProjectId::parse(
            key.rsplit_once("-k")
                .map(|(p, _)| p.to_string())
                .unwrap_or_default(),
        )?;
        let mut when: Vec<Option<DateTime<Utc>>> = vec![None; agents.len()];
        let give_up = Instant::now() + o.minute() * 3;
        while when.iter().any(Option::is_none) && Instant::now() < give_up {
            let now = Utc::now();
            for (i, a) in agents.iter().enumerate() {
                if when[i].is_none()
                    && a.shared
                        .mesh
                        .with_cold(|c| c.is_cold(&name, &project, &model, now))
                        .unwrap_or(false)
                {
                    when[i] = Some(now);
                }
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        seen.push((key, when.into_iter().flatten().collect()));
    }
    while clients.join_next().await.is_some() {}
    let wall = start.elapsed();
    say("load done; reading the books");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Propagation: from the throttle event (the agent that hit the dead key) to each view.
    let mut propagation = Vec::new();
    for (key, times) in &seen {
        let first: Option<DateTime<Utc>> =
            // The key's death, not an earlier quota throttle that named the same key.
            sqlx::query_scalar("SELECT min(ts) FROM throttles WHERE key_name = $1 AND class = 'key_dead'")
                .bind(key)
                .fetch_one(&db.pool)
                .await?;
        if let Some(t0) = first {
            for t in times {
                propagation.push((*t - t0).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            }
        }
    }
    // Claim path: claim envelope time (agent clock) → grant persisted (recorder clock; same
    // machine). Claims that found room at once measure the path; the rest waited in the queue.
    let rows = sqlx::query(
        "SELECT (extract(epoch FROM (c.granted_at - e.ts)) * 1000.0)::float8 AS ms, \
                (extract(epoch FROM (c.granted_at - c.received_at)) * 1000.0)::float8 AS queued_ms \
         FROM claims c JOIN events e ON e.kind = 'claim' AND e.ts >= $1 \
              AND (e.body -> 'body' ->> 'claim_id')::uuid = c.claim_id \
         WHERE c.state = 'granted'",
    )
    .bind(start_utc)
    .fetch_all(&db.pool)
    .await
    .context("reading claim timings")?;
    let mut immediate = Vec::new();
    let mut waits = Vec::new();
    for r in rows {
        let ms: f64 = r.try_get::<Option<f64>, _>("ms")?.unwrap_or(0.0);
        let queued: f64 = r.try_get::<Option<f64>, _>("queued_ms")?.unwrap_or(0.0);
        waits.push(ms);
        if queued < 1.0 {
            immediate.push(ms);
        }
    }
    // Accepted within the load period: grants whose request the model answered.
    let end_utc = start_utc + chrono::Duration::from_std(o.duration())?;
    let in_window: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM claims WHERE state = 'granted' AND outcome = 'used' \
         AND granted_at >= $1 AND granted_at < $2",
    )
    .bind(start_utc)
    .bind(end_utc)
    .fetch_one(&db.pool)
    .await?;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE received_at >= $1")
        .bind(start_utc)
        .fetch_one(&db.pool)
        .await?;

    let ledger = emulator.ledger();
    let mut f = Figures {
        name: "gemfleet (arbiter)".into(),
        max_allowed: o.max_allowed(),
        wall,
        ..Figures::default()
    };
    f.accepted_in_window = Some(in_window.max(0) as u64);
    for e in &ledger.entries {
        f.accepted += e.requests;
        f.quota_429s += e.rate_limited_requests;
        f.key_errors += e.errors.values().sum::<u64>();
    }
    f.client_requests = requests.load(Ordering::Relaxed);
    f.client_failures = failures.load(Ordering::Relaxed);
    f.claim_ms = percentiles(&immediate);
    f.queue_wait_ms = percentiles(&waits);
    f.propagation_samples = propagation.len();
    f.propagation_ms = percentiles(&propagation);
    f.ingest_events = events.max(0) as u64;
    f.ingest_per_s = f.ingest_events as f64 / wall.as_secs_f64().max(0.001);

    for a in agents {
        a.shutdown(Duration::from_millis(500)).await;
    }
    let _ = recorder.shutdown().await;
    emulator.shutdown().await;
    drop(broker);
    let _ = db.close().await;
    Ok(f)
}

/// Resident memory of a real, idle `gemfleet-agent serve` process connected to a broker.
pub async fn idle_agent_rss() -> anyhow::Result<u64> {
    let broker = Broker::start().await?;
    let dir = tempfile::tempdir()?;
    let bin = crate::procs::bin("gemfleet-agent")?;
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args([
        "serve",
        "--agent-id",
        "rss-probe",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "http://127.0.0.1:9",
        "--broker",
    ])
    .arg(format!("127.0.0.1:{}", broker.port()))
    .arg("--data-dir")
    .arg(dir.path());
    let mut p = crate::procs::Proc::spawn("rss-probe", cmd, dir.path())?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = p.pid().context("the probe agent exited")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .context("reading VmRSS")?;
    p.terminate(Duration::from_secs(3)).await;
    Ok(kb)
}
