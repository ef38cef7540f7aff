//! Pool keys and errors on the OpenAI-compatible surface: a key Google refuses (in its
//! list-wrapped error, as OpenAI's 401 or 403) is retired and a 429 cools the key for the
//! body's model, as on the native routes; user-key errors are answered in OpenAI's shape,
//! and a client error Google wraps in a list is relayed in OpenAI's shape too.

mod common;

use common::openai::*;
use common::upstream::OPENAI_CHAT_OK_BODY;
use common::*;
use serde_json::{Value, json};

fn chat_with_model(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "Say hi"}]}).to_string()
}

async fn bad_pool_key_is_retired(bad: fn() -> Reply) {
    let bad_key = key(0);
    let bk = bad_key.clone();
    let up = Upstream::start(move |r| {
        let is_bad = r.bearer() == Some(bk.as_str()) || r.key() == Some(bk.as_str());
        if is_bad && r.path.starts_with("/v1beta/openai/") {
            bad()
        } else if is_bad {
            Reply::api_key_invalid()
        } else if r.path == CHAT {
            Reply::openai_chat_ok()
        } else {
            Reply::generate_ok("hello")
        }
    })
    .await;
    let d = Daemon::start(&Config::new(&up).keys(keys(3))).await;
    for i in 0..6 {
        let r = chat(&d, CHAT_BODY).await;
        assert_eq!(
            r.status,
            200,
            "chat {i} must succeed on another key: {}",
            r.text()
        );
        assert_eq!(r.text(), OPENAI_CHAT_OK_BODY, "chat {i}");
    }
    let used = up.bearers_to("/chat/completions");
    assert_eq!(
        count(&used, &bad_key),
        1,
        "the bad key is tried once, then retired; order {used:?}"
    );
    assert_eq!(used.len(), 7, "6 successes + 1 failed attempt: {used:?}");
    for i in 0..4 {
        let r = client::post(
            &d.url(&model_path(FLASH, "generateContent")),
            &user_auth(),
            GENERATE_BODY,
        )
        .await;
        assert_eq!(r.status, 200, "native request {i}: {}", r.text());
    }
    let native = up.keys_to(":generateContent");
    assert_eq!(native.len(), 4, "{native:?}");
    assert_eq!(
        count(&native, &bad_key),
        0,
        "the retired key is not used by native routes either: {native:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_invalid_list_error_retires_the_key() {
    bad_pool_key_is_retired(Reply::openai_api_key_invalid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_401_retires_the_key() {
    bad_pool_key_is_retired(|| {
        Reply::google_list_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            Value::Null,
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_403_retires_the_key() {
    bad_pool_key_is_retired(|| {
        Reply::google_list_error(
            403,
            "PERMISSION_DENIED",
            "Permission denied: Consumer 'projects/1' has been suspended.",
            json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "CONSUMER_SUSPENDED"}]),
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_429_cools_the_key_for_the_body_model() {
    let a = key(0);
    let ka = a.clone();
    let up = Upstream::start(move |r| {
        let is_a = r.bearer() == Some(ka.as_str()) || r.key() == Some(ka.as_str());
        let model = r
            .body_model()
            .map(|m| m.trim_start_matches("models/").to_string())
            .or_else(|| r.model().map(str::to_string));
        let flash = model.as_deref() == Some(FLASH);
        match (is_a && flash, r.path == CHAT) {
            (true, true) => Reply::openai_resource_exhausted("120s"),
            (true, false) => Reply::resource_exhausted("120s"),
            (false, true) => Reply::openai_chat_ok(),
            (false, false) => Reply::generate_ok("hello"),
        }
    })
    .await;
    let d = Daemon::start(&Config::new(&up).keys(keys(2))).await;
    let flash_a = || {
        up.requests()
            .iter()
            .filter(|r| {
                let is_a = r.bearer() == Some(a.as_str()) || r.key() == Some(a.as_str());
                let m = r
                    .body_model()
                    .unwrap_or_else(|| r.model().unwrap_or("").into());
                is_a && m.trim_start_matches("models/") == FLASH
            })
            .count()
    };

    let prefixed = chat_with_model("models/gemini-2.5-flash");
    for i in 0..4 {
        let r = chat(&d, &prefixed).await;
        assert_eq!(
            r.status,
            200,
            "chat {i} must succeed on key b: {}",
            r.text()
        );
        if flash_a() > 0 {
            break;
        }
    }
    assert_eq!(
        flash_a(),
        1,
        "key a got a flash request once: {:?}",
        up.bearers_to(CHAT)
    );

    for i in 0..3 {
        let r = chat(&d, &prefixed).await;
        assert_eq!(r.status, 200, "prefixed chat {i}: {}", r.text());
        let r = chat(&d, &chat_with_model(FLASH)).await;
        assert_eq!(r.status, 200, "plain chat {i}: {}", r.text());
        let r = client::post(
            &d.url(&model_path(FLASH, "generateContent")),
            &user_auth(),
            GENERATE_BODY,
        )
        .await;
        assert_eq!(r.status, 200, "native flash {i}: {}", r.text());
    }
    assert_eq!(
        flash_a(),
        1,
        "(key a, gemini-2.5-flash) cools whatever the surface or `models/` prefix"
    );

    up.clear();
    for i in 0..4 {
        let r = chat(&d, &chat_with_model(PRO)).await;
        assert_eq!(r.status, 200, "pro chat {i}: {}", r.text());
    }
    let pro = up.bearers_to(CHAT);
    assert_eq!(pro.len(), 4, "{pro:?}");
    assert!(
        count(&pro, &a) >= 1,
        "key a still serves gemini-2.5-pro: {pro:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_key_errors_are_openai_shaped() {
    let up = Upstream::start(|_| Reply::openai_chat_ok()).await;
    let d = Daemon::start(&Config::new(&up)).await;
    let wrong = "Bearer gb-test-wrong-0000000000000000";
    for path in [
        "/v1/chat/completions",
        "/v1beta/openai/chat/completions",
        "/v1/embeddings",
        "/v1/images/generations",
    ] {
        let url = d.url(path);
        let r = client::post(&url, &[], CHAT_BODY).await;
        assert_openai_error(&r, 401);
        assert!(
            r.header("x-request-id").is_some(),
            "{path}: x-request-id on 401"
        );

        let r = client::post(&url, &[("authorization", wrong)], CHAT_BODY).await;
        let v = assert_openai_error(&r, 403);
        assert_eq!(v["error"]["type"], "invalid_request_error", "{path}: {v}");
        assert_eq!(v["error"]["code"], "invalid_api_key", "{path}: {v}");
        assert!(
            r.header("x-request-id").is_some(),
            "{path}: x-request-id on 403"
        );
    }
    assert!(
        up.requests().is_empty(),
        "nothing forwarded without a valid user key: {:?}",
        up.requests()
            .iter()
            .map(Recorded::target)
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_list_wrapped_400_is_relayed_openai_shaped() {
    let msg = "Invalid JSON payload received. Unknown name \"frobnicate\": Cannot find field.";
    let up = Upstream::start(move |r| {
        if r.body_text().contains("frobnicate") {
            Reply::google_list_error(400, "INVALID_ARGUMENT", msg, Value::Null)
        } else {
            Reply::openai_chat_ok()
        }
    })
    .await;
    let d = Daemon::start(&Config::new(&up).pool("failure_threshold", "2")).await;
    let bad = r#"{"model":"gemini-2.5-flash","messages":[],"frobnicate":1}"#;
    for i in 0..3 {
        let r = chat(&d, bad).await;
        let v = assert_openai_error(&r, 400);
        assert_eq!(
            v["error"]["message"], msg,
            "request {i}: Google's message: {v}"
        );
        assert_eq!(
            v["error"]["type"], "invalid_request_error",
            "request {i}: {v}"
        );
        assert_eq!(v["error"]["code"], "INVALID_ARGUMENT", "request {i}: {v}");
        assert!(
            r.header("x-request-id").is_some(),
            "request {i}: x-request-id"
        );
        assert_eq!(up.requests_to(CHAT).len(), i + 1, "request {i}: no retry");
    }
    up.clear();
    for i in 0..4 {
        let r = chat(&d, CHAT_BODY).await;
        assert_eq!(
            r.status,
            200,
            "request {i} after client errors: {}",
            r.text()
        );
    }
    let used = up.bearers_to(CHAT);
    for k in keys(2) {
        assert_eq!(
            count(&used, &k),
            2,
            "no penalty: {k} keeps serving; {used:?}"
        );
    }
}
