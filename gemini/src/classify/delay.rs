//! The delay encodings Google uses, and their precedence (QUOTAS.md rule 3).
//!
//! - ErrorInfo `quotaResetTimeStamp`: RFC 3339 (`2026-09-20T21:03:14Z`).
//! - ErrorInfo `quotaResetDelay`: Go duration (`579.276118ms`, `161h39m41.3s`).
//! - RetryInfo `retryDelay`: protobuf JSON duration (`26s`, `0.579276118s`).
//! - Prose: `Please retry in 51.6s`, `reset after 8h44m7s`, `Resets in 9h22m20s`.
//!
//! Go and protobuf durations are both a subset of what `humantime` parses (units `h m s ms us
//! µs ns`, fractions, concatenated terms), so one well-kept parser reads both.

use super::api_error::ApiError;
use chrono::{DateTime, Utc};
use regex::Regex;
use std::sync::LazyLock;
use std::time::Duration;

/// The wait recorded for a stated zero delay. "Reset after 0s" means the window has just
/// rolled; retrying in the same instant races the server's own bookkeeping.
pub const ZERO_DELAY_FLOOR_MS: u64 = 1_000;

/// What the error says about when to come back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatedDelay {
    /// The relative delay, first found of quotaResetDelay, retryDelay, prose.
    pub retry_after_ms: Option<u64>,
    /// The absolute reset instant (`quotaResetTimeStamp`).
    pub reset_at: Option<DateTime<Utc>>,
}

impl StatedDelay {
    /// Reads every encoding in precedence order. The absolute timestamp is kept as `reset_at`;
    /// the relative delay prefers the server's own relative figures, because they do not
    /// depend on our clock agreeing with Google's. When only the timestamp is stated, the
    /// delay is derived from it.
    pub fn read(err: &ApiError, now: DateTime<Utc>) -> StatedDelay {
        let reset_at = err
            .meta("quotaResetTimeStamp")
            .and_then(|s| DateTime::parse_from_rfc3339(s.trim()).ok())
            .map(|t| t.with_timezone(&Utc));
        let relative = err
            .meta("quotaResetDelay")
            .and_then(parse_duration)
            .or_else(|| err.retry_delay.as_deref().and_then(parse_duration))
            .or_else(|| prose_delay(&err.message));
        let retry_after_ms = relative.map(to_millis).or_else(|| {
            reset_at.map(|t| {
                let ms = (t - now).num_milliseconds();
                u64::try_from(ms).map_or(ZERO_DELAY_FLOOR_MS, |ms| ms.max(1))
            })
        });
        StatedDelay {
            retry_after_ms,
            reset_at,
        }
    }
}

/// A Go or protobuf duration. Negative durations (a reset already past) read as zero.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    if let Some(rest) = t.strip_prefix('-') {
        return humantime::parse_duration(rest.trim())
            .ok()
            .map(|_| Duration::ZERO);
    }
    humantime::parse_duration(t.strip_prefix('+').unwrap_or(t)).ok()
}

/// Milliseconds, rounded up so a sub-second delay never becomes 0; a stated zero gets
/// [`ZERO_DELAY_FLOOR_MS`].
pub fn to_millis(d: Duration) -> u64 {
    if d.is_zero() {
        return ZERO_DELAY_FLOOR_MS;
    }
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

static COMPACT: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:retry|try again|resets?)\s+(?:in|after)\s+((?:\d+(?:\.\d+)?(?:ms|us|µs|ns|h|m|s)){1,6})(?:[^\w]|$)",
    )
    .ok()
});
static WORDED: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:retry|try again|resets?)\s+(?:in|after)\s+((?:\d+(?:\.\d+)?\s*(?:milliseconds?|seconds?|secs?|minutes?|mins?|hours?|hrs?)\b\s*){1,4})",
    )
    .ok()
});

/// `Please retry in 51.606482386s.`, `will reset after 8h44m7s`, `Resets in 9h22m20s`, and the
/// worded forms (`retry after 30 seconds`).
pub fn prose_delay(message: &str) -> Option<Duration> {
    [&COMPACT, &WORDED].into_iter().find_map(|re| {
        let caps = re.as_ref()?.captures(message)?;
        parse_duration(caps.get(1)?.as_str())
    })
}

/// Whether every pattern of this module compiles (a test asserts it; at run time a pattern
/// that failed would only leave prose delays unread, never crash).
pub fn patterns_compile() -> bool {
    COMPACT.is_some() && WORDED.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> Option<u64> {
        parse_duration(s).map(to_millis)
    }

    #[test]
    fn go_and_protobuf_durations() {
        assert_eq!(ms("161h39m41.3s"), Some(581_981_300));
        assert_eq!(ms("579.276118ms"), Some(580));
        assert_eq!(ms("33740.910400305s"), Some(33_740_911));
        assert_eq!(ms("26s"), Some(26_000));
        assert_eq!(ms("1m30s"), Some(90_000));
        assert_eq!(ms("1500us"), Some(2));
        assert_eq!(ms("1500µs"), Some(2));
        assert_eq!(ms("10ns"), Some(1));
        assert_eq!(ms("0s"), Some(ZERO_DELAY_FLOOR_MS));
        assert_eq!(ms("-3s"), Some(ZERO_DELAY_FLOOR_MS), "a reset already past");
        assert_eq!(ms("soon"), None);
        assert_eq!(ms(""), None);
    }

    #[test]
    fn prose_needs_a_unit_and_a_verb() {
        assert_eq!(
            prose_delay("Please retry in 51.606482386s."),
            parse_duration("51.606482386s")
        );
        assert_eq!(
            prose_delay("Your quota will reset after 0s."),
            Some(Duration::ZERO)
        );
        assert_eq!(prose_delay("limit: 20, model: x"), None);
        assert_eq!(
            prose_delay("retry in 5 minutes"),
            Some(Duration::from_secs(300))
        );
        assert!(patterns_compile());
    }
}
