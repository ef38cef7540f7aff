//! A string that must never be printed: upstream keys, user keys, passwords, Redis URLs.
//!
//! `Debug` and `Display` print `***`; reading the value is an explicit [`Secret::expose`].
//! Logs name a key by its [`fingerprint`] (`AIza…wxyz`), never by the key itself.

use serde::{Deserialize, Deserializer};
use std::fmt;

#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Serde helpers for the one place a secret must be written out whole: the store.
/// Use as `#[serde(with = "crate::secret::stored")]`; API types never derive this.
pub mod stored {
    use super::Secret;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(s: &Secret, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s.expose())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

/// A short, safe name for a key: its first four and last four characters (`AIza…wxyz`).
/// Keys too short to hide anything are shown as `…` alone.
pub fn fingerprint(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() < 12 {
        return "…".to_owned();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("AIzaSyVerySecret");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "AIzaSyVerySecret");
    }

    #[test]
    fn fingerprint_keeps_only_the_ends() {
        assert_eq!(fingerprint("AIzaSyABCDEFGHIJwxyz"), "AIza…wxyz");
        assert_eq!(fingerprint("short"), "…");
    }
}
