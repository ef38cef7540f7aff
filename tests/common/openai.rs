//! The OpenAI-compatible surface from a test's side: the chat path, a chat call as alice
//! with her key as a Bearer token, and the check that an error is in OpenAI's shape
//! `{"error":{"message","type","code"}}` rather than Google's.

use super::client::{self, Response};
use super::daemon::{Daemon, USER_KEY};
use serde_json::Value;

/// Google's compat path for chat completions.
pub const CHAT: &str = "/v1beta/openai/chat/completions";

/// A minimal chat completion request.
pub const CHAT_BODY: &str =
    r#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"Say hi"}]}"#;

/// alice's key as an `Authorization` value.
pub fn bearer() -> String {
    format!("Bearer {USER_KEY}")
}

/// `POST /v1/chat/completions` with `body`, as alice.
pub async fn chat(d: &Daemon, body: &str) -> Response {
    let b = bearer();
    client::post(
        &d.url("/v1/chat/completions"),
        &[("authorization", b.as_str())],
        body.to_string(),
    )
    .await
}

/// Asserts an OpenAI-shaped error `{"error":{"message","type","code"}}`.
pub fn assert_openai_error(resp: &Response, status: u16) -> Value {
    assert_eq!(resp.status, status, "HTTP status; body: {}", resp.text());
    let v = resp.json();
    assert_openai_error_value(&v);
    v
}

/// Checks an `{"error":{"message","type","code"}}` value, with no Google `status`.
pub fn assert_openai_error_value(v: &Value) {
    let e = &v["error"];
    assert!(e.is_object(), "no `error` object in {v}");
    let m = e["message"]
        .as_str()
        .unwrap_or_else(|| panic!("error.message is not a string in {v}"));
    assert!(!m.is_empty(), "empty error.message in {v}");
    let t = e["type"]
        .as_str()
        .unwrap_or_else(|| panic!("error.type is not a string in {v}"));
    assert!(!t.is_empty(), "empty error.type in {v}");
    assert!(
        e.as_object().unwrap().contains_key("code"),
        "error.code missing in {v}"
    );
    assert!(
        e.get("status").is_none(),
        "Google's `status` field leaked into an OpenAI error: {v}"
    );
}
