//! Finding the error in what a caller hands over: a JSON body (object or array), an SSE
//! stream's text (the error as a `data:` event or as raw multi-line JSON), or text a client
//! printed (Gemini CLI's `✕ [API Error: …]`, an SDK's `[429 Too Many Requests] …`, an old
//! gRPC client's protobuf text print).

use super::api_error::{ApiError, http_status_of};
use crate::sse::{self, SseItem};
use regex::Regex;
use serde_json::Value;
use std::sync::LazyLock;

/// How much printed text is searched for embedded JSON, and at how many candidate starts:
/// printed errors are short, and this bounds the work on hostile input.
const MAX_PRINTED_SCAN_BYTES: usize = 256 * 1024;
const MAX_JSON_CANDIDATES: usize = 64;

/// How the error was framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A JSON body: `{"error":…}`, or `[{"error":…}]` as Code Assist sends.
    Body,
    /// Inside a stream: an SSE event, raw JSON between events, or a JSON array after
    /// ordinary chunks.
    Stream,
    /// Printed text (a client's rendering of the error).
    Printed,
}

/// The error found, with its framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub error: ApiError,
    pub framing: Framing,
}

/// Finds the error in `text`; `None` when there is none (a successful body or stream, or
/// empty input).
pub fn locate(text: &str) -> Option<Located> {
    let t = text.trim_start_matches('\u{feff}').trim();
    if t.is_empty() {
        return None;
    }
    if t.starts_with(['{', '['])
        && let Ok(doc) = serde_json::from_str::<Value>(t)
    {
        return ApiError::from_document(&doc).map(|(error, after_chunks)| Located {
            error,
            framing: if after_chunks {
                Framing::Stream
            } else {
                Framing::Body
            },
        });
    }
    if sse::looks_like_sse(t) {
        return in_stream(t);
    }
    if t.starts_with(['{', '[']) {
        // Raw JSON chunks without SSE framing (a JSON-array stream cut short, or several
        // objects one after another).
        if let Some(found) = in_stream(t) {
            return Some(found);
        }
    }
    Some(printed(t))
}

/// The first error item of a stream.
fn in_stream(text: &str) -> Option<Located> {
    sse::parse_all(text)
        .iter()
        .filter(|item| item.is_error())
        .find_map(|item: &SseItem| {
            let doc = serde_json::from_str::<Value>(item.json().trim()).ok()?;
            ApiError::from_document(&doc)
        })
        .map(|(error, _)| Located {
            error,
            framing: Framing::Stream,
        })
}

static SDK_STATUS: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"\[(\d{3}) [A-Za-z][A-Za-z ]*\]").ok());
static LEADING_STATUS: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^(\d{3})\s+\S").ok());
static GOT_STATUS: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"got status:\s*([A-Z_]+)").ok());
static PRINTED_REASON: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"\breason"?\s*[:=]\s*"([A-Z][A-Z0-9_]+)""#).ok());
static PRINTED_META: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"key:\s*"([^"]{1,100})"\s*value:\s*"([^"]{0,500})""#).ok());
static PRINTED_DOMAIN: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"\bdomain"?\s*[:=]\s*"([a-z0-9.-]+)""#).ok());

/// Printed text: the JSON it embeds when there is some, plus what the prose says.
fn printed(text: &str) -> Located {
    let scan = truncate(text, MAX_PRINTED_SCAN_BYTES);
    let mut error = embedded_json(scan)
        .or_else(|| {
            // Terminals wrap long lines, inserting a newline and indentation inside JSON
            // strings; join the lines and try again.
            scan.contains('\n')
                .then(|| embedded_json(&join_wrapped(scan)))?
        })
        .unwrap_or_default();
    // The prose around the JSON (Gemini CLI's quota notices) is part of what was said.
    if error.message.is_empty() {
        error.message = scan.to_owned();
    } else {
        error.message = format!("{}\n{}", error.message, scan);
    }
    if error.code.is_none() {
        error.code = printed_status(scan);
    }
    if let Some(re) = PRINTED_REASON.as_ref() {
        for caps in re.captures_iter(scan) {
            if let Some(r) = caps.get(1) {
                error.reasons.push(r.as_str().to_owned());
            }
        }
    }
    if let Some(re) = PRINTED_DOMAIN.as_ref() {
        for caps in re.captures_iter(scan) {
            if let Some(d) = caps.get(1) {
                error.domains.push(d.as_str().to_owned());
            }
        }
    }
    if let Some(re) = PRINTED_META.as_ref() {
        for caps in re.captures_iter(scan) {
            if let (Some(k), Some(v)) = (caps.get(1), caps.get(2)) {
                error
                    .metadata
                    .push((k.as_str().to_owned(), v.as_str().to_owned()));
            }
        }
    }
    Located {
        error,
        framing: Framing::Printed,
    }
}

/// The status a print states: `[429 Too Many Requests]`, a leading `403 `, or
/// `got status: UNAVAILABLE`.
fn printed_status(text: &str) -> Option<u16> {
    let num = |re: &LazyLock<Option<Regex>>| {
        re.as_ref()?
            .captures(text)?
            .get(1)?
            .as_str()
            .parse::<u16>()
            .ok()
            .filter(|s| (100..600).contains(s))
    };
    num(&SDK_STATUS)
        .or_else(|| num(&LEADING_STATUS))
        .or_else(|| http_status_of(GOT_STATUS.as_ref()?.captures(text)?.get(1)?.as_str()))
}

/// The error in the first JSON value embedded in the text that holds one; a details array
/// printed beside the message (`[{"@type": …}]`) is read too.
fn embedded_json(text: &str) -> Option<ApiError> {
    let mut details: Vec<Value> = Vec::new();
    let mut found: Option<ApiError> = None;
    let mut pos = 0;
    let mut tried = 0;
    while tried < MAX_JSON_CANDIDATES {
        let Some(rel) = text.get(pos..).and_then(|rest| rest.find(['{', '['])) else {
            break;
        };
        let start = pos + rel;
        tried += 1;
        let Some(candidate) = text.get(start..) else {
            break;
        };
        let mut values = serde_json::Deserializer::from_str(candidate).into_iter::<Value>();
        match values.next() {
            Some(Ok(v)) => {
                if found.is_none()
                    && let Some((e, _)) = ApiError::from_document(&v)
                {
                    found = Some(e);
                } else if let Value::Array(items) = &v
                    && items.iter().any(|i| i.get("@type").is_some())
                {
                    details.extend(items.iter().cloned());
                }
                pos = start + values.byte_offset().max(1);
            }
            _ => pos = start + 1,
        }
    }
    match (found, details.is_empty()) {
        (Some(mut e), false) => {
            e.read_details(&details);
            Some(e)
        }
        (Some(e), true) => Some(e),
        (None, false) => {
            let mut e = ApiError::default();
            e.read_details(&details);
            Some(e)
        }
        (None, true) => None,
    }
}

/// Joins terminal-wrapped lines: a newline and the indentation after it become one space.
fn join_wrapped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.lines().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(if i > 0 { line.trim_start() } else { line });
    }
    out
}

/// At most `max` bytes, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

pub fn patterns_compile() -> bool {
    SDK_STATUS.is_some()
        && LEADING_STATUS.is_some()
        && GOT_STATUS.is_some()
        && PRINTED_REASON.is_some()
        && PRINTED_META.is_some()
        && PRINTED_DOMAIN.is_some()
}
