//! The Pacific day: Gemini API per-day quotas reset at midnight America/Los_Angeles, and a
//! Pacific day is 23, 24 or 25 hours long. chrono-tz carries the zone rules.

use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};
use chrono_tz::America::Los_Angeles;

/// The Pacific calendar date `now` falls on (the quota day it counts against).
pub fn day_of(now: DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&Los_Angeles).date_naive()
}

/// The instant the Pacific day `day` starts (its local midnight), in UTC.
pub fn start_of(day: NaiveDate) -> DateTime<Utc> {
    let midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    // Midnight is never skipped or repeated in America/Los_Angeles (changes happen at 02:00),
    // but fall back to the earliest mapping anyway rather than fail.
    match Los_Angeles.from_local_datetime(&midnight) {
        chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
        chrono::LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        chrono::LocalResult::None => Los_Angeles.from_utc_datetime(&midnight).with_timezone(&Utc),
    }
}

/// The first Pacific midnight strictly after `now`: when a per-day quota exhausted at `now`
/// resets.
pub fn next_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    let today = day_of(now);
    start_of(today.checked_add_days(Days::new(1)).unwrap_or(today))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn next_midnight_standard_and_daylight_time() {
        assert_eq!(
            next_midnight(t("2026-01-15T12:00:00Z")),
            t("2026-01-16T08:00:00Z")
        );
        assert_eq!(
            next_midnight(t("2026-07-15T12:00:00Z")),
            t("2026-07-16T07:00:00Z")
        );
    }

    #[test]
    fn next_midnight_across_dst_start_and_end() {
        // 2026-03-08 is the DST start in the US: the day after is measured in PDT.
        assert_eq!(
            next_midnight(t("2026-03-08T09:30:00Z")),
            t("2026-03-09T07:00:00Z")
        );
        // 2026-11-01 is the DST end: that day is 25 hours long.
        assert_eq!(
            next_midnight(t("2026-11-01T07:30:00Z")),
            t("2026-11-02T08:00:00Z")
        );
        assert_eq!(
            start_of(day_of(t("2026-11-01T20:00:00Z"))),
            t("2026-11-01T07:00:00Z")
        );
    }

    #[test]
    fn exactly_at_midnight_is_the_next_day() {
        assert_eq!(
            next_midnight(t("2026-01-16T08:00:00Z")),
            t("2026-01-17T08:00:00Z")
        );
    }
}
