//! Property tests over the parsers that see hostile input: the route parser, the upstream
//! error classifier, the config parser, usage extraction, pasted-key extraction, and the
//! stream relay's framing (SSE and JSON-array streams split at every possible place, cut
//! anywhere). Each runs a fixed number of cases as an ordinary `cargo test`.
//!
//! The relay is driven through its public face (`Relay` over a real hyper `Incoming` fed
//! from an in-memory pipe); `sse_boundary` and `JsonScan` are private to `relay`.

use crate::config::Config;
use crate::keys::classify::{Outcome, classify};
use crate::keys::format::extract_keys;
use crate::relay::{ErrorStyle, Format, Relay};
use crate::router::{Route, RouteError};
use crate::usage;
use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ------------------------------------------------------------------ routes

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::HEAD),
        Just(Method::PUT),
        Just(Method::PATCH),
        Just(Method::DELETE),
        Just(Method::OPTIONS),
    ]
}

/// Paths made of the router's own words, odd characters and empty segments.
fn path() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        Just("v1beta".to_string()),
        Just("v1".to_string()),
        Just("openai".to_string()),
        Just("models".to_string()),
        Just("api".to_string()),
        Just("keys".to_string()),
        Just("users".to_string()),
        Just("logs".to_string()),
        Just("chat".to_string()),
        Just("completions".to_string()),
        Just("gemini-2.5-flash:generateContent".to_string()),
        Just(":streamGenerateContent".to_string()),
        Just(":".to_string()),
        Just("".to_string()),
        Just("..".to_string()),
        "\\PC{0,12}",
    ];
    prop::collection::vec(seg, 0..7).prop_map(|s| format!("/{}", s.join("/")))
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn route_parse_never_panics_and_is_consistent(m in method(), p in path()) {
        let once = Route::parse(&m, &p);
        prop_assert_eq!(&once, &Route::parse(&m, &p), "not deterministic");
        if let Ok(Route::Gemini { model: Some(model), .. }) = &once {
            prop_assert!(!model.is_empty(), "empty model from {}", p);
            prop_assert!(p.contains(model), "model {} not in {}", model, p);
            prop_assert!(!model.contains('/'), "model {} spans segments", model);
        }
        // HEAD is accepted exactly where GET is.
        if m == Method::HEAD {
            let get = Route::parse(&Method::GET, &p);
            prop_assert_eq!(once.is_ok(), get.is_ok(), "HEAD vs GET on {}", p);
        }
        // A path a method does not serve is 405 only when some method serves it.
        if once == Err(RouteError::MethodNotAllowed) {
            let any = [Method::GET, Method::POST, Method::PATCH, Method::DELETE]
                .iter()
                .any(|m| Route::parse(m, &p).is_ok());
            prop_assert!(any, "405 for {} but no method is allowed", p);
        }
    }

    #[test]
    fn route_parse_survives_arbitrary_text(m in method(), p in "\\PC{0,200}") {
        let _ = Route::parse(&m, &p);
    }
}

// ------------------------------------------------------------------ classifier

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(200u16),
        Just(400),
        Just(401),
        Just(403),
        Just(404),
        Just(408),
        Just(413),
        Just(429),
        Just(500),
        Just(502),
        Just(503),
        Just(504),
        100u16..600,
    ]
}

/// Google-shaped error bodies with random reasons, delays and quota ids.
fn error_body() -> impl Strategy<Value = Vec<u8>> {
    let reason = prop_oneof![
        Just("API_KEY_INVALID".to_string()),
        Just("CONSUMER_SUSPENDED".to_string()),
        Just("RATE_LIMIT_EXCEEDED".to_string()),
        "\\PC{0,20}",
    ];
    let delay = prop_oneof![
        (0u64..100_000).prop_map(|s| format!("{s}s")),
        (0u64..100_000, 0u32..1000).prop_map(|(s, f)| format!("{s}.{f:03}s")),
        "\\PC{0,12}",
        Just("-5s".to_string()),
        Just("1e400s".to_string()),
        Just("99999999999999999999999s".to_string()),
    ];
    let quota = prop_oneof![
        Just("GenerateRequestsPerDayPerProjectPerModel-FreeTier".to_string()),
        Just("GenerateRequestsPerMinutePerProjectPerModel".to_string()),
        "\\PC{0,16}",
    ];
    (reason, delay, quota, "\\PC{0,40}", any::<bool>()).prop_map(
        |(reason, delay, quota, message, list)| {
            let error = json!({
                "code": 429, "message": message, "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason},
                    {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                     "violations": [{"quotaId": quota}]},
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay},
                ]
            });
            let v = if list {
                json!([{ "error": error }])
            } else {
                json!({ "error": error })
            };
            serde_json::to_vec(&v).expect("serialise")
        },
    )
}

fn check_classification(st: u16, body: &[u8]) -> Result<(), TestCaseError> {
    let out = classify(st, body);
    match st {
        200..=299 => prop_assert_eq!(out, Outcome::Success),
        429 => prop_assert!(
            matches!(out, Outcome::RateLimited { .. }),
            "{} → {:?}",
            st,
            out
        ),
        401 => prop_assert!(matches!(out, Outcome::Invalid { .. }), "{} → {:?}", st, out),
        // A 403 retires the key only for a key reason; otherwise it charges nothing or
        // counts as a transient failure.
        403 => {
            let text = String::from_utf8_lossy(body);
            let key_reason = ["API_KEY_INVALID", "CONSUMER_SUSPENDED"]
                .iter()
                .any(|r| text.contains(&format!("\"reason\":\"{r}\"")));
            prop_assert_eq!(
                matches!(out, Outcome::Invalid { .. }),
                key_reason,
                "{} {} → {:?}",
                st,
                text,
                out
            )
        }
        408 | 500 | 502 | 503 | 504 => {
            prop_assert!(
                matches!(out, Outcome::Transient { .. }),
                "{} → {:?}",
                st,
                out
            )
        }
        400 => prop_assert!(
            matches!(out, Outcome::Invalid { .. } | Outcome::ClientError),
            "{} → {:?}",
            st,
            out
        ),
        _ => prop_assert_eq!(out, Outcome::ClientError),
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn classify_never_panics_on_bytes(st in status(), body in prop::collection::vec(any::<u8>(), 0..300)) {
        check_classification(st, &body)?;
    }

    #[test]
    fn classify_never_panics_on_google_shaped_bodies(st in status(), body in error_body()) {
        check_classification(st, &body)?;
    }

    #[test]
    fn a_whole_second_retry_delay_is_read_exactly(secs in 0u64..1_000_000, list in any::<bool>()) {
        let error = json!({"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                         "retryDelay": format!("{secs}s")}]});
        let v = if list { json!([{ "error": error }]) } else { json!({ "error": error }) };
        let out = classify(429, v.to_string().as_bytes());
        match out {
            Outcome::RateLimited { retry_after, .. } => {
                prop_assert_eq!(retry_after, Some(Duration::from_secs(secs)))
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }
}

// ------------------------------------------------------------------ config

/// TOML-ish text built from the config's own keys and sections with random values.
fn config_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("listen"),
        Just("data_dir"),
        Just("log_level"),
        Just("store"),
        Just("password"),
        Just("base_url"),
        Just("request_timeout"),
        Just("max_attempts"),
        Just("queue_wait"),
        Just("max_body_bytes"),
        Just("enabled"),
        Just("key"),
        Just("name"),
        Just("nonsense_key"),
    ];
    let value = prop_oneof![
        Just("\"30s\"".to_string()),
        Just("\"-1s\"".to_string()),
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("99999999999999999999".to_string()),
        Just("true".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        "\"\\PC{0,16}\"",
        "\\PC{0,12}",
    ];
    let section = prop_oneof![
        Just(""),
        Just("[admin]"),
        Just("[upstream]"),
        Just("[pool]"),
        Just("[server]"),
        Just("[logs]"),
        Just("[[upstream_keys]]"),
        Just("[[users]]"),
        Just("[bogus]"),
    ];
    let line = prop_oneof![
        (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        section.prop_map(str::to_string),
        "\\PC{0,30}",
    ];
    prop::collection::vec(line, 0..12).prop_map(|l| l.join("\n"))
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn config_parse_never_panics(text in config_text()) {
        if let Ok(c) = Config::parse(&text) {
            let _ = c.validate();
        }
    }

    #[test]
    fn config_parse_survives_arbitrary_unicode(text in "\\PC{0,200}") {
        let _ = Config::parse(&text);
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it(name in "[a-z]{3,12}_zz", section in prop::sample::select(vec!["", "[pool]", "[server]", "[upstream]"])) {
        let text = format!("{section}\n{name} = 1\n");
        let err = Config::parse(&text).expect_err("unknown key accepted");
        prop_assert!(err.to_string().contains(&name), "{} does not name {}", err, name);
    }
}

// ------------------------------------------------------------------ usage, pasted keys

/// A usage member's name: one the parser reads (either API's), or another.
fn usage_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "promptTokenCount",
            "candidatesTokenCount",
            "thoughtsTokenCount",
            "cachedContentTokenCount",
            "totalTokenCount",
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "completion_tokens_details",
            "prompt_tokens_details",
            "reasoning_tokens",
            "cached_tokens",
        ])
        .prop_map(String::from),
        "x_[a-zA-Z_]{0,10}",
    ]
}

/// Any JSON value a usage member might hold: counts of every shape, nested details.
fn usage_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<u64>().prop_map(Value::from),
        (0u64..1000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec((usage_name(), inner), 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// What a JSON parser makes of a usage object: whole numbers that fit count, anything
/// else is 0; OpenAI's details are objects with their own count.
fn usage_by_json(gemini: bool, usage: &Value) -> usage::Tokens {
    let count = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let inner = |name: &str, field: &str| count(usage.get(name).and_then(|d| d.get(field)));
    if gemini {
        usage::Tokens {
            prompt: count(usage.get("promptTokenCount")),
            candidates: count(usage.get("candidatesTokenCount")),
            thoughts: count(usage.get("thoughtsTokenCount")),
            cached: count(usage.get("cachedContentTokenCount")),
            total: count(usage.get("totalTokenCount")),
        }
    } else {
        usage::Tokens {
            prompt: count(usage.get("prompt_tokens")),
            candidates: count(usage.get("completion_tokens")),
            thoughts: inner("completion_tokens_details", "reasoning_tokens"),
            cached: inner("prompt_tokens_details", "cached_tokens"),
            total: count(usage.get("total_tokens")),
        }
    }
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn usage_parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = usage::parse(&bytes);
    }

    #[test]
    fn usage_parse_reads_the_last_usage_block(
        a in 0u64..1 << 40, b in 0u64..1 << 40, prefix in "\\PC{0,40}",
    ) {
        let first = json!({"usageMetadata": {"promptTokenCount": 1, "totalTokenCount": 1}});
        let last = json!({"candidates": [{"content": {"parts": [{"text": prefix}]}}],
            "usageMetadata": {"promptTokenCount": a, "candidatesTokenCount": b,
                              "totalTokenCount": a + b}});
        let text = format!("data: {first}\r\n\r\ndata: {last}\r\n\r\n");
        let t = usage::parse(text.as_bytes()).expect("usage found");
        prop_assert_eq!((t.prompt, t.candidates, t.total), (a, b, a + b));
    }

    #[test]
    fn usage_parse_reads_what_a_json_parser_reads(
        gemini in any::<bool>(),
        members in prop::collection::vec((usage_name(), usage_value()), 0..8),
        spaced in any::<bool>(),
    ) {
        let mut usage = serde_json::Map::new();
        for (name, value) in members {
            usage.insert(name, value);
        }
        let usage = Value::Object(usage);
        let key = if gemini { "usageMetadata" } else { "usage" };
        let text = if spaced {
            serde_json::to_string_pretty(&json!({"candidates": [], key: usage, "id": "x"}))
        } else {
            serde_json::to_string(&json!({"candidates": [], key: usage, "id": "x"}))
        }
        .unwrap();
        prop_assert_eq!(usage::parse(text.as_bytes()), Some(usage_by_json(gemini, &usage)));
    }

    #[test]
    fn extract_keys_finds_every_key_between_any_separators(
        keys in prop::collection::vec("AIza[A-Za-z0-9_-]{16,39}|[AI]Q\\.[A-Za-z0-9_-]{8,30}(\\.[A-Za-z0-9_-]{4,20})?", 0..20),
        seps in prop::collection::vec(prop::sample::select(vec![" ", "\n", "\r\n", ",", ";", "\t", "\"", "'", "[", "]", ", ", ". ", ".\n", "("]), 21),
    ) {
        let mut text = String::new();
        for (i, k) in keys.iter().enumerate() {
            text += seps[i];
            text += k;
        }
        text += seps[20];
        prop_assert_eq!(extract_keys(&text), keys);
    }

    #[test]
    fn extract_keys_never_panics_and_yields_clean_pieces(text in "\\PC{0,300}") {
        for k in extract_keys(&text) {
            prop_assert!(!k.is_empty());
            prop_assert!(text.contains(&k));
            prop_assert!(!k.chars().any(|c| c.is_whitespace() || ",;\"'[]".contains(c)));
        }
    }
}

// ------------------------------------------------------------------ stream relay framing

/// Feeds `pieces` as the chunked body of a 200 answer through a real hyper connection and
/// relays it; `clean` ends the body properly, otherwise the connection is cut. Answers the
/// frames the client would get and whether the relay ended in error.
fn relay(format: Format, ctype: &str, pieces: Vec<Vec<u8>>, clean: bool) -> (Vec<Bytes>, bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ctype = ctype.to_string();
    rt.block_on(async move {
        let (client_io, mut server_io) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            // Read the request head before answering.
            let _ = tokio::io::AsyncReadExt::read(&mut server_io, &mut buf).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ntransfer-encoding: chunked\r\n\r\n"
            );
            server_io.write_all(head.as_bytes()).await.unwrap();
            for p in pieces.iter().filter(|p| !p.is_empty()) {
                let chunk = [format!("{:x}\r\n", p.len()).as_bytes(), p, b"\r\n"].concat();
                if server_io.write_all(&chunk).await.is_err() {
                    return;
                }
                server_io.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            if clean {
                let _ = server_io.write_all(b"0\r\n\r\n").await;
            }
            let _ = server_io.shutdown().await;
        });
        let io = hyper_util::rt::TokioIo::new(client_io);
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let req = http::Request::builder()
            .uri("/")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let mut relay = Relay::new(
            resp.into_body().into(),
            format,
            ErrorStyle::Google,
            Duration::from_secs(10),
        );
        let primed = relay.prime().await;
        let mut frames = Vec::new();
        let mut errored = primed.is_err();
        if primed.is_ok() {
            let mut body = std::pin::pin!(relay);
            while let Some(f) = body.frame().await {
                match f {
                    Ok(f) => frames.extend(f.into_data().ok()),
                    Err(_) => {
                        errored = true;
                        break;
                    }
                }
            }
        }
        let _ = server.await;
        (frames, errored)
    })
}

/// Splits `bytes` at the given (sorted, deduplicated) cut points.
fn split(bytes: &[u8], mut at: Vec<usize>) -> Vec<Vec<u8>> {
    at.retain(|&i| i > 0 && i < bytes.len());
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::new();
    let mut prev = 0;
    for i in at {
        out.push(bytes[prev..i].to_vec());
        prev = i;
    }
    out.push(bytes[prev..].to_vec());
    out
}

/// Event payloads with the characters that trip hand-written scanners.
fn events() -> impl Strategy<Value = Vec<Value>> {
    let text = "[a-z\\]\\[{}\"\\\\,:\r\n é\u{1F600}]{0,24}";
    prop::collection::vec(text, 1..6).prop_map(|ts| {
        ts.into_iter()
            .map(|t| json!({"candidates": [{"content": {"parts": [{"text": t}]}}], "nested": [[{}], {"a": "]}"}]}))
            .collect()
    })
}

fn sse_bytes(events: &[Value], crlf: bool) -> Vec<u8> {
    let nl = if crlf { "\r\n" } else { "\n" };
    events
        .iter()
        .map(|e| format!("data: {e}{nl}{nl}"))
        .collect::<String>()
        .into_bytes()
}

fn array_bytes(events: &[Value]) -> Vec<u8> {
    let mut s = String::from("[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            s += "\r\n,";
        }
        s += &e.to_string();
    }
    s += "]";
    s.into_bytes()
}

/// The JSON payloads of the SSE events in `text`.
fn sse_payloads(text: &str) -> Vec<Value> {
    text.replace("\r\n", "\n")
        .split("\n\n")
        .filter(|b| !b.is_empty())
        .map(|b| serde_json::from_str(b.strip_prefix("data: ").unwrap_or(b)).expect("JSON event"))
        .collect()
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn sse_relay_passes_whole_events_however_the_bytes_arrive(
        evs in events(), crlf in any::<bool>(), cuts in prop::collection::vec(0usize..4000, 0..12),
    ) {
        let bytes = sse_bytes(&evs, crlf);
        let (frames, errored) = relay(Format::Sse, "text/event-stream", split(&bytes, cuts), true);
        prop_assert!(!errored);
        let nl: &[u8] = if crlf { b"\r\n\r\n" } else { b"\n\n" };
        for f in &frames {
            prop_assert!(f.ends_with(nl), "frame not on an event boundary: {:?}", f);
        }
        prop_assert_eq!(frames.concat(), bytes);
    }

    #[test]
    fn a_cut_sse_stream_ends_with_whole_events_and_one_error(
        evs in events(), crlf in any::<bool>(), cut_at in 1usize..4000,
        cuts in prop::collection::vec(0usize..4000, 0..6),
    ) {
        let bytes = sse_bytes(&evs, crlf);
        let cut_at = cut_at % bytes.len();
        prop_assume!(cut_at > 0);
        let sent = &bytes[..cut_at];
        let (frames, errored) = relay(Format::Sse, "text/event-stream", split(sent, cuts), false);
        let text = String::from_utf8(frames.concat()).expect("UTF-8 out");
        if errored {
            // The cut came before the first whole event: nothing went to the client.
            prop_assert!(frames.is_empty());
            return Ok(());
        }
        let got = sse_payloads(&text);
        let (last, before) = got.split_last().expect("some event");
        prop_assert!(last["error"].is_object(), "last event is not an error: {}", text);
        prop_assert!(before.len() <= evs.len());
        prop_assert_eq!(before, &evs[..before.len()], "events changed or spliced");
    }

    #[test]
    fn json_array_relay_passes_the_array_however_the_bytes_arrive(
        evs in events(), cuts in prop::collection::vec(0usize..4000, 0..12),
    ) {
        let bytes = array_bytes(&evs);
        let (frames, errored) = relay(Format::JsonArray, "application/json", split(&bytes, cuts), true);
        prop_assert!(!errored);
        prop_assert_eq!(frames.concat(), bytes);
    }

    #[test]
    fn a_cut_json_array_is_closed_with_an_error_element(
        evs in events(), cut_at in 1usize..4000, cuts in prop::collection::vec(0usize..4000, 0..6),
    ) {
        let bytes = array_bytes(&evs);
        let cut_at = cut_at % bytes.len();
        prop_assume!(cut_at > 0);
        let (frames, errored) =
            relay(Format::JsonArray, "application/json", split(&bytes[..cut_at], cuts), false);
        let text = String::from_utf8(frames.concat()).expect("UTF-8 out");
        if errored {
            prop_assert!(frames.is_empty());
            return Ok(());
        }
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {text:?}")))?;
        let items = v.as_array().expect("an array");
        let (last, before) = items.split_last().expect("some element");
        prop_assert!(last["error"].is_object(), "last element is not an error: {}", text);
        prop_assert_eq!(before, &evs[..before.len()], "elements changed or spliced");
    }
}
