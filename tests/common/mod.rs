//! Shared harness for the black-box tests: a fake Gemini upstream (`upstream`), the real
//! binary under test (`daemon`), a small HTTP client (`client`), the admin API (`admin`),
//! the OpenAI-compatible surface (`openai`), two daemons on one Redis (`redis_pair`), and
//! assertion helpers for Google's wire format. Each test file does `mod common;` and uses
//! what it needs.
#![allow(dead_code, unused_imports)]

pub mod admin;
pub mod client;
pub mod daemon;
pub mod faults;
pub mod google;
pub mod h2up;
pub mod live;
pub mod live_client;
pub mod openai;
pub mod raw;
pub mod redis;
pub mod redis_pair;
pub mod resources;
pub mod upstream;

pub use client::{Response, Stream};
pub use daemon::{Config, Daemon, METRICS_TOKEN, USER_KEY, USER_NAME, key, keys, metrics_auth};
pub use upstream::{Recorded, Reply, StreamReply, Upstream, chunk};

use serde_json::Value;

pub const FLASH: &str = "gemini-2.5-flash";
pub const PRO: &str = "gemini-2.5-pro";

/// The path suffix of a `generateContent` call, to pick it out of what the upstream saw.
pub const GEN: &str = ":generateContent";
/// The path suffix of a `streamGenerateContent` call.
pub const STREAM: &str = ":streamGenerateContent";

/// A minimal valid `generateContent` request body.
pub const GENERATE_BODY: &str = r#"{"contents":[{"role":"user","parts":[{"text":"Say hi"}]}]}"#;

/// `/v1beta/models/{model}:{method}`
pub fn model_path(model: &str, method: &str) -> String {
    format!("/v1beta/models/{model}:{method}")
}

/// A `generateContent` call for `model`, authenticated as alice.
pub async fn generate(d: &Daemon, model: &str) -> Response {
    client::post(
        &d.url(&model_path(model, "generateContent")),
        &user_auth(),
        GENERATE_BODY,
    )
    .await
}

/// The JSON body of `Reply::generate_ok("hello")`, as a client must get it back.
pub fn up_body_ok() -> Value {
    match Reply::generate_ok("hello") {
        Reply::Json { body, .. } => serde_json::from_slice(&body).unwrap(),
        _ => unreachable!(),
    }
}

/// An upstream that answers every route a client may call: OpenAI chat completions, the
/// models list, and `generate_ok` for everything else.
pub fn ok_all_routes() -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    |r| {
        if r.path.ends_with("/chat/completions") {
            Reply::openai_chat_ok()
        } else if r.path.ends_with("/models") {
            Reply::json(
                200,
                &serde_json::json!({"models": [{"name": "models/gemini-2.5-flash"}]}),
            )
        } else {
            Reply::generate_ok("hello")
        }
    }
}

/// The `x-request-id` the daemon put on `r`.
pub fn request_id(r: &Response) -> String {
    r.header("x-request-id")
        .unwrap_or_else(|| panic!("no x-request-id on {} {}", r.status, r.text()))
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Runs `gemini-balance check-config --config path`: exit code and all it printed.
pub fn check_config(path: &std::path::Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gemini-balance"))
        .arg("check-config")
        .arg("--config")
        .arg(path)
        .env_remove("RUST_LOG")
        .env_remove("GEMINI_BALANCE_ADMIN_PASSWORD")
        .env("NO_COLOR", "1")
        .output()
        .expect("run check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// The fake upstream's plain answer: two SSE events for a stream, else `generate_ok`.
pub fn ok_or_stream(r: &Recorded) -> Reply {
    if r.is_stream() {
        StreamReply::sse(vec![chunk("one"), chunk("two")]).into()
    } else {
        Reply::generate_ok("hello")
    }
}

/// Headers authenticating as alice with `x-goog-api-key`.
pub fn user_auth() -> [(&'static str, &'static str); 1] {
    [("x-goog-api-key", USER_KEY)]
}

/// Asserts a Google-shaped error: `{"error":{"code":code,"message":"…","status":status}}`.
pub fn assert_google_error(resp: &Response, code: u16, status: &str) {
    assert_eq!(resp.status, code, "HTTP status; body: {}", resp.text());
    let v = resp.json();
    assert_google_error_value(&v, Some(code), Some(status));
}

/// Checks an `{"error":{…}}` value; `None` accepts any code / status.
pub fn assert_google_error_value(v: &Value, code: Option<u16>, status: Option<&str>) {
    let e = &v["error"];
    assert!(e.is_object(), "no `error` object in {v}");
    let c = e["code"]
        .as_u64()
        .unwrap_or_else(|| panic!("error.code is not an integer in {v}"));
    if let Some(code) = code {
        assert_eq!(c, u64::from(code), "error.code in {v}");
    }
    let m = e["message"]
        .as_str()
        .unwrap_or_else(|| panic!("error.message is not a string in {v}"));
    assert!(!m.is_empty(), "empty error.message in {v}");
    let s = e["status"]
        .as_str()
        .unwrap_or_else(|| panic!("error.status is not a string in {v}"));
    if let Some(status) = status {
        assert_eq!(s, status, "error.status in {v}");
    }
}

/// Normalises CRLF to LF.
pub fn lf(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace("\r\n", "\n")
}

/// True once `bytes` holds at least one complete SSE event (terminated by a blank line).
pub fn has_sse_event(bytes: &[u8]) -> bool {
    lf(bytes).contains("\n\n")
}

/// The `data:` payloads of each complete SSE event, parsed as JSON (panics if one is not JSON).
pub fn sse_json_events(bytes: &[u8]) -> Vec<Value> {
    let text = lf(bytes);
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let data: Vec<&str> = block
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if data.is_empty() {
            continue;
        }
        let payload = data.join("\n");
        let v = serde_json::from_str(&payload).unwrap_or_else(|e| {
            panic!("SSE data is not JSON ({e}): {payload:?}\nwhole body: {text:?}")
        });
        events.push(v);
    }
    events
}

/// The text of the first part of the first candidate of a streamed chunk.
pub fn chunk_text(v: &Value) -> Option<&str> {
    v["candidates"][0]["content"]["parts"][0]["text"].as_str()
}

pub fn count(items: &[String], item: &str) -> usize {
    items.iter().filter(|i| *i == item).count()
}

/// Polls `f` until it answers `Ok`, or panics after `within` with the last `Err` it saw.
pub async fn wait_for<T, F, Fut>(what: &str, within: std::time::Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: not within {within:?}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}
