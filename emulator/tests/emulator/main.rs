#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Integration tests of the emulator over real HTTP (and the real Gemini CLI in `cli`).

mod common;

mod binary;
mod classified;
mod cli;
mod errors;
mod faults;
mod junk;
mod ledger;
mod quotas;
