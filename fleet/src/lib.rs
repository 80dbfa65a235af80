//! gemfleet-fleet: a whole local fleet in one command.
//!
//! - [`stack`]: starts broker, emulator, recorder (with projects and keys) and agent daemons
//!   as real processes.
//! - [`demo`]: the main job end to end — Gemini CLI tasks over a repository through the fleet,
//!   with a revoked key and a killed agent, live progress and a checked report ([`report`]).
//! - [`watch`]: the fleet's live state from the broker.
//! - [`bench`]: the fleet benchmark, gemfleet's arbiter beside the original design's strategy.
//! - [`procs`]: child processes and their logs.

pub mod bench;
pub mod demo;
pub mod procs;
pub mod report;
pub mod stack;
pub mod watch;
