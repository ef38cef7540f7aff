//! `/api/keys…`: list with live state, bulk add, patch, delete, reset, check, export.

use super::{json, parse_json, read};
use crate::app::AppState;
use crate::body::Body;
use crate::body::ReqBody;
use crate::checker::{self, Verdict};
use crate::config::SetLimits;
use crate::config::{ProxyUrl, check_limits};
use crate::error::ApiError;
use crate::keys::format::{extract_keys, looks_like_key};
use crate::keys::{KeyEntry, unix_ms};
use crate::secret::Secret;
use http::{HeaderValue, Request, Response, StatusCode, header};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Upstream checks run at most this many at a time.
const CHECK_CONCURRENCY: usize = 8;

pub fn list(state: &AppState) -> Result<Response<Body>, ApiError> {
    let now = unix_ms();
    let keys: Vec<_> = state.pool.entries().iter().map(|e| e.view(now)).collect();
    let groups: Vec<_> = state
        .pool
        .groups()
        .into_iter()
        .map(|(name, keys)| serde_json::json!({ "name": name, "keys": keys }))
        .collect();
    let body = serde_json::json!({
        "keys": keys,
        "quotas": state.pool.quotas(),
        "groups": groups,
    });
    Ok(json(StatusCode::OK, &body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddJson {
    keys: Vec<String>,
}

pub async fn add(state: &AppState, req: Request<ReqBody>) -> Result<Response<Body>, ApiError> {
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let bytes = read(req).await?;
    let candidates = if ctype.starts_with("application/json") {
        parse_json::<AddJson>(&bytes)?
            .keys
            .iter()
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect()
    } else if ctype.starts_with("text/plain") {
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| ApiError::BadRequest("The text is not valid UTF-8.".into()))?;
        extract_keys(text)
    } else {
        return Err(ApiError::UnsupportedMediaType(
            "application/json {\"keys\":[…]} or text/plain",
        ));
    };
    let (counts, fresh) = sort_candidates(state, candidates);
    let added = state.pool.add(&fresh, unix_ms());
    state.persister.sync().await;
    let body = serde_json::json!({
        "added": added.len(),
        "present": counts.present + (fresh.len() - added.len()),
        "rejected": counts.rejected,
        "ids": added.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
    });
    Ok(json(StatusCode::OK, &body))
}

struct Counts {
    present: usize,
    rejected: usize,
}

/// Splits candidates into new keys and counts of those already present or malformed.
/// Every count is of distinct keys: a key pasted twice is counted once.
fn sort_candidates(
    state: &AppState,
    candidates: Vec<String>,
) -> (Counts, Vec<(Secret, Option<String>)>) {
    let mut counts = Counts {
        present: 0,
        rejected: 0,
    };
    let mut seen = HashSet::new();
    let mut fresh = Vec::new();
    for c in candidates {
        if !seen.insert(c.clone()) {
            continue;
        }
        if !looks_like_key(&c) {
            counts.rejected += 1;
        } else if state.pool.get(&crate::keys::key_id(&c)).is_some() {
            counts.present += 1;
        } else {
            fresh.push((Secret::new(c), None));
        }
    }
    (counts, fresh)
}

fn entry(state: &AppState, id: &str) -> Result<Arc<KeyEntry>, ApiError> {
    state.pool.get(id).ok_or(ApiError::NoSuch("Key"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    enabled: Option<bool>,
    disabled: Option<bool>,
    #[serde(default, deserialize_with = "double_option")]
    note: Option<Option<String>>,
    /// The Cloud project (its number, as Google's errors name it); `null` forgets it.
    #[serde(default, deserialize_with = "double_option")]
    project: Option<Option<String>>,
    /// Limits by model name or glob, `{"gemini-2.5-pro": {"rpm": 5, "rpd": 100,
    /// "tpm": 250000}}`, replacing the key's; `null` or `{}` clears them.
    #[serde(default, deserialize_with = "double_option")]
    limits: Option<Option<BTreeMap<String, SetLimits>>>,
    /// The key group (a `[[groups]]` name, or `default`); `null`: `default`.
    #[serde(default, deserialize_with = "double_option")]
    group: Option<Option<String>>,
    /// The key's own egress proxy URL (`http://`, `socks5://`, `socks5h://`); `null`
    /// clears it.
    #[serde(default, deserialize_with = "double_option")]
    proxy: Option<Option<String>>,
}

/// A project id as Google writes them: letters, digits, `-`, `_`, `.`, `:`, at most 100.
fn valid_project(p: &str) -> bool {
    p.len() <= 100
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A key's proxy URL from a patch (`None`: clear it); a bad one is a 400 that does not
/// quote it.
fn parse_proxy(url: Option<String>) -> Result<Option<ProxyUrl>, ApiError> {
    url.map(|u| ProxyUrl::parse(&u))
        .transpose()
        .map_err(|why| ApiError::BadRequest(format!("proxy: {why}.")))
}

/// Tells `"note": null` (clear) apart from a missing `note` (leave as is).
fn double_option<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

pub async fn patch(
    state: &AppState,
    id: &str,
    req: Request<ReqBody>,
) -> Result<Response<Body>, ApiError> {
    let e = entry(state, id)?;
    let p: Patch = parse_json(&read(req).await?)?;
    let limits = p.limits.map(Option::unwrap_or_default);
    if let Some(Err(why)) = limits.as_ref().map(check_limits) {
        return Err(ApiError::BadRequest(format!("limits: {why}.")));
    }
    let proxy = p.proxy.map(parse_proxy).transpose()?;
    if let Some(Some(g)) = &p.group {
        if !state.pool.knows_group(g) {
            return Err(ApiError::BadRequest(
                "No [[groups]] entry of the config declares that group.".into(),
            ));
        }
    }
    let disabled = match (p.enabled, p.disabled) {
        (Some(a), Some(b)) if a == b => {
            return Err(ApiError::BadRequest(
                "`enabled` and `disabled` disagree.".into(),
            ));
        }
        (Some(a), _) => Some(!a),
        (None, b) => b,
    };
    if let Some(d) = disabled {
        state.pool.set_disabled(&e, d);
    }
    if let Some(note) = p.note {
        if note.as_ref().is_some_and(|n| n.len() > 500) {
            return Err(ApiError::BadRequest(
                "The note is longer than 500 bytes.".into(),
            ));
        }
        state.pool.set_note(&e, note);
    }
    if let Some(project) = p.project {
        if project.as_deref().is_some_and(|p| !valid_project(p)) {
            return Err(ApiError::BadRequest(
                "The project is at most 100 letters, digits, '-', '_', '.' or ':'.".into(),
            ));
        }
        state.pool.set_project(&e, project);
    }
    if let Some(limits) = limits {
        state.pool.set_limits(&e, limits);
    }
    if let Some(group) = p.group {
        state.pool.set_group(&e, group);
    }
    if let Some(proxy) = proxy {
        state.pool.set_proxy(&e, proxy);
    }
    state.persister.sync().await;
    Ok(json(StatusCode::OK, &e.view(unix_ms())))
}

pub async fn delete(state: &AppState, id: &str) -> Result<Response<Body>, ApiError> {
    if !state.pool.remove(id) {
        return Err(ApiError::NoSuch("Key"));
    }
    state.persister.sync().await;
    Ok(json(StatusCode::OK, &serde_json::json!({ "deleted": id })))
}

pub async fn reset(state: &AppState, id: &str) -> Result<Response<Body>, ApiError> {
    let e = entry(state, id)?;
    state.pool.reset(&e);
    state.pool.reset_shared(&[&e.id], unix_ms()).await;
    state.persister.sync().await;
    Ok(json(StatusCode::OK, &e.view(unix_ms())))
}

pub async fn reset_all(state: &AppState) -> Result<Response<Body>, ApiError> {
    let n = state.pool.reset_all();
    let ids: Vec<String> = state.pool.entries().iter().map(|e| e.id.clone()).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    state.pool.reset_shared(&ids, unix_ms()).await;
    state.persister.sync().await;
    Ok(json(StatusCode::OK, &serde_json::json!({ "reset": n })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    #[serde(default)]
    ids: Option<Vec<String>>,
}

/// Validates keys with a quota-free call, a few at a time, and applies what it finds:
/// invalid or suspended keys are retired, valid retired keys come back.
pub async fn check(
    state: &Arc<AppState>,
    req: Request<ReqBody>,
) -> Result<Response<Body>, ApiError> {
    let bytes = read(req).await?;
    let body: CheckBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        CheckBody::default()
    } else {
        parse_json(&bytes)?
    };
    let entries: Vec<Arc<KeyEntry>> = match body.ids {
        Some(ids) => ids
            .iter()
            .map(|id| entry(state, id))
            .collect::<Result<_, _>>()?,
        None => state.pool.entries(),
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(CHECK_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, e) in entries.iter().enumerate() {
        let (st, e, slots) = (state.clone(), e.clone(), slots.clone());
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await;
            (i, checker::check(&st, &e).await)
        });
    }
    let mut verdicts = vec![Verdict::Unknown; entries.len()];
    while let Some(done) = tasks.join_next().await {
        if let Ok((i, v)) = done {
            verdicts[i] = v;
        }
    }
    let now = unix_ms();
    let mut results = Vec::with_capacity(entries.len());
    for (e, v) in entries.iter().zip(&verdicts) {
        match v {
            Verdict::Invalid => state.pool.retire(e, "API_KEY_INVALID (check)", now),
            Verdict::Suspended => state.pool.retire(e, "PERMISSION_DENIED (check)", now),
            Verdict::Valid => state.pool.revive(e),
            Verdict::RateLimited | Verdict::Unknown => {}
        }
        results.push(serde_json::json!({"id": e.id, "brief": e.brief, "verdict": v}));
    }
    state.persister.sync().await;
    let count = |want: Verdict| verdicts.iter().filter(|v| **v == want).count();
    let body = serde_json::json!({
        "results": results,
        "valid": count(Verdict::Valid),
        "invalid": count(Verdict::Invalid),
        "suspended": count(Verdict::Suspended),
        "rate_limited": count(Verdict::RateLimited),
        "unknown": count(Verdict::Unknown),
    });
    Ok(json(StatusCode::OK, &body))
}

/// Every key in full, one per line: the one place the admin can read them back.
pub fn export(state: &AppState) -> Result<Response<Body>, ApiError> {
    let mut text = String::new();
    for e in state.pool.entries() {
        text.push_str(e.key.expose());
        text.push('\n');
    }
    let mut resp = Response::new(Body::full(text));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"gemini-keys.txt\""),
    );
    Ok(resp)
}
