//! The daemon's settings: a TOML file (`--config`, default `<data dir>/agent.toml` when it
//! exists) overlaid with `GEMFLEET_AGENT_…` environment variables (`__` between levels, e.g.
//! `GEMFLEET_AGENT_BROKER__HOST`), then command-line flags. See docs/agent.md for an example.

use gemfleet_protocol::{AgentId, Secret};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct BrokerSettings {
    pub host: String,
    pub port: u16,
    /// Broker username; defaults to the agent id (Mosquitto `use_username_as_clientid`).
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub keep_alive_secs: u64,
    /// CA certificate (PEM) of the broker's TLS listener. Set it to connect over TLS (remote
    /// agents: port 8883 in broker-config/); unset means plain MQTT (loopback only).
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings {
            host: "127.0.0.1".into(),
            port: 1883,
            username: None,
            password: None,
            keep_alive_secs: 10,
            tls_ca_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Agent id = MQTT client id = broker username. Default: the hostname, sanitised.
    pub agent_id: Option<String>,
    /// Outbox, state file, task homes. Default: `$XDG_STATE_HOME/gemfleet` or
    /// `~/.local/state/gemfleet`.
    pub data_dir: Option<PathBuf>,
    pub broker: BrokerSettings,
    /// Where the proxy and control API listen (loopback). Port 0 picks a free one.
    pub listen: SocketAddr,
    /// Serve a non-loopback `listen` address. Off by default: whoever reaches the proxy spends
    /// the fleet's keys, and the control API has no authentication.
    pub allow_remote_clients: bool,
    /// The Gemini API (or an emulator).
    pub upstream_base_url: String,
    /// How long a claim may wait for room at the recorder.
    pub claim_max_wait_ms: u64,
    /// How long past `claim_max_wait_ms` the proxy waits for any answer before telling the
    /// client the recorder does not answer.
    pub claim_answer_timeout_ms: u64,
    /// Upstream attempts per client request (grants tried), including the first.
    pub max_attempts: u32,
    /// Bound of the outbox's unacknowledged events.
    pub outbox_max_bytes: u64,
    /// Un-acked events older than this are published again while connected.
    pub resend_after_ms: u64,
    /// Upstream request timeout (whole request, streaming included).
    pub upstream_timeout_ms: u64,
    /// How long `run` waits for the outbox to drain before exiting.
    pub flush_timeout_ms: u64,
    /// How long context load/save waits for the recorder.
    pub context_timeout_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            agent_id: None,
            data_dir: None,
            broker: BrokerSettings::default(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8741)),
            allow_remote_clients: false,
            upstream_base_url: "https://generativelanguage.googleapis.com".into(),
            claim_max_wait_ms: 20_000,
            claim_answer_timeout_ms: 10_000,
            max_attempts: 4,
            outbox_max_bytes: 256 * 1024 * 1024,
            resend_after_ms: 15_000,
            upstream_timeout_ms: 600_000,
            flush_timeout_ms: 10_000,
            context_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("settings: {0}")]
    Config(#[from] config::ConfigError),
    #[error("agent id {given:?} is not valid")]
    AgentId {
        given: String,
        source: gemfleet_protocol::NameError,
    },
    #[error("cannot determine a data directory: set --data-dir or HOME")]
    NoDataDir,
    #[error("upstream_base_url {0:?} must start with http:// or https://")]
    Upstream(String),
}

impl Settings {
    /// Loads the file (if any) and the environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, SettingsError> {
        let mut b = config::Config::builder();
        if let Some(f) = file {
            b = b.add_source(config::File::from(f).required(true));
        } else if let Some(dir) = default_data_dir() {
            b = b.add_source(config::File::from(dir.join("agent.toml")).required(false));
        }
        b = b.add_source(
            config::Environment::with_prefix("GEMFLEET_AGENT")
                .prefix_separator("_")
                .separator("__"),
        );
        let s: Settings = b.build()?.try_deserialize()?;
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        if !(self.upstream_base_url.starts_with("http://")
            || self.upstream_base_url.starts_with("https://"))
        {
            return Err(SettingsError::Upstream(self.upstream_base_url.clone()));
        }
        self.agent_id()?;
        Ok(())
    }

    pub fn agent_id(&self) -> Result<AgentId, SettingsError> {
        match &self.agent_id {
            Some(a) => AgentId::parse(a.clone()).map_err(|source| SettingsError::AgentId {
                given: a.clone(),
                source,
            }),
            None => default_agent_id().map_err(|source| SettingsError::AgentId {
                given: hostname(),
                source,
            }),
        }
    }

    pub fn data_dir(&self) -> Result<PathBuf, SettingsError> {
        self.data_dir
            .clone()
            .or_else(default_data_dir)
            .ok_or(SettingsError::NoDataDir)
    }
}

/// `$XDG_STATE_HOME/gemfleet` or `~/.local/state/gemfleet`.
pub fn default_data_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join("gemfleet"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|h| PathBuf::from(h).join(".local/state/gemfleet"))
}

/// The machine's hostname, made a valid agent id.
pub fn hostname() -> String {
    hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn default_agent_id() -> Result<AgentId, gemfleet_protocol::NameError> {
    AgentId::parse(sanitize_name(&hostname()))
}

/// Maps any string to a valid topic-level name: invalid characters become `-`, a leading
/// non-alphanumeric gets an `h` prefix, at most 64 bytes. Empty gives `agent`.
pub fn sanitize_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if out.is_empty() {
        return "agent".into();
    }
    if !out
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
    {
        out.insert(0, 'h');
    }
    out.truncate(gemfleet_protocol::names::MAX_NAME_LEN);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_become_valid_agent_ids() {
        for h in [
            "box.example.com",
            "_weird host",
            "",
            "ünïcode",
            &"x".repeat(100),
        ] {
            let s = sanitize_name(h);
            assert!(AgentId::parse(s.clone()).is_ok(), "{h:?} → {s:?}");
        }
        assert_eq!(sanitize_name("box.example.com"), "box.example.com");
        assert_eq!(sanitize_name("my host"), "my-host");
    }

    #[test]
    fn defaults_are_valid() {
        assert!(Settings::default().validate().is_ok());
    }
}
