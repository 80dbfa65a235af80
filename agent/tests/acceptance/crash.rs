//! `kill -9` of the daemon mid-run: nothing the emulator accepted is lost or counted twice.

use crate::stack::{KeySpec, Stack};
use gemfleet_protocol::TaskId;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_mid_run_then_restart_loses_and_duplicates_nothing() {
    let stack = Stack::start_with(
        30,
        2.0,
        &["proj-a"],
        &[
            KeySpec {
                name: "key-a1",
                project: "proj-a",
            },
            KeySpec {
                name: "key-a2",
                project: "proj-a",
            },
        ],
        // Slow answers, so that the kill lands while a request is in flight.
        |c| c.latency.per_token_ms = 40.0,
    )
    .await;
    let mut agent = stack.spawn_agent("edge-k", None).await;

    // A first run completes: its events are in the outbox and the recorder.
    let warm = stack
        .run("edge-k", &TaskId::parse("crash-warm").unwrap(), "Say hello")
        .await;
    assert!(
        warm.status.success(),
        "{}",
        String::from_utf8_lossy(&warm.stderr)
    );

    // A second run is killed with its daemon while the emulator is answering.
    let before = stack
        .emulator
        .ledger()
        .entries
        .iter()
        .map(|e| e.requests)
        .sum::<u64>();
    let run = {
        let task = TaskId::parse("crash-task").unwrap();
        let s = &stack;
        async move {
            s.run("edge-k", &task, "Write a long story about a lighthouse")
                .await
        }
    };
    let kill = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while stack
            .emulator
            .ledger()
            .entries
            .iter()
            .map(|e| e.requests)
            .sum::<u64>()
            == before
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the run never reached the emulator"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        agent.kill9();
    };
    let (out, ()) = tokio::join!(run, kill);
    assert!(
        !out.status.success(),
        "the run should fail when its daemon dies"
    );
    let _ = agent.child.wait().await;

    // Restart on the same data dir: the outbox replays; a new run works.
    let agent = stack.spawn_agent("edge-k", None).await;
    let after = stack
        .run(
            "edge-k",
            &TaskId::parse("crash-after").unwrap(),
            "Say hello again",
        )
        .await;
    assert!(
        after.status.success(),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
    assert!(
        agent.drained(Duration::from_secs(20)).await,
        "the outbox did not drain after the restart"
    );

    // Exactly once: no grant has two usage rows, every usage row is a granted claim, and the
    // emulator's admitted requests are exactly the fleet's used-or-abandoned grants.
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT grant_id) FROM usage_log")
            .fetch_one(&stack.db.pool)
            .await
            .unwrap();
    assert_eq!(rows, distinct, "a request was recorded twice");
    let orphans: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM usage_log u WHERE NOT EXISTS (SELECT 1 FROM claims c WHERE c.grant_id = u.grant_id AND c.state = 'granted')",
    )
    .fetch_one(&stack.db.pool)
    .await
    .unwrap();
    assert_eq!(orphans, 0);
    let granted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM claims WHERE state = 'granted' AND coalesce(outcome, 'open') <> 'released'",
    )
    .fetch_one(&stack.db.pool)
    .await
    .unwrap();
    let admitted: u64 = stack
        .emulator
        .ledger()
        .entries
        .iter()
        .map(|e| e.requests)
        .sum();
    let succeeded: u64 = stack
        .emulator
        .ledger()
        .entries
        .iter()
        .map(|e| e.succeeded)
        .sum();
    assert_eq!(
        granted as u64, admitted,
        "grants in the recorder vs requests the emulator admitted"
    );
    // The request in flight at the kill may have been fully written by the emulator but never
    // reached the agent: it is in the recorder as a grant without usage (closed as abandoned
    // when its lease ends), never as a usage row of its own or twice.
    let complete: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_log WHERE complete")
        .fetch_one(&stack.db.pool)
        .await
        .unwrap();
    assert!(
        complete as u64 <= succeeded && succeeded - complete as u64 <= 1,
        "completed answers: recorder {complete}, emulator {succeeded}"
    );
    let unreported: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM claims c WHERE c.state = 'granted' AND coalesce(c.outcome, 'open') IN ('open', 'abandoned')
           AND NOT EXISTS (SELECT 1 FROM usage_log u WHERE u.grant_id = c.grant_id)",
    )
    .fetch_one(&stack.db.pool)
    .await
    .unwrap();
    assert_eq!(
        unreported as u64,
        admitted - rows as u64,
        "every admitted request without usage is a grant in the recorder"
    );
    agent.terminate().await;
}
