//! The agent's acceptance tests on real parts: mosquitto, PostgreSQL, the recorder and the
//! emulator in-process, the real Gemini CLI (pinned, from npm).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod runs;
mod stack;
