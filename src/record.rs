//! The request log's record: what one client request on a proxy route came to, with its
//! attempt chain and token counts — never prompt or completion text. [`LogRecord`] is
//! the owned record the store keeps; [`RecordRef`] lends the same fields while a request
//! ends and serialises to the same bytes. The log builds records, the store keeps them,
//! metrics and statistics count them.

use crate::usage::Tokens;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogOutcome {
    Ok,
    ClientError,
    UpstreamError,
    NoKey,
    Truncated,
    Cancelled,
}

impl LogOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ClientError => "client_error",
            Self::UpstreamError => "upstream_error",
            Self::NoKey => "no_key",
            Self::Truncated => "truncated",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Ok,
            Self::ClientError,
            Self::UpstreamError,
            Self::NoKey,
            Self::Truncated,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// One upstream attempt: which key, what came of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttemptRecord {
    pub key_id: String,
    pub key: String,
    /// `ok`, `invalid`, `rate_limited`, `transient` or `client_error`.
    pub outcome: String,
    pub status: Option<u16>,
    pub latency_ms: f64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogRecord {
    pub request_id: String,
    /// When the request arrived, Unix ms.
    pub time: i64,
    pub user: Option<String>,
    pub route: String,
    pub model: String,
    pub stream: bool,
    pub status: u16,
    pub outcome: LogOutcome,
    pub latency_ms: f64,
    pub ttfb_ms: Option<f64>,
    pub tokens: Tokens,
    /// The key that served the answer (or the last one tried).
    pub key_id: Option<String>,
    pub key: Option<String>,
    pub attempts: u32,
    pub attempt_chain: Vec<AttemptRecord>,
    /// The resource the request was about (`files/abc`, `cachedContents/xyz`, the first
    /// one a generation request names), if any.
    pub resource: Option<String>,
    /// Request body bytes sent upstream (the last attempt's), and answer bytes sent to
    /// the client.
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// How a WebSocket session ended (its close code); `None` for plain requests.
    pub close_code: Option<u16>,
    /// The key group of the key that served (or was tried last).
    pub group: Option<String>,
}

/// A log record with borrowed strings: the fields of [`LogRecord`], in its order, so it
/// serialises (postcard, JSON) to the same bytes.
#[derive(Serialize)]
pub struct RecordRef<'a> {
    pub request_id: &'a str,
    pub time: i64,
    pub user: Option<&'a str>,
    pub route: &'a str,
    pub model: &'a str,
    pub stream: bool,
    pub status: u16,
    pub outcome: LogOutcome,
    pub latency_ms: f64,
    pub ttfb_ms: Option<f64>,
    pub tokens: Tokens,
    pub key_id: Option<&'a str>,
    pub key: Option<&'a str>,
    pub attempts: u32,
    pub attempt_chain: Chain<'a>,
    pub resource: Option<&'a str>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub close_code: Option<u16>,
    pub group: Option<&'a str>,
}

impl<'a> From<&'a LogRecord> for RecordRef<'a> {
    fn from(r: &'a LogRecord) -> Self {
        Self {
            request_id: &r.request_id,
            time: r.time,
            user: r.user.as_deref(),
            route: &r.route,
            model: &r.model,
            stream: r.stream,
            status: r.status,
            outcome: r.outcome,
            latency_ms: r.latency_ms,
            ttfb_ms: r.ttfb_ms,
            tokens: r.tokens,
            key_id: r.key_id.as_deref(),
            key: r.key.as_deref(),
            attempts: r.attempts,
            attempt_chain: Chain::Stored(&r.attempt_chain),
            resource: r.resource.as_deref(),
            bytes_up: r.bytes_up,
            bytes_down: r.bytes_down,
            close_code: r.close_code,
            group: r.group.as_deref(),
        }
    }
}

/// A record's attempts, from a request still ending or from a stored record; serialised
/// as a list of [`AttemptRecord`]s.
pub enum Chain<'a> {
    Live(&'a dyn Attempts),
    Stored(&'a [AttemptRecord]),
}

/// The attempts a request made, lent one at a time (the log's trace holds them).
pub trait Attempts {
    fn count(&self) -> usize;
    fn attempt(&self, i: usize) -> AttemptRef<'_>;
}

/// [`AttemptRecord`]'s fields, in its order, borrowed.
#[derive(Serialize)]
pub struct AttemptRef<'a> {
    pub key_id: &'a str,
    pub key: &'a str,
    pub outcome: &'a str,
    pub status: Option<u16>,
    pub latency_ms: f64,
    pub error: Option<&'a str>,
}

impl Serialize for Chain<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Chain::Live(list) => {
                let mut seq = s.serialize_seq(Some(list.count()))?;
                for i in 0..list.count() {
                    seq.serialize_element(&list.attempt(i))?;
                }
                seq.end()
            }
            Chain::Stored(list) => list.serialize(s),
        }
    }
}
