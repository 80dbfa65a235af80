//! The agent's acceptance tests on real parts: mosquitto, PostgreSQL, the recorder and the
//! emulator in-process, the real Gemini CLI (pinned, from npm).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Settings read best as a default plus the few fields a test changes.
#![allow(clippy::field_reassign_with_default)]

mod absorb;
mod crash;
mod errors;
mod keys;
mod moves;
mod runs;
mod stack;
mod tls;
