//! No secret reaches the daemon's log or a response it does not belong in: the admin
//! password (right and wrong), upstream keys (good, invalid, cooling, added through the
//! API), user keys (known, unknown, created, rotated, sent as a header, a query parameter
//! or a Bearer token), the metrics token and the session token, through every path that
//! handles one.

mod common;

use common::admin::*;
use common::*;
use http::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs() {
    let pw = "Adm1n-Pa55word-zebra-quartz";
    let wrong_pw = "Adm1n-Pa55word-zebra-typo";
    let (good, bad, hot) = (
        long_key("SECRETGOOD", "good"),
        long_key("SECRETBAD", "badk"),
        long_key("SECRETHOT", "hotk"),
    );
    let added = long_key("SECRETADDED", "addd");
    let user_key = "gb-secret-user-Zz9Yy8Xx7Ww6Vv5";
    let wrong_user = "gb-secret-wrong-Qq1Rr2Ss3Tt4";
    let (kb, kh) = (bad.clone(), hot.clone());
    let up = Upstream::start(move |r| {
        let k = r.key().or(r.bearer());
        if k == Some(kb.as_str()) {
            Reply::api_key_invalid()
        } else if k == Some(kh.as_str()) {
            Reply::resource_exhausted("30s")
        } else if r.path.ends_with("/models") {
            Reply::json(200, &json!({"models": []}))
        } else if r.path.ends_with("/chat/completions") {
            Reply::openai_chat_ok()
        } else {
            Reply::generate_ok("hello")
        }
    })
    .await;
    let cfg = Config::new(&up)
        .keys([good.clone(), bad.clone(), hot.clone()])
        .user("zed", user_key)
        .admin_password(pw);
    let mut d = Daemon::start(&cfg).await;

    for _ in 0..3 {
        assert_admin_error(&login_resp(&d, wrong_pw).await, 401);
    }
    let form = format!("password={wrong_pw}");
    client::post(
        &d.url("/api/login"),
        &[("content-type", "application/x-www-form-urlencoded")],
        form,
    )
    .await;
    let token = login(&d, pw).await;
    for _ in 0..4 {
        assert_eq!(generate_as(&d, user_key, FLASH).await.status, 200);
    }
    client::post(
        &d.url(&format!(
            "{}?key={user_key}",
            model_path(FLASH, "generateContent")
        )),
        &[],
        GENERATE_BODY,
    )
    .await;
    let bearer = format!("Bearer {user_key}");
    client::post(
        &d.url("/v1/chat/completions"),
        &[("authorization", bearer.as_str())],
        r#"{"model":"gemini-2.5-pro","messages":[]}"#,
    )
    .await;
    generate_as(&d, wrong_user, FLASH).await;
    let wb = format!("Bearer {wrong_user}");
    client::post(
        &d.url("/v1/chat/completions"),
        &[("authorization", wb.as_str())],
        "{}",
    )
    .await;
    admin_ok(
        &d,
        Method::POST,
        "/api/keys",
        &token,
        Some(json!({"keys": [added]})),
    )
    .await;
    admin_ok(&d, Method::POST, "/api/keys/check", &token, None).await;
    let export = client::get(
        &d.url("/api/keys/export"),
        &[("authorization", format!("Bearer {token}").as_str())],
    )
    .await;
    assert!(export.text().contains(&good), "export works");
    let created = create_user(&d, &token, json!({"name": "yara"})).await;
    let created_key = created["key"].as_str().unwrap().to_string();
    let rotated = admin_ok(
        &d,
        Method::POST,
        &format!("/api/users/{}/rotate", created["id"].as_str().unwrap()),
        &token,
        None,
    )
    .await;
    let rotated_key = rotated["key"].as_str().unwrap().to_string();
    generate_as(&d, &created_key, FLASH).await;
    generate_as(&d, &rotated_key, FLASH).await;
    admin(&d, Method::POST, "/api/logout", &token, None).await;
    admin(&d, Method::GET, "/api/keys", &token, None).await;
    d.restart().await;
    d.stop().await;

    let logs = d.logs();
    for secret in [
        pw,
        wrong_pw,
        good.as_str(),
        bad.as_str(),
        hot.as_str(),
        added.as_str(),
        user_key,
        wrong_user,
        created_key.as_str(),
        rotated_key.as_str(),
        token.as_str(),
    ] {
        let hits: Vec<&String> = logs.iter().filter(|l| l.contains(secret)).collect();
        assert!(
            hits.is_empty(),
            "secret {secret:?} appears in the log: {hits:#?}"
        );
    }
}

/// Neither pool keys nor user keys, in any of the places a client puts one, appear in the
/// daemon's output while it retires, cools and uses keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_proxied_requests_never_appear_in_logs() {
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

// Secrets never reach logs or responses they do not belong in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_or_foreign_responses() {
    const ADMIN_PW: &str = "MARKER-admin-pw";
    const UP1: &str = "AIzaMARKERupstream000000000000000001";
    const UP2: &str = "AIzaMARKERupstream000000000000000002";
    const UP3: &str = "AIzaMARKERupstream000000000000000003";
    const USER: &str = "gb-MARKER-user-000000000000000000";
    const METRICS: &str = "MARKER-metrics";

    let up = Upstream::start(|r| {
        let model = r.model().unwrap_or_default().to_string();
        if r.path.ends_with("/chat/completions") {
            Reply::openai_chat_ok()
        } else if r.path.ends_with("/models") {
            Reply::json(
                200,
                &json!({"models": [{"name": "models/gemini-2.5-flash"}]}),
            )
        } else if model == "m-500" {
            Reply::internal()
        } else if model == "m-429" {
            Reply::resource_exhausted("30s")
        } else if model == "m-invalid" {
            Reply::api_key_invalid()
        } else if r.is_stream() {
            StreamReply::sse(vec![chunk("a"), chunk("b")]).into()
        } else {
            Reply::generate_ok("hello")
        }
    })
    .await;
    let mut cfg = Config::new(&up)
        .keys([UP1, UP2])
        .admin_password(ADMIN_PW)
        .extra(&format!("[server]\nmetrics_token = \"{METRICS}\""));
    cfg.users = vec![("marker".into(), USER.into())];
    let mut d = Daemon::start_with_top_level(&cfg, "log_level = \"debug\"").await;

    let mut seen: Vec<(String, String)> = Vec::new();
    let mut note = |what: &str, r: &common::Response| {
        let headers: String = r
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        seen.push((
            what.to_string(),
            format!("{} {headers}\n{}", r.status, r.text()),
        ));
    };
    let gen_url = |m: &str| d.url(&model_path(m, "generateContent"));
    let auth_user = [("x-goog-api-key", USER)];
    let bearer_user = format!("Bearer {USER}");

    note("healthz", &client::get(&d.url("/healthz"), &[]).await);
    let r = client::post(&gen_url(FLASH), &auth_user, GENERATE_BODY).await;
    assert_eq!(r.status, 200, "{}", r.text());
    note("generate ok", &r);
    let r = client::post(
        &format!("{}?key={USER}", gen_url(FLASH)),
        &[],
        GENERATE_BODY,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    note("generate ?key=", &r);
    let r = client::post(
        &d.url("/v1beta/openai/chat/completions"),
        &[("authorization", bearer_user.as_str())],
        json!({"model": FLASH, "messages": [{"role": "user", "content": "hi"}]}).to_string(),
    )
    .await;
    note("openai chat", &r);
    let r = client::post(
        &d.url(&format!(
            "{}?alt=sse",
            model_path(FLASH, "streamGenerateContent")
        )),
        &auth_user,
        GENERATE_BODY,
    )
    .await;
    assert_eq!(r.status, 200);
    note("stream", &r);
    note(
        "wrong user key",
        &client::post(
            &gen_url(FLASH),
            &[("x-goog-api-key", "gb-MARKER-wrong-000000000000")],
            GENERATE_BODY,
        )
        .await,
    );
    note(
        "wrong ?key=",
        &client::post(
            &format!("{}?key=gb-MARKER-wrong-query-00000", gen_url(FLASH)),
            &[],
            GENERATE_BODY,
        )
        .await,
    );
    note(
        "no key",
        &client::post(&gen_url(FLASH), &[], GENERATE_BODY).await,
    );
    note(
        "bad json",
        &client::post(&gen_url(FLASH), &auth_user, "{not json").await,
    );
    note(
        "upstream 500",
        &client::post(&gen_url("m-500"), &auth_user, GENERATE_BODY).await,
    );
    note(
        "upstream 429",
        &client::post(&gen_url("m-429"), &auth_user, GENERATE_BODY).await,
    );
    note(
        "metrics no token",
        &client::get(&d.url("/metrics"), &[]).await,
    );
    note(
        "metrics wrong token",
        &client::get(
            &d.url("/metrics"),
            &[("authorization", "Bearer MARKER-wrong-metrics")],
        )
        .await,
    );
    let metrics_auth = format!("Bearer {METRICS}");
    let r = client::get(
        &d.url("/metrics"),
        &[("authorization", metrics_auth.as_str())],
    )
    .await;
    assert_eq!(r.status, 200, "metrics with token: {}", r.text());
    note("metrics", &r);

    let r = client::post(
        &d.url("/api/login"),
        &[],
        json!({ "password": "MARKER-wrong-pw" }).to_string(),
    )
    .await;
    assert_eq!(r.status, 401);
    note("login wrong", &r);
    let r = client::request(
        Method::POST,
        &d.url("/api/login"),
        &[("content-type", "application/x-www-form-urlencoded")],
        "password=MARKER-wrong-form",
    )
    .await;
    note("login wrong form", &r);
    note(
        "api no session",
        &client::get(&d.url("/api/keys"), &[]).await,
    );
    let token = login_at(&format!("http://{}", d.addr), ADMIN_PW).await;
    let auth = format!("Bearer {token}");
    let a = [("authorization", auth.as_str())];
    for path in [
        "/api/keys",
        "/api/users",
        "/api/logs",
        "/api/logs/export?format=csv",
        "/api/stats/summary?tz=UTC",
        "/",
    ] {
        let r = client::get(&d.url(path), &a).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        note(path, &r);
    }
    let r = client::request(
        Method::POST,
        &d.url("/api/keys"),
        &a,
        json!({ "keys": [UP3] }).to_string(),
    )
    .await;
    note("add key", &r);
    let r = client::request(
        Method::POST,
        &d.url("/api/users"),
        &a,
        json!({ "name": "bob" }).to_string(),
    )
    .await;
    note("add user", &r);
    // Last: API_KEY_INVALID retires keys, and its error is logged.
    note(
        "upstream key invalid",
        &client::post(&gen_url("m-invalid"), &auth_user, GENERATE_BODY).await,
    );
    let r = client::get(&d.url("/api/keys"), &a).await;
    note("keys after retire", &r);
    let r = client::get(&d.url("/api/logs"), &a).await;
    note("logs after", &r);

    let export = client::get(&d.url("/api/keys/export"), &a).await;
    assert_eq!(export.status, 200, "export: {}", export.text());
    assert!(
        export.text().contains(UP1),
        "export lacks the full upstream key"
    );
    for s in [ADMIN_PW, USER, METRICS] {
        assert!(!export.text().contains(s), "export shows {s}");
    }
    note(
        "logout",
        &client::request(Method::POST, &d.url("/api/logout"), &a, "").await,
    );
    d.stop().await;

    for (what, text) in &seen {
        for s in [
            ADMIN_PW,
            USER,
            METRICS,
            UP1,
            UP2,
            UP3,
            "MARKERupstream",
            "MARKER-user-000",
        ] {
            assert!(
                !text.contains(s),
                "response {what:?} contains {s:?}:\n{text}"
            );
        }
    }
    let leaked: Vec<String> = d
        .logs()
        .into_iter()
        .filter(|l| l.contains("MARKER"))
        .collect();
    assert!(
        leaked.is_empty(),
        "log lines with a secret marker:\n{}",
        leaked.join("\n")
    );
}
