//! No secret reaches the daemon's log: the admin password (right and wrong), upstream keys
//! (good, invalid, cooling, added through the API), user keys (known, unknown, created,
//! rotated) and the session token, through every path that handles one.

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
