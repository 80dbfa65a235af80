//! The emulator's configuration: projects and their limits, keys, the models served, the
//! length of a "minute", latency, faults and the response script. Read from TOML
//! (`Config::from_toml_str`, `Config::load`) or built in code (every struct has a `Default`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use gemfleet_gemini::Tier;

/// Everything the emulator needs to know. `Default` gives one free-tier project with generous
/// limits and no keys: add keys (and usually limits) before use.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Length of an emulated quota minute in seconds (60 = real time; tests use 1-3).
    pub minute_seconds: f64,
    /// Model ids served by `GET /v1beta/models` and accepted by the generate endpoints.
    pub models: Vec<String>,
    pub projects: Vec<ProjectConfig>,
    pub keys: Vec<KeyConfig>,
    pub latency: LatencyConfig,
    pub faults: FaultConfig,
    /// Scripted answers, tried in order; the first matching rule with uses left answers.
    pub script: Vec<ScriptRule>,
    /// Seed of the random source that decides probabilistic faults (deterministic runs).
    pub seed: u64,
    /// Implicit prompt caching: a request whose leading segments (system instruction, tools,
    /// first contents) repeat the previous request of its quota group reports them as
    /// `cachedContentTokenCount`, when they add up to at least this many tokens. 0 disables.
    pub implicit_cache_min_tokens: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            minute_seconds: 60.0,
            models: default_models(),
            projects: Vec::new(),
            keys: Vec::new(),
            latency: LatencyConfig::default(),
            faults: FaultConfig::default(),
            script: Vec::new(),
            seed: 1,
            implicit_cache_min_tokens: 1024,
        }
    }
}

/// The models served when the config names none: the current public ids, including the ones
/// Gemini CLI 0.61 routes between in auto mode (`gemini-3.5-flash-lite` is its router).
pub fn default_models() -> Vec<String> {
    [
        "gemini-2.0-flash",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "gemini-2.5-pro",
        "gemini-3-flash-preview",
        "gemini-3-pro-preview",
        "gemini-3.1-flash-lite",
        "gemini-3.1-flash-lite-preview",
        "gemini-3.1-pro-preview",
        "gemini-3.1-pro-preview-customtools",
        "gemini-3.5-flash",
        "gemini-3.5-flash-lite",
        "gemini-3.8-flash",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// A Google Cloud project: the unit quotas apply to (with the model).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProjectConfig {
    pub name: String,
    /// Shown in error bodies as `projects/NUMBER`.
    pub number: u64,
    pub tier: Tier,
    /// Whole-project condition; `active` unless Google suspended or denied it.
    pub state: ProjectState,
    /// Limits for models without their own entry in `models`.
    pub default_limits: Limits,
    /// Per-model limits, replacing `default_limits` for that model.
    pub models: BTreeMap<String, Limits>,
}

impl Default for ProjectConfig {
    fn default() -> Self {
        ProjectConfig {
            name: "project".into(),
            number: 100_000_000_001,
            tier: Tier::Free,
            state: ProjectState::Active,
            default_limits: Limits::default(),
            models: BTreeMap::new(),
        }
    }
}

impl ProjectConfig {
    /// The limits that apply to `model` in this project.
    pub fn limits_for(&self, model: &str) -> &Limits {
        self.models.get(model).unwrap_or(&self.default_limits)
    }
}

/// Per (project, model) limits. `None` = unlimited in that dimension; `Some(0)` = the model
/// has no quota on this project's tier (every request gets a `limit: 0` 429).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub requests_per_minute: Option<u64>,
    pub input_tokens_per_minute: Option<u64>,
    pub requests_per_day: Option<u64>,
    pub input_tokens_per_day: Option<u64>,
}

impl Limits {
    /// Limits with every dimension unset (unlimited).
    pub fn unlimited() -> Self {
        Limits::default()
    }

    /// A model with no quota at all (`limit: 0` in every dimension Google reports for it).
    pub fn zero() -> Self {
        Limits {
            requests_per_minute: Some(0),
            input_tokens_per_minute: Some(0),
            requests_per_day: Some(0),
            input_tokens_per_day: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProjectState {
    #[default]
    Active,
    Suspended,
    Denied,
}

/// An API key. `name` identifies it in the ledger and the admin surface; `secret` is what a
/// client sends and is never served back or logged.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub name: String,
    pub secret: String,
    pub project: String,
    #[serde(default)]
    pub state: KeyState,
}

impl std::fmt::Debug for KeyConfig {
    // Hand-written so that a config dumped with {:?} never shows a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyConfig")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .field("project", &self.project)
            .field("state", &self.state)
            .finish()
    }
}

/// What Google says about a key when it is used (see docs/emulator.md for each body).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyState {
    #[default]
    Valid,
    /// 400 API_KEY_INVALID "API key not valid".
    Invalid,
    /// 400 API_KEY_INVALID "API key expired".
    Expired,
    /// 403 "reported as leaked".
    Leaked,
    /// 403 API_KEY_SERVICE_BLOCKED.
    ServiceBlocked,
    /// 401 UNAUTHENTICATED ACCESS_TOKEN_TYPE_UNSUPPORTED (standard keys rejected, 2026).
    KeyTypeRejected,
    /// 403 CONSUMER_SUSPENDED (the key's project).
    ProjectSuspended,
    /// 403 "project has been denied access".
    ProjectDenied,
}

impl std::str::FromStr for KeyState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
            format!(
                "unknown key state {s:?}: expected one of valid, invalid, expired, leaked, \
                 service-blocked, key-type-rejected, project-suspended, project-denied"
            )
        })
    }
}

/// Artificial latency, to make streams look like streams and benchmarks realistic.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LatencyConfig {
    /// Delay before the first byte of every answer.
    pub first_byte_ms: u64,
    /// Delay per output token, applied between stream chunks (and before a unary answer).
    pub per_token_ms: f64,
}

/// Faults injected by probability (0.0-1.0 each, decided per admitted request in this order:
/// overloaded, internal, stream error, dropped connection, slow first byte).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    pub overloaded_503: f64,
    pub internal_500: f64,
    /// An error event inside a 200 stream (streaming calls only).
    pub stream_error: f64,
    /// How the in-stream error is written: as a `data:` event or as raw multi-line JSON.
    pub stream_error_format: StreamErrorFormat,
    /// Chunks sent before an in-stream error or a dropped connection.
    pub after_chunks: u32,
    /// The connection is cut mid-stream (streaming calls only).
    pub drop_connection: f64,
    pub slow_first_byte: f64,
    pub slow_first_byte_ms: u64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            overloaded_503: 0.0,
            internal_500: 0.0,
            stream_error: 0.0,
            stream_error_format: StreamErrorFormat::Data,
            after_chunks: 1,
            drop_connection: 0.0,
            slow_first_byte: 0.0,
            slow_first_byte_ms: 3000,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamErrorFormat {
    #[default]
    Data,
    Raw,
}

/// One scripted answer. A rule matches when every condition it sets holds; it answers at most
/// `times` requests (forever when unset).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScriptRule {
    /// Substring of the text of the request's last content (a functionResponse turn has none,
    /// so a prompt rule answers the prompt, not the turn after the tool ran).
    pub prompt_contains: Option<String>,
    /// Only for this model.
    pub model: Option<String>,
    /// Only for this key (by name).
    pub key: Option<String>,
    /// Only for the Nth admitted generate request of the whole emulator (1-based).
    pub nth_request: Option<u64>,
    pub times: Option<u64>,
    pub respond: ScriptResponse,
}

/// What a matching rule answers with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ScriptResponse {
    /// This text instead of the deterministic one.
    Text(String),
    /// A `functionCall` part, driving a tool-using client.
    FunctionCall {
        name: String,
        #[serde(default)]
        args: serde_json::Value,
    },
    /// A fault instead of an answer.
    Fault(ScriptFault),
}

impl Default for ScriptResponse {
    fn default() -> Self {
        ScriptResponse::Text(String::new())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScriptFault {
    Overloaded,
    Internal,
    StreamErrorData,
    StreamErrorRaw,
    DropConnection,
    SlowFirstByte,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config is not valid TOML for the emulator")]
    Parse(#[from] toml::de::Error),
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml_str(&text)
    }

    /// Checks what serde cannot: references between sections and value ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !(self.minute_seconds.is_finite() && (0.05..=3600.0).contains(&self.minute_seconds)) {
            return bad(format!(
                "minute_seconds must be between 0.05 and 3600, got {}",
                self.minute_seconds
            ));
        }
        let mut names = std::collections::HashSet::new();
        for p in &self.projects {
            if !names.insert(p.name.as_str()) {
                return bad(format!("project {:?} is declared twice", p.name));
            }
        }
        let mut key_names = std::collections::HashSet::new();
        let mut secrets = std::collections::HashSet::new();
        for k in &self.keys {
            if k.name.is_empty() {
                return bad("a key has an empty name".into());
            }
            if !key_names.insert(k.name.as_str()) {
                return bad(format!("key {:?} is declared twice", k.name));
            }
            if k.secret.is_empty() || !secrets.insert(k.secret.as_str()) {
                // Never print the secret itself.
                return bad(format!("key {:?} has an empty or duplicate secret", k.name));
            }
            if !names.contains(k.project.as_str()) {
                return bad(format!(
                    "key {:?} names unknown project {:?}",
                    k.name, k.project
                ));
            }
        }
        let f = &self.faults;
        for (name, p) in [
            ("overloaded_503", f.overloaded_503),
            ("internal_500", f.internal_500),
            ("stream_error", f.stream_error),
            ("drop_connection", f.drop_connection),
            ("slow_first_byte", f.slow_first_byte),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!(
                    "faults.{name} must be a probability in 0..=1, got {p}"
                ));
            }
        }
        if !(self.latency.per_token_ms.is_finite() && self.latency.per_token_ms >= 0.0) {
            return bad("latency.per_token_ms must be >= 0".into());
        }
        Ok(())
    }

    /// The quota minute as a Duration.
    pub fn minute(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.minute_seconds)
    }
}
