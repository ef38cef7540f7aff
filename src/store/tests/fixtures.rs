//! Records and expectations shared by the store behaviour tests.

use crate::record::*;
use crate::secret::Secret;
use crate::store::*;
use crate::usage::Tokens;

// ---------------------------------------------------------------- records

/// 2025-06-15T15:00:00Z, on an hour boundary.
pub(super) const T0: i64 = 1_750_000_000_000 - 1_750_000_000_000 % HOUR_MS;

pub(super) fn key_rec(id: &str, created_at: i64) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        key: Secret::new(format!("AIzaSyStoreTest-{id}-0123456789")),
        note: None,
        disabled: false,
        invalid: None,
        created_at,
        project: Some(format!("project-of-{id}")),
        limits: [(
            "gemini-*".to_owned(),
            crate::config::SetLimits {
                rpm: Some(4),
                rpd: None,
                tpm: Some(9000),
            },
        )]
        .into(),
        group: Some("free".into()),
        proxy: None,
    }
}

pub(super) fn state(cooling_until_ms: i64, streak: u32) -> ModelState {
    ModelState {
        cooling_until_ms,
        cooling_reason: "quota".into(),
        backoff_level: 2,
        failure_streak: streak,
        last_error: Some("429 RESOURCE_EXHAUSTED".into()),
        unavailable_until_ms: if streak == 0 { cooling_until_ms } else { 0 },
        limits: QuotaLimits {
            per_minute: Some(streak + 5),
            tokens_per_minute: Some(1000),
            ..QuotaLimits::default()
        },
    }
}

pub(super) fn user_rec(id: &str, name: &str) -> UserRecord {
    UserRecord {
        id: id.into(),
        name: name.into(),
        key_hash: format!("{:064x}", id.len()),
        key_prefix: "gb-AbCd".into(),
        enabled: true,
        created_at: 1_700_000_000,
        expires_at: Some(1_900_000_000),
        models: vec!["gemini-2.5-*".into()],
        rpm: Some(10),
        daily_tokens: None,
        max_concurrent: Some(2),
        groups: vec!["free".into()],
    }
}

/// A log record; latencies are exact binary fractions so sums compare exactly.
#[allow(clippy::too_many_arguments)]
pub(super) fn log_rec(
    id: &str,
    time: i64,
    user: Option<&str>,
    key_id: &str,
    model: &str,
    stream: bool,
    status: u16,
    outcome: LogOutcome,
    total: u64,
) -> LogRecord {
    LogRecord {
        request_id: id.into(),
        time,
        user: user.map(str::to_owned),
        route: if stream {
            "streamGenerateContent".into()
        } else {
            "generateContent".into()
        },
        model: model.into(),
        stream,
        status,
        outcome,
        latency_ms: 40.5 + (total % 7) as f64 * 100.25,
        ttfb_ms: stream.then_some(12.5),
        tokens: Tokens {
            prompt: total / 3,
            candidates: total - total / 3,
            thoughts: total % 2,
            cached: total % 3,
            total,
        },
        key_id: Some(key_id.into()),
        key: Some(format!("AIza…{key_id}")),
        attempts: if outcome == LogOutcome::Ok && total == 30 {
            2
        } else {
            1
        },
        attempt_chain: vec![AttemptRecord {
            key_id: key_id.into(),
            key: format!("AIza…{key_id}"),
            outcome: "ok".into(),
            status: Some(status),
            latency_ms: 38.25,
            error: None,
        }],
        resource: (total % 2 == 1).then(|| format!("files/f{total}")),
        bytes_up: 100 + total,
        bytes_down: 1000 + total * 3,
        close_code: None,
        group: None,
    }
}

/// Nine records over three hours, two users, two keys, three models, every filterable
/// field varied; in time order (oldest first).
pub(super) fn sample_log() -> Vec<LogRecord> {
    use LogOutcome::*;
    let m = 60_000;
    vec![
        log_rec(
            "r01",
            T0 + m,
            Some("alice"),
            "k1",
            "flash",
            false,
            200,
            Ok,
            12,
        ),
        log_rec(
            "r02",
            T0 + 2 * m,
            Some("bob"),
            "k2",
            "flash",
            true,
            200,
            Ok,
            20,
        ),
        log_rec(
            "r03",
            T0 + 3 * m,
            Some("alice"),
            "k1",
            "pro",
            false,
            400,
            ClientError,
            0,
        ),
        log_rec(
            "r04",
            T0 + HOUR_MS + m,
            None,
            "k2",
            "pro",
            false,
            200,
            Ok,
            30,
        ),
        log_rec(
            "r05",
            T0 + HOUR_MS + 2 * m,
            Some("bob"),
            "k1",
            "flash",
            true,
            200,
            Truncated,
            7,
        ),
        log_rec(
            "r06",
            T0 + HOUR_MS + 3 * m,
            Some("alice"),
            "k2",
            "flash",
            false,
            503,
            UpstreamError,
            0,
        ),
        log_rec(
            "r07",
            T0 + 2 * HOUR_MS + m,
            Some("alice"),
            "k1",
            "lite",
            true,
            200,
            Ok,
            44,
        ),
        log_rec(
            "r08",
            T0 + 2 * HOUR_MS + 2 * m,
            Some("bob"),
            "k2",
            "flash",
            false,
            429,
            NoKey,
            0,
        ),
        log_rec(
            "r09",
            T0 + 2 * HOUR_MS + 3 * m,
            Some("alice"),
            "k1",
            "flash",
            false,
            200,
            Ok,
            12,
        ),
    ]
}

/// The ids of `recs` newest first that `pred` keeps.
pub(super) fn newest_first(
    recs: &[LogRecord],
    pred: impl Fn(&LogRecord) -> bool,
) -> Vec<LogRecord> {
    recs.iter().rev().filter(|r| pred(r)).cloned().collect()
}

pub(super) fn ids(recs: &[LogRecord]) -> Vec<&str> {
    recs.iter().map(|r| r.request_id.as_str()).collect()
}

/// Which records a filter should keep.
pub(super) type Pred = Box<dyn Fn(&LogRecord) -> bool>;

pub(super) fn q(limit: usize) -> LogQuery {
    LogQuery {
        limit,
        ..Default::default()
    }
}

/// Every page of `query`, following the cursor; checks no page is over the limit.
pub(super) async fn all_pages(store: &Store, query: LogQuery) -> Vec<LogRecord> {
    let mut out = Vec::new();
    let mut query = query;
    for _ in 0..100 {
        let (page, next) = store.query_logs(query.clone()).await.unwrap();
        assert!(page.len() <= query.limit, "page over the limit: {page:?}");
        out.extend(page);
        match next {
            Some(c) => query.cursor = Some(c),
            None => return out,
        }
    }
    panic!("the cursor never ran out");
}

pub(super) fn expected_buckets(recs: &[LogRecord]) -> Vec<(BucketKey, Bucket)> {
    let mut map = std::collections::BTreeMap::<BucketKey, Bucket>::new();
    for r in recs {
        map.entry(BucketKey::of(r)).or_default().add(r);
    }
    map.into_iter().collect()
}

pub(super) async fn buckets(store: &Store, from: i64, to: i64) -> Vec<(BucketKey, Bucket)> {
    let mut b = store.stats_range(from, to).await.unwrap();
    b.sort_by(|x, y| x.0.cmp(&y.0));
    b
}

pub(super) async fn sorted_snapshot(store: &Store) -> Snapshot {
    let mut snap = store.load().await.unwrap();
    snap.keys.sort_by(|a, b| a.id.cmp(&b.id));
    snap.model_states
        .sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    snap.users.sort_by(|a, b| a.id.cmp(&b.id));
    snap
}
