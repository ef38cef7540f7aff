//! Sending a native request with one key at a time: its [`Plan`] (`plan`), the key it
//! goes to (the resource's owner, the user's home key, or normal selection), and Google's
//! answer primed for relaying or refused (`answer`). The resource routes (`resources`)
//! and the upload (`upload`) share it; it knows nothing of either.

use super::attempt::{build_request, is_event_stream, read_error_body};
use super::{FORWARDED, KeyIn, Plan, forward_headers, query_without_key};
use crate::affinity;
use crate::app::AppState;
use crate::body::Body;
use crate::error::{ApiError, Shape};
use crate::keys::classify::{Outcome, classify};
use crate::keys::{KeyEntry, Lease, unix_ms};
use crate::limits::Permit;
use crate::logs::{Attempt, Trace};
use crate::relay::{ErrorStyle, Format, Relay};
use crate::store::affinity::ResourceRecord;
use crate::upstream::Lane;
use crate::upstream::{UpstreamBody, Via};
use bytes::Bytes;
use http::{Response, StatusCode, request};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The path after `/{version}/` (or `/upload/{version}/`), split at `/`.
pub(super) fn native_segments(path: &str) -> Vec<&str> {
    let path = path.trim_start_matches('/');
    let path = path.strip_prefix("upload/").unwrap_or(path);
    let rest = path.split_once('/').map_or("", |(_, r)| r);
    rest.split('/').collect()
}

pub(super) fn plan(
    state: &AppState,
    parts: &request::Parts,
    body: Bytes,
    model: String,
    permit: Arc<Permit>,
) -> Result<Plan, ApiError> {
    let query = query_without_key(&parts.uri);
    let uri = super::upstream_uri(
        state,
        &state.config.upstream.base_url,
        parts.uri.path(),
        query.as_deref(),
    )?;
    let stream = query.as_deref().is_some_and(|q| q.contains("alt=sse"));
    Ok(Plan {
        shape: Shape::Google,
        style: ErrorStyle::Google,
        translate_error: None,
        model,
        method: parts.method.clone(),
        uri,
        headers: forward_headers(&parts.headers, FORWARDED),
        body,
        key_in: KeyIn::GoogHeader,
        stream,
        hide_events: None,
        permit,
        lane: Lane::of(&parts.extensions),
    })
}

pub(super) enum Ran {
    /// Nothing more to do: relay this (an upstream error, as Google sent it).
    Answer(Response<Body>),
    Success(http::response::Parts, Box<Relay>, Arc<KeyEntry>),
}

/// Sends `plan` to the owner's key, else the home key, else normal selection; `retry`
/// lets a refusal (429, a key problem) move on to another key.
pub(super) async fn run(
    state: &Arc<AppState>,
    plan: &Plan,
    owner: Option<&ResourceRecord>,
    home: Option<ResourceRecord>,
    retry: bool,
    trace: &mut Trace,
) -> Result<Ran, ApiError> {
    let pool = &state.pool;
    let max = if retry {
        (pool.config().max_attempts as usize).min(pool.len()).max(1)
    } else {
        1
    };
    let mut tried: Vec<Arc<KeyEntry>> = Vec::new();
    for n in 0..max {
        let now = unix_ms();
        let lease = match (owner, &home) {
            (Some(row), _) => affinity::owner_lease(state, row, &plan.model, now).await?,
            (None, Some(h)) if n == 0 => {
                match affinity::home_lease(state, h, &plan.model, now).await {
                    Some(lease) => lease,
                    None => select(state, &plan.model, &tried, now).await?,
                }
            }
            _ => select(state, &plan.model, &tried, now).await?,
        };
        let entry = lease.entry.clone();
        let started = Instant::now();
        let req = build_request(plan, &entry);
        let deadline = started + state.config.upstream.request_timeout;
        let via = Via::key(&entry.id, entry.proxy());
        let sent = match state.upstream.send(plan.lane, &via, req, deadline).await {
            Ok(resp) => answer(state, plan, lease, resp).await,
            Err(e) => failed(state, plan, &lease, e.to_string()),
        };
        trace.bytes_up = plan.body.len() as u64;
        record_attempt(trace, &entry, started, &sent);
        match sent {
            Sent::Ok(parts, relay) => return Ok(Ran::Success(parts, relay, entry)),
            Sent::Refused(_, Outcome::RateLimited { .. } | Outcome::Invalid { .. })
                if n + 1 < max =>
            {
                tried.push(entry);
            }
            Sent::Refused(resp, _) => return Ok(Ran::Answer(resp)),
            Sent::Failed(reason) => return Err(ApiError::Unreachable(reason)),
        }
    }
    Err(ApiError::NoKey)
}

/// Adds one try on `entry`, begun at `started`, to the request's attempt chain.
fn record_attempt(trace: &mut Trace, entry: &Arc<KeyEntry>, started: Instant, sent: &Sent) {
    let (outcome, status, error) = match sent {
        Sent::Ok(parts, _) => ("ok", Some(parts.status.as_u16()), None),
        Sent::Refused(resp, o) => (outcome_name(o), Some(resp.status().as_u16()), None),
        Sent::Failed(reason) => ("transient", None, Some(reason.clone())),
    };
    trace.attempts.push(Attempt {
        key: entry.clone(),
        outcome,
        status,
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        error,
    });
}

/// The next usable key for `model` by normal selection, counted in the shared ledger
/// too (a key the other instances filled is skipped).
async fn select(
    state: &AppState,
    model: &str,
    tried: &[Arc<KeyEntry>],
    now: i64,
) -> Result<Lease, ApiError> {
    let mut skip = tried.to_vec();
    loop {
        let lease = state.pool.acquire(model, now, &skip).map_err(|no| {
            if no.busy {
                ApiError::AllBusy(Duration::from_secs(1))
            } else if let Some(t) = no.earliest_ms {
                ApiError::AllCooling(Duration::from_millis((t - now).max(0) as u64))
            } else {
                ApiError::NoKey
            }
        })?;
        if state.pool.confirm(&lease, model, now).await {
            return Ok(lease);
        }
        skip.push(lease.entry.clone());
    }
}

pub(super) enum Sent {
    Ok(http::response::Parts, Box<Relay>),
    /// Google refused: its answer as the client gets it, and what it meant for the key.
    Refused(Response<Body>, Outcome),
    Failed(String),
}

pub(super) fn failed(state: &AppState, plan: &Plan, lease: &Lease, reason: String) -> Sent {
    let outcome = Outcome::Transient {
        reason: reason.clone(),
    };
    state
        .pool
        .report(&lease.entry, &plan.model, &outcome, unix_ms());
    Sent::Failed(reason)
}

/// Google's answer with one key: primed for relaying, or refused (reported to the pool
/// as [`resource_outcome`] reads it).
pub(super) async fn answer(
    state: &Arc<AppState>,
    plan: &Plan,
    lease: Lease,
    resp: Response<UpstreamBody>,
) -> Sent {
    let cfg = &state.config.upstream;
    let (parts, body) = resp.into_parts();
    if !parts.status.is_success() {
        let bytes = read_error_body(body, cfg.request_timeout).await;
        let outcome = resource_outcome(parts.status, &bytes);
        state
            .pool
            .report(&lease.entry, &plan.model, &outcome, unix_ms());
        let resp = super::attempt::relay_error(plan, parts.status, &parts.headers, bytes);
        return Sent::Refused(resp, outcome);
    }
    let format = if is_event_stream(&parts.headers) {
        Format::Sse
    } else if plan.stream {
        Format::JsonArray
    } else {
        Format::Passthrough
    };
    let mut relay = Relay::new(body, format, plan.style, cfg.stream_idle_timeout);
    relay.limit_total(cfg.body_timeout);
    if let Err(reason) = relay.prime().await {
        return failed(state, plan, &lease, reason);
    }
    state
        .pool
        .report(&lease.entry, &plan.model, &Outcome::Success, unix_ms());
    let (st, model, permit) = (state.clone(), plan.model.clone(), plan.permit.clone());
    relay.on_finish(Box::new(move |finish| {
        if let Some(reason) = &finish.truncated {
            let outcome = Outcome::Transient {
                reason: reason.clone(),
            };
            st.pool.report(&lease.entry, &model, &outcome, unix_ms());
        }
        if let Some(t) = finish.tokens {
            permit.add_tokens(t.total);
        }
        drop(lease);
    }));
    Sent::Ok(parts, Box::new(relay))
}

/// What an answer on a resource route means for the key: as for generation, except that
/// a 403 the classifier cannot place is about the resource (another project's, or gone),
/// so it is the client's business and charges the key nothing.
pub fn resource_outcome(status: StatusCode, body: &[u8]) -> Outcome {
    match classify(status.as_u16(), body) {
        Outcome::Transient { .. } if status == StatusCode::FORBIDDEN => Outcome::ClientError,
        other => other,
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

/// The start of a primed answer (all of it, for answers up to the priming limit).
pub(super) fn primed_bytes(relay: &Relay) -> Vec<u8> {
    let mut out = Vec::new();
    relay.primed().for_each(|b| out.extend_from_slice(b));
    out
}

pub(super) fn respond(parts: http::response::Parts, relay: Box<Relay>) -> Response<Body> {
    let mut out = Response::new(Body::Relay(relay));
    *out.status_mut() = parts.status;
    super::headers::copy(&parts.headers, out.headers_mut(), false);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_403_about_a_resource_keeps_the_key() {
        let file = br#"{"error":{"code":403,"message":"You do not have permission to access the File abc or it may not exist.","status":"PERMISSION_DENIED"}}"#;
        assert_eq!(
            resource_outcome(StatusCode::FORBIDDEN, file),
            Outcome::ClientError
        );
        let unplaced = br#"{"error":{"code":403,"message":"The caller does not have permission","status":"PERMISSION_DENIED"}}"#;
        assert_eq!(
            resource_outcome(StatusCode::FORBIDDEN, unplaced),
            Outcome::ClientError
        );
        let suspended = br#"{"error":{"code":403,"message":"Permission denied: Consumer has been suspended.","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"CONSUMER_SUSPENDED"}]}}"#;
        assert!(matches!(
            resource_outcome(StatusCode::FORBIDDEN, suspended),
            Outcome::Invalid { .. }
        ));
    }

    #[test]
    fn segments_of_a_native_path() {
        assert_eq!(native_segments("/v1beta/files/abc"), ["files", "abc"]);
        assert_eq!(native_segments("/upload/v1beta/files"), ["files"]);
    }
}
