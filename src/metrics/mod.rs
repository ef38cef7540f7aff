//! Prometheus metrics for this instance, in the text exposition format: requests by
//! route / model / outcome, latency and time-to-first-byte histograms, tokens, retries,
//! keys by state and key events (cool-downs, retirements). Counters are fed by finished
//! log records and by the live-feed hub; nothing here touches the store.
//!
//! Model names come from clients, so at most [`MAX_MODELS`] distinct ones get their own
//! label; the rest are counted as `other`. Requests refused before a user key was
//! accepted are not logged; they are counted here by [`Rejected`] reason alone.

use crate::record::{LogOutcome, RecordRef};
use crate::store::LATENCY_BOUNDS_MS;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

mod render;

pub use render::tls_expiry;

const MAX_MODELS: usize = 64;

/// Counters are kept per serving thread (a shard each, chosen by the lane the caller
/// names) so that counting a request takes no lock another thread takes too; the
/// exposition adds the shards up. Model labels are numbered once for all shards.
#[derive(Default)]
pub struct Metrics {
    shards: [Shard; SHARDS],
    labels: Mutex<Labels>,
    log_dropped: AtomicU64,
    rejected: [AtomicU64; Rejected::ALL.len()],
}

/// Why a proxy request was refused before any user was known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    MissingKey,
    UnknownKey,
    UserDisabled,
    UserExpired,
    /// An upload byte request naming no live upload session.
    UnknownUpload,
}

impl Rejected {
    const ALL: [Rejected; 5] = [
        Self::MissingKey,
        Self::UnknownKey,
        Self::UserDisabled,
        Self::UserExpired,
        Self::UnknownUpload,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::MissingKey => "missing_key",
            Self::UnknownKey => "unknown_key",
            Self::UserDisabled => "user_disabled",
            Self::UserExpired => "user_expired",
            Self::UnknownUpload => "unknown_upload",
        }
    }
}

/// Shards; serving thread `n` counts in shard `n % SHARDS`, threads that serve no lane in
/// the last.
const SHARDS: usize = 4;

/// One shard, on cache lines of its own.
#[derive(Default)]
#[repr(align(128))]
struct Shard(Mutex<Counts>);

#[derive(Default)]
struct Labels {
    /// Model name → its label's number (at most [`MAX_MODELS`] names).
    numbers: HashMap<String, usize>,
    names: Vec<String>,
    /// The number of `other`, once a model beyond the limit came.
    other: Option<usize>,
}

impl Labels {
    fn number(&mut self, model: &str) -> usize {
        if let Some(&n) = self.numbers.get(model) {
            return n;
        }
        if self.numbers.len() < MAX_MODELS {
            self.names.push(model.to_owned());
            self.numbers.insert(model.to_owned(), self.names.len() - 1);
            return self.names.len() - 1;
        }
        *self.other.get_or_insert_with(|| {
            self.names.push("other".to_owned());
            self.names.len() - 1
        })
    }
}

#[derive(Default)]
struct Counts {
    /// This shard's copy of the label numbers it has seen (bounded like the labels).
    numbers: HashMap<String, usize>,
    /// Counters per label number, in arrays indexed by route and outcome: counting a
    /// request is a look-up and a few additions.
    slots: Vec<ModelCounts>,
    latency: [Histogram; N_ROUTES],
    ttfb: [Histogram; N_ROUTES],
    retries: u64,
}

#[derive(Clone, Default)]
struct ModelCounts {
    requests: [[u64; OUTCOMES.len()]; N_ROUTES],
    tokens: [u64; TOKEN_KINDS.len()],
}

impl ModelCounts {
    fn add(&mut self, other: &ModelCounts) {
        for (mine, theirs) in self.requests.iter_mut().zip(&other.requests) {
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a += b;
            }
        }
        for (a, b) in self.tokens.iter_mut().zip(&other.tokens) {
            *a += b;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Outcomes in `LogOutcome`'s order (a counter's index is the outcome's).
const OUTCOMES: [LogOutcome; 6] = [
    LogOutcome::Ok,
    LogOutcome::ClientError,
    LogOutcome::UpstreamError,
    LogOutcome::NoKey,
    LogOutcome::Truncated,
    LogOutcome::Cancelled,
];

const TOKEN_KINDS: [&str; 5] = ["prompt", "candidates", "thoughts", "cached", "total"];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; 12],
    sum_ms: f64,
    count: u64,
}

impl Histogram {
    fn add(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_ms += other.sum_ms;
        self.count += other.count;
    }

    fn observe(&mut self, ms: f64) {
        let slot = LATENCY_BOUNDS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(LATENCY_BOUNDS_MS.len());
        self.counts[slot] += 1;
        self.sum_ms += ms;
        self.count += 1;
    }
}

/// Route names are a closed set; anything else is folded into `other` (the last index).
/// At most 31 names: arrays of up to 32 rows have `Default`.
const ROUTES: [&str; 31] = [
    "generateContent",
    "streamGenerateContent",
    "countTokens",
    "embedContent",
    "batchEmbedContents",
    "models.list",
    "models.get",
    "chat.completions",
    "embeddings",
    "images.generations",
    "openai.models",
    "files.upload",
    "files.list",
    "files.get",
    "files.download",
    "files.delete",
    "cachedContents.create",
    "cachedContents.get",
    "cachedContents.list",
    "cachedContents.patch",
    "cachedContents.delete",
    "batches.create",
    "batches.get",
    "batches.list",
    "batches.cancel",
    "models.predictLongRunning",
    "operations.get",
    "interactions.create",
    "interactions.get",
    "interactions.delete",
    "fileSearchStores.method",
];
const N_ROUTES: usize = ROUTES.len() + 1;

fn route_index(route: &str) -> usize {
    ROUTES
        .iter()
        .position(|r| *r == route)
        .unwrap_or(ROUTES.len())
}

fn route_name(index: usize) -> &'static str {
    ROUTES.get(index).copied().unwrap_or("other")
}

impl Metrics {
    /// Counts a finished request in serving thread `lane`'s shard (`None`: no lane).
    pub fn observe(&self, rec: &RecordRef<'_>, lane: Option<usize>) {
        let route = route_index(rec.route);
        let shard = lane.map_or(SHARDS - 1, |n| n % SHARDS);
        let mut c = lock(&self.shards[shard].0);
        let slot = match c.numbers.get(rec.model) {
            Some(&n) => n,
            None => {
                let n = lock(&self.labels).number(rec.model);
                if c.numbers.len() < 2 * MAX_MODELS {
                    c.numbers.insert(rec.model.to_owned(), n);
                }
                n
            }
        };
        if c.slots.len() <= slot {
            c.slots.resize_with(slot + 1, ModelCounts::default);
        }
        let t = &rec.tokens;
        let counts = &mut c.slots[slot];
        counts.requests[route][rec.outcome as usize] += 1;
        for (sum, n) in
            counts
                .tokens
                .iter_mut()
                .zip([t.prompt, t.candidates, t.thoughts, t.cached, t.total])
        {
            *sum += n;
        }
        c.latency[route].observe(rec.latency_ms);
        if let Some(t) = rec.ttfb_ms {
            c.ttfb[route].observe(t);
        }
        c.retries += u64::from(rec.attempts.saturating_sub(1));
    }

    pub fn rejected(&self, why: Rejected) {
        self.rejected[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_log_dropped(&self, n: u64) {
        self.log_dropped.store(n, Ordering::Relaxed);
    }

    /// The shards added up, with the label names.
    fn total(&self) -> (Vec<String>, Counts) {
        let names = lock(&self.labels).names.clone();
        let mut all = Counts {
            slots: vec![ModelCounts::default(); names.len()],
            ..Counts::default()
        };
        for shard in &self.shards {
            let c = lock(&shard.0);
            for (sum, counts) in all.slots.iter_mut().zip(&c.slots) {
                sum.add(counts);
            }
            for (sum, h) in all.latency.iter_mut().zip(&c.latency) {
                sum.add(h);
            }
            for (sum, h) in all.ttfb.iter_mut().zip(&c.ttfb) {
                sum.add(h);
            }
            all.retries += c.retries;
        }
        (names, all)
    }
}

#[cfg(test)]
mod tests;
