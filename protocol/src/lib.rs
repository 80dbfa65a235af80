//! gemfleet mesh protocol v1 — pure, no IO.
//!
//! - [`names`]: validated names that appear in topics (agent, key, project, model, task).
//! - [`topic`]: every topic of protocol v1, built and parsed.
//! - [`envelope`]: the envelope every payload travels in, and the codec with its size limit.
//! - [`payload`]: the typed payloads (claim, grant, usage, throttle, notices, alerts, …).
//!
//! See docs/protocol.md for the operator's view of the same contract.

pub mod envelope;
pub mod names;
pub mod payload;
pub mod topic;

pub use envelope::{
    CONTEXT_CHUNK_BYTES, DecodeError, EncodeError, Envelope, MAX_PAYLOAD_BYTES, PROTOCOL_VERSION,
};
pub use names::{AgentId, KeyName, ModelName, NameError, ProjectId, TaskId};
pub use payload::*;
pub use topic::filter;
pub use topic::{EventKind, ROOT, Topic, TopicError};
