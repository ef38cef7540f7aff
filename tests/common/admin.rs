//! The admin API from a test's side: log in, call a route with the session token, read the
//! key pool, the users and the request log as the API lists them, and the helpers the admin
//! tests share (plausible upstream keys, a call as a user key, the store's raw bytes).

use std::time::{SystemTime, UNIX_EPOCH};

use super::client::{self, Response};
use super::daemon::Daemon;
use super::upstream::{Recorded, Reply};
use super::{GENERATE_BODY, model_path};
use http::Method;
use serde_json::{Value, json};

pub async fn login_resp(d: &Daemon, password: &str) -> Response {
    login_resp_at(&d.url(""), password).await
}

async fn login_resp_at(base: &str, password: &str) -> Response {
    client::post(
        &format!("{base}/api/login"),
        &[],
        json!({ "password": password }).to_string(),
    )
    .await
}

/// Logs in and answers the session token.
pub async fn login(d: &Daemon, password: &str) -> String {
    login_at(&d.url(""), password).await
}

/// Logs in at `base` (`http://ADDR`, e.g. the `admin_listen` address) and answers the
/// session token.
pub async fn login_at(base: &str, password: &str) -> String {
    let r = login_resp_at(base, password).await;
    assert_eq!(r.status, 200, "login: {}", r.text());
    r.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

/// An admin call with `Authorization: Bearer token`; `body` is sent as JSON.
pub async fn admin(
    d: &Daemon,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Response {
    let auth = format!("Bearer {token}");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    client::request(
        method,
        &d.url(path),
        &[("authorization", auth.as_str())],
        body,
    )
    .await
}

/// An admin call that must succeed (2xx); answers its JSON (`Null` for an empty body).
pub async fn admin_ok(
    d: &Daemon,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Value {
    let what = format!("{method} {path}");
    let r = admin(d, method, path, token, body).await;
    assert!(
        (200..300).contains(&r.status),
        "{what}: {} {}",
        r.status,
        r.text()
    );
    if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

/// `GET path` as the admin, which must answer 200; answers its JSON.
pub async fn admin_json(d: &Daemon, token: &str, path: &str) -> Value {
    let r = admin(d, Method::GET, path, token, None).await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r.json()
}

/// Every record of the request log, newest first, following the cursor to the end.
pub async fn all_logs(d: &Daemon, token: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = if cursor.is_empty() {
            "/api/logs?limit=1000".to_string()
        } else {
            format!("/api/logs?limit=1000&cursor={cursor}")
        };
        let v = admin_json(d, token, &path).await;
        out.extend(v["logs"].as_array().cloned().unwrap_or_default());
        match v["next_cursor"].as_str() {
            Some(c) if !c.is_empty() => cursor = c.to_string(),
            _ => return out,
        }
    }
}

/// `GET /api/logs?{query}` → (request ids in order, next_cursor).
pub async fn log_page(d: &Daemon, token: &str, query: &str) -> (Vec<String>, Option<String>) {
    let v = admin_json(d, token, &format!("/api/logs?{query}")).await;
    let ids = v["logs"]
        .as_array()
        .unwrap_or_else(|| panic!("no logs array: {v}"))
        .iter()
        .map(|r| r["request_id"].as_str().expect("request_id").to_string())
        .collect();
    (ids, v["next_cursor"].as_str().map(str::to_owned))
}

/// Asserts an admin API error: the status, and a body with an `error`.
pub fn assert_admin_error(r: &Response, status: u16) {
    assert_eq!(r.status, status, "HTTP status; body: {}", r.text());
    let v = r.json();
    assert!(
        v["error"].is_string() || v["error"].is_object(),
        "admin error body has an `error`: {v}"
    );
}

/// A plausible upstream key (39 chars) whose last four characters are `tail`.
pub fn long_key(tag: &str, tail: &str) -> String {
    let mut k = format!("AIzaSyTEST{tag}");
    while k.len() < 35 {
        k.push('x');
    }
    k.push_str(tail);
    k
}

/// How the admin API shows an upstream key: its first and last four characters.
pub fn brief(k: &str) -> String {
    format!("{}…{}", &k[..4], &k[k.len() - 4..])
}

/// `GET /api/keys`: the listed upstream keys.
pub async fn list_keys(d: &Daemon, token: &str) -> Vec<Value> {
    let v = admin_ok(d, Method::GET, "/api/keys", token, None).await;
    v["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no keys array: {v}"))
        .clone()
}

/// The listed entry of upstream key `k`, found by its brief.
pub fn entry_of<'a>(list: &'a [Value], k: &str) -> &'a Value {
    let b = brief(k);
    let found: Vec<_> = list.iter().filter(|e| e["brief"] == b.as_str()).collect();
    assert_eq!(found.len(), 1, "exactly one key with brief {b}: {list:?}");
    found[0]
}

/// The admin API's id of upstream key `k`.
pub async fn key_id(d: &Daemon, token: &str, k: &str) -> String {
    let list = list_keys(d, token).await;
    entry_of(&list, k)["id"].as_str().expect("id").to_string()
}

/// `GET /api/users`: the listed user keys.
pub async fn list_users(d: &Daemon, token: &str) -> Vec<Value> {
    let v = admin_ok(d, Method::GET, "/api/users", token, None).await;
    v["users"]
        .as_array()
        .unwrap_or_else(|| panic!("no users array: {v}"))
        .clone()
}

/// `POST /api/users`, which must answer 201; answers the created user (with its secret).
pub async fn create_user(d: &Daemon, token: &str, body: Value) -> Value {
    let r = admin(d, Method::POST, "/api/users", token, Some(body)).await;
    assert_eq!(r.status, 201, "create user: {}", r.text());
    r.json()
}

/// A `generateContent` call authenticated with `user_key`.
pub async fn generate_as(d: &Daemon, user_key: &str, model: &str) -> Response {
    client::post(
        &d.url(&model_path(model, "generateContent")),
        &[("x-goog-api-key", user_key)],
        GENERATE_BODY,
    )
    .await
}

/// An upstream that lists one model and answers every other call with `generate_ok`.
pub fn ok_upstream() -> impl Fn(&Recorded) -> Reply {
    |r| {
        if r.path.ends_with("/models") {
            Reply::json(
                200,
                &json!({"models": [{"name": "models/gemini-2.5-flash"}]}),
            )
        } else {
            Reply::generate_ok("hello")
        }
    }
}

/// The raw bytes of the daemon's redb file, to check no secret sits there in plain text.
pub fn store_bytes(d: &Daemon) -> Vec<u8> {
    let p = d.data_dir().join("gemini-balance.redb");
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

pub fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
