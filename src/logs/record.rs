//! How a log record is assembled from what a request's [`Trace`] collected.

use crate::store::{AttemptRecord, LogOutcome, LogRecord};
use crate::usage::Tokens;
use tokio::time::Instant;

/// What the request path learns about a proxied request as it goes.
#[derive(Debug)]
pub struct Trace {
    pub request_id: String,
    pub time: i64,
    pub started: Instant,
    /// Set by proxy routes only; other routes are not logged.
    pub route: Option<&'static str>,
    pub model: String,
    pub stream: bool,
    pub user: Option<String>,
    pub attempts: Vec<AttemptRecord>,
    /// The request ended because no key was usable (cooling, busy, none left).
    pub no_key: bool,
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
        }
    }

    /// The record for an answer that is complete as sent (errors, small bodies).
    pub fn finish_now(self, status: u16) -> LogRecord {
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
        let latency = self.started.elapsed().as_secs_f64() * 1000.0;
        self.into_record(status, outcome, latency, None, Tokens::default())
    }

    /// The record for a relayed answer, once its last byte went (or the client left).
    pub fn finish_relay(
        self,
        status: u16,
        truncated: bool,
        cancelled: bool,
        first_byte: Option<Instant>,
        tokens: Option<Tokens>,
    ) -> LogRecord {
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
        let latency = self.started.elapsed().as_secs_f64() * 1000.0;
        let ttfb = first_byte.map(ms);
        self.into_record(status, outcome, latency, ttfb, tokens.unwrap_or_default())
    }

    fn into_record(
        self,
        status: u16,
        outcome: LogOutcome,
        latency_ms: f64,
        ttfb_ms: Option<f64>,
        tokens: Tokens,
    ) -> LogRecord {
        let last = self.attempts.last();
        LogRecord {
            key_id: last.map(|a| a.key_id.clone()),
            key: last.map(|a| a.key.clone()),
            request_id: self.request_id,
            time: self.time,
            user: self.user,
            route: self.route.unwrap_or("").to_owned(),
            model: self.model,
            stream: self.stream,
            status,
            outcome,
            latency_ms,
            ttfb_ms,
            tokens,
            attempts: self.attempts.len() as u32,
            attempt_chain: self.attempts,
        }
    }
}
