//! Hostile input never crashes the emulator: property tests over the live HTTP handlers and
//! over the pure counting and schema code.

use gemfleet_emulator::answer::schema_value;
use gemfleet_emulator::counting::Prompt;
use gemfleet_emulator::{Limits, ScriptResponse, ScriptRule};
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestRunner};
use serde_json::{Value, json};

use crate::common::*;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
        prop_oneof![
            Just("text"),
            Just("parts"),
            Just("contents"),
            Just("type"),
            Just("OBJECT"),
            Just("properties"),
            Just("required"),
            Just("enum"),
            Just("items"),
            Just("minItems"),
            Just("application/json"),
            Just("functionResponse"),
            Just("anyOf"),
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("contents".to_owned()),
                    Just("parts".to_owned()),
                    Just("text".to_owned()),
                    Just("role".to_owned()),
                    Just("generationConfig".to_owned()),
                    Just("responseMimeType".to_owned()),
                    Just("responseJsonSchema".to_owned()),
                    Just("responseSchema".to_owned()),
                    Just("type".to_owned()),
                    Just("properties".to_owned()),
                    Just("items".to_owned()),
                    Just("minItems".to_owned()),
                    Just("maxItems".to_owned()),
                    Just("minimum".to_owned()),
                    Just("systemInstruction".to_owned()),
                    Just("tools".to_owned()),
                    Just("thinkingConfig".to_owned()),
                    Just("anyOf".to_owned()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A request body: valid-looking JSON with junk inside, or raw bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        json_value().prop_map(|v| {
            serde_json::to_vec(
                &json!({"contents": [{"role": "user", "parts": [{"text": "q"}]}],
                                       "generationConfig": {"responseMimeType": "application/json",
                                                            "responseJsonSchema": v}}),
            )
            .unwrap()
        }),
        json_value().prop_map(|v| serde_json::to_vec(&json!({"contents": v})).unwrap()),
        prop::collection::vec(any::<u8>(), 0..200),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/v1beta/models/gemini-2.5-flash:generateContent".to_owned()),
        Just("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse".to_owned()),
        Just("/v1beta/models/gemini-2.5-flash:streamGenerateContent".to_owned()),
        Just("/v1/models/gemini-2.5-pro:countTokens".to_owned()),
        Just("/v1beta/models".to_owned()),
        Just("/_emulator/clock".to_owned()),
        Just("/_emulator/keys/k1/state".to_owned()),
        "/v1beta/models/[a-zA-Z0-9.:_-]{0,30}".prop_map(|s| s),
        "/[a-zA-Z0-9/:._%-]{0,40}".prop_map(|s| s),
    ]
}

#[test]
fn junk_requests_get_clear_answers_and_never_crash_the_server() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut config = simple(Limits {
        requests_per_minute: Some(1_000_000),
        ..Limits::default()
    });
    config.script.push(ScriptRule {
        prompt_contains: Some("q".into()),
        nth_request: Some(3),
        respond: ScriptResponse::FunctionCall {
            name: "f".into(),
            args: json!({}),
        },
        ..ScriptRule::default()
    });
    let emu = rt.block_on(start(config));
    let c = Client::new(&emu);
    let mut runner = TestRunner::new(PropConfig {
        cases: 300,
        failure_persistence: None,
        ..PropConfig::default()
    });
    let strategy = (
        path(),
        body(),
        prop::option::of(prop_oneof![Just(secret("k1")), "[ -~]{0,20}",]),
        any::<bool>(),
    );
    runner
        .run(&strategy, |(path, body, key, use_get)| {
            let url = format!("{}{}", c.base, path);
            let mut req = if use_get {
                c.http.get(&url)
            } else {
                c.http.post(&url)
            };
            if let Some(k) = key {
                req = req.header("x-goog-api-key", k);
            }
            let a = rt.block_on(c.send(req.body(body)));
            prop_assert!(
                [200, 400, 401, 403, 404, 405].contains(&a.status),
                "status {} for {path}: {}",
                a.status,
                a.text
            );
            if a.content_type.starts_with("application/json") {
                let v: Value = serde_json::from_str(&a.text)
                    .map_err(|e| TestCaseError::fail(format!("not JSON: {e}: {}", a.text)))?;
                if a.status != 200 {
                    prop_assert!(v["error"]["message"].is_string(), "{}", a.text);
                }
            } else {
                prop_assert!(a.status == 200 && a.content_type.starts_with("text/event-stream"));
                prop_assert!(a.text.starts_with("data: "));
            }
            Ok(())
        })
        .unwrap();
    // Still alive and correct.
    let a = rt.block_on(c.generate("k1", MODEL, &prompt("still there?")));
    assert_eq!(a.status, 200);
}

proptest! {
    #[test]
    fn prompt_tokens_never_exceed_the_estimate(v in json_value(), pretty in any::<bool>()) {
        let request = json!({"contents": [v.clone()], "systemInstruction": v.clone(), "tools": [v]});
        let bytes = if pretty {
            serde_json::to_vec_pretty(&request).unwrap()
        } else {
            serde_json::to_vec(&request).unwrap()
        };
        let parsed: Value = serde_json::from_slice(&bytes).unwrap();
        let counted = Prompt::of_request(&parsed).tokens();
        prop_assert!(counted <= gemfleet_gemini::tokens::estimate_input_tokens(&bytes));
    }

    #[test]
    fn any_schema_gets_a_value_without_panicking(schema in json_value()) {
        let _ = schema_value(&schema, 0);
    }
}
