//! The recorder's clock, injectable: the arbiter's windows, leases, cooldowns and the Pacific
//! midnight reset all read it, so tests can put the recorder on a DST day.

use chrono::{DateTime, Duration, Utc};
use std::sync::{Arc, Mutex};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// Wall-clock time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that runs from a chosen instant at real speed, and can be moved forward
/// (tests: "it is 23:59 Pacific on a DST day").
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<(DateTime<Utc>, std::time::Instant)>>,
}

impl ManualClock {
    pub fn starting_at(t: DateTime<Utc>) -> Self {
        ManualClock {
            inner: Arc::new(Mutex::new((t, std::time::Instant::now()))),
        }
    }
    /// Jumps the clock by `d`.
    pub fn advance(&self, d: Duration) {
        if let Ok(mut g) = self.inner.lock() {
            g.0 += d;
        }
    }
    /// Sets the clock to `t` (it keeps running from there).
    pub fn set(&self, t: DateTime<Utc>) {
        if let Ok(mut g) = self.inner.lock() {
            *g = (t, std::time::Instant::now());
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        match self.inner.lock() {
            Ok(g) => g.0 + Duration::from_std(g.1.elapsed()).unwrap_or_default(),
            Err(_) => Utc::now(),
        }
    }
}
