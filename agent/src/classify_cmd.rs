//! `gemfleet-agent classify`: exposes the classifier to people, so an operator can paste an
//! error and see what the fleet would do with it.

use chrono::{DateTime, Utc};
use clap::Args;
use gemfleet_gemini::{Classification, Dimension, FailureClass, Scope, Tier};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Inputs larger than this are refused: an error body or a stream's tail is kilobytes.
const MAX_INPUT_BYTES: u64 = 32 * 1024 * 1024;

#[derive(Debug, Args)]
// The subcommand's one-line about comes from its doc comment in cli.rs; the details live in
// `after_help`, which that comment does not replace.
#[command(
    after_help = "Input: a raw Gemini API response body (JSON object or array), the text of \
an SSE stream in which an error arrived, or error text that Gemini CLI or an SDK printed.\n\n\
Output: the classification record (docs/classification.md) as one JSON object on stdout:\n  \
{\"class\", \"scope\", \"dimension\", \"retry_after_ms\", \"until\", \"limit\", \"tier\", \
\"in_stream\", \"reason\"}\nFields are null where the error does not say.\n\n\
Exit status: 0 when the input was classified (class \"unknown\" included); 1 when the input \
cannot be read (missing file, not UTF-8, empty); 2 for bad arguments.\n\n\
Example:\n  gemfleet-agent classify --status 429 --now 2026-03-08T09:30:00Z body.json"
)]
pub struct ClassifyArgs {
    /// HTTP status of the response; without it the status is inferred from the body.
    #[arg(long, value_parser = clap::value_parser!(u16).range(100..=599))]
    pub status: Option<u16>,
    /// The model the request was for (named in the reason).
    #[arg(long)]
    pub model: Option<String>,
    /// The instant to classify at, RFC 3339 (e.g. 2026-03-08T09:30:00Z); default: now.
    /// Per-day limits end at the first Pacific midnight after it.
    #[arg(long, value_parser = parse_now)]
    pub now: Option<DateTime<Utc>>,
    /// File with the body, stream text or printed error; `-` or nothing reads stdin
    /// (standard input).
    pub file: Option<PathBuf>,
}

fn parse_now(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("not an RFC 3339 instant ({e}); example: 2026-03-08T09:30:00Z"))
}

/// Why the input could not be classified.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} is larger than {MAX_INPUT_BYTES} bytes; pass the error body or the stream's tail"
    )]
    TooLarge { path: String },
    #[error("{path} is not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 { path: String, offset: usize },
    #[error("{path} is empty: nothing to classify")]
    Empty { path: String },
}

pub fn run(args: ClassifyArgs) -> ExitCode {
    let text = match read_input(args.file.as_deref()) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("gemfleet-agent classify: {e}");
            return ExitCode::from(1);
        }
    };
    let now = args.now.unwrap_or_else(Utc::now);
    let record = gemfleet_gemini::classify(args.status, &text, args.model.as_deref(), now);
    println!("{}", render(&record));
    ExitCode::SUCCESS
}

/// The record as printed: exactly the contract's fields (QUOTAS.md) plus `reason`, in the
/// contract's order (the library record also carries the quota id, which people do not need).
#[derive(Debug, serde::Serialize)]
pub struct Printed<'a> {
    pub class: FailureClass,
    pub scope: Scope,
    pub dimension: Option<Dimension>,
    pub retry_after_ms: Option<u64>,
    pub until: Option<DateTime<Utc>>,
    pub limit: Option<u64>,
    pub tier: Option<Tier>,
    pub in_stream: bool,
    pub reason: &'a str,
}

pub fn render(c: &Classification) -> String {
    let printed = Printed {
        class: c.class,
        scope: c.scope,
        dimension: c.dimension,
        retry_after_ms: c.retry_after_ms,
        until: c.until,
        limit: c.limit,
        tier: c.tier,
        in_stream: c.in_stream,
        reason: &c.reason,
    };
    // Serialising plain enums, numbers and strings cannot fail; fall back to the reason
    // alone rather than panic if it ever did.
    serde_json::to_string(&printed).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// Reads the whole input as UTF-8 text, from a file or stdin (`None` or `-`).
fn read_input(file: Option<&Path>) -> Result<String, InputError> {
    let (name, bytes) = match file {
        Some(p) if p != Path::new("-") => {
            let name = p.display().to_string();
            let f = std::fs::File::open(p).map_err(|source| InputError::Read {
                path: name.clone(),
                source,
            })?;
            (name.clone(), read_capped(f, &name)?)
        }
        _ => {
            let name = "standard input".to_owned();
            (name.clone(), read_capped(std::io::stdin().lock(), &name)?)
        }
    };
    let text = String::from_utf8(bytes).map_err(|e| InputError::NotUtf8 {
        path: name.clone(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    if text.trim().is_empty() {
        return Err(InputError::Empty { path: name });
    }
    Ok(text)
}

fn read_capped(r: impl Read, name: &str) -> Result<Vec<u8>, InputError> {
    let mut bytes = Vec::new();
    r.take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| InputError::Read {
            path: name.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(InputError::TooLarge {
            path: name.to_owned(),
        });
    }
    Ok(bytes)
}
