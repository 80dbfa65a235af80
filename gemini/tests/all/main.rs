#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! gemfleet-gemini's integration tests, one binary: the shared case files, the added kinds,
//! the SSE parser, usage parsing, and properties over arbitrary bytes.

mod fixtures;
mod kinds;
mod never_panics;
mod sse_stream;
mod usage_parsing;

use chrono::{DateTime, Utc};

/// The instant most tests classify at: a DST start day in the US, so `daily` must land on
/// the first midnight measured in PDT.
pub const NOW: &str = "2026-03-08T09:30:00Z";

pub fn now() -> DateTime<Utc> {
    NOW.parse().unwrap()
}

pub fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}
