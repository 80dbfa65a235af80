//! What a user types gets a clear error; the outbox survives a broker outage.

use crate::stack::{KeySpec, MODEL, Stack};
use gemfleet_protocol::{TaskEvent, TaskId, TaskStatus};
use std::process::Output;
use std::time::Duration;

async fn agent(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_gemfleet-agent"))
        .args(args)
        .env(
            "GEMFLEET_AGENT_DATA_DIR",
            "/nonexistent-gemfleet-should-not-be-used",
        )
        .output()
        .await
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[tokio::test]
async fn bad_task_ids_models_and_missing_gemini_or_broker_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let gemini = gemfleet_testkit::gemini_cli()
        .unwrap()
        .display()
        .to_string();

    let o = agent(&[
        "run",
        "--data-dir",
        &d,
        "--task",
        "bad/task",
        "--gemini",
        &gemini,
        "--",
        "-p",
        "x",
    ])
    .await;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("bad --task \"bad/task\""),
        "{}",
        stderr(&o)
    );

    let o = agent(&[
        "run",
        "--data-dir",
        &d,
        "--task",
        "t1",
        "--model",
        "gemini 2.5",
        "--gemini",
        &gemini,
    ])
    .await;
    assert!(!o.status.success());
    assert!(stderr(&o).contains("bad --model"), "{}", stderr(&o));

    let o = agent(&[
        "run",
        "--data-dir",
        &d,
        "--task",
        "t1",
        "--gemini",
        "/no/such/gemini",
    ])
    .await;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--gemini /no/such/gemini: no such file"),
        "{}",
        stderr(&o)
    );

    let port = gemfleet_testkit::free_port().to_string();
    let broker = format!("127.0.0.1:{port}");
    let o = agent(&[
        "run",
        "--data-dir",
        &d,
        "--task",
        "t1",
        "--broker",
        &broker,
        "--gemini",
        &gemini,
        "--",
        "-p",
        "x",
    ])
    .await;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(&format!("cannot reach the MQTT broker at {broker}")),
        "{}",
        stderr(&o)
    );

    let o = agent(&["status", "--data-dir", &d]).await;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no gemfleet-agent daemon is running"),
        "{}",
        stderr(&o)
    );

    let o = agent(&["env", "--data-dir", &d]).await;
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("export GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:8741"),
        "{out}"
    );
    assert!(
        out.contains("\"selectedType\": \"gemini-api-key\""),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_model_stops_the_cli_at_once_with_the_reason() {
    let stack = Stack::start(
        10,
        2.0,
        &["proj-a"],
        &[KeySpec {
            name: "key-a1",
            project: "proj-a",
        }],
    )
    .await;
    let d = stack.start_agent("edge-m").await;
    let gemini = gemfleet_testkit::gemini_cli().unwrap();
    let started = std::time::Instant::now();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_gemfleet-agent"));
    cmd.arg("run")
        .args(stack.agent_args("edge-m"))
        .args([
            "--task",
            "unknown-model",
            "--model",
            "gemini-0.1-nonexistent",
            "--cwd",
        ])
        .arg(stack.workdir())
        .arg("--gemini")
        .arg(gemini)
        .args(["--", "-p", "hello", "-o", "json"]);
    let o = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("no key can serve gemini-0.1-nonexistent"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the CLI kept retrying: {:?}",
        started.elapsed()
    );
    assert!(err.contains("requests refused"), "summary missing: {err}");
    d.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_while_the_broker_is_down_reach_the_recorder_after_it_returns() {
    let mut stack = Stack::start(
        10,
        2.0,
        &["proj-a"],
        &[KeySpec {
            name: "key-a1",
            project: "proj-a",
        }],
    )
    .await;
    let d = stack.start_agent("edge-o").await;
    stack.broker.stop().await.unwrap();
    let t0 = std::time::Instant::now();
    while d.shared.mesh.is_connected() {
        assert!(t0.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let control = gemfleet_agent::runner::Control::new(d.base_url()).unwrap();
    for i in 0..5 {
        let ev = TaskEvent {
            task_id: TaskId::parse(format!("offline-{i}")).unwrap(),
            status: TaskStatus::Running,
            session_id: None,
            requests: 0,
            input_tokens: 0,
            output_tokens: 0,
            total_tokens: 0,
            duration_ms: 0,
            exit_code: None,
        };
        control.event(&ev).await.unwrap();
    }
    let st = control.status(Duration::from_secs(2)).await.unwrap();
    assert!(!st.broker.connected);
    assert_eq!(st.outbox.as_ref().unwrap().depth, 5);
    assert!(st.outbox.as_ref().unwrap().oldest_ts.is_some());

    stack.broker.restart().await.unwrap();
    assert_eq!(
        control.flush(Duration::from_secs(20)).await.unwrap(),
        0,
        "the outbox did not drain"
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE id LIKE 'offline-%'")
        .fetch_one(&stack.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 5);
    let _ = MODEL;
    d.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_recorder_gets_a_stop_answer_that_says_so() {
    gemfleet_testkit::init_crypto();
    let broker = gemfleet_testkit::Broker::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut s = gemfleet_agent::settings::Settings::default();
    s.agent_id = Some("edge-silent".into());
    s.data_dir = Some(dir.path().to_path_buf());
    s.broker.host = broker.host().to_string();
    s.broker.port = broker.port();
    s.listen = "127.0.0.1:0".parse().unwrap();
    s.upstream_base_url = "http://127.0.0.1:9".into();
    s.claim_max_wait_ms = 200;
    s.claim_answer_timeout_ms = 300;
    let d = gemfleet_agent::daemon::start(s, false).await.unwrap();
    let t0 = std::time::Instant::now();
    while !d.shared.mesh.is_connected() {
        assert!(t0.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = reqwest::Client::new()
        .post(format!(
            "{}/v1beta/models/{MODEL}:generateContent",
            d.base_url()
        ))
        .body(r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: serde_json::Value = r.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("the recorder did not answer the claim within 500 ms"),
        "{msg}"
    );
    assert!(msg.contains("limit: 0"), "{msg}");
    // The claim and its withdrawal wait in the outbox for a recorder.
    assert_eq!(d.shared.mesh.outbox().depth(), 2);
    d.shutdown(Duration::from_millis(100)).await;
}
