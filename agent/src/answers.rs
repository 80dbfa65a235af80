//! Reading Gemini's answers: usage, errors inside streams, and the classification of
//! failures. The one place where the proxy meets the Gemini-knowledge crate, so a change
//! there is a change here only.

use chrono::{DateTime, Utc};
use gemfleet_gemini::Classification;
use gemfleet_gemini::sse::{SseItem, SseParser};
use gemfleet_gemini::usage::UsageTracker;
use gemfleet_protocol::Tokens;

/// Classifies a failed answer (QUOTAS.md), via the classifier.
pub fn classify(status: u16, body: &[u8], model: &str, now: DateTime<Utc>) -> Classification {
    gemfleet_gemini::classify::classify_http(status, body, Some(model), now)
}

fn tokens_of(u: gemfleet_gemini::usage::TokenUsage) -> Tokens {
    Tokens {
        prompt: u.prompt,
        cached: u.cached,
        candidates: u.candidates,
        thoughts: u.thoughts,
        tool_prompt: u.tool_prompt,
        total: u.total,
    }
}

/// Token usage of a non-streamed answer; `complete` is false when the body carried none.
/// A countTokens answer has no usage and bills nothing: it is complete with zero tokens.
pub fn usage_of_body(body: &[u8]) -> (Tokens, bool) {
    let text = String::from_utf8_lossy(body);
    match gemfleet_gemini::usage::from_body(&text) {
        Ok(u) if u.reported => (tokens_of(u.tokens), u.complete),
        _ if text.contains("\"totalTokens\"") => (Tokens::default(), true),
        _ => (Tokens::default(), false),
    }
}

/// Follows an SSE answer as it streams through, chunk by chunk, without keeping it: the last
/// `usageMetadata`, whether the stream finished, and the first error event.
#[derive(Debug, Default)]
pub struct StreamWatch {
    parser: SseParser,
    tracker: UsageTracker,
    items: Vec<SseItem>,
    events: u64,
    error: Option<String>,
}

impl StreamWatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one chunk; returns how many complete events (or raw JSON objects) it closed.
    pub fn feed(&mut self, chunk: &[u8]) -> u64 {
        self.parser.push(chunk, &mut self.items);
        self.drain()
    }

    /// The stream ended: whatever is left is the last event.
    pub fn finish(&mut self) {
        self.parser.finish(&mut self.items);
        self.drain();
    }

    fn drain(&mut self) -> u64 {
        let n = self.items.len() as u64;
        for item in self.items.drain(..) {
            if self.error.is_none() && item.is_error() {
                self.error = Some(item.json().to_string());
            }
            self.tracker.observe_item(&item);
        }
        self.events += n;
        n
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
        let r = self.tracker.result();
        (tokens_of(r.tokens), r.reported && r.complete)
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

    proptest::proptest! {
        #[test]
        fn the_stream_watch_takes_any_bytes_in_any_chunks(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048), cut in 1usize..64) {
            let mut w = StreamWatch::new();
            for c in bytes.chunks(cut) {
                w.feed(c);
            }
            w.finish();
            let _ = w.usage();
            let _ = usage_of_body(&bytes);
        }
    }
}
