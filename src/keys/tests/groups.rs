//! Key groups through the pool: the first group serving a model is spent first, the next
//! only when every key of it is out; a group's models and limits; time passed in.

use super::*;
use crate::config::GroupConfig;
use crate::config::SetLimits;

fn group(name: &str, order: i32, models: &[&str], rpm: Option<u32>) -> GroupConfig {
    GroupConfig {
        name: name.into(),
        order,
        models: models.iter().map(|m| m.to_string()).collect(),
        limits: rpm
            .map(|rpm| {
                let l = SetLimits {
                    rpm: Some(rpm),
                    ..SetLimits::default()
                };
                [("*".to_owned(), l)].into()
            })
            .unwrap_or_default(),
    }
}

/// Four keys: 0 and 1 in `free`, 2 and 3 in `paid` (which serves gemini-* only).
fn grouped(free_rpm: Option<u32>) -> (Pool, mpsc::UnboundedReceiver<Msg>, Vec<Arc<KeyEntry>>) {
    let cfg = PoolConfig {
        groups: vec![
            group("paid", 1, &["gemini-*"], None),
            group("free", 0, &[], free_rpm),
        ],
        ..PoolConfig::default()
    };
    let (pool, rx) = pool_with(4, cfg);
    let e = pool.entries();
    for (i, k) in e.iter().enumerate() {
        let g = if i < 2 { "free" } else { "paid" };
        pool.set_group(k, Some(g.into()));
    }
    (pool, rx, e)
}

fn cool(pool: &Pool, e: &KeyEntry, model: &str, now: i64) {
    let outcome = Outcome::RateLimited {
        retry_after: Some(Duration::from_secs(60)),
        exhausted: Exhausted::Minute,
        reason: "q".into(),
        project: None,
        shared: false,
        limits: QuotaLimits::default(),
    };
    pool.report(e, model, &outcome, now);
}

#[test]
fn free_keys_serve_until_every_one_is_out_then_paid_ones() {
    let (pool, _rx, e) = grouped(None);
    let (free, paid) = (
        [e[0].id.clone(), e[1].id.clone()],
        [e[2].id.clone(), e[3].id.clone()],
    );
    assert_eq!(
        pool.groups(),
        [("free".to_owned(), 2), ("paid".to_owned(), 2)],
        "in their order"
    );
    for _ in 0..6 {
        assert!(free.contains(&pick(&pool, "gemini-x", T0).unwrap()));
    }
    cool(&pool, &e[0], "gemini-x", T0);
    for _ in 0..3 {
        assert_eq!(
            pick(&pool, "gemini-x", T0).unwrap(),
            free[1],
            "one free key left"
        );
    }
    cool(&pool, &e[1], "gemini-x", T0);
    for _ in 0..4 {
        assert!(
            paid.contains(&pick(&pool, "gemini-x", T0).unwrap()),
            "spilled over"
        );
    }
    // `paid` serves gemini-* only: for another model nothing is left but waiting.
    cool(&pool, &e[0], "other", T0);
    cool(&pool, &e[1], "other", T0);
    let no = pool
        .acquire("other", T0, &[])
        .err()
        .expect("no group serves it now");
    assert_eq!(no.earliest_ms, Some(T0 + 61_000));
    assert!(
        free.contains(&pick(&pool, "gemini-x", T0 + 61_000).unwrap()),
        "free again"
    );
}

#[test]
fn a_groups_limits_hold_for_each_of_its_keys() {
    let (pool, _rx, e) = grouped(Some(1));
    let picks: Vec<String> = (0..4)
        .map(|_| pick(&pool, "gemini-x", T0).unwrap())
        .collect();
    let mut sorted = picks.clone();
    sorted.sort();
    let mut all: Vec<String> = e.iter().map(|k| k.id.clone()).collect();
    all.sort();
    assert_eq!(sorted, all, "each key once, free ones first: {picks:?}");
    assert!(picks[..2].contains(&e[0].id) && picks[..2].contains(&e[1].id));
    let m = e[0].view(T0);
    assert_eq!(m.group, "free");
    assert_eq!(m.models[0].limit_per_minute, Some(1), "the group's limit");
    assert_eq!(e[2].view(T0).models.len(), 0, "paid keys have none");
    pool.set_group(&e[0], None);
    assert_eq!(e[0].group(), "default");
    assert_eq!(
        e[0].view(T0 + 1).models[0].limit_per_minute,
        None,
        "out of the group"
    );
    assert_eq!(e[0].record().group, None);
}
