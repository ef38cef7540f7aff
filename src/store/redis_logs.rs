//! The request log and statistics buckets in Redis: the log as a lexicographically sorted
//! set `P:logs` (time-ordered members) plus `P:log` (id → JSON); statistics as one hash
//! per bucket `P:b:{bucket}` updated with HINCRBY (instances add up) and indexed by
//! `P:buckets`.

use super::StoreError;
use super::logs::{Bucket, BucketKey, LogQuery, log_key, parse_stats_key, stats_key};
use super::packed::PackedLogs;
use super::redis::{RedisStore, cmd, decode, err, json};
use crate::record::LogRecord;
use fred::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

const SCAN_PAGE: i64 = 500;
const SCAN_LIMIT: usize = 100_000;
const PRUNE_CHUNK: i64 = 2_000;

impl RedisStore {
    /// Appends records and adds them to their buckets (HINCRBY: instances add up).
    pub async fn append_logs(&self, records: Arc<[PackedLogs]>) -> Result<(), StoreError> {
        let buckets = super::logs::buckets_of(&super::packed::heads(&records));
        self.import(records, buckets).await
    }

    /// Copies records and buckets in as they are (for `migrate`).
    pub async fn import(
        &self,
        records: Arc<[PackedLogs]>,
        buckets: Vec<(BucketKey, Bucket)>,
    ) -> Result<(), StoreError> {
        let pipe = self.client.pipeline();
        // Redis keeps records as JSON (readable with redis-cli).
        for rec in records
            .iter()
            .flat_map(PackedLogs::records)
            .filter_map(|r| r.unpack())
        {
            let member = log_key(rec.time, &rec.request_id);
            let _: () = pipe
                .zadd(self.k("logs"), None, None, false, false, (0.0, member))
                .await
                .map_err(err)?;
            let _: () = pipe
                .hset(self.k("log"), (rec.request_id.as_str(), json(&rec)))
                .await
                .map_err(err)?;
        }
        for (k, b) in &buckets {
            let sk = stats_key(k);
            let hash = self.k(&format!("b:{sk}"));
            for (field, n) in bucket_fields(b) {
                if n > 0 {
                    let _: () = pipe.hincrby(&hash, field, n as i64).await.map_err(err)?;
                }
            }
            let _: () = pipe
                .hincrbyfloat(&hash, "latency_ms_sum", b.latency_ms_sum)
                .await
                .map_err(err)?;
            let _: () = pipe
                .zadd(self.k("buckets"), None, None, false, false, (0.0, sk))
                .await
                .map_err(err)?;
        }
        let _: Vec<Value> = pipe.all().await.map_err(err)?;
        Ok(())
    }

    pub async fn query_logs(
        &self,
        q: LogQuery,
    ) -> Result<(Vec<LogRecord>, Option<String>), StoreError> {
        let mut high = match (&q.cursor, q.to) {
            (Some(c), _) => format!("({c}"),
            (None, Some(t)) => format!("({}", log_key(t, "")),
            (None, None) => "+".to_owned(),
        };
        let low = q
            .from
            .map_or_else(|| "-".to_owned(), |f| format!("[{}", log_key(f, "")));
        let mut out = Vec::new();
        let mut scanned = 0;
        let mut last = None;
        loop {
            let members: Vec<String> = self
                .client
                .custom(
                    cmd("ZREVRANGEBYLEX"),
                    vec![
                        self.k("logs"),
                        high.clone(),
                        low.clone(),
                        "LIMIT".into(),
                        "0".into(),
                        SCAN_PAGE.to_string(),
                    ],
                )
                .await
                .map_err(err)?;
            if members.is_empty() {
                return Ok((out, None));
            }
            let ids: Vec<&str> = members.iter().map(|m| &m[16.min(m.len())..]).collect();
            let values: Vec<Option<String>> =
                self.client.hmget(self.k("log"), ids).await.map_err(err)?;
            for (m, v) in members.iter().zip(values) {
                scanned += 1;
                last = Some(m.clone());
                let Some(v) = v else { continue };
                let rec: LogRecord = decode(m, v.as_bytes())?;
                if q.matches(&rec) {
                    out.push(rec);
                    if out.len() >= q.limit {
                        return Ok((out, last));
                    }
                }
            }
            if scanned >= SCAN_LIMIT {
                return Ok((out, last));
            }
            high = format!("({}", members.last().expect("non-empty"));
        }
    }

    pub async fn get_log(&self, request_id: &str) -> Result<Option<LogRecord>, StoreError> {
        let v: Option<String> = self
            .client
            .hget(self.k("log"), request_id)
            .await
            .map_err(err)?;
        v.map(|v| decode(request_id, v.as_bytes())).transpose()
    }

    pub async fn stats_range(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<(BucketKey, Bucket)>, StoreError> {
        let low = format!("[{:016x}", from.max(0));
        let high = format!("({:016x}", to.max(0));
        let keys: Vec<String> = self
            .client
            .custom(cmd("ZRANGEBYLEX"), vec![self.k("buckets"), low, high])
            .await
            .map_err(err)?;
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let pipe = self.client.pipeline();
            for sk in chunk {
                let _: () = pipe
                    .hgetall(self.k(&format!("b:{sk}")))
                    .await
                    .map_err(err)?;
            }
            let hashes: Vec<HashMap<String, String>> = pipe.all().await.map_err(err)?;
            for (sk, h) in chunk.iter().zip(hashes) {
                if let Some(key) = parse_stats_key(sk) {
                    out.push((key, bucket_from(&h)));
                }
            }
        }
        Ok(out)
    }

    /// The first [`PRUNE_CHUNK`] members of the sorted set `name` that sort before `high`.
    async fn members_below(&self, name: &str, high: &str) -> Result<Vec<String>, StoreError> {
        let args = vec![
            self.k(name),
            "-".into(),
            format!("({high}"),
            "LIMIT".into(),
            "0".into(),
            PRUNE_CHUNK.to_string(),
        ];
        self.client
            .custom(cmd("ZRANGEBYLEX"), args)
            .await
            .map_err(err)
    }

    pub async fn prune(
        &self,
        logs_before: i64,
        stats_before: i64,
    ) -> Result<(u64, u64), StoreError> {
        let mut removed = (0u64, 0u64);
        loop {
            let old = self
                .members_below("logs", &log_key(logs_before, ""))
                .await?;
            if old.is_empty() {
                break;
            }
            let ids: Vec<&str> = old.iter().map(|m| &m[16.min(m.len())..]).collect();
            let _: () = self.client.hdel(self.k("log"), ids).await.map_err(err)?;
            let _: () = self
                .client
                .zrem(self.k("logs"), old.clone())
                .await
                .map_err(err)?;
            removed.0 += old.len() as u64;
        }
        loop {
            let high = format!("{:016x}", stats_before.max(0));
            let old = self.members_below("buckets", &high).await?;
            if old.is_empty() {
                break;
            }
            let hashes: Vec<String> = old.iter().map(|sk| self.k(&format!("b:{sk}"))).collect();
            let _: () = self.client.del(hashes).await.map_err(err)?;
            let _: () = self
                .client
                .zrem(self.k("buckets"), old.clone())
                .await
                .map_err(err)?;
            removed.1 += old.len() as u64;
        }
        Ok(removed)
    }
}

const HIST_FIELDS: [&str; 12] = [
    "h0", "h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8", "h9", "h10", "h11",
];

fn bucket_fields(b: &Bucket) -> Vec<(&'static str, u64)> {
    let mut v = vec![
        ("requests", b.requests),
        ("ok", b.ok),
        ("client_error", b.client_error),
        ("upstream_error", b.upstream_error),
        ("no_key", b.no_key),
        ("truncated", b.truncated),
        ("cancelled", b.cancelled),
        ("prompt_tokens", b.prompt_tokens),
        ("candidates_tokens", b.candidates_tokens),
        ("thoughts_tokens", b.thoughts_tokens),
        ("cached_tokens", b.cached_tokens),
        ("total_tokens", b.total_tokens),
    ];
    v.extend(HIST_FIELDS.iter().zip(b.latency_hist).map(|(f, n)| (*f, n)));
    v
}

fn bucket_from(h: &HashMap<String, String>) -> Bucket {
    let n = |f: &str| h.get(f).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let mut b = Bucket {
        requests: n("requests"),
        ok: n("ok"),
        client_error: n("client_error"),
        upstream_error: n("upstream_error"),
        no_key: n("no_key"),
        truncated: n("truncated"),
        cancelled: n("cancelled"),
        prompt_tokens: n("prompt_tokens"),
        candidates_tokens: n("candidates_tokens"),
        thoughts_tokens: n("thoughts_tokens"),
        cached_tokens: n("cached_tokens"),
        total_tokens: n("total_tokens"),
        latency_ms_sum: h
            .get("latency_ms_sum")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        latency_hist: [0; 12],
    };
    for (slot, f) in b.latency_hist.iter_mut().zip(HIST_FIELDS) {
        *slot = n(f);
    }
    b
}
