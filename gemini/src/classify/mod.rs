//! The classifier: (HTTP status, body or stream text, the request's model, now) → the
//! classification record of QUOTAS.md. Pure: no IO, no clock (the caller passes `now`).
//!
//! - [`locate`]: finds the error in a body, a stream or printed text.
//! - [`api_error`]: reads one Google error's facts, tolerantly.
//! - [`delay`]: the delay encodings and their precedence.
//! - [`quota`]: what a quota's name says (dimension, tier).
//! - [`rules`]: the decision.

pub mod api_error;
pub mod delay;
pub mod locate;
pub mod quota;
pub mod rules;

use crate::classification::Classification;
use chrono::{DateTime, Utc};
use locate::Framing;

/// Classifies a failure. `status` is the HTTP status of the response (`None`: infer it from
/// the body); `body` is the response body, the stream's text, or text a client printed.
/// Always returns a record: input with no recognisable error gives class `unknown`.
pub fn classify(
    status: Option<u16>,
    body: &str,
    model: Option<&str>,
    now: DateTime<Utc>,
) -> Classification {
    let success = status.is_some_and(|s| (200..300).contains(&s));
    let located = locate::locate(body);
    let (err, framing) = match located {
        Some(l) => (l.error, l.framing),
        // A failing status with an empty or unreadable body still says something (a bare
        // 429, a 503); a success or no status with no error is no failure.
        None if status.is_some() && !success => (api_error::ApiError::default(), Framing::Body),
        None => return rules::no_error(status),
    };
    // Inside a 200 stream the error's own code is the status that counts.
    let code = if success { None } else { status };
    let in_stream = success || (status.is_none() && framing == Framing::Stream);
    let cx = rules::Context::new(&err, code, in_stream, model, now);
    rules::decide(&cx)
}

/// [`classify`] for a proxy holding the raw response bytes. Bytes that are not UTF-8 are
/// read lossily: the JSON that matters is ASCII, and a failure must still be classified.
pub fn classify_http(
    status: u16,
    body: &[u8],
    model: Option<&str>,
    now: DateTime<Utc>,
) -> Classification {
    classify(Some(status), &String::from_utf8_lossy(body), model, now)
}

/// Whether every regular expression of the classifier compiled (asserted by a test; a pattern
/// that failed would leave its kind of prose unread, never crash).
pub fn patterns_compile() -> bool {
    delay::patterns_compile() && quota::patterns_compile() && locate::patterns_compile()
}
