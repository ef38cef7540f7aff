//! Black-box tests of the admin API's user keys: created once, listed without secrets and
//! held to their limits; allow-lists, expiry, disabling, rotating and deleting; clear 400s
//! for bad bodies.

mod common;

use common::admin::*;
use common::*;
use http::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "correct-horse-battery-staple-7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_created_once_listed_without_secrets_and_limited() {
    let up = Upstream::start(|r| {
        if r.path.ends_with("/chat/completions") {
            Reply::openai_chat_ok()
        } else {
            Reply::generate_ok("hello")
        }
    })
    .await;
    let mut d = Daemon::start(&Config::new(&up).admin_password(PASSWORD)).await;
    let token = login(&d, PASSWORD).await;

    let bob = create_user(&d, &token, json!({"name": "bob", "rpm": 2})).await;
    let secret = bob["key"]
        .as_str()
        .unwrap_or_else(|| panic!("key: {bob}"))
        .to_string();
    assert!(secret.starts_with("gb-") && secret.len() >= 20, "{secret}");
    let bob_id = bob["id"].as_str().unwrap().to_string();
    assert_eq!(bob["name"], "bob");

    let r = admin(&d, Method::GET, "/api/users", &token, None).await;
    assert_eq!(r.status, 200);
    assert!(
        !r.text().contains(&secret),
        "GET /api/users shows the secret"
    );
    assert!(
        !r.text().contains(USER_KEY),
        "GET /api/users shows alice's secret"
    );
    let users = r.json()["users"].as_array().unwrap().clone();
    assert_eq!(users.len(), 2);
    for u in &users {
        assert!(u.get("key").is_none(), "no key field: {u}");
        for (k, _) in u.as_object().unwrap() {
            assert!(!k.contains("hash"), "no hash field: {u}");
        }
        let prefix = u["key_prefix"]
            .as_str()
            .unwrap_or_else(|| panic!("key_prefix: {u}"));
        assert!(!prefix.is_empty(), "{u}");
    }
    let listed = users.iter().find(|u| u["name"] == "bob").unwrap();
    assert!(
        secret.starts_with(listed["key_prefix"].as_str().unwrap().trim_end_matches('…')),
        "{listed}"
    );
    assert_eq!(listed["rpm"], 2);

    let r = admin(
        &d,
        Method::POST,
        "/api/users",
        &token,
        Some(json!({"name": "bob"})),
    )
    .await;
    assert_admin_error(&r, 409);

    // The secret works; the third request in a minute is over the RPM.
    for i in 0..2 {
        let r = generate_as(&d, &secret, FLASH).await;
        assert_eq!(r.status, 200, "bob request {i}: {}", r.text());
    }
    let r = generate_as(&d, &secret, FLASH).await;
    assert_google_error(&r, 429, "RESOURCE_EXHAUSTED");
    let ra: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .trim()
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&ra), "Retry-After {ra}");
    assert_eq!(
        up.requests_to(GEN).len(),
        2,
        "the limited request is not forwarded"
    );
    assert_eq!(
        generate_as(&d, USER_KEY, FLASH).await.status,
        200,
        "alice unaffected"
    );

    // OpenAI routes answer the limit in OpenAI's shape.
    let carol = create_user(&d, &token, json!({"name": "carol", "rpm": 1})).await;
    let cs = format!("Bearer {}", carol["key"].as_str().unwrap());
    let body = r#"{"model":"gemini-2.5-flash","messages":[]}"#;
    let r = client::post(
        &d.url("/v1/chat/completions"),
        &[("authorization", cs.as_str())],
        body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = client::post(
        &d.url("/v1/chat/completions"),
        &[("authorization", cs.as_str())],
        body,
    )
    .await;
    assert_eq!(r.status, 429, "{}", r.text());
    let v = r.json();
    assert!(
        v["error"]["message"].is_string() && v["error"]["type"].is_string(),
        "OpenAI shape: {v}"
    );
    assert!(
        v["error"].get("status").is_none(),
        "not Google's shape: {v}"
    );
    assert!(
        r.header("retry-after").is_some(),
        "Retry-After on the OpenAI 429"
    );

    // The store keeps no plaintext secret, and the user survives a restart.
    d.restart().await;
    let bytes = store_bytes(&d);
    assert!(
        !contains(&bytes, &secret),
        "bob's secret is in the redb file"
    );
    let token = login(&d, PASSWORD).await;
    assert!(
        list_users(&d, &token)
            .await
            .iter()
            .any(|u| u["id"] == bob_id.as_str())
    );
    let r = generate_as(&d, &secret, PRO).await;
    assert_eq!(
        r.status,
        200,
        "bob's secret still works after restart: {}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_allow_list_expiry_disable_rotate_and_delete() {
    let up = Upstream::start(|r| {
        if r.path.ends_with("/chat/completions") {
            Reply::openai_chat_ok()
        } else {
            Reply::generate_ok("hello")
        }
    })
    .await;
    let mut d = Daemon::start(&Config::new(&up).admin_password(PASSWORD)).await;
    let token = login(&d, PASSWORD).await;

    let dora = create_user(
        &d,
        &token,
        json!({"name": "dora", "models": ["gemini-2.5-*"]}),
    )
    .await;
    let dk = dora["key"].as_str().unwrap().to_string();
    assert_eq!(generate_as(&d, &dk, FLASH).await.status, 200);
    assert_eq!(generate_as(&d, &dk, PRO).await.status, 200);
    let r = generate_as(&d, &dk, "gemma-3-27b-it").await;
    assert_eq!(r.status, 403, "model outside the allow-list: {}", r.text());
    assert_google_error_value(&r.json(), Some(403), None);
    let bearer = format!("Bearer {dk}");
    let r = client::post(
        &d.url("/v1/chat/completions"),
        &[("authorization", bearer.as_str())],
        r#"{"model":"models/gemma-3-27b-it","messages":[]}"#,
    )
    .await;
    assert_eq!(
        r.status,
        403,
        "OpenAI route, model outside the allow-list: {}",
        r.text()
    );
    assert!(
        r.json()["error"]["type"].is_string(),
        "OpenAI shape: {}",
        r.text()
    );
    assert_eq!(up.requests().len(), 2, "refused requests are not forwarded");

    let old = create_user(
        &d,
        &token,
        json!({"name": "olga", "expires_at": now_secs() - 3600}),
    )
    .await;
    let r = generate_as(&d, old["key"].as_str().unwrap(), FLASH).await;
    assert_eq!(r.status, 403, "expired user: {}", r.text());
    assert_google_error_value(&r.json(), Some(403), None);

    let id = dora["id"].as_str().unwrap().to_string();
    let v = admin_ok(
        &d,
        Method::PATCH,
        &format!("/api/users/{id}"),
        &token,
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(v["enabled"], false, "{v}");
    assert_eq!(
        generate_as(&d, &dk, FLASH).await.status,
        403,
        "disabled user"
    );
    d.restart().await;
    let token = login(&d, PASSWORD).await;
    assert_eq!(
        generate_as(&d, &dk, FLASH).await.status,
        403,
        "still disabled after restart"
    );
    admin_ok(
        &d,
        Method::PATCH,
        &format!("/api/users/{id}"),
        &token,
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(generate_as(&d, &dk, FLASH).await.status, 200, "re-enabled");

    let v = admin_ok(
        &d,
        Method::POST,
        &format!("/api/users/{id}/rotate"),
        &token,
        None,
    )
    .await;
    let nk = v["key"]
        .as_str()
        .unwrap_or_else(|| panic!("rotate shows the new key: {v}"))
        .to_string();
    assert_ne!(nk, dk);
    assert_eq!(
        generate_as(&d, &dk, FLASH).await.status,
        403,
        "old secret after rotate"
    );
    assert_eq!(
        generate_as(&d, &nk, FLASH).await.status,
        200,
        "new secret after rotate"
    );
    assert!(
        !admin(&d, Method::GET, "/api/users", &token, None)
            .await
            .text()
            .contains(&nk)
    );

    admin_ok(
        &d,
        Method::DELETE,
        &format!("/api/users/{id}"),
        &token,
        None,
    )
    .await;
    assert_eq!(
        generate_as(&d, &nk, FLASH).await.status,
        403,
        "deleted user"
    );
    d.restart().await;
    assert_eq!(
        generate_as(&d, &nk, FLASH).await.status,
        403,
        "deleted user after restart"
    );
    let token = login(&d, PASSWORD).await;
    assert!(
        !list_users(&d, &token)
            .await
            .iter()
            .any(|u| u["name"] == "dora")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_user_bodies_are_clear_400s() {
    let up = Upstream::start(ok_upstream()).await;
    let d = Daemon::start(&Config::new(&up).admin_password(PASSWORD)).await;
    let token = login(&d, PASSWORD).await;
    let auth = format!("Bearer {token}");
    let h = [("authorization", auth.as_str())];

    let r = client::post(
        &d.url("/api/users"),
        &h,
        r#"{"name": "SENTINEL-bodytext", "rpm": "#,
    )
    .await;
    assert_admin_error(&r, 400);
    let e = error_text(&r);
    assert!(e.to_lowercase().contains("json"), "names the problem: {e}");
    assert!(
        !r.text().contains("SENTINEL"),
        "does not echo the body: {}",
        r.text()
    );

    let r = client::post(
        &d.url("/api/users"),
        &h,
        r#"{"name":"erin","colour":"SENTINEL-red"}"#,
    )
    .await;
    assert_admin_error(&r, 400);
    let e = error_text(&r);
    assert!(e.contains("colour"), "names the unknown field: {e}");
    assert!(
        !r.text().contains("SENTINEL"),
        "does not echo values: {}",
        r.text()
    );
    assert_eq!(list_users(&d, &token).await.len(), 1, "nothing created");
}

fn error_text(r: &Response) -> String {
    let v = r.json();
    match &v["error"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
