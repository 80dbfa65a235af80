//! Cases added for every kind the rules name that the shared corpus has no file for. Each is
//! written the way the service (or a client) really shapes it, and each is its own test.

use crate::{now, t};
use gemfleet_gemini::{
    Classification, Dimension, FailureClass as C, Scope, Tier, classify, classify_http, pacific,
};
use serde_json::{Value, json};

fn at(status: Option<u16>, body: &str) -> Classification {
    classify(status, body, Some("gemini-2.5-flash"), now())
}

fn quota_failure(quota_id: &str, metric: &str, value: Option<&str>) -> Value {
    let mut v = json!({
        "quotaMetric": metric,
        "quotaId": quota_id,
        "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"},
    });
    if let Some(value) = value {
        v["quotaValue"] = json!(value);
    }
    json!({"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [v]})
}

fn retry_info(delay: &str) -> Value {
    json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})
}

fn help() -> Value {
    json!({"@type": "type.googleapis.com/google.rpc.Help", "links": [{"description": "Learn more", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]})
}

fn error_info(reason: &str, domain: &str, metadata: Value) -> Value {
    json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": domain, "metadata": metadata})
}

fn body(code: u16, status: &str, message: &str, details: Vec<Value>) -> String {
    let mut e = json!({"code": code, "message": message, "status": status});
    if !details.is_empty() {
        e["details"] = Value::Array(details);
    }
    json!({ "error": e }).to_string()
}

const EXCEEDED: &str =
    "You exceeded your current quota, please check your plan and billing details.";

fn per_day_429(retry: &str) -> String {
    body(
        429,
        "RESOURCE_EXHAUSTED",
        EXCEEDED,
        vec![
            quota_failure(
                "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                Some("250"),
            ),
            retry_info(retry),
        ],
    )
}

fn assert_no_key_penalty(c: &Classification) {
    assert!(
        !c.class.penalises_key(),
        "{c:?} must not count against the key"
    );
}

#[test]
fn per_day_with_a_50s_retry_delay_is_daily_until_pacific_midnight() {
    let c = at(Some(429), &per_day_429("50s"));
    assert_eq!(c.class, C::Daily);
    assert_eq!(c.scope, Scope::ProjectModel);
    assert_eq!(c.dimension, Some(Dimension::RequestsPerDay));
    assert_eq!(c.until, Some(t("2026-03-09T07:00:00Z")));
    assert_eq!(c.limit, Some(250));
    assert_eq!(c.tier, Some(Tier::Free));
    assert_eq!(
        c.retry_after_ms,
        Some(50_000),
        "the stated delay is kept as stated"
    );
    assert_eq!(
        c.quota_id.as_deref(),
        Some("GenerateRequestsPerDayPerProjectPerModel-FreeTier")
    );
    assert_no_key_penalty(&c);
}

#[test]
fn daily_across_the_dst_end_lands_on_the_25_hour_days_end() {
    let c = classify(
        Some(429),
        &per_day_429("50s"),
        None,
        t("2026-11-01T07:30:00Z"),
    );
    assert_eq!(c.until, Some(t("2026-11-02T08:00:00Z")));
    assert_eq!(
        c.until,
        Some(pacific::next_midnight(t("2026-11-01T07:30:00Z")))
    );
}

#[test]
fn input_tokens_per_day_is_daily_on_that_dimension() {
    let b = body(
        429,
        "RESOURCE_EXHAUSTED",
        EXCEEDED,
        vec![quota_failure(
            "GenerateContentInputTokensPerModelPerDay-FreeTier",
            "generativelanguage.googleapis.com/generate_content_free_tier_input_token_count",
            Some("1000000"),
        )],
    );
    let c = at(Some(429), &b);
    assert_eq!(c.class, C::Daily);
    assert_eq!(c.dimension, Some(Dimension::InputTokensPerDay));
    assert_eq!(c.limit, Some(1_000_000));
}

#[test]
fn a_day_limit_wins_over_a_minute_limit_in_any_order() {
    let minute = quota_failure(
        "GenerateRequestsPerMinutePerProjectPerModel",
        "generativelanguage.googleapis.com/generate_content_paid_tier_requests",
        Some("1000"),
    );
    let day = quota_failure(
        "GenerateRequestsPerDayPerProjectPerModel",
        "generativelanguage.googleapis.com/generate_content_paid_tier_requests",
        Some("10000"),
    );
    for details in [vec![minute.clone(), day.clone()], vec![day, minute]] {
        let c = at(
            Some(429),
            &body(429, "RESOURCE_EXHAUSTED", EXCEEDED, details),
        );
        assert_eq!(c.class, C::Daily);
        assert_eq!(c.limit, Some(10_000));
        assert_eq!(c.tier, Some(Tier::Paid), "paid_tier in the metric");
    }
}

#[test]
fn array_body_with_reversed_details_reads_the_same() {
    let details = vec![
        retry_info("33s"),
        quota_failure(
            "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            Some("10"),
        ),
        help(),
    ];
    let object = body(429, "RESOURCE_EXHAUSTED", EXCEEDED, details);
    let array = format!("[{object}]");
    for text in [object, array] {
        let c = at(Some(429), &text);
        assert_eq!(c.class, C::Cooldown);
        assert_eq!(c.dimension, Some(Dimension::RequestsPerMinute));
        assert_eq!(c.retry_after_ms, Some(33_000));
        assert_eq!(c.limit, Some(10));
        assert_eq!(c.until, None);
        assert_no_key_penalty(&c);
    }
}

#[test]
fn quota_reset_delay_go_duration_wins_over_retry_delay() {
    let b = body(
        429,
        "RESOURCE_EXHAUSTED",
        "Quota exhausted.",
        vec![
            retry_info("26s"),
            error_info(
                "RATE_LIMIT_EXCEEDED",
                "googleapis.com",
                json!({"quotaResetDelay": "161h39m41.3s"}),
            ),
        ],
    );
    let c = at(Some(429), &b);
    assert_eq!(
        c.retry_after_ms,
        Some(((161 * 60 + 39) * 60 + 41) * 1000 + 300)
    );
}

#[test]
fn a_sub_second_go_duration_is_never_rounded_to_zero() {
    let b = body(
        429,
        "RESOURCE_EXHAUSTED",
        "Quota exhausted.",
        vec![error_info(
            "RATE_LIMIT_EXCEEDED",
            "googleapis.com",
            json!({"quotaResetDelay": "579.276118ms"}),
        )],
    );
    assert_eq!(at(Some(429), &b).retry_after_ms, Some(580));
}

#[test]
fn a_sub_second_protobuf_duration_is_never_rounded_to_zero() {
    let b = body(
        429,
        "RESOURCE_EXHAUSTED",
        EXCEEDED,
        vec![retry_info("0.000300s")],
    );
    let c = at(Some(429), &b);
    assert_eq!(c.retry_after_ms, Some(1));
    let b = body(
        429,
        "RESOURCE_EXHAUSTED",
        EXCEEDED,
        vec![retry_info("0.579276118s")],
    );
    assert_eq!(at(Some(429), &b).retry_after_ms, Some(580));
}

#[test]
fn a_stated_zero_delay_gets_a_small_floor() {
    let b = body(429, "RESOURCE_EXHAUSTED", EXCEEDED, vec![retry_info("0s")]);
    let c = at(Some(429), &b);
    assert_eq!(c.class, C::Cooldown);
    assert_eq!(c.retry_after_ms, Some(1_000));
}

#[test]
fn quota_reset_timestamp_gives_until_and_the_delay_from_now() {
    let b = body(
        429,
        "RESOURCE_EXHAUSTED",
        "Individual quota reached.",
        vec![error_info(
            "QUOTA_EXHAUSTED",
            "cloudcode-pa.googleapis.com",
            json!({"quotaResetTimeStamp": "2026-03-08T12:00:00Z"}),
        )],
    );
    let c = at(Some(429), &b);
    assert_eq!(c.class, C::Daily);
    assert_eq!(c.scope, Scope::AccountModel);
    assert_eq!(c.until, Some(t("2026-03-08T12:00:00Z")));
    assert_eq!(c.retry_after_ms, Some(150 * 60 * 1000));
}

#[test]
fn prose_delays_are_read_in_every_spelling() {
    for (message, ms) in [
        ("Quota exceeded. Please retry in 51.6s.", 51_600),
        (
            "You have exhausted your capacity on this model. Your quota will reset after 8h44m7s.",
            31_447_000,
        ),
        ("Individual quota reached. Resets in 9h22m20s.", 33_740_000),
        ("Rate limited. Please retry in 750ms.", 750),
        ("Too many requests, retry after 30 seconds", 30_000),
    ] {
        let c = at(Some(429), &body(429, "RESOURCE_EXHAUSTED", message, vec![]));
        assert_eq!(c.retry_after_ms, Some(ms), "{message}");
    }
}

#[test]
fn limit_zero_in_the_message_alone_is_no_quota() {
    let msg = "Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 0, model: gemini-2.5-pro\nPlease retry in 7s.";
    let c = at(Some(429), &body(429, "RESOURCE_EXHAUSTED", msg, vec![]));
    assert_eq!(c.class, C::NoQuota);
    assert_eq!(c.limit, Some(0));
    assert_eq!(c.tier, Some(Tier::Free));
}

#[test]
fn a_limit_stated_only_in_the_message_is_learned() {
    let msg = "Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 15, model: gemini-2.5-pro";
    let c = at(
        Some(429),
        &body(429, "RESOURCE_EXHAUSTED", msg, vec![retry_info("9s")]),
    );
    assert_eq!(c.class, C::Cooldown);
    assert_eq!(c.limit, Some(15));
    assert_eq!(c.retry_after_ms, Some(9_000));
}

#[test]
fn no_free_quota_tier_is_no_quota() {
    let msg = "Gemini 2.5 Pro Preview doesn't have a free quota tier. Please use Gemini 2.5 Pro Experimental (models/gemini-2.5-pro-exp-03-25) instead.";
    let c = at(Some(429), &body(429, "RESOURCE_EXHAUSTED", msg, vec![]));
    assert_eq!(c.class, C::NoQuota);
    assert_eq!(c.limit, Some(0));
}

#[test]
fn expired_key_is_dead() {
    let b = body(
        400,
        "INVALID_ARGUMENT",
        "API key expired. Please renew the API key.",
        vec![error_info(
            "API_KEY_INVALID",
            "googleapis.com",
            json!({"service": "generativelanguage.googleapis.com"}),
        )],
    );
    let c = at(Some(400), &b);
    assert_eq!((c.class, c.scope), (C::KeyDead, Scope::Key));
    assert!(c.class.penalises_key());
}

#[test]
fn rejected_key_type_is_dead() {
    let b = body(
        401,
        "UNAUTHENTICATED",
        "API keys are not supported by this API. Expected OAuth2 access token or other authentication credentials that assert a principal.",
        vec![error_info(
            "ACCESS_TOKEN_TYPE_UNSUPPORTED",
            "googleapis.com",
            json!({"service": "generativelanguage.googleapis.com"}),
        )],
    );
    let c = at(Some(401), &b);
    assert_eq!((c.class, c.scope), (C::KeyDead, Scope::Key));
}

#[test]
fn project_denied_access_kills_the_project_not_the_key() {
    let b = body(
        403,
        "PERMISSION_DENIED",
        "Your project has been denied access. Please contact support.",
        vec![],
    );
    let c = at(Some(403), &b);
    assert_eq!((c.class, c.scope), (C::ProjectDead, Scope::Project));
    assert_no_key_penalty(&c);
}

#[test]
fn service_disabled_json_is_project_config() {
    let b = body(
        403,
        "PERMISSION_DENIED",
        "Generative Language API has not been used in project 123 before or it is disabled. Enable it by visiting https://console.developers.google.com/apis/api/generativelanguage.googleapis.com/overview?project=123 then retry.",
        vec![error_info(
            "SERVICE_DISABLED",
            "googleapis.com",
            json!({"consumer": "projects/123", "service": "generativelanguage.googleapis.com"}),
        )],
    );
    let c = at(Some(403), &b);
    assert_eq!((c.class, c.scope), (C::ProjectConfig, Scope::Project));
}

#[test]
fn billing_disabled_is_project_config() {
    let b = body(
        403,
        "PERMISSION_DENIED",
        "This API method requires billing to be enabled. Please enable billing on project #123 by visiting https://console.developers.google.com/billing/enable?project=123 then retry.",
        vec![error_info(
            "BILLING_DISABLED",
            "googleapis.com",
            json!({"consumer": "projects/123"}),
        )],
    );
    let c = at(Some(403), &b);
    assert_eq!((c.class, c.scope), (C::ProjectConfig, Scope::Project));
}

#[test]
fn depleted_prepaid_credits_block_billing() {
    let b = body(
        429,
        "RESOURCE_EXHAUSTED",
        "Your prepayment credits are depleted. Please go to AI Studio at https://ai.studio/projects to manage your project and billing.",
        vec![],
    );
    let c = at(Some(429), &b);
    assert_eq!(
        (c.class, c.scope),
        (C::BillingBlocked, Scope::BillingAccount)
    );
    assert_no_key_penalty(&c);
}

#[test]
fn free_tier_not_in_this_country_is_the_environment() {
    let b = body(
        400,
        "FAILED_PRECONDITION",
        "Gemini API free tier is not available in your country. Please enable billing on your project in Google AI Studio.",
        vec![],
    );
    let c = at(Some(400), &b);
    assert_eq!((c.class, c.scope), (C::Environment, Scope::Egress));
}

#[test]
fn an_ip_restricted_key_blocked_here_is_the_egress_not_a_dead_key() {
    let b = body(
        403,
        "PERMISSION_DENIED",
        "The provided API key has an IP address restriction. The originating IP address of the call (203.0.113.9) violates this restriction.",
        vec![error_info(
            "API_KEY_IP_ADDRESS_BLOCKED",
            "googleapis.com",
            json!({}),
        )],
    );
    let c = at(Some(403), &b);
    assert_eq!((c.class, c.scope), (C::Environment, Scope::Egress));
    assert_no_key_penalty(&c);
}

#[test]
fn internal_500_is_transient() {
    let b = body(
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
        vec![],
    );
    let c = at(Some(500), &b);
    assert_eq!((c.class, c.scope), (C::Transient, Scope::Model));
    assert_no_key_penalty(&c);
}

#[test]
fn a_503_with_retry_info_keeps_the_delay() {
    let b = body(
        503,
        "UNAVAILABLE",
        "The service is currently unavailable.",
        vec![retry_info("12s")],
    );
    let c = at(Some(503), &b);
    assert_eq!(c.class, C::Transient);
    assert_eq!(c.retry_after_ms, Some(12_000));
}

#[test]
fn a_bare_429_with_no_body_cools_down_and_spares_the_key() {
    for text in ["", "<html><body>Too Many Requests</body></html>"] {
        let c = classify_http(429, text.as_bytes(), None, now());
        assert_eq!(c.class, C::Cooldown, "{text:?}");
        assert_eq!(c.retry_after_ms, Some(60_000));
        assert_no_key_penalty(&c);
    }
}

#[test]
fn vertex_style_429_with_errors_list_is_shared_capacity() {
    let b = json!({"error": {"code": 429, "message": "Resource exhausted. Please try again later. Please refer to https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details.", "errors": [{"message": "Resource exhausted.", "domain": "global", "reason": "rateLimitExceeded"}], "status": "RESOURCE_EXHAUSTED"}}).to_string();
    let c = at(Some(429), &b);
    assert_eq!((c.class, c.scope), (C::Transient, Scope::Model));
}

#[test]
fn model_not_found_and_invalid_arguments_are_bad_requests() {
    let b = body(
        404,
        "NOT_FOUND",
        "models/gemini-9 is not found for API version v1beta, or is not supported for generateContent.",
        vec![],
    );
    assert_eq!(at(Some(404), &b).class, C::BadRequest);
    let b = body(
        400,
        "INVALID_ARGUMENT",
        "Request contains an invalid argument.",
        vec![],
    );
    let c = at(Some(400), &b);
    assert_eq!((c.class, c.scope), (C::BadRequest, Scope::Request));
}

const CHUNK: &str = r#"{"candidates":[{"content":{"parts":[{"text":"Hel"}],"role":"model"}}],"usageMetadata":{"promptTokenCount":10,"totalTokenCount":10},"modelVersion":"gemini-2.5-flash"}"#;

#[test]
fn a_data_error_event_mid_stream_is_a_failure_in_stream() {
    let err = per_day_429("50s");
    let stream = format!("data: {CHUNK}\r\n\r\ndata: {err}\r\n\r\n");
    let c = at(Some(200), &stream);
    assert_eq!(c.class, C::Daily);
    assert!(c.in_stream);
    // With no status at all, SSE framing alone says it was a 200 stream.
    assert!(at(None, &stream).in_stream);
}

#[test]
fn raw_multi_line_json_mid_stream_is_a_failure_in_stream() {
    let stream = format!(
        "data: {CHUNK}\n\n{{\n  \"error\": {{\n    \"code\": 500,\n    \"message\": \"An internal error has occurred.\",\n    \"status\": \"INTERNAL\"\n  }}\n}}\n"
    );
    let c = at(Some(200), &stream);
    assert_eq!(c.class, C::Transient);
    assert!(c.in_stream);
    let c = at(None, &stream);
    assert_eq!(c.class, C::Transient);
    assert!(c.in_stream);
}

#[test]
fn an_error_after_chunks_of_a_json_array_stream_is_in_stream() {
    let stream = format!(
        "[{CHUNK},\n{}]",
        body(503, "UNAVAILABLE", "The model is overloaded.", vec![])
    );
    let c = at(Some(200), &stream);
    assert_eq!(c.class, C::Transient);
    assert!(c.in_stream);
    assert!(at(None, &stream).in_stream);
}

#[test]
fn a_successful_body_or_stream_is_no_failure() {
    for text in [CHUNK.to_owned(), format!("data: {CHUNK}\n\n")] {
        let c = at(Some(200), &text);
        assert_eq!(c.class, C::Unknown);
        assert!(!c.in_stream);
    }
}

#[test]
fn cli_printed_error_with_status_prefix_is_read() {
    let printed = "✕ [API Error: got status: UNAVAILABLE. {\"error\":{\"code\":503,\"message\":\"The model is overloaded. Please try again later.\",\"status\":\"UNAVAILABLE\"}}]";
    let c = at(None, printed);
    assert_eq!(c.class, C::Transient);
}

#[test]
fn cli_printed_sdk_wrapper_around_a_per_day_body_is_daily() {
    let inner = per_day_429("50s");
    let wrapper = json!({"error": {"message": inner, "code": 429, "status": "Too Many Requests"}});
    let printed = format!("✕ [API Error: {wrapper}]\nPlease wait and try again later.");
    let c = at(None, &printed);
    assert_eq!(c.class, C::Daily);
    assert_eq!(c.until, Some(t("2026-03-09T07:00:00Z")));
    assert_eq!(c.limit, Some(250));
}

#[test]
fn js_sdk_print_with_a_details_array_is_read() {
    let details = json!([
        quota_failure(
            "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
            "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            Some("20"),
        ),
        retry_info("51s"),
    ]);
    let printed = format!(
        "[GoogleGenerativeAI Error]: Error fetching from https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent: [429 Too Many Requests] {EXCEEDED} {details}"
    );
    let c = at(None, &printed);
    assert_eq!(c.class, C::Daily);
    assert_eq!(c.limit, Some(20));
    assert_eq!(c.retry_after_ms, Some(51_000));
}

#[test]
fn cli_daily_quota_notice_on_the_api_key_path_is_daily_until_midnight() {
    let c = at(None, "You have exhausted your daily quota on this model.");
    assert_eq!(c.class, C::Daily);
    assert_eq!(c.scope, Scope::ProjectModel);
    assert_eq!(c.until, Some(t("2026-03-09T07:00:00Z")));
}

#[test]
fn cli_fallback_notice_is_a_cooldown() {
    let c = at(
        None,
        "Possible quota limitations in place or slow response times detected. Switching to the gemini-2.5-flash model for the rest of this session.",
    );
    assert_eq!(c.class, C::Cooldown);
}

#[test]
fn no_error_at_all_is_unknown_not_a_crash() {
    for text in ["", "   ", "hello", "{}", "[]", "null", "data: [DONE]\n\n"] {
        let c = classify(None, text, None, now());
        assert_eq!(c.class, C::Unknown, "{text:?}");
        assert!(!c.class.penalises_key());
    }
}

#[test]
fn only_key_reasons_penalise_a_key() {
    let non_key = [
        (429, per_day_429("50s")),
        (
            429,
            body(
                429,
                "RESOURCE_EXHAUSTED",
                "Resource has been exhausted (e.g. check quota).",
                vec![],
            ),
        ),
        (
            503,
            body(503, "UNAVAILABLE", "The model is overloaded.", vec![]),
        ),
        (
            403,
            body(
                403,
                "PERMISSION_DENIED",
                "Permission denied: Consumer 'api_key:x' has been suspended.",
                vec![error_info(
                    "CONSUMER_SUSPENDED",
                    "googleapis.com",
                    json!({}),
                )],
            ),
        ),
        (
            400,
            body(
                400,
                "FAILED_PRECONDITION",
                "User location is not supported for the API use.",
                vec![],
            ),
        ),
    ];
    for (status, b) in non_key {
        assert_no_key_penalty(&at(Some(status), &b));
    }
}

#[test]
fn every_pattern_compiles() {
    assert!(gemfleet_gemini::classify::patterns_compile());
}

#[test]
fn the_proxy_path_classifies_an_error_item_straight_from_the_parser() {
    let stream = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/c13-gemini-503-in-stream.http200.txt"),
    )
    .unwrap();
    let mut parser = gemfleet_gemini::sse::SseParser::new();
    let mut items = Vec::new();
    for piece in stream.as_bytes().chunks(5) {
        parser.push(piece, &mut items);
    }
    parser.finish(&mut items);
    let errors: Vec<_> = items.iter().filter(|i| i.is_error()).collect();
    assert_eq!(errors.len(), 1);
    let c = classify(Some(200), errors[0].json(), Some("gemini-3-pro"), now());
    assert_eq!(c.class, C::Transient);
    assert!(c.in_stream);
}

#[test]
fn a_whole_violation_without_quota_value_means_limit_zero() {
    // proto3 omits a zero quotaValue; the message here says nothing about the limit.
    let b = body(
        429,
        "RESOURCE_EXHAUSTED",
        EXCEEDED,
        vec![quota_failure(
            "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            None,
        )],
    );
    let c = at(Some(429), &b);
    assert_eq!(c.class, C::NoQuota);
    assert_eq!(c.limit, Some(0));
    assert_eq!(c.tier, Some(Tier::Free));
}

#[test]
fn vertex_quota_prose_names_its_dimension() {
    let msg = "Quota exceeded for aiplatform.googleapis.com/generate_content_requests_per_minute_per_project_per_base_model with base model: gemini-1.5-pro. Please submit a quota increase request.";
    let c = at(Some(429), &body(429, "RESOURCE_EXHAUSTED", msg, vec![]));
    assert_eq!(c.class, C::Cooldown);
    assert_eq!(c.dimension, Some(Dimension::RequestsPerMinute));
}

#[test]
fn cli_print_of_a_code_assist_capacity_message_cools_the_account_down() {
    let printed = "Error when talking to Gemini API\n[API Error: You have exhausted your capacity on this model. Your quota will reset after 2h52m39s.]";
    let c = at(None, printed);
    assert_eq!((c.class, c.scope), (C::Cooldown, Scope::AccountModel));
    assert_eq!(c.retry_after_ms, Some(((2 * 60 + 52) * 60 + 39) * 1000));
}

#[test]
fn a_gaxios_print_of_a_code_assist_array_is_read() {
    let printed = r#"Attempt 1 failed with status 429. Retrying with backoff... GaxiosError: [{
  "error": {
    "code": 429,
    "message": "No capacity available for model gemini-3-flash-preview on the server",
    "errors": [{"message": "No capacity available", "domain": "global", "reason": "rateLimitExceeded"}],
    "status": "RESOURCE_EXHAUSTED",
    "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "MODEL_CAPACITY_EXHAUSTED", "domain": "cloudcode-pa.googleapis.com", "metadata": {"model": "gemini-3-flash-preview"}}]
  }
}
]
    at Gaxios._request (gaxios.js:142:23)"#;
    let c = at(None, printed);
    assert_eq!((c.class, c.scope), (C::Transient, Scope::Model));
}

#[test]
fn limit_zero_in_any_wording_is_no_quota_but_limit_05_is_not() {
    let c = at(
        Some(429),
        &body(
            429,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded (limit: 0) for this model.",
            vec![],
        ),
    );
    assert_eq!(c.class, C::NoQuota);
    let c = at(
        Some(429),
        &body(
            429,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded (limit: 05) for this model.",
            vec![],
        ),
    );
    assert_eq!(c.class, C::Cooldown);
}
