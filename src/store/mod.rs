//! Durable state behind one interface: upstream keys, their per-model state, user keys
//! and a few named settings (`meta`). Back-ends: redb (default); Redis joins as a second
//! variant of [`Store`], so adding an operation fails to compile until both have it.
//!
//! Every write is a batch of [`Write`]s applied in one transaction. This module knows
//! nothing of HTTP or of the pool's in-memory structures; it stores plain records
//! (`records`).

pub mod affinity;
mod files;
mod format;
mod logs;
mod packed;
mod records;
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
use std::path::Path;
use std::sync::Arc;

pub use self::logs::{Bucket, BucketKey, HOUR_MS, LATENCY_BOUNDS_MS, LogQuery, new_request_id};
pub use self::packed::{PackedLogs, pack_all};
pub use self::records::{Invalid, KeyRecord, ModelState, QuotaLimits, UsageRecord, UserRecord};
pub use self::redb::RedbStore;
pub use self::redis::{Change, RedisStore};
pub use self::redis_ledger::Taken;

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
    #[cfg(test)]
    pub async fn append_logs(
        &self,
        records: impl Into<Arc<[PackedLogs]>>,
    ) -> Result<(), StoreError> {
        self.append_logs_when(records.into(), LogCommit::Durable)
            .await
    }

    /// Appends request log records and adds them to the statistics buckets, atomically,
    /// durable at once or only with the next durable commit
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
