//! What a quota's name says: its dimension (per minute or per day; requests or input tokens)
//! and its tier. Names come as quota ids (`GenerateRequestsPerDayPerProjectPerModel-FreeTier`),
//! legacy limit names (`GenerateContentRequestsPerMinutePerProjectPerRegion`), metrics
//! (`generate_content_free_tier_input_token_count`) and prose (`… Requests per day per user
//! per tier`). They are compared after folding to lowercase letters and digits, so every
//! spelling of one word matches.

use super::api_error::{ApiError, Violation};
use crate::classification::{Dimension, Tier};
use regex::Regex;
use std::sync::LazyLock;

/// The period a quota counts over, when its name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Minute,
    Day,
}

fn fold(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The period a quota name states.
pub fn period_of(name: &str) -> Option<Period> {
    let f = fold(name);
    if f.contains("perday") || f.contains("daily") {
        Some(Period::Day)
    } else if f.contains("perminute") {
        Some(Period::Minute)
    } else {
        None
    }
}

/// Whether the quota counts input tokens rather than requests.
fn counts_tokens(name: &str) -> bool {
    fold(name).contains("token")
}

/// The tier a quota id or metric names.
pub fn tier_of(name: &str) -> Option<Tier> {
    let f = fold(name);
    if f.contains("freetier") {
        Some(Tier::Free)
    } else if f.contains("paidtier") {
        Some(Tier::Paid)
    } else {
        None
    }
}

impl Violation {
    fn names(&self) -> impl Iterator<Item = &str> {
        self.quota_id
            .iter()
            .chain(self.metric.iter())
            .map(String::as_str)
    }

    /// The dimension, when the id (or, failing that, the metric) states a period.
    pub fn dimension(&self) -> Option<Dimension> {
        let period = self.names().find_map(period_of)?;
        let tokens = self.names().any(counts_tokens);
        Some(match (period, tokens) {
            (Period::Minute, false) => Dimension::RequestsPerMinute,
            (Period::Minute, true) => Dimension::InputTokensPerMinute,
            (Period::Day, false) => Dimension::RequestsPerDay,
            (Period::Day, true) => Dimension::InputTokensPerDay,
        })
    }

    pub fn tier(&self) -> Option<Tier> {
        self.names().find_map(tier_of)
    }

    /// The limit this violation states, reading an omitted `quotaValue` of a whole
    /// QuotaFailure violation as 0 (proto3 omits zero values).
    pub fn limit(&self) -> Option<u64> {
        match self.value {
            Some(v) => Some(v),
            None if self.absent_value_means_zero => Some(0),
            None => None,
        }
    }

    /// Whether the name is a per-user (Code Assist) quota rather than a project's.
    pub fn per_user(&self) -> bool {
        self.names().any(|n| {
            let f = fold(n);
            f.contains("peruser") || f.contains("cloudcodepa")
        })
    }
}

static METRIC_LINE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    // "Quota exceeded for metric: <metric>, limit: <N>[, model: <model>]"
    Regex::new(
        r"(?i)quota exceeded for metric:\s*([^\s,]+),\s*limit:\s*(\d+)(?:,\s*model:\s*([^\s,]+))?",
    )
    .ok()
});
static LEGACY_LINE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    // "Quota exceeded for quota metric '<metric>' and limit '<limit name>'"
    Regex::new(r"(?i)quota exceeded for quota metric '([^']*)' and limit '([^']*)'").ok()
});

static VERTEX_LINE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    // "Quota exceeded for aiplatform.googleapis.com/generate_content_requests_per_minute_per_project_per_base_model with base model: …"
    Regex::new(r"(?i)quota exceeded for ([a-z0-9.-]+\.googleapis\.com/[a-z0-9_/]+)").ok()
});

/// Violations stated only in the message (bodies without details, printed text). The
/// message names the metric and the limit but not the quota id, so these rarely give a
/// period; they do give the limit.
pub fn prose_violations(message: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    if let Some(re) = METRIC_LINE.as_ref() {
        for caps in re.captures_iter(message) {
            out.push(Violation {
                quota_id: None,
                metric: caps.get(1).map(|m| m.as_str().to_owned()),
                value: caps.get(2).and_then(|m| m.as_str().parse().ok()),
                absent_value_means_zero: false,
                model: caps.get(3).map(|m| m.as_str().to_owned()),
            });
        }
    }
    if let Some(re) = VERTEX_LINE.as_ref() {
        for caps in re.captures_iter(message) {
            out.push(Violation {
                metric: caps.get(1).map(|m| m.as_str().to_owned()),
                ..Violation::default()
            });
        }
    }
    if let Some(re) = LEGACY_LINE.as_ref() {
        for caps in re.captures_iter(message) {
            out.push(Violation {
                quota_id: caps.get(2).map(|m| m.as_str().to_owned()),
                metric: caps.get(1).map(|m| m.as_str().to_owned()),
                value: None,
                absent_value_means_zero: false,
                model: None,
            });
        }
    }
    out
}

/// Every violation the error states, structured ones first. Prose lines fill in a limit the
/// structured part left out (`limit: 20` when the QuotaFailure was cut).
pub fn all_violations(err: &ApiError) -> Vec<Violation> {
    let mut all = err.violations.clone();
    let prose = prose_violations(&err.message);
    for p in prose {
        let mut same_metric = all
            .iter_mut()
            .filter(|v| v.metric.is_some() && v.metric == p.metric)
            .peekable();
        if same_metric.peek().is_none() {
            all.push(p);
            continue;
        }
        for v in same_metric {
            v.value = v.value.or(p.value);
        }
    }
    all
}

pub fn patterns_compile() -> bool {
    METRIC_LINE.is_some() && LEGACY_LINE.is_some() && VERTEX_LINE.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dim(id: &str, metric: &str) -> Option<Dimension> {
        Violation {
            quota_id: Some(id.to_owned()),
            metric: Some(metric.to_owned()),
            ..Violation::default()
        }
        .dimension()
    }

    #[test]
    fn quota_names_give_dimension_and_tier() {
        let m = "generativelanguage.googleapis.com/generate_content_free_tier_requests";
        assert_eq!(
            dim("GenerateRequestsPerDayPerProjectPerModel-FreeTier", m),
            Some(Dimension::RequestsPerDay)
        );
        assert_eq!(
            dim("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", m),
            Some(Dimension::RequestsPerMinute)
        );
        assert_eq!(
            dim(
                "GenerateContentInputTokensPerModelPerDay-FreeTier",
                "x/generate_content_free_tier_input_token_count"
            ),
            Some(Dimension::InputTokensPerDay)
        );
        assert_eq!(
            dim(
                "Gemini 2.5 Pro Requests per day per user per tier",
                "Gemini 2.5 Pro Requests"
            ),
            Some(Dimension::RequestsPerDay)
        );
        assert_eq!(dim("SomethingDaily", "m"), Some(Dimension::RequestsPerDay));
        assert_eq!(dim("Opaque", m), None, "a metric alone names no period");
        assert_eq!(
            tier_of("GenerateContentPaidTierInputTokensPerModelPerMinute"),
            Some(Tier::Paid)
        );
        assert_eq!(tier_of(m), Some(Tier::Free));
        assert_eq!(tier_of("generate_content_requests"), None);
    }

    #[test]
    fn an_absent_value_is_zero_only_for_a_whole_violation() {
        let mut v = Violation {
            absent_value_means_zero: true,
            ..Violation::default()
        };
        assert_eq!(v.limit(), Some(0));
        v.absent_value_means_zero = false;
        assert_eq!(v.limit(), None);
        v.value = Some(5);
        assert_eq!(v.limit(), Some(5));
    }

    #[test]
    fn message_lines_become_violations() {
        let msg = "* Quota exceeded for metric: a/b_requests, limit: 0, model: gemini-2.0-flash\n* Quota exceeded for metric: a/c_tokens, limit: 7\nQuota exceeded for quota metric 'M' and limit 'L per day per user' of service 's'";
        let v = prose_violations(msg);
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].value, Some(0));
        assert_eq!(v[0].model.as_deref(), Some("gemini-2.0-flash"));
        assert_eq!(v[1].value, Some(7));
        assert!(v[2].per_user());
        assert!(patterns_compile());
    }
}
