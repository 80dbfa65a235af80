//! Every topic of protocol v1, under [`ROOT`]. Build with [`Topic`]'s `Display`, parse with
//! [`Topic::parse`]; subscription filters are in [`filter`].

use crate::names::{AgentId, KeyName, ModelName, NameError, ProjectId};
use crate::payload::Severity;
use std::fmt;

/// Root of every topic of protocol v1.
pub const ROOT: &str = "gemfleet/v1";

/// The kinds of outbox events an agent publishes under `agents/{agent}/events/{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Claim,
    Release,
    Usage,
    Throttle,
    Task,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::Claim,
        EventKind::Release,
        EventKind::Usage,
        EventKind::Throttle,
        EventKind::Task,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Claim => "claim",
            EventKind::Release => "release",
            EventKind::Usage => "usage",
            EventKind::Throttle => "throttle",
            EventKind::Task => "task",
        }
    }
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One concrete topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `agents/{agent}/status` — retained online/offline (offline is the last will).
    AgentStatus(AgentId),
    /// `agents/{agent}/events/{kind}` — outbox events, agent → recorder.
    AgentEvent(AgentId, EventKind),
    /// `agents/{agent}/context` — context save/load requests, agent → recorder.
    AgentContext(AgentId),
    /// `agents/{agent}/inbox` — grants, denials, context replies; recorder → that agent only.
    Inbox(AgentId),
    /// `agents/{agent}/ack` — retained outbox watermark, recorder → that agent.
    Ack(AgentId),
    /// `keys/{key}/state` — retained key state.
    KeyState(KeyName),
    /// `quota/{project}/{model}/state` — retained quota-group state.
    QuotaState(ProjectId, ModelName),
    /// `alerts/{severity}`.
    Alert(Severity),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic {0:?} is not under {ROOT}/")]
    WrongRoot(String),
    #[error("topic {0:?} is not a gemfleet v1 topic")]
    Unknown(String),
    #[error("topic {topic:?}: {source}")]
    BadName { topic: String, source: NameError },
}

impl Topic {
    /// Parses a full topic string (with the root).
    pub fn parse(topic: &str) -> Result<Topic, TopicError> {
        let rest = topic
            .strip_prefix(ROOT)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| TopicError::WrongRoot(short(topic)))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let bad = |source| TopicError::BadName {
            topic: short(topic),
            source,
        };
        let unknown = || TopicError::Unknown(short(topic));
        Ok(match parts.as_slice() {
            ["agents", a, "status"] => Topic::AgentStatus(AgentId::parse(*a).map_err(bad)?),
            ["agents", a, "context"] => Topic::AgentContext(AgentId::parse(*a).map_err(bad)?),
            ["agents", a, "inbox"] => Topic::Inbox(AgentId::parse(*a).map_err(bad)?),
            ["agents", a, "ack"] => Topic::Ack(AgentId::parse(*a).map_err(bad)?),
            ["agents", a, "events", k] => {
                let agent = AgentId::parse(*a).map_err(bad)?;
                Topic::AgentEvent(agent, EventKind::parse(k).ok_or_else(unknown)?)
            }
            ["keys", k, "state"] => Topic::KeyState(KeyName::parse(*k).map_err(bad)?),
            ["quota", p, m, "state"] => Topic::QuotaState(
                ProjectId::parse(*p).map_err(bad)?,
                ModelName::parse(*m).map_err(bad)?,
            ),
            ["alerts", s] => Topic::Alert(Severity::parse(s).ok_or_else(unknown)?),
            _ => return Err(unknown()),
        })
    }

    /// Whether messages on this topic are published retained.
    pub fn retained(&self) -> bool {
        matches!(
            self,
            Topic::AgentStatus(_) | Topic::Ack(_) | Topic::KeyState(_) | Topic::QuotaState(..)
        )
    }
}

fn short(s: &str) -> String {
    s.chars().take(200).collect()
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::AgentStatus(a) => write!(f, "{ROOT}/agents/{a}/status"),
            Topic::AgentEvent(a, k) => write!(f, "{ROOT}/agents/{a}/events/{}", k.as_str()),
            Topic::AgentContext(a) => write!(f, "{ROOT}/agents/{a}/context"),
            Topic::Inbox(a) => write!(f, "{ROOT}/agents/{a}/inbox"),
            Topic::Ack(a) => write!(f, "{ROOT}/agents/{a}/ack"),
            Topic::KeyState(k) => write!(f, "{ROOT}/keys/{k}/state"),
            Topic::QuotaState(p, m) => write!(f, "{ROOT}/quota/{p}/{m}/state"),
            Topic::Alert(s) => write!(f, "{ROOT}/alerts/{}", s.as_str()),
        }
    }
}

/// Subscription filters.
pub mod filter {
    use super::ROOT;
    use crate::names::AgentId;

    /// Everything of protocol v1 (ops).
    pub fn all() -> String {
        format!("{ROOT}/#")
    }
    /// Every agent's outbox events (recorder).
    pub fn agent_events() -> String {
        format!("{ROOT}/agents/+/events/+")
    }
    /// Every agent's context requests (recorder).
    pub fn agent_context() -> String {
        format!("{ROOT}/agents/+/context")
    }
    /// Every agent's status (recorder, ops).
    pub fn agent_status() -> String {
        format!("{ROOT}/agents/+/status")
    }
    /// All key states (agents).
    pub fn key_states() -> String {
        format!("{ROOT}/keys/+/state")
    }
    /// All quota-group states (agents).
    pub fn quota_states() -> String {
        format!("{ROOT}/quota/+/+/state")
    }
    /// All alerts (Slack bridge, ops).
    pub fn alerts() -> String {
        format!("{ROOT}/alerts/+")
    }
    /// One agent's inbox.
    pub fn inbox(agent: &AgentId) -> String {
        format!("{ROOT}/agents/{agent}/inbox")
    }
    /// One agent's ack watermark.
    pub fn ack(agent: &AgentId) -> String {
        format!("{ROOT}/agents/{agent}/ack")
    }
}
