//! Google-shaped error bodies (`{"error":{code,message,status,details}}`), modelled on the real
//! captures in shared/cases/ (file names cited per function). Pure.

use std::time::Duration;

use gemfleet_gemini::{Dimension, Tier};
use serde_json::{Value, json};

use crate::config::KeyState;
use crate::quota::Refusal;

/// An error answer: HTTP status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct GoogleError {
    pub status: u16,
    pub body: Value,
}

fn error(code: u16, status: &str, message: &str, details: Vec<Value>) -> GoogleError {
    let mut inner = json!({"code": code, "message": message, "status": status});
    if !details.is_empty() {
        inner["details"] = Value::Array(details);
    }
    GoogleError {
        status: code,
        body: json!({ "error": inner }),
    }
}

const SERVICE: &str = "generativelanguage.googleapis.com";

fn error_info(reason: &str, metadata: Value) -> Value {
    json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
           "domain": "googleapis.com", "metadata": metadata})
}

fn localized(message: &str) -> Value {
    json!({"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
           "message": message})
}

/// The RPC method name Google puts in errors, e.g. `…GenerativeService.StreamGenerateContent`.
pub fn rpc_method(version: &str, method: &str) -> String {
    let mut upper = method.to_owned();
    if let Some(first) = upper.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    format!("google.ai.generativelanguage.{version}.GenerativeService.{upper}")
}

/// 429 RESOURCE_EXHAUSTED for a quota refusal (c03, c04): Help, QuotaFailure (quotaValue
/// omitted when the limit is 0, as proto3 does), RetryInfo; message with one
/// `* Quota exceeded for metric: M, limit: N, model: X` line per violation.
pub fn quota_exceeded(model: &str, tier: Tier, refusal: &Refusal) -> GoogleError {
    let mut message = String::from(
        "You exceeded your current quota, please check your plan and billing details. For more \
         information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. \
         To monitor your current usage, head to: https://ai.dev/rate-limit. \n",
    );
    let mut violations = Vec::new();
    for v in &refusal.violations {
        let (metric, quota_id) = quota_names(v.dimension, tier);
        message.push_str(&format!(
            "* Quota exceeded for metric: {metric}, limit: {}, model: {model}\n",
            v.limit
        ));
        let mut violation = json!({
            "quotaMetric": metric,
            "quotaId": quota_id,
            "quotaDimensions": {"location": "global", "model": model},
        });
        if v.limit > 0 {
            violation["quotaValue"] = Value::String(v.limit.to_string());
        }
        violations.push(violation);
    }
    message.push_str(&format!(
        "Please retry in {}.",
        prose_seconds(refusal.retry_after)
    ));
    error(
        429,
        "RESOURCE_EXHAUSTED",
        &message,
        vec![
            json!({"@type": "type.googleapis.com/google.rpc.Help", "links": [{
                "description": "Learn more about Gemini API quotas",
                "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]}),
            json!({"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                   "violations": violations}),
            json!({"@type": "type.googleapis.com/google.rpc.RetryInfo",
                   "retryDelay": retry_delay(refusal.retry_after)}),
        ],
    )
}

/// (quotaMetric, quotaId) of a dimension on a tier, as Google names them.
pub fn quota_names(dimension: Dimension, tier: Tier) -> (String, &'static str) {
    let free = tier == Tier::Free;
    let (metric, id) = match (dimension, free) {
        (Dimension::RequestsPerMinute, true) => (
            "generate_content_free_tier_requests",
            "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
        ),
        (Dimension::RequestsPerMinute, false) => (
            "generate_content_paid_tier_requests",
            "GenerateRequestsPerMinutePerProjectPerModel",
        ),
        (Dimension::InputTokensPerMinute, true) => (
            "generate_content_free_tier_input_token_count",
            "GenerateContentInputTokensPerModelPerMinute-FreeTier",
        ),
        (Dimension::InputTokensPerMinute, false) => (
            "generate_content_paid_tier_input_token_count",
            "GenerateContentPaidTierInputTokensPerModelPerMinute",
        ),
        (Dimension::RequestsPerDay, true) => (
            "generate_content_free_tier_requests",
            "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
        ),
        (Dimension::RequestsPerDay, false) => (
            "generate_content_paid_tier_requests",
            "GenerateRequestsPerDayPerProjectPerModel",
        ),
        (Dimension::InputTokensPerDay, true) => (
            "generate_content_free_tier_input_token_count",
            "GenerateContentInputTokensPerModelPerDay-FreeTier",
        ),
        (Dimension::InputTokensPerDay, false) => (
            "generate_content_paid_tier_input_token_count",
            "GenerateContentPaidTierInputTokensPerModelPerDay",
        ),
    };
    (format!("{SERVICE}/{metric}"), id)
}

/// RetryInfo `retryDelay`: whole seconds, rounded UP. Google floors (c03: 51.6 s → "51s"); we
/// ceil so that a client trusting it never comes back early, and so a compressed-minute delay
/// of 0.4 s is not stated as "0s".
pub fn retry_delay(d: Duration) -> String {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    format!("{}s", secs.max(1))
}

/// The message's `Please retry in 51.606482386s` form: seconds with up to 9 decimals.
pub fn prose_seconds(d: Duration) -> String {
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        format!("{}s", d.as_secs())
    } else {
        let frac = format!("{nanos:09}");
        format!("{}.{}s", d.as_secs(), frac.trim_end_matches('0'))
    }
}

/// The error for a key (or its project) that is not usable; `None` for a valid key.
/// `method` is the RPC method name (see [`rpc_method`]).
pub fn key_error(state: KeyState, method: &str, project_number: u64) -> Option<GoogleError> {
    let consumer = format!("projects/{project_number}");
    Some(match state {
        KeyState::Valid => return None,
        // c23
        KeyState::Invalid => {
            let m = "API key not valid. Please pass a valid API key.";
            error(
                400,
                "INVALID_ARGUMENT",
                m,
                vec![
                    error_info("API_KEY_INVALID", json!({"service": SERVICE})),
                    localized(m),
                ],
            )
        }
        // Same reason as invalid, other prose (seen on expired keys).
        KeyState::Expired => {
            let m = "API key expired. Please renew the API key.";
            error(
                400,
                "INVALID_ARGUMENT",
                m,
                vec![
                    error_info("API_KEY_INVALID", json!({"service": SERVICE})),
                    localized(m),
                ],
            )
        }
        // c25: no details at all.
        KeyState::Leaked => error(
            403,
            "PERMISSION_DENIED",
            "Your API key was reported as leaked. Please use another API key.",
            vec![],
        ),
        // c28
        KeyState::ServiceBlocked => {
            let m = format!("Requests to this API {SERVICE} method {method} are blocked.");
            error(
                403,
                "PERMISSION_DENIED",
                &m,
                vec![
                    error_info(
                        "API_KEY_SERVICE_BLOCKED",
                        json!({"consumer": consumer, "service": SERVICE,
                               "apiName": SERVICE, "methodName": method}),
                    ),
                    localized(&m),
                ],
            )
        }
        // Standard API keys rejected (2026): 401 on the API-key path.
        KeyState::KeyTypeRejected => error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, \
             login cookie or other valid authentication credential. See \
             https://developers.google.com/identity/sign-in/web/devconsole-project.",
            vec![error_info(
                "ACCESS_TOKEN_TYPE_UNSUPPORTED",
                json!({"method": method, "service": SERVICE}),
            )],
        ),
        // c26. Google's message names the consumer as `api_key:<the key>`; we name the project
        // instead so that the emulator never echoes a secret.
        KeyState::ProjectSuspended => error(
            403,
            "PERMISSION_DENIED",
            &format!("Permission denied: Consumer '{consumer}' has been suspended."),
            vec![error_info(
                "CONSUMER_SUSPENDED",
                json!({"service": SERVICE, "consumer": consumer}),
            )],
        ),
        KeyState::ProjectDenied => error(
            403,
            "PERMISSION_DENIED",
            "Your project has been denied access. Please contact support.",
            vec![],
        ),
    })
}

/// No key at all (no header, no `?key=`).
pub fn missing_key() -> GoogleError {
    error(
        403,
        "PERMISSION_DENIED",
        "Method doesn't allow unregistered callers (callers without established identity). \
         Please use API Key or other form of API consumer identity to call this API.",
        vec![],
    )
}

/// A model id the emulator does not serve.
pub fn unknown_model(model: &str, version: &str, method: &str) -> GoogleError {
    error(
        404,
        "NOT_FOUND",
        &format!(
            "models/{model} is not found for API version {version}, or is not supported for \
             {method}. Call ListModels to see the list of available models and their supported \
             methods."
        ),
        vec![],
    )
}

/// A URL the API does not have.
pub fn not_found(path: &str) -> GoogleError {
    let shown: String = path.chars().take(200).collect();
    error(
        404,
        "NOT_FOUND",
        &format!("Method not found: {shown}"),
        vec![],
    )
}

pub fn method_not_allowed() -> GoogleError {
    error(
        405,
        "UNIMPLEMENTED",
        "The requested HTTP method is not supported for this URL.",
        vec![],
    )
}

/// A body that is not JSON (or not the right JSON).
pub fn invalid_json(detail: &str) -> GoogleError {
    let m = format!("Invalid JSON payload received. {detail}");
    error(
        400,
        "INVALID_ARGUMENT",
        &m,
        vec![json!({"@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"description": m}]})],
    )
}

/// A well-formed request that can never pass (e.g. no contents).
pub fn invalid_argument(message: &str) -> GoogleError {
    error(400, "INVALID_ARGUMENT", message, vec![])
}

/// c14
pub fn overloaded() -> GoogleError {
    error(
        503,
        "UNAVAILABLE",
        "The model is overloaded. Please try again later.",
        vec![],
    )
}

/// c13: the error Google writes inside a 200 stream.
pub fn high_demand() -> GoogleError {
    error(
        503,
        "UNAVAILABLE",
        "This model is currently experiencing high demand. Spikes in demand are usually \
         temporary. Please try again later.",
        vec![],
    )
}

pub fn internal() -> GoogleError {
    error(
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in \
         https://developers.generativeai.google/guide/troubleshooting",
        vec![],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::Violation;

    #[test]
    fn delays_are_whole_seconds_rounded_up_and_prose_is_exact() {
        assert_eq!(retry_delay(Duration::from_millis(400)), "1s");
        assert_eq!(retry_delay(Duration::from_millis(26_000)), "26s");
        assert_eq!(retry_delay(Duration::from_millis(26_001)), "27s");
        assert_eq!(prose_seconds(Duration::from_millis(51_606)), "51.606s");
        assert_eq!(prose_seconds(Duration::from_secs(3)), "3s");
    }

    #[test]
    fn limit_zero_omits_quota_value() {
        let r = Refusal {
            violations: vec![Violation {
                dimension: Dimension::RequestsPerMinute,
                limit: 0,
            }],
            retry_after: Duration::from_secs(17),
        };
        let e = quota_exceeded("gemini-2.0-flash", Tier::Free, &r);
        let v = &e.body["error"]["details"][1]["violations"][0];
        assert!(v.get("quotaValue").is_none());
        assert_eq!(
            v["quotaId"],
            "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
        );
        let msg = e.body["error"]["message"].as_str().unwrap();
        assert!(msg.contains("limit: 0, model: gemini-2.0-flash"));
        assert!(msg.ends_with("Please retry in 17s."));
    }
}
