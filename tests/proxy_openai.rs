//! The OpenAI-compatible surface as a client sees it: chat, streams, embeddings, images
//! and models forwarded to Google's own compatible upstream; bodies forwarded untouched
//! except the two documented edits (thinking controls moved into `extra_body`, usage asked
//! for on streams); usage-only chunks held back unless the client asked for them, however
//! the upstream splits its bytes; a stream cut midway ends with an error event; the models
//! list answered in the shape the caller's credential implies.

mod common;

use std::sync::Arc;

use common::openai::*;
use common::upstream::{OPENAI_CHAT_OK_BODY, RawStream, openai_chunk, openai_usage_chunk};
use common::*;
use serde_json::{Value, json};
use tokio::sync::Notify;

const EMBED: &str = "/v1beta/openai/embeddings";

const IMAGES: &str = "/v1beta/openai/images/generations";

const OA_MODELS: &str = "/v1beta/openai/models";

/// Every SSE event's raw `data:` payload (not parsed: `[DONE]` is not JSON).
fn sse_data(bytes: &[u8]) -> Vec<String> {
    lf(bytes)
        .split("\n\n")
        .filter_map(|block| {
            let data: Vec<&str> = block
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

fn parse(data: &str) -> Value {
    serde_json::from_str(data).unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {data:?}"))
}

fn is_usage_only(v: &Value) -> bool {
    v["choices"].as_array().is_some_and(Vec::is_empty) && v["usage"].is_object()
}

fn delta_text(v: &Value) -> Option<&str> {
    v["choices"][0]["delta"]["content"].as_str()
}

/// The standard chat stream: two content chunks, the usage-only chunk, `[DONE]`.
fn chat_stream() -> RawStream {
    RawStream::openai_sse(vec![
        openai_chunk("one", None),
        openai_chunk("two", Some("stop")),
        openai_usage_chunk(),
    ])
}

/// Asserts the upstream request carries a pool key as Bearer and nothing of the user key.
fn assert_pool_bearer_only(r: &Recorded, pool: &[String]) {
    let t = r.target();
    let b = r
        .bearer()
        .unwrap_or_else(|| panic!("no Authorization: Bearer on {t}"));
    assert!(
        pool.iter().any(|k| k == b),
        "Bearer {b:?} is not a pool key on {t}"
    );
    assert!(!t.contains(USER_KEY), "user key in upstream URL {t}");
    assert!(!t.contains("AIza"), "pool key in upstream URL {t}");
    assert!(
        !r.query_pairs().iter().any(|(k, _)| k == "key"),
        "key= in upstream URL {t}"
    );
    for (n, v) in &r.headers {
        let v = String::from_utf8_lossy(v.as_bytes());
        assert!(
            !v.contains(USER_KEY),
            "user key in upstream header {n} of {t}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_non_stream_is_relayed_faithfully_on_both_paths() {
    let up = Upstream::start(|_| Reply::openai_chat_ok()).await;
    let d = Daemon::start(&Config::new(&up)).await;
    let b = bearer();
    for path in ["/v1/chat/completions", "/v1beta/openai/chat/completions"] {
        up.clear();
        let r = client::post(&d.url(path), &[("authorization", b.as_str())], CHAT_BODY).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(
            r.text(),
            OPENAI_CHAT_OK_BODY,
            "{path}: answer relayed byte for byte"
        );
        let ct = r.header("content-type").unwrap_or_default();
        assert!(
            ct.starts_with("application/json"),
            "{path}: content-type {ct:?}"
        );
        assert!(
            r.header("x-request-id").is_some_and(|v| !v.is_empty()),
            "{path}: x-request-id"
        );
        let reqs = up.requests();
        assert_eq!(reqs.len(), 1, "{path}: one upstream call");
        assert_eq!(reqs[0].method, "POST");
        assert_eq!(
            reqs[0].target(),
            CHAT,
            "{path}: forwarded to Google's compat path"
        );
        assert_eq!(
            reqs[0].body.as_ref(),
            CHAT_BODY.as_bytes(),
            "{path}: body forwarded byte for byte"
        );
        assert!(
            reqs[0].key().is_none(),
            "{path}: the OpenAI surface sends the pool key as Bearer, not x-goog-api-key"
        );
        assert_pool_bearer_only(&reqs[0], &keys(2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_stream_is_relayed_incrementally_and_ends_with_done() {
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let up = Upstream::start(move |_| chat_stream().gate_before(1, g.clone()).into()).await;
    let d = Daemon::start(&Config::new(&up)).await;
    let b = bearer();
    let body = r#"{"model":"gemini-2.5-flash","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let mut s = client::post_stream(
        &d.url("/v1/chat/completions"),
        &[("authorization", b.as_str())],
        body,
    )
    .await;
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
    let first = sse_data(&first);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(delta_text(&parse(&first[0])), Some("one"));
    gate.notify_one();

    let r = s.read_to_end().await;
    assert_eq!(r.body_error, None, "clean end; body {:?}", r.text());
    let body_text = lf(&r.body);
    assert!(
        body_text.ends_with("data: [DONE]\n\n"),
        "stream ends with data: [DONE]: {body_text:?}"
    );
    let data = sse_data(&r.body);
    assert_eq!(data.len(), 4, "{data:?}");
    assert_eq!(delta_text(&parse(&data[0])), Some("one"));
    assert_eq!(delta_text(&parse(&data[1])), Some("two"));
    assert_eq!(
        parse(&data[2]),
        openai_usage_chunk(),
        "asked-for usage chunk"
    );
    assert_eq!(data[3], "[DONE]");
    assert_eq!(up.requests_to(CHAT).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_reach_upstream_unchanged() {
    let up = Upstream::start(|r| {
        if r.body_text().contains("\"stream\":true") {
            chat_stream().into()
        } else {
            Reply::openai_chat_ok()
        }
    })
    .await;
    let d = Daemon::start(&Config::new(&up)).await;
    // Odd spacing and number forms, so a re-serialisation would show.
    let body = "{ \"model\" : \"gemini-2.5-flash\",\n \"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"h\\u00e9\"}]}],\
                \"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"r\",\"strict\":true,\"schema\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"array\",\"items\":{\"type\":\"number\",\"minimum\":1.50}}},\"required\":[\"a\"]}}},\
                \"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\",\"properties\":{}}}}],\
                \"max_completion_tokens\" : 1e3, \"modalities\":[\"text\"], \"reasoning_effort\":\"low\", \"someFutureField\":{\"x\":[null,true]} }";
    let r = chat(&d, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let reqs = up.requests_to(CHAT);
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].body.as_ref(),
        body.as_bytes(),
        "no edit applies: body forwarded byte for byte"
    );

    // A stream without include_usage is edited; everything else stays as it was.
    up.clear();
    let streamed = json!({
        "model": "gemini-2.5-flash",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "max_completion_tokens": 100,
        "modalities": ["text"],
        "stream": true
    });
    let r = chat(&d, &streamed.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let reqs = up.requests_to(CHAT);
    assert_eq!(reqs.len(), 1);
    let sent = reqs[0].body_json();
    let mut want = streamed.clone();
    want["stream_options"] = json!({"include_usage": true});
    assert_eq!(sent, want, "only stream_options was added");
    let order: Vec<&String> = sent.as_object().unwrap().keys().collect();
    let want_order: Vec<&String> = want.as_object().unwrap().keys().collect();
    assert_eq!(
        order[..want_order.len() - 1],
        want_order[..want_order.len() - 1],
        "key order kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thinking_fields_move_into_extra_body() {
    let up = Upstream::start(|_| Reply::openai_chat_ok()).await;
    let d = Daemon::start(&Config::new(&up)).await;

    let body = r#"{"model":"gemini-2.5-flash","thinking_budget":1024,"messages":[{"role":"user","content":"hi"}],"include_thoughts":true,"reasoning_effort":"low","tools":[{"type":"function","function":{"name":"f"}}]}"#;
    let r = chat(&d, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), OPENAI_CHAT_OK_BODY);
    let sent = up.requests_to(CHAT)[0].body_json();
    let obj = sent.as_object().unwrap();
    assert!(
        !obj.contains_key("thinking_budget") && !obj.contains_key("include_thoughts"),
        "top-level thinking fields removed: {sent}"
    );
    assert_eq!(
        sent["extra_body"]["google"]["thinking_config"],
        json!({"thinking_budget": 1024, "include_thoughts": true}),
        "{sent}"
    );
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "model",
            "messages",
            "reasoning_effort",
            "tools",
            "extra_body"
        ],
        "other fields untouched, order kept: {sent}"
    );
    let orig: Value = serde_json::from_str(body).unwrap();
    for k in ["model", "messages", "reasoning_effort", "tools"] {
        assert_eq!(sent[k], orig[k], "{k} unchanged");
    }

    // An existing extra_body is kept and merged into.
    up.clear();
    let body = r#"{"model":"gemini-2.5-flash","messages":[],"include_thoughts":false,"extra_body":{"google":{"cached_content":"cachedContents/abc"},"other":1}}"#;
    let r = chat(&d, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = up.requests_to(CHAT)[0].body_json();
    assert!(sent.get("include_thoughts").is_none(), "{sent}");
    assert_eq!(
        sent["extra_body"],
        json!({"google": {"cached_content": "cachedContents/abc", "thinking_config": {"include_thoughts": false}}, "other": 1}),
        "{sent}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_only_chunk_is_hidden_unless_the_client_asked() {
    let up = Upstream::start(|_| chat_stream().into()).await;
    let d = Daemon::start(&Config::new(&up)).await;
    let b = bearer();
    let stream = |body: String| {
        let url = d.url("/v1/chat/completions");
        let b = b.clone();
        async move {
            client::post_stream(&url, &[("authorization", b.as_str())], body)
                .await
                .read_to_end()
                .await
        }
    };

    for (name, opts) in [
        ("no stream_options", None),
        ("include_usage false", Some(json!({"include_usage": false}))),
    ] {
        up.clear();
        let mut body = json!({"model": FLASH, "messages": [{"role": "user", "content": "hi"}], "stream": true});
        if let Some(o) = &opts {
            body["stream_options"] = o.clone();
        }
        let r = stream(body.to_string()).await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert_eq!(r.body_error, None, "{name}: clean end");
        let data = sse_data(&r.body);
        assert_eq!(
            data.last().map(String::as_str),
            Some("[DONE]"),
            "{name}: ends with [DONE]: {data:?}"
        );
        let events: Vec<Value> = data[..data.len() - 1].iter().map(|d| parse(d)).collect();
        assert!(
            !events.iter().any(is_usage_only),
            "{name}: client never sees the usage-only chunk: {data:?}"
        );
        let texts: Vec<_> = events
            .iter()
            .map(|e| delta_text(e).unwrap_or("?"))
            .collect();
        assert_eq!(texts, ["one", "two"], "{name}: content chunks relayed");
        let sent = up.requests_to(CHAT)[0].body_json();
        assert_eq!(
            sent["stream_options"]["include_usage"],
            json!(true),
            "{name}: upstream asked for usage: {sent}"
        );
    }

    up.clear();
    let body = json!({"model": FLASH, "messages": [], "stream": true, "stream_options": {"include_usage": true}}).to_string();
    let r = stream(body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let data = sse_data(&r.body);
    assert_eq!(data.len(), 4, "{data:?}");
    assert_eq!(
        parse(&data[2]),
        openai_usage_chunk(),
        "asked: usage chunk relayed"
    );
    assert_eq!(data[3], "[DONE]");
    assert_eq!(
        up.requests_to(CHAT)[0].body.as_ref(),
        body.as_bytes(),
        "no edit needed: forwarded byte for byte"
    );
}

/// The proxy relays whatever whole events one upstream read brings in one write; the
/// usage-only chunk must still be cut out of such a batch, however the bytes are split.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_only_chunk_is_hidden_however_the_upstream_splits_the_bytes() {
    let whole: Vec<u8> = chat_stream().chunks.concat();
    for piece in [whole.len(), 7, 1000] {
        let mut stream = chat_stream();
        stream.chunks = whole
            .chunks(piece)
            .map(bytes::Bytes::copy_from_slice)
            .collect();
        let up = Upstream::start(move |_| stream.clone().into()).await;
        let d = Daemon::start(&Config::new(&up)).await;
        let body = json!({"model": FLASH, "messages": [{"role": "user", "content": "hi"}], "stream": true});
        let r = client::post_stream(
            &d.url("/v1/chat/completions"),
            &[("authorization", bearer().as_str())],
            body.to_string(),
        )
        .await
        .read_to_end()
        .await;
        assert_eq!(r.status, 200, "pieces of {piece}: {}", r.text());
        let data = sse_data(&r.body);
        assert_eq!(
            data.last().map(String::as_str),
            Some("[DONE]"),
            "pieces of {piece}: {data:?}"
        );
        let texts: Vec<_> = data[..data.len() - 1]
            .iter()
            .map(|d| delta_text(&parse(d)).unwrap_or("usage?").to_owned())
            .collect();
        assert_eq!(texts, ["one", "two"], "pieces of {piece}: {data:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_and_images_pass_through_byte_for_byte() {
    const EMBED_ANSWER: &str = "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,\"embedding\":\"AAAAAAAA8D8AAAAAAAAAQA==\"}],\"model\":\"gemini-embedding-001\",\"usage\":{\"prompt_tokens\":2,\"total_tokens\":2}}";
    const IMAGE_ANSWER: &str =
        "{\"created\": 1750000000, \"data\": [{\"b64_json\": \"iVBORw0KGgo=\"}]}\n";
    let up = Upstream::start(|r| {
        if r.path == EMBED {
            Reply::raw(200, EMBED_ANSWER)
        } else if r.path == IMAGES {
            Reply::raw(200, IMAGE_ANSWER)
        } else {
            Reply::raw(404, "{}")
        }
    })
    .await;
    let d = Daemon::start(&Config::new(&up)).await;
    let b = bearer();
    let auth = [("authorization", b.as_str())];

    let embed_body = "{\"model\": \"gemini-embedding-001\", \"input\": [\"h\\u00e9llo\", \"world\"], \"encoding_format\": \"base64\", \"dimensions\": 768}";
    for path in ["/v1/embeddings", "/v1beta/openai/embeddings"] {
        up.clear();
        let r = client::post(&d.url(path), &auth, embed_body).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.text(), EMBED_ANSWER, "{path}: answer byte for byte");
        let reqs = up.requests();
        assert_eq!(reqs.len(), 1, "{path}");
        assert_eq!(reqs[0].target(), EMBED, "{path}");
        assert_eq!(reqs[0].body.as_ref(), embed_body.as_bytes(), "{path}: body");
        assert_pool_bearer_only(&reqs[0], &keys(2));
    }

    let image_body = "{\"model\":\"imagen-3.0-generate-002\",\"prompt\":\"a cat\",\"n\":1,\"response_format\":\"b64_json\",\"size\":\"1024x1024\"}";
    for path in [
        "/v1/images/generations",
        "/v1beta/openai/images/generations",
    ] {
        up.clear();
        let r = client::post(&d.url(path), &auth, image_body).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.text(), IMAGE_ANSWER, "{path}: answer byte for byte");
        let reqs = up.requests();
        assert_eq!(reqs.len(), 1, "{path}");
        assert_eq!(reqs[0].target(), IMAGES, "{path}");
        assert_eq!(reqs[0].body.as_ref(), image_body.as_bytes(), "{path}: body");
        assert_pool_bearer_only(&reqs[0], &keys(2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_list_shape_follows_the_callers_credential() {
    const OPENAI_LIST: &str = "{\"object\":\"list\",\"data\":[{\"id\":\"models/gemini-2.5-flash\",\"object\":\"model\",\"owned_by\":\"google\"}]}";
    let native =
        json!({"models": [{"name": "models/gemini-2.5-flash", "displayName": "Gemini 2.5 Flash"}]});
    let n = native.clone();
    let up = Upstream::start(move |r| {
        if r.path == OA_MODELS {
            Reply::raw(200, OPENAI_LIST)
        } else if r.path.ends_with("/models") {
            Reply::json(200, &n)
        } else {
            Reply::raw(404, "{}")
        }
    })
    .await;
    let d = Daemon::start(&Config::new(&up)).await;
    let b = bearer();

    for path in ["/v1/models", "/v1beta/openai/models"] {
        up.clear();
        let r = client::get(&d.url(path), &[("authorization", b.as_str())]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.text(), OPENAI_LIST, "{path}: OpenAI list relayed");
        let reqs = up.requests();
        assert_eq!(reqs.len(), 1, "{path}");
        assert_eq!(reqs[0].method, "GET");
        assert_eq!(
            reqs[0].path, OA_MODELS,
            "{path}: Bearer caller → compat list"
        );
        assert_pool_bearer_only(&reqs[0], &keys(2));
    }

    for (name, url, headers) in [
        (
            "x-goog-api-key",
            d.url("/v1/models"),
            vec![("x-goog-api-key", USER_KEY)],
        ),
        (
            "?key=",
            d.url(&format!("/v1/models?key={USER_KEY}")),
            vec![],
        ),
    ] {
        up.clear();
        let r = client::get(&url, &headers).await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert_eq!(r.json(), native, "{name}: Gemini's list relayed");
        let reqs = up.requests();
        assert_eq!(reqs.len(), 1, "{name}");
        // Native routes are served under /v1 and /v1beta; either native path is fine.
        assert!(
            reqs[0].path == "/v1beta/models" || reqs[0].path == "/v1/models",
            "{name}: native list expected, upstream got {}",
            reqs[0].target()
        );
        let k = reqs[0]
            .key()
            .unwrap_or_else(|| panic!("{name}: no x-goog-api-key upstream"));
        assert!(keys(2).iter().any(|p| p == k), "{name}: pool key {k:?}");
        assert!(
            !reqs[0].target().contains(USER_KEY),
            "{name}: user key in URL"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_cut_after_first_event_ends_with_error_event() {
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let up =
        Upstream::start(move |_| chat_stream().gate_before(1, g.clone()).cut_after(1).into()).await;
    let d = Daemon::start(&Config::new(&up).keys(keys(3))).await;
    let b = bearer();
    let body = json!({"model": FLASH, "messages": [], "stream": true}).to_string();
    let mut s = client::post_stream(
        &d.url("/v1/chat/completions"),
        &[("authorization", b.as_str())],
        body,
    )
    .await;
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
    let text = lf(&r.body);
    assert!(
        text.ends_with("\n\n"),
        "last event ends with a blank line: {text:?}"
    );
    let data = sse_data(&r.body);
    assert!(
        !data.iter().any(|d| d == "[DONE]"),
        "no [DONE] after a cut: {text:?}"
    );
    assert_eq!(data.len(), 2, "first event + one error event: {text:?}");
    assert_eq!(delta_text(&parse(&data[0])), Some("one"));
    assert_openai_error_value(&parse(&data[1]));
    assert_eq!(
        up.requests_to(CHAT).len(),
        1,
        "no failover after the first byte"
    );
}
