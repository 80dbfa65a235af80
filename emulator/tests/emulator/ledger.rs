//! The ledger equals what clients received.

use std::collections::BTreeMap;

use gemfleet_emulator::{Ledger, Limits, Tier};
use serde_json::{Value, json};

use crate::common::*;

#[derive(Default, Debug, PartialEq)]
struct Seen {
    succeeded: u64,
    prompt: u64,
    candidates: u64,
    thoughts: u64,
    cached: u64,
    limited: u64,
}

fn add_usage(seen: &mut Seen, usage: &Value) {
    seen.succeeded += 1;
    seen.prompt += usage["promptTokenCount"].as_u64().unwrap();
    seen.candidates += usage["candidatesTokenCount"].as_u64().unwrap();
    seen.thoughts += usage["thoughtsTokenCount"].as_u64().unwrap_or(0);
    seen.cached += usage["cachedContentTokenCount"].as_u64().unwrap_or(0);
}

#[tokio::test]
async fn ledger_equals_what_clients_received() {
    let mut config = simple(Limits {
        requests_per_minute: Some(7),
        ..Limits::default()
    });
    config
        .projects
        .push(project("p2", Tier::Paid, Limits::unlimited()));
    config.keys.push(key("k2", "p1"));
    config.keys.push(key("k3", "p2"));
    config.implicit_cache_min_tokens = 20;
    let emu = start(config).await;
    let c = Client::new(&emu);

    let system = "You are a careful assistant. ".repeat(10);
    let mut seen: BTreeMap<(String, String), Seen> = BTreeMap::new();
    for i in 0..30u32 {
        let k = ["k1", "k2", "k3"][i as usize % 3];
        let model = ["gemini-2.5-flash", "gemini-2.5-pro"][i as usize % 2];
        let mut body = json!({
            "systemInstruction": {"parts": [{"text": system}]},
            "contents": [{"role": "user", "parts": [{"text": format!("question {i}")}]}],
        });
        if i % 4 == 0 {
            body["generationConfig"] = json!({"thinkingConfig": {"thinkingBudget": 512}});
        }
        let s = seen.entry((k.to_owned(), model.to_owned())).or_default();
        let a = if i % 2 == 0 {
            c.stream(k, model, &body).await
        } else {
            c.generate(k, model, &body).await
        };
        match a.status {
            200 if i % 2 == 0 => {
                // The CLI reads the LAST chunk's usage; it must be the complete one.
                let events = a.events();
                add_usage(s, &events.last().unwrap()["usageMetadata"]);
            }
            200 => add_usage(s, &a.json()["usageMetadata"]),
            429 => s.limited += 1,
            other => panic!("unexpected {other}: {}", a.text),
        }
    }
    let ledger = emu.ledger();
    let over_http: Ledger = serde_json::from_value(c.admin_get("ledger").await).unwrap();
    assert_eq!(ledger, over_http);
    let mut limited_total = 0;
    let mut cached_total = 0;
    for ((k, model), s) in &seen {
        let e = ledger.entry(k, model).unwrap();
        let from_ledger = Seen {
            succeeded: e.succeeded,
            prompt: e.input_tokens,
            candidates: e.output_tokens,
            thoughts: e.thoughts_tokens,
            cached: e.cached_tokens,
            limited: e.rate_limited_requests,
        };
        assert_eq!(&from_ledger, s, "{k}/{model}");
        assert_eq!(e.requests, e.succeeded, "no faults configured");
        limited_total += s.limited;
        cached_total += s.cached;
    }
    // p1 has 7 rpm per model for k1+k2 (10 requests per model): some were limited;
    // repeated system instructions were reported as cached.
    assert!(limited_total > 0);
    assert!(cached_total > 0);
    assert!(ledger.for_key("k3").rate_limited_requests == 0);

    // Reset brings everything back to the start.
    let r = c.admin_post("reset", &json!({})).await;
    assert_eq!(r.status, 200);
    assert_eq!(emu.ledger(), Ledger::default());
    assert_eq!(
        c.generate("k1", MODEL, &prompt("after reset")).await.status,
        200
    );
}

#[tokio::test]
async fn prompt_count_never_exceeds_the_agents_estimate() {
    let emu = start(simple(Limits::unlimited())).await;
    let c = Client::new(&emu);
    let bodies = [
        prompt("plain ascii"),
        prompt("ünïcödé ✓ 日本語 🎉🎉"),
        json!({"contents": [{"role": "user", "parts": [{"text": "a\nb\t\"c\""}]},
                            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"x": [1, 2]}}}]},
                            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"ok": true}}}]}],
               "tools": [{"functionDeclarations": [{"name": "f", "description": "d"}]}],
               "systemInstruction": {"parts": [{"text": "sys"}]}}),
    ];
    for body in bodies {
        for bytes in [
            serde_json::to_vec(&body).unwrap(),
            serde_json::to_vec_pretty(&body).unwrap(),
        ] {
            let a = c
                .send(
                    c.http
                        .post(format!("{}/v1beta/models/{MODEL}:generateContent", c.base))
                        .header("x-goog-api-key", secret("k1"))
                        .body(bytes.clone()),
                )
                .await;
            let counted = a.json()["usageMetadata"]["promptTokenCount"]
                .as_u64()
                .unwrap();
            let estimate = gemfleet_gemini::tokens::estimate_input_tokens(&bytes);
            assert!(
                counted >= 1 && counted <= estimate,
                "{counted} > {estimate}"
            );
        }
    }
}

#[tokio::test]
async fn stream_without_alt_sse_is_a_json_array_of_chunks() {
    let emu = start(simple(Limits::unlimited())).await;
    let c = Client::new(&emu);
    let a = c
        .send(
            c.http
                .post(format!(
                    "{}/v1beta/models/{MODEL}:streamGenerateContent",
                    c.base
                ))
                .header("x-goog-api-key", secret("k1"))
                .json(&prompt("array please")),
        )
        .await;
    assert_eq!(a.status, 200);
    assert!(a.content_type.starts_with("application/json"));
    let chunks = a.json();
    let chunks = chunks.as_array().unwrap();
    assert!(chunks.len() > 1);
    let last = chunks.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    let e = emu.ledger().entry("k1", MODEL).cloned().unwrap();
    assert_eq!(
        last["usageMetadata"]["candidatesTokenCount"],
        json!(e.output_tokens)
    );
}
