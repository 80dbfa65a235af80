//! One quota group's spending: the sliding-minute window and the Pacific-day totals.
//! Pure: every function takes `now`.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use gemfleet_gemini::pacific;
use std::collections::VecDeque;
use uuid::Uuid;

/// Limits of one quota group. `None` = unlimited in that dimension; `Some(0)` = no quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub rpd: Option<u64>,
    pub tpd: Option<u64>,
}

impl Limits {
    /// A zero limit in any dimension means the model has no quota on this project.
    pub fn no_quota(&self) -> bool {
        [self.rpm, self.tpm, self.rpd, self.tpd].contains(&Some(0))
    }

    /// Whether a request of `tokens` input tokens could ever fit (an empty window).
    pub fn could_ever_fit(&self, tokens: u64) -> bool {
        !self.no_quota()
            && self.tpm.is_none_or(|l| tokens <= l)
            && self.tpd.is_none_or(|l| tokens <= l)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    at: DateTime<Utc>,
    claim_id: Uuid,
    tokens: u64,
}

/// The requests and input tokens charged to one group.
#[derive(Debug, Clone)]
pub struct Ledger {
    minute: Duration,
    window: VecDeque<Entry>,
    window_tokens: u64,
    day: NaiveDate,
    day_requests: u64,
    day_tokens: u64,
}

/// When a group has room for a request again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    Now,
    At(DateTime<Utc>),
    /// Not within this Pacific day's limits or ever (no quota / too large).
    Never,
}

impl Ledger {
    pub fn new(minute: Duration, now: DateTime<Utc>) -> Self {
        Ledger {
            minute,
            window: VecDeque::new(),
            window_tokens: 0,
            day: pacific::day_of(now),
            day_requests: 0,
            day_tokens: 0,
        }
    }

    /// Drops entries older than the window and rolls the Pacific day.
    pub fn advance(&mut self, now: DateTime<Utc>) {
        let cutoff = now - self.minute;
        while let Some(e) = self.window.front() {
            if e.at > cutoff {
                break;
            }
            self.window_tokens = self.window_tokens.saturating_sub(e.tokens);
            self.window.pop_front();
        }
        let today = pacific::day_of(now);
        if today != self.day {
            self.day = today;
            self.day_requests = 0;
            self.day_tokens = 0;
        }
    }

    /// Records a grant made at `at` (which may be in the past when rebuilding after a restart).
    /// Entries are kept sorted by time so the window slides correctly.
    pub fn charge(&mut self, at: DateTime<Utc>, claim_id: Uuid, tokens: u64, now: DateTime<Utc>) {
        if pacific::day_of(at) == self.day {
            self.day_requests = self.day_requests.saturating_add(1);
            self.day_tokens = self.day_tokens.saturating_add(tokens);
        }
        if at > now - self.minute {
            let entry = Entry {
                at,
                claim_id,
                tokens,
            };
            let pos = self
                .window
                .iter()
                .rposition(|e| e.at <= at)
                .map_or(0, |p| p + 1);
            self.window.insert(pos, entry);
            self.window_tokens = self.window_tokens.saturating_add(tokens);
        }
    }

    /// Replaces a grant's charged tokens with the actual count. `day_charged` is what the day
    /// total holds for it (the claim may have left the minute window already).
    pub fn correct(&mut self, claim_id: Uuid, at: DateTime<Utc>, old: u64, new: u64) {
        if let Some(e) = self.window.iter_mut().find(|e| e.claim_id == claim_id) {
            self.window_tokens = self
                .window_tokens
                .saturating_sub(e.tokens)
                .saturating_add(new);
            e.tokens = new;
        }
        if pacific::day_of(at) == self.day {
            self.day_tokens = self.day_tokens.saturating_sub(old).saturating_add(new);
        }
    }

    /// Returns an unused grant's reservation (request and tokens) to the group.
    pub fn refund(&mut self, claim_id: Uuid, at: DateTime<Utc>, charged: u64) {
        if let Some(pos) = self.window.iter().position(|e| e.claim_id == claim_id)
            && let Some(e) = self.window.remove(pos)
        {
            self.window_tokens = self.window_tokens.saturating_sub(e.tokens);
        }
        if pacific::day_of(at) == self.day {
            self.day_requests = self.day_requests.saturating_sub(1);
            self.day_tokens = self.day_tokens.saturating_sub(charged);
        }
    }

    pub fn minute_requests(&self) -> u64 {
        self.window.len() as u64
    }
    pub fn minute_tokens(&self) -> u64 {
        self.window_tokens
    }
    pub fn day_requests(&self) -> u64 {
        self.day_requests
    }
    pub fn day_tokens(&self) -> u64 {
        self.day_tokens
    }

    /// When a request of `tokens` fits under `limits` (call [`Ledger::advance`] first).
    pub fn room(&self, limits: &Limits, tokens: u64, now: DateTime<Utc>) -> Room {
        if !limits.could_ever_fit(tokens) {
            return Room::Never;
        }
        let day_full = limits
            .rpd
            .is_some_and(|l| self.day_requests.saturating_add(1) > l)
            || limits
                .tpd
                .is_some_and(|l| self.day_tokens.saturating_add(tokens) > l);
        if day_full {
            // Frees at the next Pacific midnight; callers treat that as "not within a wait".
            return Room::At(pacific::next_midnight(now));
        }
        let mut at = now;
        if let Some(l) = limits.rpm {
            let n = self.window.len() as u64;
            if n.saturating_add(1) > l {
                // The (n - l)th oldest entry must leave: index n - l.
                let idx = (n - l) as usize;
                if let Some(e) = self.window.get(idx) {
                    at = at.max(e.at + self.minute);
                }
            }
        }
        if let Some(l) = limits.tpm {
            let mut total = self.window_tokens;
            if total.saturating_add(tokens) > l {
                for e in &self.window {
                    total = total.saturating_sub(e.tokens);
                    if total.saturating_add(tokens) <= l {
                        at = at.max(e.at + self.minute);
                        break;
                    }
                }
            }
        }
        if at <= now { Room::Now } else { Room::At(at) }
    }

    /// Remaining fraction of the tightest dimension after a request of `tokens` (1.0 when
    /// nothing is limited); the arbiter prefers the group with the most.
    pub fn headroom(&self, limits: &Limits, tokens: u64) -> f64 {
        let frac = |limit: Option<u64>, used: u64| -> f64 {
            match limit {
                None => 1.0,
                Some(0) => 0.0,
                Some(l) => (l.saturating_sub(used) as f64) / (l as f64),
            }
        };
        [
            frac(limits.rpm, self.minute_requests().saturating_add(1)),
            frac(limits.tpm, self.minute_tokens().saturating_add(tokens)),
            frac(limits.rpd, self.day_requests.saturating_add(1)),
            frac(limits.tpd, self.day_tokens.saturating_add(tokens)),
        ]
        .into_iter()
        .fold(1.0, f64::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        "2026-12-03T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn rpm_window_slides() {
        let limits = Limits {
            rpm: Some(2),
            ..Default::default()
        };
        let mut l = Ledger::new(Duration::seconds(60), t0());
        l.charge(t0(), Uuid::now_v7(), 1, t0());
        l.charge(t0() + Duration::seconds(10), Uuid::now_v7(), 1, t0());
        let now = t0() + Duration::seconds(20);
        l.advance(now);
        assert_eq!(
            l.room(&limits, 1, now),
            Room::At(t0() + Duration::seconds(60))
        );
        let later = t0() + Duration::seconds(60);
        l.advance(later);
        assert_eq!(l.room(&limits, 1, later), Room::Now);
    }

    #[test]
    fn tpm_waits_for_enough_tokens_to_leave() {
        let limits = Limits {
            tpm: Some(100),
            ..Default::default()
        };
        let mut l = Ledger::new(Duration::seconds(60), t0());
        l.charge(t0(), Uuid::now_v7(), 40, t0());
        l.charge(t0() + Duration::seconds(5), Uuid::now_v7(), 40, t0());
        assert_eq!(l.room(&limits, 20, t0()), Room::Now);
        assert_eq!(
            l.room(&limits, 50, t0()),
            Room::At(t0() + Duration::seconds(60))
        );
        assert_eq!(
            l.room(&limits, 90, t0()),
            Room::At(t0() + Duration::seconds(65))
        );
        assert_eq!(l.room(&limits, 101, t0()), Room::Never);
    }

    #[test]
    fn correction_and_refund() {
        let limits = Limits {
            tpm: Some(100),
            rpd: Some(2),
            ..Default::default()
        };
        let mut l = Ledger::new(Duration::seconds(60), t0());
        let a = Uuid::now_v7();
        l.charge(t0(), a, 90, t0());
        l.correct(a, t0(), 90, 10);
        assert_eq!(l.minute_tokens(), 10);
        assert_eq!(l.day_tokens(), 10);
        l.refund(a, t0(), 10);
        assert_eq!(
            (l.minute_requests(), l.day_requests(), l.day_tokens()),
            (0, 0, 0)
        );
        assert_eq!(l.room(&limits, 100, t0()), Room::Now);
    }

    #[test]
    fn day_limit_frees_at_pacific_midnight() {
        let limits = Limits {
            rpd: Some(1),
            ..Default::default()
        };
        let mut l = Ledger::new(Duration::seconds(60), t0());
        l.charge(t0(), Uuid::now_v7(), 1, t0());
        assert_eq!(
            l.room(&limits, 1, t0()),
            Room::At("2026-12-04T08:00:00Z".parse().unwrap())
        );
        let next = "2026-12-04T08:00:00Z".parse().unwrap();
        l.advance(next);
        assert_eq!(l.room(&limits, 1, next), Room::Now);
    }
}
