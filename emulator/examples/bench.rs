//! Throughput and latency the emulator sustains on this machine (a benchmark, not a test).
//!
//!     cargo run --release -p gemfleet-emulator --example bench -- [SECONDS] [CONCURRENCY]
//!
//! Starts the emulator in-process (unlimited quota, no artificial latency) and drives it with
//! CONCURRENCY keep-alive HTTP/1.1 clients for SECONDS per scenario: unary and streaming
//! calls, each with a tiny prompt and with a 32 KB prompt (the size of a Gemini CLI request).
//! Client and server share the machine's cores, so the figures are a lower bound.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gemfleet_emulator::{Config, Emulator, KeyConfig, KeyState, Limits, ProjectConfig};
use hdrhistogram::Histogram;
use serde_json::json;

const SECRET: &str = "bench-secret";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let concurrency: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(32);

    let config = Config {
        projects: vec![ProjectConfig {
            name: "bench".into(),
            default_limits: Limits {
                // Enforced but never reached: the quota bookkeeping is part of the cost.
                requests_per_minute: Some(u64::MAX / 2),
                input_tokens_per_minute: Some(u64::MAX / 2),
                requests_per_day: Some(u64::MAX / 2),
                input_tokens_per_day: None,
            },
            ..ProjectConfig::default()
        }],
        keys: vec![KeyConfig {
            name: "bench".into(),
            secret: SECRET.into(),
            project: "bench".into(),
            state: KeyState::Valid,
        }],
        ..Config::default()
    };
    let emu = Emulator::start(config).await?;
    println!(
        "gemfleet-emulator bench: {seconds} s per scenario, {concurrency} concurrent clients, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>10}",
        "scenario", "req/s", "p50 ms", "p99 ms", "max ms"
    );
    let small = json!({"contents": [{"role": "user", "parts": [{"text": "hello"}]}]});
    let big = json!({
        "systemInstruction": {"parts": [{"text": "You are a helpful CLI agent. ".repeat(1130)}]},
        "contents": [{"role": "user", "parts": [{"text": "hello"}]}],
    });
    for (name, path, body) in [
        ("generateContent, tiny prompt", "generateContent", &small),
        ("generateContent, 32 KB prompt", "generateContent", &big),
        (
            "streamGenerateContent, tiny",
            "streamGenerateContent?alt=sse",
            &small,
        ),
        (
            "streamGenerateContent, 32 KB",
            "streamGenerateContent?alt=sse",
            &big,
        ),
    ] {
        let url = format!("{}/v1beta/models/gemini-2.5-flash:{path}", emu.base_url());
        let body = Arc::new(serde_json::to_vec(body)?);
        let (count, hist, elapsed) = drive(&url, body, seconds, concurrency).await;
        println!(
            "{:<34} {:>10.0} {:>10.2} {:>10.2} {:>10.2}",
            name,
            count as f64 / elapsed.as_secs_f64(),
            hist.value_at_quantile(0.50) as f64 / 1000.0,
            hist.value_at_quantile(0.99) as f64 / 1000.0,
            hist.max() as f64 / 1000.0,
        );
    }
    let totals = emu.ledger().totals();
    println!(
        "ledger: {} requests, {} succeeded, {} errors",
        totals.requests,
        totals.succeeded,
        totals.errors.values().sum::<u64>()
    );
    emu.shutdown().await;
    Ok(())
}

async fn drive(
    url: &str,
    body: Arc<Vec<u8>>,
    seconds: u64,
    concurrency: usize,
) -> (u64, Histogram<u64>, Duration) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, url, body, stop) =
            (client.clone(), url.to_owned(), body.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).unwrap();
            let mut count = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .header("x-goog-api-key", SECRET)
                    .header("content-type", "application/json")
                    .body(body.as_ref().clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                let _ = resp.bytes().await.unwrap();
                hist.record(t.elapsed().as_micros() as u64).unwrap();
                count += 1;
            }
            (count, hist)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    let mut hist = Histogram::<u64>::new(3).unwrap();
    for w in workers {
        let (count, h) = w.await.unwrap();
        total += count;
        hist.add(h).unwrap();
    }
    (total, hist, started.elapsed())
}
