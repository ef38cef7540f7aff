//! `GET /api/resources`: what Google keeps per project for the gateway's users — files,
//! caches, batches, operations, interactions, upload sessions — as the affinity table
//! holds them, newest first, each with its owner key's brief and its user's name.
//! `?user=ID` narrows to one user, `?kind=files` to one kind. Read-only: a resource is
//! deleted through the Gemini API, with the user's key.

use super::json;
use crate::app::AppState;
use crate::body::Body;
use crate::error::ApiError;
use crate::keys::unix_ms;
use http::{Response, StatusCode, Uri};
use serde::Serialize;

/// The most rows one answer carries.
const LIMIT: usize = 1000;

#[derive(Serialize)]
struct View<'a> {
    name: &'a str,
    kind: &'a str,
    key_id: &'a str,
    /// The owner key's brief, or `null` once the key left the pool.
    key: Option<String>,
    user_id: &'a str,
    user: Option<String>,
    created_ms: i64,
    expires_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
}

pub async fn list(state: &AppState, uri: &Uri) -> Result<Response<Body>, ApiError> {
    let param = |name: &str| {
        form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.into_owned())
    };
    let (user, kind) = (param("user"), param("kind"));
    let mut rows = state
        .store
        .resources(user.as_deref())
        .await
        .map_err(|e| ApiError::Store(e.to_string()))?;
    let now = unix_ms();
    rows.retain(|r| r.expires_ms > now && kind.as_deref().is_none_or(|k| r.kind() == k));
    rows.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.name.cmp(&b.name)));
    let total = rows.len();
    rows.truncate(LIMIT);
    let users = state.users.all();
    let views: Vec<View> = rows
        .iter()
        .map(|r| View {
            name: &r.name,
            kind: r.kind(),
            key_id: &r.key_id,
            key: state.pool.get(&r.key_id).map(|e| e.brief.clone()),
            user_id: &r.user_id,
            user: users
                .iter()
                .find(|u| u.id == r.user_id)
                .map(|u| u.name.clone()),
            created_ms: r.created_ms,
            expires_ms: r.expires_ms,
            size: r.size,
        })
        .collect();
    let body = serde_json::json!({ "resources": views, "total": total });
    Ok(json(StatusCode::OK, &body))
}
