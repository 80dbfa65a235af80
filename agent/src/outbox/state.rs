//! The outbox's bookkeeping, pure: which sequence numbers are pending, the next number, the
//! acknowledged watermark and the size bound. The file layer (`super::log`) drives it.

use chrono::{DateTime, Utc};
use gemfleet_protocol::EventKind;
use std::collections::BTreeMap;

/// One event written but not yet covered by the recorder's watermark.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub kind: EventKind,
    pub ts: DateTime<Utc>,
    /// The encoded envelope, exactly as published.
    pub bytes: Vec<u8>,
}

/// Why an event was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    #[error(
        "the outbox holds {held} bytes of unacknowledged events (limit {limit}); the recorder has not acknowledged events for a while — check the broker connection and the recorder"
    )]
    Full { held: u64, limit: u64 },
}

/// How full the outbox is, for alerts and `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    Normal,
    /// Above [`NEAR_FULL_PERCENT`] of the bound: new claims will soon be refused.
    NearFull,
    Full,
}

pub const NEAR_FULL_PERCENT: u64 = 80;

/// Share of the bound kept for outcome events (`usage`, `throttle`, `release`, `task`) of
/// requests already in flight, so a full outbox refuses new work but never loses an outcome.
pub const OUTCOME_RESERVE_PERCENT: u64 = 10;

#[derive(Debug, Clone, PartialEq)]
pub struct OutboxState {
    next_seq: u64,
    watermark: u64,
    pending: BTreeMap<u64, Pending>,
    pending_bytes: u64,
    max_bytes: u64,
}

impl OutboxState {
    /// An empty outbox whose first event gets `next_seq`.
    pub fn new(next_seq: u64, max_bytes: u64) -> Self {
        OutboxState {
            next_seq,
            watermark: 0,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            max_bytes,
        }
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
    pub fn watermark(&self) -> u64 {
        self.watermark
    }
    pub fn depth(&self) -> usize {
        self.pending.len()
    }
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }
    /// The lowest sequence number still held, or the next one when nothing is pending
    /// (the `outbox_floor` of the online status).
    pub fn floor(&self) -> u64 {
        self.pending.keys().next().copied().unwrap_or(self.next_seq)
    }
    pub fn oldest(&self) -> Option<(u64, &Pending)> {
        self.pending.iter().next().map(|(s, p)| (*s, p))
    }
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Pending)> {
        self.pending.iter().map(|(s, p)| (*s, p))
    }

    pub fn fill(&self) -> Fill {
        if self.pending_bytes >= self.max_bytes {
            Fill::Full
        } else if self.pending_bytes * 100 >= self.max_bytes * NEAR_FULL_PERCENT {
            Fill::NearFull
        } else {
            Fill::Normal
        }
    }

    /// Whether an event of `kind` and `len` bytes may be added. Claims stop at the bound;
    /// outcomes of requests already granted may use a reserve above it.
    pub fn admit(&self, kind: EventKind, len: usize) -> Result<(), AdmitError> {
        let limit = match kind {
            EventKind::Claim => self.max_bytes,
            _ => self.max_bytes + self.max_bytes * OUTCOME_RESERVE_PERCENT / 100,
        };
        let after = self.pending_bytes + len as u64;
        if after > limit {
            return Err(AdmitError::Full {
                held: self.pending_bytes,
                limit: self.max_bytes,
            });
        }
        Ok(())
    }

    /// Takes the next sequence number.
    pub fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Records an event found in (or just written to) the log. Events at or below the
    /// watermark are already committed and are not held.
    pub fn insert(&mut self, seq: u64, pending: Pending) {
        if seq >= self.next_seq {
            self.next_seq = seq + 1;
        }
        if seq <= self.watermark {
            return;
        }
        self.pending_bytes += pending.bytes.len() as u64;
        if let Some(old) = self.pending.insert(seq, pending) {
            self.pending_bytes -= old.bytes.len() as u64;
        }
    }

    /// Raises the next sequence number to at least `seq` (a persisted counter).
    pub fn raise_next(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq);
    }

    /// Applies the recorder's watermark: drops every event at or below it. Returns how many
    /// were dropped. A lower watermark than known (an old retained message) changes nothing.
    pub fn ack(&mut self, watermark: u64) -> usize {
        if watermark <= self.watermark {
            return 0;
        }
        self.watermark = watermark;
        let keep = self.pending.split_off(&(watermark.saturating_add(1)));
        let dropped = std::mem::replace(&mut self.pending, keep);
        for p in dropped.values() {
            self.pending_bytes -= p.bytes.len() as u64;
        }
        dropped.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind, len: usize) -> Pending {
        Pending {
            kind,
            ts: Utc::now(),
            bytes: vec![b'x'; len],
        }
    }

    #[test]
    fn sequence_numbers_increase_and_floor_tracks_the_oldest_pending() {
        let mut s = OutboxState::new(100, 1000);
        assert_eq!(s.floor(), 100);
        let a = s.take_seq();
        s.insert(a, ev(EventKind::Claim, 10));
        let b = s.take_seq();
        s.insert(b, ev(EventKind::Usage, 10));
        assert_eq!((a, b), (100, 101));
        assert_eq!(s.floor(), 100);
        assert_eq!(s.ack(100), 1);
        assert_eq!(s.floor(), 101);
        assert_eq!(s.ack(101), 1);
        assert_eq!(s.floor(), 102);
        assert_eq!(s.depth(), 0);
        assert_eq!(s.pending_bytes(), 0);
    }

    #[test]
    fn an_old_watermark_changes_nothing() {
        let mut s = OutboxState::new(1, 1000);
        for _ in 0..3 {
            let q = s.take_seq();
            s.insert(q, ev(EventKind::Usage, 5));
        }
        assert_eq!(s.ack(2), 2);
        assert_eq!(s.ack(1), 0);
        assert_eq!(s.depth(), 1);
        assert_eq!(s.watermark(), 2);
    }

    #[test]
    fn events_below_the_watermark_found_in_the_log_are_not_held() {
        let mut s = OutboxState::new(1, 1000);
        s.ack(10);
        s.insert(7, ev(EventKind::Usage, 5));
        assert_eq!(s.depth(), 0);
        assert_eq!(s.next_seq(), 8);
        s.insert(11, ev(EventKind::Usage, 5));
        assert_eq!(s.depth(), 1);
        assert_eq!(s.next_seq(), 12);
    }

    #[test]
    fn claims_stop_at_the_bound_and_outcomes_use_the_reserve() {
        let mut s = OutboxState::new(1, 100);
        let q = s.take_seq();
        s.insert(q, ev(EventKind::Claim, 95));
        assert_eq!(s.fill(), Fill::NearFull);
        assert!(s.admit(EventKind::Claim, 10).is_err());
        assert!(s.admit(EventKind::Usage, 10).is_ok());
        assert!(s.admit(EventKind::Usage, 20).is_err());
        s.ack(q);
        assert_eq!(s.fill(), Fill::Normal);
        assert!(s.admit(EventKind::Claim, 10).is_ok());
    }

    #[test]
    fn replacing_a_pending_event_keeps_the_byte_count_true() {
        let mut s = OutboxState::new(1, 1000);
        s.insert(1, ev(EventKind::Usage, 5));
        s.insert(1, ev(EventKind::Usage, 7));
        assert_eq!(s.pending_bytes(), 7);
        assert_eq!(s.depth(), 1);
    }
}
