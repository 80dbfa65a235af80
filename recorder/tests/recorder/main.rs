#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The recorder against real PostgreSQL (a fresh database per test) and a private mosquitto
//! per test, driven by test agents over real MQTT connections.

mod arbiter;
mod cli;
mod context;
mod hostile;
mod ingest;
mod notices;
mod secrets;
mod settings;
mod support;
