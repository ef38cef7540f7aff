//! Hostile input, black-box: malformed JSON, wrong content types, invalid UTF-8, enormous
//! headers, thousands of query parameters and empty bodies, on the native, OpenAI and admin
//! routes, are each answered with a clear 4xx, and the daemon stays healthy and never
//! panics.

mod common;

use common::client;
use common::raw::{parse_status, raw_exchange};
use common::{Config, Daemon, FLASH, GENERATE_BODY, Reply, USER_KEY, Upstream, model_path};
use serde_json::{Value, json};

const PASSWORD: &str = "hostile-input-admin-pw";

/// A Google-like upstream: rejects what Google rejects (bodies that are not JSON) with
/// 400 INVALID_ARGUMENT, answers the rest.
async fn strict_upstream() -> Upstream {
    Upstream::start(|r| {
        if r.path.ends_with("/models") || r.method == "GET" {
            return Reply::json(200, &json!({ "models": [] }));
        }
        if r.model()
            .is_some_and(|m| !m.starts_with("gemini-") || m.contains('%'))
        {
            let body = json!({"error": {"code": 404, "status": "NOT_FOUND",
                "message": "models/x is not found for API version v1beta"}});
            return Reply::json(404, &body);
        }
        match serde_json::from_slice::<Value>(&r.body) {
            Ok(_) if r.path.contains("chat/completions") => Reply::openai_chat_ok(),
            Ok(_) => Reply::generate_ok("hi"),
            Err(_) => Reply::invalid_argument(),
        }
    })
    .await
}

fn body_of(raw: &[u8]) -> &[u8] {
    match raw.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &raw[i + 4..],
        None => &[],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_answered_with_a_clear_4xx() {
    let up = strict_upstream().await;
    let cfg = Config::new(&up).admin_password(PASSWORD);
    let d = Daemon::start(&cfg).await;
    let addr = d.addr.to_string();
    let generate = model_path(FLASH, "generateContent");
    let key = USER_KEY;
    let big = "x".repeat(70 * 1024);
    let many_params: String = (0..5000).map(|i| format!("p{i}=v{i}&")).collect();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "malformed JSON (native)",
            req(
                "POST",
                &generate,
                &[
                    ("x-goog-api-key", key),
                    ("content-type", "application/json"),
                ],
                b"{\"contents\": [ {",
            ),
        ),
        (
            "malformed JSON (OpenAI)",
            req(
                "POST",
                "/v1/chat/completions",
                &[
                    ("authorization", &format!("Bearer {key}")),
                    ("content-type", "application/json"),
                ],
                b"{\"model\": \"gemini",
            ),
        ),
        (
            "malformed JSON (admin login)",
            req(
                "POST",
                "/api/login",
                &[("content-type", "application/json")],
                b"{\"password\":",
            ),
        ),
        (
            "wrong content type (native, form body)",
            req(
                "POST",
                &generate,
                &[
                    ("x-goog-api-key", key),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                b"a=1&b=2",
            ),
        ),
        (
            "wrong content type (OpenAI, XML)",
            req(
                "POST",
                "/v1/chat/completions",
                &[
                    ("authorization", &format!("Bearer {key}")),
                    ("content-type", "application/xml"),
                ],
                b"<chat/>",
            ),
        ),
        (
            "invalid UTF-8 body (native)",
            req(
                "POST",
                &generate,
                &[
                    ("x-goog-api-key", key),
                    ("content-type", "application/json"),
                ],
                b"{\"contents\":\"\xff\xfe\xc0\"}",
            ),
        ),
        (
            "invalid UTF-8 body (OpenAI)",
            req(
                "POST",
                "/v1/chat/completions",
                &[
                    ("authorization", &format!("Bearer {key}")),
                    ("content-type", "application/json"),
                ],
                b"{\"model\":\"\xff\xfe\"}",
            ),
        ),
        (
            "invalid UTF-8 body (admin login)",
            req(
                "POST",
                "/api/login",
                &[("content-type", "application/json")],
                b"{\"password\":\"\xff\"}",
            ),
        ),
        (
            "invalid UTF-8 in the user key header",
            req(
                "POST",
                &generate,
                &[("content-type", "application/json")],
                GENERATE_BODY.as_bytes(),
            )
            .into_iter()
            .collect::<Vec<u8>>(),
        ),
        (
            "invalid UTF-8 in the path (percent-encoded)",
            req(
                "POST",
                "/v1beta/models/gemini-%FF%FE:generateContent",
                &[
                    ("x-goog-api-key", key),
                    ("content-type", "application/json"),
                ],
                GENERATE_BODY.as_bytes(),
            ),
        ),
        (
            "invalid UTF-8 in ?key=",
            req(
                "POST",
                &format!("{generate}?key=%FF%FE"),
                &[("content-type", "application/json")],
                GENERATE_BODY.as_bytes(),
            ),
        ),
        (
            "raw invalid UTF-8 bytes in the request target",
            raw_ff(req(
                "POST",
                "/v1beta/models/gemini-RAWFF:generateContent",
                &[
                    ("x-goog-api-key", key),
                    ("content-type", "application/json"),
                ],
                GENERATE_BODY.as_bytes(),
            )),
        ),
        (
            "enormous header (70 KiB)",
            req(
                "POST",
                &generate,
                &[("x-goog-api-key", key), ("x-big", &big)],
                GENERATE_BODY.as_bytes(),
            ),
        ),
        (
            "thousands of query parameters, no key",
            req(
                "POST",
                &format!("{generate}?{many_params}"),
                &[("content-type", "application/json")],
                GENERATE_BODY.as_bytes(),
            ),
        ),
        (
            "thousands of query parameters and a bad ?key=",
            req(
                "POST",
                &format!("{generate}?{many_params}key=gb-nope"),
                &[("content-type", "application/json")],
                GENERATE_BODY.as_bytes(),
            ),
        ),
        (
            "0-byte body (native)",
            req(
                "POST",
                &generate,
                &[
                    ("x-goog-api-key", key),
                    ("content-type", "application/json"),
                ],
                b"",
            ),
        ),
        (
            "0-byte body (OpenAI)",
            req(
                "POST",
                "/v1/chat/completions",
                &[
                    ("authorization", &format!("Bearer {key}")),
                    ("content-type", "application/json"),
                ],
                b"",
            ),
        ),
        (
            "0-byte body (admin login)",
            req(
                "POST",
                "/api/login",
                &[("content-type", "application/json")],
                b"",
            ),
        ),
    ];
    // The raw header bytes 0xFF 0xFE in x-goog-api-key.
    let mut bad_header = b"POST ".to_vec();
    bad_header.extend_from_slice(generate.as_bytes());
    bad_header.extend_from_slice(b" HTTP/1.1\r\nhost: x\r\nx-goog-api-key: gb-\xff\xfe\r\ncontent-type: application/json\r\n");
    bad_header.extend_from_slice(
        format!(
            "content-length: {}\r\n\r\n{GENERATE_BODY}",
            GENERATE_BODY.len()
        )
        .as_bytes(),
    );
    cases[8].1 = bad_header;

    let mut failures = Vec::new();
    for (name, bytes) in &cases {
        let out = raw_exchange(&addr, bytes).await;
        let status = parse_status(&out);
        let body = body_of(&out);
        let json_error = serde_json::from_slice::<Value>(body)
            .map(|v| v["error"].is_object() || v["error"].is_string() || v[0]["error"].is_object())
            .unwrap_or(false);
        println!("{name}: {status:?}");
        match status {
            Some(s) if (400..500).contains(&s) => {
                // hyper's parser answers a request it cannot read (431 for a huge head,
                // 400 for bytes no URI may hold) before any route runs, with no body;
                // every 4xx from the daemon itself names its error.
                let parser_level = s == 431 || name.starts_with("raw invalid");
                if !parser_level && !json_error {
                    failures.push(format!(
                        "{name}: {s} without a JSON error body: {:?}",
                        String::from_utf8_lossy(body)
                    ));
                }
            }
            other => failures.push(format!(
                "{name}: expected a 4xx, got {other:?}: {:?}",
                String::from_utf8_lossy(&out[..out.len().min(300)])
            )),
        }
    }
    let h = client::get(&d.url("/healthz"), &[]).await;
    assert_eq!(h.status, 200, "daemon unhealthy after hostile input");
    let panics: Vec<String> = d
        .logs()
        .into_iter()
        .filter(|l| l.contains("panicked"))
        .collect();
    assert!(panics.is_empty(), "the daemon panicked: {panics:?}");
    assert!(
        failures.is_empty(),
        "hostile input not answered with a clear 4xx:\n{}",
        failures.join("\n")
    );
}

/// Replaces the marker `RAWFF` with the single byte 0xFF (not UTF-8).
fn raw_ff(bytes: Vec<u8>) -> Vec<u8> {
    let at = bytes
        .windows(5)
        .position(|w| w == b"RAWFF")
        .expect("marker");
    let mut out = bytes[..at].to_vec();
    out.push(0xFF);
    out.extend_from_slice(&bytes[at + 5..]);
    out
}

fn req(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nhost: gateway\r\n").into_bytes();
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}
