//! The Slack bridge (`gemfleet-recorder slack-bridge`): alerts from the broker to a Slack
//! channel, none lost, none twice, in order.
//!
//! ```text
//!  broker ── alerts/+ (QoS 1, persistent session, manual acks)
//!    │
//!    ▼ ingest: decode, dedupe by event id, append + fsync to the spool, THEN ack the message
//!  spool (spool_dir/spool.jsonl)
//!    │
//!    ▼ sender: ≤ 1 post per min_post_interval, a burst combined into one post,
//!  Slack webhook   429 → Retry-After; 5xx/network → capped exponential backoff; 400 → set aside
//! ```
//!
//! - [`format`]: alert batch → Slack message (pure).
//! - [`spool`]: the durable queue and its de-duplication memory.
//! - [`webhook`]: the HTTP post and the classification of Slack's answers.
//!
//! Why a persistent MQTT session *and* a spool: the session keeps alerts published while the
//! bridge is down (the broker queues them); the spool keeps alerts the bridge received but
//! could not post yet (Slack down for an hour), across bridge restarts.

pub mod format;
pub mod spool;
pub mod webhook;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gemfleet_protocol::{Envelope, Payload, Secret, Severity, filter};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS, Transport};
use serde::Deserialize;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use spool::{Spool, SpoolError};
use webhook::{PostOutcome, Webhook};

/// Environment variable holding the webhook URL (overrides the settings file).
pub const WEBHOOK_URL_ENV: &str = "GEMFLEET_SLACK_WEBHOOK_URL";
/// Prefix of the bridge's other environment settings (`GEMFLEET_SLACK_BRIDGE_BROKER__HOST`).
pub const ENV_PREFIX: &str = "GEMFLEET_SLACK_BRIDGE";

/// Largest MQTT packet accepted (the broker's message_size_limit).
const MAX_PACKET_BYTES: usize = 1024 * 1024;
/// Longest pause between two broker reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);

mod metric {
    pub const SPOOLED: &str = "gemfleet_slack_bridge_alerts_spooled_total";
    pub const DUPLICATES: &str = "gemfleet_slack_bridge_duplicates_total";
    pub const BAD_MESSAGES: &str = "gemfleet_slack_bridge_bad_messages_total";
    pub const POSTS: &str = "gemfleet_slack_bridge_posts_total";
    pub const DELIVERED: &str = "gemfleet_slack_bridge_alerts_delivered_total";
    pub const REJECTED: &str = "gemfleet_slack_bridge_alerts_rejected_total";
    pub const PENDING: &str = "gemfleet_slack_bridge_pending_alerts";
    pub const BROKER_ERRORS: &str = "gemfleet_slack_bridge_broker_errors_total";
    pub const SPOOL_ERRORS: &str = "gemfleet_slack_bridge_spool_errors_total";
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeBrokerSettings {
    pub host: String,
    pub port: u16,
    /// Broker username and client id; the ACL's `slack-bridge` role reads alerts only.
    pub username: String,
    pub password: Option<Secret>,
    /// PEM file of the CA that signed the broker's certificate: set it to connect with TLS.
    pub tls_ca_file: Option<PathBuf>,
    pub keep_alive_secs: u64,
}

impl Default for BridgeBrokerSettings {
    fn default() -> Self {
        BridgeBrokerSettings {
            host: "127.0.0.1".into(),
            port: 1883,
            username: "slack-bridge".into(),
            password: None,
            tls_ca_file: None,
            keep_alive_secs: 30,
        }
    }
}

/// Settings of the bridge: a TOML file (`--bridge-config`) overlaid by
/// `GEMFLEET_SLACK_BRIDGE_…` variables, and the webhook URL from `GEMFLEET_SLACK_WEBHOOK_URL`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlackBridgeSettings {
    /// The incoming-webhook URL (a secret: never logged).
    pub webhook_url: Option<Secret>,
    pub broker: BridgeBrokerSettings,
    /// Where undelivered alerts wait (must survive restarts).
    pub spool_dir: PathBuf,
    /// At most one post per this interval (Slack allows about one per second per webhook).
    pub min_post_interval_ms: u64,
    /// After the first alert of a burst, wait this long so the burst goes out as one post.
    pub batch_window_ms: u64,
    /// Most alerts per post.
    pub max_batch: usize,
    /// First retry delay after a failed post; doubles up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    pub request_timeout_ms: u64,
    /// Alerts below this severity are acknowledged but not posted.
    pub min_severity: Severity,
    /// Where to serve Prometheus `/metrics` (off when unset).
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl Default for SlackBridgeSettings {
    fn default() -> Self {
        SlackBridgeSettings {
            webhook_url: None,
            broker: BridgeBrokerSettings::default(),
            spool_dir: PathBuf::from("/var/lib/gemfleet/slack-bridge"),
            min_post_interval_ms: 1_000,
            batch_window_ms: 250,
            max_batch: 20,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 60_000,
            request_timeout_ms: 10_000,
            min_severity: Severity::Info,
            metrics_listen: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("invalid Slack bridge settings: {0}")]
    Config(#[from] config::ConfigError),
    #[error("no Slack webhook URL: set {WEBHOOK_URL_ENV} or webhook_url in the bridge config")]
    NoWebhook,
    #[error("invalid Slack bridge setting {name}: {why}")]
    Invalid { name: &'static str, why: String },
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("cannot read the broker CA file {path}: {source}")]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

impl SlackBridgeSettings {
    /// Defaults, then `file` (if any), then `GEMFLEET_SLACK_BRIDGE_…`, then the webhook URL
    /// from `GEMFLEET_SLACK_WEBHOOK_URL`.
    pub fn load(file: Option<&str>) -> Result<SlackBridgeSettings, BridgeError> {
        let mut b = config::Config::builder();
        if let Some(f) = file {
            b = b.add_source(config::File::with_name(f).required(true));
        }
        b = b.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("_")
                .separator("__"),
        );
        let mut s: SlackBridgeSettings = b.build()?.try_deserialize()?;
        if let Ok(url) = std::env::var(WEBHOOK_URL_ENV)
            && !url.is_empty()
        {
            s.webhook_url = Some(Secret::new(url));
        }
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<(), BridgeError> {
        let url = self.webhook_url.as_ref().ok_or(BridgeError::NoWebhook)?;
        let u = url.expose();
        if !(u.starts_with("https://") || u.starts_with("http://")) {
            // Do not quote the value: it may be a mistyped secret.
            return Err(BridgeError::Invalid {
                name: "webhook_url",
                why: "must be an http(s) URL".into(),
            });
        }
        if self.max_batch == 0 {
            return Err(BridgeError::Invalid {
                name: "max_batch",
                why: "must be > 0".into(),
            });
        }
        if self.backoff_initial_ms == 0 || self.backoff_max_ms < self.backoff_initial_ms {
            return Err(BridgeError::Invalid {
                name: "backoff_initial_ms",
                why: "must be > 0 and <= backoff_max_ms".into(),
            });
        }
        gemfleet_protocol::AgentId::parse(self.broker.username.clone()).map_err(|e| {
            BridgeError::Invalid {
                name: "broker.username",
                why: e.to_string(),
            }
        })?;
        Ok(())
    }
}

/// A running bridge; [`RunningBridge::shutdown`] stops it after the post in progress.
pub struct RunningBridge {
    stop: watch::Sender<bool>,
    sender: JoinHandle<()>,
    poller: JoinHandle<()>,
    ingest: JoinHandle<()>,
    client: AsyncClient,
    subscribed: watch::Receiver<bool>,
}

impl RunningBridge {
    /// Resolves once the broker has granted the alerts subscription (from then on the
    /// persistent session keeps alerts even while the bridge is down).
    pub async fn subscribed(&self) {
        let mut rx = self.subscribed.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Graceful stop: finishes the post in progress, disconnects from the broker.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.sender.await;
        let _ = self.client.try_disconnect();
        self.ingest.abort();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.poller).await;
    }

    /// Stops at once, as a crash would (tests use it to prove the spool).
    pub fn abort(self) {
        self.sender.abort();
        self.ingest.abort();
        self.poller.abort();
    }
}

/// Opens the spool, connects to the broker and starts posting.
pub async fn start(settings: SlackBridgeSettings) -> Result<RunningBridge, BridgeError> {
    settings.validate()?;
    // reqwest (rustls without a built-in provider) panics when none is installed; Err only
    // means one already is.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = settings.webhook_url.clone().ok_or(BridgeError::NoWebhook)?;
    let webhook = Webhook::new(url, Duration::from_millis(settings.request_timeout_ms))
        .map_err(|e| BridgeError::Http(e.without_url().to_string()))?;
    let spool = Spool::open(&settings.spool_dir)?;
    if spool.skipped_lines > 0 {
        tracing::warn!(
            lines = spool.skipped_lines,
            "skipped unreadable spool lines"
        );
    }
    tracing::info!(pending = spool.pending_len(), dir = %settings.spool_dir.display(), "spool opened");
    metrics::gauge!(metric::PENDING).set(spool.pending_len() as f64);
    let spool = Arc::new(Mutex::new(spool));

    let options = mqtt_options(&settings.broker)?;
    let (client, eventloop) = AsyncClient::new(options, 64);
    let (stop, stop_rx) = watch::channel(false);
    let notify = Arc::new(Notify::new());
    // Unbounded on purpose: the broker's in-flight window (max_inflight_messages) bounds it,
    // and a bounded channel could deadlock the poller against the ingest task's acks.
    let (ingest_tx, ingest_rx) = mpsc::unbounded_channel();

    let (subscribed_tx, subscribed) = watch::channel(false);
    let poller = tokio::spawn(poll_broker(
        eventloop,
        client.clone(),
        ingest_tx,
        subscribed_tx,
        stop_rx.clone(),
    ));
    let ingest = tokio::spawn(ingest_alerts(
        ingest_rx,
        client.clone(),
        spool.clone(),
        notify.clone(),
        settings.min_severity,
    ));
    let sender = tokio::spawn(send_alerts(settings, webhook, spool, notify, stop_rx));
    Ok(RunningBridge {
        stop,
        sender,
        poller,
        ingest,
        client,
        subscribed,
    })
}

/// Arguments of `gemfleet-recorder slack-bridge`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "The webhook URL is a secret: give it in GEMFLEET_SLACK_WEBHOOK_URL (e.g. \
                  from a systemd EnvironmentFile) or as webhook_url in the bridge config, never \
                  on the command line. Other settings: GEMFLEET_SLACK_BRIDGE_* variables, e.g. \
                  GEMFLEET_SLACK_BRIDGE_BROKER__PASSWORD, GEMFLEET_SLACK_BRIDGE_SPOOL_DIR. \
                  See docs/operations.md."
)]
pub struct SlackBridgeArgs {
    /// The bridge's TOML settings file (not the recorder's: see deploy/slack-bridge.example.toml).
    #[arg(long, env = "GEMFLEET_SLACK_BRIDGE_CONFIG")]
    pub bridge_config: Option<String>,
}

/// The `slack-bridge` command: loads its settings and runs until SIGTERM or Ctrl-C.
pub async fn run_command(args: SlackBridgeArgs) -> anyhow::Result<()> {
    run(SlackBridgeSettings::load(args.bridge_config.as_deref())?).await
}

/// Runs the bridge until SIGTERM or Ctrl-C.
pub async fn run(settings: SlackBridgeSettings) -> anyhow::Result<()> {
    if let Some(addr) = settings.metrics_listen {
        serve_metrics(addr).await?;
    }
    let running = start(settings).await?;
    tracing::info!("Slack bridge running");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: stopping"),
    }
    running.shutdown().await;
    Ok(())
}

async fn serve_metrics(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}

fn mqtt_options(b: &BridgeBrokerSettings) -> Result<MqttOptions, BridgeError> {
    let mut options = MqttOptions::new(b.username.clone(), b.host.clone(), b.port);
    options.set_keep_alive(Duration::from_secs(b.keep_alive_secs.max(5)));
    options.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    // A persistent session: the broker queues alerts while the bridge is down.
    options.set_clean_session(false);
    // Acknowledge only after the alert is in the spool.
    options.set_manual_acks(true);
    if let Some(p) = &b.password {
        options.set_credentials(b.username.clone(), p.expose());
    }
    if let Some(path) = &b.tls_ca_file {
        let ca = std::fs::read(path).map_err(|source| BridgeError::CaFile {
            path: path.clone(),
            source,
        })?;
        options.set_transport(Transport::tls_with_config(
            rumqttc::TlsConfiguration::Simple {
                ca,
                alpn: None,
                client_auth: None,
            },
        ));
    }
    Ok(options)
}

/// The one task that drives the MQTT event loop (rumqttc rule: never await a publish here).
async fn poll_broker(
    mut eventloop: rumqttc::EventLoop,
    client: AsyncClient,
    ingest: mpsc::UnboundedSender<Publish>,
    subscribed: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        let event = tokio::select! {
            _ = stop.changed() => return,
            e = eventloop.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                delay = Duration::from_millis(200);
                tracing::info!("connected to the broker");
                if let Err(e) = client.try_subscribe(filter::alerts(), QoS::AtLeastOnce) {
                    tracing::error!(error = %e, "cannot subscribe to alerts");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                {
                    tracing::error!("the broker refused the alerts subscription (check the ACL)");
                } else {
                    subscribed.send_replace(true);
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if ingest.send(p).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                metrics::counter!(metric::BROKER_ERRORS).increment(1);
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "broker connection failed");
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(MAX_RECONNECT_DELAY);
            }
        }
    }
}

/// Decodes each message, spools new alerts, then acknowledges the message.
async fn ingest_alerts(
    mut rx: mpsc::UnboundedReceiver<Publish>,
    client: AsyncClient,
    spool: Arc<Mutex<Spool>>,
    notify: Arc<Notify>,
    min_severity: Severity,
) {
    while let Some(publish) = rx.recv().await {
        let outcome = match Envelope::decode(&publish.payload) {
            Ok(Envelope {
                id,
                ts,
                payload: Payload::Alert(alert),
                ..
            }) => {
                if alert.severity < min_severity {
                    Ok(false)
                } else {
                    match spool.lock() {
                        Ok(mut s) => {
                            let r = s.add(id, ts, alert);
                            metrics::gauge!(metric::PENDING).set(s.pending_len() as f64);
                            r
                        }
                        Err(_) => {
                            tracing::error!("spool lock poisoned; stopping ingest");
                            return;
                        }
                    }
                }
            }
            Ok(other) => {
                metrics::counter!(metric::BAD_MESSAGES).increment(1);
                tracing::warn!(topic = %publish.topic, kind = other.payload.kind(), "not an alert; ignored");
                Ok(false)
            }
            Err(e) => {
                metrics::counter!(metric::BAD_MESSAGES, "reason" => e.label()).increment(1);
                tracing::warn!(topic = %publish.topic, error = %e, "undecodable message; ignored");
                Ok(false)
            }
        };
        match outcome {
            Ok(true) => {
                metrics::counter!(metric::SPOOLED).increment(1);
                notify.notify_one();
            }
            Ok(false) => {
                if publish.dup {
                    metrics::counter!(metric::DUPLICATES).increment(1);
                }
            }
            Err(e) => {
                // Not acknowledged: the broker delivers it again after a reconnect.
                metrics::counter!(metric::SPOOL_ERRORS).increment(1);
                tracing::error!(error = %e, "cannot spool an alert; it stays unacknowledged");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        if let Err(e) = client.ack(&publish).await {
            tracing::warn!(error = %e, "cannot acknowledge a message; the broker will resend it");
        }
    }
}

/// Sleeps unless told to stop; true when stopping.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = stop.changed() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// Posts spooled alerts in order: one batch at a time, rate-limited, retried until delivered.
async fn send_alerts(
    settings: SlackBridgeSettings,
    webhook: Webhook,
    spool: Arc<Mutex<Spool>>,
    notify: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let min_interval = Duration::from_millis(settings.min_post_interval_ms);
    let initial = Duration::from_millis(settings.backoff_initial_ms);
    let max_backoff = Duration::from_millis(settings.backoff_max_ms);
    let mut backoff = initial;
    let mut last_post: Option<Instant> = None;
    // After Slack rejects a batch, post one alert at a time until the bad one is set aside.
    let mut isolate = false;
    loop {
        let Ok(waiting) = spool.lock().map(|s| s.pending_len()) else {
            return;
        };
        if waiting == 0 {
            tokio::select! {
                _ = stop.changed() => return,
                _ = notify.notified() => {}
            }
            // Let the rest of a burst arrive, so it goes out as one post.
            if pause(&mut stop, Duration::from_millis(settings.batch_window_ms)).await {
                return;
            }
            continue;
        }
        if let Some(t) = last_post {
            let next = t + min_interval;
            if next > Instant::now() && pause(&mut stop, next - Instant::now()).await {
                return;
            }
        }
        let max = if isolate { 1 } else { settings.max_batch };
        let Ok(batch) = spool.lock().map(|s| s.peek(max)) else {
            return;
        };
        let Some(last_seq) = batch.last().map(|a| a.seq) else {
            continue;
        };
        let body = format::batch_message(&batch);
        last_post = Some(Instant::now());
        let outcome = webhook.post(&body).await;
        let label = match &outcome {
            PostOutcome::Delivered => "delivered",
            PostOutcome::RateLimited { .. } => "rate_limited",
            PostOutcome::Retry { .. } => "retry",
            PostOutcome::Rejected { .. } => "rejected",
        };
        metrics::counter!(metric::POSTS, "outcome" => label).increment(1);
        let wait = match outcome {
            PostOutcome::Delivered => {
                backoff = initial;
                isolate = false;
                metrics::counter!(metric::DELIVERED).increment(batch.len() as u64);
                if !mark(&spool, last_seq) {
                    // Could not record the delivery: wait before trying again.
                    Some(initial)
                } else {
                    None
                }
            }
            PostOutcome::RateLimited { retry_after } => {
                let wait = retry_after.unwrap_or(backoff).max(min_interval);
                tracing::warn!(
                    wait_ms = wait.as_millis() as u64,
                    "Slack rate limit (429); waiting"
                );
                backoff = (backoff * 2).min(max_backoff);
                Some(wait)
            }
            PostOutcome::Retry { why } => {
                tracing::warn!(%why, pending = waiting, retry_in_ms = backoff.as_millis() as u64, "Slack post failed; will retry");
                let wait = backoff;
                backoff = (backoff * 2).min(max_backoff);
                Some(wait)
            }
            PostOutcome::Rejected { why } => {
                if batch.len() > 1 {
                    tracing::warn!(%why, "Slack rejected a batch; posting its alerts one by one");
                    isolate = true;
                    None
                } else {
                    metrics::counter!(metric::REJECTED).increment(1);
                    set_aside(&settings.spool_dir, &batch, &why);
                    if mark(&spool, last_seq) {
                        None
                    } else {
                        Some(initial)
                    }
                }
            }
        };
        if let Some(wait) = wait
            && pause(&mut stop, wait).await
        {
            return;
        }
    }
}

fn mark(spool: &Arc<Mutex<Spool>>, upto: u64) -> bool {
    let Ok(mut s) = spool.lock() else {
        return false;
    };
    let r = s.mark_delivered(upto);
    metrics::gauge!(metric::PENDING).set(s.pending_len() as f64);
    match r {
        Ok(()) => true,
        Err(e) => {
            metrics::counter!(metric::SPOOL_ERRORS).increment(1);
            tracing::error!(error = %e, "cannot record a delivery in the spool");
            false
        }
    }
}

/// Keeps an alert Slack refused in `rejected.jsonl` next to the spool, for a person to read.
fn set_aside(dir: &std::path::Path, batch: &[spool::SpooledAlert], why: &str) {
    use std::io::Write;
    let path = dir.join("rejected.jsonl");
    let result = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| {
            for a in batch {
                let line = serde_json::json!({ "why": why, "alert": a });
                writeln!(f, "{line}")?;
            }
            f.sync_data()
        });
    match result {
        Ok(()) => {
            tracing::error!(%why, file = %path.display(), "Slack rejected an alert; set aside")
        }
        Err(e) => {
            tracing::error!(%why, error = %e, "Slack rejected an alert and it could not be set aside")
        }
    }
}
