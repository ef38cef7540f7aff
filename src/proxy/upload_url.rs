//! The upload URL a resumable upload's `start` answer names: Google's URL, without any
//! `key=` echoed into it, is bound to the key and user in the store (`upload/{id}`), and
//! the client is handed the gateway's own URL for it instead.

use crate::affinity;
use crate::app::AppState;
use crate::client_addr;
use crate::error::ApiError;
use crate::store::UserRecord;
use crate::store::affinity::ResourceRecord;
use http::request::Parts;
use http::{HeaderValue, Uri};

pub(super) const UPLOAD_URL: &str = "x-goog-upload-url";

/// Binds the upload session Google's URL `google` names to the key `key_id` and `user`,
/// and answers the gateway's own URL for it.
pub(super) async fn bind(
    state: &AppState,
    parts: &Parts,
    google: &str,
    key_id: &str,
    user: &UserRecord,
    now: i64,
) -> Result<HeaderValue, ApiError> {
    let (google, id) = without_key(google).ok_or_else(|| {
        ApiError::Unreachable("the upstream's upload URL has no upload id".into())
    })?;
    let row = ResourceRecord {
        name: format!("upload/{id}"),
        key_id: key_id.to_owned(),
        user_id: user.id.clone(),
        created_ms: now,
        expires_ms: now + affinity::retention_ms("upload/"),
        size: None,
        upstream: Some(google.to_string()),
    };
    affinity::put(&state.store, row).await?;
    public_upload_url(state, parts, &google)
        .and_then(|u| HeaderValue::from_str(&u).ok())
        .ok_or_else(|| ApiError::BadRequest("The request has no usable Host.".into()))
}

/// Google's upload URL without a `key=` parameter, and its upload id.
fn without_key(url: &str) -> Option<(Uri, String)> {
    let uri: Uri = url.parse().ok()?;
    let query = uri.query()?;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && *p != "key" && !p.starts_with("key="))
        .collect();
    let id = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "upload_id")
        .map(|(_, v)| v.into_owned())?;
    let pq = format!("{}?{}", uri.path(), kept.join("&"));
    let mut parts = uri.into_parts();
    parts.path_and_query = Some(pq.parse().ok()?);
    Some((Uri::from_parts(parts).ok()?, id))
}

/// The gateway's own URL for an upload: its public base, then Google's path and query
/// (without the base URL's own path prefix).
fn public_upload_url(state: &AppState, parts: &Parts, google: &Uri) -> Option<String> {
    let cfg = &state.config.server;
    let base = match &cfg.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let header = |n: &str| {
                parts
                    .headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.split(',').next().unwrap_or("").trim().to_owned())
                    .filter(|v| !v.is_empty())
            };
            let proxies = &cfg.trusted_proxies;
            match client_addr::forwarded(proxies, parts, "x-forwarded-host") {
                Some(host) => {
                    let proto = client_addr::forwarded(proxies, parts, "x-forwarded-proto");
                    format!("{}://{host}", proto.unwrap_or("https"))
                }
                None => format!("http://{}", header("host")?),
            }
        }
    };
    let prefix = upstream_prefix(state);
    let pq = google.path_and_query()?.as_str();
    Some(format!("{base}{}", pq.strip_prefix(&prefix).unwrap_or(pq)))
}

/// The path of the configured base URL (usually empty).
pub(super) fn upstream_prefix(state: &AppState) -> String {
    let base: Option<Uri> = state.config.upstream.base_url.parse().ok();
    base.map(|u| u.path().trim_end_matches('/').to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echoed_key_leaves_the_upload_url() {
        let (uri, id) = without_key(
            "https://generativelanguage.googleapis.com/upload/v1beta/files?key=AIzaSECRET&upload_id=AU-1&upload_protocol=resumable",
        )
        .unwrap();
        assert_eq!(id, "AU-1");
        assert_eq!(
            uri.to_string(),
            "https://generativelanguage.googleapis.com/upload/v1beta/files?upload_id=AU-1&upload_protocol=resumable"
        );
        assert!(without_key("https://x/upload/v1beta/files?upload_protocol=resumable").is_none());
    }
}
