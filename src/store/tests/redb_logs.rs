//! redb's log format: deferred batches made durable by the next flush, runs freed and
//! trimmed by pruning, overlapping runs read back in arrival order; and the packed
//! record's head and request ids both back-ends rely on.

use super::super::*;
use super::fixtures::*;
use crate::record::*;

/// Log batches committed without waiting for the disk are readable at once, and the next
/// durable commit (an explicit flush, or a durable batch) keeps them and their statistics
/// across a reopen.
#[tokio::test]
async fn redb_deferred_log_batches_are_kept_by_the_next_flush() {
    let dir = tempfile::tempdir().unwrap();
    let log = sample_log();
    let (first, second) = log.split_at(4);
    let again: Vec<LogRecord> = log
        .iter()
        .map(|r| LogRecord {
            request_id: format!("{}-again", r.request_id),
            ..r.clone()
        })
        .collect();
    {
        let store = Store::open_redb(dir.path()).await.unwrap();
        store
            .append_logs_when(pack_all(first).into(), crate::store::LogCommit::Deferred)
            .await
            .unwrap();
        store
            .append_logs_when(pack_all(second).into(), crate::store::LogCommit::Deferred)
            .await
            .unwrap();
        assert_eq!(all_pages(&store, q(3)).await, newest_first(&log, |_| true));
        store.sync_logs().await.unwrap();
        assert_eq!(buckets(&store, 0, i64::MAX).await, expected_buckets(&log));
        // A deferred batch, then a durable one whose buckets overlap it.
        let (first, second) = again.split_at(4);
        store
            .append_logs_when(pack_all(first).into(), crate::store::LogCommit::Deferred)
            .await
            .unwrap();
        store
            .append_logs_when(pack_all(second).into(), crate::store::LogCommit::Durable)
            .await
            .unwrap();
    }
    let twice: Vec<LogRecord> = log.iter().chain(&again).cloned().collect();
    let store = Store::open_redb(dir.path()).await.unwrap();
    assert_eq!(all_pages(&store, q(3)).await.len(), twice.len());
    assert_eq!(
        buckets(&store, 0, i64::MAX).await,
        expected_buckets(&twice),
        "statistics kept with their records"
    );
}

/// Runs in the redb file (how many), for the tests that watch them.
fn redb_runs(store: &Store) -> u64 {
    let Store::Redb(redb) = store else {
        unreachable!("opened redb")
    };
    let db = redb.db();
    let txn = ::redb::ReadableDatabase::begin_read(&*db).unwrap();
    let metas = txn.open_table(crate::store::redb::LOG_RUN_META).unwrap();
    ::redb::ReadableTableMetadata::len(&metas).unwrap()
}

/// Pruning frees a run once every record in it is old; a run that straddles the cut
/// keeps serving its recent records and no longer its old ones.
#[tokio::test]
async fn redb_prune_frees_old_runs_and_trims_the_one_across_the_cut() {
    use LogOutcome::Ok;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_redb(dir.path()).await.unwrap();
    let cut = T0 + 2 * HOUR_MS;
    let rec =
        |id: &str, time: i64| log_rec(id, time, Some("alice"), "k1", "flash", false, 200, Ok, 3);
    // One run of old records, one across the cut (40 s: within a run's span).
    let old = vec![rec("a1", cut - 600_000), rec("a2", cut - 570_000)];
    let across = vec![rec("b1", cut - 30_000), rec("b2", cut + 10_000)];
    store.append_logs(pack_all(&old)).await.unwrap();
    store.append_logs(pack_all(&across)).await.unwrap();
    assert_eq!(redb_runs(&store), 2);

    let (logs, _) = store.prune(cut, 0).await.unwrap();
    assert_eq!(logs, 3, "every record older than the cut, and no other");
    assert_eq!(redb_runs(&store), 1, "the all-old run went");
    assert_eq!(all_pages(&store, q(2)).await, vec![across[1].clone()]);
    assert_eq!(store.get_log("b1").await.unwrap(), None);
    assert_eq!(store.get_log("a1").await.unwrap(), None);
    assert_eq!(
        store.get_log("b2").await.unwrap().as_ref(),
        Some(&across[1])
    );
    assert_eq!(
        store.prune(cut, 0).await.unwrap(),
        (0, 0),
        "nothing old is left"
    );

    store.prune(i64::MAX, 0).await.unwrap();
    assert_eq!(redb_runs(&store), 0);
    assert!(all_pages(&store, q(2)).await.is_empty());
}

/// Batches that overlap in time (serving threads' chunks, a long stream logged when it
/// ends, minutes after it arrived) read back as one log in arrival order, in any page
/// size and time window, and each record is found by its id.
#[tokio::test]
async fn redb_runs_that_overlap_in_time_read_back_in_arrival_order() {
    use LogOutcome::Ok;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_redb(dir.path()).await.unwrap();
    let s = 1_000;
    let rec = |time: i64| {
        log_rec(
            &new_request_id(time),
            time,
            None,
            "k1",
            "flash",
            true,
            200,
            Ok,
            1,
        )
    };
    let first: Vec<_> = [0, 10, 20, 30].iter().map(|t| rec(T0 + t * s)).collect();
    let second: Vec<_> = [5, 15, 20, 25].iter().map(|t| rec(T0 + t * s)).collect();
    // A stream that arrived five minutes before the others were logged, and one more.
    let late: Vec<_> = [-300, 35].iter().map(|t| rec(T0 + t * s)).collect();
    for batch in [&first, &second, &late] {
        store.append_logs(pack_all(batch)).await.unwrap();
    }
    assert!(
        redb_runs(&store) >= 4,
        "the late stream has a run of its own"
    );
    let mut log: Vec<_> = [first, second, late].concat();
    log.sort_by(|a, b| (a.time, &a.request_id).cmp(&(b.time, &b.request_id)));
    for limit in [1, 2, 3, 100] {
        assert_eq!(
            ids(&all_pages(&store, q(limit)).await),
            ids(&newest_first(&log, |_| true)),
            "pages of {limit}"
        );
    }
    for (from, to) in [
        (T0, T0 + 21 * s),
        (T0 - 400 * s, T0),
        (T0 + 20 * s, T0 + 20 * s + 1),
    ] {
        let window = LogQuery {
            from: Some(from),
            to: Some(to),
            ..q(2)
        };
        assert_eq!(
            ids(&all_pages(&store, window).await),
            ids(&newest_first(&log, |r| r.time >= from && r.time < to)),
            "[{from}, {to})"
        );
    }
    for r in &log {
        assert_eq!(
            store.get_log(&r.request_id).await.unwrap().as_ref(),
            Some(r)
        );
    }
}

/// The writer and the stores read a packed record's placing and bucket fields without
/// unpacking it; those must be the record's own, with and without a user and key, for
/// every record of a chunk.
#[test]
fn packed_head_reads_the_record() {
    let mut log = sample_log();
    log[0].ttfb_ms = Some(3.5);
    log[0].tokens.thoughts = 7;
    assert!(log.iter().any(|r| r.user.is_none()));
    let chunks = pack_all(&log);
    assert_eq!(chunks[0].len(), log.len());
    for (rec, packed) in log.iter().zip(chunks[0].records()) {
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
    assert_eq!(crate::store::logs::time_in_request_id(&a), Some(t));
    assert_ne!(a, b, "the random half differs");
}
