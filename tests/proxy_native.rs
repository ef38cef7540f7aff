//! The Gemini-native routes as a client sees them: every route under `/v1beta` and `/v1`
//! reaches Google at the same path, the request body and Google's headers are forwarded
//! byte for byte, the client's key never reaches Google (whether it came as a header, a
//! query parameter or a Bearer token), a missing or unknown key is answered in Google's
//! error shape, and a whole answer is relayed with its length.

mod common;

use common::*;
use http::Method;
use serde_json::json;

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
