//! The admin API from a test's side: log in, call a route with the session token.

use super::client::{self, Response};
use super::daemon::Daemon;
use http::Method;
use serde_json::{Value, json};

pub async fn login_resp(d: &Daemon, password: &str) -> Response {
    client::post(
        &d.url("/api/login"),
        &[],
        json!({ "password": password }).to_string(),
    )
    .await
}

/// Logs in and answers the session token.
pub async fn login(d: &Daemon, password: &str) -> String {
    let r = login_resp(d, password).await;
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
