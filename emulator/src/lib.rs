//! gemfleet-emulator: a stand-in for the Gemini API, faithful to its quotas, error bodies and
//! SSE streaming, with a ledger of everything it answered. Tests, benchmarks and demos run
//! against it instead of spending real quota.
//!
//! Layout (pure modules first):
//! - [`config`]: projects, limits, keys, models, latency, faults, script (TOML).
//! - [`quota`]: per (project, model) sliding-minute and Pacific-day counters.
//! - [`counting`]: the token counting rule.
//! - [`answer`], [`response`]: what the model says and its wire shape (unary and SSE chunks).
//! - [`google_error`]: Google-shaped error bodies.
//! - [`ledger`]: what was answered, per key, project and model.
//! - [`engine`]: the decision for one call (auth, model, body, quota, script, fault, ledger).
//! - `api`, `admin`: the HTTP layers (Gemini endpoints; `/_emulator/` admin).
//!
//! In-process use:
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use gemfleet_emulator::{Config, Emulator, KeyConfig, KeyState, ProjectConfig};
//! let config = Config {
//!     minute_seconds: 2.0,
//!     projects: vec![ProjectConfig { name: "p1".into(), ..Default::default() }],
//!     keys: vec![KeyConfig { name: "k1".into(), secret: "s1".into(), project: "p1".into(),
//!                            state: KeyState::Valid }],
//!     ..Config::default()
//! };
//! let emulator = Emulator::start(config).await?;
//! let _url = emulator.base_url(); // GOOGLE_GEMINI_BASE_URL
//! let _ledger = emulator.ledger();
//! emulator.shutdown().await;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod answer;
mod api;
pub mod clock;
pub mod config;
pub mod counting;
pub mod engine;
pub mod google_error;
pub mod ledger;
pub mod quota;
pub mod response;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{
    Config, ConfigError, FaultConfig, KeyConfig, KeyState, LatencyConfig, Limits, ProjectConfig,
    ProjectState, ScriptFault, ScriptResponse, ScriptRule, StreamErrorFormat, Tier,
};
pub use engine::{Engine, UnknownKey};
pub use ledger::{Ledger, LedgerEntry, RateLimited};
pub use quota::GroupUsage;

/// The HTTP application for an engine: Gemini endpoints plus the admin surface.
pub fn router(engine: Arc<Engine>) -> Router {
    admin::routes()
        .method_not_allowed_fallback(api::method_not_allowed)
        .fallback(api::dispatch)
        .with_state(engine)
}

/// Entry points.
pub struct Emulator;

impl Emulator {
    /// Validates `config`, binds 127.0.0.1 on a free port and serves in the background.
    pub async fn start(config: Config) -> anyhow::Result<RunningEmulator> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding 127.0.0.1:0 for the emulator")?;
        Emulator::serve(listener, config).await
    }

    /// Validates `config` and serves on `listener` in the background.
    pub async fn serve(listener: TcpListener, config: Config) -> anyhow::Result<RunningEmulator> {
        config.validate()?;
        let addr = listener
            .local_addr()
            .context("reading the listener address")?;
        let engine = Arc::new(Engine::new(config));
        let app = router(engine.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "emulator server stopped with an error");
            }
        });
        tracing::info!(%addr, "gemini emulator listening");
        Ok(RunningEmulator {
            addr,
            engine,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// A serving emulator. Dropping it stops the server.
pub struct RunningEmulator {
    addr: SocketAddr,
    engine: Arc<Engine>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningEmulator {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, what `GOOGLE_GEMINI_BASE_URL` should be set to.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A snapshot of the ledger (the same data as `GET /_emulator/ledger`).
    pub fn ledger(&self) -> Ledger {
        self.engine.ledger()
    }

    /// Changes a key's state at runtime (e.g. revoke it: `KeyState::Invalid`).
    pub fn set_key_state(&self, name: &str, state: KeyState) -> Result<(), UnknownKey> {
        self.engine.set_key_state(name, state)
    }

    /// Moves the emulator's clock `offset` away from real time.
    pub fn set_clock_offset(&self, offset: chrono::Duration) {
        self.engine.clock.set_offset(offset);
    }

    /// Sets the emulator's clock to `at` (it runs on from there).
    pub fn set_now(&self, at: chrono::DateTime<chrono::Utc>) {
        self.engine.clock.set_now(at);
    }

    /// The emulator's current time.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.engine.clock.now()
    }

    /// Back to the configured start (counters, ledger, key states, clock).
    pub fn reset(&self) {
        self.engine.reset();
    }

    /// Current usage of a quota group, if it was used.
    pub fn group_usage(&self, project: &str, model: &str) -> Option<GroupUsage> {
        self.engine.group_usage(project, model)
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Stops accepting, lets in-flight answers finish, and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Waits until the server stops (for the binary).
    pub async fn wait(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
