//! Durable state behind one interface: upstream keys, their per-model state, user keys
//! and a few named settings (`meta`). Back-ends: redb (default); Redis joins as a second
//! variant of [`Store`], so adding an operation fails to compile until both have it.
//!
//! Every write is a batch of [`Write`]s applied in one transaction. This module knows
//! nothing of HTTP or of the pool's in-memory structures; it stores plain records.

pub mod affinity;
mod files;
mod logs;
mod packed;
mod redb;
mod redb_logs;
mod redb_runs;
mod redb_stats;
mod redis;
mod redis_ledger;
mod redis_logs;
#[cfg(test)]
mod tests;

use crate::record::LogRecord;
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub use self::logs::{Bucket, BucketKey, HOUR_MS, LATENCY_BOUNDS_MS, LogQuery, new_request_id};
pub use self::packed::{PackedLogs, pack_all};
pub use self::redb::RedbStore;
pub use self::redis::{Change, RedisStore};
pub use self::redis_ledger::Taken;

/// The format this binary writes to Redis; a store of another one, older or newer, is
/// refused.
pub const FORMAT_VERSION: u32 = 3;
/// The redb file's format: the request log in runs (`log_runs`, see `redb_logs`). A file
/// of another version, older or newer, is refused on open and left as it is.
pub const REDB_FORMAT_VERSION: u32 = 6;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O: {0}")]
    Backend(String),
    #[error("stored record {0} is corrupt: {1}")]
    Corrupt(String, String),
    #[error(
        "the store was written by a newer gemini-balance (format {found}, this binary knows {known})"
    )]
    TooNew { found: u32, known: u32 },
    #[error(
        "{path} is in store format {found}, written by a development build before gemini-balance 0.1.0; \
         this binary reads format {known} only and does not convert older stores: \
         move the file aside (for Redis: set another `store_prefix`) to start with an empty store"
    )]
    TooOld {
        path: String,
        found: u32,
        known: u32,
    },
}

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

/// Limits the admin sets for a (key, model), in the config and the admin API: requests
/// per minute, requests per (Pacific) day, input tokens per minute.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SetLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpd: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u32>,
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

/// One change; a batch of them is applied atomically.
#[derive(Debug, Clone)]
pub enum Write {
    PutKey(KeyRecord),
    /// Removes the key and all of its per-model state.
    DeleteKey(String),
    PutModelState {
        key_id: String,
        model: String,
        state: ModelState,
    },
    DeleteModelState {
        key_id: String,
        model: String,
    },
    PutUser(UserRecord),
    DeleteUser(String),
    PutMeta(String, Vec<u8>),
    /// Removes a named setting (an ACME HTTP-01 answer once its order is over).
    DeleteMeta(String),
    /// The quota ledger's counts of a (key, model), saved now and then so they survive
    /// a restart (redb; Redis keeps shared counts of its own, see `redis_ledger`).
    PutUsage {
        key_id: String,
        model: String,
        usage: UsageRecord,
    },
    DeleteUsage {
        key_id: String,
        model: String,
    },
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

/// Everything the daemon loads at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub keys: Vec<KeyRecord>,
    pub model_states: Vec<(String, String, ModelState)>,
    pub users: Vec<UserRecord>,
    /// The ledger's counts by (key id, model); empty on Redis.
    pub usage: Vec<(String, String, UsageRecord)>,
}

#[derive(Clone)]
pub enum Store {
    Redb(RedbStore),
    Redis(Box<RedisStore>),
}

/// Calls the same method on whichever back-end this is.
macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Redb($s) => $e,
            Store::Redis($s) => $e,
        }
    };
}

/// The URL schemes of a Redis store; anything else names a redb data directory.
pub const REDIS_SCHEMES: [&str; 3] = ["redis://", "rediss://", "redis+unix://"];

/// Whether a store name is a Redis URL.
pub fn is_redis_url(spec: &str) -> bool {
    REDIS_SCHEMES.iter().any(|scheme| spec.starts_with(scheme))
}

impl Store {
    pub async fn open_redb(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("gemini-balance.redb");
        Ok(Self::Redb(RedbStore::open(path).await?))
    }

    /// Opens the store a config names: a Redis URL (`redis://`, `rediss://`, `redis+unix://`), else the redb file
    /// in `data_dir`.
    pub async fn open(
        url: Option<&str>,
        data_dir: &Path,
        prefix: &str,
    ) -> Result<Self, StoreError> {
        match url {
            Some(url) => Ok(Self::Redis(Box::new(
                RedisStore::connect(url, prefix).await?,
            ))),
            None => Self::open_redb(data_dir).await,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Redb(_) => "redb",
            Self::Redis(_) => "redis",
        }
    }

    /// False while a shared store is unreachable (requests go on from memory).
    pub fn healthy(&self) -> bool {
        match self {
            Self::Redb(_) => true,
            Self::Redis(s) => s.healthy(),
        }
    }

    /// Other instances' changes, for a shared store; `None` for a private one.
    pub async fn changes(
        &self,
        every: std::time::Duration,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<Change>>, StoreError> {
        match self {
            Self::Redb(_) => Ok(None),
            Self::Redis(s) => s.changes(every).await.map(Some),
        }
    }

    pub async fn load(&self) -> Result<Snapshot, StoreError> {
        each!(self, s => s.load().await)
    }

    pub async fn load_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        match self {
            Self::Redb(s) => Ok(s.load().await?.users),
            Self::Redis(s) => s.load_users().await,
        }
    }

    /// One key's record and per-model state (`None` when it was deleted).
    pub async fn load_key(
        &self,
        id: &str,
    ) -> Result<(Option<KeyRecord>, Vec<(String, ModelState)>), StoreError> {
        match self {
            Self::Redb(s) => {
                let snap = s.load().await?;
                let rec = snap.keys.into_iter().find(|k| k.id == id);
                let states = snap
                    .model_states
                    .into_iter()
                    .filter(|(k, _, _)| k == id)
                    .map(|(_, m, st)| (m, st))
                    .collect();
                Ok((rec, states))
            }
            Self::Redis(s) => s.load_key(id).await,
        }
    }

    pub async fn apply(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        each!(self, s => s.apply(writes).await)
    }

    pub async fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        each!(self, s => s.get_meta(name).await)
    }

    /// Every named setting but the format version (for `migrate`).
    pub async fn all_meta(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        each!(self, s => s.all_meta().await)
    }

    /// Copies log records and buckets in as they are (for `migrate`).
    pub async fn import(
        &self,
        records: impl Into<Arc<[PackedLogs]>>,
        buckets: Vec<(BucketKey, Bucket)>,
    ) -> Result<(), StoreError> {
        let records = records.into();
        each!(self, s => s.import(records, buckets).await)
    }

    /// Appends request log records and adds them to the statistics buckets, atomically.
    /// Shared, so a failed write can be retried without copying the batch.
    pub async fn append_logs(
        &self,
        records: impl Into<Arc<[PackedLogs]>>,
    ) -> Result<(), StoreError> {
        self.append_logs_when(records.into(), LogCommit::Durable)
            .await
    }

    /// [`Store::append_logs`], durable at once or only with the next durable commit
    /// (redb skips the `fdatasync`; a crash before that loses the batch). Redis writes
    /// are the same either way.
    pub async fn append_logs_when(
        &self,
        records: Arc<[PackedLogs]>,
        commit: LogCommit,
    ) -> Result<(), StoreError> {
        match self {
            Store::Redb(s) => s.append_logs(records, commit == LogCommit::Durable).await,
            Store::Redis(s) => s.append_logs(records).await,
        }
    }

    /// Makes log batches written with [`LogCommit::Deferred`] durable.
    pub async fn sync_logs(&self) -> Result<(), StoreError> {
        match self {
            Store::Redb(s) => s.sync_logs().await,
            Store::Redis(_) => Ok(()),
        }
    }

    /// Reads the log newest first; the second value is the cursor for the next page.
    pub async fn query_logs(
        &self,
        q: LogQuery,
    ) -> Result<(Vec<LogRecord>, Option<String>), StoreError> {
        each!(self, s => s.query_logs(q).await)
    }

    pub async fn get_log(&self, request_id: &str) -> Result<Option<LogRecord>, StoreError> {
        each!(self, s => s.get_log(request_id).await)
    }

    pub async fn stats_range(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<(BucketKey, Bucket)>, StoreError> {
        each!(self, s => s.stats_range(from, to).await)
    }

    pub async fn prune(
        &self,
        logs_before: i64,
        stats_before: i64,
    ) -> Result<(u64, u64), StoreError> {
        each!(self, s => s.prune(logs_before, stats_before).await)
    }
}

/// When a log batch must be on disk (see [`Store::append_logs_when`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogCommit {
    Durable,
    Deferred,
}

/// Separates key id and model in composite keys; neither can contain it.
pub(crate) const SEP: char = '\u{1f}';
