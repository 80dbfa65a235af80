//! The envelope every message travels in, and the codec that enforces version and size.
//!
//! On the wire: `{"v":1,"id":"<uuid v7>","agent":"edge-1","seq":42,"ts":"…Z","kind":"claim","body":{…}}`.
//! `agent` is the sender: an agent's id, or the recorder's own id for what the recorder sends.
//! `seq` is the per-agent outbox sequence number, present on outbox events only.

use crate::names::AgentId;
use crate::payload::Payload;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest payload either side accepts (the broker's `message_size_limit` and the MQTT
/// clients' maximum packet size are set above it). Context travels in chunks below it.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// Context chunk size before base64, chosen so a chunk's envelope stays under the limit.
pub const CONTEXT_CHUNK_BYTES: usize = 160 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    pub id: Uuid,
    pub agent: AgentId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub ts: DateTime<Utc>,
    #[serde(flatten)]
    pub payload: Payload,
}

impl Envelope {
    /// A new envelope with a fresh UUID v7 and the current time.
    pub fn new(agent: AgentId, seq: Option<u64>, payload: Payload) -> Self {
        Self::at(agent, seq, payload, Utc::now())
    }

    /// A new envelope stamped with `ts` (for injectable clocks).
    pub fn at(agent: AgentId, seq: Option<u64>, payload: Payload, ts: DateTime<Utc>) -> Self {
        Envelope {
            v: PROTOCOL_VERSION,
            id: Uuid::now_v7(),
            agent,
            seq,
            ts,
            payload,
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let bytes = serde_json::to_vec(self).map_err(|e| EncodeError::Json(e.to_string()))?;
        if bytes.len() > MAX_PAYLOAD_BYTES {
            return Err(EncodeError::TooLarge { len: bytes.len() });
        }
        Ok(bytes)
    }

    /// Decodes and validates one message: size, JSON, protocol version, then the typed
    /// payload (which validates every name in it).
    pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        if bytes.len() > MAX_PAYLOAD_BYTES {
            return Err(DecodeError::TooLarge { len: bytes.len() });
        }
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| DecodeError::NotJson(e.to_string()))?;
        match value.get("v") {
            Some(serde_json::Value::Number(n)) if n.as_u64() == Some(PROTOCOL_VERSION.into()) => {}
            Some(serde_json::Value::Number(n)) => {
                return Err(DecodeError::UnsupportedVersion(n.to_string()));
            }
            Some(other) => return Err(DecodeError::UnsupportedVersion(short(&other.to_string()))),
            None => return Err(DecodeError::MissingVersion),
        }
        serde_json::from_value(value).map_err(|e| DecodeError::Invalid(short(&e.to_string())))
    }
}

fn short(s: &str) -> String {
    s.chars().take(200).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot encode payload as JSON: {0}")]
    Json(String),
    #[error("payload is {len} bytes; the protocol limit is {MAX_PAYLOAD_BYTES}")]
    TooLarge { len: usize },
}

/// Why a message was refused. The `Display` never quotes the raw payload, only serde's
/// message about it (truncated to 200 characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload is {len} bytes; the protocol limit is {MAX_PAYLOAD_BYTES}")]
    TooLarge { len: usize },
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("payload has no protocol version field \"v\"")]
    MissingVersion,
    #[error("unsupported protocol version {0}; this build speaks version {PROTOCOL_VERSION}")]
    UnsupportedVersion(String),
    #[error("payload does not match protocol v1: {0}")]
    Invalid(String),
}

impl DecodeError {
    /// Short stable label for counters and the dead-letter table.
    pub fn label(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::NotJson(_) => "not_json",
            DecodeError::MissingVersion => "missing_version",
            DecodeError::UnsupportedVersion(_) => "unsupported_version",
            DecodeError::Invalid(_) => "invalid",
        }
    }
}
