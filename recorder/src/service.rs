//! The running recorder: starts the database pool, the MQTT session, the core loop, the
//! context store and the HTTP endpoints, and stops them in order.
//!
//! The core loop owns the arbiter and all in-memory state. Each turn it takes every message
//! waiting (up to `batch_max`), writes them and every decision they caused in ONE
//! transaction, commits, then acknowledges the MQTT packets, then publishes grants, denials,
//! states, alerts and watermarks. A failed transaction changes nothing visible: the state is
//! rebuilt from the database and the same batch is tried again.

use crate::arbiter::{Arbiter, ArbiterSettings};
use crate::clock::{Clock, SystemClock};
use crate::core::Core;
use crate::mqtt::{self, Inbound};
use crate::settings::Settings;
use anyhow::Context as _;
use rumqttc::AsyncClient;
use sqlx::postgres::PgPoolOptions;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Shared health flags for /healthz.
#[derive(Debug, Default)]
pub struct Health {
    pub broker_connected: Arc<AtomicBool>,
    pub database_ok: AtomicBool,
}

pub struct Recorder;

/// A recorder running in this process.
pub struct RunningRecorder {
    http_addr: SocketAddr,
    stop: CancellationToken,
    core: JoinHandle<()>,
    context: JoinHandle<()>,
    poller: JoinHandle<()>,
    http: JoinHandle<()>,
    listener: JoinHandle<()>,
    client: AsyncClient,
    pool: sqlx::PgPool,
}

/// The NOTIFY channel admin functions signal on after changing keys, projects or limits.
pub const CONFIG_CHANNEL: &str = "gemfleet_config";

impl Recorder {
    /// Starts a recorder with the system clock.
    pub async fn start(settings: Settings) -> anyhow::Result<RunningRecorder> {
        Self::start_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Starts a recorder whose arbiter, timers and daily reset read `clock`.
    pub async fn start_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<RunningRecorder> {
        settings.validate()?;
        let master = settings.master_key()?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(&settings.database_url)
            .await
            .with_context(|| {
                format!(
                    "cannot connect to PostgreSQL ({})",
                    redact_url(&settings.database_url)
                )
            })?;
        crate::MIGRATOR
            .run(&pool)
            .await
            .context("cannot apply migrations")?;
        let health = Arc::new(Health::default());
        let stop = CancellationToken::new();
        let metrics = crate::http::metrics_handle();

        let listener = tokio::net::TcpListener::bind(settings.http_listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.http_listen))?;
        let http_addr = listener.local_addr()?;
        let http = tokio::spawn(crate::http::serve(
            listener,
            pool.clone(),
            health.clone(),
            metrics,
            stop.clone(),
        ));

        let opts = mqtt::options(&settings)?;
        let (client, mut eventloop) = AsyncClient::new(opts, 8192);
        // Grants are small packets that must leave at once: no Nagle delay.
        let mut net = eventloop.network_options();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let (core_tx, core_rx) = mpsc::unbounded_channel();
        let (ctx_tx, ctx_rx) = mpsc::unbounded_channel();

        let arbiter = Arbiter::new(ArbiterSettings {
            minute: settings.minute()
                + chrono::Duration::milliseconds(settings.window_guard_ms as i64),
            lease: settings.lease(),
            stale_grace: chrono::Duration::milliseconds(settings.stale_grace_ms as i64),
        });
        let me = gemfleet_protocol::AgentId::parse(settings.recorder_id.clone())?;
        let mut core = Core::new(
            settings.clone(),
            clock,
            pool.clone(),
            master,
            client.clone(),
            me.clone(),
            arbiter,
            health.clone(),
        );
        core.load()
            .await
            .context("cannot load the recorder's state from the database")?;

        let poller = tokio::spawn(mqtt::poll_loop(
            client.clone(),
            eventloop,
            core_tx.clone(),
            ctx_tx,
            health.broker_connected.clone(),
            stop.clone(),
        ));
        let listener_task = tokio::spawn(listen_config(
            settings.database_url.clone(),
            core_tx.clone(),
            stop.clone(),
            settings.config_reload_secs,
        ));
        let core_task = tokio::spawn(core.run(core_rx, stop.clone()));
        let context = tokio::spawn(crate::context_store::run(
            pool.clone(),
            client.clone(),
            me,
            ctx_rx,
            stop.clone(),
        ));
        Ok(RunningRecorder {
            http_addr,
            stop,
            core: core_task,
            context,
            poller,
            http,
            listener: listener_task,
            client,
            pool,
        })
    }
}

impl RunningRecorder {
    /// Where /healthz and /metrics listen.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn pool(&self) -> &sqlx::PgPool {
        &self.pool
    }

    /// Graceful stop: no new messages are taken, the batch in hand is committed and
    /// acknowledged, the session is disconnected.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.cancel();
        let _ = self.core.await;
        let _ = self.context.await;
        let _ = self.client.disconnect().await;
        if tokio::time::timeout(std::time::Duration::from_secs(3), self.poller)
            .await
            .is_err()
        {
            tracing::warn!("MQTT poller did not finish in time");
        }
        let _ = self.http.await;
        self.listener.abort();
        self.pool.close().await;
        Ok(())
    }

    /// Stops without flushing anything (tests of crash recovery).
    pub fn abort(self) {
        self.core.abort();
        self.context.abort();
        self.poller.abort();
        self.http.abort();
        self.listener.abort();
    }
}

/// Forwards NOTIFYs on [`CONFIG_CHANNEL`] as reloads, plus a periodic reload as a fallback.
async fn listen_config(
    url: String,
    tx: mpsc::UnboundedSender<Inbound>,
    stop: CancellationToken,
    every_secs: u64,
) {
    let period = std::time::Duration::from_secs(every_secs.max(1));
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect(&url).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("config listener: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(period) => { let _ = tx.send(Inbound::Reload); continue }
                    _ = stop.cancelled() => return,
                }
            }
        };
        if let Err(e) = listener.listen(CONFIG_CHANNEL).await {
            tracing::warn!("config listener: {e}");
        }
        loop {
            tokio::select! {
                n = listener.recv() => match n {
                    Ok(_) => { let _ = tx.send(Inbound::Reload); }
                    Err(e) => { tracing::warn!("config listener: {e}"); break; }
                },
                _ = tokio::time::sleep(period) => { let _ = tx.send(Inbound::Reload); }
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// A database URL without its password, for error messages.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}://{user}@{host}")
            }
            None => url.to_string(),
        },
        None => "<unparseable url>".into(),
    }
}
