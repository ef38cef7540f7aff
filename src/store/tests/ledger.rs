//! The quota ledger in the store: its counts kept in the redb file across a reopen and
//! dropped with their key, and the shared ledger's Lua check on a real Redis.

use super::*;
use crate::store::{QuotaLimits, UsageRecord};

fn usage(n: u64) -> UsageRecord {
    UsageRecord {
        minute: vec![T0, T0 + 1],
        tokens: vec![(T0 + 2, 40)],
        today: n,
        day_end_ms: T0 + 3_600_000,
    }
}

fn put(key_id: &str, model: &str, n: u64) -> Write {
    Write::PutUsage {
        key_id: key_id.into(),
        model: model.into(),
        usage: usage(n),
    }
}

#[tokio::test]
async fn redb_keeps_the_ledger_across_a_reopen_and_drops_it_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_redb(dir.path()).await.unwrap();
    store
        .apply(vec![
            Write::PutKey(key_rec("k1", 1)),
            Write::PutKey(key_rec("k2", 2)),
            put("k1", "flash", 5),
            put("k1", "pro", 6),
            put("k2", "flash", 7),
        ])
        .await
        .unwrap();
    store
        .apply(vec![Write::DeleteUsage {
            key_id: "k1".into(),
            model: "pro".into(),
        }])
        .await
        .unwrap();
    drop(store);
    let store = Store::open_redb(dir.path()).await.unwrap();
    let mut rows = store.load().await.unwrap().usage;
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(
        rows,
        vec![
            ("k1".into(), "flash".into(), usage(5)),
            ("k2".into(), "flash".into(), usage(7))
        ]
    );
    store
        .apply(vec![Write::DeleteKey("k1".into())])
        .await
        .unwrap();
    let rows = store.load().await.unwrap().usage;
    assert_eq!(rows, vec![("k2".into(), "flash".into(), usage(7))]);
}

#[tokio::test]
async fn redis_counts_each_request_until_a_limit_and_says_until_when() {
    let redis = Redis::start();
    let Store::Redis(store) = redis_store(&redis, &unique_prefix()).await else {
        panic!("a Redis store");
    };
    // Real times: the day's counter expires with its day.
    let t0 = crate::keys::unix_ms();
    let day_end = t0 + 3_600_000;
    let limits = QuotaLimits {
        per_minute: Some(2),
        per_day: Some(3),
        tokens_per_minute: Some(100),
    };
    let take = |now: i64, unique: &'static str| {
        let store = store.clone();
        async move {
            store
                .ledger_take("k1", "flash", &limits, now, day_end, unique)
                .await
                .unwrap()
        }
    };
    let t = take(t0, "a-1").await;
    assert!(t.counted && (t.minute, t.today) == (1, 1), "{t:?}");
    assert!(take(t0 + 10_000, "b-1").await.counted, "another instance");
    let full = take(t0 + 20_000, "a-2").await;
    assert_eq!(
        (full.counted, full.out_until_ms),
        (false, t0 + 60_000),
        "{full:?}"
    );
    assert_eq!(
        (full.minute, full.today),
        (2, 2),
        "a refused request is not counted"
    );
    let t = take(t0 + 60_000, "a-3").await;
    assert!(t.counted && t.today == 3, "the first has aged out: {t:?}");
    let day = take(t0 + 200_000, "a-4").await;
    assert_eq!(
        (day.counted, day.out_until_ms),
        (false, day_end),
        "3 a day: {day:?}"
    );

    store
        .ledger_tokens("k1", "pro", 60, t0, "a-5")
        .await
        .unwrap();
    store
        .ledger_tokens("k1", "pro", 50, t0 + 5_000, "b-2")
        .await
        .unwrap();
    let tokens = QuotaLimits {
        tokens_per_minute: Some(100),
        ..QuotaLimits::default()
    };
    let t = store
        .ledger_take("k1", "pro", &tokens, t0 + 6_000, day_end, "a-6")
        .await
        .unwrap();
    assert_eq!(
        (t.counted, t.out_until_ms, t.tokens_minute),
        (false, t0 + 60_000, 110),
        "110 of 100 tokens: room once the 60 are a minute old"
    );
}

/// Redis Cluster refuses a script whose keys are in different slots (`CROSSSLOT`): on a
/// one-node cluster, every ledger and user-limit script runs, and a reset clears it.
#[tokio::test]
async fn the_shared_scripts_run_on_a_redis_cluster() {
    let redis = Redis::start_cluster();
    let Store::Redis(store) = redis_store(&redis, &unique_prefix()).await else {
        panic!("a Redis store");
    };
    let t0 = crate::keys::unix_ms();
    let day_end = t0 + 3_600_000;
    let limits = QuotaLimits {
        per_minute: Some(1),
        ..QuotaLimits::default()
    };
    let take = |unique: &'static str| {
        let store = store.clone();
        async move {
            store
                .ledger_take("k1", "flash", &limits, t0, day_end, unique)
                .await
                .expect("the ledger script on a cluster")
        }
    };
    assert!(take("a-1").await.counted);
    store
        .ledger_tokens("k1", "flash", 5, t0, "a-2")
        .await
        .expect("the token script on a cluster");
    assert!(!take("a-3").await.counted, "1 a minute");
    store.ledger_reset("k1", day_end).await.expect("a reset");
    let t = take("a-4").await;
    assert!(
        t.counted && (t.minute, t.today, t.tokens_minute) == (1, 1, 0),
        "the reset forgot every count: {t:?}"
    );

    let limits = std::sync::Arc::new(crate::limits::Limits::shared((*store).clone()));
    let mut user = crate::users::record("u", &crate::secret::Secret::new("gb-x"), 0);
    (user.rpm, user.max_concurrent, user.daily_tokens) = (Some(5), Some(2), Some(1000));
    let permit = limits.admit(&user, "flash", t0).await;
    assert!(permit.is_ok(), "the user-limit script on a cluster");
}
