//! Server-Sent Events as Gemini streams them (`?alt=sse`), parsed incrementally.
//!
//! The agent's proxy passes a stream's bytes through to Gemini CLI unchanged and, on the way,
//! feeds each chunk to an [`SseParser`] to read usage and to notice an error that arrives inside
//! the HTTP 200 stream. So the parser is push-based (bytes in, complete events out), keeps only
//! the unfinished line and event between chunks, and never buffers the stream.
//!
//! Written here rather than taken from a crate: the SSE crates (`sse-stream`,
//! `eventsource-stream`) wrap and own an async body `Stream`, which a tee-ing proxy cannot hand
//! over, and none reports the non-SSE lines Google sometimes writes into the stream (a raw,
//! pretty-printed JSON error object), which is exactly what must not be missed here. The
//! framing itself is the WHATWG "event stream interpretation", which is short.

use std::borrow::Cow;

/// Upper bound of one event's data and of one raw JSON object; beyond it the event is dropped
/// (counted in [`SseParser::oversized`]) instead of growing memory without bound.
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// `event:` field, when the stream set one (Gemini does not).
    pub event: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
    /// `id:` field, when set.
    pub id: Option<String>,
}

/// What the parser found in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    Event(SseEvent),
    /// A JSON value written into the stream outside SSE framing (Google's error objects,
    /// sometimes pretty-printed over many lines).
    RawJson(String),
}

impl SseItem {
    /// The JSON text this item carries.
    pub fn json(&self) -> &str {
        match self {
            SseItem::Event(e) => &e.data,
            SseItem::RawJson(s) => s,
        }
    }

    /// Whether this item is an error object (`{"error": …}` or `[{"error": …}]`).
    pub fn is_error(&self) -> bool {
        is_error_payload(self.json())
    }
}

/// Whether a JSON payload is an error object. A cheap textual test guards the parse: in a
/// normal chunk the word `"error"` can appear only escaped (`\"error\"`) inside model text.
pub fn is_error_payload(json: &str) -> bool {
    if !json.contains("\"error\"") {
        return false;
    }
    match serde_json::from_str::<serde_json::Value>(json.trim()) {
        Ok(serde_json::Value::Object(o)) => o.contains_key("error"),
        Ok(serde_json::Value::Array(items)) => items
            .iter()
            .any(|i| i.as_object().is_some_and(|o| o.contains_key("error"))),
        _ => false,
    }
}

/// Accumulates lines that are not SSE fields but look like a JSON value, until its brackets
/// balance.
#[derive(Debug, Default)]
struct RawJson {
    text: String,
    depth: i64,
    in_string: bool,
    escaped: bool,
}

impl RawJson {
    fn active(&self) -> bool {
        !self.text.is_empty()
    }

    fn reset(&mut self) {
        self.text.clear();
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
    }

    /// Adds a line; returns the value's text when its brackets balanced.
    fn push_line(&mut self, line: &str) -> Option<String> {
        for c in line.chars() {
            if self.in_string {
                match (self.escaped, c) {
                    (true, _) => self.escaped = false,
                    (false, '\\') => self.escaped = true,
                    (false, '"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => self.in_string = true,
                '{' | '[' => self.depth += 1,
                '}' | ']' => self.depth -= 1,
                _ => {}
            }
        }
        self.text.push_str(line);
        self.text.push('\n');
        if self.depth <= 0 {
            let done = std::mem::take(&mut self.text);
            self.reset();
            return Some(done);
        }
        None
    }
}

/// Incremental SSE parser: [`push`](SseParser::push) chunks as they arrive, then
/// [`finish`](SseParser::finish) at the end of the stream.
#[derive(Debug, Default)]
pub struct SseParser {
    /// The unfinished last line of the previous chunk.
    partial: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` starting the next one belongs to it.
    after_cr: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
    id: Option<String>,
    raw: RawJson,
    skipping_oversized: bool,
    /// Events and raw values dropped for exceeding [`MAX_EVENT_BYTES`].
    pub oversized: u64,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk of the stream; complete items are appended to `out` (a Vec the
    /// caller may reuse across chunks).
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<SseItem>) {
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while let Some(pos) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (line, rest) = chunk.split_at(pos);
            let ends_cr = rest.first() == Some(&b'\r');
            let mut rest = rest.get(1..).unwrap_or_default();
            if ends_cr {
                match rest.first() {
                    Some(b'\n') => rest = rest.get(1..).unwrap_or_default(),
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            if self.partial.is_empty() {
                self.line(line, out);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.line(&whole, out);
                whole.clear();
                self.partial = whole; // keep the allocation for the next partial line
            }
            chunk = rest;
        }
        if !chunk.is_empty() && !self.skipping_oversized {
            if self.partial.len() + chunk.len() > MAX_EVENT_BYTES {
                // A line this long is no event we can use; drop it rather than grow.
                self.partial.clear();
                self.skipping_oversized = true;
                self.oversized += 1;
            } else {
                self.partial.extend_from_slice(chunk);
            }
        }
    }

    /// Ends the stream: a last line without a newline is processed, and an event whose blank
    /// line never came is dispatched (a stream cut short may still carry its error).
    pub fn finish(&mut self, out: &mut Vec<SseItem>) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, out);
        }
        self.dispatch(out);
        if self.raw.active() {
            self.raw.reset();
        }
        self.after_cr = false;
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseItem>) {
        if self.skipping_oversized {
            // The tail of an oversized line arrived; the line ends here.
            self.skipping_oversized = false;
            return;
        }
        let line: Cow<'_, str> = String::from_utf8_lossy(line);
        let line = line.strip_prefix('\u{feff}').unwrap_or(&line);
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line.starts_with(':') {
            return; // comment
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                self.raw.reset();
                if self.data.len() + value.len() >= MAX_EVENT_BYTES {
                    self.oversized += 1;
                    self.data.clear();
                    self.has_data = false;
                    return;
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_owned()),
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            "id" | "retry" => {}
            _ => self.stray(line, out),
        }
    }

    /// A line that is no SSE field. If it starts (or continues) a JSON value, collect it.
    fn stray(&mut self, line: &str, out: &mut Vec<SseItem>) {
        let starts_json = line.trim_start().starts_with(['{', '[']);
        if !self.raw.active() && !starts_json {
            return;
        }
        if self.raw.text.len() + line.len() >= MAX_EVENT_BYTES {
            self.oversized += 1;
            self.raw.reset();
            return;
        }
        if let Some(json) = self.raw.push_line(line) {
            out.push(SseItem::RawJson(json));
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseItem>) {
        if self.has_data {
            out.push(SseItem::Event(SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
                id: self.id.clone(),
            }));
        }
        self.data.clear();
        self.has_data = false;
        self.event = None;
    }
}

/// Parses a whole stream text at once (for `classify` and tests).
pub fn parse_all(text: &str) -> Vec<SseItem> {
    let mut parser = SseParser::new();
    let mut out = Vec::new();
    parser.push(text.as_bytes(), &mut out);
    parser.finish(&mut out);
    out
}

/// Whether the text looks like an SSE stream (some line is a `data:` field).
pub fn looks_like_sse(text: &str) -> bool {
    text.lines()
        .any(|l| l.trim_start_matches('\u{feff}').starts_with("data:"))
}
