//! Task context on the wire, pure: a session file is zstd-compressed, split into chunks of at
//! most [`CONTEXT_CHUNK_BYTES`] and base64-encoded; the receiver reassembles, decompresses and
//! checks the SHA-256 of the uncompressed file.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use gemfleet_protocol::CONTEXT_CHUNK_BYTES;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContextError {
    #[error("context chunk {index} of {total} is inconsistent with the others")]
    Inconsistent { index: u32, total: u32 },
    #[error("context chunk is not base64: {0}")]
    Base64(String),
    #[error("context does not decompress: {0}")]
    Decompress(String),
    #[error("context checksum mismatch: expected {expected}, got {got}")]
    Checksum { expected: String, got: String },
    #[error("cannot compress context: {0}")]
    Compress(String),
    #[error("context is too large to transfer ({0} chunks)")]
    TooLarge(usize),
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Compresses and splits a session file: (sha256 of the file, base64 chunks).
pub fn encode(file: &[u8]) -> Result<(String, Vec<String>), ContextError> {
    let compressed =
        zstd::encode_all(file, 3).map_err(|e| ContextError::Compress(e.to_string()))?;
    let chunks: Vec<String> = if compressed.is_empty() {
        vec![String::new()]
    } else {
        compressed
            .chunks(CONTEXT_CHUNK_BYTES)
            .map(|c| B64.encode(c))
            .collect()
    };
    if u32::try_from(chunks.len()).is_err() {
        return Err(ContextError::TooLarge(chunks.len()));
    }
    Ok((sha256_hex(file), chunks))
}

/// Collects chunks in any order (duplicates are harmless) until all are there.
#[derive(Debug, Default)]
pub struct Assembler {
    total: Option<u32>,
    sha256: String,
    parts: BTreeMap<u32, Vec<u8>>,
}

impl Assembler {
    /// Adds one chunk; returns the whole file when it was the last one missing.
    pub fn add(
        &mut self,
        index: u32,
        total: u32,
        sha256: &str,
        data: &str,
    ) -> Result<Option<Vec<u8>>, ContextError> {
        if total == 0
            || index >= total
            || self.total.is_some_and(|t| t != total)
            || (!self.sha256.is_empty() && self.sha256 != sha256)
        {
            return Err(ContextError::Inconsistent { index, total });
        }
        self.total = Some(total);
        self.sha256 = sha256.to_string();
        let bytes = B64
            .decode(data)
            .map_err(|e| ContextError::Base64(e.to_string()))?;
        self.parts.insert(index, bytes);
        if self.parts.len() < total as usize {
            return Ok(None);
        }
        let compressed: Vec<u8> = self.parts.values().flatten().copied().collect();
        let file = zstd::decode_all(compressed.as_slice())
            .map_err(|e| ContextError::Decompress(e.to_string()))?;
        let got = sha256_hex(&file);
        if got != self.sha256 {
            return Err(ContextError::Checksum {
                expected: self.sha256.clone(),
                got,
            });
        }
        Ok(Some(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_file_round_trips_in_any_chunk_order() {
        // Incompressible-ish content so that it needs several chunks.
        let mut file = Vec::new();
        let mut x: u64 = 12345;
        for _ in 0..(CONTEXT_CHUNK_BYTES * 3 / 8) {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            file.extend_from_slice(&x.to_le_bytes());
        }
        let (sha, chunks) = encode(&file).unwrap();
        assert!(chunks.len() >= 3);
        let total = chunks.len() as u32;
        let mut a = Assembler::default();
        let mut out = None;
        for i in (0..total).rev() {
            out = a.add(i, total, &sha, &chunks[i as usize]).unwrap();
        }
        assert_eq!(out.unwrap(), file);
    }

    #[test]
    fn a_wrong_checksum_or_inconsistent_total_is_refused() {
        let (_, chunks) = encode(b"hello").unwrap();
        let mut a = Assembler::default();
        assert!(matches!(
            a.add(0, 1, "00", &chunks[0]),
            Err(ContextError::Checksum { .. })
        ));
        let mut a = Assembler::default();
        assert!(a.add(1, 1, "00", "").is_err());
        assert!(a.add(0, 0, "00", "").is_err());
    }
}
