//! The classification record of QUOTAS.md: field names and values are a contract shared by
//! the agent (which classifies), the recorder (which acts on it) and people (`classify`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What kind of failure this is, and so what the fleet does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Wait, then the same scope is usable again (per-minute quota).
    Cooldown,
    /// Exhausted until a reset (per-day quota).
    Daily,
    /// The model has no quota on this project's tier (limit 0).
    NoQuota,
    /// Capacity or overload, not our quota.
    Transient,
    /// The key can never work again (invalid, expired, leaked, blocked, rejected type).
    KeyDead,
    /// The whole project is unusable (suspended, denied).
    ProjectDead,
    /// The project needs configuration (API disabled, billing missing).
    ProjectConfig,
    /// A spend cap or prepaid balance stops requests.
    BillingBlocked,
    /// The caller's location or egress is refused; never the key's fault.
    Environment,
    /// This request can never pass, whatever key sends it.
    BadRequest,
    /// Nothing above fits.
    Unknown,
}

impl FailureClass {
    /// Whether this failure is a defect of the key itself (QUOTAS.md rule 6: quota 429s,
    /// 503s and bare 429s never are).
    pub fn penalises_key(self) -> bool {
        matches!(self, FailureClass::KeyDead)
    }

    /// Whether another key may succeed where this one failed, so a proxy may retry the
    /// request on a fresh grant before anything reached the client.
    pub fn retry_elsewhere(self) -> bool {
        matches!(
            self,
            FailureClass::Cooldown
                | FailureClass::Daily
                | FailureClass::NoQuota
                | FailureClass::Transient
                | FailureClass::KeyDead
                | FailureClass::ProjectDead
                | FailureClass::ProjectConfig
                | FailureClass::BillingBlocked
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Cooldown => "cooldown",
            FailureClass::Daily => "daily",
            FailureClass::NoQuota => "no_quota",
            FailureClass::Transient => "transient",
            FailureClass::KeyDead => "key_dead",
            FailureClass::ProjectDead => "project_dead",
            FailureClass::ProjectConfig => "project_config",
            FailureClass::BillingBlocked => "billing_blocked",
            FailureClass::Environment => "environment",
            FailureClass::BadRequest => "bad_request",
            FailureClass::Unknown => "unknown",
        }
    }
}

/// Whose budget or health the failure concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    ProjectModel,
    AccountModel,
    Model,
    Key,
    Project,
    BillingAccount,
    Egress,
    Request,
}

/// The quota dimension that was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    RequestsPerMinute,
    InputTokensPerMinute,
    RequestsPerDay,
    InputTokensPerDay,
}

impl Dimension {
    pub fn is_daily(self) -> bool {
        matches!(
            self,
            Dimension::RequestsPerDay | Dimension::InputTokensPerDay
        )
    }
}

/// The tier a quota id or metric names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Free,
    Paid,
}

/// The classification record (QUOTAS.md). Serialises with exactly the contract's field names;
/// unknown values are `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classification {
    pub class: FailureClass,
    pub scope: Scope,
    pub dimension: Option<Dimension>,
    pub retry_after_ms: Option<u64>,
    pub until: Option<DateTime<Utc>>,
    pub limit: Option<u64>,
    pub tier: Option<Tier>,
    pub in_stream: bool,
    /// One line for people: why the fleet reads it this way.
    pub reason: String,
    /// The quota id Google named, when it named one (e.g.
    /// `GenerateRequestsPerDayPerProjectPerModel-FreeTier`), for limit learning and alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_id: Option<String>,
}
