#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The broker's security, proved against a real mosquitto running EXACTLY
//! `broker-config/mosquitto.conf` and `broker-config/acl`: only listener ports and file paths
//! are rewritten (to free ports and temp files), and passwords are generated at test time with
//! `broker-config/add-agent`, certificates with `broker-config/make-test-ca`.
//!
//! Mosquitto acknowledges a denied QoS 1 publish and silently drops it, and a denied read is
//! just a message that never arrives. So every "nothing arrives" check is closed by a
//! *sentinel*: an allowed message sent after the forbidden one on the same connection, which
//! the observer receives in order. Receiving the sentinel without the forbidden message proves
//! the denial without sleeping.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeReasonCode, Transport};
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);
const AGENTS: [&str; 2] = ["edge-a", "edge-b"];
const ROLES: [&str; 3] = ["recorder", "ops", "slack-bridge"];

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

/// A mosquitto started from the repository's config, plus everything needed to log in.
struct SecureBroker {
    child: Child,
    plain_port: u16,
    tls_port: u16,
    ca_pem: Vec<u8>,
    passwords: Vec<(String, String)>,
    log_path: PathBuf,
    // Holds the passwords, certificates and persistence until the broker is gone.
    _dir: TempDir,
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replaces the one line starting with `prefix`; fails when the config has none or several, so
/// a change to the config that the rewrite no longer matches breaks the test instead of
/// silently testing something else.
fn rewrite_line(config: &str, prefix: &str, replacement: &str) -> String {
    let hits = config.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(
        hits, 1,
        "expected exactly one line starting with {prefix:?} in mosquitto.conf"
    );
    config
        .lines()
        .map(|l| {
            if l.starts_with(prefix) {
                replacement.to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn run_script(script: &str, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(broker_config_dir().join(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running broker-config/{script}: {e}"));
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            // The script may exit (refusing the name) before reading: a broken pipe is fine.
            let _ = input.write_all(text.as_bytes());
        }
    }
    child.wait_with_output().unwrap()
}

impl SecureBroker {
    async fn start() -> SecureBroker {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // The broker runs with `user root` appended only when the test runs as root (mosquitto
        // would otherwise drop to the `mosquitto` user, who cannot read the temp dir).
        let passwd = d.join("passwd");
        let mut passwords = Vec::new();
        for name in AGENTS.iter().chain(ROLES.iter()) {
            let password = uuid::Uuid::new_v4().simple().to_string();
            let mut args = vec!["--passwd-file", passwd.to_str().unwrap()];
            if ROLES.contains(name) {
                args.push("--role");
            }
            args.push(name);
            let out = run_script("add-agent", &args, Some(&format!("{password}\n")));
            assert!(
                out.status.success(),
                "add-agent {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            passwords.push((name.to_string(), password));
        }
        let certs = d.join("certs");
        let out = run_script("make-test-ca", &[certs.to_str().unwrap()], None);
        assert!(
            out.status.success(),
            "make-test-ca: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let acl = d.join("acl");
        std::fs::copy(broker_config_dir().join("acl"), &acl).unwrap();
        let persistence = d.join("data");
        std::fs::create_dir(&persistence).unwrap();

        let plain_port = free_port();
        let tls_port = free_port();
        let mut config =
            std::fs::read_to_string(broker_config_dir().join("mosquitto.conf")).unwrap();
        let p = |path: &Path| path.to_str().unwrap().to_owned();
        for (prefix, replacement) in [
            ("password_file ", format!("password_file {}", p(&passwd))),
            ("acl_file ", format!("acl_file {}", p(&acl))),
            (
                "persistence_location ",
                format!("persistence_location {}/", p(&persistence)),
            ),
            (
                "listener 1883 127.0.0.1",
                format!("listener {plain_port} 127.0.0.1"),
            ),
            ("listener 8883", format!("listener {tls_port} 127.0.0.1")),
            ("cafile ", format!("cafile {}", p(&certs.join("ca.crt")))),
            (
                "certfile ",
                format!("certfile {}", p(&certs.join("server.crt"))),
            ),
            (
                "keyfile ",
                format!("keyfile {}", p(&certs.join("server.key"))),
            ),
        ] {
            config = rewrite_line(&config, prefix, &replacement);
        }
        if nix_is_root() {
            config.push_str("\nuser root\n");
        }
        let config_path = d.join("mosquitto.conf");
        std::fs::write(&config_path, config).unwrap();
        let log_path = d.join("mosquitto.out");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("mosquitto must be installed (apt-get install mosquitto)");
        let ca_pem = std::fs::read(certs.join("ca.crt")).unwrap();
        let broker = SecureBroker {
            child,
            plain_port,
            tls_port,
            ca_pem,
            passwords,
            log_path,
            _dir: dir,
        };
        for port in [plain_port, tls_port] {
            let ready = timeout(WAIT, async {
                while tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                    .await
                    .is_err()
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            assert!(
                ready.is_ok(),
                "broker did not listen on {port}:\n{}",
                broker.log()
            );
        }
        broker
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn password(&self, user: &str) -> String {
        self.passwords
            .iter()
            .find(|(u, _)| u == user)
            .unwrap()
            .1
            .clone()
    }

    fn options(&self, user: &str, port: u16) -> MqttOptions {
        let mut options = MqttOptions::new(user, "127.0.0.1", port);
        options.set_credentials(user, self.password(user));
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(1024 * 1024, 1024 * 1024);
        options
    }

    async fn connect(&self, user: &str) -> Client {
        Client::connect(self.options(user, self.plain_port))
            .await
            .unwrap()
    }

    async fn connect_tls(&self, user: &str) -> Result<Client, String> {
        let mut options = self.options(user, self.tls_port);
        options.set_transport(Transport::tls_with_config(
            rumqttc::TlsConfiguration::Simple {
                ca: self.ca_pem.clone(),
                alpn: None,
                client_auth: None,
            },
        ));
        Client::connect(options).await
    }
}

fn nix_is_root() -> bool {
    // `id -u` rather than libc::geteuid: the workspace forbids unsafe code.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// One MQTT connection: an event-loop task forwards received publishes and sub-acks.
struct Client {
    client: AsyncClient,
    messages: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    subacks: mpsc::UnboundedReceiver<Vec<SubscribeReasonCode>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// Connects and waits for the broker's ConnAck; Err describes why not (no retry).
    async fn connect(options: MqttOptions) -> Result<Client, String> {
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let (msg_tx, messages) = mpsc::unbounded_channel();
        let (sub_tx, subacks) = mpsc::unbounded_channel();
        let (conn_tx, conn_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut conn_tx = Some(conn_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(tx) = conn_tx.take() {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = msg_tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(Event::Incoming(Packet::SubAck(s))) => {
                        let _ = sub_tx.send(s.return_codes.clone());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if let Some(tx) = conn_tx.take() {
                            let _ = tx.send(Err(e.to_string()));
                        }
                        // The tests observe one session; a dropped connection ends it.
                        return;
                    }
                }
            }
        });
        match timeout(WAIT, conn_rx).await {
            Ok(Ok(Ok(()))) => Ok(Client {
                client,
                messages,
                subacks,
                task,
            }),
            Ok(Ok(Err(e))) => {
                task.abort();
                Err(e)
            }
            _ => {
                task.abort();
                Err("no ConnAck".to_owned())
            }
        }
    }

    /// Subscribes at QoS 1 and waits for the SubAck (mosquitto 2 grants a subscription and then
    /// filters each message by the ACL, so the SubAck itself proves nothing about access).
    async fn subscribe(&mut self, filters: &[&str]) {
        for filter in filters {
            self.client
                .subscribe(*filter, QoS::AtLeastOnce)
                .await
                .unwrap();
            let codes = timeout(WAIT, self.subacks.recv()).await.unwrap().unwrap();
            assert!(
                codes
                    .iter()
                    .all(|c| matches!(c, SubscribeReasonCode::Success(_))),
                "subscription {filter} refused: {codes:?}"
            );
        }
    }

    async fn publish(&self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .unwrap();
    }

    async fn publish_retained(&self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, true, payload.as_bytes().to_vec())
            .await
            .unwrap();
    }

    /// Receives messages until one on `sentinel_topic` arrives; returns those before it.
    async fn until_sentinel(&mut self, sentinel_topic: &str) -> Vec<(String, String)> {
        let mut before = Vec::new();
        loop {
            let (topic, payload) = timeout(WAIT, self.messages.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("sentinel on {sentinel_topic} never arrived; got {before:?}")
                })
                .expect("connection closed");
            if topic == sentinel_topic {
                return before;
            }
            before.push((topic, String::from_utf8_lossy(&payload).into_owned()));
        }
    }
}

const ROOT: &str = "gemfleet/v1";

fn t(rest: &str) -> String {
    format!("{ROOT}/{rest}")
}

#[tokio::test]
async fn the_broker_opens_exactly_the_configured_listeners_and_refuses_strangers() {
    let broker = SecureBroker::start().await;
    let log = broker.log();
    let opened: BTreeSet<u16> = log
        .lines()
        .filter_map(|l| l.split("listen socket on port ").nth(1))
        .filter_map(|rest| rest.trim_end_matches('.').trim().parse().ok())
        .collect();
    // A listener-level option placed before the first `listener` line makes mosquitto open a
    // default listener on 1883 on every interface; this catches that.
    assert_eq!(
        opened,
        BTreeSet::from([broker.plain_port, broker.tls_port]),
        "{log}"
    );

    // Anonymous and wrong-password connections are refused.
    let anonymous = MqttOptions::new("edge-a", "127.0.0.1", broker.plain_port);
    assert!(Client::connect(anonymous).await.is_err());
    let mut wrong = broker.options("edge-a", broker.plain_port);
    wrong.set_credentials("edge-a", "not-the-password");
    assert!(Client::connect(wrong).await.is_err());
}

#[tokio::test]
async fn an_agent_cannot_read_another_agents_inbox_or_ack() {
    let broker = SecureBroker::start().await;
    let recorder = broker.connect("recorder").await;
    let mut a = broker.connect("edge-a").await;
    let mut b = broker.connect("edge-b").await;
    a.subscribe(&[
        &t("agents/edge-b/inbox"),
        &t("agents/+/inbox"),
        &t("agents/edge-b/ack"),
        &t("agents/edge-a/inbox"),
    ])
    .await;
    b.subscribe(&[&t("agents/edge-b/inbox")]).await;

    recorder
        .publish(&t("agents/edge-b/inbox"), "grant-with-secret-for-b")
        .await;
    recorder
        .publish_retained(&t("agents/edge-b/ack"), "{\"watermark\":7}")
        .await;
    recorder
        .publish(&t("agents/edge-a/inbox"), "sentinel")
        .await;

    let seen_by_a = a.until_sentinel(&t("agents/edge-a/inbox")).await;
    assert!(
        seen_by_a.is_empty(),
        "edge-a read another agent's messages: {seen_by_a:?}"
    );
    // Positive control: the message was really published, and B may read it.
    let (topic, payload) = timeout(WAIT, b.messages.recv()).await.unwrap().unwrap();
    assert_eq!(
        (topic, payload),
        (
            t("agents/edge-b/inbox"),
            b"grant-with-secret-for-b".to_vec()
        )
    );

    // A late subscriber does not get B's retained ack either.
    let mut a2 = broker.connect("edge-a").await;
    a2.subscribe(&[&t("agents/+/ack"), &t("agents/edge-a/inbox")])
        .await;
    recorder
        .publish(&t("agents/edge-a/inbox"), "sentinel")
        .await;
    let seen = a2.until_sentinel(&t("agents/edge-a/inbox")).await;
    assert!(
        seen.is_empty(),
        "edge-a read a retained ack of edge-b: {seen:?}"
    );
}

#[tokio::test]
async fn an_agent_cannot_publish_as_another_agent() {
    let broker = SecureBroker::start().await;
    let mut recorder = broker.connect("recorder").await;
    recorder
        .subscribe(&[
            &t("agents/+/events/+"),
            &t("agents/+/status"),
            &t("agents/+/context"),
        ])
        .await;
    let a = broker.connect("edge-a").await;
    for kind in ["claim", "release", "usage", "throttle", "task"] {
        a.publish(&t(&format!("agents/edge-b/events/{kind}")), "forged")
            .await;
    }
    a.publish_retained(&t("agents/edge-b/status"), "forged")
        .await;
    a.publish(&t("agents/edge-b/context"), "forged").await;
    // A role's agent subtree is no agent's either.
    a.publish(&t("agents/recorder/events/claim"), "forged")
        .await;
    a.publish(&t("agents/edge-a/events/claim"), "sentinel")
        .await;

    let forged = recorder
        .until_sentinel(&t("agents/edge-a/events/claim"))
        .await;
    assert!(
        forged.is_empty(),
        "the recorder received forged events: {forged:?}"
    );

    // Positive control: its own status and context do arrive.
    a.publish(&t("agents/edge-a/status"), "online").await;
    a.publish(&t("agents/edge-a/context"), "ctx").await;
    a.publish(&t("agents/edge-a/events/usage"), "sentinel2")
        .await;
    let own = recorder
        .until_sentinel(&t("agents/edge-a/events/usage"))
        .await;
    assert_eq!(own.len(), 2, "{own:?}");
}

#[tokio::test]
async fn an_agent_cannot_publish_states_alerts_acks_or_inboxes() {
    let broker = SecureBroker::start().await;
    // ops reads states, alerts and acks; b reads its own inbox.
    let mut ops = broker.connect("ops").await;
    ops.subscribe(&[&format!("{ROOT}/#")]).await;
    let mut b = broker.connect("edge-b").await;
    b.subscribe(&[&t("agents/edge-b/inbox")]).await;
    let recorder = broker.connect("recorder").await;
    let a = broker.connect("edge-a").await;

    a.publish_retained(&t("keys/key-1/state"), "{\"state\":\"active\"}")
        .await;
    a.publish_retained(
        &t("quota/proj-1/gemini-2.5-flash/state"),
        "{\"state\":\"open\"}",
    )
    .await;
    a.publish(&t("alerts/critical"), "fake alert").await;
    a.publish_retained(&t("agents/edge-a/ack"), "{\"watermark\":999999}")
        .await;
    a.publish_retained(&t("agents/edge-b/ack"), "{\"watermark\":999999}")
        .await;
    a.publish(&t("agents/edge-b/inbox"), "fake grant").await;
    a.publish(&t("agents/edge-a/events/usage"), "sentinel")
        .await;

    let seen = ops.until_sentinel(&t("agents/edge-a/events/usage")).await;
    assert!(
        seen.is_empty(),
        "an agent published a state, alert or ack: {seen:?}"
    );
    recorder
        .publish(&t("agents/edge-b/inbox"), "sentinel")
        .await;
    let seen = b.until_sentinel(&t("agents/edge-b/inbox")).await;
    assert!(
        seen.is_empty(),
        "an agent wrote another agent's inbox: {seen:?}"
    );

    // Positive control: the recorder may publish all of them, and an agent reads the states.
    let mut a_reader = broker.connect("edge-b").await;
    a_reader
        .subscribe(&[
            &t("keys/+/state"),
            &t("quota/+/+/state"),
            &t("agents/edge-b/inbox"),
        ])
        .await;
    recorder
        .publish_retained(&t("keys/key-1/state"), "active")
        .await;
    recorder
        .publish_retained(&t("quota/proj-1/gemini-2.5-flash/state"), "open")
        .await;
    recorder
        .publish(&t("agents/edge-b/inbox"), "sentinel")
        .await;
    let states = a_reader.until_sentinel(&t("agents/edge-b/inbox")).await;
    assert_eq!(states.len(), 2, "{states:?}");
}

#[tokio::test]
async fn ops_reads_everything_except_inboxes_and_cannot_write() {
    let broker = SecureBroker::start().await;
    let mut ops = broker.connect("ops").await;
    ops.subscribe(&[
        &format!("{ROOT}/#"),
        &t("agents/+/inbox"),
        &t("agents/ops/inbox"),
    ])
    .await;
    let recorder = broker.connect("recorder").await;
    let a = broker.connect("edge-a").await;

    recorder
        .publish(&t("agents/edge-a/inbox"), "grant-with-secret")
        .await;
    recorder
        .publish(&t("agents/ops/inbox"), "grant-for-ops")
        .await;
    a.publish(&t("agents/edge-a/status"), "status").await;
    a.publish(&t("agents/edge-a/events/claim"), "claim").await;
    a.publish(&t("agents/edge-a/context"), "context").await;
    // Wait for the agent's three before the recorder's sentinel, so the order is fixed.
    a.publish(&t("agents/edge-a/events/task"), "a-done").await;
    let from_a = ops.until_sentinel(&t("agents/edge-a/events/task")).await;
    recorder.publish(&t("agents/edge-a/ack"), "ack").await;
    recorder.publish(&t("keys/key-1/state"), "key").await;
    recorder
        .publish(&t("quota/proj-1/gemini-2.5-flash/state"), "quota")
        .await;
    recorder.publish(&t("alerts/warning"), "alert").await;
    recorder.publish(&t("alerts/info"), "sentinel").await;
    let from_recorder = ops.until_sentinel(&t("alerts/info")).await;

    let topics: BTreeSet<String> = from_a
        .iter()
        .chain(from_recorder.iter())
        .map(|(topic, _)| topic.clone())
        .collect();
    let expected: BTreeSet<String> = [
        "agents/edge-a/status",
        "agents/edge-a/events/claim",
        "agents/edge-a/context",
        "agents/edge-a/ack",
        "keys/key-1/state",
        "quota/proj-1/gemini-2.5-flash/state",
        "alerts/warning",
    ]
    .into_iter()
    .map(t)
    .collect();
    assert_eq!(
        topics, expected,
        "ops must see every non-inbox topic and no inbox"
    );

    // ops can neither publish (alerts, states) nor act as an agent named "ops". (One
    // connection per user: use_username_as_clientid makes a second one replace the first.)
    let mut observer = recorder;
    observer
        .subscribe(&[&t("agents/+/events/+"), &t("agents/+/status")])
        .await;
    let mut bridge = broker.connect("slack-bridge").await;
    bridge.subscribe(&[&t("alerts/+")]).await;
    ops.publish(&t("agents/ops/events/claim"), "claim as ops")
        .await;
    ops.publish(&t("agents/ops/status"), "online").await;
    ops.publish(&t("alerts/critical"), "fake").await;
    a.publish(&t("agents/edge-a/events/usage"), "sentinel")
        .await;
    let seen = observer
        .until_sentinel(&t("agents/edge-a/events/usage"))
        .await;
    assert!(seen.is_empty(), "ops published as an agent: {seen:?}");
    observer.publish(&t("alerts/info"), "sentinel").await;
    let seen = bridge.until_sentinel(&t("alerts/info")).await;
    assert!(seen.is_empty(), "ops published an alert: {seen:?}");
}

#[tokio::test]
async fn the_slack_bridge_reads_only_alerts() {
    let broker = SecureBroker::start().await;
    let recorder = broker.connect("recorder").await;
    let a = broker.connect("edge-a").await;
    // Retained states published before the bridge subscribes must not reach it either.
    recorder
        .publish_retained(&t("keys/key-1/state"), "key")
        .await;
    recorder
        .publish_retained(&t("quota/proj-1/gemini-2.5-flash/state"), "quota")
        .await;
    recorder
        .publish_retained(&t("agents/edge-a/ack"), "ack")
        .await;
    a.publish_retained(&t("agents/edge-a/status"), "online")
        .await;

    let mut bridge = broker.connect("slack-bridge").await;
    bridge
        .subscribe(&[
            &format!("{ROOT}/#"),
            &t("keys/+/state"),
            &t("agents/slack-bridge/inbox"),
        ])
        .await;
    a.publish(&t("agents/edge-a/events/claim"), "claim").await;
    a.publish(&t("agents/edge-a/context"), "ctx").await;
    recorder.publish(&t("agents/edge-a/inbox"), "grant").await;
    recorder
        .publish(&t("agents/slack-bridge/inbox"), "grant-for-bridge")
        .await;
    recorder.publish(&t("keys/key-2/state"), "key").await;
    recorder.publish(&t("alerts/critical"), "the alert").await;
    recorder.publish(&t("alerts/security"), "sentinel").await;

    let seen = bridge.until_sentinel(&t("alerts/security")).await;
    assert_eq!(seen, vec![(t("alerts/critical"), "the alert".to_owned())]);

    // The bridge cannot publish, not even an alert.
    let mut ops = broker.connect("ops").await;
    // Not "#": the retained states published above would arrive too.
    ops.subscribe(&[&t("alerts/+"), &t("agents/+/events/+")])
        .await;
    bridge.publish(&t("alerts/critical"), "from bridge").await;
    bridge
        .publish(&t("agents/slack-bridge/events/claim"), "claim")
        .await;
    recorder.publish(&t("alerts/info"), "sentinel").await;
    let seen = ops.until_sentinel(&t("alerts/info")).await;
    assert!(seen.is_empty(), "the bridge published: {seen:?}");
}

#[tokio::test]
async fn tls_works_with_the_test_ca_and_plain_mqtt_on_the_tls_port_fails() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let broker = SecureBroker::start().await;
    let mut a = broker
        .connect_tls("edge-a")
        .await
        .expect("TLS connection with the test CA");
    a.subscribe(&[&t("agents/edge-a/inbox")]).await;
    let recorder = broker.connect("recorder").await;
    recorder
        .publish(&t("agents/edge-a/inbox"), "over tls")
        .await;
    let (topic, payload) = timeout(WAIT, a.messages.recv()).await.unwrap().unwrap();
    assert_eq!(
        (topic.as_str(), payload.as_slice()),
        (t("agents/edge-a/inbox").as_str(), &b"over tls"[..])
    );

    // The ACL applies on the TLS listener too.
    a.subscribe(&[&t("agents/edge-b/inbox")]).await;
    recorder.publish(&t("agents/edge-b/inbox"), "for b").await;
    recorder
        .publish(&t("agents/edge-a/inbox"), "sentinel")
        .await;
    assert!(a.until_sentinel(&t("agents/edge-a/inbox")).await.is_empty());

    // Plain MQTT to the TLS port: no ConnAck.
    let plain = Client::connect(broker.options("edge-b", broker.tls_port)).await;
    assert!(
        plain.is_err(),
        "a plain connection to the TLS listener succeeded"
    );

    // TLS with a CA that did not sign the server certificate: refused.
    let other_ca = tempfile::tempdir().unwrap();
    let out = run_script("make-test-ca", &[other_ca.path().to_str().unwrap()], None);
    assert!(out.status.success());
    let mut options = broker.options("edge-b", broker.tls_port);
    options.set_transport(Transport::tls_with_config(
        rumqttc::TlsConfiguration::Simple {
            ca: std::fs::read(other_ca.path().join("ca.crt")).unwrap(),
            alpn: None,
            client_auth: None,
        },
    ));
    let err = Client::connect(options)
        .await
        .err()
        .expect("an unknown CA must be refused");
    assert!(
        err.to_lowercase().contains("certificate") || err.to_lowercase().contains("tls"),
        "{err}"
    );
}

#[test]
fn add_agent_refuses_role_names_and_hostile_names() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let file = passwd.to_str().unwrap();
    for bad in [
        "recorder",
        "ops",
        "slack-bridge",
        "a/b",
        "+",
        "#",
        "-x",
        "",
        "a b",
        &"x".repeat(65),
    ] {
        let out = run_script("add-agent", &["--passwd-file", file, bad], Some("pw\n"));
        assert!(!out.status.success(), "add-agent accepted {bad:?}");
    }
    let out = run_script(
        "add-agent",
        &["--passwd-file", file, "--role", "edge-1"],
        Some("pw\n"),
    );
    assert!(!out.status.success(), "--role accepted a non-role name");
    // The protocol allows ':' in agent ids, but mosquitto's password file cannot hold it.
    let out = run_script(
        "add-agent",
        &["--passwd-file", file, "edge:1"],
        Some("pw\n"),
    );
    assert!(!out.status.success(), "add-agent accepted a ':'");
    assert!(String::from_utf8_lossy(&out.stderr).contains("':'"));
    let out = run_script(
        "add-agent",
        &["--passwd-file", file, "edge-1.lab_2"],
        Some("pw-7f3c-unique\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Next steps"), "{stdout}");
    assert!(
        !stdout.contains("pw-7f3c-unique"),
        "a password from stdin must not be echoed: {stdout}"
    );
    let content = std::fs::read_to_string(&passwd).unwrap();
    assert!(content.starts_with("edge-1.lab_2:$7$"), "{content}");
    assert!(
        !content.contains("pw-7f3c-unique"),
        "password stored in clear: {content}"
    );
}
