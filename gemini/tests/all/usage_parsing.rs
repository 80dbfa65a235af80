//! Usage of a request from a body or a stream: the last chunk carrying usageMetadata counts.

use gemfleet_gemini::sse::SseParser;
use gemfleet_gemini::usage::{self, TokenUsage, UsageTracker};

const BODY: &str = r#"{
  "candidates": [{"content": {"parts": [{"text": "Hi"}], "role": "model"}, "finishReason": "STOP", "index": 0}],
  "usageMetadata": {"promptTokenCount": 1200, "candidatesTokenCount": 40, "totalTokenCount": 1390,
    "cachedContentTokenCount": 1000, "thoughtsTokenCount": 100, "toolUsePromptTokenCount": 50},
  "modelVersion": "gemini-2.5-flash"
}"#;

fn chunk(text: &str, prompt: u64, cands: u64, finish: Option<&str>) -> String {
    let finish = finish
        .map(|f| format!(",\"finishReason\":\"{f}\""))
        .unwrap_or_default();
    format!(
        "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"{text}\"}}]}}{finish}}}],\"usageMetadata\":{{\"promptTokenCount\":{prompt},\"candidatesTokenCount\":{cands},\"totalTokenCount\":{}}}}}\r\n\r\n",
        prompt + cands
    )
}

#[test]
fn a_generate_content_body_gives_every_count() {
    let u = usage::from_body(BODY).unwrap();
    assert_eq!(
        u.tokens,
        TokenUsage {
            prompt: 1200,
            cached: 1000,
            candidates: 40,
            thoughts: 100,
            tool_prompt: 50,
            total: 1390
        }
    );
    assert!(u.reported);
    assert!(u.complete);
}

#[test]
fn a_stream_counts_its_last_usage_chunk_not_the_sum() {
    let stream = [
        chunk("a", 100, 1, None),
        chunk("b", 100, 5, None),
        chunk("c", 100, 9, Some("STOP")),
    ]
    .concat();
    let u = usage::from_stream(&stream);
    assert_eq!(u.tokens.prompt, 100);
    assert_eq!(u.tokens.candidates, 9);
    assert_eq!(u.tokens.total, 109);
    assert!(u.complete);
}

#[test]
fn a_stream_cut_before_its_final_chunk_is_incomplete() {
    let stream = [chunk("a", 100, 1, None), chunk("b", 100, 5, None)].concat();
    let u = usage::from_stream(&stream);
    assert!(u.reported);
    assert!(!u.complete);
    assert_eq!(
        u.tokens.candidates, 5,
        "the counts so far are still reported"
    );
}

#[test]
fn an_error_after_chunks_makes_the_stream_incomplete() {
    let stream = [
        chunk("a", 100, 1, None),
        "data: {\"error\":{\"code\":503,\"message\":\"overloaded\",\"status\":\"UNAVAILABLE\"}}\n\n".to_owned(),
    ]
    .concat();
    let u = usage::from_stream(&stream);
    assert!(!u.complete);
    assert_eq!(u.tokens.prompt, 100);
}

#[test]
fn a_final_chunk_without_usage_keeps_the_earlier_usage() {
    let stream = [
        chunk("a", 100, 7, None),
        "data: {\"candidates\":[{\"content\":{\"parts\":[]},\"finishReason\":\"STOP\"}]}\n\n"
            .to_owned(),
    ]
    .concat();
    let u = usage::from_stream(&stream);
    assert!(u.complete);
    assert_eq!(u.tokens.candidates, 7);
}

#[test]
fn a_missing_total_is_the_sum_of_the_parts_and_string_counts_are_read() {
    let u = usage::from_body(r#"{"candidates":[{"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":"10","candidatesTokenCount":5,"thoughtsTokenCount":2}}"#).unwrap();
    assert_eq!(u.tokens.prompt, 10);
    assert_eq!(u.tokens.total, 17);
}

#[test]
fn a_blocked_prompt_is_complete_with_its_prompt_count() {
    let u = usage::from_body(r#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":12,"totalTokenCount":12}}"#).unwrap();
    assert!(u.complete);
    assert_eq!(u.tokens.prompt, 12);
}

#[test]
fn a_json_array_stream_body_uses_its_last_chunk() {
    let body = r#"[{"candidates":[{"content":{"parts":[{"text":"a"}]}}],"usageMetadata":{"promptTokenCount":3,"totalTokenCount":3}},
                   {"candidates":[{"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":4,"totalTokenCount":7}}]"#;
    let u = usage::from_body(body).unwrap();
    assert_eq!(u.tokens.total, 7);
    assert!(u.complete);
}

#[test]
fn a_body_that_is_not_json_is_an_error_not_a_crash() {
    assert!(usage::from_body("<html>").is_err());
    let u = usage::from_body(r#"{"candidates":"odd"}"#).unwrap();
    assert!(!u.reported);
}

#[test]
fn the_proxy_path_feeds_chunks_through_the_parser_into_the_tracker() {
    let stream = [
        chunk("a", 50, 1, None),
        chunk("b", 50, 2, Some("MAX_TOKENS")),
    ]
    .concat();
    let mut parser = SseParser::new();
    let mut tracker = UsageTracker::new();
    let mut items = Vec::new();
    for piece in stream.as_bytes().chunks(7) {
        parser.push(piece, &mut items);
        for item in items.drain(..) {
            tracker.observe_item(&item);
        }
    }
    parser.finish(&mut items);
    for item in items.drain(..) {
        tracker.observe_item(&item);
    }
    let u = tracker.result();
    assert_eq!(u.tokens.total, 52);
    assert!(u.complete);
    assert_eq!(tracker.malformed, 0);
}
