//! Key affinity for the resources Google keeps per project: who owns a resource, which key
//! serves a request about it, and how long a row is kept. Rows live in the store (both
//! back-ends), so every instance routes a resource to the same key and a restart keeps
//! them. Owner rows are written before the creating answer is relayed.
//!
//! Users are kept apart: a name another user owns (or nobody) is 404 for everyone else.
//! The owner key is the only one that can serve: cooling gives 429 with `Retry-After` (no
//! rotation: another key cannot see the resource), retired or removed gives 409.

use crate::app::AppState;
use crate::error::ApiError;
use crate::keys::{KeyStatus, Lease};
use crate::native::Kind;
use crate::store::affinity::ResourceRecord;
use crate::store::{Store, UserRecord};
use std::time::Duration;

const HOUR_MS: i64 = 3600 * 1000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// How long Google keeps a resource it did not say the expiry of: files 48 h, upload
/// sessions a week, batches and operations 30 days, interactions 55 days (the paid
/// tier's retention); stores and tuned models until deleted.
pub fn retention_ms(name: &str) -> i64 {
    match name.split('/').next().unwrap_or("") {
        "files" => 48 * HOUR_MS,
        "upload" => 7 * DAY_MS,
        "cachedContents" => HOUR_MS,
        "batches" | "operations" | "models" => 30 * DAY_MS,
        "interactions" => 55 * DAY_MS,
        // A Live ephemeral token lives 30 minutes unless its creator asked for up to 20 h.
        "auth_tokens" => 20 * HOUR_MS,
        _ => 100 * 365 * DAY_MS,
    }
}

/// The row name of a Live ephemeral token (`auth_tokens/…`): the token is a credential,
/// so the table, the admin API and the logs see only its hash.
pub fn token_row(token: &str) -> String {
    format!("auth_tokens/{}", &crate::users::hash_key(token)[..32])
}

/// The expiry an answer states (`expireTime` / `expirationTime`, RFC 3339), if any.
pub fn stated_expiry_ms(answer: &[u8]) -> Option<i64> {
    let t = crate::refs::first_field(answer, "expireTime")
        .or_else(|| crate::refs::first_field(answer, "expirationTime"))?;
    let ts: jiff::Timestamp = t.parse().ok()?;
    Some(ts.as_millisecond())
}

/// The row of `name` if `user` owns it and it has not expired; 404 otherwise.
pub async fn lookup(
    state: &AppState,
    name: &str,
    user: &UserRecord,
    now_ms: i64,
) -> Result<ResourceRecord, ApiError> {
    let row = state
        .store
        .resource(name)
        .await
        .map_err(|e| ApiError::Store(e.to_string()))?;
    match row {
        Some(r) if r.user_id == user.id && r.expires_ms > now_ms => Ok(r),
        _ => Err(ApiError::ResourceNotFound),
    }
}

/// The owner of everything `names` refers to (one key), or `None` when it names nothing.
pub async fn owner_of_all(
    state: &AppState,
    names: &[String],
    user: &UserRecord,
    now_ms: i64,
) -> Result<Option<ResourceRecord>, ApiError> {
    let mut owner: Option<ResourceRecord> = None;
    for name in names {
        let row = lookup(state, name, user, now_ms).await?;
        match &owner {
            Some(o) if o.key_id != row.key_id => {
                return Err(ApiError::TwoOwners(o.name.clone(), row.name));
            }
            Some(_) => {}
            None => owner = Some(row),
        }
    }
    Ok(owner)
}

/// A lease on the key holding `row`, for `model`: the only key that can serve it. A
/// known limit does not keep the request from it (no other key could take it), but it
/// is counted in the key's ledger, the shared one included, so other requests see it.
pub async fn owner_lease(
    state: &AppState,
    row: &ResourceRecord,
    model: &str,
    now_ms: i64,
) -> Result<Lease, ApiError> {
    let pool = &state.pool;
    let Some(entry) = pool.get(&row.key_id) else {
        return Err(ApiError::OwnerGone(row.name.clone()));
    };
    match entry.status_pinned(model, now_ms) {
        (KeyStatus::Invalid | KeyStatus::Disabled, _) => {
            return Err(ApiError::OwnerGone(row.name.clone()));
        }
        (KeyStatus::Cooling | KeyStatus::Unavailable, until) => {
            let wait = Duration::from_millis((until - now_ms).max(0) as u64);
            return Err(ApiError::OwnerCooling(row.name.clone(), wait));
        }
        (KeyStatus::Active, _) => {}
    }
    let lease = pool
        .pin(&entry, model, now_ms)
        .ok_or(ApiError::AllBusy(Duration::from_secs(1)))?;
    pool.count_shared(&lease, model, now_ms).await;
    Ok(lease)
}

/// A lease on the user's home key (`home_key`) for `model`, when it can serve now
/// within its limits; else the request goes by normal selection.
pub async fn home_lease(
    state: &AppState,
    row: &ResourceRecord,
    model: &str,
    now_ms: i64,
) -> Option<Lease> {
    let pool = &state.pool;
    let entry = pool.get(&row.key_id)?;
    if entry.status(model, now_ms).0 != KeyStatus::Active {
        return None;
    }
    let lease = pool.pin(&entry, model, now_ms)?;
    pool.confirm(&lease, model, now_ms).await.then_some(lease)
}

/// The key a user's new resources go to while it is usable: the one holding their newest
/// resource, so a chat naming several of their files finds them all on one key.
pub async fn home_key(state: &AppState, user: &UserRecord, now_ms: i64) -> Option<ResourceRecord> {
    let rows = state.store.resources(Some(&user.id)).await.ok()?;
    let newest = rows
        .into_iter()
        .filter(|r| r.expires_ms > now_ms)
        .max_by_key(|r| r.created_ms)?;
    let entry = state.pool.get(&newest.key_id)?;
    (entry.status("", now_ms).0 == KeyStatus::Active).then_some(newest)
}

/// Records that `key_id` holds `name` for `user`, until the stated or usual expiry.
pub async fn record(
    state: &AppState,
    name: &str,
    key_id: &str,
    user: &UserRecord,
    now_ms: i64,
    answer: &[u8],
) -> Result<ResourceRecord, ApiError> {
    let expires_ms = stated_expiry_ms(answer)
        .filter(|t| *t > now_ms)
        .unwrap_or(now_ms + retention_ms(name));
    let size = crate::refs::first_field(answer, "sizeBytes").and_then(|s| s.parse().ok());
    let row = ResourceRecord {
        name: name.to_owned(),
        key_id: key_id.to_owned(),
        user_id: user.id.clone(),
        created_ms: now_ms,
        expires_ms,
        size,
        upstream: None,
    };
    put(&state.store, row.clone()).await?;
    tracing::info!(target: "resources", resource = name, user = user.name, "resource created");
    Ok(row)
}

pub async fn put(store: &Store, row: ResourceRecord) -> Result<(), ApiError> {
    store
        .put_resource(row)
        .await
        .map_err(|e| ApiError::Store(e.to_string()))
}

/// The collection a list route covers, as a name prefix.
pub fn prefix(kind: Kind) -> String {
    format!("{}/", kind.collection())
}

/// Drops rows Google has dropped, every ten minutes, until `stop`.
pub async fn prune_loop(store: Store, stop: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(600)) => {}
        }
        match store.prune_resources(crate::keys::unix_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "pruned expired resource rows"),
            Err(e) => tracing::error!(error = %e, "pruning resource rows failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_by_kind_and_stated_expiry() {
        assert_eq!(retention_ms("files/a"), 48 * HOUR_MS);
        assert_eq!(retention_ms("upload/x"), 7 * DAY_MS);
        assert_eq!(retention_ms("models/veo/operations/o"), 30 * DAY_MS);
        let answer = br#"{"name":"cachedContents/c","expireTime":"2026-01-01T01:00:00.5Z"}"#;
        assert_eq!(stated_expiry_ms(answer), Some(1_767_229_200_500));
        assert_eq!(stated_expiry_ms(br#"{"expireTime":"soon"}"#), None);
    }
}
