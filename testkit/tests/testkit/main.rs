#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The test kit against the real services: a private mosquitto and the machine's PostgreSQL.

mod broker;
mod db;
mod docs;
