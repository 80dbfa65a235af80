//! The main job end to end at a small size: real Gemini CLI runs through a fleet of real
//! processes (broker, emulator, recorder, three agents), with a key revoked upstream and an
//! agent killed mid-task. Needs `cargo build --workspace --bins` (which `cargo test --workspace`
//! does) and `npm ci` at the root.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gemfleet_fleet::demo::{self, DemoOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_does_the_main_job() {
    gemfleet_testkit::init_crypto();
    let work = tempfile::tempdir().unwrap();
    let root = gemfleet_testkit::workspace_root();
    let database = format!("gemfleet_e2e_{}", std::process::id());
    let opts = DemoOptions {
        work_dir: work.path().to_path_buf(),
        server_url: std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| gemfleet_testkit::DEFAULT_DATABASE_URL.to_string()),
        database: database.clone(),
        repo: root.clone(),
        gemini: gemfleet_testkit::gemini_cli().unwrap(),
        agents: 3,
        max_tasks: 9,
        follow_ups: 2,
        minute_seconds: 6.0,
        rpm: 3,
        model: "gemini-2.5-flash".into(),
        progress: false,
    };
    let outcome = demo::run(opts).await.unwrap();
    let report = &outcome.report;
    let rendered = report.render();
    println!("{rendered}");
    assert!(report.problems().is_empty(), "{rendered}");

    // Every run but the killed one succeeded, and Gemini CLI never saw an API error or a 429.
    let finished: Vec<_> = report.runs.iter().filter(|r| !r.killed).collect();
    assert_eq!(finished.len(), 9 + 2, "{rendered}");
    assert!(finished.iter().all(|r| r.exit_code == 0), "{rendered}");
    assert_eq!(
        finished
            .iter()
            .map(|r| r.cli_api_errors + r.cli_429s)
            .sum::<u64>(),
        0
    );
    assert_eq!(
        report.runs.iter().filter(|r| r.killed).count(),
        1,
        "an agent was killed mid-task"
    );

    // The books agree with the emulator's ledger per key, and the emulator never answered 429.
    for k in &report.keys {
        assert_eq!(k.emulator_429s, 0, "{rendered}");
        assert!(k.recorder_requests <= k.emulator_requests, "{rendered}");
        assert!(
            k.emulator_requests - k.recorder_requests <= k.recorder_abandoned,
            "{rendered}"
        );
    }
    let accepted: u64 = report.keys.iter().map(|k| k.emulator_requests).sum();
    assert!(
        accepted >= 11,
        "every finished run made at least one request: {rendered}"
    );

    // The revoked key was rejected upstream at most a few times (requests already in flight),
    // then disabled fleet-wide.
    let revoked = report
        .keys
        .iter()
        .find(|k| k.key == report.revoked_key)
        .unwrap();
    if report.revoked_rejections > 0 {
        assert_eq!(revoked.state, "disabled", "{rendered}");
        assert!(report.revoked_rejections <= 3, "{rendered}");
    }

    // The killed agent's task was finished by another agent.
    let (killed_agent, killed_task) = report.killed.clone().unwrap();
    let moved = report
        .moved_tasks
        .iter()
        .find(|(t, _)| *t == killed_task)
        .expect("killed task finished");
    assert_eq!(moved.1.first(), Some(&killed_agent));
    assert!(moved.1.last() != Some(&killed_agent), "{rendered}");
    // Follow-ups ran elsewhere than their first run (a session that moved machines).
    assert!(report.moved_tasks.len() >= 2, "{rendered}");

    // Drop the demo database.
    let admin = sqlx::PgPool::connect(gemfleet_testkit::DEFAULT_DATABASE_URL)
        .await
        .unwrap();
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
    )))
    .execute(&admin)
    .await;
}
