//! Two weeks of made-up traffic for the dashboard's screenshots, written straight into
//! the statistics buckets of a Redis store (the layout `store/redis_logs.rs` describes:
//! a hash `P:b:{bucket}` of counters per hour × user × key × model, indexed by the
//! sorted set `P:buckets`), so the charts show days of use rather than one request.
//! Each day rises in the working hours and falls at night, weekends are quieter, and
//! two hours of the last day have an upstream outage.

use crate::common::redis::RedisServer;

const PREFIX: &str = "gemini-balance";
const SEP: char = '\u{1f}';
const HOUR_MS: i64 = 3_600_000;
/// Upper bounds (ms) of the store's latency histogram slots `h0`…`h10`; `h11` is above.
const LATENCY_BOUNDS_MS: [f64; 11] = [
    50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 120000.0,
];

/// (model, share of the requests, prompt and answer tokens per request, mean latency ms)
const MODELS: [(&str, f64, u64, u64, f64); 3] = [
    ("gemini-2.5-flash", 0.6, 900, 320, 640.0),
    ("gemini-2.5-pro", 0.25, 2400, 700, 2300.0),
    ("gemini-2.5-flash-lite", 0.15, 400, 150, 310.0),
];

/// Writes the buckets of every whole hour of the `days` days before `now_ms` for
/// `user`, spread over `key_ids`.
pub fn seed(redis: &RedisServer, now_ms: i64, days: i64, user: &str, key_ids: &[String]) {
    let this_hour = now_ms - now_ms.rem_euclid(HOUR_MS);
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut noise = move || {
        // xorshift: the same traffic every run.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        0.85 + (rng % 1000) as f64 / 1000.0 * 0.3
    };
    let mut commands = Vec::new();
    for back in 1..=days * 24 {
        let hour_ms = this_hour - back * HOUR_MS;
        let hour_of_day = (hour_ms / HOUR_MS).rem_euclid(24) as f64;
        let weekday = ((hour_ms / HOUR_MS / 24) + 4).rem_euclid(7); // 0 = Sunday
        let busy = 0.2 + 0.8 * (-((hour_of_day - 14.0) / 4.5).powi(2)).exp();
        let week = if weekday == 0 || weekday == 6 {
            0.55
        } else {
            1.0
        };
        let outage = (20..=21).contains(&back);
        for (i, (model, share, prompt, answer, latency)) in MODELS.iter().enumerate() {
            let requests = (1400.0 * share * busy * week * noise()).round() as u64;
            if requests == 0 {
                continue;
            }
            let failed = if outage {
                requests / 4
            } else {
                (requests as f64 * 0.012 * noise()).round() as u64
            };
            let client = (requests as f64 * 0.004).round() as u64;
            let ok = requests - failed - client;
            let mean = latency * noise();
            let slot = LATENCY_BOUNDS_MS
                .iter()
                .position(|b| mean <= *b)
                .unwrap_or(LATENCY_BOUNDS_MS.len());
            let (p, a) = (ok * prompt, ok * answer);
            let key_id = &key_ids[(back as usize + i) % key_ids.len()];
            let bucket = format!("{hour_ms:016x}{SEP}{user}{SEP}{key_id}{SEP}{model}");
            let mut hset = vec![format!("{PREFIX}:b:{bucket}")];
            for (field, n) in [
                ("requests".to_owned(), requests),
                ("ok".to_owned(), ok),
                ("upstream_error".to_owned(), failed),
                ("client_error".to_owned(), client),
                ("prompt_tokens".to_owned(), p),
                ("candidates_tokens".to_owned(), a),
                ("total_tokens".to_owned(), p + a),
                (format!("h{slot}"), requests - requests / 4),
                (format!("h{}", (slot + 1).min(11)), requests / 4),
            ] {
                hset.extend([field, n.to_string()]);
            }
            hset.extend([
                "latency_ms_sum".to_owned(),
                format!("{:.1}", mean * requests as f64),
            ]);
            commands.push([vec!["HSET".to_owned()], hset].concat());
            commands.push(vec![
                "ZADD".to_owned(),
                format!("{PREFIX}:buckets"),
                "0".to_owned(),
                bucket,
            ]);
        }
    }
    redis.pipe(&commands);
}
