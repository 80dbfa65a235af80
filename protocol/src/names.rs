//! Names that appear in MQTT topics. Parsed once at the border, so a hostile name (one that
//! would widen a subscription with `+`/`#`, climb levels with `/`, or hide a NUL) never reaches
//! a topic string.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest name accepted in a topic level.
pub const MAX_NAME_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} name is empty")]
    Empty { what: &'static str },
    #[error("{what} name is {len} bytes long; the limit is {MAX_NAME_LEN}")]
    TooLong { what: &'static str, len: usize },
    #[error(
        "{what} name {shown:?} contains {bad:?}; allowed are letters, digits, '.', '_' and '-' (not first)"
    )]
    BadChar {
        what: &'static str,
        shown: String,
        bad: char,
    },
    #[error("{what} name {shown:?} must start with a letter or a digit")]
    BadStart { what: &'static str, shown: String },
}

/// Checks one topic-level name. Allowed: ASCII letters, digits, `.`, `_`, `-`; the first
/// character must be a letter or digit (so no `$`-system or dot-file look-alikes). This is
/// stricter than MQTT needs: names also become file names, URL path parts and broker
/// usernames (Mosquitto's password file cannot hold a `:` in a username).
pub fn validate(what: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            what,
            len: name.len(),
        });
    }
    for (i, c) in name.chars().enumerate() {
        let ok = c.is_ascii_alphanumeric() || (i > 0 && matches!(c, '.' | '_' | '-'));
        if !ok {
            let shown: String = name.chars().take(MAX_NAME_LEN).collect();
            if i == 0 && matches!(c, '.' | '_' | '-') {
                return Err(NameError::BadStart { what, shown });
            }
            return Err(NameError::BadChar {
                what,
                shown,
                bad: c,
            });
        }
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            pub fn parse(s: impl Into<String>) -> Result<Self, NameError> {
                let s = s.into();
                validate($what, &s)?;
                Ok(Self(s))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }
        impl std::str::FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }
        impl From<$ty> for String {
            fn from(n: $ty) -> String {
                n.0
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// An agent's id: its MQTT client id and broker username (default: the hostname).
    AgentId, "agent"
);
name_type!(
    /// The operator's name for an API key (never the secret).
    KeyName, "key"
);
name_type!(
    /// A Google Cloud project id; quotas are per project and model.
    ProjectId, "project"
);
name_type!(
    /// A Gemini model name without the `models/` prefix, e.g. `gemini-2.5-flash`.
    ModelName, "model"
);
name_type!(
    /// A task id: the unit of context that resumes across machines.
    TaskId, "task"
);

impl ModelName {
    /// Accepts `models/gemini-2.5-flash` as well as `gemini-2.5-flash`.
    pub fn parse_api(s: &str) -> Result<Self, NameError> {
        Self::parse(s.strip_prefix("models/").unwrap_or(s))
    }
}
