//! Runs through the fleet: quota sharing, resume across agents.

use crate::stack::{KeySpec, Stack, cli_api_errors, cli_json};
use gemfleet_protocol::TaskId;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_runs_on_two_keys_at_two_rpm_all_succeed_and_the_books_match() {
    let stack = Stack::start(
        2,
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
    )
    .await;
    let daemon = stack.start_agent("edge-1").await;
    for i in 0..5 {
        let task = TaskId::parse(format!("quota-{i}")).unwrap();
        let out = stack
            .run("edge-1", &task, &format!("Say hello number {i}"))
            .await;
        let v = cli_json(&out);
        assert_eq!(cli_api_errors(&v), 0, "CLI saw API errors: {v}");
    }
    assert_eq!(
        stack.emulator_429s(),
        0,
        "the emulator answered 429 to the fleet"
    );
    let emu = stack.emulator_usage();
    let rec = stack.recorder_usage().await;
    assert!(emu.values().map(|x| x.0).sum::<i64>() >= 5);
    assert_eq!(
        rec, emu,
        "recorder usage (left) vs emulator ledger (right), per key: (requests, input tokens)"
    );

    // `status` and `env` find the daemon through its state file.
    let data_dir = stack.data_dir("edge-1").display().to_string();
    let st = tokio::process::Command::new(env!("CARGO_BIN_EXE_gemfleet-agent"))
        .args(["status", "--data-dir", &data_dir])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(
        st.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert!(text.contains("agent      edge-1"), "{text}");
    assert!(text.contains("connected since"), "{text}");
    assert!(
        text.contains("outbox     0 unacknowledged events"),
        "{text}"
    );
    assert!(text.contains(&daemon.base_url()), "{text}");
    let env = tokio::process::Command::new(env!("CARGO_BIN_EXE_gemfleet-agent"))
        .args(["env", "--data-dir", &data_dir])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&env.stdout);
    assert!(
        text.contains(&format!(
            "export GOOGLE_GEMINI_BASE_URL={}",
            daemon.base_url()
        )),
        "{text}"
    );
    assert!(!text.contains("NOTE: no daemon"), "{text}");
    daemon.shutdown(std::time::Duration::from_secs(5)).await;
}
