//! What a classified throttle does (pure): the quota group's condition, key and project
//! states, learned limits and tier, and the alerts to raise. QUOTAS.md's classes map here.

use crate::arbiter::ledger::Limits;
use chrono::{DateTime, Duration, Utc};
use gemfleet_gemini::{Dimension, FailureClass, Tier};
use gemfleet_protocol::{GroupCondition, Severity, Throttle};

/// An alert to raise (stored and published by the IO layer).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSpec {
    pub severity: Severity,
    pub code: &'static str,
    pub text: String,
    pub until: Option<DateTime<Utc>>,
}

/// A project state other than `active`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectState {
    Dead,
    Config,
    BillingBlocked,
}

impl ProjectState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProjectState::Dead => "dead",
            ProjectState::Config => "config",
            ProjectState::BillingBlocked => "billing_blocked",
        }
    }
}

/// A quota group's new condition, its end, the dimension and why.
pub type GroupChange = (
    GroupCondition,
    Option<DateTime<Utc>>,
    Option<Dimension>,
    String,
);

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    pub group: Option<GroupChange>,
    /// Disable this key (reason).
    pub disable_key: Option<String>,
    /// Set the project's state and disable all its keys (dead) or just stop using it.
    pub project: Option<(ProjectState, String)>,
    /// Mark the project's keys `quota_exhausted` for the Pacific day.
    pub keys_exhausted: bool,
    /// Lower the group's effective limits to these.
    pub limits: Option<Limits>,
    /// The project's effective tier differs from the configured one.
    pub tier: Option<Tier>,
    pub alerts: Vec<AlertSpec>,
}

/// Decides the effects of throttle `t` reported at `ts`, seen at `now`, for a group with
/// `limits` on a project configured as `tier`.
pub fn effects(
    t: &Throttle,
    ts: DateTime<Utc>,
    now: DateTime<Utc>,
    limits: Option<Limits>,
    tier: Tier,
    cooldown_floor: Duration,
) -> Effects {
    let c = &t.classification;
    let mut e = Effects::default();
    let who = format!("key {} (project {}, model {})", t.key, t.project, t.model);
    match c.class {
        FailureClass::Cooldown => {
            let delay = c
                .retry_after_ms
                // A week at most: a hostile or garbled delay must not overflow the clock.
                .map(|ms| Duration::milliseconds(ms.min(7 * 86_400_000) as i64))
                .unwrap_or(cooldown_floor)
                .max(cooldown_floor);
            let until = c.until.unwrap_or(ts + delay).max(ts + cooldown_floor);
            if until > now {
                e.group = Some((
                    GroupCondition::Cooling,
                    Some(until),
                    c.dimension,
                    c.reason.clone(),
                ));
            }
        }
        FailureClass::Daily => {
            let until = c
                .until
                .unwrap_or_else(|| gemfleet_gemini::pacific::next_midnight(ts));
            if until > now {
                e.group = Some((
                    GroupCondition::Exhausted,
                    Some(until),
                    c.dimension,
                    c.reason.clone(),
                ));
                e.keys_exhausted = true;
            }
        }
        FailureClass::NoQuota => {
            e.group = Some((GroupCondition::NoQuota, None, c.dimension, c.reason.clone()));
        }
        FailureClass::KeyDead => {
            let leaked = c.reason.to_ascii_lowercase().contains("leak");
            e.disable_key = Some(c.reason.clone());
            e.alerts.push(AlertSpec {
                severity: if leaked {
                    Severity::Security
                } else {
                    Severity::Critical
                },
                code: if leaked { "key_leaked" } else { "key_dead" },
                text: format!("{who} is dead and was disabled: {}", c.reason),
                until: None,
            });
        }
        FailureClass::ProjectDead => {
            e.project = Some((ProjectState::Dead, c.reason.clone()));
            e.alerts.push(AlertSpec {
                severity: Severity::Critical,
                code: "project_dead",
                text: format!(
                    "project {} is dead; all its keys were disabled: {}",
                    t.project, c.reason
                ),
                until: None,
            });
        }
        FailureClass::ProjectConfig => {
            e.project = Some((ProjectState::Config, c.reason.clone()));
            e.alerts.push(AlertSpec {
                severity: Severity::Warning,
                code: "project_config",
                text: format!("project {} needs configuration: {}", t.project, c.reason),
                until: None,
            });
        }
        FailureClass::BillingBlocked => {
            e.project = Some((ProjectState::BillingBlocked, c.reason.clone()));
            e.alerts.push(AlertSpec {
                severity: Severity::Critical,
                code: "billing_blocked",
                text: format!("project {} is blocked by billing: {}", t.project, c.reason),
                until: None,
            });
        }
        FailureClass::Transient
        | FailureClass::Environment
        | FailureClass::BadRequest
        | FailureClass::Unknown => {}
    }
    // Learned limits: a stated limit below the configured one lowers it.
    if let (Some(stated), Some(dim), Some(mut l)) = (c.limit, c.dimension, limits)
        && stated > 0
    {
        let slot = match dim {
            Dimension::RequestsPerMinute => &mut l.rpm,
            Dimension::InputTokensPerMinute => &mut l.tpm,
            Dimension::RequestsPerDay => &mut l.rpd,
            Dimension::InputTokensPerDay => &mut l.tpd,
        };
        if slot.is_none_or(|cur| stated < cur) {
            let before = *slot;
            *slot = Some(stated);
            e.limits = Some(l);
            e.alerts.push(AlertSpec {
                    severity: Severity::Warning,
                    code: "limit_corrected",
                    text: format!(
                        "Google states {dim:?} = {stated} for project {} model {} (configured {}); the fleet now uses {stated}",
                        t.project,
                        t.model,
                        before.map_or("unlimited".to_string(), |b| b.to_string())
                    ),
                    until: None,
                });
        }
    }
    let free_quota_id = c
        .quota_id
        .as_deref()
        .is_some_and(|q| q.ends_with("-FreeTier"));
    if tier == Tier::Paid && (free_quota_id || c.tier == Some(Tier::Free)) {
        e.tier = Some(Tier::Free);
        e.alerts.push(AlertSpec {
            severity: Severity::Warning,
            code: "tier_corrected",
            text: format!(
                "project {} is configured as paid but Google applies free-tier quota ({}): billing is not effective",
                t.project,
                c.quota_id.as_deref().unwrap_or("tier free")
            ),
            until: None,
        });
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use gemfleet_gemini::{Classification, Scope};
    use gemfleet_protocol::{KeyName, ModelName, ProjectId};
    use uuid::Uuid;

    fn throttle(class: FailureClass, f: impl FnOnce(&mut Classification)) -> Throttle {
        let mut c = Classification {
            class,
            scope: Scope::ProjectModel,
            dimension: None,
            retry_after_ms: None,
            until: None,
            limit: None,
            tier: None,
            in_stream: false,
            reason: "r".into(),
            quota_id: None,
        };
        f(&mut c);
        Throttle {
            claim_id: Uuid::now_v7(),
            grant_id: Uuid::now_v7(),
            key: KeyName::parse("k1").unwrap(),
            project: ProjectId::parse("p1").unwrap(),
            model: ModelName::parse("m").unwrap(),
            task_id: None,
            http_status: 429,
            classification: c,
            absorbed: false,
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn daily_without_until_uses_next_pacific_midnight_on_dst_day() {
        // 2026-11-01 is 25 hours long in Los Angeles.
        let ts = t("2026-11-01T20:00:00Z");
        let e = effects(
            &throttle(FailureClass::Daily, |_| {}),
            ts,
            ts,
            None,
            Tier::Free,
            Duration::seconds(1),
        );
        let (cond, until, ..) = e.group.unwrap();
        assert_eq!(cond, GroupCondition::Exhausted);
        assert_eq!(until, Some(t("2026-11-02T08:00:00Z")));
        assert!(e.keys_exhausted);
    }

    #[test]
    fn cooldown_floor_and_stale_cooldown() {
        let ts = t("2026-12-03T12:00:00Z");
        let th = throttle(FailureClass::Cooldown, |c| c.retry_after_ms = Some(0));
        let e = effects(&th, ts, ts, None, Tier::Free, Duration::seconds(1));
        assert_eq!(e.group.unwrap().1, Some(ts + Duration::seconds(1)));
        let e = effects(
            &th,
            ts,
            ts + Duration::seconds(10),
            None,
            Tier::Free,
            Duration::seconds(1),
        );
        assert!(
            e.group.is_none(),
            "a cooldown that already ended changes nothing"
        );
    }

    #[test]
    fn leaked_key_is_security_alert() {
        let th = throttle(FailureClass::KeyDead, |c| {
            c.reason = "API key was reported as leaked".into()
        });
        let now = Utc::now();
        let e = effects(&th, now, now, None, Tier::Free, Duration::seconds(1));
        assert!(e.disable_key.is_some());
        assert_eq!(e.alerts[0].severity, Severity::Security);
        assert_eq!(e.alerts[0].code, "key_leaked");
    }

    #[test]
    fn learned_limit_and_tier() {
        let th = throttle(FailureClass::Cooldown, |c| {
            c.limit = Some(5);
            c.dimension = Some(Dimension::RequestsPerMinute);
            c.quota_id = Some("GenerateRequestsPerMinutePerProjectPerModel-FreeTier".into());
        });
        let now = Utc::now();
        let l = Limits {
            rpm: Some(10),
            ..Default::default()
        };
        let e = effects(&th, now, now, Some(l), Tier::Paid, Duration::seconds(1));
        assert_eq!(e.limits.unwrap().rpm, Some(5));
        assert_eq!(e.tier, Some(Tier::Free));
        let codes: Vec<&str> = e.alerts.iter().map(|a| a.code).collect();
        assert_eq!(codes, vec!["limit_corrected", "tier_corrected"]);
        let e = effects(
            &th,
            now,
            now,
            Some(Limits {
                rpm: Some(3),
                ..Default::default()
            }),
            Tier::Free,
            Duration::seconds(1),
        );
        assert!(e.limits.is_none() && e.tier.is_none());
    }

    #[test]
    fn transient_changes_nothing() {
        let now = Utc::now();
        let e = effects(
            &throttle(FailureClass::Transient, |_| {}),
            now,
            now,
            None,
            Tier::Free,
            Duration::seconds(1),
        );
        assert_eq!(e, Effects::default());
    }
}
