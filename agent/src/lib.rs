//! gemfleet-agent: the per-machine daemon (Gemini proxy, MQTT session, outbox, cold view) and
//! the commands people run on an edge machine.

pub mod classify_cmd;
pub mod cli;
