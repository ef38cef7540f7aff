//! The quota ledger through the pool: limits learned from 429s (requests and input
//! tokens) keep a (key, model) out until the ledger has room; time is passed in.

use super::*;

#[test]
fn a_learned_limit_keeps_the_key_out_until_the_ledger_has_room() {
    let (pool, _rx) = pool_with(1, PoolConfig::default());
    let e = pool.entries()[0].clone();
    let hit = Outcome::RateLimited {
        retry_after: Some(Duration::ZERO),
        exhausted: Exhausted::Minute,
        reason: "GenerateRequestsPerMinutePerProjectPerModel-FreeTier".into(),
        project: None,
        shared: true,
        limits: QuotaLimits {
            per_minute: Some(2),
            ..QuotaLimits::default()
        },
    };
    pool.report(&e, "m", &hit, T0);
    let t = T0 + 5_000; // the cool-down (0 s + margin) is over
    assert!(pick(&pool, "m", t).is_ok());
    pool.report(&e, "m", &Outcome::Success, t);
    assert!(pick(&pool, "m", t + 1).is_ok());
    let no = pool.acquire("m", t + 2, &[]).err().expect("at the limit");
    assert_eq!(
        no.earliest_ms,
        Some(t + 60_000),
        "back when the first is a minute old"
    );
    assert!(
        pick(&pool, "other", t + 2).is_ok(),
        "other models unaffected"
    );
    assert!(pick(&pool, "m", t + 60_000).is_ok());
    assert_eq!(
        e.model_state("m").map(|m| m.limits.per_minute),
        Some(Some(2)),
        "a success keeps the limit"
    );
}

/// A 429 for input tokens per minute, its limit revealed (as Google sends it).
fn tokens_429(limit: u64) -> Outcome {
    classify::classify(
        429,
        format!(
            r#"{{"error":{{"code":429,"status":"RESOURCE_EXHAUSTED","message":"quota","details":[
              {{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[
                {{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_input_token_count",
                  "quotaId":"GenerateContentInputTokensPerModelPerMinute-FreeTier",
                  "quotaDimensions":{{"location":"global","model":"m"}},"quotaValue":"{limit}"}}]}},
              {{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"0s"}}]}}}}"#
        )
        .as_bytes(),
    )
}

#[test]
fn a_learned_token_limit_skips_the_key_once_the_prompts_reach_it() {
    let (pool, _rx) = pool_with(1, PoolConfig::default());
    let e = pool.entries()[0].clone();
    pool.report(&e, "m", &tokens_429(1000), T0);
    assert_eq!(
        e.model_state("m").map(|m| m.limits.tokens_per_minute),
        Some(Some(1000))
    );
    let t = T0 + 5_000;
    let lease = pool.acquire("m", t, &[]).expect("cool-down over");
    pool.count_tokens(&lease.entry, "m", 600, t + 1);
    assert!(pick(&pool, "m", t + 2).is_ok(), "600 of 1000");
    pool.count_tokens(&e, "m", 500, t + 3);
    let no = pool.acquire("m", t + 4, &[]).err().expect("1100 of 1000");
    assert_eq!(no.earliest_ms, Some(t + 1 + 60_000), "the 600 age out");
    assert!(
        pick(&pool, "other", t + 4).is_ok(),
        "other models unaffected"
    );
    let v = e.view(t + 4);
    let m = v.models.iter().find(|m| m.model == "m").unwrap();
    assert_eq!(
        (m.limit_tokens_per_minute, m.tokens_last_minute),
        (Some(1000), 1100)
    );
    assert!(pick(&pool, "m", t + 1 + 60_000).is_ok());
}

#[test]
fn a_set_limit_and_a_learned_one_hold_at_the_smaller() {
    use crate::config::SetLimits;
    let (pool, _rx) = pool_with(1, PoolConfig::default());
    let e = pool.entries()[0].clone();
    let set = |rpm| SetLimits {
        rpm: Some(rpm),
        ..SetLimits::default()
    };
    pool.set_limits(&e, [("gemini-*".to_owned(), set(3))].into());
    assert!(!e.is_plain(), "a key with limits takes the careful path");
    let limits = |model: &str| e.lock().limits_for(model);
    assert_eq!(limits("gemini-2.5-pro").per_minute, Some(3));
    assert!(limits("other").is_empty(), "the glob does not match");
    let mut learned = ModelState::default();
    learned.limits.per_minute = Some(2);
    learned.limits.per_day = Some(50);
    e.lock().models.insert("gemini-2.5-pro".into(), learned);
    let l = limits("gemini-2.5-pro");
    assert_eq!(
        (l.per_minute, l.per_day),
        (Some(2), Some(50)),
        "Google's is smaller"
    );
    pool.set_limits(
        &e,
        [
            ("gemini-*".to_owned(), set(3)),
            ("gemini-2.5-pro".to_owned(), set(1)),
        ]
        .into(),
    );
    assert_eq!(
        limits("gemini-2.5-pro").per_minute,
        Some(1),
        "the admin's is smaller"
    );
    assert!(pick(&pool, "gemini-2.5-pro", T0).is_ok());
    assert!(pick(&pool, "gemini-2.5-pro", T0 + 1).is_err(), "1 a minute");
    assert_eq!(e.record().limits.len(), 2, "kept in the record");
}

#[test]
fn saved_counts_come_back_with_the_pool_and_hold_at_once() {
    use crate::config::SetLimits;
    use crate::store::KeyRecord;
    let (pool, _rx) = pool_with(1, PoolConfig::default());
    let e = pool.entries()[0].clone();
    let limit = SetLimits {
        rpm: Some(2),
        ..SetLimits::default()
    };
    pool.set_limits(&e, [("m".to_owned(), limit)].into());
    assert!(pick(&pool, "m", T0).is_ok());
    assert!(pick(&pool, "m", T0 + 1).is_ok());
    let saved = e.take_ledger(T0 + 2);
    assert!(
        e.take_ledger(T0 + 2).is_empty(),
        "saved once until the next change"
    );
    let [(model, Some(usage))] = saved.as_slice() else {
        panic!("one model's counts: {saved:?}");
    };
    assert_eq!(
        (model.as_str(), usage.today, usage.minute.len()),
        ("m", 2, 2)
    );

    // A new pool (a restart) from the store's snapshot: still full this minute.
    let rec: KeyRecord = e.record();
    let snapshot = Snapshot {
        keys: vec![rec],
        usage: vec![(e.id.clone(), "m".into(), usage.clone())],
        ..Snapshot::default()
    };
    let (tx, _rx2) = persist::channel();
    let again = Pool::new(
        PoolConfig::default(),
        &snapshot,
        tx,
        crate::events::Hub::default(),
    );
    let no = again
        .acquire("m", T0 + 3, &[])
        .err()
        .expect("the saved counts hold");
    assert_eq!(no.earliest_ms, Some(T0 + 60_000));

    // Once the day is over the counts are spent: the next save deletes them.
    let e2 = again.entries()[0].clone();
    let next_day = crate::keys::next_pacific_midnight(T0) + 1;
    e2.ledger_dirty
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let saved = e2.take_ledger(next_day);
    assert_eq!(saved, vec![("m".to_owned(), None)], "deleted");
    assert!(e2.lock().usage.is_empty(), "and dropped from memory");
}
