//! The redb back-end: one file in the data dir. Every call runs in `spawn_blocking`, so no
//! async thread waits on disk. Records are JSON values in four tables; a format version in
//! `meta` lets a newer binary migrate an older file on open.

use super::{
    KeyRecord, ModelState, REDB_FORMAT_VERSION, SEP, Snapshot, StoreError, UserRecord, Write,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::sync::Arc;

pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
const MODEL_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("model_state");
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");

const VERSION_KEY: &str = "format_version";
const CACHE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    /// Statistics of log batches committed without waiting for the disk, written with
    /// the next commit that does (see `redb_logs`).
    pub(super) waiting: Arc<std::sync::Mutex<super::redb_logs::Waiting>>,
}

pub(super) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

pub(super) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(what.to_owned(), e.to_string()))
}

pub(super) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("store records always serialise")
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
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Backend(format!("creating {}: {e}", dir.display())))?;
        }
        // redb's default cache is 1 GiB; a small VPS has half that in all. 4 MiB holds the
        // hot pages of the log and bucket trees; queries read the rest from the page cache.
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| StoreError::Backend(format!("opening {}: {e}", path.display())))?;
        let store = Self {
            db: Arc::new(db),
            waiting: Arc::default(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Creates the tables and brings the file to [`REDB_FORMAT_VERSION`].
    fn migrate(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        {
            let mut meta = txn.open_table(META).map_err(backend)?;
            let found = match meta.get(VERSION_KEY).map_err(backend)? {
                Some(v) => {
                    let bytes: [u8; 4] = v.value().try_into().map_err(|_| {
                        StoreError::Corrupt(VERSION_KEY.into(), "not 4 bytes".into())
                    })?;
                    Some(u32::from_le_bytes(bytes))
                }
                None => None,
            };
            match found {
                Some(v) if v > REDB_FORMAT_VERSION => {
                    return Err(StoreError::TooNew {
                        found: v,
                        known: REDB_FORMAT_VERSION,
                    });
                }
                // Version 1 → 2 adds the `log_batches` table, 2 → 3 the `log_runs` and
                // `log_run_meta` tables (created below); older log rows stay as they are.
                // Later versions add their steps here.
                Some(_) | None => {
                    meta.insert(VERSION_KEY, REDB_FORMAT_VERSION.to_le_bytes().as_slice())
                        .map_err(backend)?;
                }
            }
            txn.open_table(KEYS).map_err(backend)?;
            txn.open_table(MODEL_STATE).map_err(backend)?;
            txn.open_table(USERS).map_err(backend)?;
            txn.open_table(super::redb_logs::LOGS).map_err(backend)?;
            txn.open_table(super::redb_logs::LOG_IDS).map_err(backend)?;
            txn.open_table(super::redb_logs::STATS).map_err(backend)?;
            txn.open_table(super::redb_logs::LOG_BATCHES)
                .map_err(backend)?;
            txn.open_table(super::redb_runs::LOG_RUNS)
                .map_err(backend)?;
            txn.open_table(super::redb_runs::LOG_RUN_META)
                .map_err(backend)?;
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
                let mut keys = txn.open_table(KEYS).map_err(backend)?;
                let mut states = txn.open_table(MODEL_STATE).map_err(backend)?;
                let mut users = txn.open_table(USERS).map_err(backend)?;
                let mut meta = txn.open_table(META).map_err(backend)?;
                for w in writes {
                    match w {
                        Write::PutKey(rec) => {
                            keys.insert(rec.id.as_str(), encode(&rec).as_slice())
                                .map_err(backend)?;
                        }
                        Write::DeleteKey(id) => {
                            keys.remove(id.as_str()).map_err(backend)?;
                            let prefix = format!("{id}{SEP}");
                            states
                                .retain(|k, _| !k.starts_with(&prefix))
                                .map_err(backend)?;
                        }
                        Write::PutModelState {
                            key_id,
                            model,
                            state,
                        } => {
                            let k = format!("{key_id}{SEP}{model}");
                            states
                                .insert(k.as_str(), encode(&state).as_slice())
                                .map_err(backend)?;
                        }
                        Write::DeleteModelState { key_id, model } => {
                            let k = format!("{key_id}{SEP}{model}");
                            states.remove(k.as_str()).map_err(backend)?;
                        }
                        Write::PutUser(rec) => {
                            users
                                .insert(rec.id.as_str(), encode(&rec).as_slice())
                                .map_err(backend)?;
                        }
                        Write::DeleteUser(id) => {
                            users.remove(id.as_str()).map_err(backend)?;
                        }
                        Write::PutMeta(name, value) => {
                            meta.insert(name.as_str(), value.as_slice())
                                .map_err(backend)?;
                        }
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn key(id: &str) -> KeyRecord {
        KeyRecord {
            id: id.into(),
            key: Secret::new(format!("AIza-{id}")),
            note: None,
            disabled: false,
            invalid: None,
            created_at: 1,
        }
    }

    #[tokio::test]
    async fn writes_survive_reopen_and_delete_cascades() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = RedbStore::open(path.clone()).await.unwrap();
        let state = ModelState {
            cooling_until_ms: 42,
            ..Default::default()
        };
        store
            .apply(vec![
                Write::PutKey(key("a")),
                Write::PutKey(key("b")),
                Write::PutModelState {
                    key_id: "a".into(),
                    model: "m1".into(),
                    state: state.clone(),
                },
                Write::PutModelState {
                    key_id: "b".into(),
                    model: "m1".into(),
                    state: state.clone(),
                },
            ])
            .await
            .unwrap();
        store
            .apply(vec![Write::DeleteKey("a".into())])
            .await
            .unwrap();
        drop(store);
        let store = RedbStore::open(path).await.unwrap();
        let snap = store.load().await.unwrap();
        assert_eq!(snap.keys, vec![key("b")]);
        assert_eq!(snap.model_states, vec![("b".into(), "m1".into(), state)]);
    }

    #[tokio::test]
    async fn newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = RedbStore::open(path.clone()).await.unwrap();
        store
            .apply(vec![Write::PutMeta(
                VERSION_KEY.into(),
                (REDB_FORMAT_VERSION + 1).to_le_bytes().to_vec(),
            )])
            .await
            .unwrap();
        drop(store);
        let err = RedbStore::open(path).await.err().expect("refused");
        assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
    }

    #[tokio::test]
    async fn garbage_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        std::fs::write(&path, b"this is not a redb file at all, just text").unwrap();
        let err = RedbStore::open(path).await.err().expect("refused");
        assert!(err.to_string().contains("opening"), "{err}");
    }
}
