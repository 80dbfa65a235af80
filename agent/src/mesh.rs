//! The machine's MQTT session: one task polls rumqttc's event loop (capped backoff on errors,
//! never publishing from itself); every ConnAck resubscribes, republishes the retained online
//! status and replays the outbox. Incoming messages update the cold view, trim the outbox and
//! answer waiting claims and context requests.

use crate::cold::ColdView;
use crate::outbox::{Outbox, OutboxError};
use chrono::{DateTime, Utc};
use gemfleet_protocol::{
    AgentId, AgentStatus, Context, Denial, Envelope, Grant, KeyName, ModelName, Payload, Presence,
    ProjectId, Release, Topic, filter,
};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

/// Largest MQTT packet either way: above the protocol's payload limit, with room for topics.
pub const MAX_PACKET_BYTES: usize = 1024 * 1024;
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(15);
const RESEND_BATCH: usize = 1000;

/// The recorder's answer to a claim.
#[derive(Debug)]
pub enum ClaimAnswer {
    Grant(Grant),
    Denial(Denial),
}

/// Broker connection facts for `status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Connection {
    pub broker: String,
    pub connected: bool,
    pub since: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub bad_messages: u64,
}

#[derive(Debug, Clone)]
pub struct MeshConfig {
    pub agent: AgentId,
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: Option<gemfleet_protocol::Secret>,
    pub keep_alive: Duration,
    pub resend_after: Duration,
    /// PEM of the CA that signed the broker's certificate: connect over TLS when set.
    pub tls_ca_pem: Option<Vec<u8>>,
}

pub struct Mesh {
    agent: AgentId,
    client: AsyncClient,
    outbox: Arc<Outbox>,
    broker: String,
    connected: AtomicBool,
    since: Mutex<Option<DateTime<Utc>>>,
    last_error: Mutex<Option<String>>,
    bad_messages: AtomicU64,
    cold: Mutex<ColdView>,
    claims: Mutex<HashMap<Uuid, oneshot::Sender<ClaimAnswer>>>,
    contexts: Mutex<HashMap<Uuid, mpsc::UnboundedSender<Context>>>,
    /// Signalled on every ack, so `flush` can wait for the outbox to drain.
    acked: Notify,
    shutdown: Notify,
    stopping: AtomicBool,
    /// Whether the outbox was last seen near its bound (to log the crossing once each way).
    near_full: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("cannot encode message: {0}")]
    Encode(String),
    #[error("MQTT client: {0}")]
    Client(String),
    #[error("internal task failed: {0}")]
    Join(String),
}

fn status_envelope(agent: &AgentId, state: Presence, floor: Option<u64>) -> Vec<u8> {
    let payload = Payload::Status(AgentStatus {
        state,
        version: env!("CARGO_PKG_VERSION").into(),
        capabilities: vec!["proxy".into(), "context".into(), "outbox".into()],
        outbox_floor: floor,
    });
    Envelope::new(agent.clone(), None, payload)
        .encode()
        .unwrap_or_default()
}

impl Mesh {
    /// Connects (in the background: the event loop retries until the broker answers) and
    /// returns the session.
    pub fn start(cfg: MeshConfig, outbox: Arc<Outbox>) -> (Arc<Mesh>, tokio::task::JoinHandle<()>) {
        let mut opts = MqttOptions::new(cfg.agent.as_str(), cfg.host.clone(), cfg.port);
        opts.set_keep_alive(cfg.keep_alive);
        opts.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        opts.set_clean_session(true);
        opts.set_request_channel_capacity(4096);
        if let Some(pem) = &cfg.tls_ca_pem {
            opts.set_transport(rumqttc::Transport::tls(pem.clone(), None, None));
        }
        if let Some(p) = &cfg.password {
            opts.set_credentials(cfg.username.clone(), p.expose());
        } else if cfg.username != cfg.agent.as_str() {
            opts.set_credentials(cfg.username.clone(), "");
        }
        let status_topic = Topic::AgentStatus(cfg.agent.clone()).to_string();
        opts.set_last_will(LastWill::new(
            status_topic,
            status_envelope(&cfg.agent, Presence::Offline, None),
            QoS::AtLeastOnce,
            true,
        ));
        let (client, mut eventloop) = AsyncClient::new(opts, 4096);
        // Claims and grants are small packets on a request's path: no Nagle delay.
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let mesh = Arc::new(Mesh {
            agent: cfg.agent.clone(),
            client,
            outbox,
            broker: format!("{}:{}", cfg.host, cfg.port),
            connected: AtomicBool::new(false),
            since: Mutex::new(None),
            last_error: Mutex::new(None),
            bad_messages: AtomicU64::new(0),
            cold: Mutex::new(ColdView::default()),
            claims: Mutex::new(HashMap::new()),
            contexts: Mutex::new(HashMap::new()),
            acked: Notify::new(),
            shutdown: Notify::new(),
            stopping: AtomicBool::new(false),
            near_full: AtomicBool::new(false),
        });
        let m = mesh.clone();
        let handle = tokio::spawn(async move { m.poll_loop(eventloop).await });
        let m = mesh.clone();
        tokio::spawn(async move { m.resend_loop(cfg.resend_after).await });
        (mesh, handle)
    }

    pub fn agent(&self) -> &AgentId {
        &self.agent
    }
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    pub fn connection(&self) -> Connection {
        Connection {
            broker: self.broker.clone(),
            connected: self.is_connected(),
            since: self.since.lock().ok().and_then(|g| *g),
            last_error: self.last_error.lock().ok().and_then(|g| g.clone()),
            bad_messages: self.bad_messages.load(Ordering::Relaxed),
        }
    }

    pub fn with_cold<R>(&self, f: impl FnOnce(&ColdView) -> R) -> Option<R> {
        self.cold.lock().ok().map(|g| f(&g))
    }

    /// The single task that drives the connection.
    async fn poll_loop(self: Arc<Self>, mut eventloop: EventLoop) {
        let mut backoff = BACKOFF_START;
        loop {
            let event = tokio::select! {
                e = eventloop.poll() => e,
                _ = self.shutdown.notified() => break,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = BACKOFF_START;
                    self.connected.store(true, Ordering::SeqCst);
                    if let Ok(mut g) = self.since.lock() {
                        *g = Some(Utc::now());
                    }
                    tracing::info!(broker = %self.broker, "connected to the broker");
                    let m = self.clone();
                    // Publishing from the poll task would deadlock: do it from another task.
                    tokio::spawn(async move { m.on_connect().await });
                }
                Ok(Event::Incoming(Packet::Publish(p))) => self.on_publish(&p.topic, &p.payload),
                Ok(Event::Incoming(Packet::Disconnect)) => {
                    self.connected.store(false, Ordering::SeqCst);
                }
                Ok(_) => {}
                Err(e) => {
                    if self.stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let was = self.connected.swap(false, Ordering::SeqCst);
                    let msg = format!("broker {}: {e}", self.broker);
                    // Say so once per kind of failure (not on every retry): a daemon that cannot
                    // reach its broker must not look idle.
                    let repeated = self
                        .last_error
                        .lock()
                        .map(|g| g.as_deref() == Some(msg.as_str()))
                        .unwrap_or(false);
                    if was {
                        tracing::warn!("{msg}; reconnecting");
                    } else if !repeated {
                        tracing::warn!("{msg}; retrying with backoff (up to {BACKOFF_MAX:?})");
                    } else {
                        tracing::debug!("{msg}; retrying in {backoff:?}");
                    }
                    if let Ok(mut g) = self.last_error.lock() {
                        *g = Some(msg);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.shutdown.notified() => break,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        self.connected.store(false, Ordering::SeqCst);
    }

    async fn on_connect(self: Arc<Self>) {
        let subs = [
            filter::inbox(&self.agent),
            filter::ack(&self.agent),
            filter::key_states(),
            filter::quota_states(),
        ];
        for s in subs {
            if let Err(e) = self.client.subscribe(s, QoS::AtLeastOnce).await {
                tracing::warn!("subscribe failed: {e}");
            }
        }
        let status = status_envelope(&self.agent, Presence::Online, Some(self.outbox.floor()));
        let topic = Topic::AgentStatus(self.agent.clone()).to_string();
        if let Err(e) = self
            .client
            .publish(topic, QoS::AtLeastOnce, true, status)
            .await
        {
            tracing::warn!("publishing online status failed: {e}");
        }
        let pending = self.outbox.pending(None);
        if !pending.is_empty() {
            tracing::info!(events = pending.len(), "replaying the outbox");
        }
        for o in pending {
            if !self.is_connected() {
                break;
            }
            if let Err(e) = self
                .client
                .publish(o.topic, QoS::AtLeastOnce, false, o.bytes)
                .await
            {
                tracing::warn!("replay failed: {e}");
                break;
            }
        }
    }

    /// Publishes again what the recorder has not acknowledged for a while (a publish that
    /// was dropped while the broker went away, or a recorder that was down).
    async fn resend_loop(self: Arc<Self>, after: Duration) {
        let tick = (after / 2).max(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = self.shutdown.notified() => return,
            }
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            if !self.is_connected() {
                continue;
            }
            let cutoff = Utc::now() - chrono::Duration::from_std(after).unwrap_or_default();
            for o in self
                .outbox
                .pending(Some(cutoff))
                .into_iter()
                .take(RESEND_BATCH)
            {
                if self
                    .client
                    .try_publish(o.topic, QoS::AtLeastOnce, false, o.bytes)
                    .is_err()
                {
                    break;
                }
            }
        }
    }

    fn bad(&self, what: &str, err: &dyn std::fmt::Display) {
        self.bad_messages.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("ignored a bad message on {what}: {err}");
    }

    fn on_publish(self: &Arc<Self>, topic: &str, payload: &[u8]) {
        let t = match Topic::parse(topic) {
            Ok(t) => t,
            Err(e) => return self.bad("an unknown topic", &e),
        };
        match &t {
            Topic::KeyState(k) if payload.is_empty() => {
                if let Ok(mut c) = self.cold.lock() {
                    c.clear_key(k);
                }
            }
            Topic::QuotaState(p, m) if payload.is_empty() => {
                if let Ok(mut c) = self.cold.lock() {
                    c.clear_group(p, m);
                }
            }
            _ => {}
        }
        if payload.is_empty() {
            return;
        }
        let env = match Envelope::decode(payload) {
            Ok(e) => e,
            Err(e) => return self.bad(topic, &e),
        };
        match (t, env.payload) {
            (Topic::Inbox(a), Payload::Grant(g)) if a == self.agent => self.on_grant(g),
            (Topic::Inbox(a), Payload::Denial(d)) if a == self.agent => {
                let waiter = self
                    .claims
                    .lock()
                    .ok()
                    .and_then(|mut m| m.remove(&d.claim_id));
                if let Some(w) = waiter {
                    let _ = w.send(ClaimAnswer::Denial(d));
                }
            }
            (Topic::Inbox(a), Payload::Context(c)) if a == self.agent => {
                let id = context_request_id(&c);
                let sender = self.contexts.lock().ok().and_then(|m| m.get(&id).cloned());
                if let Some(s) = sender {
                    let _ = s.send(c);
                }
            }
            (Topic::Ack(a), Payload::Ack(ack)) if a == self.agent => {
                let m = self.clone();
                tokio::task::spawn_blocking(move || {
                    match m.outbox.ack(ack.watermark) {
                        Ok(n) if n > 0 => tracing::debug!(
                            watermark = ack.watermark,
                            trimmed = n,
                            "outbox trimmed"
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::error!("outbox trim failed: {e}"),
                    }
                    m.acked.notify_waiters();
                    m.watch_fill();
                });
            }
            (Topic::KeyState(_), Payload::KeyState(s)) => {
                tracing::info!(key = %s.key, state = ?s.state, "key state");
                if let Ok(mut c) = self.cold.lock() {
                    c.apply_key(s);
                }
            }
            (Topic::QuotaState(..), Payload::QuotaState(s)) => {
                tracing::info!(project = %s.project, model = %s.model, state = ?s.state, "quota group state");
                if let Ok(mut c) = self.cold.lock() {
                    c.apply_group(s);
                }
            }
            (_, p) => self.bad(topic, &format!("unexpected {} message", p.kind())),
        }
    }

    fn on_grant(self: &Arc<Self>, g: Grant) {
        let waiter = self
            .claims
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&g.claim_id));
        match waiter {
            Some(w) => {
                if let Err(ClaimAnswer::Grant(g)) = w.send(ClaimAnswer::Grant(g)) {
                    self.release_later(g, "the request was given up before the grant arrived");
                }
            }
            None => self.release_later(g, "no request is waiting for this claim any more"),
        }
    }

    /// Hands an unwanted grant back (from a task of its own: never publish from the poller).
    pub fn release_later(self: &Arc<Self>, g: Grant, reason: &str) {
        let m = self.clone();
        let reason = reason.to_string();
        tokio::spawn(async move {
            let r = Release {
                claim_id: g.claim_id,
                grant_id: Some(g.grant_id),
                reason,
            };
            if let Err(e) = m.emit(Payload::Release(r)).await {
                tracing::warn!("release failed: {e}");
            }
        });
    }

    /// Registers interest in the answer to `claim_id` (before the claim is published).
    pub fn expect_claim(&self, claim_id: Uuid) -> oneshot::Receiver<ClaimAnswer> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut m) = self.claims.lock() {
            m.insert(claim_id, tx);
        }
        rx
    }
    pub fn forget_claim(&self, claim_id: &Uuid) {
        if let Ok(mut m) = self.claims.lock() {
            m.remove(claim_id);
        }
    }

    pub fn expect_context(&self, request_id: Uuid) -> mpsc::UnboundedReceiver<Context> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut m) = self.contexts.lock() {
            m.insert(request_id, tx);
        }
        rx
    }
    pub fn forget_context(&self, request_id: &Uuid) {
        if let Ok(mut m) = self.contexts.lock() {
            m.remove(request_id);
        }
    }

    /// Writes an event to the outbox (durably), then publishes it if connected. When not
    /// connected it stays in the outbox and goes out on the next ConnAck.
    pub async fn emit(&self, payload: Payload) -> Result<Envelope, MeshError> {
        let outbox = self.outbox.clone();
        let (out, env) = tokio::task::spawn_blocking(move || outbox.append(payload))
            .await
            .map_err(|e| MeshError::Join(e.to_string()))??;
        self.watch_fill();
        if self.is_connected()
            && let Err(e) = self
                .client
                .try_publish(out.topic, QoS::AtLeastOnce, false, out.bytes)
        {
            tracing::debug!("publish deferred to the resend loop: {e}");
        }
        Ok(env)
    }

    /// Logs once when the outbox crosses into (and out of) its near-full zone: the operator's
    /// alert that the recorder has not acknowledged events for a while.
    fn watch_fill(&self) {
        let Some(st) = self.outbox.status() else {
            return;
        };
        let was = self.near_full.swap(st.near_full, Ordering::SeqCst);
        if st.near_full && !was {
            tracing::error!(
                pending_bytes = st.pending_bytes,
                max_bytes = st.max_bytes,
                oldest = ?st.oldest_ts,
                "outbox nearly full: the recorder has not acknowledged events (broker {} connected: {}); new claims will be refused at the bound",
                self.broker,
                self.is_connected()
            );
        } else if was && !st.near_full {
            tracing::info!("outbox back below its alert level");
        }
    }

    /// Publishes a context request (not an outbox event: the caller waits for its answer).
    pub async fn send_context(&self, c: Context) -> Result<(), MeshError> {
        let bytes = Envelope::new(self.agent.clone(), None, Payload::Context(c))
            .encode()
            .map_err(|e| MeshError::Encode(e.to_string()))?;
        let topic = Topic::AgentContext(self.agent.clone()).to_string();
        self.client
            .publish(topic, QoS::AtLeastOnce, false, bytes)
            .await
            .map_err(|e| MeshError::Client(e.to_string()))
    }

    /// Waits until the outbox is empty or `timeout` passes; returns the depth left.
    pub async fn flush(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.acked.notified();
            let depth = self.outbox.depth();
            if depth == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.outbox.depth();
            }
        }
    }

    /// Says goodbye (retained offline status, since a clean disconnect sends no last will)
    /// and stops the event loop.
    pub async fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if self.is_connected() {
            let topic = Topic::AgentStatus(self.agent.clone()).to_string();
            let bytes = status_envelope(&self.agent, Presence::Offline, None);
            let _ = self
                .client
                .publish(topic, QoS::AtLeastOnce, true, bytes)
                .await;
            let _ = self.client.disconnect().await;
            // Give the event loop a moment to flush the two packets.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.shutdown.notify_waiters();
    }

    /// Cold keys to avoid for `model`, from the retained notices.
    pub fn avoid_for(&self, model: &ModelName) -> Vec<KeyName> {
        self.with_cold(|c| c.avoid_for(model, Utc::now()))
            .unwrap_or_default()
    }
    pub fn is_cold(&self, key: &KeyName, project: &ProjectId, model: &ModelName) -> bool {
        self.with_cold(|c| c.is_cold(key, project, model, Utc::now()))
            .unwrap_or(false)
    }
}

fn context_request_id(c: &Context) -> Uuid {
    match c {
        Context::SaveChunk { request_id, .. }
        | Context::Saved { request_id, .. }
        | Context::Load { request_id, .. }
        | Context::Chunk { request_id, .. }
        | Context::NotFound { request_id, .. } => *request_id,
    }
}
