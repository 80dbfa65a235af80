//! The daemon: opens the outbox, starts the MQTT session, serves the proxy and the control
//! API on one loopback listener, and (for `serve`) advertises itself in a state file.

use crate::mesh::{Mesh, MeshConfig};
use crate::outbox::Outbox;
use crate::settings::Settings;
use crate::stats::StatsBook;
use crate::{control, proxy};
use anyhow::Context as _;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::serve::ListenerExt;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// Largest request body the proxy accepts (Gemini CLI requests grow with history).
const MAX_REQUEST_BODY: usize = 64 * 1024 * 1024;

/// What every handler shares.
pub struct Shared {
    pub settings: Settings,
    pub mesh: Arc<Mesh>,
    pub http: reqwest::Client,
    /// Upstream base URL without a trailing slash.
    pub upstream: String,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub started: chrono::DateTime<chrono::Utc>,
    stats: Mutex<StatsBook>,
}

impl Shared {
    pub fn stats_mut<R>(&self, f: impl FnOnce(&mut StatsBook) -> R) -> Option<R> {
        self.stats.lock().ok().map(|mut g| f(&mut g))
    }
}

/// The state file `run`, `status` and `env` find a running daemon by.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateFile {
    pub pid: u32,
    pub agent_id: String,
    pub addr: SocketAddr,
    pub started: chrono::DateTime<chrono::Utc>,
}

pub fn state_file_path(data_dir: &Path) -> PathBuf {
    data_dir.join("agent.json")
}

pub fn read_state_file(data_dir: &Path) -> Option<StateFile> {
    let bytes = std::fs::read(state_file_path(data_dir)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub struct RunningDaemon {
    pub shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
    stop: Arc<tokio::sync::Notify>,
    state_file: Option<PathBuf>,
}

impl RunningDaemon {
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }
    pub fn base_url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// Waits for the outbox to drain (up to `flush`), says goodbye, stops serving.
    pub async fn shutdown(self, flush: Duration) {
        let left = self.shared.mesh.flush(flush).await;
        if left > 0 {
            tracing::warn!(
                events = left,
                "stopping with unacknowledged events in the outbox; they are replayed at the next start"
            );
        }
        self.stop.notify_waiters();
        self.shared.mesh.stop().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
        if let Some(p) = self.state_file {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Starts a daemon. With `advertise`, writes the state file (the `serve` daemon does; the
/// one `run` embeds for its own lifetime does not).
pub async fn start(settings: Settings, advertise: bool) -> anyhow::Result<RunningDaemon> {
    let agent = settings.agent_id()?;
    let data_dir = settings.data_dir()?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let outbox_path = data_dir.join("outbox.log");
    let (outbox, rec) = Outbox::open(agent.clone(), &outbox_path, settings.outbox_max_bytes)?;
    if rec.damaged_lines > 0 || rec.torn_tail_bytes > 0 {
        tracing::warn!(
            damaged = rec.damaged_lines,
            torn_bytes = rec.torn_tail_bytes,
            "outbox recovered from a crash"
        );
    }
    let outbox = Arc::new(outbox);
    if outbox.depth() > 0 {
        tracing::info!(
            events = outbox.depth(),
            "outbox holds unacknowledged events; replaying on connect"
        );
    }
    if !settings.listen.ip().is_loopback() && !settings.allow_remote_clients {
        anyhow::bail!(
            "refusing to listen on {}: anyone who reaches the proxy spends the fleet's keys. Use a \
             loopback address, or set allow_remote_clients = true if you really mean it",
            settings.listen
        );
    }
    let listener = TcpListener::bind(settings.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (another daemon running? set listen or use `run`, which finds it)",
            settings.listen
        )
    })?;
    let addr = listener.local_addr()?;
    let tls_ca_pem = match &settings.broker.tls_ca_file {
        Some(path) => Some(std::fs::read(path).with_context(|| {
            format!(
                "reading the broker's CA certificate broker.tls_ca_file = {}",
                path.display()
            )
        })?),
        None => None,
    };
    let username = settings
        .broker
        .username
        .clone()
        .unwrap_or_else(|| agent.to_string());
    let (mesh, _poller) = Mesh::start(
        MeshConfig {
            agent: agent.clone(),
            host: settings.broker.host.clone(),
            port: settings.broker.port,
            username,
            password: settings.broker.password.clone(),
            keep_alive: Duration::from_secs(settings.broker.keep_alive_secs.max(2)),
            resend_after: Duration::from_millis(settings.resend_after_ms.max(100)),
            tls_ca_pem,
        },
        outbox,
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(settings.upstream_timeout_ms))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")?;
    let shared = Arc::new(Shared {
        upstream: settings.upstream_base_url.trim_end_matches('/').to_string(),
        settings,
        mesh,
        http,
        addr,
        data_dir: data_dir.clone(),
        started: chrono::Utc::now(),
        stats: Mutex::new(StatsBook::default()),
    });
    // Streamed answers are many small writes: without TCP_NODELAY each waits for an ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = Router::new()
        .merge(control::routes())
        .fallback(proxy::handle)
        .with_state(shared.clone())
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY));
    let stop = Arc::new(tokio::sync::Notify::new());
    let stop2 = stop.clone();
    let server = tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop2.notified().await })
            .await;
        if let Err(e) = r {
            tracing::error!("proxy server failed: {e}");
        }
    });
    let state_file = if advertise {
        let p = state_file_path(&data_dir);
        let sf = StateFile {
            pid: std::process::id(),
            agent_id: agent.to_string(),
            addr,
            started: shared.started,
        };
        let bytes = serde_json::to_vec_pretty(&sf)?;
        std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
        Some(p)
    } else {
        None
    };
    tracing::info!(%addr, agent = %agent, upstream = %shared.upstream, "gemfleet agent serving");
    Ok(RunningDaemon {
        shared,
        server,
        stop,
        state_file,
    })
}
