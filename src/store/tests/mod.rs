//! The store's behaviour, written once (`async fn behaviour(store: &Store)`) and run on
//! both back-ends: redb in a temp dir, and Redis on a private `redis-server` (a unix
//! socket, no persistence, killed on drop) under a unique prefix. Without
//! `redis-server` installed the Redis half fails with a clear message.

use super::format::FORMAT_VERSION;
use super::*;

mod fixtures;
mod format;
mod ledger;
mod logs;
mod redb_logs;
use fixtures::*;
use logs::*;

// ---------------------------------------------------------------- back-ends

/// The same private `redis-server` the black-box tests use (a unix socket in a temp dir).
#[allow(dead_code)]
#[path = "../../../tests/common/redis.rs"]
mod redis_server;
use redis_server::RedisServer as Redis;

fn unique_prefix() -> String {
    format!("gbt{:08x}", rand::random::<u32>())
}

async fn redis_store(redis: &Redis, prefix: &str) -> Store {
    Store::open(Some(&redis.url()), Path::new("/nonexistent"), prefix)
        .await
        .expect("connect to the test redis-server")
}

/// Runs a behaviour on a fresh redb store and on a fresh Redis store.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod redb_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = crate::store::Store::open_redb(dir.path()).await.unwrap();
                    assert_eq!(store.kind(), "redb");
                    super::$name(&store).await;
                }
            )*
        }
        mod redis_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    let redis = super::Redis::start();
                    let store = super::redis_store(&redis, &super::unique_prefix()).await;
                    assert_eq!(store.kind(), "redis");
                    super::$name(&store).await;
                }
            )*
        }
    };
}

on_both_backends!(
    keys_and_their_model_state,
    users_put_and_delete,
    meta_settings,
    log_is_newest_first_filtered_and_paged,
    get_log_finds_a_record_by_id,
    get_log_finds_time_prefixed_and_other_ids_until_pruned,
    stats_buckets_are_the_sum_of_the_log,
    prune_removes_only_old_logs_and_buckets,
    import_copies_records_and_buckets_as_they_are,
    affinity_rows,
);

use super::affinity::behaviour::affinity_rows;

// ---------------------------------------------------------------- behaviours

async fn keys_and_their_model_state(store: &Store) {
    let snap = store.load().await.unwrap();
    assert!(snap.keys.is_empty() && snap.model_states.is_empty() && snap.users.is_empty());
    assert_eq!(store.load_key("k1").await.unwrap(), (None, Vec::new()));

    store
        .apply(vec![
            Write::PutKey(key_rec("k1", 10)),
            Write::PutKey(key_rec("k2", 20)),
            Write::PutKey(key_rec("k3", 30)),
            Write::PutModelState {
                key_id: "k1".into(),
                model: "flash".into(),
                state: state(T0, 1),
            },
            Write::PutModelState {
                key_id: "k1".into(),
                model: "pro".into(),
                state: state(T0 + 5, 0),
            },
            Write::PutModelState {
                key_id: "k2".into(),
                model: "flash".into(),
                state: state(T0 + 9, 3),
            },
        ])
        .await
        .unwrap();
    let snap = sorted_snapshot(store).await;
    assert_eq!(
        snap.keys,
        vec![key_rec("k1", 10), key_rec("k2", 20), key_rec("k3", 30)]
    );
    assert_eq!(
        snap.model_states,
        vec![
            ("k1".into(), "flash".into(), state(T0, 1)),
            ("k1".into(), "pro".into(), state(T0 + 5, 0)),
            ("k2".into(), "flash".into(), state(T0 + 9, 3)),
        ]
    );
    let (rec, mut states) = store.load_key("k1").await.unwrap();
    states.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(rec, Some(key_rec("k1", 10)));
    assert_eq!(
        states,
        vec![
            ("flash".into(), state(T0, 1)),
            ("pro".into(), state(T0 + 5, 0))
        ]
    );

    // Overwrite a record; delete one model state; delete a key with its states.
    let mut k2 = key_rec("k2", 20);
    k2.disabled = true;
    k2.note = Some("paused".into());
    k2.invalid = Some(Invalid {
        reason: "API_KEY_INVALID".into(),
        at: T0,
    });
    store
        .apply(vec![
            Write::PutKey(k2.clone()),
            Write::DeleteModelState {
                key_id: "k1".into(),
                model: "pro".into(),
            },
        ])
        .await
        .unwrap();
    store
        .apply(vec![Write::DeleteKey("k1".into())])
        .await
        .unwrap();
    let snap = sorted_snapshot(store).await;
    assert_eq!(snap.keys, vec![k2.clone(), key_rec("k3", 30)]);
    assert_eq!(
        snap.model_states,
        vec![("k2".into(), "flash".into(), state(T0 + 9, 3))],
        "deleting k1 removed its states"
    );
    assert_eq!(store.load_key("k1").await.unwrap(), (None, Vec::new()));
    assert_eq!(
        store.load_key("k2").await.unwrap(),
        (Some(k2), vec![("flash".into(), state(T0 + 9, 3))])
    );

    // A key deleted and put again starts with no state.
    store
        .apply(vec![
            Write::DeleteKey("k2".into()),
            Write::PutKey(key_rec("k2", 21)),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.load_key("k2").await.unwrap(),
        (Some(key_rec("k2", 21)), Vec::new())
    );
    // An empty batch is fine.
    store.apply(Vec::new()).await.unwrap();
}

async fn users_put_and_delete(store: &Store) {
    assert!(store.load_users().await.unwrap().is_empty());
    let mut u2 = user_rec("u2", "bob");
    u2.rpm = None;
    u2.models.clear();
    store
        .apply(vec![
            Write::PutUser(user_rec("u1", "alice")),
            Write::PutUser(u2.clone()),
        ])
        .await
        .unwrap();
    let mut users = store.load_users().await.unwrap();
    users.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(users, vec![user_rec("u1", "alice"), u2.clone()]);
    assert_eq!(sorted_snapshot(store).await.users, users);

    let mut u1 = user_rec("u1", "alice");
    u1.enabled = false;
    store
        .apply(vec![
            Write::PutUser(u1.clone()),
            Write::DeleteUser("u2".into()),
        ])
        .await
        .unwrap();
    assert_eq!(store.load_users().await.unwrap(), vec![u1.clone()]);
    assert_eq!(store.load().await.unwrap().users, vec![u1]);
    store
        .apply(vec![Write::DeleteUser("u1".into())])
        .await
        .unwrap();
    assert!(store.load_users().await.unwrap().is_empty());
}

async fn meta_settings(store: &Store) {
    assert_eq!(store.get_meta("jwt_key").await.unwrap(), None);
    assert!(
        store.all_meta().await.unwrap().is_empty(),
        "format version is not listed"
    );
    let binary: Vec<u8> = (0..=255).collect();
    store
        .apply(vec![
            Write::PutMeta("jwt_key".into(), binary.clone()),
            Write::PutMeta("password_hash".into(), b"$argon2id$x".to_vec()),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.get_meta("jwt_key").await.unwrap(),
        Some(binary.clone())
    );
    store
        .apply(vec![Write::PutMeta(
            "password_hash".into(),
            b"$argon2id$y".to_vec(),
        )])
        .await
        .unwrap();
    let mut all = store.all_meta().await.unwrap();
    all.sort();
    assert_eq!(
        all,
        vec![
            ("jwt_key".into(), binary),
            ("password_hash".into(), b"$argon2id$y".to_vec())
        ]
    );
    store
        .apply(vec![Write::DeleteMeta("password_hash".into())])
        .await
        .unwrap();
    assert_eq!(store.get_meta("password_hash").await.unwrap(), None);
    assert_eq!(store.all_meta().await.unwrap().len(), 1);
}

// ---------------------------------------------------------------- durability

/// Writes one of everything.
async fn fill(store: &Store) {
    store
        .apply(vec![
            Write::PutKey(key_rec("k1", 10)),
            Write::PutModelState {
                key_id: "k1".into(),
                model: "flash".into(),
                state: state(T0, 2),
            },
            Write::PutUser(user_rec("u1", "alice")),
            Write::PutMeta("jwt_key".into(), vec![1, 2, 3]),
        ])
        .await
        .unwrap();
    store.append_logs(pack_all(&sample_log())).await.unwrap();
}

async fn assert_filled(store: &Store) {
    let snap = sorted_snapshot(store).await;
    assert_eq!(snap.keys, vec![key_rec("k1", 10)]);
    assert_eq!(
        snap.model_states,
        vec![("k1".into(), "flash".into(), state(T0, 2))]
    );
    assert_eq!(snap.users, vec![user_rec("u1", "alice")]);
    assert_eq!(
        store.get_meta("jwt_key").await.unwrap(),
        Some(vec![1, 2, 3])
    );
    assert_eq!(
        all_pages(store, q(100)).await,
        newest_first(&sample_log(), |_| true)
    );
    assert_eq!(
        buckets(store, 0, i64::MAX).await,
        expected_buckets(&sample_log())
    );
}

#[tokio::test]
async fn redb_keeps_everything_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(None, dir.path(), "unused").await.unwrap();
    assert_eq!(store.kind(), "redb");
    assert!(store.healthy());
    fill(&store).await;
    drop(store);
    let store = Store::open_redb(dir.path()).await.unwrap();
    assert_filled(&store).await;
}

#[tokio::test]
async fn redis_keeps_everything_across_a_reconnect_and_prefixes_are_separate() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let store = redis_store(&redis, &prefix).await;
    assert!(store.healthy());
    fill(&store).await;
    drop(store);
    let store = redis_store(&redis, &prefix).await;
    assert_filled(&store).await;

    // Another prefix on the same Redis sees nothing of it.
    let other = redis_store(&redis, &unique_prefix()).await;
    let snap = other.load().await.unwrap();
    assert!(snap.keys.is_empty() && snap.model_states.is_empty() && snap.users.is_empty());
    assert_eq!(other.get_meta("jwt_key").await.unwrap(), None);
    assert!(other.query_logs(q(10)).await.unwrap().0.is_empty());
    assert!(other.stats_range(0, i64::MAX).await.unwrap().is_empty());
}

/// A Redis store another format wrote is refused, whichever way it differs, and left as
/// it was.
#[tokio::test]
async fn redis_of_another_format_is_refused() {
    let redis = Redis::start();
    for (found, too_new) in [(FORMAT_VERSION - 1, false), (FORMAT_VERSION + 1, true)] {
        let prefix = unique_prefix();
        let meta = format!("{prefix}:meta");
        let set = redis.cli(&["HSET", &meta, "format_version", &found.to_string()]);
        assert_eq!(set.trim(), "1");
        let err = Store::open(Some(&redis.url()), Path::new("/nonexistent"), &prefix)
            .await
            .err()
            .expect("another format is refused");
        match &err {
            StoreError::TooNew { found: f, .. } => assert!(too_new && *f == found),
            StoreError::TooOld { found: f, path, .. } => {
                assert!(!too_new && *f == found);
                assert!(path.contains(&prefix), "{path}");
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("store_prefix") || too_new, "{err}");
    }
}

#[tokio::test]
async fn redis_unreachable_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let nobody = dir.path().join("nobody.sock");
    let url = format!("redis+unix://gb:pw-marker@localhost{}", nobody.display());
    let err = Store::open(Some(&url), Path::new("."), "p")
        .await
        .err()
        .expect("no Redis there");
    let text = err.to_string();
    assert!(text.contains("Redis"), "{text}");
    assert!(!text.contains("pw-marker"), "{text}");
}
