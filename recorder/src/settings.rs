//! Recorder settings: a TOML file (optional) overlaid by `GEMFLEET_RECORDER_…` environment
//! variables (`GEMFLEET_RECORDER_BROKER__PORT=1883` sets `broker.port`), plus `DATABASE_URL`
//! and `GEMFLEET_MASTER_KEY`. See docs/recorder.md and recorder/recorder.example.toml.

use crate::crypto::{CryptoError, MasterKey};
use serde::Deserialize;
use std::net::SocketAddr;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerSettings {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM file of the CA that signed the broker's certificate: set it to connect with TLS.
    pub tls_ca_file: Option<String>,
    pub keep_alive_secs: u64,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings {
            host: "127.0.0.1".into(),
            port: 1883,
            username: None,
            password: None,
            tls_ca_file: None,
            keep_alive_secs: 5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// PostgreSQL URL; `DATABASE_URL` overrides when set.
    pub database_url: String,
    pub broker: BrokerSettings,
    /// MQTT client id (and broker username unless `broker.username` is set).
    pub recorder_id: String,
    /// Base64 of 32 bytes. Prefer `GEMFLEET_MASTER_KEY` or `master_key_file`.
    pub master_key: Option<String>,
    pub master_key_file: Option<String>,
    /// Length of the sliding minute in seconds (60; tests compress it).
    pub minute_seconds: f64,
    /// How long a grant may stay unreported before it is closed as abandoned.
    pub lease_seconds: f64,
    /// Clock-skew slack before a claim past its deadline counts as a stale replay.
    pub stale_grace_ms: u64,
    /// Safety margin added to the sliding minute before a request's slot is reused. A grant's
    /// request reaches Google a variable time after the grant; without the margin two requests
    /// a minute apart at the recorder can be less than a minute apart upstream (measured: the
    /// fleet benchmark drew 429s without it). 250 ms costs 0.4 % of a real minute.
    pub window_guard_ms: u64,
    /// Shortest cooldown applied for a `cooldown` throttle (a stated 0 s still cools briefly).
    pub cooldown_floor_ms: u64,
    /// Most messages per ingest batch (one transaction).
    pub batch_max: usize,
    /// Where /healthz and /metrics listen (port 0: any free port).
    pub http_listen: SocketAddr,
    pub log_format: LogFormat,
    /// Fallback re-read of keys and limits (admin changes also notify at once).
    pub config_reload_secs: u64,
    /// At most one dead-letter alert per this many seconds.
    pub dead_letter_alert_secs: u64,
    /// Longest time the service sleeps without checking its timers.
    pub max_tick_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database_url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            broker: BrokerSettings::default(),
            recorder_id: "recorder".into(),
            master_key: None,
            master_key_file: None,
            minute_seconds: 60.0,
            lease_seconds: 300.0,
            stale_grace_ms: 5_000,
            window_guard_ms: 250,
            cooldown_floor_ms: 1_000,
            batch_max: 500,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            log_format: LogFormat::Text,
            config_reload_secs: 30,
            dead_letter_alert_secs: 60,
            max_tick_ms: 250,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid settings: {0}")]
    Config(#[from] config::ConfigError),
    #[error("invalid setting {name}: {why}")]
    Invalid { name: &'static str, why: String },
}

impl Settings {
    /// Loads defaults, then `file` (if any), then the environment.
    pub fn load(file: Option<&str>) -> Result<Settings, SettingsError> {
        let mut b = config::Config::builder();
        if let Some(f) = file {
            b = b.add_source(config::File::with_name(f).required(true));
        }
        b = b.add_source(
            config::Environment::with_prefix("GEMFLEET_RECORDER")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true),
        );
        let mut s: Settings = b.build()?.try_deserialize()?;
        if let Ok(url) = std::env::var("DATABASE_URL") {
            s.database_url = url;
        }
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.minute_seconds.is_nan() || self.minute_seconds <= 0.0 {
            return Err(SettingsError::Invalid {
                name: "minute_seconds",
                why: "must be > 0".into(),
            });
        }
        if self.lease_seconds.is_nan() || self.lease_seconds <= 0.0 {
            return Err(SettingsError::Invalid {
                name: "lease_seconds",
                why: "must be > 0".into(),
            });
        }
        if self.batch_max == 0 {
            return Err(SettingsError::Invalid {
                name: "batch_max",
                why: "must be > 0".into(),
            });
        }
        gemfleet_protocol::AgentId::parse(self.recorder_id.clone()).map_err(|e| {
            SettingsError::Invalid {
                name: "recorder_id",
                why: e.to_string(),
            }
        })?;
        Ok(())
    }

    /// The master key: `GEMFLEET_MASTER_KEY`, else `master_key`, else `master_key_file`.
    pub fn master_key(&self) -> Result<MasterKey, CryptoError> {
        if let Ok(k) = std::env::var("GEMFLEET_MASTER_KEY") {
            return MasterKey::from_base64(&k);
        }
        if let Some(k) = &self.master_key {
            return MasterKey::from_base64(k);
        }
        if let Some(f) = &self.master_key_file {
            return MasterKey::from_file(f);
        }
        Err(CryptoError::Missing)
    }

    pub fn minute(&self) -> chrono::Duration {
        chrono::Duration::milliseconds((self.minute_seconds * 1000.0) as i64)
    }
    pub fn lease(&self) -> chrono::Duration {
        chrono::Duration::milliseconds((self.lease_seconds * 1000.0) as i64)
    }
}
