//! The pool's behaviour with time passed in: selection, cool-downs and back-off, retired
//! keys, concurrency caps and queueing, and keys added.

use super::*;
use crate::config::{PoolConfig, Strategy};
use crate::keys::classify::Exhausted;
use crate::store::QuotaLimits;
use std::time::Duration;

fn pool_with(n: usize, cfg: PoolConfig) -> (Pool, mpsc::UnboundedReceiver<Msg>) {
    let (tx, rx) = persist::channel();
    let pool = Pool::new(cfg, &Snapshot::default(), tx, crate::events::Hub::default());
    let keys: Vec<(Secret, Option<String>)> = (0..n)
        .map(|i| (Secret::new(format!("AIzaTestKey-{i:04}-padding")), None))
        .collect();
    pool.add(&keys, 0);
    (pool, rx)
}

fn ids(pool: &Pool) -> Vec<String> {
    pool.entries().iter().map(|e| e.id.clone()).collect()
}

fn pick(pool: &Pool, model: &str, now: i64) -> Result<String, NoKey> {
    pool.acquire(model, now, &[]).map(|l| l.entry.id.clone())
}

const T0: i64 = 1_700_000_000_000;

#[test]
fn round_robin_visits_every_key_in_turn() {
    let (pool, _rx) = pool_with(3, PoolConfig::default());
    let picked: Vec<String> = (0..6).map(|_| pick(&pool, "m", T0).unwrap()).collect();
    let all = ids(&pool);
    for id in &all {
        assert_eq!(picked.iter().filter(|p| *p == id).count(), 2);
    }
}

#[test]
fn rate_limit_cools_only_that_model_for_retry_delay_plus_margin() {
    let (pool, _rx) = pool_with(1, PoolConfig::default());
    let e = pool.entries()[0].clone();
    let outcome = Outcome::RateLimited {
        retry_after: Some(Duration::from_secs(30)),
        exhausted: Exhausted::Minute,
        reason: "q".into(),
        project: None,
        shared: false,
        limits: QuotaLimits::default(),
    };
    pool.report(&e, "pro", &outcome, T0);
    let no = pool
        .acquire("pro", T0 + 1000, &[])
        .err()
        .expect("pro cooling");
    assert_eq!(no.earliest_ms, Some(T0 + 31_000));
    assert_eq!(no.retry_after(T0 + 1000), Some(Duration::from_secs(30)));
    assert!(pick(&pool, "flash", T0 + 1000).is_ok(), "flash unaffected");
    assert!(
        pick(&pool, "pro", T0 + 31_000).is_ok(),
        "back after the delay"
    );
}

#[test]
fn state_changes_reach_selection_and_a_success_clears_a_models_state() {
    let (pool, _rx) = pool_with(1, PoolConfig::default());
    let e = pool.entries()[0].clone();
    let cool = Outcome::RateLimited {
        retry_after: Some(Duration::from_secs(30)),
        exhausted: Exhausted::Minute,
        reason: "q".into(),
        project: None,
        shared: false,
        limits: QuotaLimits::default(),
    };
    pool.report(&e, "pro", &Outcome::Success, T0);
    pool.report(&e, "pro", &cool, T0);
    assert_eq!(e.status("pro", T0).0, KeyStatus::Cooling);
    assert_eq!(e.status("flash", T0).0, KeyStatus::Active);
    let later = T0 + 60_000;
    assert!(pick(&pool, "pro", later).is_ok());
    pool.report(&e, "pro", &Outcome::Success, later);
    assert!(
        e.model_state("pro").is_none(),
        "a success forgets the cooldown"
    );
    pool.set_disabled(&e, true);
    assert_eq!(e.status("flash", later).0, KeyStatus::Disabled);
    assert!(pick(&pool, "flash", later).is_err());
    pool.set_disabled(&e, false);
    assert!(pick(&pool, "flash", later).is_ok());
    pool.report(&e, "pro", &cool, later);
    pool.report(&e, "pro", &cool, later);
    assert_eq!(e.status("pro", later).0, KeyStatus::Cooling);
}

#[test]
fn bare_429_backs_off_exponentially_up_to_the_cap() {
    let cfg = PoolConfig {
        cooldown_base: Duration::from_secs(60),
        cooldown_max: Duration::from_secs(200),
        ..PoolConfig::default()
    };
    let (pool, _rx) = pool_with(1, cfg);
    let e = pool.entries()[0].clone();
    let bare = Outcome::RateLimited {
        retry_after: None,
        exhausted: Exhausted::Minute,
        reason: "q".into(),
        project: None,
        shared: false,
        limits: QuotaLimits::default(),
    };
    let mut now = T0;
    for expected in [60_000, 120_000, 200_000, 200_000] {
        pool.report(&e, "m", &bare, now);
        let (_, until) = e.status("m", now);
        assert_eq!(until - now, expected);
        now = until;
    }
    pool.report(&e, "m", &Outcome::Success, now);
    pool.report(&e, "m", &bare, now);
    assert_eq!(
        e.status("m", now).1 - now,
        60_000,
        "success resets the back-off"
    );
}

#[test]
fn daily_quota_cools_until_pacific_midnight() {
    let (pool, _rx) = pool_with(1, PoolConfig::default());
    let e = pool.entries()[0].clone();
    // 2026-11-26 12:00 UTC is 04:00 in Los Angeles (PST, UTC-8): reset at 08:00 UTC on the 27th.
    let now = 1_795_694_400_000;
    let daily = Outcome::RateLimited {
        retry_after: Some(Duration::from_secs(5)),
        exhausted: Exhausted::Day,
        reason: "PerDay".into(),
        project: None,
        shared: false,
        limits: QuotaLimits::default(),
    };
    pool.report(&e, "m", &daily, now);
    assert_eq!(e.status("m", now), (KeyStatus::Cooling, 1_795_766_400_000));
}

/// Midnight in Los Angeles moves with daylight saving time: 07:00 UTC in summer (PDT),
/// 08:00 UTC in winter (PST); the night the clocks change has 23 or 25 hours.
#[test]
fn pacific_midnight_follows_daylight_saving_time() {
    let ms = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_millisecond();
    let cases = [
        ("2026-07-01T12:00:00Z", "2026-07-02T07:00:00Z"), // 05:00 PDT
        ("2026-07-02T06:59:59Z", "2026-07-02T07:00:00Z"), // 23:59:59 PDT
        ("2026-07-02T07:00:00Z", "2026-07-03T07:00:00Z"), // exactly midnight
        ("2026-03-08T09:00:00Z", "2026-03-09T07:00:00Z"), // the spring-forward day (23 h)
        ("2026-11-01T08:30:00Z", "2026-11-02T08:00:00Z"), // the fall-back day (25 h)
        ("2026-12-31T20:00:00Z", "2027-01-01T08:00:00Z"), // New Year's Eve, 12:00 PST
    ];
    for (now, next) in cases {
        assert_eq!(next_pacific_midnight(ms(now)), ms(next), "after {now}");
    }
}

fn zero_limit() -> Outcome {
    Outcome::RateLimited {
        retry_after: Some(Duration::from_secs(25)),
        exhausted: Exhausted::Tier,
        reason: "GenerateRequestsPerDayPerProjectPerModel-FreeTier".into(),
        project: None,
        shared: false,
        limits: QuotaLimits::default(),
    }
}

#[test]
fn a_zero_limit_makes_the_model_unavailable_on_that_key_for_a_day() {
    let (pool, _rx) = pool_with(2, PoolConfig::default());
    let (free, paid) = (pool.entries()[0].clone(), pool.entries()[1].clone());
    pool.report(&free, "pro", &zero_limit(), T0);
    let day = T0 + quota::RECHECK_UNAVAILABLE_MS;
    assert_eq!(free.status("pro", T0), (KeyStatus::Unavailable, day));
    assert_eq!(
        free.status("flash", T0).0,
        KeyStatus::Active,
        "other models"
    );
    for _ in 0..4 {
        assert_eq!(pick(&pool, "pro", T0 + 1).unwrap(), paid.id, "skipped");
    }
    // Unavailable is not cooling: with no other key, nothing to wait for.
    let tried = vec![paid.clone()];
    let no = pool.acquire("pro", T0 + 1, &tried).err().unwrap();
    assert_eq!(no.earliest_ms, None, "{no:?}");
    let view = free.view(T0 + 1);
    assert_eq!(view.state, KeyStatus::Active, "the key still serves");
    assert_eq!(view.models[0].state, KeyStatus::Unavailable);
    assert_eq!(view.models[0].unavailable_until_ms, day);
    // A day later one request looks again; a reset clears it at once.
    assert_eq!(free.status("pro", day).0, KeyStatus::Active);
    pool.reset(&free);
    assert_eq!(free.status("pro", T0 + 1).0, KeyStatus::Active);
}

#[test]
fn invalid_key_is_never_chosen_again() {
    let (pool, _rx) = pool_with(2, PoolConfig::default());
    let bad = pool.entries()[0].clone();
    pool.report(
        &bad,
        "m",
        &Outcome::Invalid {
            reason: "API_KEY_INVALID".into(),
        },
        T0,
    );
    for _ in 0..10 {
        assert_ne!(pick(&pool, "m", T0).unwrap(), bad.id);
    }
    assert_eq!(bad.status("other", T0).0, KeyStatus::Invalid);
}

#[test]
fn failure_streak_cools_after_threshold() {
    let cfg = PoolConfig {
        failure_threshold: 3,
        failure_cooldown: Duration::from_secs(30),
        ..PoolConfig::default()
    };
    let (pool, _rx) = pool_with(1, cfg);
    let e = pool.entries()[0].clone();
    let t = Outcome::Transient {
        reason: "503".into(),
    };
    pool.report(&e, "m", &t, T0);
    pool.report(&e, "m", &t, T0);
    assert_eq!(e.status("m", T0).0, KeyStatus::Active);
    pool.report(&e, "m", &t, T0);
    assert_eq!(e.status("m", T0), (KeyStatus::Cooling, T0 + 30_000));
}

#[test]
fn client_errors_change_nothing() {
    let (pool, _rx) = pool_with(1, PoolConfig::default());
    let e = pool.entries()[0].clone();
    pool.report(&e, "m", &Outcome::ClientError, T0);
    assert!(e.model_state("m").is_none());
}

#[test]
fn concurrency_cap_is_held_until_the_lease_drops() {
    let cfg = PoolConfig {
        max_concurrent_per_key: 1,
        ..PoolConfig::default()
    };
    let (pool, _rx) = pool_with(1, cfg);
    let lease = pool.acquire("m", T0, &[]).unwrap();
    let no = pool.acquire("m", T0, &[]).err().expect("busy");
    assert!(no.busy);
    drop(lease);
    assert!(pool.acquire("m", T0, &[]).is_ok());
}

#[test]
fn a_queueing_request_is_woken_when_a_lease_ends_and_only_then() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let cfg = PoolConfig {
        max_concurrent_per_key: 1,
        ..PoolConfig::default()
    };
    let (pool, _rx) = pool_with(1, cfg);
    let mut cx = Context::from_waker(Waker::noop());
    let lease = pool.acquire("m", T0, &[]).unwrap();
    // The queueing side: counted in, registered, then it looks again and finds none.
    let queueing = pool.freed().queue();
    let mut woken = std::pin::pin!(pool.freed().notified());
    woken.as_mut().enable();
    assert!(pool.acquire("m", T0, &[]).is_err());
    assert_eq!(woken.as_mut().poll(&mut cx), Poll::Pending);
    drop(lease);
    assert_eq!(woken.as_mut().poll(&mut cx), Poll::Ready(()));
    let again = pool.acquire("m", T0, &[]).unwrap();
    drop(queueing);

    // Nobody queueing: a release wakes nothing (a registration made later stays asleep
    // until the next release or key change).
    let mut later = std::pin::pin!(pool.freed().notified());
    later.as_mut().enable();
    drop(again);
    assert_eq!(later.as_mut().poll(&mut cx), Poll::Pending);
    pool.freed().notify_all();
    assert_eq!(later.as_mut().poll(&mut cx), Poll::Ready(()));
}

#[test]
fn excluded_keys_are_skipped_and_empty_pool_says_so() {
    let (pool, _rx) = pool_with(2, PoolConfig::default());
    let first = pool.acquire("m", T0, &[]).unwrap();
    let tried = vec![first.entry.clone()];
    let second = pool.acquire("m", T0, &tried).unwrap();
    assert_ne!(first.entry.id, second.entry.id);
    let tried = vec![first.entry.clone(), second.entry.clone()];
    let no = pool.acquire("m", T0, &tried).err().unwrap();
    assert_eq!(
        no,
        NoKey {
            earliest_ms: None,
            busy: false
        }
    );
}

fn least_used_pool(keys: usize) -> (Pool, mpsc::UnboundedReceiver<Msg>) {
    let cfg = PoolConfig {
        strategy: Strategy::LeastUsed,
        ..PoolConfig::default()
    };
    pool_with(keys, cfg)
}

#[test]
fn least_used_prefers_the_idle_key() {
    let (pool, _rx) = least_used_pool(2);
    let a = pool.acquire("m", T0, &[]).unwrap();
    let b = pool.acquire("m", T0, &[]).unwrap();
    assert_ne!(a.entry.id, b.entry.id, "busy key avoided");
}

/// Beyond the 64-key window, least-used still takes an idle key while there is one
/// anywhere in the pool: 1,000 held leases on 1,000 keys are 1,000 different keys, and a
/// busy key is never chosen over an idle one.
#[test]
fn least_used_in_a_big_pool_takes_every_idle_key_before_doubling_up() {
    let (pool, _rx) = least_used_pool(1000);
    let leases: Vec<_> = (0..1000)
        .map(|_| pool.acquire("m", T0, &[]).unwrap())
        .collect();
    let ids: std::collections::HashSet<_> = leases.iter().map(|l| l.entry.id.clone()).collect();
    assert_eq!(ids.len(), 1000);
    drop(leases);
    // All idle again: the request counts now break the tie, so the next 1,000 picks are
    // again spread one per key.
    let again: std::collections::HashSet<_> = (0..1000)
        .map(|_| pool.acquire("m", T0, &[]).unwrap().entry.id.clone())
        .collect();
    assert_eq!(again.len(), 1000);
}

#[test]
fn adding_a_known_key_is_idempotent_and_changes_are_announced() {
    let (pool, mut rx) = pool_with(2, PoolConfig::default());
    let again = pool.add(&[(pool.entries()[0].key.clone(), None)], T0);
    assert!(again.is_empty());
    assert_eq!(pool.len(), 2);
    let mut announced = 0;
    while let Ok(Msg::Dirty(Dirty::Key(_))) = rx.try_recv() {
        announced += 1;
    }
    assert_eq!(announced, 2);
}

mod groups;
mod ledger;
mod projects;
