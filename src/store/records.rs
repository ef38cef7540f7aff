//! The records the store keeps: an upstream key ([`KeyRecord`]) with its per-model state
//! and quota ledger counts, the limits set on it, and a user key ([`UserRecord`]). Plain
//! serde data; how each back-end lays them out is its own business.

use crate::config::SetLimits;
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An upstream Gemini key and its key-level state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    #[serde(with = "crate::secret::stored")]
    pub key: Secret,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub disabled: bool,
    /// Set when Google said the key is invalid, suspended or denied; the reason is shown.
    #[serde(default)]
    pub invalid: Option<Invalid>,
    pub created_at: i64,
    /// The Cloud project the key belongs to (set by the admin or learned from Google's
    /// errors): keys of one project share its quotas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Limits the admin set, by model name or glob (`*`, `gemini-2.5-*`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, SetLimits>,
    /// The key group (`None`: the group `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The key's own egress proxy, password included.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::config::stored_proxy"
    )]
    pub proxy: Option<crate::config::ProxyUrl>,
}

impl From<SetLimits> for QuotaLimits {
    fn from(s: SetLimits) -> Self {
        QuotaLimits {
            per_minute: s.rpm,
            per_day: s.rpd,
            tokens_per_minute: s.tpm,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Invalid {
    pub reason: String,
    pub at: i64,
}

/// Per (key, model) state: cool-down and failure accounting.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ModelState {
    /// Unix milliseconds until which this key must not serve this model; 0 = not cooling.
    #[serde(default)]
    pub cooling_until_ms: i64,
    #[serde(default)]
    pub cooling_reason: String,
    /// Exponential back-off level: the next back-off is `base * 2^level`.
    #[serde(default)]
    pub backoff_level: u32,
    #[serde(default)]
    pub failure_streak: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Unix milliseconds until which the key's tier is taken not to include this model
    /// (Google revealed a limit of 0); looked at again once it has passed. 0 = available.
    #[serde(default)]
    pub unavailable_until_ms: i64,
    /// Request limits Google revealed for this (key, model), for the quota ledger.
    #[serde(default, skip_serializing_if = "QuotaLimits::is_empty")]
    pub limits: QuotaLimits,
}

/// Limits of one (key, model): learned from Google's 429s (`quotaValue`) and kept with
/// the model's state, or set by the admin ([`SetLimits`]).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuotaLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_day: Option<u32>,
    /// Input (prompt) tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u32>,
}

impl QuotaLimits {
    pub fn is_empty(&self) -> bool {
        self.per_minute.is_none() && self.per_day.is_none() && self.tokens_per_minute.is_none()
    }

    /// Takes the limits `other` knows, keeping those it does not.
    pub fn learn(&mut self, other: &QuotaLimits) {
        self.per_minute = other.per_minute.or(self.per_minute);
        self.per_day = other.per_day.or(self.per_day);
        self.tokens_per_minute = other.tokens_per_minute.or(self.tokens_per_minute);
    }

    /// The tighter of two sets of limits, each limit on its own.
    pub fn tightest(&self, other: &QuotaLimits) -> QuotaLimits {
        fn min<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        QuotaLimits {
            per_minute: min(self.per_minute, other.per_minute),
            per_day: min(self.per_day, other.per_day),
            tokens_per_minute: min(self.tokens_per_minute, other.tokens_per_minute),
        }
    }
}

impl ModelState {
    pub fn is_default(&self) -> bool {
        self == &Self::default()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserRecord {
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the secret; the secret itself is never stored.
    pub key_hash: String,
    /// The first characters of the secret, for display (`gb-AbCd…`).
    pub key_prefix: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub created_at: i64,
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Model allow-list as glob patterns; empty = every model.
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub rpm: Option<u32>,
    #[serde(default)]
    pub daily_tokens: Option<u64>,
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    /// The key groups that may serve the user; empty: every group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

fn yes() -> bool {
    true
}

/// The quota ledger's counts of one (key, model) at some moment.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UsageRecord {
    /// Send times (Unix ms) of the last 60 s, oldest first.
    #[serde(default)]
    pub minute: Vec<i64>,
    /// (Unix ms an answer ended, its prompt tokens) of the last 60 s, oldest first.
    #[serde(default)]
    pub tokens: Vec<(i64, u64)>,
    /// Requests of the Pacific day that ends at `day_end_ms`.
    #[serde(default)]
    pub today: u64,
    #[serde(default)]
    pub day_end_ms: i64,
}
