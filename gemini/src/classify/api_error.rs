//! The facts of one Google error (`google.rpc.Status` as JSON), read tolerantly.
//!
//! Google's error JSON comes in several dialects (Gemini API, Vertex, Code Assist with
//! `error.errors[]`, SDK wrappers that put the whole body into `message`). This module reads
//! whatever is there into one flat [`ApiError`] and never fails: a missing or mistyped field is
//! simply absent. Typed serde structs are deliberately not used, because one odd field (a number
//! where a string was expected) would lose every other fact in the body.

use serde_json::{Map, Value};

/// How deep SDK wrappers (`{"error":{"message":"<a whole JSON body>"}}`) are unwrapped.
const MAX_WRAP_DEPTH: usize = 4;

/// One quota the error says was exceeded (a QuotaFailure violation, an ErrorInfo with quota
/// metadata, or a `Quota exceeded for …` line of the message).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Violation {
    /// `quotaId` (`GenerateRequestsPerDayPerProjectPerModel-FreeTier`) or the limit's name
    /// (`quota_limit`, or the `limit '…'` of legacy prose).
    pub quota_id: Option<String>,
    /// `quotaMetric` / `quota_metric`.
    pub metric: Option<String>,
    /// The stated limit; `None` when the source did not state one.
    pub value: Option<u64>,
    /// Whether the violation came from a structured QuotaFailure whose fields look whole: there
    /// proto3's omission of a zero `quotaValue` means the limit is 0 (QUOTAS.md rule 2).
    pub absent_value_means_zero: bool,
    /// The model the quota dimension names, when named.
    pub model: Option<String>,
}

/// Everything the classifier looks at in one error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiError {
    /// `error.code` (the HTTP status the service meant).
    pub code: Option<u16>,
    /// `error.status` (`RESOURCE_EXHAUSTED`, …).
    pub status: Option<String>,
    /// `error.message`, or the whole printed text when the error was not JSON.
    pub message: String,
    /// ErrorInfo reasons and `errors[].reason`s, in the order found.
    pub reasons: Vec<String>,
    /// ErrorInfo domains (`googleapis.com`, `cloudcode-pa.googleapis.com`).
    pub domains: Vec<String>,
    /// ErrorInfo metadata, all entries of all ErrorInfos, in order.
    pub metadata: Vec<(String, String)>,
    pub violations: Vec<Violation>,
    /// RetryInfo `retryDelay`, as written (`26s`).
    pub retry_delay: Option<String>,
}

impl ApiError {
    /// The first metadata value under `key`.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn has_reason(&self, reason: &str) -> bool {
        self.reasons.iter().any(|r| r.eq_ignore_ascii_case(reason))
    }

    /// Reads the value of a top-level `"error"` member (object form). Returns `None` when the
    /// value carries nothing an error has (so `{"error": null}` is not an error).
    pub fn from_error_value(error: &Value) -> Option<ApiError> {
        match error {
            Value::Object(obj) => Some(Self::from_object(obj, 0)),
            // Some proxies answer `{"error": "text"}`.
            Value::String(s) if !s.trim().is_empty() => Some(ApiError {
                message: s.clone(),
                ..ApiError::default()
            }),
            _ => None,
        }
    }

    /// Finds the error in a JSON document: `{"error":…}` or the first `[…, {"error":…}]`
    /// element. The bool says whether chunks that were not errors came before it (a stream).
    pub fn from_document(doc: &Value) -> Option<(ApiError, bool)> {
        match doc {
            Value::Object(obj) => obj
                .get("error")
                .and_then(Self::from_error_value)
                .map(|e| (e, false)),
            Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
                item.as_object()
                    .and_then(|o| o.get("error"))
                    .and_then(Self::from_error_value)
                    .map(|e| (e, i > 0))
            }),
            _ => None,
        }
    }

    fn from_object(obj: &Map<String, Value>, depth: usize) -> ApiError {
        let mut e = ApiError {
            code: obj.get("code").and_then(as_u16),
            status: obj.get("status").and_then(Value::as_str).map(str::to_owned),
            message: obj
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            ..ApiError::default()
        };
        if let Some(errors) = obj.get("errors").and_then(Value::as_array) {
            for item in errors {
                if let Some(reason) = item.get("reason").and_then(Value::as_str) {
                    e.reasons.push(reason.to_owned());
                }
                if let Some(domain) = item.get("domain").and_then(Value::as_str) {
                    e.domains.push(domain.to_owned());
                }
            }
        }
        if let Some(details) = obj.get("details").and_then(Value::as_array) {
            e.read_details(details);
        }
        // SDK wrappers (@google/genai's ApiError, Gemini CLI's print) put the service's whole
        // body into `message`, with an HTTP reason phrase as `status`.
        if depth < MAX_WRAP_DEPTH
            && let Some(inner) = wrapped_body(&e.message)
            && let Some(inner_err) = inner
                .as_object()
                .and_then(|o| o.get("error"))
                .or_else(|| inner.as_array()?.first()?.get("error"))
                .and_then(Value::as_object)
        {
            let mut inner = ApiError::from_object(inner_err, depth + 1);
            inner.code = inner.code.or(e.code);
            inner.reasons.extend(e.reasons);
            inner.domains.extend(e.domains);
            inner.metadata.extend(e.metadata);
            inner.violations.extend(e.violations);
            inner.retry_delay = inner.retry_delay.or(e.retry_delay);
            return inner;
        }
        e
    }

    /// Reads `details[]` in any order; entries are recognised by their `@type` and, for
    /// clients that dropped it, by their shape.
    pub fn read_details(&mut self, details: &[Value]) {
        for d in details {
            let Some(obj) = d.as_object() else { continue };
            let ty = obj.get("@type").and_then(Value::as_str).unwrap_or_default();
            if ty.ends_with("QuotaFailure") || obj.contains_key("violations") {
                self.read_quota_failure(obj);
            } else if ty.ends_with("RetryInfo") || obj.contains_key("retryDelay") {
                if self.retry_delay.is_none() {
                    self.retry_delay = obj.get("retryDelay").and_then(duration_text);
                }
            } else if ty.ends_with("ErrorInfo") || obj.contains_key("reason") {
                self.read_error_info(obj);
            }
        }
    }

    fn read_quota_failure(&mut self, obj: &Map<String, Value>) {
        let Some(violations) = obj.get("violations").and_then(Value::as_array) else {
            return;
        };
        for v in violations {
            let Some(v) = v.as_object() else { continue };
            let dims = v.get("quotaDimensions").and_then(Value::as_object);
            let model = dims
                .and_then(|d| d.get("model"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            self.violations.push(Violation {
                quota_id: v.get("quotaId").and_then(Value::as_str).map(str::to_owned),
                metric: v
                    .get("quotaMetric")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                value: v.get("quotaValue").and_then(as_u64),
                // A violation cut before its model dimension (a partial capture) does not
                // prove a zero limit; a whole one does.
                absent_value_means_zero: model.is_some(),
                model,
            });
        }
    }

    fn read_error_info(&mut self, obj: &Map<String, Value>) {
        if let Some(reason) = obj.get("reason").and_then(Value::as_str) {
            self.reasons.push(reason.to_owned());
        }
        if let Some(domain) = obj.get("domain").and_then(Value::as_str) {
            self.domains.push(domain.to_owned());
        }
        let Some(meta) = obj.get("metadata").and_then(Value::as_object) else {
            return;
        };
        for (k, v) in meta {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            self.metadata.push((k.clone(), text));
        }
        // Legacy (2024) quota errors name the limit in ErrorInfo metadata, not QuotaFailure.
        let limit_name = meta.get("quota_limit").and_then(Value::as_str);
        let metric = meta.get("quota_metric").and_then(Value::as_str);
        if limit_name.is_some() || metric.is_some() {
            self.violations.push(Violation {
                quota_id: limit_name.map(str::to_owned),
                metric: metric.map(str::to_owned),
                value: meta.get("quota_limit_value").and_then(as_u64),
                absent_value_means_zero: false,
                model: meta.get("model").and_then(Value::as_str).map(str::to_owned),
            });
        }
    }
}

/// A JSON body inside a message string (`"{\n  \"error\": …}"`), if the message is one.
fn wrapped_body(message: &str) -> Option<Value> {
    let t = message.trim_start();
    if !(t.starts_with('{') || t.starts_with('[')) {
        return None;
    }
    serde_json::from_str::<Value>(t.trim_end()).ok()
}

/// Protobuf JSON writes durations as strings (`"26s"`); clients that print the message form
/// write `{seconds, nanos}`, and some proxies a bare number of seconds. All become `"<n>s"`.
fn duration_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(format!("{n}s")),
        Value::Object(o) => {
            let secs = o.get("seconds").and_then(as_u64).unwrap_or(0);
            let nanos = o
                .get("nanos")
                .and_then(as_u64)
                .unwrap_or(0)
                .min(999_999_999);
            Some(format!("{secs}.{nanos:09}s"))
        }
        _ => None,
    }
}

/// Protobuf JSON writes int64 as strings (`"quotaValue": "250000"`); accept numbers too.
fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_u16(v: &Value) -> Option<u16> {
    as_u64(v).and_then(|n| u16::try_from(n).ok())
}

/// The HTTP status a `google.rpc.Code` name stands for (Google's documented mapping).
pub fn http_status_of(code_name: &str) -> Option<u16> {
    Some(match code_name {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => 400,
        "UNAUTHENTICATED" => 401,
        "PERMISSION_DENIED" => 403,
        "NOT_FOUND" => 404,
        "ABORTED" | "ALREADY_EXISTS" => 409,
        "RESOURCE_EXHAUSTED" => 429,
        "CANCELLED" => 499,
        "INTERNAL" | "UNKNOWN" | "DATA_LOSS" => 500,
        "UNIMPLEMENTED" => 501,
        "UNAVAILABLE" => 503,
        "DEADLINE_EXCEEDED" => 504,
        _ => return None,
    })
}
