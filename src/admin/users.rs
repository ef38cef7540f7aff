//! `/api/users…`: the admin API over user keys (list, create, edit, rotate, delete).
//! The secret is shown once, at creation or rotation; only its hash and a display prefix
//! are kept.

use super::{json, parse_json, read};
use crate::app::AppState;
use crate::body::Body;
use crate::body::ReqBody;
use crate::error::ApiError;
use crate::keys::unix_ms;
use crate::store::{UserRecord, Write};
use crate::users;
use http::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
struct UserView<'a> {
    #[serde(flatten)]
    record: UserPublic<'a>,
    in_flight: u32,
    requests_today: u64,
    tokens_today: u64,
    last_used_at: Option<i64>,
}

/// A user record without its hash.
#[derive(Serialize)]
struct UserPublic<'a> {
    id: &'a str,
    name: &'a str,
    key_prefix: &'a str,
    enabled: bool,
    created_at: i64,
    expires_at: Option<i64>,
    models: &'a [String],
    rpm: Option<u32>,
    daily_tokens: Option<u64>,
    max_concurrent: Option<u32>,
    groups: &'a [String],
}

fn view<'a>(state: &AppState, r: &'a UserRecord) -> UserView<'a> {
    let usage = state.limits.usage(&r.id, unix_ms());
    UserView {
        record: UserPublic {
            id: &r.id,
            name: &r.name,
            key_prefix: &r.key_prefix,
            enabled: r.enabled,
            created_at: r.created_at,
            expires_at: r.expires_at,
            models: &r.models,
            rpm: r.rpm,
            daily_tokens: r.daily_tokens,
            max_concurrent: r.max_concurrent,
            groups: &r.groups,
        },
        in_flight: usage.in_flight,
        requests_today: usage.requests_today,
        tokens_today: usage.tokens_today,
        last_used_at: usage.last_used_at,
    }
}

pub fn list(state: &AppState) -> Result<Response<Body>, ApiError> {
    let mut all = state.users.all();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    let views: Vec<_> = all.iter().map(|r| view(state, r)).collect();
    Ok(json(StatusCode::OK, &serde_json::json!({ "users": views })))
}

/// A time given as Unix seconds or RFC 3339 text.
#[derive(Deserialize)]
#[serde(untagged)]
enum When {
    Unix(i64),
    Text(String),
}

impl When {
    fn seconds(&self) -> Result<i64, ApiError> {
        match self {
            When::Unix(s) => Ok(*s),
            When::Text(t) => t
                .parse::<jiff::Timestamp>()
                .map(|ts| ts.as_second())
                .map_err(|_| {
                    ApiError::BadRequest("`expires_at` must be Unix seconds or RFC 3339.".into())
                }),
        }
    }
}

/// Fields of a user the admin may set; on PATCH, absent fields stay as they are and
/// `null` clears an optional limit.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UserInput {
    name: Option<String>,
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "some")]
    expires_at: Option<Option<When>>,
    models: Option<Vec<String>>,
    #[serde(default, deserialize_with = "some")]
    rpm: Option<Option<u32>>,
    #[serde(default, deserialize_with = "some")]
    daily_tokens: Option<Option<u64>>,
    #[serde(default, deserialize_with = "some")]
    max_concurrent: Option<Option<u32>>,
    /// Key groups that may serve the user (`[[groups]]` names or `default`); empty: all.
    groups: Option<Vec<String>>,
}

fn some<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl UserInput {
    fn apply(self, rec: &mut UserRecord) -> Result<(), ApiError> {
        if let Some(name) = self.name {
            rec.name = valid_name(&name)?;
        }
        if let Some(e) = self.enabled {
            rec.enabled = e;
        }
        if let Some(exp) = self.expires_at {
            rec.expires_at = exp.map(|w| w.seconds()).transpose()?;
        }
        if let Some(models) = self.models {
            if models.iter().any(|m| m.is_empty() || m.len() > 200) {
                return Err(ApiError::BadRequest(
                    "Model patterns must be 1 to 200 bytes.".into(),
                ));
            }
            rec.models = models;
        }
        if let Some(v) = self.rpm {
            rec.rpm = v;
        }
        if let Some(v) = self.daily_tokens {
            rec.daily_tokens = v;
        }
        if let Some(v) = self.max_concurrent {
            rec.max_concurrent = v;
        }
        if let Some(groups) = self.groups {
            if groups.len() > 32 || !groups.iter().all(|g| crate::config::valid_group(g)) {
                return Err(ApiError::BadRequest(
                    "`groups` is at most 32 group names.".into(),
                ));
            }
            rec.groups = groups;
        }
        Ok(())
    }
}

/// Every group a user is limited to must be one a key can be in.
fn known_groups(state: &AppState, rec: &UserRecord) -> Result<(), ApiError> {
    match rec.groups.iter().find(|g| !state.pool.knows_group(g)) {
        Some(_) => Err(ApiError::BadRequest(
            "No [[groups]] entry of the config declares one of the `groups`.".into(),
        )),
        None => Ok(()),
    }
}

fn valid_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "A name is 1 to 100 printable characters.".into(),
        ));
    }
    Ok(name.to_owned())
}

/// Saves `records` (the full new list) and `writes`, then makes them live.
async fn commit(
    state: &AppState,
    records: Vec<UserRecord>,
    writes: Vec<Write>,
) -> Result<(), ApiError> {
    state
        .store
        .apply(writes)
        .await
        .map_err(|e| ApiError::Store(e.to_string()))?;
    state.users.replace(&records);
    Ok(())
}

fn current(state: &AppState) -> Vec<UserRecord> {
    state.users.all().iter().map(|r| (**r).clone()).collect()
}

fn name_taken(records: &[UserRecord], name: &str, except: &str) -> bool {
    records.iter().any(|r| r.name == name && r.id != except)
}

pub async fn create(state: &AppState, req: Request<ReqBody>) -> Result<Response<Body>, ApiError> {
    let input: UserInput = parse_json(&read(req).await?)?;
    let name = valid_name(input.name.as_deref().unwrap_or(""))?;
    let _guard = state.admin_lock.lock().await;
    let mut records = current(state);
    if name_taken(&records, &name, "") {
        return Err(ApiError::Conflict(format!(
            "A user named {name:?} already exists."
        )));
    }
    let key = users::generate_key();
    let mut rec = users::record(&name, &key, unix_ms() / 1000);
    input.apply(&mut rec)?;
    known_groups(state, &rec)?;
    records.push(rec.clone());
    commit(state, records, vec![Write::PutUser(rec.clone())]).await?;
    let mut body = serde_json::to_value(view(state, &rec)).expect("view serialises");
    body["key"] = serde_json::Value::String(key.expose().to_owned());
    Ok(json(StatusCode::CREATED, &body))
}

pub async fn patch(
    state: &AppState,
    id: &str,
    req: Request<ReqBody>,
) -> Result<Response<Body>, ApiError> {
    let input: UserInput = parse_json(&read(req).await?)?;
    let _guard = state.admin_lock.lock().await;
    let mut records = current(state);
    let idx = records
        .iter()
        .position(|r| r.id == id)
        .ok_or(ApiError::NoSuch("User"))?;
    let mut rec = records[idx].clone();
    input.apply(&mut rec)?;
    known_groups(state, &rec)?;
    if name_taken(&records, &rec.name, id) {
        return Err(ApiError::Conflict(format!(
            "A user named {:?} already exists.",
            rec.name
        )));
    }
    records[idx] = rec.clone();
    commit(state, records, vec![Write::PutUser(rec.clone())]).await?;
    Ok(json(StatusCode::OK, &view(state, &rec)))
}

pub async fn delete(state: &AppState, id: &str) -> Result<Response<Body>, ApiError> {
    let _guard = state.admin_lock.lock().await;
    let mut records = current(state);
    let before = records.len();
    records.retain(|r| r.id != id);
    if records.len() == before {
        return Err(ApiError::NoSuch("User"));
    }
    commit(state, records, vec![Write::DeleteUser(id.to_owned())]).await?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "deleted": id })))
}

pub async fn rotate(state: &AppState, id: &str) -> Result<Response<Body>, ApiError> {
    let _guard = state.admin_lock.lock().await;
    let mut records = current(state);
    let rec = records
        .iter_mut()
        .find(|r| r.id == id)
        .ok_or(ApiError::NoSuch("User"))?;
    let key = users::generate_key();
    rec.key_hash = users::hash_key(key.expose());
    rec.key_prefix = users::display_prefix(key.expose());
    let rec = rec.clone();
    commit(state, records, vec![Write::PutUser(rec.clone())]).await?;
    let mut body = serde_json::to_value(view(state, &rec)).expect("view serialises");
    body["key"] = serde_json::Value::String(key.expose().to_owned());
    Ok(json(StatusCode::OK, &body))
}
