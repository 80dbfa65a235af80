//! The emulator's clock: real UTC time plus an adjustable offset, so tests can move the
//! emulator to just before a Pacific midnight (or across a DST change) without waiting.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        let real = Utc::now();
        real.checked_add_signed(self.offset()).unwrap_or(real)
    }

    pub fn offset(&self) -> chrono::Duration {
        chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    pub fn set_offset(&self, offset: chrono::Duration) {
        self.offset_ms
            .store(offset.num_milliseconds(), Ordering::Relaxed);
    }

    /// Moves the clock so that `now()` reads `at` (and runs on from there).
    pub fn set_now(&self, at: DateTime<Utc>) {
        self.set_offset(at - Utc::now());
    }
}
