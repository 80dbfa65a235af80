//! Ingest: idempotent by event id, acknowledged after commit, watermark per agent.

use crate::support::*;
use gemfleet_protocol::{Ack, KeyName, ModelName, Payload, ProjectId, RequestType, Tokens, Usage};
use std::time::Duration;
use uuid::Uuid;

pub fn usage(key: &str, prompt: u64) -> Payload {
    Payload::Usage(Usage {
        claim_id: Uuid::now_v7(),
        grant_id: Uuid::now_v7(),
        key: KeyName::parse(key).unwrap(),
        project: ProjectId::parse("p1").unwrap(),
        model: ModelName::parse(MODEL).unwrap(),
        task_id: None,
        request_type: RequestType::Stream,
        http_status: 200,
        tokens: Tokens {
            prompt,
            candidates: 5,
            total: prompt + 5,
            ..Default::default()
        },
        complete: true,
        latency_ms: 12,
    })
}

/// Sends an online status and waits for the recorder's watermark: proves it is subscribed.
pub async fn handshake(a: &mut TestAgent) -> u64 {
    a.online(None).await;
    let (_, env) = a
        .next("/ack", Duration::from_secs(10), |p| {
            matches!(p, Payload::Ack(_))
        })
        .await
        .expect("the recorder answers an online status with the watermark");
    match env.payload {
        Payload::Ack(Ack { watermark }) => watermark,
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_stored_once_and_the_watermark_follows() {
    let env = env().await;
    env.seed("p1", "rpm=100", &["k1"]).await;
    let rec = env.start().await;
    let mut a = TestAgent::connect(&env.broker, "edge-1", &[]).await;
    assert_eq!(handshake(&mut a).await, 0);
    for i in 0..5 {
        let e = a.send(usage("k1", 100 + i)).await;
        // The same envelope again, as an outbox replay would send it.
        let topic =
            gemfleet_protocol::Topic::AgentEvent(a.id.clone(), gemfleet_protocol::EventKind::Usage);
        a.publish_raw(&topic.to_string(), e.encode().unwrap()).await;
    }
    let (_, ack) = a
        .next("/ack", Duration::from_secs(10), |p| {
            matches!(p, Payload::Ack(Ack { watermark: 5 }))
        })
        .await
        .expect("watermark 5");
    assert!(matches!(ack.payload, Payload::Ack(_)));
    assert_eq!(
        env.count("SELECT count(*) FROM events WHERE kind = 'usage'")
            .await,
        5
    );
    assert_eq!(env.count("SELECT count(*) FROM usage_log").await, 5);
    assert_eq!(
        env.count("SELECT daily_request_count FROM api_keys WHERE key_name = 'k1'")
            .await,
        5
    );
    assert_eq!(
        env.count("SELECT daily_token_total FROM api_keys WHERE key_name = 'k1'")
            .await,
        (100..105).map(|p| p + 5).sum::<i64>()
    );

    // A gap (seq 6 missing) holds the watermark; the agent's outbox floor moves it on.
    a.seq += 1;
    a.send(usage("k1", 1)).await; // seq 7
    env.wait_count("SELECT count(*) FROM usage_log", 6, Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        env.count("SELECT watermark FROM agents WHERE agent_id = 'edge-1'")
            .await,
        5
    );
    a.online(Some(7)).await;
    a.next("/ack", Duration::from_secs(10), |p| {
        matches!(p, Payload::Ack(Ack { watermark: 7 }))
    })
    .await
    .expect("floor 7 lets the watermark pass the gap");
    rec.shutdown().await.unwrap();
}

/// The recorder is stopped while its batch waits on the database (before the commit), so
/// nothing it received was acknowledged; a new recorder with the same session gets every
/// message again and stores each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorder_killed_before_commit_loses_nothing() {
    let env = env().await;
    env.seed("p1", "rpm=100", &["k1"]).await;
    let rec = env.start().await;
    let mut a = TestAgent::connect(&env.broker, "edge-1", &[]).await;
    handshake(&mut a).await;

    let mut locker = env.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *locker)
        .await
        .unwrap();
    for i in 0..10 {
        a.send(usage("k1", i)).await;
    }
    // Received and blocked inside the transaction.
    tokio::time::sleep(Duration::from_millis(700)).await;
    rec.abort();
    tokio::time::sleep(Duration::from_millis(200)).await;
    locker.rollback().await.unwrap();
    assert_eq!(
        env.count("SELECT count(*) FROM usage_log").await,
        0,
        "nothing was committed"
    );

    let rec2 = env.start().await;
    let n = env
        .wait_count(
            "SELECT count(*) FROM usage_log",
            10,
            Duration::from_secs(15),
        )
        .await;
    assert_eq!(n, 10, "every event redelivered and stored");
    a.next("/ack", Duration::from_secs(10), |p| {
        matches!(p, Payload::Ack(Ack { watermark: 10 }))
    })
    .await
    .expect("watermark 10 after the restart");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        env.count("SELECT count(*) FROM events WHERE kind = 'usage'")
            .await,
        10
    );
    rec2.shutdown().await.unwrap();
}
