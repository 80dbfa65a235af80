//! Malformed and hostile input is dead-lettered, counted and alerted; serving goes on.

use crate::ingest::handshake;
use crate::support::*;
use gemfleet_protocol::{AgentId, Envelope, Payload, Release};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_dead_lettered_and_the_recorder_keeps_serving() {
    let env = env().await;
    env.seed("p1", "rpm=100", &["k1"]).await;
    let rec = env.start().await;
    let mut a = TestAgent::connect(&env.broker, "edge-1", &[]).await;
    handshake(&mut a).await;
    let claim_topic = "gemfleet/v1/agents/edge-1/events/claim";
    let release = |agent: &str| {
        Envelope::new(
            AgentId::parse(agent).unwrap(),
            Some(99),
            Payload::Release(Release {
                claim_id: uuid::Uuid::now_v7(),
                grant_id: None,
                reason: "x".into(),
            }),
        )
        .encode()
        .unwrap()
    };
    let valid = String::from_utf8(
        Envelope::new(
            AgentId::parse("edge-1").unwrap(),
            Some(98),
            Payload::Claim(claim(1, 0)),
        )
        .encode()
        .unwrap(),
    )
    .unwrap();
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        (claim_topic, b"not json at all".to_vec()),
        (claim_topic, br#"{"v":2,"id":"x"}"#.to_vec()),
        (
            claim_topic,
            br#"{"v":1,"secret":"AIzaSy-LEAKED-9876543210", "oops""#.to_vec(),
        ),
        (
            "gemfleet/v1/agents/edge-1/events/release",
            release("edge-2"),
        ),
        ("gemfleet/v1/agents/edge-1/events/usage", release("edge-1")),
        (claim_topic, vec![b'{'; 300 * 1024]),
        (
            claim_topic,
            valid.replace("gemini-2.5-flash", "a/#").into_bytes(),
        ),
        (
            claim_topic,
            valid.replace("\"stream\"", "\"\\u0000\"").into_bytes(),
        ),
        (claim_topic, vec![0xff, 0xfe, 0x00, 0x01]),
    ];
    let n = hostile.len() as i64;
    for (topic, bytes) in hostile {
        a.publish_raw(topic, bytes).await;
    }
    assert_eq!(
        env.wait_count(
            "SELECT count(*) FROM dead_letters",
            n,
            Duration::from_secs(10)
        )
        .await,
        n
    );
    let reasons: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT reason FROM dead_letters ORDER BY 1")
            .fetch_all(&env.db.pool)
            .await
            .unwrap();
    for r in [
        "not_json",
        "unsupported_version",
        "wrong_agent",
        "kind_mismatch",
        "too_large",
        "invalid",
    ] {
        assert!(
            reasons.iter().any(|x| x == r),
            "{r} missing from {reasons:?}"
        );
    }
    assert_eq!(
        env.count("SELECT count(*) FROM dead_letters WHERE excerpt LIKE '%LEAKED%'")
            .await,
        0
    );
    // Rate-limited: one alert for the burst.
    assert_eq!(
        env.count("SELECT count(*) FROM alerts WHERE code = 'dead_letter'")
            .await,
        1
    );

    // Well-formed events the database cannot hold (a task's request total past BIGINT) in a
    // batch with good ones: the good ones are stored, the refused one dead-lettered, and
    // ingest goes on.
    let task = |requests: u64| {
        Payload::Task(gemfleet_protocol::TaskEvent {
            task_id: gemfleet_protocol::TaskId::parse("t-big").unwrap(),
            status: gemfleet_protocol::TaskStatus::Succeeded,
            session_id: None,
            requests,
            input_tokens: 0,
            output_tokens: 0,
            total_tokens: 0,
            duration_ms: 1,
            exit_code: Some(0),
        })
    };
    a.send(task(u64::MAX)).await;
    a.send(crate::ingest::usage("k1", 1)).await;
    a.send(task(u64::MAX)).await;
    a.send(crate::ingest::usage("k1", 2)).await;
    assert_eq!(
        env.wait_count("SELECT count(*) FROM usage_log", 2, Duration::from_secs(10))
            .await,
        2
    );
    assert_eq!(
        env.wait_count(
            "SELECT count(*) FROM dead_letters WHERE reason = 'database_rejected'",
            1,
            Duration::from_secs(10)
        )
        .await,
        1
    );
    assert_eq!(
        env.count("SELECT count(*) FROM tasks WHERE id = 't-big'")
            .await,
        1
    );

    // Still serving.
    let c = claim(1, 0);
    a.send(Payload::Claim(c.clone())).await;
    a.next("/inbox", Duration::from_secs(10), |p| {
        matches!(p, Payload::Grant(_))
    })
    .await
    .expect("still granting");
    // Another agent naming that claim id gets neither the grant nor a second one.
    let mut b = TestAgent::connect(&env.broker, "edge-2", &[]).await;
    b.send(Payload::Claim(c)).await;
    assert!(
        b.next("/inbox", Duration::from_secs(1), |_| true)
            .await
            .is_none()
    );
    assert_eq!(
        env.count("SELECT count(*) FROM claims WHERE state = 'granted'")
            .await,
        1
    );

    let body = reqwest::get(format!("http://{}/metrics", rec.http_addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("gemfleet_recorder_dead_letters_total"),
        "{body}"
    );
    let health = reqwest::get(format!("http://{}/healthz", rec.http_addr()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    rec.shutdown().await.unwrap();
}
