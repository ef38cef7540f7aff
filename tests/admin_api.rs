//! Black-box tests of the admin API (SPEC 4, with 2 and 3.6): login, throttling, logout,
//! the generated first-start password, session expiry, authentication and CSRF on every
//! route, the key pool (list, bulk add, patch, delete, reset, check, export), user keys and
//! their limits, durability across restarts, and that no secret reaches the logs or the
//! store in plain text.

mod common;

use common::admin::{admin, admin_ok, login, login_resp};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use http::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const PASSWORD: &str = "correct-horse-battery-staple-7";
const GEN: &str = ":generateContent";

// ---------------------------------------------------------------- helpers

/// A plausible upstream key (39 chars) whose last four characters are `tail`.
fn long_key(tag: &str, tail: &str) -> String {
    let mut k = format!("AIzaSyTEST{tag}");
    while k.len() < 35 {
        k.push('x');
    }
    k.push_str(tail);
    k
}

fn brief(k: &str) -> String {
    format!("{}…{}", &k[..4], &k[k.len() - 4..])
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn store_bytes(d: &Daemon) -> Vec<u8> {
    let p = d.data_dir().join("gemini-balance.redb");
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

async fn list_keys(d: &Daemon, token: &str) -> Vec<Value> {
    let v = admin_ok(d, Method::GET, "/api/keys", token, None).await;
    v["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no keys array: {v}"))
        .clone()
}

/// The listed entry of upstream key `k`, found by its brief.
fn entry_of<'a>(list: &'a [Value], k: &str) -> &'a Value {
    let b = brief(k);
    let found: Vec<_> = list.iter().filter(|e| e["brief"] == b.as_str()).collect();
    assert_eq!(found.len(), 1, "exactly one key with brief {b}: {list:?}");
    found[0]
}

async fn key_id(d: &Daemon, token: &str, k: &str) -> String {
    let list = list_keys(d, token).await;
    entry_of(&list, k)["id"].as_str().expect("id").to_string()
}

async fn list_users(d: &Daemon, token: &str) -> Vec<Value> {
    let v = admin_ok(d, Method::GET, "/api/users", token, None).await;
    v["users"]
        .as_array()
        .unwrap_or_else(|| panic!("no users array: {v}"))
        .clone()
}

async fn generate_as(d: &Daemon, user_key: &str, model: &str) -> Response {
    client::post(
        &d.url(&model_path(model, "generateContent")),
        &[("x-goog-api-key", user_key)],
        GENERATE_BODY,
    )
    .await
}

fn assert_admin_error(r: &Response, status: u16) {
    assert_eq!(r.status, status, "HTTP status; body: {}", r.text());
    let v = r.json();
    assert!(
        v["error"].is_string() || v["error"].is_object(),
        "admin error body has an `error`: {v}"
    );
}

fn error_text(r: &Response) -> String {
    let v = r.json();
    match &v["error"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
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

/// Polls `f` until it returns true or `within` passes.
async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

fn ok_upstream() -> impl Fn(&Recorded) -> Reply {
    |r| {
        if r.path.ends_with("/models") {
            Reply::json(
                200,
                &json!({"models": [{"name": "models/gemini-2.5-flash"}]}),
            )
        } else {
            Reply::generate_ok("hello")
        }
    }
}

// ---------------------------------------------------------------- login and sessions

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
    let mut password = None;
    let found = eventually(Duration::from_secs(10), || {
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
            password = Some(line.trim().to_string());
        }
        async move { pw.is_some() }
    })
    .await;
    assert!(found, "banner with the password:\n{}", d.logs().join("\n"));
    let password = password.unwrap();
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
    let expired = eventually(Duration::from_secs(5), || {
        let (d, t) = (&d, token.clone());
        async move { admin(d, Method::GET, "/api/keys", &t, None).await.status == 401 }
    })
    .await;
    assert!(expired, "a 1 s session is refused within a few seconds");
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

// ---------------------------------------------------------------- upstream keys

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_list_shows_state_but_never_the_key() {
    let ks = [long_key("LISTA", "aaaa"), long_key("LISTB", "bbbb")];
    let up = Upstream::start(ok_upstream()).await;
    let d = Daemon::start(&Config::new(&up).keys(ks.clone()).admin_password(PASSWORD)).await;
    let token = login(&d, PASSWORD).await;
    let r = admin(&d, Method::GET, "/api/keys", &token, None).await;
    assert_eq!(r.status, 200);
    for k in &ks {
        assert!(!r.text().contains(k.as_str()), "full key in GET /api/keys");
        assert!(
            !r.text().contains(&k[4..k.len() - 4]),
            "key middle in GET /api/keys"
        );
    }
    let list = r.json()["keys"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    for k in &ks {
        let e = entry_of(&list, k);
        assert_eq!(e["state"], "active", "{e}");
        assert!(e["id"].as_str().is_some_and(|s| !s.is_empty()), "{e}");
        assert!(e["models"].is_array(), "{e}");
        for f in [
            "note",
            "invalid_reason",
            "failure_streak",
            "last_error",
            "in_flight",
            "requests_total",
            "usage_today",
            "created_at",
        ] {
            assert!(e.get(f).is_some(), "field {f} missing in {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_add_counts_exactly_and_survives_restart() {
    let existing = long_key("HAVE", "have");
    let up = Upstream::start(ok_upstream()).await;
    let mut d = Daemon::start(
        &Config::new(&up)
            .keys([existing.clone()])
            .admin_password(PASSWORD),
    )
    .await;
    let token = login(&d, PASSWORD).await;
    let (n1, n2, n3) = (
        long_key("NEW1", "n1n1"),
        long_key("NEW2", "n2n2"),
        long_key("NEW3", "n3n3"),
    );
    let text = format!("{n1},{n2}\n\n\n   {n1}   \r\nAIzaShort\n{existing}; {n3}\n\n");
    let auth = format!("Bearer {token}");
    let r = client::post(
        &d.url("/api/keys"),
        &[
            ("authorization", auth.as_str()),
            ("content-type", "text/plain"),
        ],
        text,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["added"], 3, "{v}");
    assert_eq!(
        v["present"], 1,
        "the existing key; a duplicate inside the paste is counted once, as added: {v}"
    );
    assert_eq!(v["rejected"], 1, "the too-short token: {v}");
    let ids: Vec<String> = v["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("ids: {v}"))
        .iter()
        .map(|i| i.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3, "{v}");

    let (n4, n5) = (long_key("NEW4", "n4n4"), long_key("NEW5", "n5n5"));
    let v = admin_ok(
        &d,
        Method::POST,
        "/api/keys",
        &token,
        Some(json!({"keys": [n4, format!("  {n5}  "), n2, "AIza-too-short"]})),
    )
    .await;
    assert_eq!(
        (
            v["added"].as_u64(),
            v["present"].as_u64(),
            v["rejected"].as_u64()
        ),
        (Some(2), Some(1), Some(1)),
        "{v}"
    );

    let all = [&existing, &n1, &n2, &n3, &n4, &n5];
    let list = list_keys(&d, &token).await;
    assert_eq!(list.len(), 6, "{list:?}");
    for id in &ids {
        assert!(
            list.iter().any(|e| e["id"] == id.as_str()),
            "id {id} listed"
        );
    }
    let export = |d: &Daemon, token: String| {
        let url = d.url("/api/keys/export");
        async move {
            let auth = format!("Bearer {token}");
            client::get(&url, &[("authorization", auth.as_str())]).await
        }
    };
    let r = export(&d, token.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/plain"), "export content-type {ct:?}");
    let mut lines: Vec<String> = r
        .text()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    let mut want: Vec<String> = all.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(lines, want, "export lists every full key once");

    d.restart().await;
    let token = login(&d, PASSWORD).await;
    let list = list_keys(&d, &token).await;
    assert_eq!(list.len(), 6, "added keys survive a restart: {list:?}");
    let mut lines: Vec<String> = export(&d, token)
        .await
        .text()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    assert_eq!(lines, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_key_takes_it_out_of_rotation_durably() {
    let (a, b) = (long_key("DISA", "aaaa"), long_key("DISB", "bbbb"));
    let up = Upstream::start(ok_upstream()).await;
    let mut d = Daemon::start(
        &Config::new(&up)
            .keys([a.clone(), b.clone()])
            .admin_password(PASSWORD),
    )
    .await;
    let token = login(&d, PASSWORD).await;
    let id = key_id(&d, &token, &a).await;
    let v = admin_ok(
        &d,
        Method::PATCH,
        &format!("/api/keys/{id}"),
        &token,
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(v["state"], "disabled", "PATCH answers the new view: {v}");
    let v = admin_ok(
        &d,
        Method::PATCH,
        &format!("/api/keys/{id}"),
        &token,
        Some(json!({"note": "account 3, paused"})),
    )
    .await;
    assert_eq!(v["note"], "account 3, paused", "{v}");
    for i in 0..4 {
        assert_eq!(
            generate_as(&d, USER_KEY, FLASH).await.status,
            200,
            "request {i}"
        );
    }
    assert_eq!(
        up.keys_to(GEN),
        vec![b.clone(); 4],
        "a disabled key is never used"
    );

    d.restart().await;
    up.clear();
    let token = login(&d, PASSWORD).await;
    let list = list_keys(&d, &token).await;
    let e = entry_of(&list, &a);
    assert_eq!(e["state"], "disabled", "after restart: {e}");
    assert_eq!(e["note"], "account 3, paused", "after restart: {e}");
    for i in 0..4 {
        assert_eq!(
            generate_as(&d, USER_KEY, FLASH).await.status,
            200,
            "request {i}"
        );
    }
    assert_eq!(
        up.keys_to(GEN),
        vec![b.clone(); 4],
        "still disabled after restart"
    );

    up.clear();
    admin_ok(
        &d,
        Method::PATCH,
        &format!("/api/keys/{id}"),
        &token,
        Some(json!({"enabled": true})),
    )
    .await;
    for _ in 0..4 {
        assert_eq!(generate_as(&d, USER_KEY, FLASH).await.status, 200);
    }
    assert_eq!(
        count(&up.keys_to(GEN), &a),
        2,
        "re-enabled key serves again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_key_is_durable_and_unknown_ids_are_404() {
    let up = Upstream::start(ok_upstream()).await;
    let mut d = Daemon::start(
        &Config::new(&up)
            .keys(Vec::<String>::new())
            .admin_password(PASSWORD),
    )
    .await;
    let token = login(&d, PASSWORD).await;
    let (a, b) = (long_key("DELA", "aaaa"), long_key("DELB", "bbbb"));
    let v = admin_ok(
        &d,
        Method::POST,
        "/api/keys",
        &token,
        Some(json!({"keys": [a, b]})),
    )
    .await;
    assert_eq!(v["added"], 2, "{v}");
    let id = key_id(&d, &token, &a).await;

    for (m, path) in [
        (Method::DELETE, "/api/keys/0000000000000000"),
        (Method::PATCH, "/api/keys/0000000000000000"),
        (Method::POST, "/api/keys/0000000000000000/reset"),
        (Method::PATCH, "/api/users/no-such-user"),
        (Method::DELETE, "/api/users/no-such-user"),
        (Method::POST, "/api/users/no-such-user/rotate"),
    ] {
        let body = (m == Method::PATCH).then(|| json!({"enabled": true}));
        let r = admin(&d, m.clone(), path, &token, body).await;
        assert_eq!(r.status, 404, "{m} {path}: {}", r.text());
        assert_admin_error(&r, 404);
    }

    admin_ok(&d, Method::DELETE, &format!("/api/keys/{id}"), &token, None).await;
    let r = admin(&d, Method::DELETE, &format!("/api/keys/{id}"), &token, None).await;
    assert_admin_error(&r, 404);
    let list = list_keys(&d, &token).await;
    assert_eq!(list.len(), 1, "{list:?}");
    for _ in 0..3 {
        assert_eq!(generate_as(&d, USER_KEY, FLASH).await.status, 200);
    }
    assert_eq!(up.keys_to(GEN), vec![b.clone(); 3]);

    d.restart().await;
    up.clear();
    let token = login(&d, PASSWORD).await;
    let list = list_keys(&d, &token).await;
    assert_eq!(list.len(), 1, "deleted key stays deleted: {list:?}");
    entry_of(&list, &b);
    for _ in 0..3 {
        assert_eq!(generate_as(&d, USER_KEY, FLASH).await.status, 200);
    }
    assert_eq!(up.keys_to(GEN), vec![b.clone(); 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_check_classifies_each_key_with_a_models_call() {
    let a = long_key("CHKA", "aaaa"); // invalid
    let b = long_key("CHKB", "bbbb"); // valid
    let c = long_key("CHKC", "cccc"); // rate limited
    let s = long_key("CHKS", "ssss"); // suspended
    let (ka, kc, ks) = (a.clone(), c.clone(), s.clone());
    let up = Upstream::start(move |r| match r.key() {
        Some(k) if k == ka => Reply::api_key_invalid(),
        Some(k) if k == kc && r.path.ends_with("/models") => Reply::resource_exhausted("30s"),
        Some(k) if k == ks => Reply::consumer_suspended(),
        _ if r.path.ends_with("/models") => Reply::json(200, &json!({"models": []})),
        _ => Reply::generate_ok("hello"),
    })
    .await;
    let all = [a.clone(), b.clone(), c.clone(), s.clone()];
    let mut d = Daemon::start(&Config::new(&up).keys(all.clone()).admin_password(PASSWORD)).await;
    let token = login(&d, PASSWORD).await;

    let r = admin(&d, Method::POST, "/api/keys/check", &token, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    for k in &all {
        assert!(
            !r.text().contains(k.as_str()),
            "full key in the check answer"
        );
    }
    let v = r.json();
    let results = v["results"]
        .as_array()
        .unwrap_or_else(|| panic!("results: {v}"));
    assert_eq!(results.len(), 4, "{v}");
    let list = list_keys(&d, &token).await;
    for (k, want) in [
        (&a, "invalid"),
        (&b, "valid"),
        (&c, "rate_limited"),
        (&s, "suspended"),
    ] {
        let id = entry_of(&list, k)["id"].clone();
        let res: Vec<_> = results.iter().filter(|x| x["id"] == id).collect();
        assert_eq!(res.len(), 1, "one result for {}: {v}", brief(k));
        assert_eq!(res[0]["verdict"], want, "{}: {v}", brief(k));
        assert_eq!(res[0]["brief"], brief(k).as_str(), "{v}");
    }

    let models = up.requests_to("/v1beta/models");
    assert_eq!(models.len(), 4, "one models call per key");
    let mut used: Vec<String> = models
        .iter()
        .map(|r| r.key().unwrap_or("").to_string())
        .collect();
    used.sort();
    let mut want = all.to_vec();
    want.sort();
    assert_eq!(used, want, "each key checked with its own x-goog-api-key");
    for m in &models {
        assert_eq!(m.method, "GET");
        assert_eq!(
            m.query_pairs(),
            [("pageSize".to_string(), "1".to_string())],
            "{}",
            m.target()
        );
    }
    assert!(
        up.requests_to(GEN).is_empty(),
        "a check spends no generation quota"
    );

    let list = list_keys(&d, &token).await;
    let ea = entry_of(&list, &a);
    assert_eq!(ea["state"], "invalid", "{ea}");
    assert!(
        ea["invalid_reason"].as_str().is_some_and(|s| !s.is_empty()),
        "{ea}"
    );
    assert_eq!(
        entry_of(&list, &s)["state"],
        "invalid",
        "suspended keys are retired"
    );
    assert_eq!(entry_of(&list, &b)["state"], "active");

    for i in 0..4 {
        assert_eq!(
            generate_as(&d, USER_KEY, FLASH).await.status,
            200,
            "request {i}"
        );
    }
    let used = up.keys_to(GEN);
    assert_eq!(
        count(&used, &a) + count(&used, &s),
        0,
        "retired keys unused: {used:?}"
    );

    d.restart().await;
    let token = login(&d, PASSWORD).await;
    let list = list_keys(&d, &token).await;
    assert_eq!(
        entry_of(&list, &a)["state"],
        "invalid",
        "retirement survives a restart"
    );

    // Resetting a key brings it back.
    let id = entry_of(&list, &s)["id"].as_str().unwrap().to_string();
    let v = admin_ok(
        &d,
        Method::POST,
        &format!("/api/keys/{id}/reset"),
        &token,
        None,
    )
    .await;
    assert_eq!(v["state"], "active", "{v}");
    admin_ok(&d, Method::POST, "/api/keys/reset", &token, None).await;
    let list = list_keys(&d, &token).await;
    assert!(
        list.iter().all(|e| e["state"] == "active"),
        "reset all: {list:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_429_shows_the_key_cooling_for_that_model() {
    let (a, b) = (long_key("COOLA", "aaaa"), long_key("COOLB", "bbbb"));
    let ka = a.clone();
    let up = Upstream::start(move |r| {
        if r.key() == Some(ka.as_str()) && r.model() == Some(FLASH) {
            Reply::resource_exhausted("120s")
        } else {
            Reply::generate_ok("hello")
        }
    })
    .await;
    let mut d = Daemon::start(
        &Config::new(&up)
            .keys([a.clone(), b.clone()])
            .admin_password(PASSWORD),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(generate_as(&d, USER_KEY, FLASH).await.status, 200);
        if up.keys_to(GEN).contains(&a) {
            break;
        }
    }
    assert!(up.keys_to(GEN).contains(&a), "key a answered 429");
    let token = login(&d, PASSWORD).await;
    let check = |list: &[Value]| {
        let e = entry_of(list, &a).clone();
        assert_eq!(e["state"], "cooling", "{e}");
        let m: Vec<_> = e["models"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["model"] == FLASH)
            .cloned()
            .collect();
        assert_eq!(m.len(), 1, "a cool-down entry for {FLASH}: {e}");
        assert_eq!(m[0]["cooling"], true, "{e}");
        let secs = m[0]["cooling_seconds"]
            .as_u64()
            .unwrap_or_else(|| panic!("cooling_seconds: {e}"));
        assert!(
            (60..=200).contains(&secs),
            "about 120 s remaining, got {secs}: {e}"
        );
        assert!(
            e["models"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m["model"] == FLASH || m["cooling"] != true),
            "only {FLASH} cools: {e}"
        );
        assert_eq!(entry_of(list, &b)["state"], "active");
    };
    check(&list_keys(&d, &token).await);

    d.restart().await;
    let token = login(&d, PASSWORD).await;
    check(&list_keys(&d, &token).await);

    let id = key_id(&d, &token, &a).await;
    let v = admin_ok(
        &d,
        Method::POST,
        &format!("/api/keys/{id}/reset"),
        &token,
        None,
    )
    .await;
    assert_eq!(v["state"], "active", "reset ends the cool-down: {v}");
}

// ---------------------------------------------------------------- users

async fn create_user(d: &Daemon, token: &str, body: Value) -> Value {
    let r = admin(d, Method::POST, "/api/users", token, Some(body)).await;
    assert_eq!(r.status, 201, "create user: {}", r.text());
    r.json()
}

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

// ---------------------------------------------------------------- secrets

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
