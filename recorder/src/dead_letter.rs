//! Input the recorder refuses: why, and a safe excerpt. A message that fails to parse may
//! still carry a secret, so the excerpt redacts every `"secret"` value (and anything that looks
//! like a Google API key) before it is stored.

use regex::Regex;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// A refused message, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub topic: String,
    pub agent_id: Option<String>,
    pub reason: &'static str,
    pub detail: String,
    pub payload_size: i64,
    pub payload_sha256: String,
    pub excerpt: String,
}

const EXCERPT_CHARS: usize = 300;

static SECRET_VALUE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)("[a-z_\-]*(secret|api[_-]?key|password|token)[a-z_\-]*"\s*:\s*)"(?:[^"\\]|\\.)*"?"#,
    )
    .ok()
});
static GOOGLE_KEY: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"AIza[0-9A-Za-z_\-]{10,}").ok());

/// The first characters of `payload` as text, with secrets redacted.
pub fn excerpt(payload: &[u8]) -> String {
    let head = &payload[..payload.len().min(EXCERPT_CHARS * 4)];
    let text = String::from_utf8_lossy(head);
    let mut s = text.into_owned();
    if let Some(re) = SECRET_VALUE.as_ref() {
        s = re.replace_all(&s, "${1}\"<redacted>\"").into_owned();
    }
    if let Some(re) = GOOGLE_KEY.as_ref() {
        s = re.replace_all(&s, "<redacted>").into_owned();
    }
    // Redact before truncating, so a cut can't leave half a secret unmatched.
    s.chars()
        .filter(|c| !c.is_control() || *c == '\n')
        .take(EXCERPT_CHARS)
        .collect()
}

impl DeadLetter {
    pub fn new(
        topic: &str,
        agent_id: Option<String>,
        reason: &'static str,
        detail: String,
        payload: &[u8],
    ) -> Self {
        DeadLetter {
            topic: topic.chars().take(300).collect(),
            agent_id,
            reason,
            detail: detail.chars().take(500).collect(),
            payload_size: payload.len() as i64,
            payload_sha256: hex::encode(Sha256::digest(payload)),
            excerpt: excerpt(payload),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_secret_values_and_key_shapes() {
        let p = br#"{"v":1,"body":{"secret":"AIzaSyTopSecret123456","api_key": "abc\"def", "x":"AIzaSyOtherKey9876543"}"#;
        let e = excerpt(p);
        assert!(!e.contains("TopSecret"), "{e}");
        assert!(!e.contains("abc"), "{e}");
        assert!(!e.contains("OtherKey"), "{e}");
        assert!(e.contains("\"secret\":\"<redacted>\""), "{e}");
    }

    #[test]
    fn binary_is_safe() {
        let d = DeadLetter::new("t", None, "not_json", "x".into(), &[0, 159, 146, 150, 255]);
        assert_eq!(d.payload_size, 5);
        assert_eq!(d.payload_sha256.len(), 64);
    }
}
