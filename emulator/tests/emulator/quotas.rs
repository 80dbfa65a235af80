//! Quotas per (project, model), with Google's 429 bodies.

use chrono::{DateTime, Utc};
use gemfleet_emulator::{Limits, Tier};
use serde_json::json;

use crate::common::*;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

#[tokio::test]
async fn rpm_plus_one_gives_exactly_one_429_with_the_per_minute_quota_id() {
    let rpm = 5;
    let emu = start(simple(Limits {
        requests_per_minute: Some(rpm),
        ..Limits::default()
    }))
    .await;
    let c = Client::new(&emu);
    let body = prompt("burst");
    let answers =
        futures::future::join_all((0..=rpm).map(|_| c.generate("k1", MODEL, &body))).await;
    let ok = answers.iter().filter(|a| a.status == 200).count();
    let limited: Vec<_> = answers.iter().filter(|a| a.status == 429).collect();
    assert_eq!(ok as u64, rpm);
    assert_eq!(limited.len(), 1);

    let a = limited[0];
    assert!(a.content_type.starts_with("application/json"));
    let e = error_of(a);
    assert_eq!(e["code"], 429);
    assert_eq!(e["status"], "RESOURCE_EXHAUSTED");
    let qf = detail(&e, "google.rpc.QuotaFailure").expect("QuotaFailure");
    let v = &qf["violations"][0];
    assert_eq!(
        v["quotaId"],
        "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
    );
    assert_eq!(
        v["quotaMetric"],
        "generativelanguage.googleapis.com/generate_content_free_tier_requests"
    );
    assert_eq!(v["quotaValue"], "5");
    assert_eq!(
        v["quotaDimensions"],
        json!({"location": "global", "model": MODEL})
    );
    let retry = detail(&e, "google.rpc.RetryInfo").expect("RetryInfo");
    let delay = retry["retryDelay"].as_str().unwrap();
    let secs: u64 = delay
        .strip_suffix('s')
        .unwrap()
        .parse()
        .expect("whole seconds");
    assert!((1..=60).contains(&secs), "{delay}");
    assert!(detail(&e, "google.rpc.Help").is_some());
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains(&format!("limit: 5, model: {MODEL}")), "{msg}");
    assert!(msg.contains("Please retry in "), "{msg}");

    let l = emu.ledger();
    let entry = l.entry("k1", MODEL).unwrap();
    assert_eq!(entry.requests, rpm);
    assert_eq!(entry.rate_limited.requests_per_minute, 1);
}

#[tokio::test]
async fn the_minute_window_slides_and_the_stated_delay_is_enough() {
    let mut config = simple(Limits {
        requests_per_minute: Some(2),
        ..Limits::default()
    });
    config.minute_seconds = 1.0;
    let emu = start(config).await;
    let c = Client::new(&emu);
    assert_eq!(c.generate("k1", MODEL, &prompt("a")).await.status, 200);
    assert_eq!(c.generate("k1", MODEL, &prompt("b")).await.status, 200);
    let refused = c.generate("k1", MODEL, &prompt("c")).await;
    assert_eq!(refused.status, 429);
    let msg = error_of(&refused)["message"].as_str().unwrap().to_owned();
    let stated: f64 = msg
        .rsplit("Please retry in ")
        .next()
        .and_then(|s| s.strip_suffix("s."))
        .unwrap()
        .parse()
        .unwrap();
    assert!(stated > 0.0 && stated <= 1.0, "{stated}");
    // Waiting what the error says is enough (plus scheduling slack): never early.
    tokio::time::sleep(std::time::Duration::from_secs_f64(stated + 0.05)).await;
    assert_eq!(c.generate("k1", MODEL, &prompt("d")).await.status, 200);
}

#[tokio::test]
async fn limits_are_per_project_not_per_key() {
    let mut config = simple(Limits {
        requests_per_minute: Some(2),
        ..Limits::default()
    });
    config.projects.push(project(
        "p2",
        Tier::Free,
        Limits {
            requests_per_minute: Some(2),
            ..Limits::default()
        },
    ));
    config.keys.push(key("k2", "p1"));
    config.keys.push(key("k3", "p2"));
    let emu = start(config).await;
    let c = Client::new(&emu);
    assert_eq!(c.generate("k1", MODEL, &prompt("a")).await.status, 200);
    assert_eq!(c.generate("k2", MODEL, &prompt("a")).await.status, 200);
    // k1 and k2 share p1's budget; another model is another quota group.
    assert_eq!(c.generate("k2", MODEL, &prompt("a")).await.status, 429);
    assert_eq!(
        c.generate("k1", "gemini-2.5-pro", &prompt("a"))
            .await
            .status,
        200
    );
    assert_eq!(c.generate("k3", MODEL, &prompt("a")).await.status, 200);
    let usage = emu.group_usage("p1", MODEL).unwrap();
    assert_eq!(usage.minute_requests, 2);
}

#[tokio::test]
async fn per_day_limit_resets_at_pacific_midnight_across_dst_changes() {
    let emu = start(simple(Limits {
        requests_per_day: Some(2),
        ..Limits::default()
    }))
    .await;
    let c = Client::new(&emu);

    // 2026-03-08: clocks spring forward; that Pacific day is 23 hours long
    // (08:00Z to 07:00Z next day).
    emu.set_now(t("2026-03-08T12:00:00Z"));
    assert_eq!(c.generate("k1", MODEL, &prompt("a")).await.status, 200);
    assert_eq!(c.generate("k1", MODEL, &prompt("b")).await.status, 200);
    let refused = c.generate("k1", MODEL, &prompt("c")).await;
    assert_eq!(refused.status, 429);
    let e = error_of(&refused);
    let v = &detail(&e, "QuotaFailure").unwrap()["violations"][0];
    assert_eq!(
        v["quotaId"],
        "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
    );
    assert_eq!(v["quotaValue"], "2");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("limit: 2, model: gemini-2.5-flash")
    );

    emu.set_now(t("2026-03-09T06:59:00Z")); // 23:59 PDT, still 8 March
    assert_eq!(c.generate("k1", MODEL, &prompt("d")).await.status, 429);
    emu.set_now(t("2026-03-09T07:00:30Z")); // 00:00:30 PDT, 9 March: reset
    assert_eq!(c.generate("k1", MODEL, &prompt("e")).await.status, 200);

    // 2026-11-01: clocks fall back; that day is 25 hours (07:00Z to 08:00Z next day).
    emu.set_now(t("2026-11-01T07:30:00Z"));
    assert_eq!(c.generate("k1", MODEL, &prompt("f")).await.status, 200);
    assert_eq!(c.generate("k1", MODEL, &prompt("g")).await.status, 200);
    emu.set_now(t("2026-11-02T07:30:00Z")); // 23:30 PST, still 1 November
    assert_eq!(c.generate("k1", MODEL, &prompt("h")).await.status, 429);
    // Through the admin surface this time.
    let r = c
        .admin_post("clock", &json!({"now": "2026-11-02T08:00:30Z"}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(c.generate("k1", MODEL, &prompt("i")).await.status, 200);

    let entry = emu.ledger().entry("k1", MODEL).cloned().unwrap();
    assert_eq!(entry.requests, 6);
    assert_eq!(entry.rate_limited.requests_per_day, 3);
}

#[tokio::test]
async fn input_token_limits_per_minute_and_per_day() {
    let mut config = simple(Limits {
        input_tokens_per_minute: Some(100),
        ..Limits::default()
    });
    config.projects.push(project(
        "paid",
        Tier::Paid,
        Limits {
            input_tokens_per_day: Some(100),
            ..Limits::default()
        },
    ));
    config.keys.push(key("kp", "paid"));
    let emu = start(config).await;
    let c = Client::new(&emu);
    let body = prompt(&"x".repeat(240)); // 60 tokens
    let first = c.generate("k1", MODEL, &body).await;
    assert_eq!(first.json()["usageMetadata"]["promptTokenCount"], 60);
    let refused = c.generate("k1", MODEL, &body).await;
    assert_eq!(refused.status, 429);
    let e = error_of(&refused);
    let v = &detail(&e, "QuotaFailure").unwrap()["violations"][0];
    assert_eq!(
        v["quotaId"],
        "GenerateContentInputTokensPerModelPerMinute-FreeTier"
    );
    assert_eq!(
        v["quotaMetric"],
        "generativelanguage.googleapis.com/generate_content_free_tier_input_token_count"
    );
    assert_eq!(v["quotaValue"], "100");
    // A smaller request still fits the minute.
    assert_eq!(
        c.generate("k1", MODEL, &prompt(&"y".repeat(160)))
            .await
            .status,
        200
    );

    // Per-day input tokens on a paid project: the paid-tier quota id.
    assert_eq!(c.generate("kp", MODEL, &body).await.status, 200);
    let refused = c.generate("kp", MODEL, &body).await;
    assert_eq!(refused.status, 429);
    let e = error_of(&refused);
    let v = &detail(&e, "QuotaFailure").unwrap()["violations"][0];
    assert_eq!(
        v["quotaId"],
        "GenerateContentPaidTierInputTokensPerModelPerDay"
    );
    assert!(!v["quotaId"].as_str().unwrap().contains("FreeTier"));
    let l = emu.ledger();
    assert_eq!(l.entry("k1", MODEL).unwrap().input_tokens, 100);
    assert_eq!(
        l.entry("k1", MODEL)
            .unwrap()
            .rate_limited
            .input_tokens_per_minute,
        1
    );
    assert_eq!(
        l.entry("kp", MODEL)
            .unwrap()
            .rate_limited
            .input_tokens_per_day,
        1
    );
}

#[tokio::test]
async fn limit_zero_has_no_quota_value_and_says_limit_0() {
    let emu = start(simple(Limits::zero())).await;
    let c = Client::new(&emu);
    let a = c
        .generate("k1", "gemini-2.0-flash", &prompt("anything"))
        .await;
    assert_eq!(a.status, 429);
    let e = error_of(&a);
    let violations = detail(&e, "QuotaFailure").unwrap()["violations"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!violations.is_empty());
    for v in &violations {
        assert!(v.get("quotaValue").is_none(), "{v}");
    }
    let ids: Vec<&str> = violations
        .iter()
        .map(|v| v["quotaId"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"GenerateRequestsPerDayPerProjectPerModel-FreeTier"));
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("limit: 0, model: gemini-2.0-flash"), "{msg}");
    assert!(detail(&e, "RetryInfo").is_some());
    // Nothing was admitted.
    assert_eq!(
        emu.ledger()
            .entry("k1", "gemini-2.0-flash")
            .unwrap()
            .requests,
        0
    );
}
