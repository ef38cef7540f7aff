//! List routes (`files`, `cachedContents`, `batches`, `fileSearchStores`, `tunedModels`):
//! the caller's resources may sit on several keys, so the lists of every key holding one
//! of theirs are read (all pages, bounded), filtered to the caller's own names, and paged
//! again here. The `pageToken` handed out is an offset into that merged, name-sorted
//! list; `pageSize` defaults to 10 and is capped at 100, as Google's.

use super::Plan;
use super::attempt::relay_error;
use crate::affinity;
use crate::app::AppState;
use crate::body::Body;
use crate::error::ApiError;
use crate::logs::{Attempt, Trace};
use crate::native::Kind;
use crate::store::UserRecord;
use crate::store::affinity::ResourceRecord;
use crate::upstream::Via;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use tokio::time::Instant;

/// Pages read from one key at most.
const MAX_PAGES: usize = 20;
/// The most of one list page read.
const PAGE_LIMIT: usize = 16 << 20;

pub async fn merged(
    state: &AppState,
    plan: &Plan,
    path: &str,
    kind: Kind,
    user: &UserRecord,
    trace: &mut Trace,
) -> Result<Response<Body>, ApiError> {
    let now = trace.time;
    let mine = live_resources(state, user, kind, now).await?;
    let names: BTreeSet<&str> = mine.iter().map(|r| r.name.as_str()).collect();
    let mut by_key: BTreeMap<&str, &ResourceRecord> = BTreeMap::new();
    for r in &mine {
        by_key.entry(r.key_id.as_str()).or_insert(r);
    }
    let mut items: BTreeMap<String, Value> = BTreeMap::new();
    for row in by_key.values() {
        let lease = affinity::owner_lease(state, row, "", now).await?;
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let q = page_query(token.as_deref());
            let page = match read_page(state, plan, path, &q, &lease.entry, trace).await? {
                Ok(page) => page,
                Err(resp) => return Ok(resp),
            };
            for item in page[kind.list_field()].as_array().into_iter().flatten() {
                if let Some(name) = item["name"].as_str().filter(|n| names.contains(n)) {
                    items.insert(name.to_owned(), item.clone());
                }
            }
            token = page["nextPageToken"].as_str().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
    }
    Ok(page_of(plan, kind, items))
}

/// The caller's resources of `kind` that have not expired.
async fn live_resources(
    state: &AppState,
    user: &UserRecord,
    kind: Kind,
    now: i64,
) -> Result<Vec<ResourceRecord>, ApiError> {
    let prefix = affinity::prefix(kind);
    let rows = state
        .store
        .resources(Some(&user.id))
        .await
        .map_err(|e| ApiError::Store(e.to_string()))?;
    Ok(rows
        .into_iter()
        .filter(|r| r.name.starts_with(&prefix) && r.expires_ms > now)
        .collect())
}

/// The query of one upstream list page: the largest pages, from `token` on.
fn page_query(token: Option<&str>) -> String {
    let mut q = String::from("pageSize=100");
    if let Some(t) = token {
        q.push_str("&pageToken=");
        q.extend(form_urlencoded::byte_serialize(t.as_bytes()));
    }
    q
}

/// The page of the merged list the client asked for (`pageSize`, `pageToken`), as
/// Google answers a list.
fn page_of(plan: &Plan, kind: Kind, items: BTreeMap<String, Value>) -> Response<Body> {
    let param = |name: &str| {
        plan.uri.query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        })
    };
    let size = param("pageSize")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(10)
        .min(100);
    let from = param("pageToken")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let page: Vec<Value> = items.into_values().skip(from).collect();
    let more = page.len() > size;
    let page: Vec<Value> = page.into_iter().take(size).collect();
    let mut out = json!({});
    if !page.is_empty() {
        out[kind.list_field()] = Value::Array(page.clone());
    }
    if more {
        out["nextPageToken"] = json!((from + page.len()).to_string());
    }
    let mut resp = Response::new(Body::full(out.to_string()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    super::headers::guard(resp.headers_mut());
    resp
}

/// One list page from one key: the parsed page, or Google's error to relay.
async fn read_page(
    state: &AppState,
    plan: &Plan,
    path: &str,
    query: &str,
    key: &crate::keys::KeyEntry,
    trace: &mut Trace,
) -> Result<Result<Value, Response<Body>>, ApiError> {
    let uri = super::upstream_uri(state, &state.config.upstream.base_url, path, Some(query))?;
    let mut req = Request::get(uri)
        .body(Full::new(Bytes::new()))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if let Some(v) = &key.goog_header {
        req.headers_mut().insert("x-goog-api-key", v.clone());
    }
    let started = Instant::now();
    let deadline = started + state.config.upstream.request_timeout;
    let via = Via::key(&key.id, key.proxy());
    let resp = state.upstream.send(plan.lane, &via, req, deadline).await;
    let mut attempt = Attempt {
        key: state.pool.get(&key.id).ok_or(ApiError::NoKey)?,
        outcome: "ok",
        status: None,
        latency_ms: 0.0,
        error: None,
    };
    let result = match resp {
        Err(e) => {
            attempt.outcome = "transient";
            attempt.error = Some(e.to_string());
            Err(ApiError::Unreachable(e.to_string()))
        }
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            attempt.status = Some(parts.status.as_u16());
            let bytes = match Limited::new(body, PAGE_LIMIT).collect().await {
                Ok(c) => c.to_bytes(),
                Err(e) => return Err(ApiError::Unreachable(e.to_string())),
            };
            if parts.status.is_success() {
                Ok(Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
            } else {
                attempt.outcome = "client_error";
                Ok(Err(relay_error(plan, parts.status, &parts.headers, bytes)))
            }
        }
    };
    attempt.latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    trace.attempts.push(attempt);
    result
}
