//! Faults by script and by probability: 503, 500, errors inside a 200 stream (data: event and
//! raw multi-line JSON), a dropped connection, a slow first byte.

use std::time::{Duration, Instant};

use gemfleet_emulator::{Config, Limits, ScriptFault, ScriptResponse, ScriptRule};

use crate::common::*;

fn scripted(fault: ScriptFault, after_chunks: u32) -> Config {
    let mut config = simple(Limits::unlimited());
    config.faults.after_chunks = after_chunks;
    config.faults.slow_first_byte_ms = 300;
    config.script.push(ScriptRule {
        prompt_contains: Some("FAULT".into()),
        times: Some(1),
        respond: ScriptResponse::Fault(fault),
        ..ScriptRule::default()
    });
    config
}

#[tokio::test]
async fn overloaded_and_internal_errors_have_googles_bodies_and_count_against_quota() {
    for (fault, status, google) in [
        (ScriptFault::Overloaded, 503, "UNAVAILABLE"),
        (ScriptFault::Internal, 500, "INTERNAL"),
    ] {
        let emu = start(scripted(fault, 1)).await;
        let c = Client::new(&emu);
        let a = c.generate("k1", MODEL, &prompt("please FAULT")).await;
        assert_eq!(a.status, status);
        assert!(a.content_type.starts_with("application/json"));
        assert_eq!(error_of(&a)["status"], google);
        // times = 1: the next identical request succeeds.
        assert_eq!(
            c.generate("k1", MODEL, &prompt("please FAULT"))
                .await
                .status,
            200
        );
        let e = emu.ledger().entry("k1", MODEL).cloned().unwrap();
        assert_eq!(
            e.requests, 2,
            "an admitted request that failed still counts"
        );
        assert_eq!(e.succeeded, 1);
        assert_eq!(e.errors.get(&status.to_string()), Some(&1));
        assert_eq!(emu.group_usage("p1", MODEL).unwrap().minute_requests, 2);
    }
}

#[tokio::test]
async fn error_event_inside_a_200_stream_after_n_chunks() {
    let emu = start(scripted(ScriptFault::StreamErrorData, 2)).await;
    let c = Client::new(&emu);
    let a = c.stream("k1", MODEL, &prompt("FAULT now")).await;
    assert_eq!(a.status, 200);
    assert!(a.content_type.starts_with("text/event-stream"));
    let events = a.events();
    assert_eq!(events.len(), 3, "{}", a.text);
    assert!(events[0]["candidates"].is_array());
    assert!(events[1]["candidates"][0].get("finishReason").is_none());
    assert_eq!(events[2]["error"]["code"], 503);
    assert_eq!(events[2]["error"]["status"], "UNAVAILABLE");
    let e = emu.ledger().entry("k1", MODEL).cloned().unwrap();
    assert_eq!((e.requests, e.succeeded, e.stream_errors), (1, 0, 1));
    // A unary call skips stream-only rules; the rule is still unused for the next stream.
    assert_eq!(c.generate("k1", MODEL, &prompt("FAULT")).await.status, 200);
}

#[tokio::test]
async fn raw_multi_line_json_error_inside_a_200_stream() {
    let emu = start(scripted(ScriptFault::StreamErrorRaw, 1)).await;
    let c = Client::new(&emu);
    let a = c.stream("k1", MODEL, &prompt("FAULT")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.events().len(), 1);
    let tail = a.text.split("\r\n\r\n").nth(1).unwrap();
    assert!(
        tail.starts_with("{\n"),
        "raw JSON, not a data: event: {tail:?}"
    );
    assert!(tail.lines().count() > 3, "multi-line");
    let v: serde_json::Value = serde_json::from_str(tail).unwrap();
    assert_eq!(v["error"]["code"], 503);
}

#[tokio::test]
async fn dropped_connection_mid_stream() {
    let emu = start(scripted(ScriptFault::DropConnection, 1)).await;
    let c = Client::new(&emu);
    let resp = c
        .http
        .post(format!(
            "{}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
            c.base
        ))
        .header("x-goog-api-key", secret("k1"))
        .json(&prompt("FAULT"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut received = Vec::new();
    let mut resp = resp;
    let outcome = loop {
        match resp.chunk().await {
            Ok(Some(b)) => received.extend_from_slice(&b),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    assert!(
        outcome.is_err(),
        "the body must end in an error, not cleanly"
    );
    let text = String::from_utf8(received).unwrap();
    assert!(
        text.starts_with("data: "),
        "one chunk arrived before the cut: {text:?}"
    );
    assert!(!text.contains("finishReason"));
    let e = emu.ledger().entry("k1", MODEL).cloned().unwrap();
    assert_eq!((e.requests, e.succeeded, e.dropped_connections), (1, 0, 1));
    // The server is still serving.
    assert_eq!(c.stream("k1", MODEL, &prompt("again")).await.status, 200);
}

#[tokio::test]
async fn slow_first_byte_delays_but_answers() {
    let emu = start(scripted(ScriptFault::SlowFirstByte, 1)).await;
    let c = Client::new(&emu);
    let started = Instant::now();
    let a = c.stream("k1", MODEL, &prompt("FAULT")).await;
    // Only a lower bound: an upper one would be flaky on a busy machine.
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(a.status, 200);
    assert_eq!(
        a.events().last().unwrap()["candidates"][0]["finishReason"],
        "STOP"
    );
    assert_eq!(emu.ledger().entry("k1", MODEL).unwrap().succeeded, 1);
}

#[tokio::test]
async fn probabilistic_faults_are_seeded_and_accounted() {
    let mut config = simple(Limits::unlimited());
    config.faults.overloaded_503 = 0.5;
    let emu = start(config.clone()).await;
    let c = Client::new(&emu);
    let mut statuses = Vec::new();
    for i in 0..40 {
        statuses.push(
            c.generate("k1", MODEL, &prompt(&format!("p{i}")))
                .await
                .status,
        );
    }
    let failed = statuses.iter().filter(|s| **s == 503).count() as u64;
    assert!(failed > 5 && failed < 35, "{failed} of 40");
    let e = emu.ledger().entry("k1", MODEL).cloned().unwrap();
    assert_eq!(e.errors.get("503"), Some(&failed));
    assert_eq!(e.succeeded, 40 - failed);
    // Same seed, same sequence of faults.
    emu.reset();
    let mut again = Vec::new();
    for i in 0..40 {
        again.push(
            c.generate("k1", MODEL, &prompt(&format!("p{i}")))
                .await
                .status,
        );
    }
    assert_eq!(statuses, again);

    config.faults.overloaded_503 = 1.0;
    let emu = start(config).await;
    let c = Client::new(&emu);
    let a = c.generate("k1", MODEL, &prompt("x")).await;
    assert_eq!(a.status, 503);
    assert_eq!(
        error_of(&a)["message"],
        "The model is overloaded. Please try again later."
    );
}

#[tokio::test]
async fn configured_latency_paces_first_byte_and_tokens() {
    let mut config = simple(Limits::unlimited());
    config.latency.first_byte_ms = 150;
    config.latency.per_token_ms = 2.0;
    let emu = start(config).await;
    let c = Client::new(&emu);
    for streaming in [false, true] {
        let started = Instant::now();
        let a = if streaming {
            c.stream("k1", MODEL, &prompt("slowly")).await
        } else {
            c.generate("k1", MODEL, &prompt("slowly")).await
        };
        assert_eq!(a.status, 200);
        let usage = if streaming {
            a.events().last().unwrap()["usageMetadata"].clone()
        } else {
            a.json()["usageMetadata"].clone()
        };
        let candidates = usage["candidatesTokenCount"].as_u64().unwrap();
        // Lower bound only (an upper bound would be flaky on a loaded machine).
        let floor = Duration::from_millis(150 + 2 * candidates);
        assert!(
            started.elapsed() >= floor,
            "{:?} < {floor:?}",
            started.elapsed()
        );
    }
}
