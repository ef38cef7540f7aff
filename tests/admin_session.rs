//! Black-box tests of the admin API's sessions: login answers a token and a cookie, wrong
//! passwords are throttled, logout revokes one token, the generated first-start password is
//! shown once and stored hashed, sessions expire, and every route needs a valid session
//! (a forged token too is refused) and CSRF-safe cookie writes; the live feed, which
//! EventSource opens without headers, takes the session cookie and nothing less and
//! announces each request finished after subscribing.

mod common;

use std::time::Duration;

use common::admin::*;
use common::*;
use http::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const PASSWORD: &str = "correct-horse-battery-staple-7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_answers_a_token_and_a_session_cookie() {
    let up = Upstream::start(ok_upstream()).await;
    let d = Daemon::start(&Config::new(&up).admin_password(PASSWORD)).await;

    let r = login_resp(&d, PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let token = v["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    assert!(!token.is_empty());
    assert_eq!(v["token_type"], "bearer", "{v}");
    let ttl = v["expires_in"]
        .as_u64()
        .unwrap_or_else(|| panic!("expires_in: {v}"));
    assert!(ttl > 0, "{v}");
    let cookie = r.header("set-cookie").expect("Set-Cookie on login");
    let parts: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert_eq!(parts[0], format!("gb_session={token}"), "{cookie}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(
            parts.iter().any(|p| p.eq_ignore_ascii_case(attr)),
            "{attr} missing in {cookie}"
        );
    }
    assert!(
        parts.contains(&format!("Max-Age={ttl}").as_str()),
        "Max-Age={ttl} in {cookie}"
    );

    // The token works as Bearer and as the cookie.
    assert_eq!(list_keys(&d, &token).await.len(), 2);
    let c = format!("gb_session={token}");
    let r = client::get(&d.url("/api/keys"), &[("cookie", c.as_str())]).await;
    assert_eq!(r.status, 200, "cookie auth: {}", r.text());

    // Form-encoded login, with characters that need decoding.
    let tricky = "p@ss w&rd=1+ü";
    let up2 = Upstream::start(ok_upstream()).await;
    let d2 = Daemon::start(&Config::new(&up2).admin_password(tricky)).await;
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("password", tricky)
        .finish();
    let r = client::post(
        &d2.url("/api/login"),
        &[("content-type", "application/x-www-form-urlencoded")],
        form,
    )
    .await;
    assert_eq!(r.status, 200, "form login: {}", r.text());
    let t2 = r.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(list_keys(&d2, &t2).await.len(), 2);
    assert_eq!(
        r.header("set-cookie").map(|c| c.starts_with("gb_session=")),
        Some(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_are_refused_then_throttled() {
    let up = Upstream::start(ok_upstream()).await;
    let d = Daemon::start(&Config::new(&up).admin_password(PASSWORD)).await;
    let token = login(&d, PASSWORD).await;
    for i in 0..5 {
        let r = login_resp(&d, "not-the-password").await;
        assert_admin_error(&r, 401);
        assert!(
            r.header("set-cookie").is_none(),
            "attempt {i}: no cookie on failure"
        );
    }
    let r = login_resp(&d, PASSWORD).await;
    assert_admin_error(&r, 429);
    let secs: u64 = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("Retry-After on 429: {:?}", r.headers))
        .trim()
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&secs), "Retry-After {secs}");
    assert!(r.header("set-cookie").is_none());
    // The existing session is unaffected.
    assert_eq!(list_keys(&d, &token).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_that_token_only() {
    let up = Upstream::start(ok_upstream()).await;
    let mut d = Daemon::start(&Config::new(&up).admin_password(PASSWORD)).await;
    let t1 = login(&d, PASSWORD).await;
    let t2 = login(&d, PASSWORD).await;
    let r = admin(&d, Method::POST, "/api/logout", &t1, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    if let Some(c) = r.header("set-cookie") {
        assert!(
            c.starts_with("gb_session=") && c.contains("Max-Age=0"),
            "logout clears the cookie: {c}"
        );
    }
    let r = admin(&d, Method::GET, "/api/keys", &t1, None).await;
    assert_admin_error(&r, 401);
    let c = format!("gb_session={t1}");
    let r = client::get(&d.url("/api/keys"), &[("cookie", c.as_str())]).await;
    assert_admin_error(&r, 401);
    assert_eq!(
        list_keys(&d, &t2).await.len(),
        2,
        "the other session lives on"
    );

    d.restart().await;
    let r = admin(&d, Method::GET, "/api/keys", &t1, None).await;
    assert_admin_error(&r, 401);
    assert_eq!(
        list_keys(&d, &t2).await.len(),
        2,
        "sessions survive a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_password_is_shown_once_and_stored_hashed() {
    const BANNER: &str = "Admin password (shown once, store it now):";
    let up = Upstream::start(ok_upstream()).await;
    let mut d = Daemon::start(&Config::new(&up)).await;
    let password = wait_for("banner with the password", Duration::from_secs(10), || {
        let logs = d.logs();
        let pw = logs
            .iter()
            .position(|l| l.contains(BANNER))
            .and_then(|i| logs[i + 1..].iter().find(|l| !l.trim().is_empty()).cloned());
        if let Some(line) = &pw {
            assert!(
                line.starts_with(' ') || line.starts_with('\t'),
                "the password is on its own indented line: {line:?}"
            );
        }
        let found = pw.map(|line| line.trim().to_string());
        async move { found.ok_or_else(|| format!("\n{}", logs.join("\n"))) }
    })
    .await;
    assert!(password.len() >= 16, "a strong password: {password:?}");

    let token = login(&d, &password).await;
    assert_eq!(list_keys(&d, &token).await.len(), 2);
    assert_admin_error(&login_resp(&d, "guess").await, 401);

    d.restart().await;
    let token = login(&d, &password).await;
    assert_eq!(list_keys(&d, &token).await.len(), 2);
    let shown = d.logs().iter().filter(|l| l.contains(BANNER)).count();
    assert_eq!(shown, 1, "shown once, not on every start");
    let occurrences = d.logs().iter().filter(|l| l.contains(&password)).count();
    assert_eq!(
        occurrences, 1,
        "the password appears only in the first banner"
    );

    let bytes = store_bytes(&d);
    assert!(
        !contains(&bytes, &password),
        "the plaintext admin password is in the redb file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_after_session_ttl() {
    let up = Upstream::start(ok_upstream()).await;
    let cfg = Config::new(&up).extra(&format!(
        "[admin]\npassword = \"{PASSWORD}\"\nsession_ttl = \"1s\""
    ));
    let d = Daemon::start(&cfg).await;
    let r = login_resp(&d, PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["expires_in"], 1, "{}", r.text());
    // A token is usable right after login (retry a few logins: JWT `exp` has 1 s resolution).
    let mut token = None;
    for _ in 0..5 {
        let t = login(&d, PASSWORD).await;
        if admin(&d, Method::GET, "/api/keys", &t, None).await.status == 200 {
            token = Some(t);
            break;
        }
    }
    let token = token.expect("a fresh 1 s token is accepted at least once");
    let refused = "a 1 s session is refused within a few seconds";
    wait_for(refused, Duration::from_secs(5), || {
        let (d, t) = (&d, token.clone());
        async move {
            match admin(d, Method::GET, "/api/keys", &t, None).await.status {
                401 => Ok(()),
                status => Err(format!("status {status}")),
            }
        }
    })
    .await;
    let r = admin(&d, Method::GET, "/api/keys", &token, None).await;
    assert_admin_error(&r, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_route_needs_a_valid_session() {
    let up = Upstream::start(ok_upstream()).await;
    let d = Daemon::start(&Config::new(&up).admin_password(PASSWORD)).await;
    let token = login(&d, PASSWORD).await;
    let kid = key_id(&d, &token, &key(0)).await;
    let users = list_users(&d, &token).await;
    let uid = users[0]["id"].as_str().expect("user id").to_string();

    let routes: Vec<(Method, String, &str)> = vec![
        (Method::GET, "/api/keys".into(), ""),
        (
            Method::POST,
            "/api/keys".into(),
            r#"{"keys":["AIzaSyNEWKEY000000000000000000000000000"]}"#,
        ),
        (Method::GET, "/api/keys/export".into(), ""),
        (Method::POST, "/api/keys/check".into(), "{}"),
        (Method::POST, "/api/keys/reset".into(), "{}"),
        (
            Method::PATCH,
            format!("/api/keys/{kid}"),
            r#"{"enabled":false}"#,
        ),
        (Method::DELETE, format!("/api/keys/{kid}"), ""),
        (Method::POST, format!("/api/keys/{kid}/reset"), "{}"),
        (Method::GET, "/api/users".into(), ""),
        (Method::POST, "/api/users".into(), r#"{"name":"mallory"}"#),
        (
            Method::PATCH,
            format!("/api/users/{uid}"),
            r#"{"enabled":false}"#,
        ),
        (Method::DELETE, format!("/api/users/{uid}"), ""),
        (Method::POST, format!("/api/users/{uid}/rotate"), "{}"),
        (Method::POST, "/api/logout".into(), "{}"),
    ];
    let forged = forged_jwt();
    let garbage_bearer = "Bearer not.a.jwt".to_string();
    let forged_bearer = format!("Bearer {forged}");
    let garbage_cookie = "gb_session=garbage".to_string();
    let forged_cookie = format!("gb_session={forged}");
    let creds: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("no token", vec![]),
        (
            "garbage bearer",
            vec![("authorization", garbage_bearer.as_str())],
        ),
        (
            "forged bearer",
            vec![("authorization", forged_bearer.as_str())],
        ),
        (
            "garbage cookie",
            vec![
                ("cookie", garbage_cookie.as_str()),
                ("x-requested-with", "XMLHttpRequest"),
            ],
        ),
        (
            "forged cookie",
            vec![
                ("cookie", forged_cookie.as_str()),
                ("x-requested-with", "XMLHttpRequest"),
            ],
        ),
    ];
    for (method, path, body) in &routes {
        for (name, headers) in &creds {
            let r = client::request(method.clone(), &d.url(path), headers, body.to_string()).await;
            assert_eq!(r.status, 401, "{method} {path} with {name}: {}", r.text());
            assert_admin_error(&r, 401);
        }
    }
    // Nothing happened.
    assert!(
        up.requests().is_empty(),
        "no key check ran: {:?}",
        up.requests()
    );
    let list = list_keys(&d, &token).await;
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.iter().all(|e| e["state"] == "active"), "{list:?}");
    let after = list_users(&d, &token).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["enabled"], true);
    assert_eq!(
        generate_as(&d, USER_KEY, FLASH).await.status,
        200,
        "alice still works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_writes_need_json_or_a_custom_header() {
    let up = Upstream::start(ok_upstream()).await;
    let d = Daemon::start(&Config::new(&up).admin_password(PASSWORD)).await;
    let token = login(&d, PASSWORD).await;
    let c = format!("gb_session={token}");
    let cookie = ("cookie", c.as_str());
    let new_key = long_key("CSRF", "csrf");
    let uid = list_users(&d, &token).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let kid = key_id(&d, &token, &key(0)).await;

    // Cross-site style requests: rejected, no effect.
    let r = client::post(
        &d.url("/api/keys"),
        &[cookie, ("content-type", "text/plain")],
        new_key.clone(),
    )
    .await;
    assert_admin_error(&r, 403);
    let r = client::post(&d.url("/api/keys/reset"), &[cookie], "").await;
    assert_admin_error(&r, 403);
    let r = client::request(
        Method::PATCH,
        &d.url(&format!("/api/keys/{kid}")),
        &[cookie, ("content-type", "text/plain")],
        r#"{"enabled":false}"#,
    )
    .await;
    assert_admin_error(&r, 403);
    let r = client::request(
        Method::DELETE,
        &d.url(&format!("/api/users/{uid}")),
        &[cookie],
        "",
    )
    .await;
    assert_admin_error(&r, 403);
    assert_eq!(list_keys(&d, &token).await.len(), 2, "no key added");
    assert!(
        list_keys(&d, &token)
            .await
            .iter()
            .all(|e| e["state"] == "active"),
        "no key disabled"
    );
    assert_eq!(list_users(&d, &token).await.len(), 1, "user not deleted");

    // Reads by cookie are fine.
    let r = client::get(&d.url("/api/users"), &[cookie]).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // With the custom header or a JSON body, cookie writes work.
    let r = client::post(
        &d.url("/api/keys"),
        &[
            cookie,
            ("content-type", "text/plain"),
            ("x-requested-with", "XMLHttpRequest"),
        ],
        new_key.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["added"], 1);
    let r = client::request(
        Method::PATCH,
        &d.url(&format!("/api/keys/{kid}")),
        &[cookie, ("content-type", "application/json")],
        r#"{"note":"via cookie"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Bearer needs neither.
    let auth = format!("Bearer {token}");
    let r = client::post(
        &d.url("/api/keys/reset"),
        &[("authorization", auth.as_str())],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = client::post(
        &d.url("/api/keys"),
        &[
            ("authorization", auth.as_str()),
            ("content-type", "text/plain"),
        ],
        long_key("BEARER", "brer"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(list_keys(&d, &token).await.len(), 4);
}

fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        let chars = c.len() + 1;
        for i in 0..chars {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// A well-formed HS256 admin token signed with a random key the daemon does not know.
fn forged_jwt() -> String {
    let header = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let now = now_secs();
    let claims =
        json!({"sub": "admin", "exp": now + 10 * 365 * 86400, "iat": now, "nbf": now, "jti": "x"});
    let claims = b64url(claims.to_string().as_bytes());
    let key: [u8; 32] = rand::random();
    let sig = hmac_sha256(&key, format!("{header}.{claims}").as_bytes());
    format!("{header}.{claims}.{}", b64url(&sig))
}

#[test]
fn forging_helpers_are_correct() {
    assert_eq!(b64url(b"f"), "Zg");
    assert_eq!(b64url(b"fo"), "Zm8");
    assert_eq!(b64url(b"foo"), "Zm9v");
    assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
    let mac = hmac_sha256(b"key", b"The quick brown fox jumps over the lazy dog");
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    );
}

/// The `data:` JSON of each complete `event: request` in `bytes`.
fn request_events(bytes: &[u8]) -> Vec<Value> {
    lf(bytes)
        .split("\n\n")
        .filter(|b| b.lines().any(|l| l == "event: request"))
        .filter_map(|b| {
            let data: Vec<&str> = b
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            serde_json::from_str(&data.join("\n")).ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_feed_announces_requests_finished_after_subscribing() {
    let up = Upstream::start(|_| Reply::generate_ok("hello")).await;
    let d = Daemon::start(&Config::new(&up).admin_password(PASSWORD)).await;

    // EventSource sends no headers: the feed takes the session cookie, and nothing less.
    let r = client::get(&d.url("/api/events"), &[]).await;
    assert_eq!(r.status, 401, "no session: {}", r.text());
    let r = login_resp(&d, PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let set = r.header("set-cookie").expect("Set-Cookie");
    let cookie = set.split(';').next().unwrap().trim().to_string();
    assert!(cookie.starts_with("gb_session="), "{set}");

    let mut feed = client::send(
        Method::GET,
        &d.url("/api/events"),
        &[("cookie", cookie.as_str())],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(feed.status, 200);
    assert!(
        feed.header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream")),
        "{:?}",
        feed.header("content-type")
    );
    feed.read_until("the feed's first bytes", has_sse_event)
        .await;

    let r = generate_as(&d, USER_KEY, FLASH).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = request_id(&r);
    let received = feed
        .read_until(&format!("an `event: request` for {id}"), |b| {
            request_events(b)
                .iter()
                .any(|e| e["request_id"] == id.as_str())
        })
        .await;
    let events = request_events(&received);
    let e = events
        .iter()
        .find(|e| e["request_id"] == id.as_str())
        .unwrap();
    assert_eq!(e["model"], FLASH, "{e}");
    assert_eq!(e["outcome"], "ok", "{e}");
    assert_eq!(e["status"], 200, "{e}");
}
