//! Opening a session at Google: choose a key for the model (the token's key for a
//! Constrained session), connect (HTTP/1.1, TLS for `https`, the daemon's resolver and
//! egress proxy), upgrade, send the client's `setup`, and wait for Google's first answer.
//! A refused upgrade or a setup answered with a key or quota close moves on to the next
//! key, before the client has seen anything; a refusal about the request ends there.
//! The pool key goes in `x-goog-api-key`, a token in `Authorization: Token`, never in
//! the URL.

use super::setup::{close_outcome, is_setup_complete, short};
use crate::app::AppState;
use crate::keys::classify::{Outcome, classify};
use crate::keys::{KeyEntry, Lease, unix_ms};
use crate::logs::{Attempt, Trace};
use crate::secret::Secret;
use crate::store::affinity::ResourceRecord;
use crate::upstream::{Http1Io, Via};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Uri, header};
use std::sync::Arc;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

pub type UpstreamWs = WebSocketStream<Http1Io>;

/// What a session is opened with.
pub struct Target<'a> {
    pub model: &'a str,
    /// The client's path (Google's) and its query without credentials.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// A Constrained session: the token, and the row naming its key.
    pub token: Option<&'a (Secret, ResourceRecord)>,
    /// The user's key groups: only their keys serve when any is named.
    pub groups: &'a [String],
    pub config: WebSocketConfig,
}

/// A session Google accepted: its socket, its first message (`setupComplete`), the key.
pub struct Opened {
    pub ws: UpstreamWs,
    pub first: Message,
    pub lease: Lease,
}

/// Why no session could be opened; the client is closed with `code` and `reason`.
#[derive(Debug)]
pub struct Refused {
    pub code: u16,
    pub reason: String,
    /// The HTTP status the log records for it.
    pub status: u16,
    pub no_key: bool,
}

/// One key's try: accepted, or refused with what it means for the key.
enum Tried {
    Open(Box<UpstreamWs>, Message),
    Refused {
        outcome: Outcome,
        close: Option<CloseFrame>,
        status: Option<u16>,
        error: String,
    },
}

/// Opens the session on the first key that accepts it (at most `max_attempts` keys).
pub async fn open(
    state: &Arc<AppState>,
    target: &Target<'_>,
    setup: &Message,
    trace: &mut Trace,
) -> Result<Opened, Refused> {
    let pool = &state.pool;
    let max = match target.token {
        Some(_) => 1,
        None => (pool.config().max_attempts as usize).min(pool.len()).max(1),
    };
    let mut tried: Vec<Arc<KeyEntry>> = Vec::new();
    let mut last: Option<Refused> = None;
    let queue_until = Instant::now() + pool.config().queue_wait;
    for _ in 0..max {
        let lease = match lease(state, target, &tried, queue_until).await {
            Ok(l) => l,
            Err(refused) => return Err(last.unwrap_or(refused)),
        };
        let entry = lease.entry.clone();
        let started = Instant::now();
        let outcome = attempt(state, target, &entry, setup).await;
        record_attempt(trace, &entry, started, &outcome);
        match outcome {
            Tried::Open(ws, first) => {
                pool.report(&entry, target.model, &Outcome::Success, unix_ms());
                return Ok(Opened {
                    ws: *ws,
                    first,
                    lease,
                });
            }
            Tried::Refused {
                outcome,
                close,
                status,
                error,
            } => {
                pool.report(&entry, target.model, &outcome, unix_ms());
                let refused = refusal(close.as_ref(), status, &error);
                if !outcome.retryable() {
                    return Err(refused);
                }
                last = Some(refused);
                tried.push(entry);
            }
        }
    }
    Err(last.unwrap_or_else(no_key))
}

/// Adds one try on `entry`, begun at `started`, to the session's attempt chain.
fn record_attempt(trace: &mut Trace, entry: &Arc<KeyEntry>, started: Instant, outcome: &Tried) {
    let (name, status, error) = match outcome {
        Tried::Open(..) => ("ok", Some(101), None),
        Tried::Refused {
            outcome,
            status,
            error,
            ..
        } => (outcome_name(outcome), *status, Some(error.clone())),
    };
    trace.attempts.push(Attempt {
        key: entry.clone(),
        outcome: name,
        status,
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        error,
    });
}

/// The token's key, or the next usable key for the model (waiting for one until
/// `queue_until`, as requests do).
async fn lease(
    state: &AppState,
    target: &Target<'_>,
    tried: &[Arc<KeyEntry>],
    queue_until: Instant,
) -> Result<Lease, Refused> {
    let now = unix_ms();
    if let Some((_, row)) = target.token {
        return crate::affinity::owner_lease(state, row, target.model, now)
            .await
            .map_err(|e| Refused {
                code: 1013,
                reason: short(&e.to_string()).to_owned(),
                status: e.status().as_u16(),
                no_key: true,
            });
    }
    let leased =
        crate::proxy::acquire(state, target.model, target.groups, tried, queue_until).await;
    leased.map_err(|no| {
        let mut refused = no_key();
        if let Some(wait) = no.retry_after(unix_ms()) {
            refused.reason = format!(
                "Every upstream key is cooling or busy for this model; retry in {} s.",
                wait.as_secs().max(1)
            );
            refused.status = 429;
        }
        refused
    })
}

fn no_key() -> Refused {
    Refused {
        code: 1013,
        reason: "No upstream key can serve this model right now.".into(),
        status: 503,
        no_key: true,
    }
}

/// The close the client gets for the last refusal: Google's own close when there was
/// one, else 1011 (the upgrade was refused or the connection failed).
fn refusal(close: Option<&CloseFrame>, status: Option<u16>, error: &str) -> Refused {
    match close {
        Some(f) => Refused {
            code: u16::from(f.code),
            reason: f.reason.as_str().to_owned(),
            status: match u16::from(f.code) {
                1007 | 1008 => 400,
                _ => 502,
            },
            no_key: false,
        },
        None => Refused {
            code: 1011,
            reason: short(error).to_owned(),
            status: status.filter(|s| *s >= 400).unwrap_or(502),
            no_key: false,
        },
    }
}

/// Connects with `entry`, sends `setup`, reads Google's first answer.
async fn attempt(
    state: &AppState,
    target: &Target<'_>,
    entry: &KeyEntry,
    setup: &Message,
) -> Tried {
    let wait = state.config.upstream.connect_timeout;
    let mut ws = match tokio::time::timeout(wait, connect(state, target, entry)).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(tried)) => return tried,
        Err(_) => return transient("timed out opening the upstream WebSocket".into()),
    };
    if let Err(e) = ws.send(setup.clone()).await {
        return transient(format!("sending setup upstream: {e}"));
    }
    let answer = tokio::time::timeout(wait, first_answer(&mut ws)).await;
    match answer {
        Err(_) => transient("timed out waiting for setupComplete".into()),
        Ok(Err(e)) => transient(format!("the upstream WebSocket failed: {e}")),
        Ok(Ok(Message::Close(frame))) => {
            let (code, reason) = frame
                .as_ref()
                .map_or((1005, ""), |f| (u16::from(f.code), f.reason.as_str()));
            Tried::Refused {
                outcome: close_outcome(code, reason),
                error: format!("close {code}: {}", short(reason)),
                close: frame,
                status: None,
            }
        }
        Ok(Ok(first)) => Tried::Open(Box::new(ws), first),
    }
}

/// Google's first text or binary message (or its close), answering pings on the way.
async fn first_answer(ws: &mut UpstreamWs) -> Result<Message, WsError> {
    loop {
        match ws.next().await {
            None => return Err(WsError::ConnectionClosed),
            Some(Err(e)) => return Err(e),
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_) | Message::Close(_)))) => {
                if !is_setup_complete(&m.clone().into_data()) {
                    tracing::debug!("the first upstream Live message is not setupComplete");
                }
                return Ok(m);
            }
            Some(Ok(_)) => {}
        }
    }
}

/// The TCP (and TLS) connection and the upgrade.
async fn connect(
    state: &AppState,
    target: &Target<'_>,
    entry: &KeyEntry,
) -> Result<UpstreamWs, Tried> {
    let base = &state.config.upstream.base_url;
    let Some(uri) = state.upstream.uri(base, target.path, target.query) else {
        return Err(transient("the upstream URL is not valid".into()));
    };
    let io = state
        .upstream
        .connect_http1(&Via::key(&entry.id, entry.proxy()), uri.clone())
        .await
        .map_err(|e| transient(e.to_string()))?;
    let mut req = ws_uri(&uri)
        .and_then(|u| u.into_client_request().ok())
        .ok_or_else(|| transient("the upstream URL is not valid".into()))?;
    let h = req.headers_mut();
    for (name, value) in target.headers {
        h.append(name.clone(), value.clone());
    }
    match target.token {
        Some((token, _)) => {
            if let Ok(mut v) = HeaderValue::from_str(&format!("Token {}", token.expose())) {
                v.set_sensitive(true);
                h.insert(header::AUTHORIZATION, v);
            }
        }
        None => {
            if let Some(v) = entry.goog_header.clone() {
                h.insert("x-goog-api-key", v);
            }
        }
    }
    match tokio_tungstenite::client_async_with_config(req, io, Some(target.config)).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(resp)) => {
            let status = resp.status().as_u16();
            let body = resp.body().as_deref().unwrap_or_default();
            Err(Tried::Refused {
                outcome: classify(status, body),
                close: None,
                status: Some(status),
                error: format!("upgrade refused with {status}"),
            })
        }
        Err(e) => Err(transient(format!(
            "the upstream WebSocket upgrade failed: {e}"
        ))),
    }
}

/// `ws://` or `wss://` for the `http://` or `https://` URI the connection was made to.
fn ws_uri(uri: &Uri) -> Option<Uri> {
    let scheme = match uri.scheme_str()? {
        "https" => "wss",
        _ => "ws",
    };
    let mut parts = uri.clone().into_parts();
    parts.scheme = Some(scheme.parse().ok()?);
    Uri::from_parts(parts).ok()
}

fn transient(reason: String) -> Tried {
    Tried::Refused {
        outcome: Outcome::Transient {
            reason: reason.clone(),
        },
        close: None,
        status: None,
        error: reason,
    }
}

fn outcome_name(o: &Outcome) -> &'static str {
    match o {
        Outcome::Success => "ok",
        Outcome::Invalid { .. } => "invalid",
        Outcome::RateLimited { .. } => "rate_limited",
        Outcome::Transient { .. } => "transient",
        Outcome::ClientError => "client_error",
    }
}
