//! Prometheus metrics for this instance, in the text exposition format: requests by
//! route / model / outcome, latency and time-to-first-byte histograms, tokens, retries,
//! keys by state and key events (cool-downs, retirements). Counters are fed by finished
//! log records and by the live-feed hub; nothing here touches the store.
//!
//! Model names come from clients, so at most [`MAX_MODELS`] distinct ones get their own
//! label; the rest are counted as `other`.

use crate::events::Hub;
use crate::keys::{KeyStatus, Pool};
use crate::logs::RecordRef;
use crate::store::LATENCY_BOUNDS_MS;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

const MAX_MODELS: usize = 64;

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Model labels in use, shared by the maps below (no string copy per request).
    models: HashMap<String, Arc<str>>,
    other: Option<Arc<str>>,
    requests: BTreeMap<(&'static str, Arc<str>, &'static str), u64>,
    latency: BTreeMap<&'static str, Histogram>,
    ttfb: BTreeMap<&'static str, Histogram>,
    tokens: BTreeMap<(Arc<str>, &'static str), u64>,
    retries: u64,
    log_dropped: u64,
}

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; 12],
    sum_ms: f64,
    count: u64,
}

impl Histogram {
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

/// Route names are a closed set; anything else is folded into `other`.
fn route_label(route: &str) -> &'static str {
    const ROUTES: &[&str] = &[
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
    ];
    ROUTES
        .iter()
        .find(|r| **r == route)
        .copied()
        .unwrap_or("other")
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn observe(&self, rec: &RecordRef<'_>) {
        let route = route_label(rec.route);
        let mut m = self.lock();
        let model = match m.models.get(rec.model) {
            Some(label) => label.clone(),
            None if m.models.len() < MAX_MODELS => {
                let label: Arc<str> = rec.model.into();
                m.models.insert(rec.model.to_owned(), label.clone());
                label
            }
            None => m.other.get_or_insert_with(|| "other".into()).clone(),
        };
        *m.requests
            .entry((route, model.clone(), rec.outcome.as_str()))
            .or_default() += 1;
        m.latency.entry(route).or_default().observe(rec.latency_ms);
        if let Some(t) = rec.ttfb_ms {
            m.ttfb.entry(route).or_default().observe(t);
        }
        let t = &rec.tokens;
        for (kind, n) in [
            ("prompt", t.prompt),
            ("candidates", t.candidates),
            ("thoughts", t.thoughts),
            ("cached", t.cached),
            ("total", t.total),
        ] {
            if n > 0 {
                *m.tokens.entry((model.clone(), kind)).or_default() += n;
            }
        }
        m.retries += u64::from(rec.attempts.saturating_sub(1));
    }

    pub fn set_log_dropped(&self, n: u64) {
        self.lock().log_dropped = n;
    }

    /// The exposition text; `open` is the open client connections per serving thread.
    pub fn render(&self, pool: &Pool, hub: &Hub, open: &[usize], now: i64) -> String {
        let m = self.lock();
        let mut out = String::with_capacity(4096);
        let label = |s: &str| {
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        out.push_str("# HELP gemini_balance_requests_total Client requests on proxy routes.\n# TYPE gemini_balance_requests_total counter\n");
        for ((route, model, outcome), n) in &m.requests {
            let _ = writeln!(
                out,
                "gemini_balance_requests_total{{route=\"{route}\",model=\"{}\",outcome=\"{outcome}\"}} {n}",
                label(model)
            );
        }
        histogram(
            &mut out,
            "gemini_balance_request_duration_seconds",
            "Time from request to last byte.",
            &m.latency,
        );
        histogram(
            &mut out,
            "gemini_balance_time_to_first_byte_seconds",
            "Time from request to the first byte of a relayed answer.",
            &m.ttfb,
        );
        out.push_str("# HELP gemini_balance_tokens_total Tokens reported by the upstream.\n# TYPE gemini_balance_tokens_total counter\n");
        for ((model, kind), n) in &m.tokens {
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
            m.log_dropped
        );
        drop(m);
        let mut states: BTreeMap<&str, u64> = [
            ("active", 0),
            ("cooling", 0),
            ("invalid", 0),
            ("disabled", 0),
        ]
        .into();
        for e in pool.entries() {
            let s = match e.view(now).state {
                KeyStatus::Active => "active",
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
    use crate::store::{LogOutcome, LogRecord, Snapshot};
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
        }
    }

    #[test]
    fn counts_by_model_and_folds_client_chosen_names_beyond_the_limit() {
        let metrics = Metrics::default();
        metrics.observe(&(&rec("gemini-2.5-flash", 7)).into());
        metrics.observe(&(&rec("gemini-2.5-flash", 3)).into());
        for i in 0..MAX_MODELS + 5 {
            metrics.observe(&(&rec(&format!("m{i}"), 0)).into());
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
