//! Token usage of one request, as Google reports it in `usageMetadata`.
//!
//! A generateContent body carries it once; a stream carries it on several chunks, cumulative,
//! so the LAST chunk that carries it is the request's usage (Gemini CLI counts the same way:
//! summing chunks would count the prompt many times). A stream whose last chunk has no
//! `finishReason` was cut short: its usage is a lower bound, reported as incomplete.

use crate::sse::{SseItem, SseParser, is_error_payload};
use serde::{Deserialize, Deserializer, Serialize};

/// Token counts of one request. Field names match `gemfleet_protocol::Tokens`, so the agent
/// converts field by field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// `promptTokenCount` (includes cached tokens).
    pub prompt: u64,
    /// `cachedContentTokenCount`.
    pub cached: u64,
    /// `candidatesTokenCount`.
    pub candidates: u64,
    /// `thoughtsTokenCount`.
    pub thoughts: u64,
    /// `toolUsePromptTokenCount`.
    pub tool_prompt: u64,
    /// `totalTokenCount`, or the sum of the parts when the service left it out.
    pub total: u64,
}

/// The usage of one request and whether it is final.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RequestUsage {
    pub tokens: TokenUsage,
    /// Some chunk carried `usageMetadata`.
    pub reported: bool,
    /// The response ended properly: its last chunk has a `finishReason` on its last
    /// candidate (or the prompt was blocked, which also ends it), and no error came after.
    pub complete: bool,
}

/// Why a body's usage could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsageError {
    #[error("the body is not a generateContent JSON response: {0}")]
    NotJson(String),
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(rename = "usageMetadata", default)]
    usage: Option<UsageMetadata>,
    #[serde(default)]
    candidates: Option<Vec<Candidate>>,
    #[serde(rename = "promptFeedback", default)]
    prompt_feedback: Option<PromptFeedback>,
}

#[derive(Deserialize)]
struct Candidate {
    #[serde(rename = "finishReason", default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct PromptFeedback {
    #[serde(rename = "blockReason", default)]
    block_reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default, deserialize_with = "lenient_u64")]
    prompt_token_count: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    cached_content_token_count: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    candidates_token_count: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    thoughts_token_count: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    tool_use_prompt_token_count: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    total_token_count: Option<u64>,
}

/// Counts are JSON numbers, but protobuf JSON may write int64 as strings; anything else
/// (negative, fractional, garbage) reads as absent rather than failing the chunk.
fn lenient_u64<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: From<u64> + Default,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
        Other(serde::de::IgnoredAny),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::N(n) => T::from(n),
        Raw::S(s) => s.trim().parse::<u64>().map(T::from).unwrap_or_default(),
        Raw::Other(_) => T::default(),
    })
}

impl From<UsageMetadata> for TokenUsage {
    fn from(u: UsageMetadata) -> Self {
        let parts = u
            .prompt_token_count
            .saturating_add(u.candidates_token_count)
            .saturating_add(u.thoughts_token_count)
            .saturating_add(u.tool_use_prompt_token_count);
        TokenUsage {
            prompt: u.prompt_token_count,
            cached: u.cached_content_token_count,
            candidates: u.candidates_token_count,
            thoughts: u.thoughts_token_count,
            tool_prompt: u.tool_use_prompt_token_count,
            total: u.total_token_count.unwrap_or(parts),
        }
    }
}

/// Follows a response chunk by chunk (the proxy feeds each SSE event's data as it passes).
#[derive(Debug, Default, Clone)]
pub struct UsageTracker {
    last: Option<TokenUsage>,
    finished: bool,
    errored: bool,
    /// Chunks that were not readable JSON responses.
    pub malformed: u64,
}

impl UsageTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Observes one chunk's JSON (an SSE event's data, or a whole body).
    pub fn observe(&mut self, json: &str) {
        if is_error_payload(json) {
            self.errored = true;
            self.finished = false;
            return;
        }
        match serde_json::from_str::<Chunk>(json) {
            Ok(chunk) => self.observe_chunk(chunk),
            Err(_) => self.malformed += 1,
        }
    }

    fn observe_chunk(&mut self, chunk: Chunk) {
        if let Some(u) = chunk.usage {
            self.last = Some(u.into());
        }
        let last_finish = chunk
            .candidates
            .as_ref()
            .and_then(|c| c.last())
            .is_some_and(|c| c.finish_reason.as_deref().is_some_and(|r| !r.is_empty()));
        let blocked = chunk
            .prompt_feedback
            .as_ref()
            .is_some_and(|p| p.block_reason.is_some());
        self.finished = last_finish || blocked;
    }

    /// Observes an item of [`SseParser`]'s output.
    pub fn observe_item(&mut self, item: &SseItem) {
        self.observe(item.json());
    }

    pub fn result(&self) -> RequestUsage {
        RequestUsage {
            tokens: self.last.unwrap_or_default(),
            reported: self.last.is_some(),
            complete: self.finished && !self.errored,
        }
    }
}

/// Usage of a generateContent body (a JSON object, or a JSON array of chunks as
/// streamGenerateContent without `alt=sse` answers).
pub fn from_body(body: &str) -> Result<RequestUsage, UsageError> {
    let value: serde_json::Value =
        serde_json::from_str(body.trim()).map_err(|e| UsageError::NotJson(e.to_string()))?;
    let mut tracker = UsageTracker::new();
    match value {
        serde_json::Value::Array(chunks) => {
            for c in chunks {
                observe_value(&mut tracker, c);
            }
        }
        other => observe_value(&mut tracker, other),
    }
    Ok(tracker.result())
}

fn observe_value(tracker: &mut UsageTracker, v: serde_json::Value) {
    if v.get("error").is_some() {
        tracker.errored = true;
        tracker.finished = false;
        return;
    }
    match serde_json::from_value::<Chunk>(v) {
        Ok(chunk) => tracker.observe_chunk(chunk),
        Err(_) => tracker.malformed += 1,
    }
}

/// Usage of a whole SSE stream's text.
pub fn from_stream(text: &str) -> RequestUsage {
    let mut parser = SseParser::new();
    let mut items = Vec::new();
    parser.push(text.as_bytes(), &mut items);
    parser.finish(&mut items);
    let mut tracker = UsageTracker::new();
    for item in &items {
        tracker.observe_item(item);
    }
    tracker.result()
}
