//! The redb file as a whole: what survives a reopen, and which files are refused on open
//! (another format, older or newer, or no format at all), left as they were.

use crate::secret::Secret;
use crate::store::format::REDB_FORMAT_VERSION;
use crate::store::redb::{META, RedbStore, VERSION_KEY};
use crate::store::{KeyRecord, ModelState, StoreError, Write};
use redb::{Database, ReadableDatabase, TableDefinition};

fn key(id: &str) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        key: Secret::new(format!("AIza-{id}")),
        note: None,
        disabled: false,
        invalid: None,
        created_at: 1,
        project: None,
        limits: Default::default(),
        group: None,
        proxy: None,
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

/// A file as another build left it: a `meta` table with `version` (none: no `meta`),
/// and a table of request log rows.
fn file_of_format(path: &std::path::Path, version: Option<u32>) -> Vec<u8> {
    const OLD_LOGS: TableDefinition<&str, &[u8]> = TableDefinition::new("logs");
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        if let Some(v) = version {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(VERSION_KEY, v.to_le_bytes().as_slice())
                .unwrap();
        }
        let mut logs = txn.open_table(OLD_LOGS).unwrap();
        logs.insert("0000019000000000r1", b"{}".as_slice()).unwrap();
    }
    txn.commit().unwrap();
    drop(db);
    std::fs::read(path).unwrap()
}

#[tokio::test]
async fn a_file_of_an_older_format_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    for old in 1..REDB_FORMAT_VERSION {
        let path = dir.path().join(format!("v{old}.redb"));
        let before = file_of_format(&path, Some(old));
        let err = RedbStore::open(path.clone()).await.err().expect("refused");
        assert!(
            matches!(err, StoreError::TooOld { found, .. } if found == old),
            "{err}"
        );
        let msg = err.to_string();
        for part in [
            &path.display().to_string(),
            &format!("format {old}"),
            &format!("reads format {REDB_FORMAT_VERSION} only"),
            "move the file aside",
        ] {
            assert!(msg.contains(part), "{part:?} in {msg}");
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "the file is untouched"
        );
    }
}

#[tokio::test]
async fn newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let before = file_of_format(&path, Some(REDB_FORMAT_VERSION + 1));
    let err = RedbStore::open(path.clone()).await.err().expect("refused");
    assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
    assert!(err.to_string().contains("newer"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file is untouched"
    );
}

#[tokio::test]
async fn a_file_with_tables_but_no_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let before = file_of_format(&path, None);
    let err = RedbStore::open(path.clone()).await.err().expect("refused");
    assert!(err.to_string().contains("no format version"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file is untouched"
    );
}

/// A new file is marked with this build's format, and opens again as it.
#[tokio::test]
async fn a_new_file_is_marked_with_the_current_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    drop(RedbStore::open(path.clone()).await.unwrap());
    let db = Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    let version = meta.get(VERSION_KEY).unwrap().expect("a version");
    assert_eq!(version.value(), REDB_FORMAT_VERSION.to_le_bytes());
    drop((version, meta, txn, db));
    RedbStore::open(path).await.expect("opens again");
}

#[tokio::test]
async fn garbage_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    std::fs::write(&path, b"this is not a redb file at all, just text").unwrap();
    let err = RedbStore::open(path).await.err().expect("refused");
    assert!(err.to_string().contains("opening"), "{err}");
}
