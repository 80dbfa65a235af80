//! The decision: from the facts of one error to the classification record (QUOTAS.md).
//!
//! Checks run from the most specific evidence to the least: a key, project, location or
//! billing reason names its culprit outright; then quota violations (dimension first, delay
//! second); then capacity signals; then what Code Assist and Gemini CLI say in words; and only
//! then the bare status code.

use super::api_error::{ApiError, Violation, http_status_of};
use super::delay::StatedDelay;
use super::quota::all_violations;
use crate::classification::{Classification, Dimension, FailureClass, Scope, Tier};
use crate::pacific;
use chrono::{DateTime, Utc};

/// A cooldown whose error states no delay waits one full minute window: after it every
/// per-minute counter has room again (Gemini CLI assumes the same 60 s).
pub const DEFAULT_COOLDOWN_MS: u64 = 60_000;

/// Everything one decision looks at.
pub struct Context<'a> {
    pub err: &'a ApiError,
    /// The effective HTTP status (the response's, or the error's own code inside a stream).
    pub code: Option<u16>,
    pub in_stream: bool,
    pub model: Option<&'a str>,
    pub now: DateTime<Utc>,
    /// Lowercased message (and printed text), searched for the service's wording.
    text: String,
    delay: StatedDelay,
}

impl<'a> Context<'a> {
    pub fn new(
        err: &'a ApiError,
        code: Option<u16>,
        in_stream: bool,
        model: Option<&'a str>,
        now: DateTime<Utc>,
    ) -> Self {
        Context {
            err,
            code: code
                .or(err.code)
                .or_else(|| err.status.as_deref().and_then(http_status_of)),
            in_stream,
            model,
            now,
            text: err.message.to_lowercase(),
            delay: StatedDelay::read(err, now),
        }
    }

    fn says(&self, phrases: &[&str]) -> bool {
        phrases.iter().any(|p| self.text.contains(p))
    }

    fn reason(&self, reasons: &[&str]) -> bool {
        reasons.iter().any(|r| self.err.has_reason(r))
    }

    fn status_is(&self, name: &str) -> bool {
        self.err.status.as_deref() == Some(name)
    }

    /// Code Assist (`cloudcode-pa`) limits are per user account, not per project.
    fn code_assist(&self) -> bool {
        self.err.domains.iter().any(|d| d.contains("cloudcode-pa"))
            || self.text.contains("cloudcode-pa")
            || self.says(&[
                "code assist",
                "code-assist",
                // Code Assist's own wording, also when Gemini CLI prints only the message.
                "exhausted your capacity on this model",
                "individual quota reached",
            ])
    }

    fn quota_scope(&self) -> Scope {
        if self.code_assist() {
            Scope::AccountModel
        } else {
            Scope::ProjectModel
        }
    }

    fn model_name(&self) -> Option<&str> {
        self.model.or_else(|| self.err.meta("model"))
    }

    fn record(&self, class: FailureClass, scope: Scope, reason: String) -> Classification {
        Classification {
            class,
            scope,
            dimension: None,
            retry_after_ms: self.delay.retry_after_ms,
            until: self.delay.reset_at,
            limit: None,
            tier: None,
            in_stream: self.in_stream,
            reason,
            quota_id: None,
        }
    }
}

/// Classifies one located error.
pub fn decide(cx: &Context<'_>) -> Classification {
    let viols = all_violations(cx.err);
    key_dead(cx)
        .or_else(|| environment(cx))
        .or_else(|| project_dead(cx))
        .or_else(|| project_config(cx))
        .or_else(|| billing_blocked(cx))
        .or_else(|| no_quota_in_words(cx, false))
        .or_else(|| quota_violation(cx, &viols))
        .or_else(|| no_quota_in_words(cx, true))
        .or_else(|| capacity(cx))
        .or_else(|| code_assist_quota(cx))
        .or_else(|| printed_notice(cx))
        .or_else(|| bare_quota(cx))
        .or_else(|| by_status(cx))
        .unwrap_or_else(|| {
            let why = match cx.code {
                Some(c) => format!("HTTP {c} with nothing that names a cause"),
                None => "no Gemini error found in the input".to_owned(),
            };
            cx.record(FailureClass::Unknown, Scope::Request, why)
        })
}

/// The verdict when the input holds no error: a successful response is not a failure.
pub fn no_error(code: Option<u16>) -> Classification {
    Classification {
        class: FailureClass::Unknown,
        scope: Scope::Request,
        dimension: None,
        retry_after_ms: None,
        until: None,
        limit: None,
        tier: None,
        in_stream: false,
        reason: match code {
            Some(c) if (200..300).contains(&c) => {
                format!("HTTP {c} and no error in the body or stream: not a failure")
            }
            _ => "no Gemini error found in the input".to_owned(),
        },
        quota_id: None,
    }
}

/// QUOTAS.md rule 5: keys die only for key reasons.
fn key_dead(cx: &Context<'_>) -> Option<Classification> {
    let why = if cx.reason(&["API_KEY_INVALID", "API_KEY_EXPIRED"])
        || cx.says(&["api key not valid", "api key expired", "api key not found"])
    {
        "the key is invalid or expired"
    } else if cx.says(&["reported as leaked"]) {
        "the key was reported as leaked"
    } else if cx.reason(&["API_KEY_SERVICE_BLOCKED"]) {
        "the key is not allowed to call this API (API_KEY_SERVICE_BLOCKED)"
    } else if cx.reason(&[
        "API_KEY_HTTP_REFERRER_BLOCKED",
        "API_KEY_ANDROID_APP_BLOCKED",
        "API_KEY_IOS_APP_BLOCKED",
    ]) {
        "the key is restricted to clients the proxy is not"
    } else if cx.reason(&["ACCESS_TOKEN_TYPE_UNSUPPORTED"])
        || cx.code == Some(401)
        || cx.status_is("UNAUTHENTICATED")
    {
        "the key was rejected (401: unsupported key type or unauthenticated)"
    } else if cx.says(&["unregistered callers"]) {
        "the request carried no usable key"
    } else {
        return None;
    };
    Some(cx.record(FailureClass::KeyDead, Scope::Key, why.to_owned()))
}

/// The caller's location or egress: never the key's fault.
fn environment(cx: &Context<'_>) -> Option<Classification> {
    let why = if cx.says(&[
        "user location is not supported",
        "location is not supported",
        "not available in your country",
        "not supported in your country",
    ]) || cx.reason(&["USER_LOCATION_INVALID"])
    {
        "the caller's location is not served"
    } else if cx.reason(&["API_KEY_IP_ADDRESS_BLOCKED"]) {
        "this machine's egress address is not allowed for the key"
    } else if cx.says(&[
        "prohibited by organization's policy",
        "vpc service controls",
    ]) {
        "an organization policy refuses requests from this network"
    } else {
        return None;
    };
    Some(cx.record(FailureClass::Environment, Scope::Egress, why.to_owned()))
}

fn project_dead(cx: &Context<'_>) -> Option<Classification> {
    let why = if cx.reason(&["CONSUMER_SUSPENDED"]) || cx.says(&["has been suspended"]) {
        "the project is suspended"
    } else if cx.says(&["has been denied access", "project has been denied"]) {
        "the project has been denied access"
    } else if cx.reason(&["CONSUMER_INVALID"]) {
        "the project no longer exists"
    } else {
        return None;
    };
    Some(cx.record(FailureClass::ProjectDead, Scope::Project, why.to_owned()))
}

fn project_config(cx: &Context<'_>) -> Option<Classification> {
    let why = if cx.reason(&["SERVICE_DISABLED"])
        || cx.says(&["has not been used in project", "it is disabled. enable it"])
    {
        "the Generative Language API is disabled in the project"
    } else if cx.reason(&["BILLING_DISABLED"])
        || cx.says(&[
            "requires billing to be enabled",
            "billing to be enabled",
            "billing account for the owning project is disabled",
            "billing is disabled",
        ])
    {
        "the project has no working billing account"
    } else {
        return None;
    };
    Some(cx.record(FailureClass::ProjectConfig, Scope::Project, why.to_owned()))
}

fn billing_blocked(cx: &Context<'_>) -> Option<Classification> {
    if cx.reason(&["INSUFFICIENT_G1_CREDITS_BALANCE"])
        || cx.says(&[
            "spending cap",
            "spend cap",
            "prepayment",
            "prepaid",
            "credits are depleted",
            "credit balance",
            "out of credits",
        ])
    {
        return Some(cx.record(
            FailureClass::BillingBlocked,
            Scope::BillingAccount,
            "a spend cap or prepaid balance stops the billing account".to_owned(),
        ));
    }
    None
}

/// QUOTAS.md rule 2, in words: the model has no quota on this tier.
/// `after_violations`: also read a bare `limit: 0`, once structured violations (which name
/// the dimension and tier too) had nothing to say.
fn no_quota_in_words(cx: &Context<'_>, after_violations: bool) -> Option<Classification> {
    let free_tier_only = cx.says(&[
        "only accessible to billed users",
        "doesn't have a free quota tier",
        "does not have a free quota tier",
        "no free quota tier",
    ]);
    let limit_zero = after_violations && states_limit_zero(&cx.text);
    if !(free_tier_only || limit_zero) {
        return None;
    }
    let mut c = cx.record(
        FailureClass::NoQuota,
        Scope::ProjectModel,
        format!(
            "{} has no quota on this project's tier (limit 0){}",
            cx.model_name().unwrap_or("the model"),
            if free_tier_only {
                ": a paid project is needed"
            } else {
                ""
            }
        ),
    );
    c.limit = Some(0);
    // These phrases are said to free-tier projects only; a bare `limit: 0` names no tier.
    c.tier = free_tier_only.then_some(Tier::Free);
    Some(c)
}

/// `limit: 0` anywhere in the text (not `limit: 05` or `limit: 0.5`), as Gemini CLI reads it.
fn states_limit_zero(text: &str) -> bool {
    text.match_indices("limit:").any(|(i, m)| {
        let rest = text.get(i + m.len()..).unwrap_or_default().trim_start();
        rest.strip_prefix('0')
            .is_some_and(|after| !after.starts_with(|c: char| c.is_ascii_digit() || c == '.'))
    })
}

/// QUOTAS.md rules 1, 2 and 7: what the exceeded quotas say, dimension first, delay second.
fn quota_violation(cx: &Context<'_>, viols: &[Violation]) -> Option<Classification> {
    if viols.is_empty() {
        return None;
    }
    let zero = viols.iter().find(|v| v.limit() == Some(0));
    let daily = || {
        viols
            .iter()
            .find(|v| v.dimension().is_some_and(Dimension::is_daily))
    };
    let minute = || {
        viols
            .iter()
            .find(|v| v.dimension().is_some_and(|d| !d.is_daily()))
    };
    let (class, chosen) = if let Some(v) = zero {
        (FailureClass::NoQuota, v)
    } else if let Some(v) = daily() {
        (FailureClass::Daily, v)
    } else if let Some(v) = minute() {
        (FailureClass::Cooldown, v)
    } else if cx.reason(&["QUOTA_EXHAUSTED"]) {
        (FailureClass::Daily, viols.first()?)
    } else {
        (FailureClass::Cooldown, viols.first()?)
    };
    let scope = if viols.iter().any(Violation::per_user) {
        Scope::AccountModel
    } else {
        cx.quota_scope()
    };
    let mut c = quota_record(cx, class, scope, chosen.dimension());
    c.limit = chosen.limit();
    c.tier = chosen
        .tier()
        .or_else(|| viols.iter().find_map(Violation::tier));
    c.quota_id = chosen.quota_id.clone();
    let model = cx
        .model_name()
        .or(chosen.model.as_deref())
        .unwrap_or("the model");
    let quota = chosen
        .quota_id
        .as_deref()
        .or(chosen.metric.as_deref())
        .unwrap_or("a quota");
    c.reason = match class {
        FailureClass::NoQuota => {
            format!("{quota} of {model} has limit 0: no quota on this project's tier")
        }
        FailureClass::Daily => format!(
            "{quota} of {model} exhausted{}; any shorter retry delay the error states does not lift a per-day limit",
            until_words(&c)
        ),
        _ => format!(
            "{quota} of {model} exceeded; usable again after {} ms",
            c.retry_after_ms.unwrap_or(DEFAULT_COOLDOWN_MS)
        ),
    };
    Some(c)
}

/// A quota record: `until` and `retry_after_ms` filled as the class needs.
fn quota_record(
    cx: &Context<'_>,
    class: FailureClass,
    scope: Scope,
    dimension: Option<Dimension>,
) -> Classification {
    let mut c = cx.record(class, scope, String::new());
    c.dimension = dimension;
    if class == FailureClass::Daily && c.until.is_none() && scope == Scope::ProjectModel {
        // Gemini API per-day quotas reset at midnight America/Los_Angeles.
        c.until = Some(pacific::next_midnight(cx.now));
    }
    if class == FailureClass::Cooldown && c.retry_after_ms.is_none() {
        c.retry_after_ms = Some(DEFAULT_COOLDOWN_MS);
    }
    c
}

fn until_words(c: &Classification) -> String {
    match c.until {
        Some(t) => format!(
            " until {}",
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        None => " until the account's reset (not stated)".to_owned(),
    }
}

/// Capacity or overload, not our quota (rule 6): 503s, model capacity, Vertex's shared pool.
fn capacity(cx: &Context<'_>) -> Option<Classification> {
    let why = if cx.reason(&["MODEL_CAPACITY_EXHAUSTED", "MODEL_CAPACITY_EXCEEDED"])
        || cx.says(&["no capacity available"])
    {
        "the service has no capacity for the model right now"
    } else if cx.says(&["overloaded", "high demand"]) {
        "the model is overloaded"
    } else if cx.says(&[
        "resource exhausted. please try again later",
        "error-code-429",
    ]) {
        "the shared capacity pool is exhausted (Vertex-style 429), not this project's quota"
    } else {
        return None;
    };
    Some(cx.record(FailureClass::Transient, Scope::Model, why.to_owned()))
}

/// Code Assist's per-user limits, named by ErrorInfo reason.
fn code_assist_quota(cx: &Context<'_>) -> Option<Classification> {
    if !cx.code_assist() {
        return None;
    }
    let model = cx.model_name().unwrap_or("the model");
    if cx.reason(&["QUOTA_EXHAUSTED"]) {
        let mut c = quota_record(cx, FailureClass::Daily, Scope::AccountModel, None);
        c.reason = format!(
            "the account's quota of {model} is exhausted{}",
            until_words(&c)
        );
        return Some(c);
    }
    if cx.reason(&["RATE_LIMIT_EXCEEDED", "rateLimitExceeded"])
        || cx.says(&["exhausted your capacity"])
    {
        let mut c = quota_record(cx, FailureClass::Cooldown, Scope::AccountModel, None);
        c.reason = format!(
            "the account's rate limit for {model} was hit; usable again after {} ms",
            c.retry_after_ms.unwrap_or(DEFAULT_COOLDOWN_MS)
        );
        return Some(c);
    }
    None
}

/// Gemini CLI's quota notices, when that is all the input holds.
fn printed_notice(cx: &Context<'_>) -> Option<Classification> {
    let daily = cx.says(&[
        "daily quota",
        "daily limit",
        "usage limit reached",
        "exhausted your daily",
    ]);
    let scope = if cx.code_assist()
        || cx.says(&[
            "/auth",
            "pro models",
            "switching to gemini",
            "switching from",
        ]) {
        Scope::AccountModel
    } else {
        Scope::ProjectModel
    };
    if daily {
        let mut c = quota_record(cx, FailureClass::Daily, scope, None);
        c.reason = format!(
            "the client reports a daily limit reached{}",
            until_words(&c)
        );
        return Some(c);
    }
    if cx.says(&["possible quota limitations in place"]) {
        let mut c = quota_record(cx, FailureClass::Cooldown, Scope::AccountModel, None);
        c.reason = "the client reports rate limiting and fell back to another model".to_owned();
        return Some(c);
    }
    None
}

/// A 429 with nothing that names a quota (rule 6: never the key's fault): wait, then retry.
fn bare_quota(cx: &Context<'_>) -> Option<Classification> {
    if cx.code != Some(429) && !cx.status_is("RESOURCE_EXHAUSTED") {
        return None;
    }
    let mut c = quota_record(cx, FailureClass::Cooldown, cx.quota_scope(), None);
    c.reason = format!(
        "429 without quota details: treated as a short rate limit, retry after {} ms",
        c.retry_after_ms.unwrap_or(DEFAULT_COOLDOWN_MS)
    );
    Some(c)
}

fn by_status(cx: &Context<'_>) -> Option<Classification> {
    let code = cx.code?;
    let (class, scope, why) = match code {
        500 | 502 | 503 | 504 => (
            FailureClass::Transient,
            Scope::Model,
            format!("HTTP {code}: a server-side failure, not our quota or key"),
        ),
        400 | 404 | 413 | 422 => (
            FailureClass::BadRequest,
            Scope::Request,
            format!("HTTP {code}: this request cannot pass with any key"),
        ),
        _ => return None,
    };
    Some(cx.record(class, scope, why))
}
