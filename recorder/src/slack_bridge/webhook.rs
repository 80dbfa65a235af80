//! Posting to a Slack incoming webhook, and what each answer means for the retry loop.
//!
//! The webhook URL is a secret (anyone holding it can post to the channel): it lives in a
//! [`Secret`], and transport errors are stripped of their URL before anyone logs them.

use std::time::Duration;

use gemfleet_protocol::Secret;
use reqwest::StatusCode;
use serde_json::Value;

/// Longest wait taken from a `Retry-After` header; a hostile or broken proxy answering
/// "retry in a year" must not park the bridge.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// What the bridge does after a post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostOutcome {
    /// 2xx: the batch is delivered.
    Delivered,
    /// 429: wait as long as Slack says (Retry-After, capped), then post the same batch again.
    RateLimited { retry_after: Option<Duration> },
    /// 5xx, 408, network errors, timeouts, and 403/404/410 (a revoked or mistyped webhook is an
    /// operator fix away): keep the batch, back off, retry.
    Retry { why: String },
    /// 400/413 and other 4xx: Slack refuses this payload; retrying it forever would block every
    /// later alert. The bridge sets it aside (rejected file) and moves on.
    Rejected { why: String },
}

/// Classifies an HTTP answer (pure).
pub fn classify(status: StatusCode, retry_after: Option<&str>, body: &str) -> PostOutcome {
    let short: String = body.chars().take(200).collect();
    if status.is_success() {
        return PostOutcome::Delivered;
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        return PostOutcome::RateLimited {
            retry_after: retry_after.and_then(parse_retry_after),
        };
    }
    if status.is_server_error()
        || matches!(
            status,
            StatusCode::REQUEST_TIMEOUT
                | StatusCode::FORBIDDEN
                | StatusCode::NOT_FOUND
                | StatusCode::GONE
        )
    {
        return PostOutcome::Retry {
            why: format!("HTTP {status}: {short}"),
        };
    }
    PostOutcome::Rejected {
        why: format!("HTTP {status}: {short}"),
    }
}

/// `Retry-After` in seconds (what Slack sends), capped at [`MAX_RETRY_AFTER`]. HTTP dates are
/// not used by Slack and fall back to the bridge's own backoff.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(secs).min(MAX_RETRY_AFTER))
}

pub struct Webhook {
    client: reqwest::Client,
    url: Secret,
}

impl Webhook {
    pub fn new(url: Secret, timeout: Duration) -> Result<Webhook, reqwest::Error> {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Webhook { client, url })
    }

    pub async fn post(&self, body: &Value) -> PostOutcome {
        let response = match self.client.post(self.url.expose()).json(body).send().await {
            Ok(r) => r,
            // reqwest's Display quotes the URL: strip it.
            Err(e) => {
                return PostOutcome::Retry {
                    why: e.without_url().to_string(),
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.text().await.unwrap_or_default();
        classify(status, retry_after.as_deref(), &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(StatusCode::OK, None, "ok"), PostOutcome::Delivered);
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, Some("30"), ""),
            PostOutcome::RateLimited {
                retry_after: Some(Duration::from_secs(30))
            }
        );
        assert_eq!(
            classify(
                StatusCode::TOO_MANY_REQUESTS,
                Some("Wed, 21 Oct 2015 07:28:00 GMT"),
                ""
            ),
            PostOutcome::RateLimited { retry_after: None }
        );
        for s in [500, 502, 503, 504, 403, 404, 410, 408] {
            let outcome = classify(StatusCode::from_u16(s).unwrap(), None, "x");
            assert!(
                matches!(outcome, PostOutcome::Retry { .. }),
                "{s}: {outcome:?}"
            );
        }
        for s in [400, 413, 422] {
            let outcome = classify(StatusCode::from_u16(s).unwrap(), None, "invalid_payload");
            assert!(
                matches!(outcome, PostOutcome::Rejected { .. }),
                "{s}: {outcome:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_capped_and_hostile_values_are_ignored() {
        assert_eq!(parse_retry_after("86400000"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("NaN"), None);
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
    }
}
