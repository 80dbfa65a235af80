//! A key the API rejects is disabled fleet-wide after its first failure.

use crate::stack::{KeySpec, MODEL, Stack, cli_api_errors, cli_json, emulator_requests_with};
use gemfleet_emulator::KeyState;
use gemfleet_protocol::{KeyName, ModelName, TaskId};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_key_is_disabled_fleet_wide_after_its_first_failure() {
    let stack = Stack::start_with(
        20,
        2.0,
        &["proj-a"],
        &[
            KeySpec {
                name: "key-bad",
                project: "proj-a",
            },
            KeySpec {
                name: "key-good",
                project: "proj-a",
            },
        ],
        |c| {
            for k in &mut c.keys {
                if k.name == "key-bad" {
                    k.state = KeyState::Invalid;
                }
            }
        },
    )
    .await;
    let one = stack.start_agent("edge-1").await;
    let two = stack.start_agent("edge-2").await;
    let bad = KeyName::parse("key-bad").unwrap();
    let model = ModelName::parse(MODEL).unwrap();

    // Agent 1 runs until the arbiter has handed it the bad key once; the proxy absorbs the
    // failure on the good key, so every run still succeeds.
    let mut i = 0;
    while emulator_requests_with(&stack, "key-bad") == 0 {
        assert!(i < 4, "the bad key was never granted");
        let out = stack
            .run(
                "edge-1",
                &TaskId::parse(format!("k1-{i}")).unwrap(),
                "Say hi",
            )
            .await;
        let v = cli_json(&out);
        assert_eq!(cli_api_errors(&v), 0, "the CLI saw the key failure: {v}");
        i += 1;
    }
    assert_eq!(emulator_requests_with(&stack, "key-bad"), 1);

    // The second agent learns it from the retained key state.
    let t0 = Instant::now();
    while !two.shared.mesh.avoid_for(&model).contains(&bad) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "agent 2 never saw the key disabled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "agent 2 saw the key disabled {:?} after the run",
        t0.elapsed()
    );
    let state: String = sqlx::query_scalar("SELECT state FROM api_keys WHERE key_name = 'key-bad'")
        .fetch_one(&stack.db.pool)
        .await
        .unwrap();
    assert_ne!(state, "active");

    for j in 0..3 {
        let out = stack
            .run(
                "edge-2",
                &TaskId::parse(format!("k2-{j}")).unwrap(),
                "Say hi again",
            )
            .await;
        cli_json(&out);
    }
    assert_eq!(
        emulator_requests_with(&stack, "key-bad"),
        1,
        "the disabled key was used again"
    );
    let status = gemfleet_agent::control::report(&two.shared);
    assert!(
        status
            .cold_keys
            .iter()
            .any(|c| c.what.starts_with("key-bad")),
        "status does not show the cold key"
    );
    one.shutdown(Duration::from_secs(5)).await;
    two.shutdown(Duration::from_secs(5)).await;
}
