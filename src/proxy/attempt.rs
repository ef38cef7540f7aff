//! Running a [`Plan`]: take a key, send, classify the answer, and either relay it or try
//! another key. Retries are bounded by `max_attempts` (never more than the pool) and by
//! the request deadline; a 429 moves on to the next key at once, never sleeping on it.
//! When no key is usable the request may queue for `queue_wait` for one to come back;
//! otherwise it gets 429 with `Retry-After` (keys cooling or busy) or 503 (none usable).

use super::queue::acquire;
use super::{KeyIn, Plan};
use crate::app::AppState;
use crate::body::Body;
use crate::error::ApiError;
use crate::keys::classify::{Outcome, classify};
use crate::keys::{KeyEntry, Lease, NoKey, unix_ms};
use crate::logs::{Attempt, Trace};
use crate::relay::{Format, OnFinish, Relay};
use crate::upstream::{UpstreamBody, Via};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The most of an upstream error body read for classification and relaying.
const ERROR_BODY_LIMIT: usize = 1 << 20;

/// Why the last attempt failed, to answer with when no attempt is left. One lives per
/// request, on its stack: the size of the upstream variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum Failure {
    /// Google answered with an error worth retrying elsewhere; relayed if nothing else works.
    Upstream(StatusCode, HeaderMap, Bytes, Outcome),
    Network(String),
}

pub async fn execute(state: &Arc<AppState>, plan: Plan, trace: &mut Trace) -> Response<Body> {
    // One clock reading for the deadline, the queue limit and the first attempt's start.
    let start = Instant::now();
    let deadline = start + state.config.pool.request_deadline;
    match tokio::time::timeout_at(deadline, attempts(state, &plan, trace, start)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::Deadline.into_response(plan.shape),
    }
}

async fn attempts(
    state: &Arc<AppState>,
    plan: &Plan,
    trace: &mut Trace,
    start: Instant,
) -> Response<Body> {
    let pool = &state.pool;
    let max = (pool.config().max_attempts as usize).min(pool.len()).max(1);
    let queue_until = start + pool.config().queue_wait;
    // Keys already tried, to skip on the next attempt (filled only when there is one).
    let mut tried: Vec<Arc<KeyEntry>> = Vec::new();
    let mut last: Option<Failure> = None;
    for n in 0..max {
        let lease = match acquire(
            state,
            &plan.model,
            plan.permit.groups(),
            &tried,
            queue_until,
        )
        .await
        {
            Ok(lease) => lease,
            Err(no) => return give_up(state, plan, last, Some(no), trace),
        };
        let entry = lease.entry.clone();
        let started = if n == 0 { start } else { Instant::now() };
        let result = try_key(state, plan, lease, started).await;
        let (outcome, status, error) = match &result {
            Ok(resp) if resp.status().is_success() => ("ok", Some(resp.status().as_u16()), None),
            Ok(resp) => ("client_error", Some(resp.status().as_u16()), None),
            Err(Failure::Upstream(status, _, _, o)) => {
                (outcome_name(o), Some(status.as_u16()), reason(o))
            }
            Err(Failure::Network(e)) => ("transient", None, Some(e.clone())),
        };
        trace.bytes_up = plan.body.len() as u64;
        trace.attempts.push(Attempt {
            key: entry.clone(),
            outcome,
            status,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            error,
        });
        match result {
            Ok(resp) => return resp,
            Err(f) => last = Some(f),
        }
        tried.push(entry);
    }
    give_up(state, plan, last, None, trace)
}

/// One upstream attempt with one key: the response to give the client, or why to move on.
async fn try_key(
    state: &Arc<AppState>,
    plan: &Plan,
    lease: Lease,
    started: Instant,
) -> Result<Response<Body>, Failure> {
    let cfg = &state.config.upstream;
    let req = build_request(plan, &lease.entry);
    let resp = match state
        .upstream
        .send(
            plan.lane,
            &Via::key(&lease.entry.id, lease.entry.proxy()),
            req,
            started + cfg.request_timeout,
        )
        .await
    {
        Ok(resp) => resp,
        Err(e) => {
            let failure = transient(state, plan, &lease.entry, e.to_string());
            tracing::debug!(key = %lease.entry.brief, reason = %e, "upstream attempt failed");
            return Err(failure);
        }
    };
    let (parts, body) = resp.into_parts();
    if parts.status.is_success() {
        return relay_success(state, plan, lease, parts, body).await;
    }
    let bytes = read_error_body(body, cfg.request_timeout).await;
    let outcome = classify(parts.status.as_u16(), &bytes);
    state
        .pool
        .report(&lease.entry, &plan.model, &outcome, unix_ms());
    if outcome.retryable() {
        return Err(Failure::Upstream(
            parts.status,
            parts.headers,
            bytes,
            outcome,
        ));
    }
    Ok(relay_error(plan, parts.status, &parts.headers, bytes))
}

/// Counts a failure that is no fault of the key's (a network error, a cut before
/// anything was sent) as transient for it, and says why to move on.
fn transient(state: &AppState, plan: &Plan, entry: &KeyEntry, reason: String) -> Failure {
    let outcome = Outcome::Transient {
        reason: reason.clone(),
    };
    state.pool.report(entry, &plan.model, &outcome, unix_ms());
    Failure::Network(reason)
}

/// A successful answer relayed to the client once its start has been read ahead, so a
/// failure before that still moves on to another key. The lease ends with the relay.
async fn relay_success(
    state: &Arc<AppState>,
    plan: &Plan,
    lease: Lease,
    parts: http::response::Parts,
    body: UpstreamBody,
) -> Result<Response<Body>, Failure> {
    let cfg = &state.config.upstream;
    let format = relay_format(plan, &parts.headers);
    let mut relay = Relay::new(body, format, plan.style, cfg.stream_idle_timeout);
    relay.limit_total(cfg.body_timeout);
    if let Some(hide) = plan.hide_events {
        relay.hide_events(hide);
    }
    if let Err(reason) = relay.prime().await {
        return Err(transient(state, plan, &lease.entry, reason));
    }
    state
        .pool
        .report(&lease.entry, &plan.model, &Outcome::Success, unix_ms());
    relay.on_finish(settle(state, plan, lease));
    let mut out = Response::new(Body::Relay(Box::new(relay)));
    *out.status_mut() = parts.status;
    super::headers::copy(&parts.headers, out.headers_mut(), plan.stream);
    Ok(out)
}

/// How a successful answer is cut into events: not at all unless streamed, else as SSE
/// or as Google's JSON array, whichever the upstream sent.
fn relay_format(plan: &Plan, headers: &HeaderMap) -> Format {
    if !plan.stream {
        Format::Passthrough
    } else if is_event_stream(headers) {
        Format::Sse
    } else {
        Format::JsonArray
    }
}

/// What the end of a relayed answer does: a cut stream counts as transient for the key,
/// the tokens it reported count for the user and the key's ledger, and the lease ends.
fn settle(state: &Arc<AppState>, plan: &Plan, lease: Lease) -> OnFinish {
    let st = state.clone();
    let model = plan.model.clone();
    let permit = plan.permit.clone();
    Box::new(move |finish| {
        if let Some(reason) = &finish.truncated {
            let outcome = Outcome::Transient {
                reason: reason.clone(),
            };
            st.pool.report(&lease.entry, &model, &outcome, unix_ms());
        }
        if let Some(t) = finish.tokens {
            permit.add_tokens(t.total);
            st.pool
                .count_tokens(&lease.entry, &model, t.prompt, unix_ms());
        }
        drop(lease);
    })
}

/// The answer when no attempt is left: the last upstream error, or why no key was had.
fn give_up(
    state: &AppState,
    plan: &Plan,
    last: Option<Failure>,
    no: Option<NoKey>,
    trace: &mut Trace,
) -> Response<Body> {
    let now = unix_ms();
    let error = match last {
        Some(Failure::Upstream(_, _, _, Outcome::RateLimited { .. })) | None => {
            // Ask the pool as a whole: when does any key come back for this model?
            let groups = plan.permit.groups();
            let no = no.or_else(|| state.pool.acquire_in(&plan.model, now, &[], groups).err());
            match no {
                Some(no) if no.busy => ApiError::AllBusy(Duration::from_secs(1)),
                Some(NoKey {
                    earliest_ms: Some(t),
                    ..
                }) => ApiError::AllCooling(Duration::from_millis((t - now).max(0) as u64)),
                _ => ApiError::NoKey,
            }
        }
        Some(Failure::Upstream(status, headers, body, Outcome::Transient { .. })) => {
            return relay_error(plan, status, &headers, body);
        }
        Some(Failure::Upstream(..)) => ApiError::NoKey,
        Some(Failure::Network(reason)) => ApiError::Unreachable(reason),
    };
    trace.no_key = matches!(
        error,
        ApiError::NoKey | ApiError::AllCooling(_) | ApiError::AllBusy(_)
    );
    error.into_response(plan.shape)
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

fn reason(o: &Outcome) -> Option<String> {
    match o {
        Outcome::Invalid { reason }
        | Outcome::RateLimited { reason, .. }
        | Outcome::Transient { reason } => Some(reason.clone()),
        _ => None,
    }
}

pub(super) fn build_request(plan: &Plan, key: &KeyEntry) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(plan.body.clone()));
    *req.method_mut() = plan.method.clone();
    *req.uri_mut() = plan.uri.clone();
    // Room for the key and `Host` (added by `upstream`), so neither grows the map.
    let h = req.headers_mut();
    h.reserve(plan.headers.len() + 2);
    for (name, value) in &plan.headers {
        h.append(name.clone(), value.clone());
    }
    let value = match plan.key_in {
        KeyIn::GoogHeader => key.goog_header.clone(),
        KeyIn::Bearer => HeaderValue::from_str(&format!("Bearer {}", key.key.expose()))
            .ok()
            .map(|mut v| {
                v.set_sensitive(true);
                v
            }),
    };
    if let Some(v) = value {
        let name = match plan.key_in {
            KeyIn::GoogHeader => header::HeaderName::from_static("x-goog-api-key"),
            KeyIn::Bearer => header::AUTHORIZATION,
        };
        h.insert(name, v);
    }
    req
}

pub(super) fn is_event_stream(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

pub(super) async fn read_error_body(body: UpstreamBody, timeout: Duration) -> Bytes {
    let read = Limited::new(body, ERROR_BODY_LIMIT).collect();
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(c)) => c.to_bytes(),
        _ => Bytes::new(),
    }
}

/// An upstream error relayed as Google sent it: same status, content type and bytes.
/// A route that shapes its errors otherwise (OpenAI's) translates the body, keeping the
/// status.
pub(super) fn relay_error(
    plan: &Plan,
    status: StatusCode,
    headers: &HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let translated = plan.translate_error.and_then(|t| t(status.as_u16(), &body));
    let mut out = Response::new(Body::full(translated.clone().unwrap_or(body)));
    *out.status_mut() = status;
    super::headers::copy(headers, out.headers_mut(), translated.is_some());
    if translated.is_some() {
        let h = out.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    out
}
