//! Quota enforcement for one quota group (project, model): pure state, no IO, no clock of its
//! own — the caller passes `now`.
//!
//! Decisions (docs/emulator.md):
//! - Per-minute dimensions use a **sliding** window of one emulated minute: a request admitted
//!   at `t` counts until `t + minute`. That is at least as strict as a fixed window (a fixed
//!   window allows 2×limit across a boundary) and matches the fleet arbiter's model.
//! - Per-day dimensions count per Pacific calendar day (`gemfleet_gemini::pacific::day_of`) and
//!   reset at midnight America/Los_Angeles; days are not compressed.
//! - Only admitted requests count. A request refused with 429 is not added to any window:
//!   otherwise the `retryDelay` we state would be a lie (retrying then would find the window
//!   still full of refused attempts). A request admitted and then failed by a fault (503, 500,
//!   error mid-stream, dropped connection) does count: Google accepted it, and QUOTAS.md rule 6
//!   has the fleet count every attempt too.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use gemfleet_gemini::Dimension;

use crate::config::Limits;

/// One exceeded dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    pub dimension: Dimension,
    pub limit: u64,
}

/// Why a request was refused, and when retrying makes sense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Every dimension the request would exceed, per-day ones first (Google's order).
    pub violations: Vec<Violation>,
    /// The delay to state in RetryInfo and the message.
    pub retry_after: Duration,
}

/// Counters of one quota group.
#[derive(Debug, Default, Clone)]
pub struct QuotaGroup {
    /// Admitted requests in the current sliding minute: (admission time, input tokens).
    window: VecDeque<(DateTime<Utc>, u64)>,
    window_tokens: u64,
    day: Option<NaiveDate>,
    day_requests: u64,
    day_tokens: u64,
}

impl QuotaGroup {
    /// Admits a request of `tokens` input tokens at `now`, or says which limits it exceeds.
    pub fn admit(
        &mut self,
        now: DateTime<Utc>,
        minute: Duration,
        limits: &Limits,
        tokens: u64,
    ) -> Result<(), Refusal> {
        let window = chrono::Duration::from_std(minute).unwrap_or(chrono::Duration::seconds(60));
        self.roll(now, window);

        let mut violations = Vec::new();
        let mut minute_wait: Option<Duration> = None;
        let mut note_wait = |d: Duration| {
            minute_wait = Some(minute_wait.map_or(d, |w| w.max(d)));
        };

        if let Some(limit) = limits.requests_per_day
            && self.day_requests + 1 > limit
        {
            violations.push(Violation {
                dimension: Dimension::RequestsPerDay,
                limit,
            });
        }
        if let Some(limit) = limits.input_tokens_per_day
            && self.day_tokens.saturating_add(tokens) > limit
        {
            violations.push(Violation {
                dimension: Dimension::InputTokensPerDay,
                limit,
            });
        }
        if let Some(limit) = limits.requests_per_minute {
            let count = self.window.len() as u64;
            if count + 1 > limit {
                violations.push(Violation {
                    dimension: Dimension::RequestsPerMinute,
                    limit,
                });
                if limit > 0 {
                    // The (count - limit)-th oldest entry must leave the window for room.
                    let index = (count - limit) as usize;
                    if let Some((t, _)) = self.window.get(index) {
                        note_wait(until(now, *t + window));
                    }
                }
            }
        }
        if let Some(limit) = limits.input_tokens_per_minute
            && self.window_tokens.saturating_add(tokens) > limit
        {
            violations.push(Violation {
                dimension: Dimension::InputTokensPerMinute,
                limit,
            });
            if limit > 0 && tokens <= limit {
                let mut remaining = self.window_tokens;
                for (t, n) in &self.window {
                    remaining -= n;
                    if remaining + tokens <= limit {
                        note_wait(until(now, *t + window));
                        break;
                    }
                }
            } else if limit > 0 {
                // Larger than the whole limit: it can never pass; say a minute like Google.
                note_wait(minute);
            }
        }

        if violations.is_empty() {
            self.window.push_back((now, tokens));
            self.window_tokens += tokens;
            self.day_requests += 1;
            self.day_tokens = self.day_tokens.saturating_add(tokens);
            return Ok(());
        }
        let retry_after = minute_wait.unwrap_or_else(|| google_style_filler_delay(now, minute));
        Err(Refusal {
            violations,
            retry_after,
        })
    }

    /// Requests and input tokens in the current sliding minute and Pacific day (after rolling
    /// both forward to `now`).
    pub fn usage(&mut self, now: DateTime<Utc>, minute: Duration) -> GroupUsage {
        let window = chrono::Duration::from_std(minute).unwrap_or(chrono::Duration::seconds(60));
        self.roll(now, window);
        GroupUsage {
            minute_requests: self.window.len() as u64,
            minute_input_tokens: self.window_tokens,
            day_requests: self.day_requests,
            day_input_tokens: self.day_tokens,
        }
    }

    fn roll(&mut self, now: DateTime<Utc>, window: chrono::Duration) {
        while let Some((t, n)) = self.window.front().copied() {
            if t + window <= now {
                self.window.pop_front();
                self.window_tokens -= n;
            } else {
                break;
            }
        }
        let today = gemfleet_gemini::pacific::day_of(now);
        if self.day != Some(today) {
            // A new Pacific day (or the clock was moved to another day): per-day counters reset.
            self.day = Some(today);
            self.day_requests = 0;
            self.day_tokens = 0;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct GroupUsage {
    pub minute_requests: u64,
    pub minute_input_tokens: u64,
    pub day_requests: u64,
    pub day_input_tokens: u64,
}

fn until(now: DateTime<Utc>, at: DateTime<Utc>) -> Duration {
    (at - now).to_std().unwrap_or(Duration::ZERO)
}

/// Google states a short, meaningless delay on per-day and `limit: 0` refusals (c03: "retry in
/// 51.6s" on a PerDay quota). We do the same — the time to the next emulated-minute boundary —
/// so clients are tested on ignoring it (QUOTAS.md rule 1).
fn google_style_filler_delay(now: DateTime<Utc>, minute: Duration) -> Duration {
    let minute_ms = minute.as_millis().max(1) as i64;
    let into = now.timestamp_millis().rem_euclid(minute_ms);
    Duration::from_millis((minute_ms - into) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn rpm(n: u64) -> Limits {
        Limits {
            requests_per_minute: Some(n),
            ..Limits::default()
        }
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn sliding_minute_admits_limit_then_refuses_until_oldest_leaves() {
        let mut g = QuotaGroup::default();
        let l = rpm(2);
        assert!(g.admit(t("2026-01-01T00:00:00Z"), MIN, &l, 1).is_ok());
        assert!(g.admit(t("2026-01-01T00:00:30Z"), MIN, &l, 1).is_ok());
        let r = g.admit(t("2026-01-01T00:00:40Z"), MIN, &l, 1).unwrap_err();
        assert_eq!(r.violations[0].dimension, Dimension::RequestsPerMinute);
        assert_eq!(r.retry_after, Duration::from_secs(20));
        // A fixed window would allow this at 00:01:00.5; the sliding one still has the 00:30 one.
        assert!(g.admit(t("2026-01-01T00:01:00Z"), MIN, &l, 1).is_ok());
        assert!(g.admit(t("2026-01-01T00:01:10Z"), MIN, &l, 1).is_err());
        assert!(g.admit(t("2026-01-01T00:01:30Z"), MIN, &l, 1).is_ok());
    }

    #[test]
    fn refused_requests_do_not_count() {
        let mut g = QuotaGroup::default();
        let l = rpm(1);
        g.admit(t("2026-01-01T00:00:00Z"), MIN, &l, 1).unwrap();
        for s in 1..50 {
            let now = t("2026-01-01T00:00:00Z") + chrono::Duration::seconds(s);
            assert!(g.admit(now, MIN, &l, 1).is_err());
        }
        assert!(g.admit(t("2026-01-01T00:01:00Z"), MIN, &l, 1).is_ok());
    }

    #[test]
    fn input_tokens_per_minute_waits_for_enough_tokens_to_leave() {
        let mut g = QuotaGroup::default();
        let l = Limits {
            input_tokens_per_minute: Some(100),
            ..Limits::default()
        };
        g.admit(t("2026-01-01T00:00:00Z"), MIN, &l, 60).unwrap();
        g.admit(t("2026-01-01T00:00:10Z"), MIN, &l, 30).unwrap();
        let r = g.admit(t("2026-01-01T00:00:20Z"), MIN, &l, 50).unwrap_err();
        assert_eq!(r.violations[0].dimension, Dimension::InputTokensPerMinute);
        assert_eq!(r.violations[0].limit, 100);
        assert_eq!(r.retry_after, Duration::from_secs(40));
        assert!(g.admit(t("2026-01-01T00:00:20Z"), MIN, &l, 10).is_ok());
    }

    #[test]
    fn per_day_resets_at_pacific_midnight_across_dst_end() {
        let mut g = QuotaGroup::default();
        let l = Limits {
            requests_per_day: Some(1),
            ..Limits::default()
        };
        // 2026-11-01 is 25 hours long in Los Angeles: it starts 07:00Z and ends 08:00Z next day.
        g.admit(t("2026-11-01T07:30:00Z"), MIN, &l, 1).unwrap();
        let r = g.admit(t("2026-11-02T07:30:00Z"), MIN, &l, 1).unwrap_err();
        assert_eq!(r.violations[0].dimension, Dimension::RequestsPerDay);
        assert!(r.retry_after <= MIN);
        assert!(g.admit(t("2026-11-02T07:59:59Z"), MIN, &l, 1).is_err());
        assert!(g.admit(t("2026-11-02T08:00:00Z"), MIN, &l, 1).is_ok());
    }

    #[test]
    fn limit_zero_reports_every_zero_dimension() {
        let mut g = QuotaGroup::default();
        let r = g
            .admit(t("2026-01-01T00:00:00Z"), MIN, &Limits::zero(), 5)
            .unwrap_err();
        let dims: Vec<_> = r.violations.iter().map(|v| v.dimension).collect();
        assert_eq!(
            dims,
            vec![
                Dimension::RequestsPerDay,
                Dimension::RequestsPerMinute,
                Dimension::InputTokensPerMinute
            ]
        );
        assert!(r.violations.iter().all(|v| v.limit == 0));
    }
}
