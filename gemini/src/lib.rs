//! Gemini API knowledge, pure (no IO): what Google's answers mean.
//!
//! - [`classification`]: the record every failure is turned into (QUOTAS.md's contract).
//! - [`classify`]: the function that turns a status, body or stream text into that record.
//! - [`usage`]: token usage of a request, from a body or an SSE stream.
//! - [`sse`]: the Server-Sent-Events framing Gemini streams use.
//! - [`pacific`]: the Pacific-midnight day boundary that per-day quotas reset at.

pub mod classification;
pub mod classify;
pub mod pacific;
pub mod sse;
pub mod tokens;
pub mod usage;

pub use classification::{Classification, Dimension, FailureClass, Scope, Tier};
pub use classify::{classify, classify_http};
