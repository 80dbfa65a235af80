//! Key and project errors, bad requests, and the admin surface's key handling.

use gemfleet_emulator::{KeyState, Limits, ProjectState};
use serde_json::json;

use crate::common::*;

/// (state, HTTP status, google status, ErrorInfo reason or None, message fragment)
const KEY_CASES: &[(KeyState, u16, &str, Option<&str>, &str)] = &[
    (
        KeyState::Invalid,
        400,
        "INVALID_ARGUMENT",
        Some("API_KEY_INVALID"),
        "API key not valid",
    ),
    (
        KeyState::Expired,
        400,
        "INVALID_ARGUMENT",
        Some("API_KEY_INVALID"),
        "API key expired",
    ),
    (
        KeyState::Leaked,
        403,
        "PERMISSION_DENIED",
        None,
        "reported as leaked",
    ),
    (
        KeyState::ServiceBlocked,
        403,
        "PERMISSION_DENIED",
        Some("API_KEY_SERVICE_BLOCKED"),
        "GenerativeService.GenerateContent are blocked",
    ),
    (
        KeyState::KeyTypeRejected,
        401,
        "UNAUTHENTICATED",
        Some("ACCESS_TOKEN_TYPE_UNSUPPORTED"),
        "invalid authentication credentials",
    ),
    (
        KeyState::ProjectSuspended,
        403,
        "PERMISSION_DENIED",
        Some("CONSUMER_SUSPENDED"),
        "has been suspended",
    ),
    (
        KeyState::ProjectDenied,
        403,
        "PERMISSION_DENIED",
        None,
        "denied access",
    ),
];

#[tokio::test]
async fn every_key_and_project_error_has_googles_body() {
    let mut config = simple(Limits::unlimited());
    for (i, (state, ..)) in KEY_CASES.iter().enumerate() {
        let mut k = key(&format!("bad{i}"), "p1");
        k.state = *state;
        config.keys.push(k);
    }
    let emu = start(config).await;
    let c = Client::new(&emu);
    for (i, (state, status, google_status, reason, fragment)) in KEY_CASES.iter().enumerate() {
        let a = c.generate(&format!("bad{i}"), MODEL, &prompt("hi")).await;
        assert_eq!(a.status, *status, "{state:?}");
        assert!(a.content_type.starts_with("application/json"), "{state:?}");
        let e = error_of(&a);
        assert_eq!(e["code"], *status, "{state:?}");
        assert_eq!(e["status"], *google_status, "{state:?}");
        assert!(
            e["message"].as_str().unwrap().contains(fragment),
            "{state:?}: {e}"
        );
        match reason {
            Some(r) => assert_eq!(detail(&e, "ErrorInfo").unwrap()["reason"], *r, "{state:?}"),
            None => assert!(e.get("details").is_none(), "{state:?}"),
        }
        // Google's own bodies would name the key; ours never echo a secret.
        assert!(!a.text.contains(&secret(&format!("bad{i}"))));
        let entry = emu
            .ledger()
            .entry(&format!("bad{i}"), MODEL)
            .cloned()
            .unwrap();
        assert_eq!(entry.errors.get(&status.to_string()), Some(&1), "{state:?}");
        assert_eq!(entry.requests, 0);
    }
}

#[tokio::test]
async fn a_key_revoked_at_runtime_fails_from_then_on_and_a_suspended_project_fails_all_keys() {
    let mut config = simple(Limits::unlimited());
    config.keys.push(key("k2", "p1"));
    let mut other = project("dead", gemfleet_emulator::Tier::Free, Limits::unlimited());
    other.state = ProjectState::Suspended;
    config.projects.push(other);
    config.keys.push(key("kd", "dead"));
    let emu = start(config).await;
    let c = Client::new(&emu);
    assert_eq!(c.generate("k1", MODEL, &prompt("a")).await.status, 200);
    let r = c
        .admin_post("keys/k1/state", &json!({"state": "invalid"}))
        .await;
    assert_eq!(r.status, 200);
    let a = c.generate("k1", MODEL, &prompt("a")).await;
    assert_eq!(a.status, 400);
    assert_eq!(
        detail(&error_of(&a), "ErrorInfo").unwrap()["reason"],
        "API_KEY_INVALID"
    );
    // The other key of the project is unaffected.
    assert_eq!(c.generate("k2", MODEL, &prompt("a")).await.status, 200);
    // Library API, and back.
    emu.set_key_state("k1", KeyState::Valid).unwrap();
    assert_eq!(c.generate("k1", MODEL, &prompt("a")).await.status, 200);
    assert!(emu.set_key_state("nope", KeyState::Valid).is_err());
    let r = c
        .admin_post("keys/nope/state", &json!({"state": "invalid"}))
        .await;
    assert_eq!(r.status, 404);
    let r = c
        .admin_post("keys/k1/state", &json!({"state": "bogus"}))
        .await;
    assert_eq!(r.status, 400);

    let a = c.generate("kd", MODEL, &prompt("a")).await;
    assert_eq!(a.status, 403);
    assert_eq!(
        detail(&error_of(&a), "ErrorInfo").unwrap()["reason"],
        "CONSUMER_SUSPENDED"
    );
}

#[tokio::test]
async fn bad_requests_get_google_shaped_4xx() {
    let emu = start(simple(Limits::unlimited())).await;
    let c = Client::new(&emu);
    let url = |m: &str| format!("{}/v1beta/models/{m}", c.base);

    // No key at all.
    let a = c
        .send(
            c.http
                .post(url("gemini-2.5-flash:generateContent"))
                .json(&prompt("x")),
        )
        .await;
    assert_eq!(a.status, 403);
    assert_eq!(error_of(&a)["status"], "PERMISSION_DENIED");
    assert!(
        error_of(&a)["message"]
            .as_str()
            .unwrap()
            .contains("unregistered callers")
    );
    // A secret the emulator does not know: invalid key.
    let a = c
        .send(
            c.http
                .post(url("gemini-2.5-flash:generateContent"))
                .header("x-goog-api-key", "AIzaUNKNOWN")
                .json(&prompt("x")),
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        detail(&error_of(&a), "ErrorInfo").unwrap()["reason"],
        "API_KEY_INVALID"
    );
    // ?key= works like the header.
    let a = c
        .send(
            c.http
                .post(format!(
                    "{}?key={}",
                    url("gemini-2.5-flash:generateContent"),
                    secret("k1")
                ))
                .json(&prompt("x")),
        )
        .await;
    assert_eq!(a.status, 200);
    // Malformed JSON.
    let a = c
        .send(
            c.http
                .post(url("gemini-2.5-flash:generateContent"))
                .header("x-goog-api-key", secret("k1"))
                .body("{\"contents\": [oops"),
        )
        .await;
    assert_eq!(a.status, 400);
    let e = error_of(&a);
    assert_eq!(e["status"], "INVALID_ARGUMENT");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid JSON payload received.")
    );
    // JSON without contents.
    let a = c.generate("k1", MODEL, &json!({"contents": []})).await;
    assert_eq!(a.status, 400);
    assert!(
        error_of(&a)["message"]
            .as_str()
            .unwrap()
            .contains("contents is not specified")
    );
    // Unknown model.
    let a = c.generate("k1", "gemini-0-nonexistent", &prompt("x")).await;
    assert_eq!(a.status, 404);
    let e = error_of(&a);
    assert_eq!(e["status"], "NOT_FOUND");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("models/gemini-0-nonexistent is not found")
    );
    // Unknown method and path.
    let a = c
        .send(
            c.http
                .post(url("gemini-2.5-flash:explode"))
                .json(&prompt("x")),
        )
        .await;
    assert_eq!(a.status, 404);
    assert_eq!(error_of(&a)["status"], "NOT_FOUND");
    let a = c.send(c.http.get(format!("{}/nothing/here", c.base))).await;
    assert_eq!(a.status, 404);
    assert_eq!(error_of(&a)["code"], 404);

    let l = emu.ledger();
    assert_eq!(l.unauthenticated.get("403"), Some(&1));
    assert_eq!(l.unauthenticated.get("400"), Some(&1));
    assert_eq!(
        l.entry("k1", "<unknown>").unwrap().errors.get("404"),
        Some(&1)
    );
    assert_eq!(l.entry("k1", MODEL).unwrap().errors.get("400"), Some(&2));
}

#[tokio::test]
async fn models_list_count_tokens_and_v1_paths() {
    let emu = start(simple(Limits::unlimited())).await;
    let c = Client::new(&emu);
    let models = c
        .send(c.http.get(format!("{}/v1beta/models", c.base)))
        .await
        .json();
    let names: Vec<&str> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for m in [
        "models/gemini-2.5-flash",
        "models/gemini-2.5-pro",
        "models/gemini-3.5-flash-lite",
        "models/gemini-3-pro-preview",
    ] {
        assert!(names.contains(&m), "{m} in {names:?}");
    }
    let one = c
        .send(c.http.get(format!("{}/v1/models/gemini-2.5-pro", c.base)))
        .await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["name"], "models/gemini-2.5-pro");

    let body = prompt(&"z".repeat(41));
    let counted = c
        .send(
            c.http
                .post(format!("{}/v1/models/{MODEL}:countTokens", c.base))
                .header("x-goog-api-key", secret("k1"))
                .json(&body),
        )
        .await;
    assert_eq!(counted.status, 200);
    assert_eq!(counted.json()["totalTokens"], 11);
    let generated = c
        .send(
            c.http
                .post(format!("{}/v1/models/{MODEL}:generateContent", c.base))
                .header("x-goog-api-key", secret("k1"))
                .json(&body),
        )
        .await;
    assert_eq!(generated.json()["usageMetadata"]["promptTokenCount"], 11);
    let entry = emu.ledger().entry("k1", MODEL).cloned().unwrap();
    assert_eq!(entry.count_tokens_calls, 1);
    assert_eq!(entry.requests, 1, "countTokens is not a generate request");
}

#[tokio::test]
async fn the_admin_surface_never_serves_secrets() {
    let mut config = simple(Limits::unlimited());
    config.keys.push(key("k2", "p1"));
    let emu = start(config).await;
    let c = Client::new(&emu);
    c.generate("k1", MODEL, &prompt("a")).await;
    c.generate("k2", MODEL, &prompt("a")).await;
    for path in ["ledger", "keys", "clock", &format!("quota/p1/{MODEL}")] {
        let text = c
            .send(c.http.get(format!("{}/_emulator/{path}", c.base)))
            .await
            .text;
        assert!(!text.contains("AIzaTEST"), "{path}: {text}");
    }
    let keys = c.admin_get("keys").await;
    assert_eq!(
        keys["keys"][0],
        json!({"name": "k1", "project": "p1", "state": "valid"})
    );
    assert!(!format!("{:?}", emu.engine().config()).contains("AIzaTEST"));
}

#[tokio::test]
async fn absurd_clock_settings_are_refused_and_change_nothing() {
    let emu = start(simple(Limits {
        requests_per_day: Some(100),
        requests_per_minute: Some(100),
        ..Limits::default()
    }))
    .await;
    let c = Client::new(&emu);
    for body in [
        json!({"now": "+200000-01-01T00:00:00Z"}),
        json!({"offset_seconds": 1e300}),
        json!({"offset_seconds": -1e12}),
        json!({"offset_seconds": 5, "now": "2026-01-01T00:00:00Z"}),
        json!({}),
        json!({"now": "yesterday"}),
    ] {
        let r = c.admin_post("clock", &body).await;
        assert_eq!(r.status, 400, "{body}");
        assert!(error_of(&r)["message"].is_string());
    }
    assert!(
        emu.now()
            .signed_duration_since(chrono::Utc::now())
            .num_seconds()
            .abs()
            < 5
    );
    let r = c
        .admin_post("clock", &json!({"offset_seconds": 99_999_999_999.0}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        c.generate("k1", MODEL, &prompt("far future")).await.status,
        200
    );
}
