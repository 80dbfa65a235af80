//! The answer that makes Gemini CLI 0.61 stop at once instead of retrying: a 429 with
//! `limit: 0` in its message (the CLI then shows our message verbatim) and a `PerDay` quota id
//! (its second stop rule), as JSON so the CLI keeps the details (GEMINI-CLI.md).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

pub fn body(model: &str, why: &str, until: Option<DateTime<Utc>>) -> serde_json::Value {
    let when = match until {
        Some(t) => format!(
            "; the earliest anything frees is {}",
            t.to_rfc3339_opts(SecondsFormat::Secs, true)
        ),
        None => String::new(),
    };
    let message = format!(
        "gemfleet: no key can serve {model} now: {why}{when}. Stopping this run instead of retrying (limit: 0 for this request)."
    );
    json!({
        "error": {
            "code": 429,
            "message": message,
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{
                        "quotaMetric": "gemfleet/fleet_grant",
                        "quotaId": "GemfleetNoGrantPerDay",
                        "quotaDimensions": {"model": model}
                    }]
                },
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "GEMFLEET_NO_GRANT",
                    "domain": "gemfleet",
                    "metadata": {"model": model, "until": until.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))}
                }
            ]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_carries_both_stop_signals_and_the_reason() {
        let b = body(
            "gemini-2.5-flash",
            "every project is exhausted for today",
            None,
        );
        let msg = b["error"]["message"].as_str().unwrap();
        assert!(msg.contains("limit: 0"));
        assert!(msg.contains("exhausted for today"));
        assert!(
            b["error"]["details"][0]["violations"][0]["quotaId"]
                .as_str()
                .unwrap()
                .contains("PerDay")
        );
        assert_eq!(b["error"]["code"], 429);
    }
}
