//! Black-box tests of the proxy against hostile clients and upstreams: what a
//! client without a valid key sends is not stored, model names are checked on every
//! surface, upstream answer headers are filtered, one upstream event is bounded, and a
//! trickling answer cannot hold its slots forever.

mod common;

use std::time::Duration;

use common::admin::{admin_ok, login};
use common::*;
use http::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "hardening-admin-pw-7";

async fn metrics(d: &Daemon) -> String {
    let r = d.metrics().await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

/// The value of the `/metrics` line starting with `series` (0 when absent).
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// The request ids in the log, newest first.
async fn logged_ids(d: &Daemon, token: &str) -> Vec<String> {
    let v = admin_ok(d, Method::GET, "/api/logs?limit=500", token, None).await;
    v["logs"]
        .as_array()
        .unwrap_or_else(|| panic!("no logs array: {v}"))
        .iter()
        .map(|r| r["request_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A request alice may make; waits until the log holds it, so every record queued
/// before it is in the log too.
async fn logged_request(d: &Daemon, token: &str) -> String {
    let r = client::post(
        &d.url(&model_path(FLASH, "generateContent")),
        &user_auth(),
        GENERATE_BODY,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.header("x-request-id").expect("x-request-id");
    wait_for("the request in the log", client::TIMEOUT, || async {
        let ids = logged_ids(d, token).await;
        if ids.contains(&id) {
            Ok(())
        } else {
            Err(format!("{ids:?}"))
        }
    })
    .await;
    id
}

async fn ok_upstream() -> Upstream {
    Upstream::start(|r| {
        if r.path.ends_with("/chat/completions") {
            Reply::openai_chat_ok()
        } else {
            ok_or_stream(r)
        }
    })
    .await
}

#[tokio::test]
async fn requests_without_a_valid_key_leave_the_log_stats_and_model_labels_alone() {
    let up = ok_upstream().await;
    let d = Daemon::start(&Config::new(&up).admin_password(PASSWORD)).await;
    let token = login(&d, PASSWORD).await;
    let first = logged_request(&d, &token).await;
    let before = metrics(&d).await;

    let huge = "x".repeat(60 * 1024);
    let path = model_path(&huge, "generateContent");
    for i in 0..300 {
        let headers: &[(&str, &str)] = if i % 2 == 0 {
            &[]
        } else {
            &[("x-goog-api-key", "gb-not-a-key-of-anyone")]
        };
        let r = client::post(&d.url(&path), headers, "").await;
        assert!(
            r.status == 401 || r.status == 403,
            "request {i}: {} {}",
            r.status,
            r.text()
        );
    }
    let last = logged_request(&d, &token).await;

    let ids = logged_ids(&d, &token).await;
    assert_eq!(
        ids,
        [last, first],
        "only the two requests with a key are logged"
    );
    let summary = admin_ok(&d, Method::GET, "/api/stats/summary", &token, None).await;
    assert_eq!(summary["today"]["requests"], 2, "{summary}");
    let after = metrics(&d).await;
    assert!(
        !after.contains("xxxxxxxx"),
        "a refused model became a label"
    );
    assert!(
        after.len() < before.len() + 2048,
        "{} → {}",
        before.len(),
        after.len()
    );
    let missing = "gemini_balance_rejected_total{reason=\"missing_key\"}";
    let unknown = "gemini_balance_rejected_total{reason=\"unknown_key\"}";
    assert_eq!(metric(&after, missing) - metric(&before, missing), 150);
    assert_eq!(metric(&after, unknown) - metric(&before, unknown), 150);
    assert!(
        up.requests_to(&format!("{huge}:generateContent"))
            .is_empty()
    );
    // Nor does the journal get the 60 KB path 300 times.
    let longest = d.logs().iter().map(String::len).max().unwrap_or(0);
    assert!(longest < 4096, "a daemon log line of {longest} bytes");
}

#[tokio::test]
async fn model_names_are_checked_on_every_surface() {
    let up = ok_upstream().await;
    let d = Daemon::start(&Config::new(&up).admin_password(PASSWORD)).await;
    let bearer = format!("Bearer {USER_KEY}");
    let openai = [("authorization", bearer.as_str())];

    // A 1 MiB model in an OpenAI body: 400 in OpenAI's shape, nothing sent or labelled.
    let body = json!({"model": "m".repeat(1 << 20), "messages": []}).to_string();
    let r = client::post(&d.url("/v1/chat/completions"), &openai, body).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        r.json()["error"]["type"],
        "invalid_request_error",
        "{}",
        r.text()
    );
    assert!(
        r.body.len() < 1024,
        "the name is not echoed: {} bytes",
        r.body.len()
    );
    let text = metrics(&d).await;
    assert!(text.len() < 16 * 1024, "/metrics is {} bytes", text.len());
    assert!(!text.contains("mmmmmmmm"));

    // Google's names pass, with the prefixes it uses.
    for model in ["models/gemini-2.5-flash", "tunedModels/my-model-1"] {
        let body = json!({"model": model, "messages": []}).to_string();
        let r = client::post(&d.url("/v1/chat/completions"), &openai, body).await;
        assert_eq!(r.status, 200, "{model}: {}", r.text());
    }

    // The native path, a tuned model, the OpenAI model path: Google-shaped or OpenAI 400s.
    for path in [
        "/v1beta/models/gemini%2e%2e:generateContent".to_owned(),
        format!("/v1beta/models/{}:generateContent", "g".repeat(129)),
        "/v1beta/models/a%20b:streamGenerateContent".to_owned(),
        "/v1beta/tunedModels/t%22x:generateContent".to_owned(),
        "/v1beta/models/gemini-2.5-flash:batchGenerateContent/%2e%2e".to_owned(),
    ] {
        let r = client::post(&d.url(&path), &user_auth(), GENERATE_BODY).await;
        assert_google_error(&r, 400, "INVALID_ARGUMENT");
    }
    let r = client::get(&d.url("/v1/models/a%2Fb"), &openai).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["error"]["type"].is_string(), "{}", r.text());

    // Dot-segments, plain or encoded, never reach the upstream (it would resolve them).
    for path in [
        "/v1beta/files/%2e%2e/models/gemini-2.5-pro:generateContent",
        "/v1beta/cachedContents/.%2E/models/x:generateContent",
    ] {
        let r = client::post(&d.url(path), &user_auth(), GENERATE_BODY).await;
        assert_google_error(&r, 400, "INVALID_ARGUMENT");
    }
    let sent: Vec<String> = up.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        sent.len(),
        2,
        "only the two valid names were sent: {sent:?}"
    );
}

#[tokio::test]
async fn a_refused_model_is_not_logged_with_its_name() {
    let up = ok_upstream().await;
    let d = Daemon::start(&Config::new(&up).admin_password(PASSWORD)).await;
    let token = login(&d, PASSWORD).await;
    let dora = admin_ok(
        &d,
        Method::POST,
        "/api/users",
        &token,
        Some(json!({"name": "dora", "models": ["gemini-2.5-*"]})),
    )
    .await;
    let key = dora["key"].as_str().expect("key").to_owned();
    let r = client::post(
        &d.url(&model_path("gemma-secret-name", "generateContent")),
        &[("x-goog-api-key", key.as_str())],
        GENERATE_BODY,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let id = r.header("x-request-id").expect("x-request-id");
    let record: Value = wait_for("the refusal in the log", client::TIMEOUT, || async {
        let r =
            common::admin::admin(&d, Method::GET, &format!("/api/logs/{id}"), &token, None).await;
        if r.status == 200 {
            Ok(r.json())
        } else {
            Err(r.text())
        }
    })
    .await;
    assert_eq!(record["user"], "dora", "{record}");
    assert!(
        !record.to_string().contains("gemma-secret-name"),
        "{record}"
    );
    assert!(!metrics(&d).await.contains("gemma-secret-name"));
}

#[tokio::test]
async fn upstream_answer_headers_pass_by_an_allow_list_and_pages_are_sandboxed() {
    let up = Upstream::start(|r| {
        let status = if r.path.contains("gemini-broken") {
            500
        } else {
            200
        };
        Reply::WithHeaders {
            status,
            headers: vec![
                ("content-type".into(), "text/html; charset=utf-8".into()),
                (
                    "set-cookie".into(),
                    "gb_session=forged; Path=/api; HttpOnly".into(),
                ),
                ("x-goog-api-key".into(), "AIzaECHOED-key".into()),
                ("x-goog-safety-ratings".into(), "fine".into()),
                ("alt-svc".into(), "h3=\":443\"".into()),
                ("access-control-allow-origin".into(), "*".into()),
                ("retry-after".into(), "3".into()),
            ],
            body: "<script>fetch('/api/keys/export')</script>".into(),
        }
    })
    .await;
    let d = Daemon::start(&Config::new(&up).pool("max_attempts", "1")).await;
    for model in [FLASH, "gemini-broken"] {
        let r = client::post(
            &d.url(&model_path(model, "generateContent")),
            &user_auth(),
            GENERATE_BODY,
        )
        .await;
        assert!(r.status == 200 || r.status == 500, "{model}: {}", r.status);
        for gone in [
            "set-cookie",
            "x-goog-api-key",
            "alt-svc",
            "access-control-allow-origin",
        ] {
            assert_eq!(r.header(gone), None, "{model}: {gone} reached the client");
        }
        assert_eq!(r.header("x-goog-safety-ratings").as_deref(), Some("fine"));
        assert_eq!(
            r.header("x-content-type-options").as_deref(),
            Some("nosniff")
        );
        assert_eq!(
            r.header("content-security-policy").as_deref(),
            Some("default-src 'none'; sandbox"),
            "{model}"
        );
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("text/html"))
        );
    }
}

/// The daemon's peak resident memory so far (`VmHWM`), in KiB.
fn peak_rss_kib(d: &Daemon) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test]
async fn an_endless_upstream_event_ends_the_stream_at_the_cap() {
    // One whole event, then `data: ` and 64 MiB without a blank line.
    let filler = bytes::Bytes::from(vec![b'a'; 64 * 1024]);
    let up = Upstream::start(move |r| {
        if !r.path.contains("gemini-endless") {
            return ok_or_stream(r);
        }
        let mut chunks = vec![
            bytes::Bytes::from(format!("data: {}\r\n\r\n", chunk("first"))),
            bytes::Bytes::from_static(b"data: "),
        ];
        chunks.extend(std::iter::repeat_n(filler.clone(), 1024));
        Reply::Raw(common::upstream::RawStream::new(
            "text/event-stream",
            chunks,
        ))
    })
    .await;
    let d = Daemon::start(&Config::new(&up)).await;
    let warm = client::post(
        &d.url(&format!(
            "{}?alt=sse",
            model_path(FLASH, "streamGenerateContent")
        )),
        &user_auth(),
        GENERATE_BODY,
    )
    .await;
    assert_eq!(warm.status, 200, "{}", warm.text());
    let before = peak_rss_kib(&d);

    let url = d.url(&format!(
        "{}?alt=sse",
        model_path("gemini-endless", "streamGenerateContent")
    ));
    let r = client::post(&url, &user_auth(), GENERATE_BODY).await;
    assert_eq!(r.status, 200);
    let events = sse_json_events(&r.body);
    assert_eq!(
        events.len(),
        2,
        "the first event, then the error: {:.300}",
        r.text()
    );
    assert_eq!(chunk_text(&events[0]), Some("first"));
    assert_google_error_value(&events[1], Some(502), Some("UNAVAILABLE"));
    let message = events[1]["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("exceeded 8 MiB"), "{message}");
    let grown = peak_rss_kib(&d).saturating_sub(before);
    assert!(grown < 40 * 1024, "peak RSS grew by {grown} KiB");
}

#[tokio::test]
async fn a_trickling_answer_is_cut_at_body_timeout_and_frees_its_slots() {
    let up = Upstream::start(|r| {
        if r.path.contains("gemini-trickle") {
            // More than the daemon reads ahead before committing, then a byte at a time.
            let mut head = b"{\"candidates\": [".to_vec();
            head.resize(300 * 1024, b' ');
            Reply::Trickle {
                head: head.into(),
                every: Duration::from_millis(50),
            }
        } else {
            Reply::generate_ok("hello")
        }
    })
    .await;
    let cfg = Config::new(&up)
        .keys([key(0)])
        .pool("max_concurrent_per_key", "1")
        .upstream("body_timeout = \"1s\"");
    let d = Daemon::start(&cfg).await;
    let url = d.url(&model_path("gemini-trickle", "generateContent"));
    let stream = client::post_stream(&url, &user_auth(), GENERATE_BODY).await;
    assert_eq!(stream.status, 200);
    let r = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end())
        .await
        .expect("the trickling answer still open after 15 s");
    assert!(
        r.body_error.is_some(),
        "the answer is cut, not ended as if whole"
    );
    assert!(
        r.body.len() >= 300 * 1024,
        "the client got what came: {}",
        r.body.len()
    );

    // The key's only slot is free again.
    let r = client::post(
        &d.url(&model_path(FLASH, "generateContent")),
        &user_auth(),
        GENERATE_BODY,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn a_doubled_slash_is_the_same_route() {
    let up = ok_upstream().await;
    let d = Daemon::start(&Config::new(&up)).await;
    let path = format!("/{}", model_path(FLASH, "generateContent"));
    let r = client::post(&d.url(&path), &user_auth(), GENERATE_BODY).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    let stream = format!("/{}?alt=sse", model_path(FLASH, "streamGenerateContent"));
    let r = client::post(&d.url(&stream), &user_auth(), GENERATE_BODY).await;
    assert_eq!(r.status, 200, "{stream}: {}", r.text());
    assert_eq!(sse_json_events(&r.body).len(), 2);
    let sent: Vec<String> = up.requests().iter().map(|r| r.target()).collect();
    assert_eq!(
        sent,
        [
            model_path(FLASH, "generateContent"),
            format!("{}?alt=sse", model_path(FLASH, "streamGenerateContent")),
        ],
        "Google gets the single-slash path"
    );
}
