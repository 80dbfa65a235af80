//! Cross-check: the fleet's classifier (gemfleet_gemini::classify, built from Google's real
//! bodies in shared/cases/) reads every emulator failure the way QUOTAS.md says it must read
//! Google's. If the emulator's bodies drifted from Google's shape, this would catch it.

use gemfleet_emulator::{KeyState, Limits, ScriptFault, ScriptResponse, ScriptRule, Tier};
use gemfleet_gemini::classify::classify_http;
use gemfleet_gemini::{Classification, Dimension, FailureClass};

use crate::common::*;

fn read(a: &Answer, model: &str) -> Classification {
    classify_http(a.status, a.text.as_bytes(), Some(model), chrono::Utc::now())
}

#[tokio::test]
async fn quota_refusals_classify_by_dimension_tier_and_limit() {
    let mut config = simple(Limits {
        requests_per_minute: Some(1),
        ..Limits::default()
    });
    config.projects.push(project(
        "day",
        Tier::Paid,
        Limits {
            requests_per_day: Some(1),
            ..Limits::default()
        },
    ));
    config
        .projects
        .push(project("zero", Tier::Free, Limits::zero()));
    config.projects.push(project(
        "tpm",
        Tier::Free,
        Limits {
            input_tokens_per_minute: Some(10),
            ..Limits::default()
        },
    ));
    for (k, p) in [("kd", "day"), ("kz", "zero"), ("kt", "tpm")] {
        config.keys.push(key(k, p));
    }
    let emu = start(config).await;
    let c = Client::new(&emu);

    c.generate("k1", MODEL, &prompt("a")).await;
    let r = read(&c.generate("k1", MODEL, &prompt("a")).await, MODEL);
    assert_eq!(r.class, FailureClass::Cooldown, "{r:?}");
    assert_eq!(r.dimension, Some(Dimension::RequestsPerMinute));
    assert_eq!(r.limit, Some(1));
    assert_eq!(r.tier, Some(Tier::Free));
    let ms = r.retry_after_ms.unwrap();
    assert!((1..=61_000).contains(&ms), "{ms}");

    c.generate("kd", MODEL, &prompt("a")).await;
    let r = read(&c.generate("kd", MODEL, &prompt("a")).await, MODEL);
    assert_eq!(r.class, FailureClass::Daily, "{r:?}");
    assert_eq!(r.dimension, Some(Dimension::RequestsPerDay));
    assert_eq!(r.tier, Some(Tier::Paid));
    assert!(r.until.is_some());

    let r = read(&c.generate("kz", MODEL, &prompt("a")).await, MODEL);
    assert_eq!(r.class, FailureClass::NoQuota, "{r:?}");
    assert_eq!(r.limit, Some(0));

    let r = read(
        &c.generate("kt", MODEL, &prompt(&"x".repeat(100))).await,
        MODEL,
    );
    assert_eq!(r.class, FailureClass::Cooldown, "{r:?}");
    assert_eq!(r.dimension, Some(Dimension::InputTokensPerMinute));
    assert_eq!(r.limit, Some(10));
}

#[tokio::test]
async fn key_project_and_fault_errors_classify_as_quotas_md_says() {
    let mut config = simple(Limits::unlimited());
    let states = [
        (KeyState::Invalid, FailureClass::KeyDead),
        (KeyState::Expired, FailureClass::KeyDead),
        (KeyState::Leaked, FailureClass::KeyDead),
        (KeyState::ServiceBlocked, FailureClass::KeyDead),
        (KeyState::KeyTypeRejected, FailureClass::KeyDead),
        (KeyState::ProjectSuspended, FailureClass::ProjectDead),
        (KeyState::ProjectDenied, FailureClass::ProjectDead),
    ];
    for (i, (state, _)) in states.iter().enumerate() {
        let mut k = key(&format!("s{i}"), "p1");
        k.state = *state;
        config.keys.push(k);
    }
    for (word, fault) in [
        ("OVERLOADED", ScriptFault::Overloaded),
        ("STREAMDATA", ScriptFault::StreamErrorData),
        ("STREAMRAW", ScriptFault::StreamErrorRaw),
    ] {
        config.script.push(ScriptRule {
            prompt_contains: Some(word.into()),
            respond: ScriptResponse::Fault(fault),
            ..ScriptRule::default()
        });
    }
    let emu = start(config).await;
    let c = Client::new(&emu);
    for (i, (state, class)) in states.iter().enumerate() {
        let r = read(
            &c.generate(&format!("s{i}"), MODEL, &prompt("a")).await,
            MODEL,
        );
        assert_eq!(r.class, *class, "{state:?}: {r:?}");
        assert!(!r.in_stream);
    }
    let r = read(&c.generate("k1", MODEL, &prompt("OVERLOADED")).await, MODEL);
    assert_eq!(r.class, FailureClass::Transient, "{r:?}");
    for word in ["STREAMDATA", "STREAMRAW"] {
        let a = c.stream("k1", MODEL, &prompt(word)).await;
        assert_eq!(a.status, 200);
        let r = read(&a, MODEL);
        assert_eq!(r.class, FailureClass::Transient, "{word}: {r:?}");
        assert!(r.in_stream, "{word}");
    }
    let a = c.generate("k1", "gemini-0-nonexistent", &prompt("a")).await;
    let r = read(&a, "gemini-0-nonexistent");
    assert_eq!(r.class, FailureClass::BadRequest, "{r:?}");
}
