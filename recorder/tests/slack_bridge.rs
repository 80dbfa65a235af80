#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Slack bridge against a real mosquitto (broker-config's config and ACL, the bridge
//! logging in as the `slack-bridge` role) and a local fake Slack webhook (axum) that rate
//! limits, fails with 503s and then refuses connections for a while. Every alert must arrive
//! exactly once and in order — across the outage and a crash of the bridge itself.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use gemfleet_protocol::{AgentId, Alert, Envelope, KeyName, Payload, Secret, Severity};
use gemfleet_recorder::slack_bridge::{self, BridgeBrokerSettings, SlackBridgeSettings};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tempfile::TempDir;
use tokio::time::{Instant, timeout};

fn broker_config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../broker-config")
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// mosquitto with the repository's config and ACL (ports and paths rewritten), users
/// `recorder` and `slack-bridge` with passwords made now.
struct Broker {
    child: Child,
    port: u16,
    recorder_password: String,
    bridge_password: String,
    _dir: TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn add_user(passwd: &Path, name: &str, password: &str) {
    use std::io::Write;
    let mut child = Command::new(broker_config_dir().join("add-agent"))
        .args(["--passwd-file", passwd.to_str().unwrap(), "--role", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

impl Broker {
    async fn start() -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let passwd = d.join("passwd");
        let recorder_password = uuid::Uuid::new_v4().to_string();
        let bridge_password = uuid::Uuid::new_v4().to_string();
        add_user(&passwd, "recorder", &recorder_password);
        add_user(&passwd, "slack-bridge", &bridge_password);
        let certs = d.join("certs");
        let ok = Command::new(broker_config_dir().join("make-test-ca"))
            .arg(&certs)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success());
        std::fs::copy(broker_config_dir().join("acl"), d.join("acl")).unwrap();
        std::fs::create_dir(d.join("data")).unwrap();
        let port = free_port();
        let tls_port = free_port();
        let p = |x: &Path| x.to_str().unwrap().to_owned();
        let config = std::fs::read_to_string(broker_config_dir().join("mosquitto.conf")).unwrap();
        let mut out = String::new();
        for line in config.lines() {
            let line = match line.split_whitespace().next() {
                Some("password_file") => format!("password_file {}", p(&passwd)),
                Some("acl_file") => format!("acl_file {}", p(&d.join("acl"))),
                Some("persistence_location") => {
                    format!("persistence_location {}/", p(&d.join("data")))
                }
                Some("listener") if line.contains("1883") => format!("listener {port} 127.0.0.1"),
                Some("listener") => format!("listener {tls_port} 127.0.0.1"),
                Some("cafile") => format!("cafile {}", p(&certs.join("ca.crt"))),
                Some("certfile") => format!("certfile {}", p(&certs.join("server.crt"))),
                Some("keyfile") => format!("keyfile {}", p(&certs.join("server.key"))),
                _ => line.to_owned(),
            };
            out.push_str(&line);
            out.push('\n');
        }
        if is_root() {
            out.push_str("user root\n");
        }
        std::fs::write(d.join("mosquitto.conf"), out).unwrap();
        let log = std::fs::File::create(d.join("mosquitto.out")).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(d.join("mosquitto.conf"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("mosquitto must be installed");
        let ready = timeout(Duration::from_secs(10), async {
            while tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(ready.is_ok(), "broker did not start");
        Broker {
            child,
            port,
            recorder_password,
            bridge_password,
            _dir: dir,
        }
    }
}

/// How the fake webhook answers right now.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Up,
    RateLimited,
    Unavailable,
}

#[derive(Default)]
struct Seen {
    /// (when, status, alert texts in the body)
    requests: Vec<(Instant, u16, Vec<String>)>,
}

#[derive(Clone)]
struct Fake {
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Seen>>,
}

/// The alert texts of a Slack body: each block is "<emoji> *sev* `code` TEXT\n> …".
fn texts_of(body: &serde_json::Value) -> Vec<String> {
    body["blocks"]
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .filter_map(|b| b["text"]["text"].as_str())
                .filter_map(|t| t.split("`test_alert` ").nth(1))
                .filter_map(|rest| rest.split('\n').next())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

async fn webhook(State(fake): State<Fake>, body: axum::body::Bytes) -> impl IntoResponse {
    let mode = *fake.mode.lock().unwrap();
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut headers = HeaderMap::new();
    let status = match mode {
        Mode::Up => StatusCode::OK,
        Mode::RateLimited => {
            headers.insert("retry-after", "1".parse().unwrap());
            // One 429, then Slack is fine again.
            *fake.mode.lock().unwrap() = Mode::Up;
            StatusCode::TOO_MANY_REQUESTS
        }
        Mode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    };
    fake.seen
        .lock()
        .unwrap()
        .requests
        .push((Instant::now(), status.as_u16(), texts_of(&value)));
    (
        status,
        headers,
        if status == StatusCode::OK { "ok" } else { "no" },
    )
}

/// Serves the fake on `addr` until `stop` fires (then the port refuses connections).
async fn serve(
    fake: Fake,
    addr: SocketAddr,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let app = axum::Router::new()
        .route("/services/T0/B0/secret", axum::routing::post(webhook))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    (tx, task)
}

fn settings(broker: &Broker, webhook_addr: SocketAddr, spool: &Path) -> SlackBridgeSettings {
    SlackBridgeSettings {
        webhook_url: Some(Secret::new(format!(
            "http://{webhook_addr}/services/T0/B0/secret"
        ))),
        broker: BridgeBrokerSettings {
            host: "127.0.0.1".into(),
            port: broker.port,
            username: "slack-bridge".into(),
            password: Some(Secret::new(broker.bridge_password.clone())),
            tls_ca_file: None,
            keep_alive_secs: 5,
        },
        spool_dir: spool.to_path_buf(),
        // Time compressed: Slack's 1 s becomes 100 ms; the backoff caps at 400 ms.
        min_post_interval_ms: 100,
        batch_window_ms: 50,
        max_batch: 20,
        backoff_initial_ms: 50,
        backoff_max_ms: 400,
        request_timeout_ms: 2_000,
        min_severity: Severity::Info,
        metrics_listen: None,
    }
}

struct Publisher {
    client: AsyncClient,
    _task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    async fn connect(broker: &Broker) -> Publisher {
        let mut options = MqttOptions::new("recorder", "127.0.0.1", broker.port);
        options.set_credentials("recorder", broker.recorder_password.clone());
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 200);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut tx = Some(tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        timeout(Duration::from_secs(10), rx).await.unwrap().unwrap();
        Publisher {
            client,
            _task: task,
        }
    }

    /// Publishes an alert; returns its encoded bytes so a test can send the same event twice.
    async fn alert(&self, i: usize) -> Vec<u8> {
        let severity = Severity::ALL[i % 4];
        let alert = Alert {
            severity,
            code: "test_alert".into(),
            text: format!("alert-{i:03}"),
            key: Some(KeyName::parse(format!("key-{}", i % 3)).unwrap()),
            project: None,
            model: None,
            agent: None,
            until: None,
        };
        let env = Envelope::new(
            AgentId::parse("recorder").unwrap(),
            None,
            Payload::Alert(alert),
        );
        let bytes = env.encode().unwrap();
        self.raw(severity, bytes.clone()).await;
        bytes
    }

    async fn raw(&self, severity: Severity, bytes: Vec<u8>) {
        let topic = format!("gemfleet/v1/alerts/{}", severity.as_str());
        self.client
            .publish(topic, QoS::AtLeastOnce, false, bytes)
            .await
            .unwrap();
    }
}

fn delivered(seen: &Arc<Mutex<Seen>>) -> Vec<String> {
    seen.lock()
        .unwrap()
        .requests
        .iter()
        .filter(|r| r.1 == 200)
        .flat_map(|r| r.2.clone())
        .collect()
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_is_delivered_once_and_in_order_across_an_outage_and_a_bridge_crash() {
    let broker = Broker::start().await;
    let spool = tempfile::tempdir().unwrap();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let fake = Fake {
        mode: Arc::new(Mutex::new(Mode::Up)),
        seen: Arc::default(),
    };
    let (stop_fake, fake_task) = serve(fake.clone(), addr).await;
    let publisher = Publisher::connect(&broker).await;

    let bridge = slack_bridge::start(settings(&broker, addr, spool.path()))
        .await
        .unwrap();
    // The persistent session queues alerts only once the bridge has subscribed.
    timeout(Duration::from_secs(10), bridge.subscribed())
        .await
        .unwrap();
    // Phase 1: Slack is up.
    publisher.alert(0).await;
    wait_for("alert 0", || delivered(&fake.seen).len() == 1).await;

    // Phase 2: one 429 with Retry-After: 1, then fine; a burst of 9 alerts plus a duplicate.
    *fake.mode.lock().unwrap() = Mode::RateLimited;
    let mut dup = Vec::new();
    for i in 1..10 {
        let bytes = publisher.alert(i).await;
        if i == 5 {
            dup = bytes;
        }
    }
    publisher.raw(Severity::ALL[5 % 4], dup).await;
    wait_for("alerts 1-9", || delivered(&fake.seen).len() == 10).await;

    // Phase 3: Slack answers 503 for a while, then refuses connections; alerts keep coming.
    *fake.mode.lock().unwrap() = Mode::Unavailable;
    for i in 10..20 {
        publisher.alert(i).await;
    }
    wait_for("a few 503s", || {
        fake.seen
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.1 == 503)
            .count()
            >= 3
    })
    .await;
    stop_fake.send(()).unwrap();
    fake_task.await.unwrap();
    for i in 20..25 {
        publisher.alert(i).await;
    }
    // Phase 4: the bridge crashes while Slack is down; alerts published meanwhile wait in the
    // broker's persistent session, those it had received wait in its spool.
    tokio::time::sleep(Duration::from_millis(300)).await;
    bridge.abort();
    for i in 25..30 {
        publisher.alert(i).await;
    }
    let bridge = slack_bridge::start(settings(&broker, addr, spool.path()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Phase 5: Slack comes back on the same address.
    *fake.mode.lock().unwrap() = Mode::Up;
    let (stop_fake, fake_task) = serve(fake.clone(), addr).await;
    wait_for("all 30 alerts", || delivered(&fake.seen).len() >= 30).await;
    // Nothing more may arrive (duplicates would show up here): a sentinel alert, once it is
    // delivered, closes the stream.
    publisher.alert(30).await;
    wait_for("the sentinel", || {
        delivered(&fake.seen)
            .last()
            .is_some_and(|t| t == "alert-030")
    })
    .await;
    bridge.shutdown().await;
    let _ = stop_fake.send(());
    let _ = fake_task.await;

    let expected: Vec<String> = (0..=30).map(|i| format!("alert-{i:03}")).collect();
    assert_eq!(
        delivered(&fake.seen),
        expected,
        "every alert once, in order"
    );

    let seen = fake.seen.lock().unwrap();
    // The 429 was honoured: the next request came at least Retry-After (1 s) later.
    let i429 = seen
        .requests
        .iter()
        .position(|r| r.1 == 429)
        .expect("a 429 was served");
    let gap = seen.requests[i429 + 1].0 - seen.requests[i429].0;
    assert!(
        gap >= Duration::from_secs(1),
        "retried {gap:?} after a 429 with Retry-After: 1"
    );
    // Posts are rate limited, and the backlog went out batched.
    let ok: Vec<&(Instant, u16, Vec<String>)> =
        seen.requests.iter().filter(|r| r.1 == 200).collect();
    for pair in seen.requests.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= Duration::from_millis(95),
            "posts closer than the minimum interval"
        );
    }
    assert!(
        ok.len() < 20,
        "{} posts for 31 alerts: bursts were not batched",
        ok.len()
    );
    assert!(
        ok.iter().any(|r| r.2.len() >= 5),
        "the backlog after the outage was not batched"
    );
}

#[tokio::test]
async fn the_bridge_refuses_to_start_without_a_webhook_and_never_prints_the_url() {
    let spool = tempfile::tempdir().unwrap();
    let mut s = SlackBridgeSettings {
        spool_dir: spool.path().to_path_buf(),
        ..Default::default()
    };
    let err = slack_bridge::start(s.clone())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("GEMFLEET_SLACK_WEBHOOK_URL"), "{err}");
    s.webhook_url = Some(Secret::new("hooks.slack.com/services/T/B/very-secret"));
    let err = slack_bridge::start(s.clone())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(!err.contains("very-secret"), "{err}");
    // Debug output of the settings never shows the webhook or the broker password.
    s.broker.password = Some(Secret::new("broker-secret"));
    let shown = format!("{s:?}");
    assert!(
        !shown.contains("very-secret") && !shown.contains("broker-secret"),
        "{shown}"
    );
}
