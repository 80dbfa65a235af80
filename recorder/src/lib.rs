//! gemfleet recorder: the fleet's memory and referee.
//!
//! - [`arbiter`]: the pure claim arbiter (quota windows, FIFO queues, key choice).
//! - [`watermark`]: the pure per-agent acknowledgement watermark.
//! - [`policy`]: what a classified throttle does to keys, groups, projects and limits (pure).
//! - [`settings`], [`clock`], [`crypto`]: configuration, time, secrets at rest.
//! - [`store`]: every SQL statement the service runs.
//! - [`service`]: the running recorder (MQTT ingest, batching, arbiter IO, notices, timers).
//! - [`admin`]: operator functions over a `PgPool` (used by the CLI and other crates' tests).
//! - [`cli`]: the command line of the `gemfleet-recorder` binary.

pub mod admin;
pub mod arbiter;
pub mod cli;
pub mod clock;
pub mod context_store;
mod core;
pub mod crypto;
pub mod dead_letter;
pub mod http;
pub mod intake;
pub mod metrics_names;
pub mod mqtt;
pub mod policy;
pub mod service;
pub mod settings;
pub mod slack_bridge;
pub mod store;
pub mod watermark;

pub use clock::{Clock, ManualClock, SystemClock};
pub use service::{Recorder, RunningRecorder};
pub use settings::Settings;

/// The embedded migrations (the workspace's `migrations/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
