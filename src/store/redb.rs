//! The redb back-end: one file in the data dir. Every call runs in `spawn_blocking`, so no
//! async thread waits on disk. Keys, model states and users are JSON values in their own
//! tables; the request log is in `redb_logs`. The file's format version is in `meta`: a
//! file of any other version is refused on open, untouched, rather than misread.

use super::format::{self, REDB_FORMAT_VERSION};
use super::{
    Bucket, BucketKey, KeyRecord, ModelState, SEP, Snapshot, StoreError, UserRecord, Write,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::sync::Arc;

// The file's tables. The log's are laid out in `redb_logs`, `redb_runs` and `redb_stats`.
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
const MODEL_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("model_state");
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// The quota ledger's counts by "key id SEP model". Files made before it have no such
/// table: it is made by the first write, and read as empty until then.
const LEDGER: TableDefinition<&str, &[u8]> = TableDefinition::new("ledger");
/// Runs of log records, by the newest arrival time in the run.
pub(super) const LOG_RUNS: TableDefinition<u64, &[u8]> = TableDefinition::new("log_runs");
/// Each run's oldest arrival time, record count and flags, by the run's key.
pub(super) const LOG_RUN_META: TableDefinition<u64, &[u8]> = TableDefinition::new("log_run_meta");
/// Request id → log key, only for ids that do not start with their request's time
/// (imported records); the others are found without it.
pub(super) const LOG_IDS: TableDefinition<&str, &str> = TableDefinition::new("log_ids");
/// Statistics buckets, by hour, user, key and model.
pub(super) const STATS: TableDefinition<&str, &[u8]> = TableDefinition::new("stats");

pub(super) const VERSION_KEY: &str = "format_version";
const CACHE_BYTES: usize = 4 * 1024 * 1024;

/// What [`RedbStore::found_format`] read from the file.
enum Found {
    /// No tables yet: a file just created.
    New,
    Version(u32),
    /// Tables without a format version.
    Unmarked,
}

#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    /// Statistics of log batches committed without waiting for the disk, written with
    /// the next commit that does (see `redb_stats`).
    pub(super) waiting: Arc<std::sync::Mutex<Waiting>>,
}

/// Bucket updates of committed log batches not yet in the `stats` table.
pub(super) type Waiting = std::collections::BTreeMap<BucketKey, Bucket>;

pub(super) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

pub(super) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(what.to_owned(), e.to_string()))
}

pub(super) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("store records always serialise")
}

/// The file's format, read without writing to it.
fn found_format(db: &impl ReadableDatabase) -> Result<Found, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            let empty = txn.list_tables().map_err(backend)?.next().is_none();
            return Ok(if empty { Found::New } else { Found::Unmarked });
        }
        Err(e) => return Err(backend(e)),
    };
    let Some(v) = meta.get(VERSION_KEY).map_err(backend)? else {
        return Ok(Found::Unmarked);
    };
    let bytes: [u8; 4] = v
        .value()
        .try_into()
        .map_err(|_| StoreError::Corrupt(VERSION_KEY.into(), "not 4 bytes".into()))?;
    Ok(Found::Version(u32::from_le_bytes(bytes)))
}

/// Whether the file at `path` is new (to be given its tables); a file of another format
/// than [`REDB_FORMAT_VERSION`] is an error.
fn accept(found: Found, path: &std::path::Path) -> Result<bool, StoreError> {
    match found {
        Found::New => Ok(true),
        Found::Version(v) => {
            format::check(v, REDB_FORMAT_VERSION, || path.display().to_string()).map(|()| false)
        }
        Found::Unmarked => Err(StoreError::Corrupt(
            path.display().to_string(),
            "it holds tables but no format version (not a gemini-balance store)".into(),
        )),
    }
}

impl RedbStore {
    pub(super) fn db(&self) -> Arc<Database> {
        self.db.clone()
    }

    pub async fn open(path: PathBuf) -> Result<Self, StoreError> {
        tokio::task::spawn_blocking(move || Self::open_blocking(path))
            .await
            .map_err(backend)?
    }

    fn open_blocking(path: PathBuf) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            super::files::private_dir(dir)
                .map_err(|e| StoreError::Backend(format!("creating {}: {e}", dir.display())))?;
        }
        // The format is read first without writing, so a refused file stays as it was. A
        // file this cannot read (one to recover after a crash) is judged once open.
        if path.exists() {
            if let Ok(db) = redb::ReadOnlyDatabase::open(&path) {
                accept(found_format(&db)?, &path)?;
            }
        }
        // redb's default cache is 1 GiB; a small VPS has half that in all. 4 MiB holds the
        // hot pages of the log and bucket trees; queries read the rest from the page cache.
        let opening = |e: &dyn std::fmt::Display| {
            StoreError::Backend(format!("opening {}: {e}", path.display()))
        };
        let file = super::files::private_file(&path).map_err(|e| opening(&e))?;
        let backend = redb::backends::FileBackend::new(file).map_err(|e| opening(&e))?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(backend)
            .map_err(|e| opening(&e))?;
        let store = Self {
            db: Arc::new(db),
            waiting: Arc::default(),
        };
        if accept(found_format(&*store.db)?, &path)? {
            store.create_tables()?;
        }
        Ok(store)
    }

    /// Gives a new file its tables and marks it with [`REDB_FORMAT_VERSION`].
    fn create_tables(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        {
            let mut meta = txn.open_table(META).map_err(backend)?;
            meta.insert(VERSION_KEY, REDB_FORMAT_VERSION.to_le_bytes().as_slice())
                .map_err(backend)?;
            txn.open_table(KEYS).map_err(backend)?;
            txn.open_table(MODEL_STATE).map_err(backend)?;
            txn.open_table(USERS).map_err(backend)?;
            txn.open_table(LEDGER).map_err(backend)?;
            txn.open_table(LOG_RUNS).map_err(backend)?;
            txn.open_table(LOG_RUN_META).map_err(backend)?;
            txn.open_table(LOG_IDS).map_err(backend)?;
            txn.open_table(STATS).map_err(backend)?;
        }
        txn.commit().map_err(backend)
    }

    pub async fn load(&self) -> Result<Snapshot, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(backend)?;
            let mut snap = Snapshot::default();
            for row in txn
                .open_table(KEYS)
                .map_err(backend)?
                .iter()
                .map_err(backend)?
            {
                let (k, v) = row.map_err(backend)?;
                snap.keys.push(decode::<KeyRecord>(k.value(), v.value())?);
            }
            let states = txn.open_table(MODEL_STATE).map_err(backend)?;
            for row in states.iter().map_err(backend)? {
                let (k, v) = row.map_err(backend)?;
                let Some((key_id, model)) = k.value().split_once(SEP) else {
                    return Err(StoreError::Corrupt(
                        k.value().into(),
                        "bad state key".into(),
                    ));
                };
                let state: ModelState = decode(k.value(), v.value())?;
                snap.model_states
                    .push((key_id.to_owned(), model.to_owned(), state));
            }
            for row in txn
                .open_table(USERS)
                .map_err(backend)?
                .iter()
                .map_err(backend)?
            {
                let (k, v) = row.map_err(backend)?;
                snap.users.push(decode::<UserRecord>(k.value(), v.value())?);
            }
            match txn.open_table(LEDGER) {
                Ok(ledger) => {
                    for row in ledger.iter().map_err(backend)? {
                        let (k, v) = row.map_err(backend)?;
                        if let Some((key_id, model)) = k.value().split_once(SEP) {
                            let usage = decode(k.value(), v.value())?;
                            snap.usage
                                .push((key_id.to_owned(), model.to_owned(), usage));
                        }
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(backend(e)),
            }
            Ok(snap)
        })
        .await
        .map_err(backend)?
    }

    pub async fn apply(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(backend)?;
            {
                let mut tables = Tables::open(&txn)?;
                for w in writes {
                    tables.write(w)?;
                }
            }
            txn.commit().map_err(backend)
        })
        .await
        .map_err(backend)?
    }

    pub async fn all_meta(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(backend)?;
            let meta = txn.open_table(META).map_err(backend)?;
            let mut out = Vec::new();
            for row in meta.iter().map_err(backend)? {
                let (k, v) = row.map_err(backend)?;
                if k.value() != VERSION_KEY {
                    out.push((k.value().to_owned(), v.value().to_vec()));
                }
            }
            Ok(out)
        })
        .await
        .map_err(backend)?
    }

    pub async fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let db = self.db.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(backend)?;
            let meta = txn.open_table(META).map_err(backend)?;
            Ok(meta
                .get(name.as_str())
                .map_err(backend)?
                .map(|v| v.value().to_vec()))
        })
        .await
        .map_err(backend)?
    }
}

/// A table of JSON values by name.
type Json<'t> = redb::Table<'t, &'static str, &'static [u8]>;

/// The tables a batch of [`Write`]s changes, open in one write transaction.
struct Tables<'t> {
    keys: Json<'t>,
    states: Json<'t>,
    users: Json<'t>,
    meta: Json<'t>,
    ledger: Json<'t>,
}

/// The key of a (key, model) row: "key id SEP model".
fn pair(key_id: &str, model: &str) -> String {
    format!("{key_id}{SEP}{model}")
}

impl<'t> Tables<'t> {
    fn open(txn: &'t redb::WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            keys: txn.open_table(KEYS).map_err(backend)?,
            states: txn.open_table(MODEL_STATE).map_err(backend)?,
            users: txn.open_table(USERS).map_err(backend)?,
            meta: txn.open_table(META).map_err(backend)?,
            ledger: txn.open_table(LEDGER).map_err(backend)?,
        })
    }

    fn write(&mut self, w: Write) -> Result<(), StoreError> {
        match w {
            Write::PutKey(rec) => put(&mut self.keys, &rec.id, &encode(&rec)),
            Write::DeleteKey(id) => self.delete_key(&id),
            Write::PutModelState {
                key_id,
                model,
                state,
            } => put(&mut self.states, &pair(&key_id, &model), &encode(&state)),
            Write::DeleteModelState { key_id, model } => {
                delete(&mut self.states, &pair(&key_id, &model))
            }
            Write::PutUser(rec) => put(&mut self.users, &rec.id, &encode(&rec)),
            Write::DeleteUser(id) => delete(&mut self.users, &id),
            Write::PutMeta(name, value) => put(&mut self.meta, &name, &value),
            Write::DeleteMeta(name) => delete(&mut self.meta, &name),
            Write::PutUsage {
                key_id,
                model,
                usage,
            } => put(&mut self.ledger, &pair(&key_id, &model), &encode(&usage)),
            Write::DeleteUsage { key_id, model } => {
                delete(&mut self.ledger, &pair(&key_id, &model))
            }
        }
    }

    /// Removes the key and all of its per-model state and ledger counts.
    fn delete_key(&mut self, id: &str) -> Result<(), StoreError> {
        delete(&mut self.keys, id)?;
        let prefix = format!("{id}{SEP}");
        let theirs = |k: &str, _: &[u8]| !k.starts_with(&prefix);
        self.states.retain(theirs).map_err(backend)?;
        self.ledger.retain(theirs).map_err(backend)
    }
}

fn put(table: &mut Json<'_>, key: &str, value: &[u8]) -> Result<(), StoreError> {
    table.insert(key, value).map(drop).map_err(backend)
}

fn delete(table: &mut Json<'_>, key: &str) -> Result<(), StoreError> {
    table.remove(key).map(drop).map_err(backend)
}
