//! Properties: the classifier, the usage parser and the SSE parser never panic, on any bytes,
//! and the SSE parser's output does not depend on how the bytes were chunked.

use crate::now;
use gemfleet_gemini::sse::{SseParser, parse_all};
use gemfleet_gemini::{classify, classify_http, usage};
use proptest::prelude::*;

/// Bytes biased towards the structures the parsers look for, so the search reaches deep
/// paths rather than failing at the first byte.
fn gemini_ish() -> impl Strategy<Value = String> {
    let atoms = prop_oneof![
        Just("data: ".to_owned()),
        Just("\n".to_owned()),
        Just("\r\n".to_owned()),
        Just(": c\n".to_owned()),
        Just("{\"error\":{".to_owned()),
        Just("\"code\":429,".to_owned()),
        Just("\"status\":\"RESOURCE_EXHAUSTED\",".to_owned()),
        Just("\"message\":\"Please retry in 51.6s limit: 0\",".to_owned()),
        Just("\"details\":[".to_owned()),
        Just("{\"@type\":\"type.googleapis.com/google.rpc.QuotaFailure\",\"violations\":[{\"quotaId\":\"GenerateRequestsPerDayPerProjectPerModel-FreeTier\",\"quotaValue\":\"20\"}]}".to_owned()),
        Just("{\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":\"9999999999999s\"}".to_owned()),
        Just("{\"metadata\":{\"quotaResetDelay\":\"161h39m41.3s\",\"quotaResetTimeStamp\":\"9999-12-31T23:59:59Z\"},\"reason\":\"X\"}".to_owned()),
        Just("\"usageMetadata\":{\"promptTokenCount\":18446744073709551615,\"totalTokenCount\":-1}".to_owned()),
        Just("\"candidates\":[{\"finishReason\":\"STOP\"}]".to_owned()),
        Just("✕ [API Error: ".to_owned()),
        Just("[429 Too Many Requests]".to_owned()),
        Just("]".to_owned()),
        Just("}".to_owned()),
        Just(",".to_owned()),
        "[ -~]{0,12}",
    ];
    prop::collection::vec(atoms, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn classify_never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048), status in prop::option::of(0u16..1000)) {
        let _ = classify_http(status.unwrap_or(429), &bytes, None, now());
        let _ = classify(status, &String::from_utf8_lossy(&bytes), Some("m"), now());
    }

    #[test]
    fn classify_never_panics_on_gemini_shaped_text(text in gemini_ish(), status in prop::option::of(prop_oneof![Just(200u16), Just(429), Just(503), 0u16..1000])) {
        let c = classify(status, &text, None, now());
        // Whatever it is, a record always comes back, and only key reasons blame a key.
        prop_assert!(!c.reason.is_empty());
    }

    #[test]
    fn usage_parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048), text in gemini_ish()) {
        let lossy = String::from_utf8_lossy(&bytes);
        let _ = usage::from_body(&lossy);
        let _ = usage::from_stream(&lossy);
        let _ = usage::from_body(&text);
        let _ = usage::from_stream(&text);
    }

    #[test]
    fn sse_parser_never_panics_and_chunking_does_not_matter(
        bytes in prop::collection::vec(any::<u8>(), 0..1024),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        let mut last = 0;
        for p in points.into_iter().chain([bytes.len()]) {
            parser.push(&bytes[last..p], &mut out);
            last = p;
        }
        parser.finish(&mut out);
        let mut whole = SseParser::new();
        let mut expected = Vec::new();
        whole.push(&bytes, &mut expected);
        whole.finish(&mut expected);
        prop_assert_eq!(out, expected);
    }

    #[test]
    fn sse_chunking_does_not_matter_for_gemini_shaped_text(text in gemini_ish(), cut in any::<prop::sample::Index>()) {
        let bytes = text.as_bytes();
        let at = cut.index(bytes.len() + 1);
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        parser.push(&bytes[..at], &mut out);
        parser.push(&bytes[at..], &mut out);
        parser.finish(&mut out);
        prop_assert_eq!(out, parse_all(&text));
    }
}
