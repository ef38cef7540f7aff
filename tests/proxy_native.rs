//! Black-box tests of the Gemini-native proxy (SPEC 3.1, 3.2, 3.4, 3.5): key rotation,
//! retirement, per-model cool-down, relaying client errors, streaming without buffering,
//! truncated streams, failover, the no-key answers, persistence across restarts, and that the
//! client's key never reaches Google.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use http::Method;
use serde_json::{Value, json};
use tokio::sync::Notify;

const GEN: &str = ":generateContent";
const STREAM: &str = ":streamGenerateContent";

async fn generate(d: &Daemon, model: &str) -> Response {
    client::post(
        &d.url(&model_path(model, "generateContent")),
        &user_auth(),
        GENERATE_BODY,
    )
    .await
}

// 1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_spreads_requests_over_keys() {
    let up = Upstream::start(|_| Reply::generate_ok("hello")).await;
    let d = Daemon::start(&Config::new(&up).keys(keys(3))).await;
    for i in 0..6 {
        let r = generate(&d, FLASH).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(
            r.json(),
            up_body_ok(),
            "request {i}: body relayed unchanged"
        );
    }
    let used = up.keys_to(GEN);
    assert_eq!(used.len(), 6, "one upstream call per request: {used:?}");
    for k in keys(3) {
        assert_eq!(
            count(&used, &k),
            2,
            "round-robin: {k} should serve 2 of 6; order {used:?}"
        );
    }
}

fn up_body_ok() -> Value {
    match Reply::generate_ok("hello") {
        Reply::Json { body, .. } => serde_json::from_slice(&body).unwrap(),
        _ => unreachable!(),
    }
}

// 2
async fn retired_key_is_never_sent_again(bad: fn() -> Reply) {
    let bad_key = key(0);
    let bk = bad_key.clone();
    let up = Upstream::start(move |r| {
        if r.key() == Some(&bk) {
            bad()
        } else {
            Reply::generate_ok("hello")
        }
    })
    .await;
    let d = Daemon::start(&Config::new(&up).keys(keys(3))).await;
    for i in 0..8 {
        let r = generate(&d, FLASH).await;
        assert_eq!(
            r.status,
            200,
            "request {i} must succeed on another key: {}",
            r.text()
        );
    }
    let used = up.keys_to(GEN);
    assert_eq!(
        count(&used, &bad_key),
        1,
        "the bad key is tried once, then retired; order {used:?}"
    );
    assert_eq!(used.len(), 9, "8 successes + 1 failed attempt: {used:?}");
    let last = used.iter().rposition(|k| *k == bad_key).unwrap();
    assert_ne!(
        last,
        used.len() - 1,
        "the failed attempt was retried on another key: {used:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_invalid_retires_the_key() {
    retired_key_is_never_sent_again(Reply::api_key_invalid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_suspended_retires_the_key() {
    retired_key_is_never_sent_again(Reply::consumer_suspended).await;
}

// 3
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_429_cools_only_that_key_and_model() {
    let a = key(0);
    let ka = a.clone();
    let up = Upstream::start(move |r| {
        if r.key() == Some(&ka) && r.model() == Some(FLASH) {
            Reply::resource_exhausted("30s")
        } else {
            Reply::generate_ok("hello")
        }
    })
    .await;
    let d = Daemon::start(&Config::new(&up).keys(keys(2))).await;
    let flash_a = || {
        up.requests_to(GEN)
            .iter()
            .filter(|r| r.model() == Some(FLASH) && r.key() == Some(&a))
            .count()
    };

    for i in 0..4 {
        let t = Instant::now();
        let r = generate(&d, FLASH).await;
        assert_eq!(
            r.status,
            200,
            "flash request {i} must succeed on key b: {}",
            r.text()
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "retry after a 429 must be immediate, took {:?}",
            t.elapsed()
        );
        if flash_a() > 0 {
            break;
        }
    }
    assert_eq!(
        flash_a(),
        1,
        "key a got the flash request once: {:?}",
        up.keys_to(GEN)
    );

    for i in 0..4 {
        let r = generate(&d, FLASH).await;
        assert_eq!(
            r.status,
            200,
            "flash request {i} after cool-down: {}",
            r.text()
        );
    }
    assert_eq!(
        flash_a(),
        1,
        "(key a, flash) is cooling, must be skipped: {:?}",
        up.keys_to(GEN)
    );

    for i in 0..4 {
        let r = generate(&d, PRO).await;
        assert_eq!(r.status, 200, "pro request {i}: {}", r.text());
    }
    let pro: Vec<String> = up
        .requests_to(GEN)
        .iter()
        .filter(|r| r.model() == Some(PRO))
        .map(|r| r.key().unwrap_or_default().to_string())
        .collect();
    assert_eq!(pro.len(), 4, "one upstream call per pro request: {pro:?}");
    assert!(
        count(&pro, &a) >= 1,
        "key a must still serve gemini-2.5-pro: {pro:?}"
    );
}

// 4
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_error_is_relayed_unchanged_without_retry_or_penalty() {
    let up = Upstream::start(|r| {
        if r.body_text().contains("please-fail") {
            Reply::invalid_argument()
        } else {
            Reply::generate_ok("hello")
        }
    })
    .await;
    let d = Daemon::start(
        &Config::new(&up)
            .keys(keys(2))
            .pool("failure_threshold", "2"),
    )
    .await;
    let url = d.url(&model_path(FLASH, "generateContent"));
    for i in 0..4 {
        let r = client::post(&url, &user_auth(), r#"{"contents":[],"please-fail":true}"#).await;
        assert_eq!(r.status, 400, "request {i}");
        assert_eq!(
            r.text(),
            upstream::INVALID_ARGUMENT_BODY,
            "request {i}: body relayed byte for byte"
        );
        assert!(
            r.header("x-request-id").is_some(),
            "request {i}: x-request-id on a relayed error"
        );
        assert_eq!(
            up.requests_to(GEN).len(),
            i + 1,
            "request {i}: exactly one upstream call, no retry"
        );
    }
    up.clear();
    for i in 0..4 {
        let r = generate(&d, FLASH).await;
        assert_eq!(
            r.status,
            200,
            "request {i} after client errors: {}",
            r.text()
        );
    }
    let used = up.keys_to(GEN);
    for k in keys(2) {
        assert_eq!(
            count(&used, &k),
            2,
            "no penalty: {k} keeps serving; order {used:?}"
        );
    }
}

// 5
fn gated_stream_daemon_setup(
    format: upstream::StreamFormat,
    gate: Arc<Notify>,
    cut: Option<usize>,
) -> impl Fn(&Recorded) -> Reply {
    move |_| {
        let events = vec![chunk("one"), chunk("two"), chunk("three")];
        let s = match format {
            upstream::StreamFormat::Sse => StreamReply::sse(events),
            upstream::StreamFormat::JsonArray => StreamReply::json_array(events),
        };
        let s = s.gate_before(1, gate.clone());
        match cut {
            Some(n) => s.cut_after(n).into(),
            None => s.into(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_stream_is_relayed_incrementally() {
    let gate = Arc::new(Notify::new());
    let up = Upstream::start(gated_stream_daemon_setup(
        upstream::StreamFormat::Sse,
        gate.clone(),
        None,
    ))
    .await;
    let d = Daemon::start(&Config::new(&up)).await;
    let url = d.url(&format!(
        "{}?alt=sse",
        model_path(FLASH, "streamGenerateContent")
    ));
    let mut s = client::post_stream(&url, &user_auth(), GENERATE_BODY).await;
    assert_eq!(s.status, 200);
    let ct = s.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/event-stream"), "content-type {ct:?}");
    assert!(
        s.header("x-request-id").is_some(),
        "x-request-id on a stream"
    );

    let first = s
        .read_until(
            "the first SSE event before the upstream sends the rest",
            has_sse_event,
        )
        .await;
    let first = sse_json_events(&first);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(chunk_text(&first[0]), Some("one"));
    gate.notify_one();

    let r = s.read_to_end().await;
    assert_eq!(
        r.body_error,
        None,
        "stream must end cleanly; body {:?}",
        r.text()
    );
    let events = sse_json_events(&r.body);
    let texts: Vec<_> = events
        .iter()
        .map(|e| chunk_text(e).unwrap_or("?"))
        .collect();
    assert_eq!(texts, ["one", "two", "three"], "body {:?}", r.text());
    let reqs = up.requests_to(STREAM);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].query.as_deref(), Some("alt=sse"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_array_stream_is_relayed_incrementally() {
    let gate = Arc::new(Notify::new());
    let up = Upstream::start(gated_stream_daemon_setup(
        upstream::StreamFormat::JsonArray,
        gate.clone(),
        None,
    ))
    .await;
    let d = Daemon::start(&Config::new(&up)).await;
    let url = d.url(&model_path(FLASH, "streamGenerateContent"));
    let mut s = client::post_stream(&url, &user_auth(), GENERATE_BODY).await;
    assert_eq!(s.status, 200);

    let first = s
        .read_until(
            "the first array element before the upstream sends the rest",
            |b| lf(b).contains("\"one\""),
        )
        .await;
    assert!(!lf(&first).contains("\"two\""), "{:?}", lf(&first));
    gate.notify_one();

    let r = s.read_to_end().await;
    assert_eq!(
        r.body_error,
        None,
        "stream must end cleanly; body {:?}",
        r.text()
    );
    let v = r.json();
    let arr = v
        .as_array()
        .unwrap_or_else(|| panic!("not a JSON array: {v}"));
    let texts: Vec<_> = arr.iter().map(|e| chunk_text(e).unwrap_or("?")).collect();
    assert_eq!(texts, ["one", "two", "three"]);
    assert_eq!(up.requests_to(STREAM).len(), 1);
}

// 6
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_stream_cut_after_first_event_ends_with_error_event() {
    let gate = Arc::new(Notify::new());
    let up = Upstream::start(gated_stream_daemon_setup(
        upstream::StreamFormat::Sse,
        gate.clone(),
        Some(1),
    ))
    .await;
    let d = Daemon::start(&Config::new(&up).keys(keys(3))).await;
    let url = d.url(&format!(
        "{}?alt=sse",
        model_path(FLASH, "streamGenerateContent")
    ));
    let mut s = client::post_stream(&url, &user_auth(), GENERATE_BODY).await;
    assert_eq!(s.status, 200);
    s.read_until("the first SSE event", has_sse_event).await;
    gate.notify_one(); // the upstream now cuts the connection

    let r = s.read_to_end().await;
    assert_eq!(
        r.body_error,
        None,
        "the client's stream must end cleanly; body {:?}",
        r.text()
    );
    let body = lf(&r.body);
    assert!(
        body.ends_with("\n\n"),
        "last event ends with a blank line: {body:?}"
    );
    let events = sse_json_events(&r.body);
    assert_eq!(
        events.len(),
        2,
        "first event + one error event, no second answer: {body:?}"
    );
    assert_eq!(chunk_text(&events[0]), Some("one"));
    assert_google_error_value(&events[1], None, None);
    assert_eq!(
        up.requests_to(STREAM).len(),
        1,
        "no failover after the first byte"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_array_stream_cut_after_first_element_ends_as_valid_json() {
    let gate = Arc::new(Notify::new());
    let up = Upstream::start(gated_stream_daemon_setup(
        upstream::StreamFormat::JsonArray,
        gate.clone(),
        Some(1),
    ))
    .await;
    let d = Daemon::start(&Config::new(&up).keys(keys(3))).await;
    let url = d.url(&model_path(FLASH, "streamGenerateContent"));
    let mut s = client::post_stream(&url, &user_auth(), GENERATE_BODY).await;
    assert_eq!(s.status, 200);
    s.read_until("the first array element", |b| lf(b).contains("\"one\""))
        .await;
    gate.notify_one();

    let r = s.read_to_end().await;
    assert_eq!(
        r.body_error,
        None,
        "the client's stream must end cleanly; body {:?}",
        r.text()
    );
    let v = r.json();
    let arr = v
        .as_array()
        .unwrap_or_else(|| panic!("not a JSON array: {v}"));
    assert_eq!(
        arr.len(),
        2,
        "first element + one error object, no second answer: {v}"
    );
    assert_eq!(chunk_text(&arr[0]), Some("one"));
    assert_google_error_value(&arr[1], None, None);
    assert_eq!(
        up.requests_to(STREAM).len(),
        1,
        "no failover after the first byte"
    );
}

// 7
async fn fails_over_when_first_key(bad: fn() -> Reply) {
    let a = key(0);
    let ka = a.clone();
    let up = Upstream::start(move |r| {
        if r.key() == Some(&ka) {
            bad()
        } else {
            ok_or_stream(r)
        }
    })
    .await;
    let d = Daemon::start(&Config::new(&up).keys(keys(2))).await;
    for i in 0..2 {
        let r = generate(&d, FLASH).await;
        assert_eq!(
            r.status,
            200,
            "request {i} fails over to key b: {}",
            r.text()
        );
    }
    let used = up.keys_to(GEN);
    assert!(count(&used, &a) >= 1, "key a was tried: {used:?}");
    assert_eq!(count(&used, &key(1)), 2, "key b served both: {used:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_503_fails_over_to_another_key() {
    fails_over_when_first_key(Reply::unavailable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_reset_before_headers_fails_over() {
    fails_over_when_first_key(|| Reply::Reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_fails_over_before_first_byte() {
    let a = key(0);
    let ka = a.clone();
    let up = Upstream::start(move |r| {
        if r.key() == Some(&ka) {
            Reply::Reset
        } else {
            ok_or_stream(r)
        }
    })
    .await;
    let d = Daemon::start(&Config::new(&up).keys(keys(2))).await;
    let url = d.url(&format!(
        "{}?alt=sse",
        model_path(FLASH, "streamGenerateContent")
    ));
    for i in 0..2 {
        let r = client::post_stream(&url, &user_auth(), GENERATE_BODY)
            .await
            .read_to_end()
            .await;
        assert_eq!(r.status, 200, "stream {i}: {}", r.text());
        assert_eq!(r.body_error, None, "stream {i}");
        let texts: Vec<_> = sse_json_events(&r.body)
            .iter()
            .map(|e| chunk_text(e).unwrap_or("?").to_string())
            .collect();
        assert_eq!(texts, ["one", "two"], "stream {i}: one complete answer");
    }
    let used = up.keys_to(STREAM);
    assert!(count(&used, &a) >= 1, "key a was tried: {used:?}");
    assert_eq!(count(&used, &key(1)), 2, "{used:?}");
}

// 8
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_keys_cooling_answers_429_with_retry_after() {
    let up = Upstream::start(|_| Reply::resource_exhausted("30s")).await;
    let d = Daemon::start(&Config::new(&up).keys(keys(2))).await;
    let r = generate(&d, FLASH).await;
    assert_eq!(r.status, 429, "both keys answered 429: {}", r.text());
    assert_eq!(up.requests_to(GEN).len(), 2, "each key tried once");

    let r = generate(&d, FLASH).await;
    assert_google_error(&r, 429, "RESOURCE_EXHAUSTED");
    let ra = r.header("retry-after").expect("Retry-After header");
    let secs: u64 = ra
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is not integer seconds: {ra:?}"));
    assert!(
        (1..=60).contains(&secs),
        "Retry-After {secs}s should be about the 30s retryDelay"
    );
    assert!(r.header("x-request-id").is_some());
    assert_eq!(
        up.requests_to(GEN).len(),
        2,
        "no upstream call while every key cools"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_keys_configured_answers_503() {
    let up = Upstream::start(|_| Reply::generate_ok("hello")).await;
    let d = Daemon::start(&Config::new(&up).keys(Vec::<String>::new())).await;
    let r = generate(&d, FLASH).await;
    assert_google_error(&r, 503, "UNAVAILABLE");
    assert!(r.header("x-request-id").is_some());
    assert!(up.requests().is_empty(), "{:?}", up.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_keys_invalid_answers_503() {
    let up = Upstream::start(|_| Reply::api_key_invalid()).await;
    let d = Daemon::start(&Config::new(&up).keys(keys(2))).await;
    let r = generate(&d, FLASH).await;
    assert_google_error(&r, 503, "UNAVAILABLE");
    assert_eq!(up.requests_to(GEN).len(), 2, "each key tried once");
    let r = generate(&d, FLASH).await;
    assert_google_error(&r, 503, "UNAVAILABLE");
    assert_eq!(
        up.requests_to(GEN).len(),
        2,
        "retired keys are not tried again"
    );
}

// 9
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_state_survives_restart() {
    let (a, b, c) = (key(0), key(1), key(2));
    let (ka, kb) = (a.clone(), b.clone());
    let up = Upstream::start(move |r| {
        if r.key() == Some(&ka) {
            Reply::api_key_invalid()
        } else if r.key() == Some(&kb) && r.model() == Some(FLASH) {
            Reply::resource_exhausted("3600s")
        } else {
            Reply::generate_ok("hello")
        }
    })
    .await;
    let mut d = Daemon::start(&Config::new(&up).keys(keys(3))).await;
    for i in 0..6 {
        let r = generate(&d, FLASH).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        let used = up.keys_to(GEN);
        if used.contains(&a) && used.contains(&b) {
            break;
        }
    }
    let used = up.keys_to(GEN);
    assert!(
        used.contains(&a) && used.contains(&b),
        "a retired and b cooled before restart: {used:?}"
    );

    d.restart().await;
    up.clear();
    for i in 0..4 {
        let r = generate(&d, FLASH).await;
        assert_eq!(
            r.status,
            200,
            "flash request {i} after restart: {}",
            r.text()
        );
    }
    let used = up.keys_to(GEN);
    assert_eq!(
        used,
        vec![c.clone(); 4],
        "after restart only key c may serve flash"
    );

    up.clear();
    for i in 0..4 {
        let r = generate(&d, PRO).await;
        assert_eq!(r.status, 200, "pro request {i} after restart: {}", r.text());
    }
    let used = up.keys_to(GEN);
    assert_eq!(
        count(&used, &a),
        0,
        "retired key a must stay retired: {used:?}"
    );
    assert!(
        count(&used, &b) >= 1,
        "b cools for flash only, still serves pro: {used:?}"
    );
    assert_eq!(used.len(), 4, "{used:?}");
}

// 10
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_key_never_reaches_upstream() {
    let models = json!({"models": [{"name": "models/gemini-2.5-flash"}], "nextPageToken": "next"});
    let m = models.clone();
    let up = Upstream::start(move |r| {
        if r.path.ends_with("/models") {
            Reply::json(200, &m)
        } else {
            ok_or_stream(r)
        }
    })
    .await;
    let d = Daemon::start(&Config::new(&up)).await;
    let bearer = format!("Bearer {USER_KEY}");
    let styles = [
        ("header", vec![("x-goog-api-key", USER_KEY)], String::new()),
        ("query", vec![], format!("key={USER_KEY}")),
        (
            "bearer",
            vec![("authorization", bearer.as_str())],
            String::new(),
        ),
    ];
    for (name, headers, key_q) in &styles {
        let q = |rest: &str| match (key_q.is_empty(), rest.is_empty()) {
            (true, true) => String::new(),
            (true, false) => format!("?{rest}"),
            (false, true) => format!("?{key_q}"),
            (false, false) => format!("?{key_q}&{rest}"),
        };
        let r = client::post(
            &d.url(&format!(
                "{}{}",
                model_path(FLASH, "generateContent"),
                q("")
            )),
            headers,
            GENERATE_BODY,
        )
        .await;
        assert_eq!(r.status, 200, "{name}: generateContent: {}", r.text());

        let url = d.url(&format!(
            "{}{}",
            model_path(FLASH, "streamGenerateContent"),
            q("alt=sse")
        ));
        let r = client::post_stream(&url, headers, GENERATE_BODY)
            .await
            .read_to_end()
            .await;
        assert_eq!(r.status, 200, "{name}: stream: {}", r.text());
        assert_eq!(
            sse_json_events(&r.body).len(),
            2,
            "{name}: stream body {:?}",
            r.text()
        );

        let r = client::get(
            &d.url(&format!("/v1beta/models{}", q("pageSize=5&pageToken=abc"))),
            headers,
        )
        .await;
        assert_eq!(r.status, 200, "{name}: GET models: {}", r.text());
        assert_eq!(r.json(), models, "{name}: models list relayed");
    }

    let reqs = up.requests();
    assert_eq!(
        reqs.len(),
        9,
        "{:#?}",
        reqs.iter().map(Recorded::target).collect::<Vec<_>>()
    );
    for r in &reqs {
        let t = r.target();
        assert!(
            !r.query_pairs().iter().any(|(k, _)| k == "key"),
            "key= in upstream URL {t}"
        );
        assert!(!t.contains(USER_KEY), "user key in upstream URL {t}");
        assert!(
            r.headers.get("authorization").is_none(),
            "Authorization forwarded to {t}"
        );
        for (n, v) in &r.headers {
            let v = String::from_utf8_lossy(v.as_bytes());
            assert!(
                !v.contains(USER_KEY),
                "user key in upstream header {n} of {t}"
            );
        }
        let k = r
            .key()
            .unwrap_or_else(|| panic!("no x-goog-api-key on {t}"));
        assert!(
            keys(2).iter().any(|p| p == k),
            "x-goog-api-key {k:?} is not a pool key on {t}"
        );
        assert!(!t.contains("AIzaFAKE"), "pool key in upstream URL {t}");
        let hosts: Vec<_> = r.headers.get_all("host").iter().collect();
        assert_eq!(
            hosts,
            [up.addr.to_string().as_str()],
            "one Host header naming the upstream on {t}"
        );
    }
    for r in up.requests_to(STREAM) {
        assert_eq!(
            r.query_pairs(),
            [("alt".to_string(), "sse".to_string())],
            "stream query {}",
            r.target()
        );
    }
    for r in up.requests_to(GEN) {
        assert!(
            r.query_pairs().is_empty(),
            "generateContent query {}",
            r.target()
        );
    }
    for r in up.requests_to("/models") {
        let mut p = r.query_pairs();
        p.sort();
        let want = [
            ("pageSize".to_string(), "5".to_string()),
            ("pageToken".to_string(), "abc".to_string()),
        ];
        assert_eq!(p, want, "models query {}", r.target());
        assert_eq!(r.method, "GET");
    }
}

// 11
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_auth_errors_are_google_shaped() {
    let up = Upstream::start(|_| Reply::generate_ok("hello")).await;
    let d = Daemon::start(&Config::new(&up)).await;
    let url = d.url(&model_path(FLASH, "generateContent"));

    let r = client::post(&url, &[], GENERATE_BODY).await;
    assert_google_error(&r, 401, "UNAUTHENTICATED");
    assert!(r.header("x-request-id").is_some(), "x-request-id on 401");

    let wrong = "gb-test-wrong-0000000000000000";
    let bearer = format!("Bearer {wrong}");
    for (name, u, h) in [
        ("header", url.clone(), vec![("x-goog-api-key", wrong)]),
        ("query", format!("{url}?key={wrong}"), vec![]),
        (
            "bearer",
            url.clone(),
            vec![("authorization", bearer.as_str())],
        ),
    ] {
        let r = client::post(&u, &h, GENERATE_BODY).await;
        assert_eq!(r.status, 403, "{name}: {}", r.text());
        assert_google_error(&r, 403, "PERMISSION_DENIED");
        assert!(
            r.header("x-request-id").is_some(),
            "{name}: x-request-id on 403"
        );
    }
    let r = client::get(&d.url("/v1beta/models"), &[]).await;
    assert_google_error(&r, 401, "UNAUTHENTICATED");
    assert!(
        up.requests().is_empty(),
        "nothing forwarded without a valid user key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_body_and_google_headers_are_forwarded_unchanged() {
    let up = Upstream::start(|_| Reply::generate_ok("hello")).await;
    let d = Daemon::start(&Config::new(&up)).await;
    let body = "{ \"contents\" : [ {\"parts\":[{\"text\":\"h\u{e9}llo \\u00e9 \\\"q\\\"\"}]} ],\n\t\
                \"someFutureField\": {\"x\": [1, 2.50, 1e3, null]} ,  \"generationConfig\":{\"unknownKnob\":true,\"temperature\":0.70} }\n";
    let headers = [
        ("x-goog-api-key", USER_KEY),
        ("content-type", "application/json"),
        (
            "x-goog-api-client",
            "google-genai-sdk/1.20.0 gl-python/3.12.3",
        ),
    ];
    let r = client::post(
        &d.url(&model_path(FLASH, "generateContent")),
        &headers,
        body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("x-request-id").is_some_and(|v| !v.is_empty()),
        "x-request-id on success"
    );
    let reqs = up.requests_to(GEN);
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].body.as_ref(),
        body.as_bytes(),
        "body forwarded byte for byte"
    );
    assert_eq!(reqs[0].method, "POST");
    let h = |n: &str| {
        reqs[0]
            .headers
            .get(n)
            .map(|v| v.to_str().unwrap_or("?").to_string())
    };
    assert_eq!(
        h("x-goog-api-client").as_deref(),
        Some("google-genai-sdk/1.20.0 gl-python/3.12.3")
    );
    assert!(
        h("content-type").is_some_and(|c| c.starts_with("application/json")),
        "content-type {:?}",
        h("content-type")
    );
}

// 12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_native_routes_work_under_v1beta_and_v1() {
    let up = Upstream::start(|r| {
        if r.is_stream() {
            ok_or_stream(r)
        } else {
            Reply::json(200, &json!({ "echo": r.path }))
        }
    })
    .await;
    let d = Daemon::start(&Config::new(&up)).await;
    for prefix in ["/v1beta", "/v1"] {
        let routes = [
            (
                Method::POST,
                format!("{prefix}/models/gemini-2.5-flash:generateContent"),
                "",
            ),
            (
                Method::POST,
                format!("{prefix}/models/gemini-2.5-flash:streamGenerateContent"),
                "alt=sse",
            ),
            (
                Method::POST,
                format!("{prefix}/models/gemini-2.5-flash:countTokens"),
                "",
            ),
            (
                Method::POST,
                format!("{prefix}/models/gemini-embedding-001:embedContent"),
                "",
            ),
            (
                Method::POST,
                format!("{prefix}/models/gemini-embedding-001:batchEmbedContents"),
                "",
            ),
            (Method::GET, format!("{prefix}/models"), ""),
            (Method::GET, format!("{prefix}/models/gemini-2.5-flash"), ""),
        ];
        for (method, path, query) in routes {
            up.clear();
            let target = if query.is_empty() {
                path.clone()
            } else {
                format!("{path}?{query}")
            };
            let body = if method == Method::POST {
                GENERATE_BODY
            } else {
                ""
            };
            let r = client::request(method.clone(), &d.url(&target), &user_auth(), body).await;
            assert_eq!(r.status, 200, "{method} {target}: {}", r.text());
            assert!(
                r.header("x-request-id").is_some(),
                "{method} {target}: x-request-id"
            );
            let reqs = up.requests();
            assert_eq!(reqs.len(), 1, "{method} {target}");
            assert_eq!(reqs[0].method, method.as_str(), "{target}");
            assert_eq!(reqs[0].target(), target, "forwarded to the same path");
            if !path.ends_with(STREAM) {
                assert_eq!(
                    r.json(),
                    json!({ "echo": path }),
                    "{method} {target}: body relayed"
                );
            }
        }
    }
}

// 13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_attempts_bounds_retries() {
    let up = Upstream::start(|_| Reply::internal()).await;
    let d = Daemon::start(&Config::new(&up).keys(keys(5)).pool("max_attempts", "2")).await;
    let r = generate(&d, FLASH).await;
    assert!(
        (500..600).contains(&r.status),
        "5xx expected, got {}: {}",
        r.status,
        r.text()
    );
    assert_google_error_value(&r.json(), Some(r.status), None);
    assert!(r.header("x-request-id").is_some());
    let used = up.keys_to(GEN);
    assert_eq!(used.len(), 2, "max_attempts = 2: {used:?}");
    assert_ne!(used[0], used[1], "the retry uses another key: {used:?}");
}

// Secrets (SPEC 2): neither pool keys nor user keys appear in the daemon's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs() {
    let (a, b) = (key(0), key(1));
    let (ka, kb) = (a.clone(), b.clone());
    let up = Upstream::start(move |r| {
        if r.key() == Some(&ka) {
            Reply::api_key_invalid()
        } else if r.key() == Some(&kb) {
            Reply::resource_exhausted("30s")
        } else {
            ok_or_stream(r)
        }
    })
    .await;
    let mut d = Daemon::start(&Config::new(&up).keys(keys(3))).await;
    let url = d.url(&model_path(FLASH, "generateContent"));
    for _ in 0..3 {
        assert_eq!(generate(&d, FLASH).await.status, 200);
    }
    let bearer = format!("Bearer {USER_KEY}");
    client::post(&format!("{url}?key={USER_KEY}"), &[], GENERATE_BODY).await;
    client::post(&url, &[("authorization", bearer.as_str())], GENERATE_BODY).await;
    client::post(
        &url,
        &[("x-goog-api-key", "gb-test-wrong-0000000000000000")],
        GENERATE_BODY,
    )
    .await;
    d.stop().await;
    let logs = d.logs().join("\n");
    for secret in [
        a.as_str(),
        b.as_str(),
        key(2).as_str(),
        USER_KEY,
        "gb-test-wrong-0000000000000000",
    ] {
        assert!(
            !logs.contains(secret),
            "secret {secret:?} appears in the daemon's log"
        );
    }
}

/// A non-stream answer the upstream sent in chunks reaches the client whole, with its
/// length (one piece, no chunk framing), and byte for byte; one too big to hold is
/// relayed as it comes, still in chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_answers_are_sent_with_their_length_unless_too_big_to_hold() {
    let small = serde_json::to_vec(&up_body_ok()).unwrap();
    let big = format!("{{\"text\":\"{}\"}}", "x".repeat(300 * 1024)).into_bytes();
    for body in [small, big] {
        let parts: Vec<bytes::Bytes> = body
            .chunks(body.len() / 3 + 1)
            .map(bytes::Bytes::copy_from_slice)
            .collect();
        let up = Upstream::start(move |_| {
            Reply::Raw(upstream::RawStream::new(
                "application/json; charset=UTF-8",
                parts.clone(),
            ))
        })
        .await;
        let d = Daemon::start(&Config::new(&up).keys(keys(1))).await;
        let r = generate(&d, FLASH).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.body.as_ref(), body.as_slice(), "the answer, unchanged");
        if body.len() < 256 * 1024 {
            assert_eq!(r.header("content-length"), Some(body.len().to_string()));
            assert_eq!(r.header("transfer-encoding"), None);
        } else {
            assert_eq!(r.header("content-length"), None, "not held to be measured");
            assert_eq!(r.header("transfer-encoding").as_deref(), Some("chunked"));
        }
    }
}
