//! Estimating a request's input tokens before it is sent, for the claim.
//!
//! The estimate is deliberately an upper bound of Google-style counting for text: one token per
//! four bytes of the whole request body (JSON syntax, tool declarations and all). Claims reserve
//! the estimate; the usage event corrects it to the counted value afterwards. The emulator's
//! counting rule (docs/emulator.md) never exceeds this estimate.

/// Estimated input tokens of a request body: `ceil(len / 4)`.
pub fn estimate_input_tokens(body: &[u8]) -> u64 {
    (body.len() as u64).div_ceil(4)
}
