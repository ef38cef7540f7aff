//! User keys: the credentials clients present to this gateway.
//!
//! A user key is random, shown once, and stored only as a SHA-256 hash plus a short
//! display prefix. Lookup is one hash and one map probe on an `ArcSwap` snapshot that is
//! replaced whole when users change. This module does not do HTTP; the proxy maps its
//! answers onto the route's error shape.

use crate::secret::Secret;
use crate::store::UserRecord;
use arc_swap::ArcSwap;
use rand::Rng;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// Hex SHA-256 of a user key. Keys are 190+ random bits, so an unsalted fast hash is enough
/// and keeps the per-request check cheap.
pub fn hash_key(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

/// A key's SHA-256, the form the per-request look-up uses (no hex, no allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
struct KeyDigest([u8; 32]);

impl KeyDigest {
    fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    /// From a stored hex hash; `None` when it is not one (it can match no key).
    fn from_hex(hex: &str) -> Option<Self> {
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (b, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
            *b = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(Self(out))
    }
}

impl std::hash::Hash for KeyDigest {
    /// A digest is already uniformly spread: its first bytes are the hash.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// Passes a [`KeyDigest`]'s own bits through (SipHash over 32 random bytes buys nothing).
#[derive(Default)]
struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type ByHash = HashMap<KeyDigest, Arc<UserRecord>, std::hash::BuildHasherDefault<DigestHasher>>;

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// A fresh user key: `gb-` and 32 base62 characters.
pub fn generate_key() -> Secret {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let body: String = (0..32)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    Secret::new(format!("gb-{body}"))
}

pub fn new_id() -> String {
    let n: u64 = rand::rng().random();
    format!("u{n:016x}")
}

pub fn display_prefix(key: &str) -> String {
    key.chars().take(7).collect::<String>() + "…"
}

#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Unknown,
    Disabled,
    Expired,
}

#[derive(Default)]
pub struct Users {
    by_hash: ArcSwap<ByHash>,
}

impl Users {
    pub fn new(records: &[UserRecord]) -> Self {
        let users = Self::default();
        users.replace(records);
        users
    }

    pub fn replace(&self, records: &[UserRecord]) {
        let map = records
            .iter()
            .filter_map(|r| Some((KeyDigest::from_hex(&r.key_hash)?, Arc::new(r.clone()))))
            .collect();
        self.by_hash.store(Arc::new(map));
    }

    pub fn all(&self) -> Vec<Arc<UserRecord>> {
        self.by_hash.load().values().cloned().collect()
    }

    /// Checks a presented key at `now` (Unix seconds).
    pub fn authenticate(&self, key: Option<&str>, now: i64) -> Result<Arc<UserRecord>, AuthError> {
        let key = key.filter(|k| !k.is_empty()).ok_or(AuthError::Missing)?;
        let user = self
            .by_hash
            .load()
            .get(&KeyDigest::of(key))
            .cloned()
            .ok_or(AuthError::Unknown)?;
        if !user.enabled {
            return Err(AuthError::Disabled);
        }
        if user.expires_at.is_some_and(|t| t <= now) {
            return Err(AuthError::Expired);
        }
        Ok(user)
    }
}

/// A new user record for `name` holding `key`.
pub fn record(name: &str, key: &Secret, now: i64) -> UserRecord {
    UserRecord {
        id: new_id(),
        name: name.to_owned(),
        key_hash: hash_key(key.expose()),
        key_prefix: display_prefix(key.expose()),
        enabled: true,
        created_at: now,
        expires_at: None,
        models: Vec::new(),
        rpm: None,
        daily_tokens: None,
        max_concurrent: None,
        groups: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_lowercase_hex_sha256() {
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let digest = KeyDigest::from_hex(&hash_key("abc")).unwrap();
        assert!(digest == KeyDigest::of("abc"));
        assert!(KeyDigest::from_hex("ba78").is_none());
        assert!(KeyDigest::from_hex(&"g".repeat(64)).is_none());
    }

    #[test]
    fn generated_keys_are_distinct_and_shaped() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().starts_with("gb-") && a.expose().len() == 35);
    }

    #[test]
    fn authenticate_checks_hash_enabled_and_expiry() {
        let key = generate_key();
        let mut rec = record("alice", &key, 100);
        assert!(!rec.key_hash.contains(key.expose()));
        let users = Users::new(std::slice::from_ref(&rec));
        assert_eq!(
            users.authenticate(Some(key.expose()), 100).unwrap().name,
            "alice"
        );
        assert_eq!(
            users.authenticate(None, 100).err(),
            Some(AuthError::Missing)
        );
        assert_eq!(
            users.authenticate(Some("gb-nope"), 100).err(),
            Some(AuthError::Unknown)
        );
        rec.expires_at = Some(150);
        users.replace(std::slice::from_ref(&rec));
        assert!(users.authenticate(Some(key.expose()), 149).is_ok());
        assert_eq!(
            users.authenticate(Some(key.expose()), 150).err(),
            Some(AuthError::Expired)
        );
        rec.enabled = false;
        users.replace(&[rec]);
        assert_eq!(
            users.authenticate(Some(key.expose()), 100).err(),
            Some(AuthError::Disabled)
        );
    }
}
