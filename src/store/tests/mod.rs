//! The store's behaviour, written once (`async fn behaviour(store: &Store)`) and run on
//! both back-ends (SPEC 6): redb in a temp dir, and Redis on a private `redis-server`
//! (free port, no persistence, killed on drop) under a unique prefix. Without
//! `redis-server` installed the Redis half fails with a clear message.

use super::*;

mod fixtures;
use fixtures::*;
use std::io::{Read, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- back-ends

/// A private `redis-server` for one test.
struct Redis {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        for _ in 0..10 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let mut child = match child {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                    "redis-server is not installed: the Redis half of the store tests needs it \
                     (apt-get install redis-server; CI installs it)"
                ),
                Err(e) => panic!("starting redis-server: {e}"),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if child.try_wait().ok().flatten().is_some() {
                    break; // the port was taken: pick another
                }
                if server_pid(port) == Some(child.id()) {
                    return Redis {
                        port,
                        child,
                        _dir: dir,
                    };
                }
                assert!(
                    Instant::now() < deadline,
                    "redis-server on port {port} did not answer"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("redis-server would not start on a free port");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `process_id` the server on `port` reports (so a stranger is never taken for ours).
fn server_pid(port: u16) -> Option<u32> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"INFO server\r\n").ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if !text.starts_with('$') {
            return None;
        }
        if let Some(end) = text.find("\r\n") {
            let len: usize = text[1..end].parse().ok()?;
            if buf.len() >= end + 2 + len {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buf)
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
}

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
    get_log_finds_time_prefixed_and_older_ids_until_pruned,
    stats_buckets_are_the_sum_of_the_log,
    prune_removes_only_old_logs_and_buckets,
    import_copies_records_and_buckets_as_they_are,
);

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
}

async fn log_is_newest_first_filtered_and_paged(store: &Store) {
    let (none, next) = store.query_logs(q(10)).await.unwrap();
    assert!(none.is_empty() && next.is_none());

    let log = sample_log();
    // Appended in three batches, not in time order.
    store.append_logs(pack_all(&log[6..])).await.unwrap();
    store.append_logs(pack_all(&log[..3])).await.unwrap();
    store.append_logs(pack_all(&log[3..6])).await.unwrap();

    let (all, next) = store.query_logs(q(100)).await.unwrap();
    assert_eq!(
        all,
        newest_first(&log, |_| true),
        "every record, newest first"
    );
    assert_eq!(next, None);

    let cases: Vec<(&str, LogQuery, Pred)> = vec![
        (
            "model",
            LogQuery {
                model: Some("flash".into()),
                ..q(100)
            },
            Box::new(|r| r.model == "flash"),
        ),
        (
            "user",
            LogQuery {
                user: Some("bob".into()),
                ..q(100)
            },
            Box::new(|r| r.user.as_deref() == Some("bob")),
        ),
        (
            "key",
            LogQuery {
                key_id: Some("k2".into()),
                ..q(100)
            },
            Box::new(|r| r.key_id.as_deref() == Some("k2")),
        ),
        (
            "outcome",
            LogQuery {
                outcome: Some(LogOutcome::Ok),
                ..q(100)
            },
            Box::new(|r| r.outcome == LogOutcome::Ok),
        ),
        (
            "status",
            LogQuery {
                status: Some(200),
                ..q(100)
            },
            Box::new(|r| r.status == 200),
        ),
        (
            "stream",
            LogQuery {
                stream: Some(true),
                ..q(100)
            },
            Box::new(|r| r.stream),
        ),
        (
            "time range [from, to)",
            LogQuery {
                from: Some(T0 + HOUR_MS + 2 * 60_000),
                to: Some(T0 + 2 * HOUR_MS + 2 * 60_000),
                ..q(100)
            },
            Box::new(|r| {
                r.time >= T0 + HOUR_MS + 2 * 60_000 && r.time < T0 + 2 * HOUR_MS + 2 * 60_000
            }),
        ),
        (
            "user and model",
            LogQuery {
                user: Some("alice".into()),
                model: Some("flash".into()),
                ..q(100)
            },
            Box::new(|r| r.user.as_deref() == Some("alice") && r.model == "flash"),
        ),
    ];
    for (what, query, pred) in &cases {
        let expect = newest_first(&log, pred);
        assert!(!expect.is_empty(), "{what}: the sample covers it");
        let (got, next) = store.query_logs(query.clone()).await.unwrap();
        assert_eq!(ids(&got), ids(&expect), "filter {what}");
        assert_eq!(got, expect, "filter {what}: exact records");
        assert_eq!(next, None, "filter {what}: one page");
        // The same filter in pages of two gives the same records, each once.
        let paged = all_pages(
            store,
            LogQuery {
                limit: 2,
                ..query.clone()
            },
        )
        .await;
        assert_eq!(ids(&paged), ids(&expect), "filter {what} in pages of 2");
    }

    // Pages of 4 over everything: 4, 4, 1.
    let (p1, c1) = store.query_logs(q(4)).await.unwrap();
    assert_eq!(ids(&p1), ["r09", "r08", "r07", "r06"]);
    let c1 = c1.expect("a cursor after a full page");
    let (p2, c2) = store
        .query_logs(LogQuery {
            cursor: Some(c1),
            ..q(4)
        })
        .await
        .unwrap();
    assert_eq!(ids(&p2), ["r05", "r04", "r03", "r02"]);
    let (p3, c3) = store
        .query_logs(LogQuery { cursor: c2, ..q(4) })
        .await
        .unwrap();
    assert_eq!(ids(&p3), ["r01"]);
    assert_eq!(c3, None, "the last, short page has no cursor");
}

async fn get_log_finds_a_record_by_id(store: &Store) {
    let log = sample_log();
    store.append_logs(pack_all(&log)).await.unwrap();
    for r in &log {
        assert_eq!(
            store.get_log(&r.request_id).await.unwrap().as_ref(),
            Some(r)
        );
    }
    assert_eq!(store.get_log("nope").await.unwrap(), None);
}

async fn get_log_finds_time_prefixed_and_older_ids_until_pruned(store: &Store) {
    let mut log = sample_log();
    // Half the records carry today's ids (time in front), one an id that looks like one
    // but names another time (as an imported record might), the rest older ids.
    for r in log.iter_mut().step_by(2) {
        r.request_id = new_request_id(r.time);
    }
    log[1].request_id = new_request_id(log[1].time + 1);
    store.append_logs(pack_all(&log)).await.unwrap();
    for r in &log {
        assert_eq!(
            store.get_log(&r.request_id).await.unwrap().as_ref(),
            Some(r),
            "{}",
            r.request_id
        );
    }
    let unknown = new_request_id(log[0].time);
    assert_eq!(store.get_log(&unknown).await.unwrap(), None);

    let removed = store.prune(i64::MAX, 0).await.unwrap();
    assert_eq!(removed.0, log.len() as u64);
    for r in &log {
        assert_eq!(store.get_log(&r.request_id).await.unwrap(), None);
    }
}

async fn stats_buckets_are_the_sum_of_the_log(store: &Store) {
    assert!(store.stats_range(0, i64::MAX).await.unwrap().is_empty());
    let log = sample_log();
    for r in &log {
        store.append_logs(vec![PackedLog::pack(r)]).await.unwrap();
    }
    // Another batch adds to the same buckets.
    let mut extra = log_rec(
        "r10",
        T0 + 5 * 60_000,
        Some("alice"),
        "k1",
        "flash",
        false,
        200,
        LogOutcome::Ok,
        30,
    );
    extra.latency_ms = 99_999.0;
    let mut all = log.clone();
    all.push(extra.clone());
    store.append_logs(pack_all(&[extra])).await.unwrap();

    let expect = expected_buckets(&all);
    assert_eq!(expect.len(), 9, "the sample spreads over 9 buckets");
    assert_eq!(buckets(store, 0, i64::MAX).await, expect);
    // The range is [from, to) on the bucket's hour.
    let second_hour: Vec<_> = expect
        .iter()
        .filter(|(k, _)| k.hour_ms == T0 + HOUR_MS)
        .cloned()
        .collect();
    assert_eq!(
        buckets(store, T0 + HOUR_MS, T0 + 2 * HOUR_MS).await,
        second_hour
    );
    assert!(
        buckets(store, T0 + 3 * HOUR_MS, T0 + 9 * HOUR_MS)
            .await
            .is_empty()
    );
    let mut sum = Bucket::default();
    for (_, b) in &expect {
        sum.merge(b);
    }
    assert_eq!(sum.requests, 10);
    assert_eq!(sum.total_tokens, 12 + 20 + 30 + 7 + 44 + 12 + 30);
}

async fn prune_removes_only_old_logs_and_buckets(store: &Store) {
    let log = sample_log();
    store.append_logs(pack_all(&log)).await.unwrap();
    // Logs before the third hour go; buckets before the second hour go.
    let (logs_before, stats_before) = (T0 + 2 * HOUR_MS, T0 + HOUR_MS);
    let expect_buckets: Vec<_> = expected_buckets(&log)
        .into_iter()
        .filter(|(k, _)| k.hour_ms >= stats_before)
        .collect();
    let removed = store.prune(logs_before, stats_before).await.unwrap();
    assert_eq!(removed, (6, 3), "(log records, buckets) removed");

    let kept = newest_first(&log, |r| r.time >= logs_before);
    assert_eq!(all_pages(store, q(100)).await, kept);
    assert_eq!(store.get_log("r06").await.unwrap(), None);
    assert_eq!(store.get_log("r07").await.unwrap().as_ref(), Some(&log[6]));
    // Buckets outlive their logs: the second hour's are still there.
    assert_eq!(buckets(store, 0, i64::MAX).await, expect_buckets);

    assert_eq!(
        store.prune(logs_before, stats_before).await.unwrap(),
        (0, 0)
    );
}

async fn import_copies_records_and_buckets_as_they_are(store: &Store) {
    let log = sample_log();
    let b = expected_buckets(&log);
    store.import(pack_all(&log), Vec::new()).await.unwrap();
    assert!(
        store.stats_range(0, i64::MAX).await.unwrap().is_empty(),
        "imported records are not counted"
    );
    store.import(Vec::new(), b.clone()).await.unwrap();
    assert_eq!(all_pages(store, q(3)).await, newest_first(&log, |_| true));
    assert_eq!(buckets(store, 0, i64::MAX).await, b);
    assert_eq!(store.get_log("r05").await.unwrap().as_ref(), Some(&log[4]));
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

#[tokio::test]
async fn redis_unreachable_is_a_clear_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("redis://:pw-marker@127.0.0.1:{port}/0");
    let err = Store::open(Some(&url), Path::new("."), "p")
        .await
        .err()
        .expect("no Redis there");
    let text = err.to_string();
    assert!(text.contains("Redis"), "{text}");
    assert!(!text.contains("pw-marker"), "{text}");
}

/// Log batches committed without waiting for the disk are readable at once, and the next
/// durable commit (here an explicit flush) keeps them across a reopen.
#[tokio::test]
async fn redb_deferred_log_batches_are_kept_by_the_next_flush() {
    let dir = tempfile::tempdir().unwrap();
    let log = sample_log();
    let (first, second) = log.split_at(4);
    {
        let store = Store::open_redb(dir.path()).await.unwrap();
        store
            .append_logs_when(pack_all(first).into(), super::LogCommit::Deferred)
            .await
            .unwrap();
        store
            .append_logs_when(pack_all(second).into(), super::LogCommit::Deferred)
            .await
            .unwrap();
        assert_eq!(all_pages(&store, q(3)).await, newest_first(&log, |_| true));
        store.sync_logs().await.unwrap();
    }
    let store = Store::open_redb(dir.path()).await.unwrap();
    assert_eq!(all_pages(&store, q(3)).await, newest_first(&log, |_| true));
    assert_eq!(
        buckets(&store, 0, i64::MAX).await,
        expected_buckets(&log),
        "statistics kept with their records"
    );
}

/// A store written by an earlier version keeps its log readable: JSON values and an id
/// index row per record, next to records written now.
#[tokio::test]
async fn redb_reads_log_records_written_as_json_by_older_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_redb(dir.path()).await.unwrap();
    let Store::Redb(redb) = &store else {
        unreachable!("opened redb")
    };
    let log = sample_log();
    let (old, new) = log.split_at(5);
    let db = redb.db();
    let txn = db.begin_write().unwrap();
    {
        let mut logs = txn.open_table(super::redb_logs::LOGS).unwrap();
        let mut ids = txn.open_table(super::redb_logs::LOG_IDS).unwrap();
        for r in old {
            let key = super::logs::log_key(r.time, &r.request_id);
            let json = serde_json::to_vec(r).unwrap();
            logs.insert(key.as_str(), json.as_slice()).unwrap();
            ids.insert(r.request_id.as_str(), key.as_str()).unwrap();
        }
    }
    txn.commit().unwrap();
    store.append_logs(pack_all(new)).await.unwrap();

    assert_eq!(all_pages(&store, q(3)).await, newest_first(&log, |_| true));
    for r in &log {
        assert_eq!(
            store.get_log(&r.request_id).await.unwrap().as_ref(),
            Some(r)
        );
    }
}

/// The writer and the stores read a packed record's placing and bucket fields without
/// unpacking it; those must be the record's own, with and without a user and key.
#[test]
fn packed_head_reads_the_record() {
    let mut log = sample_log();
    log[0].ttfb_ms = Some(3.5);
    log[0].tokens.thoughts = 7;
    assert!(log.iter().any(|r| r.user.is_none()));
    for rec in &log {
        let packed = super::PackedLog::pack(rec);
        let h = packed.head().expect("a packed record has a head");
        assert_eq!(h.request_id, rec.request_id);
        assert_eq!(h.time, rec.time);
        assert_eq!(h.user, rec.user.as_deref());
        assert_eq!(h.model, rec.model);
        assert_eq!(h.outcome, rec.outcome);
        assert_eq!(h.latency_ms, rec.latency_ms);
        assert_eq!(h.tokens, rec.tokens);
        assert_eq!(h.key_id, rec.key_id.as_deref());
        assert_eq!(packed.unpack().as_ref(), Some(rec));
    }
}

#[test]
fn request_ids_are_24_hex_digits_starting_with_their_time() {
    let t = 0x0123_4567_89ab;
    let a = new_request_id(t);
    let b = new_request_id(t);
    assert_eq!(a.len(), 24);
    assert!(
        a.bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{a}"
    );
    assert!(a.starts_with("0123456789ab"), "{a}");
    assert_eq!(super::logs::time_in_request_id(&a), Some(t));
    assert_ne!(a, b, "the random half differs");
}
