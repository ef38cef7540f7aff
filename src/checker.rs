//! Validating upstream keys without spending generation quota: `GET models` with the key,
//! through the key's egress proxy.
//! Used by the periodic re-validation of `invalid` keys (and by the admin "check" action).

use crate::app::AppState;
use crate::keys::KeyEntry;
use crate::keys::classify::{Outcome, classify};
use crate::upstream::{Lane, Via};
use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Full, Limited};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What a check found out about a key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Valid,
    Invalid,
    Suspended,
    RateLimited,
    /// The check itself failed (network, 5xx): says nothing about the key.
    Unknown,
}

pub async fn check(state: &AppState, entry: &KeyEntry) -> Verdict {
    let base = state.config.upstream.base_url.trim_end_matches('/');
    let Ok(uri) = format!("{base}/v1beta/models?pageSize=1").parse::<http::Uri>() else {
        return Verdict::Unknown;
    };
    let mut req = Request::new(Full::new(Bytes::new()));
    *req.uri_mut() = uri;
    let Ok(mut v) = HeaderValue::from_str(entry.key.expose()) else {
        return Verdict::Invalid;
    };
    v.set_sensitive(true);
    req.headers_mut().insert("x-goog-api-key", v);
    let timeout = state.config.upstream.request_timeout;
    let Ok(resp) = state
        .upstream
        .send(
            Lane::SHARED,
            &Via::key(&entry.id, entry.proxy()),
            req,
            tokio::time::Instant::now() + timeout,
        )
        .await
    else {
        return Verdict::Unknown;
    };
    let status = resp.status().as_u16();
    let body = match Limited::new(resp.into_body(), 1 << 20).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => Bytes::new(),
    };
    match classify(status, &body) {
        Outcome::Success => Verdict::Valid,
        Outcome::Invalid { reason } if reason.contains("SUSPENDED") || status == 403 => {
            Verdict::Suspended
        }
        Outcome::Invalid { .. } => Verdict::Invalid,
        Outcome::RateLimited { .. } => Verdict::RateLimited,
        Outcome::Transient { .. } | Outcome::ClientError => Verdict::Unknown,
    }
}

/// Every `revalidate_interval`, re-checks the retired keys and brings back those that work.
pub async fn revalidate_loop(state: Arc<AppState>, stop: CancellationToken) {
    let every = state.config.pool.revalidate_interval;
    if every.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        for entry in state.pool.entries() {
            if entry.status("", 0).0 != crate::keys::KeyStatus::Invalid {
                continue;
            }
            if check(&state, &entry).await == Verdict::Valid {
                tracing::info!(key = %entry.brief, "retired key is valid again");
                state.pool.revive(&entry);
            }
        }
    }
}
