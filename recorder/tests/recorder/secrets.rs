//! No plaintext secret anywhere in the database, after keys were added, granted and used.

use crate::ingest::{handshake, usage};
use crate::support::*;
use gemfleet_protocol::{KeyName, Payload, ProjectId, Secret};
use gemfleet_recorder::admin;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_holds_no_plaintext_secret() {
    let env = env().await;
    env.seed("p1", "rpm=100", &[]).await;
    let canary = "AIzaSyCANARY-plaintext-0f9e8d7c6b5a";
    admin::add_key(
        &env.db.pool,
        &env.master,
        &KeyName::parse("k1").unwrap(),
        &ProjectId::parse("p1").unwrap(),
        &Secret::new(canary),
    )
    .await
    .unwrap();
    let rec = env.start().await;
    let mut a = TestAgent::connect(&env.broker, "edge-1", &[]).await;
    handshake(&mut a).await;
    a.send(Payload::Claim(claim(1, 0))).await;
    let (_, g) = a
        .next("/inbox", Duration::from_secs(10), |p| {
            matches!(p, Payload::Grant(_))
        })
        .await
        .expect("grant");
    let Payload::Grant(g) = g.payload else {
        unreachable!()
    };
    assert_eq!(
        g.secret.expose(),
        canary,
        "the grant carries the decrypted secret"
    );
    a.send(usage("k1", 10)).await;
    // A hostile message quoting the secret is dead-lettered with it redacted.
    a.publish_raw(
        "gemfleet/v1/agents/edge-1/events/usage",
        format!(r#"{{"v":1,"body":{{"secret":"{canary}"}}"#).into_bytes(),
    )
    .await;
    env.wait_count(
        "SELECT count(*) FROM dead_letters",
        1,
        Duration::from_secs(10),
    )
    .await;
    env.wait_count("SELECT count(*) FROM usage_log", 1, Duration::from_secs(10))
        .await;
    rec.shutdown().await.unwrap();

    let dump = std::process::Command::new("pg_dump")
        .args(["--data-only", "--dbname", &env.db.url])
        .output()
        .expect("pg_dump runs");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert!(dump.stdout.len() > 1000);
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(text.contains("k1"), "the dump covers api_keys");
    assert!(
        !text.contains(canary),
        "plaintext secret found in the database dump"
    );
    assert!(
        !text.contains("CANARY"),
        "part of the secret found in the database dump"
    );
}
