//! Key secrets at rest: ChaCha20-Poly1305 with a random 96-bit nonce per key and the key's
//! name as associated data (a ciphertext moved to another key's row fails to decrypt). The
//! master key comes from the environment or a file, never the database.

use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use gemfleet_protocol::Secret;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("master key is not valid base64: {0}")]
    BadBase64(String),
    #[error(
        "master key must be 32 bytes (base64 of 32 random bytes, e.g. `openssl rand -base64 32`); got {0} bytes"
    )]
    BadLength(usize),
    #[error("cannot read master key file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("no master key: set GEMFLEET_MASTER_KEY (base64 of 32 bytes) or master_key_file")]
    Missing,
    #[error("cannot decrypt the secret of key {0}: wrong master key or corrupted row")]
    Decrypt(String),
    #[error("cannot encrypt the secret of key {0}")]
    Encrypt(String),
}

/// The master key. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct MasterKey(Key);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn from_base64(s: &str) -> Result<Self, CryptoError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|e| CryptoError::BadBase64(e.to_string()))?;
        if bytes.len() != 32 {
            return Err(CryptoError::BadLength(bytes.len()));
        }
        Ok(MasterKey(*Key::from_slice(&bytes)))
    }

    pub fn from_file(path: &str) -> Result<Self, CryptoError> {
        let s = std::fs::read_to_string(path).map_err(|source| CryptoError::File {
            path: path.into(),
            source,
        })?;
        Self::from_base64(&s)
    }

    /// A fresh random key (tests, `keys gen-master`).
    pub fn generate() -> Self {
        MasterKey(ChaCha20Poly1305::generate_key(&mut OsRng))
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0.as_slice())
    }

    /// Encrypts `secret` for the key named `key_name`: (nonce, ciphertext).
    pub fn seal(&self, key_name: &str, secret: &Secret) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        let cipher = ChaCha20Poly1305::new(&self.0);
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: secret.expose().as_bytes(),
                    aad: key_name.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Encrypt(key_name.into()))?;
        Ok((nonce.to_vec(), ct))
    }

    pub fn open(&self, key_name: &str, nonce: &[u8], ct: &[u8]) -> Result<Secret, CryptoError> {
        if nonce.len() != 12 {
            return Err(CryptoError::Decrypt(key_name.into()));
        }
        let cipher = ChaCha20Poly1305::new(&self.0);
        let pt = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: key_name.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Decrypt(key_name.into()))?;
        String::from_utf8(pt)
            .map(Secret::new)
            .map_err(|_| CryptoError::Decrypt(key_name.into()))
    }
}

/// The key's public fingerprint: the first 8 hex digits of SHA-256(secret). Enough to tell
/// keys apart in logs and events; far too short to help guess the secret.
pub fn fingerprint(secret: &Secret) -> String {
    let digest = Sha256::digest(secret.expose().as_bytes());
    hex::encode(digest)[..8].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_aad_binds_name() {
        let mk = MasterKey::generate();
        let s = Secret::new("AIzaSyD-very-secret");
        let (n, ct) = mk.seal("k1", &s).unwrap();
        assert_eq!(mk.open("k1", &n, &ct).unwrap(), s);
        assert!(mk.open("k2", &n, &ct).is_err());
        assert!(MasterKey::generate().open("k1", &n, &ct).is_err());
        assert!(!ct.windows(6).any(|w| w == b"AIzaSy"));
        let (n2, _) = mk.seal("k1", &s).unwrap();
        assert_ne!(n, n2, "fresh nonce per seal");
    }

    #[test]
    fn master_key_parsing_errors_are_clear() {
        assert!(matches!(
            MasterKey::from_base64("!!"),
            Err(CryptoError::BadBase64(_))
        ));
        assert!(matches!(
            MasterKey::from_base64("AAAA"),
            Err(CryptoError::BadLength(3))
        ));
        let mk = MasterKey::generate();
        assert!(MasterKey::from_base64(&mk.to_base64()).is_ok());
        assert_eq!(format!("{mk:?}"), "MasterKey(<redacted>)");
        assert_eq!(fingerprint(&Secret::new("abc")), "ba7816bf");
    }
}
