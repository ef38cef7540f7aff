//! How a log record is assembled from what a request's [`Trace`] collected. The record is
//! never built as an owned [`LogRecord`](crate::record::LogRecord) on the request path: [`Finished::view`] lends
//! the trace's own strings to [`RecordRef`], which serialises exactly as a `LogRecord`
//! does (the test `a_finished_trace_serialises_as_its_log_record` holds the two together).

use crate::keys::KeyEntry;
#[cfg(test)]
use crate::record::{AttemptRecord, LogRecord};
use crate::record::{AttemptRef, Attempts, Chain, LogOutcome, RecordRef};
use crate::usage::Tokens;
use std::sync::Arc;
use tokio::time::Instant;

/// What the request path learns about a proxied request as it goes.
pub struct Trace {
    pub request_id: String,
    pub time: i64,
    pub started: Instant,
    /// Set by proxy routes only; other routes are not logged.
    pub route: Option<&'static str>,
    pub model: String,
    pub stream: bool,
    pub user: Option<String>,
    pub attempts: Vec<Attempt>,
    /// The request ended because no key was usable (cooling, busy, none left).
    pub no_key: bool,
    /// The resource the request is about, once known (never an upload session's id:
    /// that is a credential).
    pub resource: Option<String>,
    /// Request body bytes sent upstream by the last attempt.
    pub bytes_up: u64,
    /// A WebSocket session's close code.
    pub close_code: Option<u16>,
}

/// One upstream attempt: which key, what came of it.
pub struct Attempt {
    pub key: Arc<KeyEntry>,
    /// `ok`, `invalid`, `rate_limited`, `transient` or `client_error`.
    pub outcome: &'static str,
    pub status: Option<u16>,
    pub latency_ms: f64,
    pub error: Option<String>,
}

impl Attempts for Vec<Attempt> {
    fn count(&self) -> usize {
        self.len()
    }

    fn attempt(&self, i: usize) -> AttemptRef<'_> {
        let a = &self[i];
        AttemptRef {
            key_id: &a.key.id,
            key: &a.key.brief,
            outcome: a.outcome,
            status: a.status,
            latency_ms: a.latency_ms,
            error: a.error.as_deref(),
        }
    }
}

/// How a relayed answer went, as the relay saw it.
pub struct Relayed {
    pub truncated: bool,
    pub cancelled: bool,
    pub first_byte: Option<Instant>,
    pub tokens: Option<Tokens>,
    pub bytes_down: u64,
}

/// A trace with how its request ended: the log record, lent out by [`Finished::view`].
pub struct Finished {
    trace: Trace,
    status: u16,
    outcome: LogOutcome,
    latency_ms: f64,
    ttfb_ms: Option<f64>,
    tokens: Tokens,
    bytes_down: u64,
    group: Option<String>,
}

impl Trace {
    pub fn new(request_id: String, time: i64) -> Self {
        Self {
            request_id,
            time,
            started: Instant::now(),
            route: None,
            model: String::new(),
            stream: false,
            user: None,
            attempts: Vec::new(),
            no_key: false,
            resource: None,
            bytes_up: 0,
            close_code: None,
        }
    }

    /// The group of the key that served, or was tried last.
    fn served_group(&self) -> Option<String> {
        self.attempts.last().map(|a| a.key.group())
    }

    /// The record for an answer that is complete as sent (errors, small bodies) and is
    /// `bytes_down` long.
    pub fn finish_now(self, status: u16, bytes_down: u64) -> Finished {
        let group = self.served_group();
        let outcome = if status < 400 {
            LogOutcome::Ok
        } else if self.no_key {
            LogOutcome::NoKey
        } else if status >= 500
            || self
                .attempts
                .last()
                .is_some_and(|a| a.outcome != "client_error")
        {
            LogOutcome::UpstreamError
        } else {
            LogOutcome::ClientError
        };
        let latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        Finished {
            trace: self,
            status,
            outcome,
            latency_ms,
            ttfb_ms: None,
            tokens: Tokens::default(),
            bytes_down,
            group,
        }
    }

    /// The record of a Live session once it has closed: status 101 (the upgrade), how it
    /// ended, when Google accepted its setup, the tokens of all its turns, the message
    /// bytes relayed to the client (its close code and bytes up are in the trace).
    pub fn finish_session(
        self,
        outcome: LogOutcome,
        first_byte: Option<Instant>,
        tokens: Tokens,
        bytes_down: u64,
    ) -> Finished {
        let latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let ttfb_ms = first_byte.map(|i| i.duration_since(self.started).as_secs_f64() * 1000.0);
        let group = self.served_group();
        Finished {
            trace: self,
            status: 101,
            outcome,
            latency_ms,
            ttfb_ms,
            tokens,
            bytes_down,
            group,
        }
    }

    /// The record for a relayed answer, once its last byte went (or the client left).
    pub fn finish_relay(self, status: u16, relayed: Relayed) -> Finished {
        let group = self.served_group();
        let Relayed {
            truncated,
            cancelled,
            first_byte,
            tokens,
            bytes_down,
        } = relayed;
        let outcome = if truncated {
            LogOutcome::Truncated
        } else if cancelled {
            LogOutcome::Cancelled
        } else if status < 400 {
            LogOutcome::Ok
        } else {
            LogOutcome::ClientError
        };
        let ms = |i: Instant| i.duration_since(self.started).as_secs_f64() * 1000.0;
        let latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let ttfb_ms = first_byte.map(ms);
        Finished {
            trace: self,
            status,
            outcome,
            latency_ms,
            ttfb_ms,
            tokens: tokens.unwrap_or_default(),
            bytes_down,
            group,
        }
    }
}

impl Finished {
    pub fn view(&self) -> RecordRef<'_> {
        let t = &self.trace;
        let last = t.attempts.last();
        RecordRef {
            request_id: &t.request_id,
            time: t.time,
            user: t.user.as_deref(),
            route: t.route.unwrap_or(""),
            model: &t.model,
            stream: t.stream,
            status: self.status,
            outcome: self.outcome,
            latency_ms: self.latency_ms,
            ttfb_ms: self.ttfb_ms,
            tokens: self.tokens,
            key_id: last.map(|a| a.key.id.as_str()),
            key: last.map(|a| a.key.brief.as_str()),
            attempts: t.attempts.len() as u32,
            attempt_chain: Chain::Live(&t.attempts),
            resource: t.resource.as_deref(),
            bytes_up: t.bytes_up,
            bytes_down: self.bytes_down,
            close_code: t.close_code,
            group: self.group.as_deref(),
        }
    }

    /// The owned record (for callers that keep it).
    #[cfg(test)]
    pub fn into_record(self) -> LogRecord {
        let v = self.view();
        LogRecord {
            request_id: v.request_id.to_owned(),
            time: v.time,
            user: v.user.map(str::to_owned),
            route: v.route.to_owned(),
            model: v.model.to_owned(),
            stream: v.stream,
            status: v.status,
            outcome: v.outcome,
            latency_ms: v.latency_ms,
            ttfb_ms: v.ttfb_ms,
            tokens: v.tokens,
            key_id: v.key_id.map(str::to_owned),
            key: v.key.map(str::to_owned),
            attempts: v.attempts,
            attempt_chain: self
                .trace
                .attempts
                .iter()
                .map(|a| AttemptRecord {
                    key_id: a.key.id.clone(),
                    key: a.key.brief.clone(),
                    outcome: a.outcome.to_owned(),
                    status: a.status,
                    latency_ms: a.latency_ms,
                    error: a.error.clone(),
                })
                .collect(),
            resource: v.resource.map(str::to_owned),
            bytes_up: v.bytes_up,
            bytes_down: v.bytes_down,
            close_code: v.close_code,
            group: v.group.map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PackedLogs;

    fn entry(id: &str, key: &str) -> Arc<KeyEntry> {
        let rec = crate::store::KeyRecord {
            id: id.into(),
            key: crate::secret::Secret::new(key),
            note: None,
            disabled: false,
            invalid: None,
            created_at: 0,
            project: None,
            limits: Default::default(),
            group: None,
            proxy: None,
        };
        Arc::new(KeyEntry::new(rec))
    }

    /// What the writer stores and the live feed shows for a finished request is exactly
    /// the owned record's serialisation: postcard unpacks to it, JSON equals it.
    #[test]
    fn a_finished_trace_serialises_as_its_log_record() {
        let mut trace = Trace::new("0190abcdef120123456789ab".into(), 1_750_000_000_000);
        trace.route = Some("generateContent");
        trace.model = "gemini-2.5-flash".into();
        trace.user = Some("alice".into());
        trace.attempts.push(Attempt {
            key: entry("k1", "AIzaSyFirst-0123456789abcdefghij"),
            outcome: "rate_limited",
            status: Some(429),
            latency_ms: 1.5,
            error: Some("quota".into()),
        });
        trace.attempts.push(Attempt {
            key: entry("k2", "AIzaSySecond-0123456789abcdefghi"),
            outcome: "ok",
            status: Some(200),
            latency_ms: 2.25,
            error: None,
        });
        let tokens = Tokens {
            prompt: 3,
            candidates: 5,
            thoughts: 0,
            cached: 1,
            total: 9,
        };
        trace.resource = Some("files/abc-123".into());
        trace.bytes_up = 2048;
        let relayed = Relayed {
            truncated: false,
            cancelled: false,
            first_byte: None,
            tokens: Some(tokens),
            bytes_down: 4321,
        };
        let finished = trace.finish_relay(200, relayed);
        let mut packed = PackedLogs::with_capacity(1);
        packed.push(&finished.view());
        let json = serde_json::to_value(finished.view()).unwrap();
        let owned = finished.into_record();
        assert_eq!(owned.key_id.as_deref(), Some("k2"));
        assert_eq!(owned.attempt_chain.len(), 2);
        assert_eq!(owned.tokens, tokens);
        assert_eq!(owned.resource.as_deref(), Some("files/abc-123"));
        assert_eq!((owned.bytes_up, owned.bytes_down), (2048, 4321));
        let unpacked = packed.records().next().unwrap().unpack();
        assert_eq!(unpacked.as_ref(), Some(&owned));
        assert_eq!(json, serde_json::to_value(&owned).unwrap());
        let mut again = PackedLogs::with_capacity(1);
        again.push(&RecordRef::from(&owned));
        assert_eq!(
            again.records().next().unwrap().as_bytes(),
            packed.records().next().unwrap().as_bytes()
        );
    }
}
