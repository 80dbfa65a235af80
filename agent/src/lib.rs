//! gemfleet-agent: the per-machine daemon (Gemini proxy, MQTT session, outbox, cold view) and
//! the commands people run on an edge machine.
//!
//! - [`outbox`]: durable events (pure state + append-only file).
//! - [`mesh`]: the MQTT session (event loop, replay, inbox routing).
//! - [`cold`]: the cold-key and quota-group view, pure.
//! - [`proxy`]: the Gemini API proxy; [`answers`]: reading Gemini's answers.
//! - [`control`]: the loopback control API `run` and `status` use; [`daemon`]: wiring.
//! - [`runner`]: `run` (a Gemini CLI task through the daemon, with resume);
//!   [`context`]: session files on the wire; [`stats`]: per-task counts.

pub mod answers;
pub mod classify_cmd;
pub mod cli;
pub mod cold;
pub mod context;
pub mod control;
pub mod daemon;
pub mod mesh;
pub mod outbox;
pub mod proxy;
pub mod runner;
pub mod settings;
pub mod stats;
