#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Recorder benchmark (not a test): claim-to-grant latency at several claim rates, and
//! sustained ingest throughput, against a private mosquitto and a fresh PostgreSQL database.
//!
//!     cargo run --release -p gemfleet-recorder --example recorder_bench [-- --seconds 5 --events 100000]
//!
//! Prints a Markdown section for docs/benchmarks.md.

use gemfleet_protocol::{
    AgentId, Claim, Envelope, EventKind, KeyName, ModelName, Payload, ProjectId, RequestType,
    Secret, Tokens, Topic, Usage, filter,
};
use gemfleet_recorder::crypto::MasterKey;
use gemfleet_recorder::settings::Settings;
use gemfleet_recorder::{Recorder, admin};
use gemfleet_testkit::{Broker, TestDb};
use hdrhistogram::Histogram;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

const MODEL: &str = "gemini-2.5-flash";

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn client(
    broker: &Broker,
    id: &str,
    subscribe: Option<String>,
) -> (AsyncClient, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut o = broker.mqtt_options(id);
    o.set_inflight(1000);
    o.set_request_channel_capacity(10_000);
    let (c, mut el) = AsyncClient::new(o, 10_000);
    let mut net = el.network_options();
    net.set_tcp_nodelay(true);
    el.set_network_options(net);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let c2 = c.clone();
    tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => match &subscribe {
                    Some(f) => {
                        let _ = c2.try_subscribe(f.clone(), QoS::AtLeastOnce);
                    }
                    None => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                },
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(p.payload.to_vec());
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    ready_rx.await.unwrap();
    (c, rx)
}

fn envelope(agent: &AgentId, seq: u64, payload: Payload) -> (String, Vec<u8>) {
    let kind = EventKind::parse(payload.kind()).unwrap();
    let env = Envelope::new(agent.clone(), Some(seq), payload);
    (
        Topic::AgentEvent(agent.clone(), kind).to_string(),
        env.encode().unwrap(),
    )
}

#[tokio::main]
async fn main() {
    gemfleet_testkit::init_crypto();
    let seconds = arg("--seconds", 5);
    let events = arg("--events", 100_000);
    let db = TestDb::migrated().await.expect("PostgreSQL");
    // The recorder takes QoS 1 messages faster than mosquitto's default of 20 in flight, and
    // small packets must not wait for Nagle's algorithm (mosquitto's default).
    let broker = Broker::start_with(
        "max_inflight_messages 0\nmax_queued_messages 0\nset_tcp_nodelay true\n",
    )
    .await
    .expect("mosquitto");
    let master = MasterKey::generate();
    let mut settings = Settings {
        database_url: db.url.clone(),
        recorder_id: "recorder-bench".into(),
        master_key: Some(master.to_base64()),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        ..Settings::default()
    };
    settings.broker.host = broker.host().into();
    settings.broker.port = broker.port();
    let project = ProjectId::parse("bench-p").unwrap();
    admin::add_project(&db.pool, &project, gemfleet_gemini::Tier::Paid)
        .await
        .unwrap();
    let limits = admin::parse_limits("rpm=100000000,tpm=100000000000").unwrap();
    admin::set_limits(
        &db.pool,
        &project,
        &ModelName::parse(MODEL).unwrap(),
        limits,
    )
    .await
    .unwrap();
    for i in 0..4 {
        let k = KeyName::parse(format!("bench-k{i}")).unwrap();
        admin::add_key(
            &db.pool,
            &master,
            &k,
            &project,
            &Secret::new(format!("bench-secret-{i}")),
        )
        .await
        .unwrap();
    }
    let rec = Recorder::start(settings.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut report = String::new();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    report.push_str(&format!(
        "Machine: {cores} cores ({cpu}); PostgreSQL and mosquitto on the same machine; \
         release build; batch_max {}; one agent connection per rate; claims of 100 tokens, \
         limits far above the load (so the measure is the recorder's own path: decode, \
         arbitrate, persist the grant in a transaction, publish). {seconds} s per rate.\n\n",
        settings.batch_max
    ));
    report.push_str("| claims/s | claims | p50 ms | p90 ms | p99 ms | max ms |\n|---:|---:|---:|---:|---:|---:|\n");

    for (n, rate) in [100u64, 500, 1000].into_iter().enumerate() {
        let agent = AgentId::parse(format!("bench-claims-{n}")).unwrap();
        let (c, mut rx) = client(&broker, agent.as_str(), Some(filter::inbox(&agent))).await;
        let sent: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
        let total = rate * seconds;
        let s2 = sent.clone();
        let a2 = agent.clone();
        let c2 = c.clone();
        let publisher = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
            for seq in 1..=total {
                tick.tick().await;
                let claim = Claim {
                    claim_id: Uuid::now_v7(),
                    model: ModelName::parse(MODEL).unwrap(),
                    est_input_tokens: 100,
                    task_id: None,
                    avoid_keys: vec![],
                    max_wait_ms: 5_000,
                    request_type: RequestType::Stream,
                };
                let id = claim.claim_id;
                let (topic, bytes) = envelope(&a2, seq, Payload::Claim(claim));
                s2.lock().unwrap().insert(id, Instant::now());
                c2.publish(topic, QoS::AtLeastOnce, false, bytes)
                    .await
                    .unwrap();
            }
        });
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let deadline = Instant::now() + Duration::from_secs(seconds + 30);
        while hist.len() < total && Instant::now() < deadline {
            let Ok(Some(bytes)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await
            else {
                break;
            };
            let now = Instant::now();
            if let Ok(env) = Envelope::decode(&bytes)
                && let Payload::Grant(g) = env.payload
                && let Some(t) = sent.lock().unwrap().remove(&g.claim_id)
            {
                hist.record((now - t).as_micros().max(1) as u64).unwrap();
            }
        }
        publisher.await.unwrap();
        let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        let line = format!(
            "| {rate} | {} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            hist.len(),
            ms(0.5),
            ms(0.9),
            ms(0.99),
            hist.max() as f64 / 1000.0
        );
        print!("{line}");
        report.push_str(&line);
    }

    // Sustained ingest: usage events from 4 agents as fast as they can publish.
    let per_agent = events / 4;
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_log")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let started = Instant::now();
    let mut pubs = Vec::new();
    for i in 0..4 {
        let agent = AgentId::parse(format!("bench-usage-{i}")).unwrap();
        let (c, _rx) = client(&broker, agent.as_str(), None).await;
        pubs.push(tokio::spawn(async move {
            for seq in 1..=per_agent {
                let u = Usage {
                    claim_id: Uuid::now_v7(),
                    grant_id: Uuid::now_v7(),
                    key: KeyName::parse(format!("bench-k{}", seq % 4)).unwrap(),
                    project: ProjectId::parse("bench-p").unwrap(),
                    model: ModelName::parse(MODEL).unwrap(),
                    task_id: None,
                    request_type: RequestType::Stream,
                    http_status: 200,
                    tokens: Tokens {
                        prompt: 1000,
                        candidates: 200,
                        total: 1200,
                        ..Default::default()
                    },
                    complete: true,
                    latency_ms: 900,
                };
                let (topic, bytes) = envelope(&agent, seq, Payload::Usage(u));
                c.publish(topic, QoS::AtLeastOnce, false, bytes)
                    .await
                    .unwrap();
            }
            c
        }));
    }
    let mut clients = Vec::new();
    for p in pubs {
        clients.push(p.await.unwrap());
    }
    let published = started.elapsed();
    let want = before + (per_agent * 4) as i64;
    let mut stored = before;
    while stored < want && started.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        stored = sqlx::query_scalar("SELECT count(*) FROM usage_log")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    }
    let elapsed = started.elapsed();
    let n = (stored - before) as f64;
    let line = format!(
        "\nIngest: {} usage events from 4 agents (published in {:.2} s) stored and acknowledged in {:.2} s: **{:.0} events/s** sustained.\n",
        stored - before,
        published.as_secs_f64(),
        elapsed.as_secs_f64(),
        n / elapsed.as_secs_f64()
    );
    print!("{line}");
    report.push_str(&line);
    // Where the time went: batches and time inside them (from the recorder's /metrics).
    let metrics = reqwest::get(format!("http://{}/metrics", rec.http_addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let batches = value("gemfleet_recorder_ingest_batches_total");
    let in_batches = value("gemfleet_recorder_ingest_batch_seconds_sum");
    let line = format!(
        "Whole run: {batches:.0} batches, {:.1} s inside batch transactions (decode, arbitrate, write, commit, ack, publish).\n",
        in_batches
    );
    print!("{line}");
    report.push_str(&line);
    println!("\n---- Markdown ----\n{report}");
    drop(clients);
    rec.shutdown().await.unwrap();
}
