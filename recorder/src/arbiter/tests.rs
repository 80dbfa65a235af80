use super::*;
use proptest::prelude::*;

fn t0() -> DateTime<Utc> {
    "2026-12-03T12:00:00Z".parse().unwrap()
}

fn settings() -> ArbiterSettings {
    ArbiterSettings {
        minute: Duration::seconds(60),
        lease: Duration::seconds(300),
        stale_grace: Duration::seconds(5),
    }
}

fn gid(p: &str, m: &str) -> GroupId {
    GroupId {
        project: ProjectId::parse(p).unwrap(),
        model: ModelName::parse(m).unwrap(),
    }
}

fn arbiter(groups: &[(&str, Limits)], keys: &[(&str, &str)]) -> Arbiter {
    let mut a = Arbiter::new(settings());
    a.configure(
        FleetConfig {
            groups: groups
                .iter()
                .map(|(p, l)| GroupConfig {
                    group: gid(p, "m1"),
                    limits: *l,
                    condition: GroupCondition::Open,
                    until: None,
                })
                .collect(),
            keys: keys
                .iter()
                .map(|(k, p)| KeyConfig {
                    key: KeyName::parse(*k).unwrap(),
                    project: ProjectId::parse(*p).unwrap(),
                    active: true,
                    last_used: None,
                })
                .collect(),
            unusable_projects: vec![],
        },
        t0(),
    );
    a
}

fn claim(tokens: u64, at: DateTime<Utc>, wait_s: i64) -> PendingClaim {
    PendingClaim {
        claim_id: Uuid::now_v7(),
        agent: AgentId::parse("a1").unwrap(),
        model: ModelName::parse("m1").unwrap(),
        est_input_tokens: tokens,
        task_id: None,
        avoid_keys: vec![],
        request_type: RequestType::Stream,
        claimed_at: at,
        deadline: at + Duration::seconds(wait_s),
        received_at: at,
    }
}

fn rpm(n: u64) -> Limits {
    Limits {
        rpm: Some(n),
        ..Default::default()
    }
}

fn grants(out: &[Decision]) -> Vec<&GrantMade> {
    out.iter()
        .filter_map(|d| match d {
            Decision::Granted(g) => Some(g),
            _ => None,
        })
        .collect()
}

#[test]
fn five_rpm_grants_five_then_fifo_as_window_slides() {
    let mut a = arbiter(&[("p1", rpm(5))], &[("k1", "p1")]);
    let mut out = vec![];
    let claims: Vec<PendingClaim> = (0..20)
        .map(|i| claim(10, t0() + Duration::milliseconds(i), 600))
        .collect();
    for c in &claims {
        a.claim(c.clone(), t0(), &mut out);
    }
    assert_eq!(grants(&out).len(), 5);
    assert_eq!(a.queued(), 15);
    // Nothing frees before the window slides.
    let mut out2 = vec![];
    a.tick(t0() + Duration::seconds(59), &mut out2);
    assert!(grants(&out2).is_empty());
    assert_eq!(
        a.next_wake(t0() + Duration::seconds(59)),
        t0() + Duration::seconds(60)
    );
    let mut out3 = vec![];
    a.tick(t0() + Duration::seconds(60), &mut out3);
    let g = grants(&out3);
    assert_eq!(g.len(), 5);
    let ids: Vec<Uuid> = g.iter().map(|g| g.claim.claim_id).collect();
    let want: Vec<Uuid> = claims[5..10].iter().map(|c| c.claim_id).collect();
    assert_eq!(ids, want, "FIFO order");
}

#[test]
fn no_quota_model_denied_no_key_with_message() {
    let mut a = arbiter(&[("p1", rpm(5))], &[("k1", "p1")]);
    let mut c = claim(1, t0(), 10);
    c.model = ModelName::parse("other").unwrap();
    let mut out = vec![];
    a.claim(c, t0(), &mut out);
    match &out[0] {
        Decision::Denied {
            reason: DenialReason::NoKey,
            message,
            ..
        } => {
            assert!(message.contains("no project has limits configured for model other"))
        }
        d => panic!("{d:?}"),
    }
}

#[test]
fn wait_too_long_denied_with_retry_at() {
    let mut a = arbiter(&[("p1", rpm(1))], &[("k1", "p1")]);
    let mut out = vec![];
    a.claim(claim(1, t0(), 0), t0(), &mut out);
    a.claim(claim(1, t0(), 10), t0(), &mut out);
    match &out[1] {
        Decision::Denied {
            reason: DenialReason::WaitTooLong,
            retry_at,
            ..
        } => {
            assert_eq!(*retry_at, Some(t0() + Duration::seconds(60)))
        }
        d => panic!("{d:?}"),
    }
}

#[test]
fn stale_claim_is_withdrawn_never_granted() {
    let mut a = arbiter(&[("p1", rpm(5))], &[("k1", "p1")]);
    let mut out = vec![];
    a.claim(claim(1, t0() - Duration::seconds(100), 10), t0(), &mut out);
    assert!(matches!(out[0], Decision::Withdrawn { .. }));
}

#[test]
fn spreads_across_projects_then_lru_key() {
    let mut a = arbiter(
        &[("p1", rpm(10)), ("p2", rpm(10))],
        &[("k1", "p1"), ("k2", "p1"), ("k3", "p2")],
    );
    let mut out = vec![];
    for i in 0..4 {
        a.claim(
            claim(1, t0(), 0),
            t0() + Duration::milliseconds(i),
            &mut out,
        );
    }
    let keys: Vec<&str> = grants(&out).iter().map(|g| g.key.as_str()).collect();
    // p1 first (ties by name), then p2 (more headroom), then p1's other key, then p2 again.
    assert_eq!(keys, vec!["k1", "k3", "k2", "k3"]);
}

#[test]
fn avoid_keys_and_cold_groups_and_disabled_keys() {
    let mut a = arbiter(
        &[("p1", rpm(10)), ("p2", rpm(10))],
        &[("k1", "p1"), ("k3", "p2")],
    );
    let mut out = vec![];
    let mut c = claim(1, t0(), 0);
    c.avoid_keys = vec![KeyName::parse("k1").unwrap()];
    a.claim(c, t0(), &mut out);
    assert_eq!(grants(&out)[0].key.as_str(), "k3");
    a.set_condition(
        &gid("p2", "m1"),
        GroupCondition::Cooling,
        Some(t0() + Duration::seconds(5)),
    );
    a.set_key_active(&KeyName::parse("k1").unwrap(), false);
    let mut out = vec![];
    a.claim(claim(1, t0(), 0), t0(), &mut out);
    match &out[0] {
        Decision::Denied { retry_at, .. } => {
            assert_eq!(*retry_at, Some(t0() + Duration::seconds(5)))
        }
        d => panic!("{d:?}"),
    }
    // A claim that can wait past the cooldown is queued and granted when it ends.
    let mut out = vec![];
    a.claim(claim(1, t0(), 10), t0(), &mut out);
    assert!(matches!(out[0], Decision::Queued(_)));
    let mut out = vec![];
    a.tick(t0() + Duration::seconds(5), &mut out);
    assert!(
        out.iter()
            .any(|d| matches!(d, Decision::GroupChanged { .. }))
    );
    assert_eq!(grants(&out)[0].key.as_str(), "k3");
}

#[test]
fn release_returns_reservation_and_lease_abandons() {
    let mut a = arbiter(&[("p1", rpm(1))], &[("k1", "p1")]);
    let mut out = vec![];
    let c = claim(1, t0(), 0);
    a.claim(c.clone(), t0(), &mut out);
    a.release(c.claim_id, t0(), &mut out);
    a.claim(claim(1, t0(), 0), t0(), &mut out);
    assert_eq!(grants(&out).len(), 2);
    let mut out = vec![];
    a.tick(t0() + Duration::seconds(301), &mut out);
    assert!(out.iter().any(|d| matches!(
        d,
        Decision::Closed {
            outcome: GrantOutcome::Abandoned,
            ..
        }
    )));
}

#[test]
fn usage_corrects_tokens() {
    let limits = Limits {
        tpm: Some(100),
        ..Default::default()
    };
    let mut a = arbiter(&[("p1", limits)], &[("k1", "p1")]);
    let mut out = vec![];
    let c = claim(90, t0(), 0);
    a.claim(c.clone(), t0(), &mut out);
    a.claim(claim(50, t0(), 0), t0(), &mut out);
    assert!(matches!(out[1], Decision::Denied { .. }));
    a.used(c.claim_id, 20, t0(), &mut out);
    a.claim(claim(50, t0(), 0), t0(), &mut out);
    assert_eq!(grants(&out).len(), 2);
}

#[test]
fn offline_agent_abandons_open_grants() {
    let mut a = arbiter(&[("p1", rpm(5))], &[("k1", "p1")]);
    let mut out = vec![];
    a.claim(claim(1, t0(), 0), t0(), &mut out);
    a.claim(claim(1, t0(), 0), t0(), &mut out);
    let mut out = vec![];
    assert_eq!(
        a.agent_offline(&AgentId::parse("a1").unwrap(), t0(), &mut out),
        2
    );
    assert_eq!(a.open_grants(), 0);
    // Abandoned grants still count: 3 more fit, not 5.
    let mut out = vec![];
    for _ in 0..5 {
        a.claim(claim(1, t0(), 0), t0(), &mut out);
    }
    assert_eq!(grants(&out).len(), 3);
}

#[test]
fn restore_never_over_grants() {
    let mut a = arbiter(&[("p1", rpm(3))], &[("k1", "p1")]);
    let mut out = vec![];
    for _ in 0..3 {
        a.claim(claim(1, t0(), 0), t0(), &mut out);
    }
    let stored: Vec<StoredGrant> = grants(&out)
        .iter()
        .map(|g| StoredGrant {
            claim_id: g.claim.claim_id,
            agent: g.claim.agent.clone(),
            group: gid("p1", "m1"),
            key: g.key.clone(),
            granted_at: g.granted_at,
            lease_expires: g.lease_expires,
            charged: g.charged,
            open: true,
        })
        .collect();
    let mut b = arbiter(&[("p1", rpm(3))], &[("k1", "p1")]);
    b.restore_grants(stored, t0() + Duration::seconds(1));
    let mut out = vec![];
    b.claim(
        claim(1, t0() + Duration::seconds(1), 0),
        t0() + Duration::seconds(1),
        &mut out,
    );
    assert!(matches!(out[0], Decision::Denied { .. }));
}

#[test]
fn token_too_large_is_invalid() {
    let limits = Limits {
        tpm: Some(100),
        ..Default::default()
    };
    let mut a = arbiter(&[("p1", limits)], &[("k1", "p1")]);
    let mut out = vec![];
    a.claim(claim(101, t0(), 60), t0(), &mut out);
    assert!(matches!(
        out[0],
        Decision::Denied {
            reason: DenialReason::Invalid,
            ..
        }
    ));
}

#[test]
fn zero_limit_means_no_quota() {
    let mut a = arbiter(&[("p1", rpm(0))], &[("k1", "p1")]);
    let mut out = vec![];
    a.claim(claim(1, t0(), 60), t0(), &mut out);
    assert!(matches!(
        out[0],
        Decision::Denied {
            reason: DenialReason::Exhausted,
            ..
        }
    ));
}

proptest! {
    /// Random claims, releases, usage and time steps against random limits: at no instant does
    /// any group's sliding minute or Pacific day exceed a limit, no claim is granted twice or
    /// before an earlier queued claim of its model, and no grant happens after a deadline.
    #[test]
    fn never_over_grants_fifo_no_grant_after_deadline(
        limits in proptest::collection::vec((1u64..6, 50u64..400, 3u64..40), 1..3),
        ops in proptest::collection::vec((0u8..10, 1u64..120, 0i64..4000, 0i64..90), 1..120),
    ) {
        let groups: Vec<(String, Limits)> = limits.iter().enumerate().map(|(i, (r, t, d))| {
            (format!("p{i}"), Limits { rpm: Some(*r), tpm: Some(*t), rpd: Some(*d), tpd: None })
        }).collect();
        let gl: Vec<(&str, Limits)> = groups.iter().map(|(p, l)| (p.as_str(), *l)).collect();
        let keys: Vec<(String, String)> = groups.iter().map(|(p, _)| (format!("k-{p}"), p.clone())).collect();
        let kl: Vec<(&str, &str)> = keys.iter().map(|(k, p)| (k.as_str(), p.as_str())).collect();
        let mut a = arbiter(&gl, &kl);
        let mut now = t0();
        let mut granted: Vec<(DateTime<Utc>, String, u64, Uuid)> = vec![];
        let mut seen = std::collections::HashSet::new();
        let mut order: Vec<Uuid> = vec![];
        let mut open: Vec<Uuid> = vec![];
        let mut deadlines = HashMap::new();
        for (op, tokens, step_ms, wait_s) in ops {
            let mut out = vec![];
            match op {
                0..=5 => {
                    let c = claim(tokens, now, wait_s);
                    deadlines.insert(c.claim_id, c.deadline);
                    order.push(c.claim_id);
                    a.claim(c, now, &mut out);
                }
                6 => if let Some(id) = open.pop() { a.release(id, now, &mut out) },
                7 => if let Some(id) = open.pop() {
                    let charged = granted.iter().find(|g| g.3 == id).map_or(0, |g| g.2);
                    a.used(id, charged.min(tokens), now, &mut out)
                },
                _ => {
                    now += Duration::milliseconds(step_ms * 10);
                    a.tick(now, &mut out);
                }
            }
            for d in &out {
                match d {
                    Decision::Granted(g) => {
                        prop_assert!(seen.insert(g.claim.claim_id), "granted twice");
                        prop_assert!(g.granted_at <= deadlines[&g.claim.claim_id], "granted after deadline");
                        granted.push((g.granted_at, g.project.to_string(), g.charged, g.claim.claim_id));
                        open.push(g.claim.claim_id);
                    }
                    Decision::Closed { claim_id, outcome, charged, .. } => {
                        open.retain(|id| id != claim_id);
                        if let Some(e) = granted.iter_mut().find(|e| e.3 == *claim_id) {
                            if *outcome == GrantOutcome::Released { e.2 = u64::MAX; }
                            else if let Some(c) = charged { e.2 = *c; }
                        }
                    }
                    _ => {}
                }
            }
            // FIFO: grants come out in claim order (one model).
            let gorder: Vec<Uuid> = granted.iter().map(|g| g.3).collect();
            let pos: Vec<usize> = gorder.iter().map(|id| order.iter().position(|o| o == id).unwrap()).collect();
            prop_assert!(pos.windows(2).all(|w| w[0] < w[1]), "not FIFO: {:?}", pos);
            for (p, l) in &groups {
                let live: Vec<&(DateTime<Utc>, String, u64, Uuid)> = granted.iter()
                    .filter(|g| &g.1 == p && g.2 != u64::MAX && g.0 > now - Duration::seconds(60)).collect();
                prop_assert!(live.len() as u64 <= l.rpm.unwrap());
                prop_assert!(live.iter().map(|g| g.2).sum::<u64>() <= l.tpm.unwrap());
                let day = granted.iter().filter(|g| &g.1 == p && g.2 != u64::MAX).count() as u64;
                prop_assert!(day <= l.rpd.unwrap());
            }
        }
    }
}
