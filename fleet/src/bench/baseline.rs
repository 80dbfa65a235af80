//! The original design's strategy, for comparison: every machine keeps its own view of the
//! key pool, picks the least-recently-used key that respects a fixed minimum interval (the
//! key's share of its project's per-minute limit, as if the machine were alone), skips a key
//! that answered 429 for the delay the error states, and never coordinates with the others.

use super::{BenchOptions, Figures};
use crate::bench::fleet::start_emulator;
use gemfleet_gemini::FailureClass;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One machine's private view of the pool.
struct Machine {
    last_used: HashMap<usize, Instant>,
    cold_until: HashMap<usize, Instant>,
}

impl Machine {
    /// The least-recently-used key usable now, or how long until one is.
    fn pick(&mut self, keys: usize, interval: Duration, now: Instant) -> Result<usize, Duration> {
        let mut best: Option<(usize, Option<Instant>)> = None;
        let mut soonest = Duration::from_secs(3600);
        for k in 0..keys {
            let last = self.last_used.get(&k).copied();
            let ready_at = [last.map(|l| l + interval), self.cold_until.get(&k).copied()]
                .into_iter()
                .flatten()
                .max();
            match ready_at {
                Some(t) if t > now => soonest = soonest.min(t - now),
                _ => {
                    if best.is_none_or(|(_, b)| last < b) {
                        best = Some((k, last));
                    }
                }
            }
        }
        match best {
            Some((k, _)) => {
                self.last_used.insert(k, now);
                Ok(k)
            }
            None => Err(soonest),
        }
    }
}

pub async fn run(o: &BenchOptions, say: &dyn Fn(&str)) -> anyhow::Result<Figures> {
    let (emulator, secrets) = start_emulator(o).await?;
    let secrets = Arc::new(secrets);
    // Each key's share of its project's limit, if this machine were the only one.
    let per_key_rpm = (o.rpm as f64 / o.keys_per_project as f64).max(0.001);
    let interval = Duration::from_secs_f64(o.minute_seconds / per_key_rpm);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(8)
        .build()?;
    let url = format!(
        "{}/v1beta/models/{}:generateContent",
        emulator.base_url(),
        o.model
    );
    let requests = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + o.duration();
    say(&format!(
        "baseline load: {} machines × {} clients, min interval {:.0} ms per key",
        o.agents,
        o.clients_per_agent,
        interval.as_secs_f64() * 1000.0
    ));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..o.agents {
        let machine = Arc::new(Mutex::new(Machine {
            last_used: HashMap::new(),
            cold_until: HashMap::new(),
        }));
        for _ in 0..o.clients_per_agent {
            let (http, url, secrets, machine, requests, model) = (
                http.clone(),
                url.clone(),
                secrets.clone(),
                machine.clone(),
                requests.clone(),
                o.model.clone(),
            );
            clients.spawn(async move {
                while Instant::now() < end {
                    let now = Instant::now();
                    let pick = match machine.lock() {
                        Ok(mut m) => m.pick(secrets.len(), interval, now),
                        Err(_) => return,
                    };
                    let k = match pick {
                        Ok(k) => k,
                        Err(wait) => {
                            tokio::time::sleep(
                                wait.min(end.saturating_duration_since(now))
                                    .max(Duration::from_millis(1)),
                            )
                            .await;
                            continue;
                        }
                    };
                    let n = requests.fetch_add(1, Ordering::Relaxed);
                    let Ok(resp) = http
                        .post(&url)
                        .header("x-goog-api-key", &secrets[k])
                        .header("content-type", "application/json")
                        .body(BenchOptions::body(n))
                        .send()
                        .await
                    else {
                        continue;
                    };
                    let status = resp.status().as_u16();
                    let body = resp.bytes().await.unwrap_or_default();
                    if status != 200 {
                        let c = gemfleet_gemini::classify::classify_http(
                            status,
                            &body,
                            Some(&model),
                            chrono::Utc::now(),
                        );
                        let cool = match c.class {
                            FailureClass::KeyDead | FailureClass::ProjectDead => {
                                Duration::from_secs(3600)
                            }
                            _ => Duration::from_millis(c.retry_after_ms.unwrap_or(1000)),
                        };
                        if let Ok(mut m) = machine.lock() {
                            m.cold_until.insert(k, Instant::now() + cool);
                        }
                    }
                }
            });
        }
    }
    let revocations = o.revocation_plan();
    let names = o.keys();
    for (key, at) in revocations {
        tokio::time::sleep_until((start + at).into()).await;
        if names.iter().any(|k| k.name == key) {
            let _ = emulator.set_key_state(&key, gemfleet_emulator::config::KeyState::Invalid);
        }
    }
    while clients.join_next().await.is_some() {}
    let wall = start.elapsed();
    let ledger = emulator.ledger();
    let mut f = Figures {
        name: "baseline (LRU + fixed interval)".into(),
        max_allowed: o.max_allowed(),
        wall,
        ..Figures::default()
    };
    for e in &ledger.entries {
        f.accepted += e.requests;
        f.quota_429s += e.rate_limited_requests;
        f.key_errors += e.errors.values().sum::<u64>();
    }
    f.client_requests = requests.load(Ordering::Relaxed);
    f.client_failures = f.quota_429s + f.key_errors;
    emulator.shutdown().await;
    Ok(f)
}
