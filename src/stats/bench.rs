//! A benchmark, not a test: fills a redb store with 1,000,000 synthetic request records
//! and prints how long a 30-day time series and a summary take and how big the file is.
//! Run: `cargo test --release --bin gemini-balance stats_million -- --ignored --nocapture`
//! (set STATS_BENCH_RECORDS for another count).

use super::*;
use crate::record::{LogOutcome, LogRecord};
use crate::store::Store;
use crate::usage::Tokens;
use std::time::Instant;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run explicitly"]
async fn stats_million_records() {
    let n: usize = std::env::var("STATS_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_redb(dir.path()).await.unwrap();
    let now = crate::keys::unix_ms();
    let span = 30 * 24 * HOUR_MS;
    let models = ["gemini-2.5-flash", "gemini-2.5-pro", "text-embedding-004"];
    let started = Instant::now();
    for batch in 0..n.div_ceil(2000) {
        let records: Vec<LogRecord> = (0..2000.min(n - batch * 2000))
            .map(|i| {
                let k = batch * 2000 + i;
                LogRecord {
                    request_id: format!("{k:016x}"),
                    time: now - span + (k as i64 * span / n as i64),
                    user: Some(format!("user{}", k % 5)),
                    route: "generateContent".into(),
                    model: models[k % 3].into(),
                    stream: k % 2 == 0,
                    status: 200,
                    outcome: if k % 50 == 0 {
                        LogOutcome::UpstreamError
                    } else {
                        LogOutcome::Ok
                    },
                    latency_ms: (k % 900) as f64 + 50.0,
                    ttfb_ms: None,
                    tokens: Tokens {
                        prompt: 10,
                        candidates: 20,
                        thoughts: 0,
                        cached: 0,
                        total: 30,
                    },
                    key_id: Some(format!("key{:02}", k % 20)),
                    key: None,
                    attempts: 1,
                    attempt_chain: Vec::new(),
                    resource: None,
                    bytes_up: 0,
                    bytes_down: 0,
                    close_code: None,
                    group: None,
                }
            })
            .collect();
        store
            .append_logs(crate::store::pack_all(&records))
            .await
            .unwrap();
    }
    let fill = started.elapsed();
    let tz = jiff::tz::TimeZone::get("America/New_York").unwrap();
    let t = Instant::now();
    let buckets = store
        .stats_range(now - span - HOUR_MS, now + HOUR_MS)
        .await
        .unwrap();
    let series = timeseries(
        &buckets,
        Metric::Requests,
        Period::Day,
        &tz,
        now - span,
        now + 1,
        Some(GroupBy::Model),
    );
    let timeseries_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let day = store
        .stats_range(now - 25 * HOUR_MS, now + HOUR_MS)
        .await
        .unwrap();
    let summary = total(&day, now - 24 * HOUR_MS, i64::MAX);
    let summary_ms = t.elapsed().as_secs_f64() * 1000.0;
    let counted: f64 = series
        .iter()
        .flat_map(|s| &s.points)
        .filter_map(|p| p.value)
        .sum();
    let size = std::fs::metadata(dir.path().join("gemini-balance.redb"))
        .unwrap()
        .len();
    println!("records                 {n}");
    println!("fill                    {:.1} s", fill.as_secs_f64());
    println!("buckets (30 days)       {}", buckets.len());
    println!(
        "30-day daily timeseries {timeseries_ms:.1} ms (by model, America/New_York; {counted} requests)"
    );
    println!(
        "summary (last 24 h)     {summary_ms:.1} ms ({} requests)",
        summary.requests
    );
    println!("store file              {:.1} MiB", size as f64 / 1048576.0);
}
