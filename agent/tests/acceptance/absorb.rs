//! A quota 429 the recorder could not foresee is classified, reported and absorbed on another
//! project's key: the client never sees it.

use crate::stack::{KeySpec, MODEL, Stack};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_429_is_retried_on_another_grant_and_never_reaches_the_client() {
    // The recorder believes both projects allow 10 rpm; Google (the emulator) allows proj-a 1.
    let stack = Stack::start_with(
        10,
        30.0,
        &["proj-a", "proj-b"],
        &[
            KeySpec {
                name: "key-a",
                project: "proj-a",
            },
            KeySpec {
                name: "key-b",
                project: "proj-b",
            },
        ],
        |c| {
            for p in &mut c.projects {
                if p.name == "proj-a" {
                    p.default_limits.requests_per_minute = Some(1);
                }
            }
        },
    )
    .await;
    let d = stack.start_agent("edge-r").await;
    let http = reqwest::Client::new();
    let url = format!(
        "{}/t/absorb/v1beta/models/{MODEL}:generateContent?key=ignored",
        d.base_url()
    );
    let body = serde_json::json!({"contents": [{"role": "user", "parts": [{"text": "hello"}]}]});
    for i in 0..4 {
        let r = http.post(&url).json(&body).send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_success(), "request {i} failed: {status} {text}");
        assert!(text.contains("usageMetadata"), "{text}");
    }
    assert!(
        stack.emulator_429s() >= 1,
        "the emulator never refused: the test proves nothing"
    );
    assert_eq!(d.shared.mesh.flush(Duration::from_secs(10)).await, 0);
    let (throttles, absorbed): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE absorbed) FROM throttles")
            .fetch_one(&stack.db.pool)
            .await
            .unwrap();
    assert!(throttles >= 1);
    assert_eq!(throttles, absorbed, "every failure was absorbed");
    let class: String = sqlx::query_scalar("SELECT class FROM throttles LIMIT 1")
        .fetch_one(&stack.db.pool)
        .await
        .unwrap();
    assert_eq!(class, "cooldown");
    // The usage the recorder holds is exactly what the emulator admitted and answered.
    let rec = stack.recorder_usage().await;
    let emu = stack.emulator_usage();
    assert_eq!(rec.values().map(|x| x.0).sum::<i64>(), 4);
    assert_eq!(rec.get("key-b"), emu.get("key-b"));
    d.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_answer_is_retried_elsewhere_and_a_mid_stream_error_is_reported() {
    use gemfleet_emulator::{ScriptFault, ScriptResponse, ScriptRule};
    let stack = Stack::start_with(
        100,
        30.0,
        &["proj-a"],
        &[
            KeySpec {
                name: "key-a",
                project: "proj-a",
            },
            KeySpec {
                name: "key-b",
                project: "proj-a",
            },
        ],
        |c| {
            for (fault, times) in [
                (ScriptFault::Overloaded, 1),
                (ScriptFault::StreamErrorData, 1),
            ] {
                c.script.push(ScriptRule {
                    prompt_contains: None,
                    model: None,
                    key: Some("key-a".into()),
                    nth_request: None,
                    times: Some(times),
                    respond: ScriptResponse::Fault(fault),
                });
            }
        },
    )
    .await;
    let d = stack.start_agent("edge-f").await;
    let http = reqwest::Client::new();
    let body = serde_json::json!({"contents": [{"role": "user", "parts": [{"text": "hello"}]}]});
    for i in 0..3 {
        let url = format!("{}/v1beta/models/{MODEL}:generateContent", d.base_url());
        let r = http.post(&url).json(&body).send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_success(), "{i}: {status} {text}");
        assert!(
            !text.contains("\"error\""),
            "{i}: the client saw an error: {text}"
        );
    }
    // Once bytes have reached the client a stream cannot move to another key: the error
    // event passes through (the CLI retries it as its own 503) and is reported, not absorbed.
    let mut saw_stream_error = false;
    for _ in 0..3 {
        let url = format!(
            "{}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
            d.base_url()
        );
        let r = http.post(&url).json(&body).send().await.unwrap();
        assert!(r.status().is_success());
        saw_stream_error |= r.text().await.unwrap().contains("\"error\"");
    }
    assert!(
        saw_stream_error,
        "the scripted mid-stream error never happened"
    );
    assert_eq!(d.shared.mesh.flush(Duration::from_secs(10)).await, 0);
    let rows: Vec<(String, bool, i32)> =
        sqlx::query_as("SELECT class, absorbed, http_status FROM throttles ORDER BY id")
            .fetch_all(&stack.db.pool)
            .await
            .unwrap();
    eprintln!("throttles: {rows:?}");
    assert!(
        rows.iter()
            .any(|(c, a, s)| c == "transient" && *a && *s == 503),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|(c, a, s)| c == "transient" && !*a && *s == 200),
        "{rows:?}"
    );
    d.shutdown(Duration::from_secs(5)).await;
}
