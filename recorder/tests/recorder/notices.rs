//! Throttles → retained key and quota-group states, alerts, and the daily reset, on the
//! injected clock of a DST day.

use crate::ingest::handshake;
use crate::support::*;
use chrono::{DateTime, Utc};
use gemfleet_gemini::{Classification, Dimension, FailureClass, Scope};
use gemfleet_protocol::{
    GroupCondition, KeyCondition, KeyName, ModelName, Payload, ProjectId, Throttle, filter,
};
use gemfleet_recorder::ManualClock;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

pub fn throttle(key: &str, class: FailureClass, reason: &str) -> Payload {
    Payload::Throttle(Throttle {
        claim_id: Uuid::now_v7(),
        grant_id: Uuid::now_v7(),
        key: KeyName::parse(key).unwrap(),
        project: ProjectId::parse("p1").unwrap(),
        model: ModelName::parse(MODEL).unwrap(),
        task_id: None,
        http_status: 429,
        classification: Classification {
            class,
            scope: Scope::ProjectModel,
            dimension: (class == FailureClass::Daily).then_some(Dimension::RequestsPerDay),
            retry_after_ms: None,
            until: None,
            limit: None,
            tier: None,
            in_stream: false,
            reason: reason.into(),
            quota_id: None,
        },
        absorbed: false,
    })
}

/// 2026-11-01 is the day Los Angeles leaves daylight time (a 25-hour day): a `daily` throttle
/// at 12:00 PST must exhaust the group until 2026-11-02T08:00Z (midnight PST), not 07:00Z.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_and_key_dead_throttles_publish_retained_states_on_a_dst_day() {
    let env = env().await;
    env.seed("p1", "rpm=100", &["k1", "k2"]).await;
    let clock = ManualClock::starting_at(t("2026-11-01T20:00:00Z"));
    let rec = env.start_with_clock(Arc::new(clock.clone())).await;
    let mut a = TestAgent::connect(&env.broker, "edge-1", &[filter::alerts()]).await;
    handshake(&mut a).await;
    let now = gemfleet_recorder::Clock::now(&clock);
    a.send_at(
        throttle("k1", FailureClass::Daily, "GenerateRequestsPerDay exceeded"),
        now,
    )
    .await;
    a.send_at(
        throttle("k2", FailureClass::KeyDead, "API key expired"),
        now,
    )
    .await;
    let (_, alert) = a
        .next(
            "/alerts/critical",
            Duration::from_secs(10),
            |p| matches!(p, Payload::Alert(al) if al.code == "key_dead"),
        )
        .await
        .expect("key_dead alert published");
    let Payload::Alert(alert) = alert.payload else {
        unreachable!()
    };
    assert_eq!(alert.key.as_ref().map(|k| k.as_str()), Some("k2"));
    env.wait_count("SELECT count(*) FROM throttles", 2, Duration::from_secs(5))
        .await;

    // A subscriber arriving later sees both retained states.
    let mut late = TestAgent::connect(
        &env.broker,
        "late-1",
        &[filter::quota_states(), filter::key_states()],
    )
    .await;
    let (_, q) = late
        .next(
            "/state",
            Duration::from_secs(10),
            |p| matches!(p, Payload::QuotaState(q) if q.state == GroupCondition::Exhausted),
        )
        .await
        .expect("retained exhausted quota state");
    let Payload::QuotaState(q) = q.payload else {
        unreachable!()
    };
    assert_eq!(
        q.until,
        Some(t("2026-11-02T08:00:00Z")),
        "next midnight in Los Angeles (PST)"
    );
    assert_eq!(q.dimension, Some(Dimension::RequestsPerDay));
    let (_, k) = late
        .next(
            "/keys/k2/state",
            Duration::from_secs(10),
            |p| matches!(p, Payload::KeyState(k) if k.state == KeyCondition::Disabled),
        )
        .await
        .expect("retained disabled key state");
    let Payload::KeyState(k) = k.payload else {
        unreachable!()
    };
    assert_eq!(k.reason.as_deref(), Some("API key expired"));
    assert_eq!(
        env.count("SELECT count(*) FROM api_keys WHERE key_name = 'k2' AND state = 'disabled'")
            .await,
        1
    );
    assert_eq!(
        env.count("SELECT count(*) FROM api_keys WHERE quota_exhausted")
            .await,
        2
    );
    assert_eq!(
        env.count("SELECT count(*) FROM alerts WHERE code = 'key_dead'")
            .await,
        1
    );

    // A claim now is denied as exhausted, with the reset time.
    a.send_at(
        Payload::Claim(claim(1, 0)),
        gemfleet_recorder::Clock::now(&clock),
    )
    .await;
    let (_, d) = a
        .next("/inbox", Duration::from_secs(10), |p| {
            matches!(p, Payload::Denial(_))
        })
        .await
        .expect("denial");
    let Payload::Denial(d) = d.payload else {
        unreachable!()
    };
    assert_eq!(d.retry_at, Some(t("2026-11-02T08:00:00Z")));

    // Pacific midnight: the state clears (retained `open`) and the daily counters reset.
    clock.set(t("2026-11-02T08:00:00.500Z"));
    late.next(
        "/state",
        Duration::from_secs(10),
        |p| matches!(p, Payload::QuotaState(q) if q.state == GroupCondition::Open),
    )
    .await
    .expect("open again after midnight");
    let n = env
        .wait_count(
            "SELECT count(*) FROM api_keys WHERE quota_exhausted",
            0,
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(n, 0);
    assert_eq!(
        env.count("SELECT count(*) FROM recorder_state WHERE name = 'last_reset_day' AND value = '\"2026-11-02\"'").await,
        1
    );
    rec.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooldown_cools_the_group_and_reopens_it() {
    let env = env().await;
    env.seed("p1", "rpm=100", &["k1"]).await;
    let rec = env.start().await;
    let mut a = TestAgent::connect(&env.broker, "edge-1", &[filter::quota_states()]).await;
    handshake(&mut a).await;
    let Payload::Throttle(mut th) = throttle("k1", FailureClass::Cooldown, "per-minute quota")
    else {
        unreachable!()
    };
    th.classification.retry_after_ms = Some(1500);
    th.classification.dimension = Some(Dimension::RequestsPerMinute);
    th.classification.limit = Some(60);
    a.send(Payload::Throttle(th)).await;
    let (_, q) = a
        .next(
            "/state",
            Duration::from_secs(5),
            |p| matches!(p, Payload::QuotaState(q) if q.state == GroupCondition::Cooling),
        )
        .await
        .expect("cooling published");
    let Payload::QuotaState(q) = q.payload else {
        unreachable!()
    };
    assert!(q.until.is_some());
    a.next(
        "/state",
        Duration::from_secs(5),
        |p| matches!(p, Payload::QuotaState(q) if q.state == GroupCondition::Open),
    )
    .await
    .expect("open again when the cooldown ends");
    // The 429 stated a lower limit than configured: learned, with an alert.
    assert_eq!(
        env.count("SELECT rpm FROM model_limits WHERE project_id = 'p1'")
            .await,
        60
    );
    assert_eq!(
        env.count("SELECT count(*) FROM alerts WHERE code = 'limit_corrected'")
            .await,
        1
    );
    assert_eq!(
        env.count("SELECT configured_rpm FROM model_limits WHERE project_id = 'p1'")
            .await,
        100
    );
    rec.shutdown().await.unwrap();
}
