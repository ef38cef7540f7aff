//! User keys: the credentials clients present to this gateway (SPEC 3.6).
//!
//! A user key is random, shown once, and stored only as a SHA-256 hash plus a short
//! display prefix. Lookup is one hash and one map probe on an `ArcSwap` snapshot that is
//! replaced whole when users change. This module does not do HTTP; the proxy maps its
//! answers onto the route's error shape.

use crate::secret::Secret;
use crate::store::UserRecord;
use arc_swap::ArcSwap;
use rand::Rng;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// Hex SHA-256 of a user key. Keys are 190+ random bits, so an unsalted fast hash is enough
/// and keeps the per-request check cheap.
pub fn hash_key(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

/// [`hash_key`] written into `out` (no allocation on the per-request check).
fn hash_key_in<'a>(key: &str, out: &'a mut [u8; 64]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(Sha256::digest(key.as_bytes())) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
    std::str::from_utf8(out).expect("hex digits")
}

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
    by_hash: ArcSwap<HashMap<String, Arc<UserRecord>>>,
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
            .map(|r| (r.key_hash.clone(), Arc::new(r.clone())))
            .collect();
        self.by_hash.store(Arc::new(map));
    }

    pub fn all(&self) -> Vec<Arc<UserRecord>> {
        self.by_hash.load().values().cloned().collect()
    }

    pub fn by_name(&self, name: &str) -> Option<Arc<UserRecord>> {
        self.by_hash
            .load()
            .values()
            .find(|u| u.name == name)
            .cloned()
    }

    /// Checks a presented key at `now` (Unix seconds).
    pub fn authenticate(&self, key: Option<&str>, now: i64) -> Result<Arc<UserRecord>, AuthError> {
        let key = key.filter(|k| !k.is_empty()).ok_or(AuthError::Missing)?;
        let user = self
            .by_hash
            .load()
            .get(hash_key_in(key, &mut [0; 64]))
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
        assert_eq!(hash_key_in("abc", &mut [0; 64]), hash_key("abc"));
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
