//! Streams on the Gemini-native routes: SSE and JSON-array answers reach the client event
//! by event without being buffered, a stream cut after its first event ends with a
//! well-formed error (an error event, or a closed array) and no second answer, and a
//! stream fails over to another key only before its first byte.

mod common;

use std::sync::Arc;

use common::*;
use tokio::sync::Notify;

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
