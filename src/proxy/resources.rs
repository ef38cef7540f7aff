//! The native methods beyond generation (`native`'s table): files, cachedContents,
//! batches, operations, interactions, file-search stores, tuned models, and every method
//! the table does not know (`other`).
//!
//! A request about a resource — named in its path, or referred to in its body (`refs`) —
//! goes to the key that owns it and nowhere else; a create goes to the user's home key
//! while it is usable, else to the next key by normal selection, and its owner row is
//! written before the answer is relayed. Only a create may move on to another key, and
//! only when Google refused it (429, a key problem): nothing was made then. `other`
//! methods are sent once. A 403 about a resource is the client's business: it never
//! retires the key.

use super::attempt::{build_request, is_event_stream, read_error_body};
use super::{FORWARDED, KeyIn, Plan, admit, authenticate, forward_headers, names};
use super::{query_without_key, read_body};
use crate::AppState;
use crate::affinity;
use crate::body::{Body, ReqBody};
use crate::error::{ApiError, Shape};
use crate::keys::classify::{Outcome, classify};
use crate::keys::{KeyEntry, Lease, unix_ms};
use crate::limits::Permit;
use crate::logs::{Attempt, Trace};
use crate::native::{self, Act, Kind, NativeCall};
use crate::refs;
use crate::relay::{ErrorStyle, Format, Relay};
use crate::store::UserRecord;
use crate::store::affinity::ResourceRecord;
use crate::upstream::Lane;
use crate::upstream::UpstreamBody;
use bytes::Bytes;
use http::{Request, Response, StatusCode, request};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub async fn handle(
    state: &Arc<AppState>,
    req: Request<ReqBody>,
    call: NativeCall,
    trace: &mut Trace,
) -> Result<Response<Body>, ApiError> {
    if call.act == Act::Upload {
        return super::upload::handle(state, req, call.label, trace).await;
    }
    let (parts, body) = req.into_parts();
    let user = authenticate(state, &parts.headers, &parts.uri, trace.time)?;
    trace.route = Some(call.label);
    trace.user = Some(user.name.clone());
    names::path(parts.uri.path())?;
    let segs = native_segments(parts.uri.path());
    let model = path_model(&segs).unwrap_or_default().to_owned();
    names::model_id(&model, false)?;
    names::model_id(names::tuned_model(&segs).unwrap_or_default(), false)?;
    let permit = admit(state, &user, &model, trace).await?;
    let body = read_body(body, &parts.headers, state.config.server.max_body_bytes).await?;
    let mut names = refs::references(&body);
    if let Act::Owned { .. } = call.act {
        let Some(name) = native::owner_of(&segs) else {
            return Err(ApiError::ResourceNotFound);
        };
        names.insert(0, name);
    }
    trace.resource = names.first().cloned();
    let owner = affinity::owner_of_all(state, &names, &user, trace.time).await?;
    let plan = plan(state, &parts, body, model, permit)?;
    if let Act::List(kind) = call.act {
        return super::lists::merged(state, &plan, parts.uri.path(), kind, &user, trace).await;
    }
    let home = match (&owner, call.act) {
        (None, Act::Create(_)) => affinity::home_key(state, &user, trace.time).await,
        _ => None,
    };
    let retry = matches!(call.act, Act::Create(_)) && owner.is_none();
    let (parts, relay, entry) = match run(state, &plan, owner.as_ref(), home, retry, trace).await? {
        Ran::Answer(resp) => return Ok(resp),
        Ran::Success(parts, relay, entry) => (parts, relay, entry),
    };
    let answer = primed_bytes(&relay);
    match call.act {
        Act::Create(kind) => {
            if let Some(name) = created_name(kind, &answer) {
                affinity::record(state, &name, &entry.id, &user, trace.time, &answer).await?;
                trace.resource = Some(name);
            }
        }
        Act::Owned { delete: true } => {
            if let Some(row) = &owner {
                let _ = state.store.delete_resource(&row.name).await;
            }
        }
        _ => {}
    }
    record_produced(state, &answer, &entry, &user, trace.time).await?;
    Ok(respond(parts, relay))
}

/// A generation request whose body names resources: sent to their owner only.
pub async fn pinned(
    state: &Arc<AppState>,
    plan: Plan,
    user: &UserRecord,
    names: &[String],
    trace: &mut Trace,
) -> Result<Response<Body>, ApiError> {
    trace.resource = names.first().cloned();
    let owner = affinity::owner_of_all(state, names, user, trace.time).await?;
    match run(state, &plan, owner.as_ref(), None, false, trace).await? {
        Ran::Answer(resp) => Ok(resp),
        Ran::Success(parts, relay, _) => Ok(respond(parts, relay)),
    }
}

/// The name a create answer gives its resource.
fn created_name(kind: Kind, answer: &[u8]) -> Option<String> {
    if kind == Kind::Interactions {
        return refs::first_field(answer, "id").map(|id| format!("interactions/{id}"));
    }
    if kind == Kind::AuthTokens {
        // The token is a credential: its row is named by its hash.
        let name = refs::first_field(answer, "name")?;
        return Some(affinity::token_row(&name));
    }
    let name = refs::first_field(answer, "name")?;
    native::owner_of_name(&name)
}

/// Files an answer brings into being on the same key (a Veo video, a batch's results).
async fn record_produced(
    state: &AppState,
    answer: &[u8],
    entry: &KeyEntry,
    user: &UserRecord,
    now: i64,
) -> Result<(), ApiError> {
    for name in refs::produced(answer) {
        let known = state.store.resource(&name).await.ok().flatten();
        if known.is_none() {
            affinity::record(state, &name, &entry.id, user, now, b"").await?;
        }
    }
    Ok(())
}

/// The path after `/{version}/` (or `/upload/{version}/`), split at `/`.
pub(super) fn native_segments(path: &str) -> Vec<&str> {
    let path = path.trim_start_matches('/');
    let path = path.strip_prefix("upload/").unwrap_or(path);
    let rest = path.split_once('/').map_or("", |(_, r)| r);
    rest.split('/').collect()
}

/// `gemini-x` for `models/gemini-x:method` and `models/gemini-x/operations/…`.
fn path_model<'a>(segs: &[&'a str]) -> Option<&'a str> {
    match segs {
        ["models", m, ..] => m.split(':').next(),
        _ => None,
    }
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
        model,
        method: parts.method.clone(),
        uri,
        headers: forward_headers(&parts.headers, FORWARDED),
        body,
        key_in: KeyIn::GoogHeader,
        stream,
        hide_usage: false,
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
            (Some(row), _) => affinity::owner_lease(state, row, &plan.model, now)?,
            (None, Some(h)) if n == 0 => affinity::owner_lease(state, h, &plan.model, now)
                .or_else(|_| select(state, &plan.model, &tried, now))?,
            _ => select(state, &plan.model, &tried, now)?,
        };
        let entry = lease.entry.clone();
        let started = Instant::now();
        let req = build_request(plan, &entry);
        let deadline = started + state.config.upstream.request_timeout;
        let sent = match state.upstream.send(plan.lane, req, deadline).await {
            Ok(resp) => answer(state, plan, lease, resp).await,
            Err(e) => failed(state, plan, &lease, e.to_string()),
        };
        let (outcome, status, error) = match &sent {
            Sent::Ok(parts, _) => ("ok", Some(parts.status.as_u16()), None),
            Sent::Refused(resp, o) => (outcome_name(o), Some(resp.status().as_u16()), None),
            Sent::Failed(reason) => ("transient", None, Some(reason.clone())),
        };
        trace.bytes_up = plan.body.len() as u64;
        trace.attempts.push(Attempt {
            key: entry.clone(),
            outcome,
            status,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            error,
        });
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

fn select(
    state: &AppState,
    model: &str,
    tried: &[Arc<KeyEntry>],
    now: i64,
) -> Result<Lease, ApiError> {
    state.pool.acquire(model, now, tried).map_err(|no| {
        if no.busy {
            ApiError::AllBusy(Duration::from_secs(1))
        } else if let Some(t) = no.earliest_ms {
            ApiError::AllCooling(Duration::from_millis((t - now).max(0) as u64))
        } else {
            ApiError::NoKey
        }
    })
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
    fn segments_and_model_of_a_native_path() {
        assert_eq!(native_segments("/v1beta/files/abc"), ["files", "abc"]);
        assert_eq!(native_segments("/upload/v1beta/files"), ["files"]);
        let segs = native_segments("/v1/models/veo-3:predictLongRunning");
        assert_eq!(path_model(&segs), Some("veo-3"));
        assert_eq!(
            created_name(Kind::Interactions, br#"{"id":"v1_a"}"#).as_deref(),
            Some("interactions/v1_a")
        );
        assert_eq!(
            created_name(
                Kind::TunedModels,
                br#"{"name":"tunedModels/t/operations/o"}"#
            )
            .as_deref(),
            Some("tunedModels/t")
        );
    }
}
