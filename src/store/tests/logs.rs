//! The request log and its statistics in the store: behaviours run on both back-ends
//! (listed in `mod.rs`). redb's own log format has its tests in `redb_logs`.

use super::super::*;
use super::fixtures::*;
use crate::record::*;

pub(super) async fn log_is_newest_first_filtered_and_paged(store: &Store) {
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

pub(super) async fn get_log_finds_a_record_by_id(store: &Store) {
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

pub(super) async fn get_log_finds_time_prefixed_and_other_ids_until_pruned(store: &Store) {
    let mut log = sample_log();
    // Half the records carry the daemon's ids (time in front), one an id that looks like
    // one but names another time, the rest ids of other shapes (as imported records might).
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

pub(super) async fn stats_buckets_are_the_sum_of_the_log(store: &Store) {
    assert!(store.stats_range(0, i64::MAX).await.unwrap().is_empty());
    let log = sample_log();
    for r in &log {
        store
            .append_logs(pack_all(std::slice::from_ref(r)))
            .await
            .unwrap();
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

pub(super) async fn prune_removes_only_old_logs_and_buckets(store: &Store) {
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

pub(super) async fn import_copies_records_and_buckets_as_they_are(store: &Store) {
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
