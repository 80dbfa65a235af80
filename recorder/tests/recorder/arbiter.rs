//! The arbiter through the whole stack: compressed minute (1 s), real claims and grants.

use crate::ingest::handshake;
use crate::support::*;
use chrono::{DateTime, Duration as CDuration, Utc};
use gemfleet_protocol::{DenialReason, Payload};
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

async fn grant_times(env: &Env) -> Vec<(Uuid, DateTime<Utc>)> {
    sqlx::query_as(
        "SELECT claim_id, granted_at FROM claims WHERE state = 'granted' ORDER BY granted_at",
    )
    .fetch_all(&env.db.pool)
    .await
    .unwrap()
}

/// 20 claims at once against a group allowing `per_minute` of them: exactly that many at once,
/// the rest in FIFO order as the window slides, none before the window allows it.
async fn fifo_window(limits: &str, tokens: u64) {
    let env = env().await;
    env.seed("p1", limits, &["k1", "k2"]).await;
    let rec = env.start().await;
    let mut a = TestAgent::connect(&env.broker, "edge-1", &[]).await;
    handshake(&mut a).await;
    let mut order = Vec::new();
    for _ in 0..20 {
        let c = claim(tokens, 30_000);
        order.push(c.claim_id);
        a.send(Payload::Claim(c)).await;
    }
    let mut got = HashMap::new();
    while got.len() < 20 {
        let (_, env) = a
            .next("/inbox", Duration::from_secs(15), |p| {
                matches!(p, Payload::Grant(_) | Payload::Denial(_))
            })
            .await
            .expect("all 20 claims answered");
        match env.payload {
            Payload::Grant(g) => {
                got.insert(g.claim_id, g);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let times = grant_times(&env).await;
    assert_eq!(times.len(), 20);
    let granted_order: Vec<Uuid> = times.iter().map(|t| t.0).collect();
    assert_eq!(granted_order, order, "FIFO");
    let first = times[0].1;
    let at_once = times
        .iter()
        .filter(|t| t.1 < first + CDuration::milliseconds(500))
        .count();
    assert_eq!(at_once, 5, "exactly 5 at once");
    for i in 5..20 {
        let gap = times[i].1 - times[i - 5].1;
        assert!(
            gap >= CDuration::seconds(1),
            "grant {i} came {gap} after grant {}: early",
            i - 5
        );
    }
    // Both keys were used (least recently used first).
    let keys: std::collections::HashSet<String> = got.values().map(|g| g.key.to_string()).collect();
    assert_eq!(keys.len(), 2);
    rec.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_claims_against_five_requests_per_minute() {
    fifo_window("rpm=5", 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_claims_against_an_input_token_limit() {
    fifo_window("tpm=500", 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_recorder_never_over_grants() {
    let mut env = env().await;
    env.settings.minute_seconds = 4.0;
    env.seed("p1", "rpm=3", &["k1"]).await;
    let rec = env.start().await;
    let mut a = TestAgent::connect(&env.broker, "edge-1", &[]).await;
    handshake(&mut a).await;
    for _ in 0..3 {
        a.send(Payload::Claim(claim(1, 0))).await;
        a.next("/inbox", Duration::from_secs(10), |p| {
            matches!(p, Payload::Grant(_))
        })
        .await
        .expect("grant");
    }
    rec.shutdown().await.unwrap();

    let rec = env.start().await;
    a.send(Payload::Claim(claim(1, 0))).await;
    let (_, d) = a
        .next("/inbox", Duration::from_secs(10), |p| {
            matches!(p, Payload::Grant(_) | Payload::Denial(_))
        })
        .await
        .expect("answer");
    match d.payload {
        Payload::Denial(d) => {
            assert_eq!(d.reason, DenialReason::WaitTooLong);
            assert!(d.retry_at.is_some(), "a denial says when room frees");
        }
        other => panic!("over-grant after restart: {other:?}"),
    }
    // A claim that may wait is granted when the window slides, not before.
    a.send(Payload::Claim(claim(1, 20_000))).await;
    a.next("/inbox", Duration::from_secs(15), |p| {
        matches!(p, Payload::Grant(_))
    })
    .await
    .expect("grant");
    let times = grant_times(&env).await;
    assert_eq!(times.len(), 4);
    assert!(times[3].1 - times[0].1 >= CDuration::seconds(4));
    rec.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_without_limits_is_denied_with_a_clear_message() {
    let env = env().await;
    env.seed("p1", "rpm=3", &["k1"]).await;
    let rec = env.start().await;
    let mut a = TestAgent::connect(&env.broker, "edge-1", &[]).await;
    handshake(&mut a).await;
    let mut c = claim(1, 0);
    c.model = gemfleet_protocol::ModelName::parse("gemini-9-ultra").unwrap();
    a.send(Payload::Claim(c)).await;
    let (_, d) = a
        .next("/inbox", Duration::from_secs(10), |p| {
            matches!(p, Payload::Denial(_))
        })
        .await
        .expect("denial");
    let Payload::Denial(d) = d.payload else {
        unreachable!()
    };
    assert_eq!(d.reason, DenialReason::NoKey);
    assert!(d.message.contains("gemini-9-ultra"), "{}", d.message);
    rec.shutdown().await.unwrap();
}

/// The agent's last will closes its open grants as abandoned (they still count) and raises
/// an alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_will_closes_open_grants_as_abandoned() {
    let env = env().await;
    env.seed("p1", "rpm=100", &["k1"]).await;
    let rec = env.start().await;
    let mut a = TestAgent::connect(&env.broker, "edge-1", &[]).await;
    handshake(&mut a).await;
    for _ in 0..2 {
        a.send(Payload::Claim(claim(1, 0))).await;
        a.next("/inbox", Duration::from_secs(10), |p| {
            matches!(p, Payload::Grant(_))
        })
        .await
        .expect("grant");
    }
    // The socket drops without a DISCONNECT: the broker publishes the will.
    a.task.abort();
    drop(a);
    let n = env
        .wait_count(
            "SELECT count(*) FROM claims WHERE outcome = 'abandoned'",
            2,
            Duration::from_secs(15),
        )
        .await;
    assert_eq!(n, 2);
    assert_eq!(
        env.wait_count(
            "SELECT count(*) FROM alerts WHERE code = 'agent_offline_with_grants'",
            1,
            Duration::from_secs(5)
        )
        .await,
        1
    );
    assert_eq!(
        env.count("SELECT count(*) FROM agents WHERE agent_id = 'edge-1' AND state = 'offline'")
            .await,
        1
    );
    rec.shutdown().await.unwrap();
}
