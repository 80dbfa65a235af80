//! Typed payloads of protocol v1. Every one travels inside an [`crate::Envelope`], tagged by
//! `kind` with its fields under `body`.

use crate::names::{AgentId, KeyName, ModelName, ProjectId, TaskId};
use chrono::{DateTime, Utc};
use gemfleet_gemini::Classification;
use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// A key's secret. Travels only in a [`Grant`] on the claiming agent's own inbox; its `Debug`
/// and `Display` never show it, so it cannot leak through a log line by accident.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself: call only where it goes into the `x-goog-api-key` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Every payload, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum Payload {
    Claim(Claim),
    Release(Release),
    Usage(Usage),
    Throttle(Throttle),
    Task(TaskEvent),
    Status(AgentStatus),
    Grant(Grant),
    Denial(Denial),
    Context(Context),
    Ack(Ack),
    KeyState(KeyState),
    QuotaState(QuotaState),
    Alert(Alert),
}

impl Payload {
    /// The `kind` tag as it appears on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Payload::Claim(_) => "claim",
            Payload::Release(_) => "release",
            Payload::Usage(_) => "usage",
            Payload::Throttle(_) => "throttle",
            Payload::Task(_) => "task",
            Payload::Status(_) => "status",
            Payload::Grant(_) => "grant",
            Payload::Denial(_) => "denial",
            Payload::Context(_) => "context",
            Payload::Ack(_) => "ack",
            Payload::KeyState(_) => "key_state",
            Payload::QuotaState(_) => "quota_state",
            Payload::Alert(_) => "alert",
        }
    }
}

/// Agent → recorder: "I need a key for one request to `model` of about `est_input_tokens`".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub claim_id: Uuid,
    pub model: ModelName,
    pub est_input_tokens: u64,
    #[serde(default)]
    pub task_id: Option<TaskId>,
    /// Keys not to grant (e.g. the one that just failed this request).
    #[serde(default)]
    pub avoid_keys: Vec<KeyName>,
    /// How long the agent is willing to wait for room, in milliseconds (0: now or deny).
    /// A claim the recorder sees after `ts + max_wait_ms` (e.g. replayed from an outbox after
    /// an outage) is stale: it is withdrawn, never granted.
    #[serde(default)]
    pub max_wait_ms: u64,
    /// What the key is for. `count_tokens` claims need an active key but no generate quota.
    #[serde(default = "default_request_type")]
    pub request_type: RequestType,
}

fn default_request_type() -> RequestType {
    RequestType::Stream
}

/// Agent → recorder: a grant is handed back unused (the request was never sent), or a queued
/// claim is withdrawn. An unused grant returns its reservation to the quota group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub claim_id: Uuid,
    #[serde(default)]
    pub grant_id: Option<Uuid>,
    pub reason: String,
}

/// How a request reached the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestType {
    Generate,
    Stream,
    CountTokens,
}

impl RequestType {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestType::Generate => "generate",
            RequestType::Stream => "stream",
            RequestType::CountTokens => "count_tokens",
        }
    }
}

/// Token counts of one request, as `usageMetadata` reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub prompt: u64,
    pub cached: u64,
    pub candidates: u64,
    pub thoughts: u64,
    pub tool_prompt: u64,
    pub total: u64,
}

/// Agent → recorder: the outcome of a granted request that the model answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub claim_id: Uuid,
    pub grant_id: Uuid,
    pub key: KeyName,
    pub project: ProjectId,
    pub model: ModelName,
    #[serde(default)]
    pub task_id: Option<TaskId>,
    pub request_type: RequestType,
    pub http_status: u16,
    pub tokens: Tokens,
    /// False when a stream ended without its final usage chunk (counts are a lower bound).
    pub complete: bool,
    pub latency_ms: u64,
}

/// Agent → recorder: a granted request failed; the agent's classification of the failure,
/// with the raw quota fields for the recorder to learn limits from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throttle {
    pub claim_id: Uuid,
    pub grant_id: Uuid,
    pub key: KeyName,
    pub project: ProjectId,
    pub model: ModelName,
    #[serde(default)]
    pub task_id: Option<TaskId>,
    pub http_status: u16,
    pub classification: Classification,
    /// Whether the agent retried the request elsewhere (the client never saw this failure).
    pub absorbed: bool,
}

/// Lifecycle of a task run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Running,
    Succeeded,
    Failed,
    Interrupted,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Interrupted => "interrupted",
        }
    }
}

/// Agent → recorder: a task run started or ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    pub task_id: TaskId,
    pub status: TaskStatus,
    #[serde(default)]
    pub session_id: Option<String>,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub duration_ms: u64,
    #[serde(default)]
    pub exit_code: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Online,
    Offline,
}

/// Agent → all, retained: online after every connect, offline as the last will.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub state: Presence,
    pub version: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Online only: the lowest outbox sequence number the agent still holds (or its next
    /// number when the outbox is empty). Everything below it is no longer pending, so the
    /// recorder may move the agent's watermark up to `outbox_floor - 1` even across a gap
    /// (e.g. an outbox that was re-created).
    #[serde(default)]
    pub outbox_floor: Option<u64>,
}

/// Recorder → agent inbox: the key to send one request with. Carries the secret: only ever on
/// the claiming agent's own inbox, never retained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub claim_id: Uuid,
    pub grant_id: Uuid,
    pub key: KeyName,
    pub fingerprint: String,
    pub secret: Secret,
    pub project: ProjectId,
    pub model: ModelName,
    pub lease_expires: DateTime<Utc>,
}

/// Why a claim was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenialReason {
    /// No active key serves this model at all.
    NoKey,
    /// Every group is exhausted for the day (or has no quota) — `retry_at` says when one resets.
    Exhausted,
    /// Room frees later than the claim is willing to wait.
    WaitTooLong,
    /// The claim itself is invalid (e.g. more input tokens than any minute allows).
    Invalid,
}

/// Recorder → agent inbox: no grant, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Denial {
    pub claim_id: Uuid,
    pub reason: DenialReason,
    pub message: String,
    /// Earliest time anything frees, when known.
    #[serde(default)]
    pub retry_at: Option<DateTime<Utc>>,
}

/// Context transfer (the Gemini CLI session of a task), chunked so that no message exceeds
/// [`crate::MAX_PAYLOAD_BYTES`]. Requests go agent → recorder on `agents/{agent}/context`,
/// replies come back on the agent's inbox, matched by `request_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Context {
    /// One chunk of a context being saved; `data` is base64 of the compressed bytes.
    SaveChunk {
        request_id: Uuid,
        task_id: TaskId,
        session_id: String,
        index: u32,
        total: u32,
        /// SHA-256 (hex) of the whole uncompressed context; checked when the last chunk lands.
        sha256: String,
        data: String,
    },
    /// Recorder → agent: the save committed (or failed, with `error`).
    Saved {
        request_id: Uuid,
        task_id: TaskId,
        #[serde(default)]
        error: Option<String>,
    },
    /// Agent → recorder: send me the context of this task.
    Load { request_id: Uuid, task_id: TaskId },
    /// Recorder → agent: one chunk of the stored context.
    Chunk {
        request_id: Uuid,
        task_id: TaskId,
        session_id: String,
        index: u32,
        total: u32,
        sha256: String,
        data: String,
    },
    /// Recorder → agent: the task has no stored context.
    NotFound { request_id: Uuid, task_id: TaskId },
}

/// Recorder → agent, retained: every outbox event with `seq <= watermark` is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub watermark: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyCondition {
    Active,
    Disabled,
}

/// Recorder → all, retained: a key's state. Never carries the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyState {
    pub key: KeyName,
    pub fingerprint: String,
    pub project: ProjectId,
    pub state: KeyCondition,
    #[serde(default)]
    pub reason: Option<String>,
    /// End of a temporary disable; `None` with `Disabled` means until an operator enables it.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupCondition {
    Open,
    Cooling,
    Exhausted,
    NoQuota,
}

/// Recorder → all, retained: a quota group's (project, model) state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaState {
    pub project: ProjectId,
    pub model: ModelName,
    pub state: GroupCondition,
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub dimension: Option<gemfleet_gemini::Dimension>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
    Security,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Info,
        Severity::Warning,
        Severity::Critical,
        Severity::Security,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
            Severity::Security => "security",
        }
    }
    pub fn parse(s: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Recorder → ops and the Slack bridge: something a person should know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub severity: Severity,
    /// Stable machine code, e.g. `key_dead`, `project_dead`, `limit_corrected`.
    pub code: String,
    /// One line for people.
    pub text: String,
    #[serde(default)]
    pub key: Option<KeyName>,
    #[serde(default)]
    pub project: Option<ProjectId>,
    #[serde(default)]
    pub model: Option<ModelName>,
    #[serde(default)]
    pub agent: Option<AgentId>,
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
}
