//! The cold view: what the retained key and quota-group notices say is unusable, so the
//! proxy never claims (or uses) what is known to be cold. Pure: fed notices and a clock.

use chrono::{DateTime, Utc};
use gemfleet_protocol::{
    GroupCondition, KeyCondition, KeyName, KeyState, ModelName, ProjectId, QuotaState,
};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Clone)]
pub struct ColdView {
    keys: BTreeMap<KeyName, KeyState>,
    groups: BTreeMap<(ProjectId, ModelName), QuotaState>,
}

/// One cold thing, for `status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColdEntry {
    pub what: String,
    pub state: String,
    pub until: Option<DateTime<Utc>>,
    pub reason: Option<String>,
}

impl ColdView {
    pub fn apply_key(&mut self, s: KeyState) {
        self.keys.insert(s.key.clone(), s);
    }
    pub fn apply_group(&mut self, s: QuotaState) {
        self.groups.insert((s.project.clone(), s.model.clone()), s);
    }
    /// An empty retained payload clears a notice.
    pub fn clear_key(&mut self, key: &KeyName) {
        self.keys.remove(key);
    }
    pub fn clear_group(&mut self, project: &ProjectId, model: &ModelName) {
        self.groups.remove(&(project.clone(), model.clone()));
    }

    fn key_cold(s: &KeyState, now: DateTime<Utc>) -> bool {
        s.state == KeyCondition::Disabled && s.until.is_none_or(|u| u > now)
    }
    fn group_cold(s: &QuotaState, now: DateTime<Utc>) -> bool {
        match s.state {
            GroupCondition::Open => false,
            GroupCondition::NoQuota => true,
            GroupCondition::Cooling | GroupCondition::Exhausted => s.until.is_none_or(|u| u > now),
        }
    }

    /// Whether a grant of `key` (of `project`) for `model` is known to be unusable now.
    pub fn is_cold(
        &self,
        key: &KeyName,
        project: &ProjectId,
        model: &ModelName,
        now: DateTime<Utc>,
    ) -> bool {
        self.keys.get(key).is_some_and(|s| Self::key_cold(s, now))
            || self
                .groups
                .get(&(project.clone(), model.clone()))
                .is_some_and(|s| Self::group_cold(s, now))
    }

    /// Keys a claim for `model` should avoid: disabled keys, and keys whose project's group
    /// for the model is cold.
    pub fn avoid_for(&self, model: &ModelName, now: DateTime<Utc>) -> Vec<KeyName> {
        self.keys
            .values()
            .filter(|k| {
                Self::key_cold(k, now)
                    || self
                        .groups
                        .get(&(k.project.clone(), model.clone()))
                        .is_some_and(|g| Self::group_cold(g, now))
            })
            .map(|k| k.key.clone())
            .collect()
    }

    pub fn cold_keys(&self, now: DateTime<Utc>) -> Vec<ColdEntry> {
        self.keys
            .values()
            .filter(|k| Self::key_cold(k, now))
            .map(|k| ColdEntry {
                what: format!("{} ({}, project {})", k.key, k.fingerprint, k.project),
                state: "disabled".into(),
                until: k.until,
                reason: k.reason.clone(),
            })
            .collect()
    }

    pub fn cold_groups(&self, now: DateTime<Utc>) -> Vec<ColdEntry> {
        self.groups
            .values()
            .filter(|g| Self::group_cold(g, now))
            .map(|g| ColdEntry {
                what: format!("{}/{}", g.project, g.model),
                state: match g.state {
                    GroupCondition::Open => "open",
                    GroupCondition::Cooling => "cooling",
                    GroupCondition::Exhausted => "exhausted",
                    GroupCondition::NoQuota => "no_quota",
                }
                .into(),
                until: g.until,
                reason: g.reason.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn key(
        name: &str,
        project: &str,
        state: KeyCondition,
        until: Option<DateTime<Utc>>,
    ) -> KeyState {
        KeyState {
            key: KeyName::parse(name).unwrap(),
            fingerprint: "abcd1234".into(),
            project: ProjectId::parse(project).unwrap(),
            state,
            reason: Some("test".into()),
            until,
        }
    }
    fn group(
        project: &str,
        model: &str,
        state: GroupCondition,
        until: Option<DateTime<Utc>>,
    ) -> QuotaState {
        QuotaState {
            project: ProjectId::parse(project).unwrap(),
            model: ModelName::parse(model).unwrap(),
            state,
            until,
            dimension: None,
            reason: None,
        }
    }
    fn n(s: &str) -> KeyName {
        KeyName::parse(s).unwrap()
    }
    fn p(s: &str) -> ProjectId {
        ProjectId::parse(s).unwrap()
    }
    fn m(s: &str) -> ModelName {
        ModelName::parse(s).unwrap()
    }

    #[test]
    fn a_disabled_key_is_cold_until_its_end_and_an_active_one_is_not() {
        let now = Utc::now();
        let mut v = ColdView::default();
        v.apply_key(key("k1", "p1", KeyCondition::Disabled, None));
        v.apply_key(key(
            "k2",
            "p1",
            KeyCondition::Disabled,
            Some(now + Duration::seconds(5)),
        ));
        v.apply_key(key("k3", "p1", KeyCondition::Active, None));
        assert!(v.is_cold(&n("k1"), &p("p1"), &m("gemini-2.5-flash"), now));
        assert!(v.is_cold(&n("k2"), &p("p1"), &m("gemini-2.5-flash"), now));
        assert!(!v.is_cold(
            &n("k2"),
            &p("p1"),
            &m("gemini-2.5-flash"),
            now + Duration::seconds(6)
        ));
        assert!(!v.is_cold(&n("k3"), &p("p1"), &m("gemini-2.5-flash"), now));
        assert_eq!(v.cold_keys(now).len(), 2);
        v.apply_key(key("k1", "p1", KeyCondition::Active, None));
        assert!(!v.is_cold(&n("k1"), &p("p1"), &m("gemini-2.5-flash"), now));
    }

    #[test]
    fn a_cold_group_makes_its_projects_keys_avoided_for_that_model_only() {
        let now = Utc::now();
        let mut v = ColdView::default();
        v.apply_key(key("a", "p1", KeyCondition::Active, None));
        v.apply_key(key("b", "p2", KeyCondition::Active, None));
        v.apply_group(group(
            "p1",
            "gemini-2.5-pro",
            GroupCondition::Exhausted,
            Some(now + Duration::hours(3)),
        ));
        assert_eq!(v.avoid_for(&m("gemini-2.5-pro"), now), vec![n("a")]);
        assert!(v.avoid_for(&m("gemini-2.5-flash"), now).is_empty());
        assert!(v.is_cold(&n("a"), &p("p1"), &m("gemini-2.5-pro"), now));
        assert!(!v.is_cold(
            &n("a"),
            &p("p1"),
            &m("gemini-2.5-pro"),
            now + Duration::hours(4)
        ));
        assert_eq!(v.cold_groups(now).len(), 1);
    }

    #[test]
    fn no_quota_stays_cold_and_open_or_cleared_is_not() {
        let now = Utc::now();
        let mut v = ColdView::default();
        v.apply_group(group("p1", "gemini-2.5-pro", GroupCondition::NoQuota, None));
        assert!(v.is_cold(
            &n("x"),
            &p("p1"),
            &m("gemini-2.5-pro"),
            now + Duration::days(30)
        ));
        v.apply_group(group("p1", "gemini-2.5-pro", GroupCondition::Open, None));
        assert!(!v.is_cold(&n("x"), &p("p1"), &m("gemini-2.5-pro"), now));
        v.apply_group(group(
            "p1",
            "gemini-2.5-pro",
            GroupCondition::Cooling,
            Some(now + Duration::seconds(30)),
        ));
        v.clear_group(&p("p1"), &m("gemini-2.5-pro"));
        assert!(!v.is_cold(&n("x"), &p("p1"), &m("gemini-2.5-pro"), now));
    }
}
