//! Reading Gemini's answers: usage, errors inside streams, and the classification of
//! failures. The one place where the proxy meets the Gemini-knowledge crate, so a change
//! there is a change here only.

use chrono::{DateTime, Utc};
use gemfleet_gemini::Classification;
use gemfleet_protocol::Tokens;
use serde_json::Value;

/// Classifies a failed answer (QUOTAS.md).
pub fn classify(status: u16, body: &[u8], model: &str, now: DateTime<Utc>) -> Classification {
    fallback::classify(status, body, model, now)
}

/// Token usage of a non-streamed answer; `complete` is false when the body carried none.
pub fn usage_of_body(body: &[u8]) -> (Tokens, bool) {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => match v.get("usageMetadata") {
            Some(u) => (tokens_of(u), true),
            None => match v.get("totalTokens") {
                // countTokens answers.
                Some(_) => (Tokens::default(), true),
                None => (Tokens::default(), false),
            },
        },
        Err(_) => (Tokens::default(), false),
    }
}

fn tokens_of(u: &Value) -> Tokens {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Tokens {
        prompt: n("promptTokenCount"),
        cached: n("cachedContentTokenCount"),
        candidates: n("candidatesTokenCount"),
        thoughts: n("thoughtsTokenCount"),
        tool_prompt: n("toolUsePromptTokenCount"),
        total: n("totalTokenCount"),
    }
}

/// Follows an SSE answer as it streams through, chunk by chunk, without keeping it: the last
/// `usageMetadata`, whether the stream finished, and the first error event.
#[derive(Debug, Default)]
pub struct StreamWatch {
    /// Bytes of an event not yet terminated by a blank line.
    partial: Vec<u8>,
    events: u64,
    usage: Option<Tokens>,
    finished: bool,
    error: Option<String>,
}

/// Longest single event we keep while waiting for its end (an error or usage event is small;
/// a huge text chunk is skipped, not buffered without bound).
const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

impl StreamWatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one chunk; returns how many complete events it closed.
    pub fn feed(&mut self, chunk: &[u8]) -> u64 {
        let before = self.events;
        self.partial.extend_from_slice(chunk);
        while let Some((end, sep)) = find_event_end(&self.partial) {
            let event: Vec<u8> = self.partial.drain(..end + sep).collect();
            self.on_event(&event[..end]);
        }
        if self.partial.len() > MAX_EVENT_BYTES {
            self.partial.clear();
        }
        self.events - before
    }

    /// The stream ended: whatever is left is the last event (or raw JSON error text).
    pub fn finish(&mut self) {
        if !self.partial.iter().all(u8::is_ascii_whitespace) {
            let rest = std::mem::take(&mut self.partial);
            self.on_event(&rest);
        }
        self.partial.clear();
    }

    fn on_event(&mut self, raw: &[u8]) {
        self.events += 1;
        let text = String::from_utf8_lossy(raw);
        let mut data = String::new();
        let mut saw_field = false;
        for line in text.lines() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if let Some(d) = line.strip_prefix("data:") {
                saw_field = true;
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            } else if line.starts_with(':') || line.starts_with("event:") || line.starts_with("id:")
            {
                saw_field = true;
            }
        }
        // Raw JSON in the stream (no `data:` framing) is how some errors arrive.
        let json_text = if saw_field { data } else { text.into_owned() };
        let Ok(v) = serde_json::from_str::<Value>(json_text.trim()) else {
            return;
        };
        let v = match v {
            Value::Array(mut a) if a.len() == 1 => a.remove(0),
            other => other,
        };
        if v.get("error").is_some() {
            if self.error.is_none() {
                self.error = Some(json_text);
            }
            return;
        }
        if let Some(u) = v.get("usageMetadata") {
            self.usage = Some(tokens_of(u));
        }
        let finish = v
            .get("candidates")
            .and_then(Value::as_array)
            .and_then(|c| c.last())
            .and_then(|c| c.get("finishReason"))
            .is_some();
        if finish {
            self.finished = true;
        }
    }

    pub fn events(&self) -> u64 {
        self.events
    }
    /// The first error event's text, if any.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
    /// Last usage seen and whether the stream reached its final chunk.
    pub fn usage(&self) -> (Tokens, bool) {
        (
            self.usage.unwrap_or_default(),
            self.usage.is_some() && self.finished,
        )
    }
}

/// End of the first complete event: index of the blank line and the separator length.
fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some((i, 2));
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, 3));
            }
        }
        i += 1;
    }
    None
}

/// A stand-in classification until (or when) the classifier cannot say more.
mod fallback {
    use super::*;
    use gemfleet_gemini::{FailureClass, Scope};

    pub fn classify(status: u16, body: &[u8], _model: &str, _now: DateTime<Utc>) -> Classification {
        let text = String::from_utf8_lossy(body);
        let (class, scope) = if text.contains("API_KEY_INVALID")
            || text.contains("API key not valid")
            || text.contains("API_KEY_SERVICE_BLOCKED")
            || text.contains("ACCESS_TOKEN_TYPE_UNSUPPORTED")
        {
            (FailureClass::KeyDead, Scope::Key)
        } else if status == 429 && text.contains("PerDay") {
            (FailureClass::Daily, Scope::ProjectModel)
        } else if status == 429 {
            (FailureClass::Cooldown, Scope::ProjectModel)
        } else if status >= 500 || status == 0 {
            (FailureClass::Transient, Scope::Model)
        } else if status == 400 || status == 404 {
            (FailureClass::BadRequest, Scope::Request)
        } else {
            (FailureClass::Unknown, Scope::Request)
        };
        Classification {
            class,
            scope,
            dimension: None,
            retry_after_ms: None,
            until: None,
            limit: None,
            tier: None,
            in_stream: status == 200,
            reason: format!("HTTP {status}"),
            quota_id: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_comes_from_the_last_chunk_across_split_chunks() {
        let stream = "data: {\"candidates\":[{\"content\":{}}],\"usageMetadata\":{\"promptTokenCount\":5,\"totalTokenCount\":6}}\r\n\r\ndata: {\"candidates\":[{\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":7,\"totalTokenCount\":12}}\n\n";
        let mut w = StreamWatch::new();
        for piece in stream.as_bytes().chunks(7) {
            w.feed(piece);
        }
        w.finish();
        let (t, complete) = w.usage();
        assert!(complete);
        assert_eq!((t.prompt, t.candidates, t.total), (5, 7, 12));
        assert!(w.error().is_none());
    }

    #[test]
    fn a_stream_without_its_final_chunk_is_incomplete() {
        let mut w = StreamWatch::new();
        w.feed(b"data: {\"candidates\":[{}],\"usageMetadata\":{\"promptTokenCount\":5}}\n\n");
        w.finish();
        assert!(!w.usage().1);
    }

    #[test]
    fn errors_in_the_stream_are_seen_framed_or_raw() {
        let mut w = StreamWatch::new();
        w.feed(b"data: {\"error\":{\"code\":429,\"message\":\"x\"}}\n\n");
        assert!(w.error().is_some());
        let mut w = StreamWatch::new();
        w.feed(b"[{\n  \"error\": {\n    \"code\": 503\n  }\n}\n]");
        w.finish();
        assert!(w.error().is_some());
    }
}
