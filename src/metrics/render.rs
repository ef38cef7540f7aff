//! The exposition: the shards added up and written in Prometheus' text format, with the
//! key states and open connections read at the time of the scrape.

use super::{Counts, Histogram, Metrics, N_ROUTES, OUTCOMES, Rejected, TOKEN_KINDS, route_name};
use crate::events::Hub;
use crate::keys::{KeyStatus, Pool};
use crate::store::LATENCY_BOUNDS_MS;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// Requests by (route, model label, outcome) and tokens by (model label, kind), sorted.
type Requests<'a> = BTreeMap<(&'static str, &'a str, &'static str), u64>;
type Tokens<'a> = BTreeMap<(&'a str, &'static str), u64>;

impl Metrics {
    /// The exposition text; `open` is the open client connections per serving thread.
    pub fn render(&self, pool: &Pool, hub: &Hub, open: &[usize], now: i64) -> String {
        let (names, m) = self.total();
        let mut out = String::with_capacity(4096);
        let (requests, tokens) = by_label(&names, &m);
        out.push_str("# HELP gemini_balance_requests_total Client requests on proxy routes.\n# TYPE gemini_balance_requests_total counter\n");
        for ((route, model, outcome), n) in &requests {
            let _ = writeln!(
                out,
                "gemini_balance_requests_total{{route=\"{route}\",model=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(model)
            );
        }
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
                escape(model)
            );
        }
        let _ = writeln!(
            out,
            "# HELP gemini_balance_retries_total Upstream attempts beyond the first.\n# TYPE gemini_balance_retries_total counter\ngemini_balance_retries_total {}",
            m.retries
        );
        self.events(&mut out, hub);
        keys(&mut out, pool, now);
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

    /// Key state changes, dropped log records and refused requests.
    fn events(&self, out: &mut String, hub: &Hub) {
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
    }
}

/// A label value escaped as the text format wants it.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The counters added up by label: sorted, and a client's model named like the `other`
/// label counted with it.
fn by_label<'a>(names: &'a [String], m: &Counts) -> (Requests<'a>, Tokens<'a>) {
    let mut requests = Requests::new();
    let mut tokens = Tokens::new();
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
    (requests, tokens)
}

/// The routes that saw requests, with their histogram.
fn by_route(h: &[Histogram; N_ROUTES]) -> BTreeMap<&'static str, Histogram> {
    h.iter()
        .enumerate()
        .filter(|(_, h)| h.count > 0)
        .map(|(i, h)| (route_name(i), h.clone()))
        .collect()
}

/// `gemini_balance_keys`: the upstream keys by state, each state shown even at 0.
fn keys(out: &mut String, pool: &Pool, now: i64) {
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
    out.push_str(
        "# HELP gemini_balance_keys Upstream keys by state.\n# TYPE gemini_balance_keys gauge\n",
    );
    for (s, n) in states {
        let _ = writeln!(out, "gemini_balance_keys{{state=\"{s}\"}} {n}");
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
