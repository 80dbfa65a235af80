//! The incremental SSE parser: framing variants, chunk boundaries anywhere, raw JSON.

use gemfleet_gemini::sse::{SseEvent, SseItem, SseParser, is_error_payload, parse_all};

fn events(items: &[SseItem]) -> Vec<&str> {
    items
        .iter()
        .map(|i| match i {
            SseItem::Event(e) => e.data.as_str(),
            SseItem::RawJson(_) => "<raw>",
        })
        .collect()
}

/// Feeds the text split at every possible pair of points: the output must not depend on
/// where the network cut the stream.
fn all_splits_agree(text: &str) {
    let whole = parse_all(text);
    let bytes = text.as_bytes();
    for i in 0..=bytes.len() {
        for j in i..=bytes.len() {
            let mut p = SseParser::new();
            let mut out = Vec::new();
            p.push(&bytes[..i], &mut out);
            p.push(&bytes[i..j], &mut out);
            p.push(&bytes[j..], &mut out);
            p.finish(&mut out);
            assert_eq!(out, whole, "split at {i},{j} of {text:?}");
        }
    }
}

#[test]
fn lf_crlf_and_cr_line_endings_frame_the_same_events() {
    for nl in ["\n", "\r\n", "\r"] {
        let text = format!("data: {{\"a\":1}}{nl}{nl}data: {{\"b\":2}}{nl}{nl}");
        assert_eq!(
            events(&parse_all(&text)),
            vec!["{\"a\":1}", "{\"b\":2}"],
            "{nl:?}"
        );
        all_splits_agree(&text);
    }
}

#[test]
fn multi_line_data_joins_with_newlines_and_comments_are_skipped() {
    let text =
        ": keep-alive\ndata: line one\n: a comment between\ndata:line two\nevent: note\nid: 7\n\n";
    let items = parse_all(text);
    assert_eq!(
        items,
        vec![SseItem::Event(SseEvent {
            event: Some("note".into()),
            data: "line one\nline two".into(),
            id: Some("7".into()),
        })]
    );
    all_splits_agree(text);
}

#[test]
fn an_event_without_its_blank_line_is_dispatched_at_the_end() {
    let items = parse_all("data: {\"x\":1}");
    assert_eq!(events(&items), vec!["{\"x\":1}"]);
}

#[test]
fn utf8_split_across_chunks_survives() {
    let text = "data: {\"text\":\"héllo ✓\"}\n\n";
    all_splits_agree(text);
    assert_eq!(events(&parse_all(text)), vec!["{\"text\":\"héllo ✓\"}"]);
}

#[test]
fn raw_pretty_printed_json_between_events_is_reported() {
    let text = "data: {\"a\":1}\n\n{\n  \"error\": {\n    \"code\": 500,\n    \"message\": \"a { brace in text\",\n    \"status\": \"INTERNAL\"\n  }\n}\n";
    let items = parse_all(text);
    assert_eq!(items.len(), 2);
    match &items[1] {
        SseItem::RawJson(json) => {
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(v["error"]["code"], 500);
        }
        other => panic!("expected raw JSON, got {other:?}"),
    }
    assert!(items[1].is_error());
    assert!(!items[0].is_error());
    all_splits_agree(text);
}

#[test]
fn error_detection_ignores_the_word_error_in_model_text() {
    let normal = r#"{"candidates":[{"content":{"parts":[{"text":"the \"error\": field"}]}}]}"#;
    assert!(!is_error_payload(normal));
    assert!(is_error_payload(r#"{"error":{"code":429}}"#));
    assert!(is_error_payload(r#"[{"error":{"code":429}}]"#));
    assert!(!is_error_payload("not json \"error\""));
}

#[test]
fn a_bom_and_unknown_fields_are_tolerated() {
    let items = parse_all("\u{feff}data: {\"a\":1}\nretry: 10\nfoo: bar\n\n");
    assert_eq!(events(&items), vec!["{\"a\":1}"]);
}

#[test]
fn the_parser_keeps_no_more_than_the_unfinished_event() {
    // Many complete events through one parser: each comes out as soon as its blank line does.
    let mut p = SseParser::new();
    let mut out = Vec::new();
    for i in 0..1000 {
        p.push(format!("data: {{\"n\":{i}}}\n\n").as_bytes(), &mut out);
        assert_eq!(out.len(), 1, "event {i} not emitted at once");
        out.clear();
    }
}

#[test]
fn an_oversized_line_is_dropped_and_counted_and_the_stream_goes_on() {
    use gemfleet_gemini::sse::MAX_EVENT_BYTES;
    let mut p = SseParser::new();
    let mut out = Vec::new();
    let big = vec![b'x'; 64 * 1024];
    p.push(b"data: ", &mut out);
    let mut sent = 0;
    while sent <= MAX_EVENT_BYTES {
        p.push(&big, &mut out);
        sent += big.len();
    }
    p.push(b"\n\ndata: {\"after\":1}\n\n", &mut out);
    p.finish(&mut out);
    assert_eq!(p.oversized, 1);
    assert_eq!(events(&out), vec!["{\"after\":1}"]);
}
