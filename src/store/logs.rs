//! The statistics buckets the request log feeds, with the arithmetic of adding a record
//! to a bucket; the log's filters; and the keys both are stored under. Building records
//! belongs to `logs`, reading buckets to `stats`.

use super::packed::{LogHead, PackedRecord};
use crate::record::{LogOutcome, LogRecord};
use crate::usage::Tokens;
use serde::{Deserialize, Serialize};

pub const HOUR_MS: i64 = 3_600_000;

/// Upper bounds (ms) of the latency histogram's buckets; the last is everything above.
pub const LATENCY_BOUNDS_MS: [f64; 11] = [
    50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 120000.0,
];

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BucketKey {
    pub hour_ms: i64,
    pub user: String,
    pub key_id: String,
    pub model: String,
}

impl BucketKey {
    #[cfg(test)]
    pub fn of(rec: &LogRecord) -> Self {
        Self {
            hour_ms: rec.time.div_euclid(HOUR_MS) * HOUR_MS,
            user: rec.user.clone().unwrap_or_default(),
            key_id: rec.key_id.clone().unwrap_or_default(),
            model: rec.model.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub requests: u64,
    pub ok: u64,
    pub client_error: u64,
    pub upstream_error: u64,
    pub no_key: u64,
    pub truncated: u64,
    pub cancelled: u64,
    pub prompt_tokens: u64,
    pub candidates_tokens: u64,
    pub thoughts_tokens: u64,
    pub cached_tokens: u64,
    pub total_tokens: u64,
    pub latency_ms_sum: f64,
    pub latency_hist: [u64; 12],
}

impl Bucket {
    #[cfg(test)]
    pub fn add(&mut self, rec: &LogRecord) {
        self.count(rec.outcome, &rec.tokens, rec.latency_ms);
    }

    pub fn count(&mut self, outcome: LogOutcome, tokens: &Tokens, latency_ms: f64) {
        self.requests += 1;
        match outcome {
            LogOutcome::Ok => self.ok += 1,
            LogOutcome::ClientError => self.client_error += 1,
            LogOutcome::UpstreamError => self.upstream_error += 1,
            LogOutcome::NoKey => self.no_key += 1,
            LogOutcome::Truncated => self.truncated += 1,
            LogOutcome::Cancelled => self.cancelled += 1,
        }
        self.prompt_tokens += tokens.prompt;
        self.candidates_tokens += tokens.candidates;
        self.thoughts_tokens += tokens.thoughts;
        self.cached_tokens += tokens.cached;
        self.total_tokens += tokens.total;
        self.latency_ms_sum += latency_ms;
        let slot = LATENCY_BOUNDS_MS
            .iter()
            .position(|b| latency_ms <= *b)
            .unwrap_or(LATENCY_BOUNDS_MS.len());
        self.latency_hist[slot] += 1;
    }

    pub fn merge(&mut self, o: &Bucket) {
        self.requests += o.requests;
        self.ok += o.ok;
        self.client_error += o.client_error;
        self.upstream_error += o.upstream_error;
        self.no_key += o.no_key;
        self.truncated += o.truncated;
        self.cancelled += o.cancelled;
        self.prompt_tokens += o.prompt_tokens;
        self.candidates_tokens += o.candidates_tokens;
        self.thoughts_tokens += o.thoughts_tokens;
        self.cached_tokens += o.cached_tokens;
        self.total_tokens += o.total_tokens;
        self.latency_ms_sum += o.latency_ms_sum;
        for (a, b) in self.latency_hist.iter_mut().zip(o.latency_hist) {
            *a += b;
        }
    }

    /// Share of the requests the gateway answered for that succeeded: client errors and
    /// cancellations are the client's doing and count neither way. `None` without data.
    pub fn success_rate(&self) -> Option<f64> {
        let judged = self.ok + self.upstream_error + self.no_key + self.truncated;
        (judged > 0).then(|| self.ok as f64 * 100.0 / judged as f64)
    }

    pub fn mean_latency(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.latency_ms_sum / self.requests as f64)
    }
}

/// Filters and paging for reading the log, newest first.
#[derive(Debug, Default, Clone)]
pub struct LogQuery {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub user: Option<String>,
    pub key_id: Option<String>,
    pub model: Option<String>,
    pub outcome: Option<LogOutcome>,
    pub status: Option<u16>,
    pub stream: Option<bool>,
    pub limit: usize,
    /// Continue after this position (from a previous page's `next_cursor`).
    pub cursor: Option<String>,
}

impl LogQuery {
    pub fn matches(&self, r: &LogRecord) -> bool {
        self.from.is_none_or(|f| r.time >= f)
            && self.to.is_none_or(|t| r.time < t)
            && self
                .user
                .as_ref()
                .is_none_or(|u| r.user.as_ref() == Some(u))
            && self
                .key_id
                .as_ref()
                .is_none_or(|k| r.key_id.as_ref() == Some(k))
            && self.model.as_ref().is_none_or(|m| &r.model == m)
            && self.outcome.is_none_or(|o| r.outcome == o)
            && self.status.is_none_or(|s| r.status == s)
            && self.stream.is_none_or(|s| r.stream == s)
    }
}

impl Bucket {
    /// A compact fixed-size encoding: 24 counters then the latency sum, little-endian.
    /// Statistics queries decode thousands of buckets, so this matters.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(25 * 8);
        for n in self.counters() {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&self.latency_ms_sum.to_le_bytes());
        out
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != 25 * 8 {
            return None;
        }
        let word = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let mut hist = [0u64; 12];
        for (i, h) in hist.iter_mut().enumerate() {
            *h = word(12 + i);
        }
        Some(Self {
            requests: word(0),
            ok: word(1),
            client_error: word(2),
            upstream_error: word(3),
            no_key: word(4),
            truncated: word(5),
            cancelled: word(6),
            prompt_tokens: word(7),
            candidates_tokens: word(8),
            thoughts_tokens: word(9),
            cached_tokens: word(10),
            total_tokens: word(11),
            latency_hist: hist,
            latency_ms_sum: f64::from_bits(word(24)),
        })
    }

    fn counters(&self) -> [u64; 24] {
        let mut c = [0u64; 24];
        c[..12].copy_from_slice(&[
            self.requests,
            self.ok,
            self.client_error,
            self.upstream_error,
            self.no_key,
            self.truncated,
            self.cancelled,
            self.prompt_tokens,
            self.candidates_tokens,
            self.thoughts_tokens,
            self.cached_tokens,
            self.total_tokens,
        ]);
        c[12..].copy_from_slice(&self.latency_hist);
        c
    }
}

/// The bucket updates a batch of records makes.
pub fn buckets_of(heads: &[(PackedRecord<'_>, LogHead<'_>)]) -> Vec<(BucketKey, Bucket)> {
    // Grouped on borrowed names: owned keys are made once per bucket, not per record.
    type Borrowed<'a> = (i64, &'a str, &'a str, &'a str);
    let mut deltas: std::collections::BTreeMap<Borrowed<'_>, Bucket> = Default::default();
    for (_, h) in heads {
        let key = (
            h.time.div_euclid(HOUR_MS) * HOUR_MS,
            h.user.unwrap_or_default(),
            h.key_id.unwrap_or_default(),
            h.model,
        );
        deltas
            .entry(key)
            .or_default()
            .count(h.outcome, &h.tokens, h.latency_ms);
    }
    deltas
        .into_iter()
        .map(|((hour_ms, user, key_id, model), b)| {
            let key = BucketKey {
                hour_ms,
                user: user.to_owned(),
                key_id: key_id.to_owned(),
                model: model.to_owned(),
            };
            (key, b)
        })
        .collect()
}

/// A bucket's key in a store: the hour (hex, so keys sort by time), user, key id, model.
pub fn stats_key(k: &BucketKey) -> String {
    let sep = super::SEP;
    format!(
        "{:016x}{sep}{}{sep}{}{sep}{}",
        k.hour_ms.max(0),
        k.user,
        k.key_id,
        k.model
    )
}

pub fn parse_stats_key(s: &str) -> Option<BucketKey> {
    let mut parts = s.split(super::SEP);
    Some(BucketKey {
        hour_ms: i64::from_str_radix(parts.next()?, 16).ok()?,
        user: parts.next()?.to_owned(),
        key_id: parts.next()?.to_owned(),
        model: parts.next()?.to_owned(),
    })
}

/// A new request id: the arrival time (Unix ms, 12 hex digits) then 48 random bits. The
/// time in front lets the log find a record from its id alone and keeps inserts in time
/// order.
pub fn new_request_id(time: i64) -> String {
    const LOW_48: u64 = (1 << 48) - 1;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 24];
    let halves = [time.max(0) as u64 & LOW_48, rand::random::<u64>() & LOW_48];
    for (out, half) in id.chunks_exact_mut(12).zip(halves) {
        for (i, b) in out.iter_mut().enumerate() {
            *b = HEX[(half >> (44 - 4 * i) & 0xf) as usize];
        }
    }
    String::from_utf8(id.to_vec()).expect("hex digits are ASCII")
}

/// The arrival time a request id made by [`new_request_id`] starts with. Ids of other
/// shapes (imported logs) have none and are found through an index.
pub fn time_in_request_id(id: &str) -> Option<i64> {
    if id.len() != 24 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    i64::from_str_radix(&id[..12], 16).ok()
}

/// The log's sort key: time, then request id, so ranges are time ranges.
pub fn log_key(time: i64, request_id: &str) -> String {
    let mut key = String::with_capacity(16 + request_id.len());
    push_log_key(&mut key, time, request_id);
    key
}

/// [`log_key`] into a buffer the caller reuses.
pub fn push_log_key(out: &mut String, time: i64, request_id: &str) {
    use std::fmt::Write;
    write!(out, "{:016x}{request_id}", time.max(0)).expect("writing to a String");
}
