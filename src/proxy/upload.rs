//! The Files API's resumable upload (`/upload/{version}/files`, and uploads into a file
//! search store). The `start` request is authenticated like any other and goes to the
//! user's home key (or the store's owner); Google's answer names an upload URL, which is
//! bound to that key and user in the store (`upload/{id}`) and handed to the client
//! rewritten to the gateway's own URL — `server.public_url`, else `X-Forwarded-Proto` /
//! `X-Forwarded-Host` from a peer in `server.trusted_proxies`, else the request's
//! `Host` — without any `key=` Google may have echoed into it.
//!
//! The byte requests that follow (`upload`, `upload, finalize`, `query`) carry no API key:
//! the upload id is the credential, as SDKs treat it. Their bodies stream through to
//! Google as they arrive, never held whole, up to `server.max_upload_bytes`, and are never
//! retried. The finalizing answer names the file, recorded before it is relayed.

use super::send::{self, Ran, Sent};
use super::upload_url::{self, UPLOAD_URL};
use super::{FORWARDED, KeyIn, Plan, authenticate, client_key, forward_headers, read_body};
use crate::affinity;
use crate::app::AppState;
use crate::body::{Body, ReqBody};
use crate::boxerror::BoxError;
use crate::error::{ApiError, Shape};
use crate::keys::KeyEntry;
use crate::limits::Permit;
use crate::logs::{Attempt, Trace};
use crate::metrics::Rejected;
use crate::native;
use crate::refs;
use crate::relay::{ErrorStyle, Relay};
use crate::store::UserRecord;
use crate::store::affinity::ResourceRecord;
use crate::upstream::{Lane, Via};
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Request, Response, Uri, header};
use http_body_util::{BodyExt, Limited};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

/// Headers of the upload protocol, forwarded both ways.
const UPLOAD_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "user-agent",
    "x-goog-api-client",
    "x-goog-upload-protocol",
    "x-goog-upload-command",
    "x-goog-upload-offset",
    "x-goog-upload-header-content-length",
    "x-goog-upload-header-content-type",
    "x-goog-upload-file-name",
];

/// `route`: the method's name in the log, set once the caller is known.
pub async fn handle(
    state: &Arc<AppState>,
    req: Request<ReqBody>,
    route: &'static str,
    trace: &mut Trace,
) -> Result<Response<Body>, ApiError> {
    match query_param(req.uri(), "upload_id") {
        Some(id) => bytes(state, req, &id, route, trace).await,
        None => start(state, req, route, trace).await,
    }
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn start(
    state: &Arc<AppState>,
    req: Request<ReqBody>,
    route: &'static str,
    trace: &mut Trace,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    let now = trace.time;
    let user = authenticate(state, &parts.headers, &parts.uri, now)?;
    trace.route = Some(route);
    trace.user = Some(user.name.clone());
    super::names::path(parts.uri.path())?;
    let permit = super::admit(state, &user, "", trace).await?;
    let body = read_body(body, &parts.headers, state.config.server.max_body_bytes).await?;
    let segs = send::native_segments(parts.uri.path());
    let owner = match native::owner_of(&segs) {
        Some(name) => Some(affinity::lookup(state, &name, &user, now).await?),
        None => None,
    };
    let home = match owner {
        None => affinity::home_key(state, &user, now).await,
        Some(_) => None,
    };
    let mut plan = send::plan(state, &parts, body, String::new(), permit)?;
    plan.headers = forward_headers(&parts.headers, UPLOAD_HEADERS);
    plan.headers.remove(header::CONTENT_LENGTH);
    let (mut answer, relay, entry) =
        match send::run(state, &plan, owner.as_ref(), home, true, trace).await? {
            Ran::Answer(resp) => return Ok(resp),
            Ran::Success(parts, relay, entry) => (parts, relay, entry),
        };
    match answer.headers.get(UPLOAD_URL).and_then(|v| v.to_str().ok()) {
        Some(google) => {
            let ours = upload_url::bind(state, &parts, google, &entry.id, &user, now).await?;
            answer.headers.insert(UPLOAD_URL, ours);
        }
        None => {
            // A multipart (one-request) upload: the answer is the file.
            let bytes = send::primed_bytes(&relay);
            if let Some(name) = refs::first_field(&bytes, "name") {
                affinity::record(state, &name, &entry.id, &user, now, &bytes).await?;
            }
        }
    }
    Ok(send::respond(answer, relay))
}

/// A byte request of an upload session: found by its upload id alone.
async fn bytes(
    state: &Arc<AppState>,
    req: Request<ReqBody>,
    id: &str,
    route: &'static str,
    trace: &mut Trace,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    let now = trace.time;
    let row = session(state, id, now).await?;
    let user = uploader(state, &row, &parts.headers, &parts.uri, now).inspect_err(|e| {
        if matches!(e, ApiError::ResourceNotFound) {
            state.metrics.rejected(Rejected::UnknownUpload);
        }
    })?;
    trace.route = Some(route);
    trace.user = Some(user.name.clone());
    let permit = super::admit(state, &user, "", trace).await?;
    let limit = state.config.server.max_upload_bytes;
    if declared_length(&parts.headers).is_some_and(|n| n > limit) {
        return Err(ApiError::BodyTooLarge(limit as usize));
    }
    let lease = affinity::owner_lease(state, &row, "", now).await?;
    let entry = lease.entry.clone();
    let uri = session_uri(state, &row)?;
    let mut headers = forward_headers(&parts.headers, UPLOAD_HEADERS);
    if let Some(v) = &entry.goog_header {
        headers.insert("x-goog-api-key", v.clone());
    }
    let sent_bytes = Arc::new(AtomicU64::new(0));
    let mut up = counted_body(body, limit as usize, sent_bytes.clone());
    *up.method_mut() = parts.method.clone();
    *up.uri_mut() = uri.clone();
    *up.headers_mut() = headers;
    let plan = byte_plan(&parts, uri, permit);
    let started = Instant::now();
    let deadline = started + state.config.pool.request_deadline;
    let via = Via::key(&entry.id, entry.proxy());
    let sent = match state.upstream.send_streaming(&via, up, deadline).await {
        Ok(resp) => send::answer(state, &plan, lease, resp).await,
        Err(e) => send::failed(state, &plan, &lease, e.to_string()),
    };
    trace.bytes_up = sent_bytes.load(Ordering::Relaxed);
    trace.attempts.push(attempt(entry.clone(), &sent, started));
    let (mut answer, relay) = match sent {
        Sent::Ok(parts, relay) => (parts, relay),
        Sent::Refused(resp, _) => return Ok(resp),
        Sent::Failed(reason) => return Err(ApiError::Unreachable(reason)),
    };
    answer.headers.remove(UPLOAD_URL);
    if is_final(&answer.headers) {
        finalize(state, &relay, &row, &entry.id, &user, now, trace).await?;
    }
    Ok(send::respond(answer, relay))
}

/// A request streaming `body` through, cut at `limit` bytes, adding what passed to `sent`.
fn counted_body(
    body: ReqBody,
    limit: usize,
    sent: Arc<AtomicU64>,
) -> Request<Limited<impl http_body::Body<Data = Bytes, Error = BoxError>>> {
    let body = body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            sent.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        frame
    });
    Request::new(Limited::new(body, limit))
}

/// The upload session `id` names, while it lasts.
async fn session(state: &AppState, id: &str, now: i64) -> Result<ResourceRecord, ApiError> {
    match state.store.resource(&format!("upload/{id}")).await {
        Ok(Some(row)) if row.expires_ms > now => Ok(row),
        Ok(_) => {
            state.metrics.rejected(Rejected::UnknownUpload);
            Err(ApiError::ResourceNotFound)
        }
        Err(e) => Err(ApiError::Store(e.to_string())),
    }
}

/// The body length the client declared, if it did.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Google's upload URL of the session, on the configured upstream.
fn session_uri(state: &AppState, row: &ResourceRecord) -> Result<Uri, ApiError> {
    let google: Uri = row
        .upstream
        .as_deref()
        .and_then(|u| u.parse().ok())
        .ok_or(ApiError::ResourceNotFound)?;
    let pq = google.path_and_query().map_or("/", |p| p.as_str());
    let prefix = upload_url::upstream_prefix(state);
    let pq = pq.strip_prefix(&prefix).unwrap_or(pq);
    let (path, query) = pq.split_once('?').unwrap_or((pq, ""));
    super::upstream_uri(state, &state.config.upstream.base_url, path, Some(query))
}

/// The plan a byte request is answered by: one attempt, relayed as Google sends it.
fn byte_plan(parts: &Parts, uri: Uri, permit: Arc<Permit>) -> Plan {
    Plan {
        shape: Shape::Google,
        style: ErrorStyle::Google,
        translate_error: None,
        model: String::new(),
        method: parts.method.clone(),
        uri,
        headers: forward_headers(&parts.headers, FORWARDED),
        body: Bytes::new(),
        key_in: KeyIn::GoogHeader,
        stream: false,
        hide_events: None,
        permit,
        lane: Lane::of(&parts.extensions),
    }
}

/// The byte request's one attempt, for the log.
fn attempt(key: Arc<KeyEntry>, sent: &Sent, started: Instant) -> Attempt {
    let (outcome, status, error) = match sent {
        Sent::Ok(p, _) => ("ok", Some(p.status.as_u16()), None),
        Sent::Refused(r, _) => ("client_error", Some(r.status().as_u16()), None),
        Sent::Failed(reason) => ("client_error", None, Some(reason.clone())),
    };
    Attempt {
        key,
        outcome,
        status,
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        error,
    }
}

/// Whether Google's answer ends the upload.
fn is_final(headers: &HeaderMap) -> bool {
    headers
        .get("x-goog-upload-status")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"final"))
}

/// Records the file the finalizing answer names, bound to the session's key and user,
/// and ends the session.
async fn finalize(
    state: &AppState,
    relay: &Relay,
    row: &ResourceRecord,
    key_id: &str,
    user: &UserRecord,
    now: i64,
    trace: &mut Trace,
) -> Result<(), ApiError> {
    let bytes = send::primed_bytes(relay);
    if let Some(name) = refs::first_field(&bytes, "name") {
        affinity::record(state, &name, key_id, user, now, &bytes).await?;
        trace.resource = Some(name);
    }
    let _ = state.store.delete_resource(&row.name).await;
    Ok(())
}

/// The user an upload session belongs to; a request that names another user's key (or a
/// session of a user since disabled) finds nothing.
fn uploader(
    state: &AppState,
    row: &ResourceRecord,
    headers: &HeaderMap,
    uri: &Uri,
    now: i64,
) -> Result<Arc<UserRecord>, ApiError> {
    if client_key(headers, uri).is_some() {
        let user = authenticate(state, headers, uri, now)?;
        return if user.id == row.user_id {
            Ok(user)
        } else {
            Err(ApiError::ResourceNotFound)
        };
    }
    state
        .users
        .all()
        .into_iter()
        .find(|u| u.id == row.user_id && u.enabled && u.expires_at.is_none_or(|t| t > now / 1000))
        .ok_or(ApiError::ResourceNotFound)
}
