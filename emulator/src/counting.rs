//! The token counting rule (documented in docs/emulator.md, stable across versions):
//!
//! - a request's prompt is split into segments: the system instruction, the tools, and each
//!   entry of `contents`;
//! - a segment's size is the number of characters of every `text` part it holds plus, for any
//!   other part (functionCall, functionResponse, inlineData…) and for the tools, the characters
//!   of that value's compact JSON;
//! - `promptTokenCount = ceil(total characters / 4)`;
//! - output tokens are `ceil(characters / 4)` of the answer's text (or of the functionCall's
//!   compact JSON), at least 1.
//!
//! Every counted character comes from a distinct stretch of the request body and is never
//! longer than the bytes it was parsed from (a character is ≥ 1 byte; compact JSON is never
//! longer than the JSON it was parsed from), so the count never exceeds
//! `gemfleet_gemini::tokens::estimate_input_tokens(body) = ceil(bytes / 4)`: an agent that
//! reserves the estimate never under-reserves.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::Value;

/// One prompt segment: its size in characters and a fingerprint for implicit caching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub chars: u64,
    pub fingerprint: u64,
}

/// The prompt of a request, as segments in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prompt {
    pub segments: Vec<Segment>,
}

impl Prompt {
    /// Splits a generateContent request body (already parsed) into counted segments.
    pub fn of_request(request: &Value) -> Prompt {
        let mut segments = Vec::new();
        if let Some(system) = request
            .get("systemInstruction")
            .or_else(|| request.get("system_instruction"))
        {
            segments.push(segment(system, content_chars(system)));
        }
        if let Some(tools) = request.get("tools") {
            segments.push(segment(tools, json_chars(tools)));
        }
        if let Some(Value::Array(contents)) = request.get("contents") {
            for content in contents {
                segments.push(segment(content, content_chars(content)));
            }
        }
        Prompt { segments }
    }

    pub fn chars(&self) -> u64 {
        self.segments.iter().map(|s| s.chars).sum()
    }

    /// `promptTokenCount`.
    pub fn tokens(&self) -> u64 {
        self.chars().div_ceil(4)
    }

    /// Tokens of the leading segments this prompt shares with `previous` (fingerprints of the
    /// previous request of the same quota group), never counting the last segment (the new
    /// turn), reported only when at least `min_tokens`.
    pub fn cached_tokens(&self, previous: &[u64], min_tokens: u64) -> u64 {
        if min_tokens == 0 {
            return 0;
        }
        let shareable = self.segments.len().saturating_sub(1);
        let chars: u64 = self
            .segments
            .iter()
            .take(shareable)
            .zip(previous)
            .take_while(|(s, p)| s.fingerprint == **p)
            .map(|(s, _)| s.chars)
            .sum();
        // Floor, so that cached never exceeds the (ceiled) prompt count.
        let tokens = chars / 4;
        if tokens >= min_tokens { tokens } else { 0 }
    }

    pub fn fingerprints(&self) -> Vec<u64> {
        self.segments.iter().map(|s| s.fingerprint).collect()
    }
}

/// Output tokens of an answer of `chars` characters.
pub fn output_tokens(chars: u64) -> u64 {
    chars.div_ceil(4).max(1)
}

fn segment(value: &Value, chars: u64) -> Segment {
    let mut h = DefaultHasher::new();
    value.to_string().hash(&mut h);
    Segment {
        chars,
        fingerprint: h.finish(),
    }
}

/// Characters of a Content (`{role, parts:[…]}`), or of a bare string / part list.
fn content_chars(content: &Value) -> u64 {
    match content {
        Value::String(s) => s.chars().count() as u64,
        Value::Array(parts) => parts.iter().map(part_chars).sum(),
        Value::Object(map) => match map.get("parts") {
            Some(Value::Array(parts)) => parts.iter().map(part_chars).sum(),
            Some(other) => part_chars(other),
            None => 0,
        },
        _ => 0,
    }
}

fn part_chars(part: &Value) -> u64 {
    match part.get("text") {
        Some(Value::String(text)) => text.chars().count() as u64,
        _ => json_chars(part),
    }
}

fn json_chars(value: &Value) -> u64 {
    value.to_string().chars().count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_text_of_system_tools_and_contents() {
        let req = json!({
            "systemInstruction": {"parts": [{"text": "abcd"}]},
            "contents": [
                {"role": "user", "parts": [{"text": "hello world!"}]},
                {"role": "user", "parts": [{"text": "é"}]}
            ]
        });
        let p = Prompt::of_request(&req);
        assert_eq!(p.chars(), 4 + 12 + 1);
        assert_eq!(p.tokens(), 5);
    }

    #[test]
    fn cached_counts_only_a_shared_prefix_above_the_minimum() {
        let long = "x".repeat(400);
        let a = json!({"systemInstruction": {"parts": [{"text": long}]},
            "contents": [{"role": "user", "parts": [{"text": "one"}]}]});
        let b = json!({"systemInstruction": {"parts": [{"text": long}]},
            "contents": [{"role": "user", "parts": [{"text": "one"}]},
                         {"role": "model", "parts": [{"text": "two"}]},
                         {"role": "user", "parts": [{"text": "three"}]}]});
        let pa = Prompt::of_request(&a);
        let pb = Prompt::of_request(&b);
        assert_eq!(pb.cached_tokens(&pa.fingerprints(), 50), 100);
        assert_eq!(pb.cached_tokens(&pa.fingerprints(), 200), 0);
        assert_eq!(pb.cached_tokens(&[], 50), 0);
        // The last segment is the new turn: never cached even when identical.
        assert_eq!(pa.cached_tokens(&pa.fingerprints(), 50), 100);
    }
}
