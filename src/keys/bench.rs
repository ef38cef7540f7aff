//! A benchmark, not a test: how long choosing a key takes for pools of 10 to 10,000 keys
//! (acquire and release, one thread). Both strategies must stay flat: round-robin stops at
//! the first usable key, least-used compares a window of at most 64 keys.
//! Run: `cargo test --profile harness --bin gemini-balance selection_cost -- --ignored --nocapture`

use super::*;
use crate::config::{PoolConfig, Strategy};
use std::time::Instant;

fn pool(n: usize, strategy: Strategy) -> Pool {
    let (tx, _rx) = persist::channel();
    let cfg = PoolConfig {
        strategy,
        ..PoolConfig::default()
    };
    let pool = Pool::new(cfg, &Snapshot::default(), tx, crate::events::Hub::default());
    let keys: Vec<(Secret, Option<String>)> = (0..n)
        .map(|i| (Secret::new(format!("AIzaBenchKey-{i:06}-padding")), None))
        .collect();
    pool.add(&keys, 0);
    pool
}

fn ns_per_pick(pool: &Pool, rounds: usize) -> f64 {
    let now = unix_ms();
    let started = Instant::now();
    for _ in 0..rounds {
        let lease = pool.acquire("gemini-2.5-flash", now, &[]).expect("a key");
        std::hint::black_box(&lease);
    }
    started.elapsed().as_nanos() as f64 / rounds as f64
}

#[test]
#[ignore = "benchmark: run explicitly"]
fn selection_cost_by_pool_size() {
    println!("| keys | round-robin ns/pick | least-used ns/pick |");
    println!("|---:|---:|---:|");
    for n in [10, 100, 1_000, 10_000] {
        let rr = pool(n, Strategy::RoundRobin);
        let lu = pool(n, Strategy::LeastUsed);
        ns_per_pick(&rr, 10_000); // warm-up
        let rr_ns = ns_per_pick(&rr, 1_000_000);
        let lu_ns = ns_per_pick(&lu, (2_000_000 / n).clamp(200, 100_000));
        println!("| {n} | {rr_ns:.0} | {lu_ns:.0} |");
    }
}
