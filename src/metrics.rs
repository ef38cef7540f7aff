//! Prometheus metrics for this instance, in the text exposition format: requests by
//! route / model / outcome, latency and time-to-first-byte histograms, tokens, retries,
//! keys by state and key events (cool-downs, retirements). Counters are fed by finished
//! log records and by the live-feed hub; nothing here touches the store.
//!
//! Model names come from clients, so at most [`MAX_MODELS`] distinct ones get their own
//! label; the rest are counted as `other`. Requests refused before a user key was
//! accepted are not logged; they are counted here by [`Rejected`] reason alone.

use crate::events::Hub;
use crate::keys::{KeyStatus, Pool};
use crate::record::{LogOutcome, RecordRef};
use crate::store::LATENCY_BOUNDS_MS;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

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

    /// The exposition text; `open` is the open client connections per serving thread.
    pub fn render(&self, pool: &Pool, hub: &Hub, open: &[usize], now: i64) -> String {
        let (names, m) = self.total();
        let mut out = String::with_capacity(4096);
        let label = |s: &str| {
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        out.push_str("# HELP gemini_balance_requests_total Client requests on proxy routes.\n# TYPE gemini_balance_requests_total counter\n");
        // Sorted, and a client's model named like the `other` label counted with it.
        let mut requests: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
        let mut tokens: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for (label, c) in names.iter().zip(&m.slots) {
            for (route, row) in c.requests.iter().enumerate() {
                for (outcome, &n) in OUTCOMES.iter().zip(row).filter(|(_, n)| **n > 0) {
                    *requests
                        .entry((route_name(route), label, outcome.as_str()))
                        .or_default() += n;
                }
            }
            for (kind, &n) in TOKEN_KINDS.iter().zip(&c.tokens).filter(|(_, n)| **n > 0) {
                *tokens.entry((label, kind)).or_default() += n;
            }
        }
        for ((route, model, outcome), n) in &requests {
            let _ = writeln!(
                out,
                "gemini_balance_requests_total{{route=\"{route}\",model=\"{}\",outcome=\"{outcome}\"}} {n}",
                label(model)
            );
        }
        let by_route = |h: &[Histogram; N_ROUTES]| -> BTreeMap<&'static str, Histogram> {
            h.iter()
                .enumerate()
                .filter(|(_, h)| h.count > 0)
                .map(|(i, h)| (route_name(i), h.clone()))
                .collect()
        };
        histogram(
            &mut out,
            "gemini_balance_request_duration_seconds",
            "Time from request to last byte.",
            &by_route(&m.latency),
        );
        histogram(
            &mut out,
            "gemini_balance_time_to_first_byte_seconds",
            "Time from request to the first byte of a relayed answer.",
            &by_route(&m.ttfb),
        );
        out.push_str("# HELP gemini_balance_tokens_total Tokens reported by the upstream.\n# TYPE gemini_balance_tokens_total counter\n");
        for ((model, kind), n) in &tokens {
            let _ = writeln!(
                out,
                "gemini_balance_tokens_total{{model=\"{}\",kind=\"{kind}\"}} {n}",
                label(model)
            );
        }
        let _ = writeln!(
            out,
            "# HELP gemini_balance_retries_total Upstream attempts beyond the first.\n# TYPE gemini_balance_retries_total counter\ngemini_balance_retries_total {}",
            m.retries
        );
        out.push_str("# HELP gemini_balance_key_events_total Key state changes (cooled, retired, revived, ...).\n# TYPE gemini_balance_key_events_total counter\n");
        for (change, n) in &hub.key_counts() {
            let _ = writeln!(
                out,
                "gemini_balance_key_events_total{{change=\"{change}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP gemini_balance_log_records_dropped_total Log records dropped because the writer fell behind.\n# TYPE gemini_balance_log_records_dropped_total counter\ngemini_balance_log_records_dropped_total {}",
            self.log_dropped.load(Ordering::Relaxed)
        );
        out.push_str("# HELP gemini_balance_rejected_total Proxy requests refused before a user key was accepted (not logged).\n# TYPE gemini_balance_rejected_total counter\n");
        for why in Rejected::ALL {
            let n = self.rejected[why as usize].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "gemini_balance_rejected_total{{reason=\"{}\"}} {n}",
                why.label()
            );
        }
        let mut states: BTreeMap<&str, u64> = [
            ("active", 0),
            ("cooling", 0),
            ("invalid", 0),
            ("disabled", 0),
        ]
        .into();
        for e in pool.entries() {
            let s = match e.view(now).state {
                // A key is unavailable for some model only, never as a whole.
                KeyStatus::Active | KeyStatus::Unavailable => "active",
                KeyStatus::Cooling => "cooling",
                KeyStatus::Invalid => "invalid",
                KeyStatus::Disabled => "disabled",
            };
            *states.entry(s).or_default() += 1;
        }
        out.push_str("# HELP gemini_balance_keys Upstream keys by state.\n# TYPE gemini_balance_keys gauge\n");
        for (s, n) in states {
            let _ = writeln!(out, "gemini_balance_keys{{state=\"{s}\"}} {n}");
        }
        out.push_str("# HELP gemini_balance_open_connections Open client connections per serving thread.\n# TYPE gemini_balance_open_connections gauge\n");
        for (i, n) in open.iter().enumerate() {
            let _ = writeln!(
                out,
                "gemini_balance_open_connections{{thread=\"{}\"}} {n}",
                i + 1
            );
        }
        out
    }
}

/// `gemini_balance_tls_cert_expiry_days`: days until the served certificate expires
/// (fractional; absent while there is none yet).
pub fn tls_expiry(out: &mut String, seconds_left: Option<i64>) {
    out.push_str("# HELP gemini_balance_tls_cert_expiry_days Days until the served TLS certificate expires.\n# TYPE gemini_balance_tls_cert_expiry_days gauge\n");
    if let Some(s) = seconds_left {
        let _ = writeln!(
            out,
            "gemini_balance_tls_cert_expiry_days {:.3}",
            s as f64 / 86_400.0
        );
    }
}

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    by_route: &BTreeMap<&'static str, Histogram>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (route, h) in by_route {
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BOUNDS_MS.iter().enumerate() {
            cumulative += h.counts[i];
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{route}\",le=\"{}\"}} {cumulative}",
                bound / 1000.0
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "{name}_sum{{route=\"{route}\"}} {}", h.sum_ms / 1000.0);
        let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {}", h.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{LogOutcome, LogRecord};
    use crate::store::Snapshot;
    use crate::usage::Tokens;

    fn rec(model: &str, total: u64) -> LogRecord {
        LogRecord {
            request_id: "r".into(),
            time: 0,
            user: None,
            route: "generateContent".into(),
            model: model.into(),
            stream: false,
            status: 200,
            outcome: LogOutcome::Ok,
            latency_ms: 12.0,
            ttfb_ms: None,
            tokens: Tokens {
                total,
                ..Tokens::default()
            },
            key_id: None,
            key: None,
            attempts: 2,
            attempt_chain: Vec::new(),
            resource: None,
            bytes_up: 0,
            bytes_down: 0,
            close_code: None,
            group: None,
        }
    }

    #[test]
    fn each_outcome_is_counted_under_its_own_name() {
        let metrics = Metrics::default();
        for (i, outcome) in OUTCOMES.into_iter().enumerate() {
            let mut r = rec("gemini-2.5-flash", 0);
            r.outcome = outcome;
            for _ in 0..=i {
                metrics.observe(&(&r).into(), None);
            }
        }
        let (tx, _rx) = crate::keys::persist::channel();
        let hub = Hub::default();
        let pool = Pool::new(Default::default(), &Snapshot::default(), tx, hub.clone());
        let text = metrics.render(&pool, &hub, &[], 0);
        for (i, outcome) in OUTCOMES.into_iter().enumerate() {
            let series = format!(
                "gemini_balance_requests_total{{route=\"generateContent\",model=\"gemini-2.5-flash\",outcome=\"{}\"}} {}",
                outcome.as_str(),
                i + 1
            );
            assert!(text.lines().any(|l| l == series), "{series} in\n{text}");
        }
    }

    #[test]
    fn counts_from_several_threads_add_up_and_share_the_label_limit() {
        let metrics = Metrics::default();
        std::thread::scope(|s| {
            for t in 0..6 {
                let metrics = &metrics;
                let lane = Some(t);
                s.spawn(move || {
                    for _ in 0..=t {
                        metrics.observe(&(&rec("gemini-2.5-flash", 1)).into(), lane);
                    }
                    // Each thread brings its own client-chosen names, 20 each.
                    for i in 0..20 {
                        metrics.observe(&(&rec(&format!("t{t}-m{i}"), 0)).into(), lane);
                    }
                });
            }
        });
        let (tx, _rx) = crate::keys::persist::channel();
        let hub = Hub::default();
        let pool = Pool::new(Default::default(), &Snapshot::default(), tx, hub.clone());
        let text = metrics.render(&pool, &hub, &[], 0);
        let value = |prefix: &str| -> u64 {
            let line = text.lines().find(|l| l.starts_with(prefix)).unwrap();
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        // 1 + 2 + ... + 6 requests and tokens for flash, from six threads.
        let flash = "gemini_balance_requests_total{route=\"generateContent\",model=\"gemini-2.5-flash\",outcome=\"ok\"}";
        assert_eq!(value(flash), 21);
        assert_eq!(
            value("gemini_balance_tokens_total{model=\"gemini-2.5-flash\",kind=\"total\"}"),
            21
        );
        assert_eq!(
            value("gemini_balance_request_duration_seconds_count{route=\"generateContent\"}"),
            141
        );
        // 121 names in all; 64 labels, the rest counted as other.
        let labelled = text
            .lines()
            .filter(|l| l.starts_with("gemini_balance_requests_total{"))
            .count();
        assert_eq!(labelled, MAX_MODELS + 1);
        let other = "gemini_balance_requests_total{route=\"generateContent\",model=\"other\",outcome=\"ok\"}";
        assert_eq!(value(other), 121 - MAX_MODELS as u64);
    }

    #[test]
    fn counts_by_model_and_folds_client_chosen_names_beyond_the_limit() {
        let metrics = Metrics::default();
        metrics.observe(&(&rec("gemini-2.5-flash", 7)).into(), None);
        metrics.observe(&(&rec("gemini-2.5-flash", 3)).into(), Some(0));
        for i in 0..MAX_MODELS + 5 {
            metrics.observe(&(&rec(&format!("m{i}"), 0)).into(), Some(i));
        }
        let (tx, _rx) = crate::keys::persist::channel();
        let hub = Hub::default();
        let pool = Pool::new(Default::default(), &Snapshot::default(), tx, hub.clone());
        let text = metrics.render(&pool, &hub, &[3, 4], 0);
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
                .to_owned()
        };
        assert!(line("gemini_balance_requests_total{route=\"generateContent\",model=\"gemini-2.5-flash\",outcome=\"ok\"}").ends_with(" 2"));
        assert!(
            line("gemini_balance_tokens_total{model=\"gemini-2.5-flash\",kind=\"total\"}")
                .ends_with(" 10")
        );
        // 64 labels in all: flash and 63 of the others; the last 6 are "other".
        assert!(line("gemini_balance_requests_total{route=\"generateContent\",model=\"other\",outcome=\"ok\"}").ends_with(" 6"));
        let labelled = text
            .lines()
            .filter(|l| l.starts_with("gemini_balance_requests_total{"))
            .count();
        assert_eq!(labelled, MAX_MODELS + 1);
        assert!(line("gemini_balance_retries_total ").ends_with(&format!(" {}", MAX_MODELS + 7)));
        assert!(line("gemini_balance_open_connections{thread=\"2\"}").ends_with(" 4"));
    }
}
