//! Black-box tests of egress per key: a key with a proxy of its own always goes through it;
//! keys without one stick to a proxy of `upstream.proxies` and move to another when theirs
//! fails, without a client request failing; the admin API sets and clears a key's proxy,
//! durably, and the key check takes it; a proxy's password is never shown. Two loopback
//! CONNECT proxies (`common/proxies.rs`) count what went through each of them. The admin
//! page's proxy dialog is driven in headless Chromium (`browser_support/driver.rs`).

mod common;
#[path = "browser_support/driver.rs"]
#[allow(dead_code)]
mod driver;
#[path = "common/proxies.rs"]
mod proxies;

use common::admin::*;
use common::*;
use http::Method;
use proxies::ConnectProxy;
use serde_json::{Value, json};
use std::collections::BTreeSet;

const PASSWORD: &str = "correct-horse-battery-staple-7";
const SECRET: &str = "pr0xy-s3cret-pw";

/// `n` generate calls, each of which must succeed.
async fn generate_ok(d: &Daemon, n: usize) {
    for i in 0..n {
        let r = generate(d, FLASH).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
}

/// `[[upstream_keys]]` entries: each key, with its proxy when it has one.
fn declared(keys: &[(&str, Option<&str>)]) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap();
    let mut t = String::new();
    for (k, proxy) in keys {
        t += &format!("[[upstream_keys]]\nkey = {}\n", q(k));
        if let Some(p) = proxy {
            t += &format!("proxy = {}\n", q(p));
        }
    }
    t
}

fn distinct(v: Vec<String>) -> BTreeSet<String> {
    v.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_goes_through_its_own_proxy() {
    let (p1, p2) = (ConnectProxy::start().await, ConnectProxy::start().await);
    let up = Upstream::start(ok_or_stream).await;
    let (k1, k2) = (key(1), key(2));
    let p1_url = p1.url_with("alice", SECRET);
    let keys = declared(&[(&k1, Some(&p1_url)), (&k2, Some(&p2.url()))]);
    let d = Daemon::start(&Config::new(&up).keys(Vec::<String>::new()).extra(&keys)).await;

    generate_ok(&d, 6).await;

    assert_eq!(distinct(p1.keys()), BTreeSet::from([k1.clone()]));
    assert_eq!(distinct(p2.keys()), BTreeSet::from([k2.clone()]));
    let upstream = up.url().trim_start_matches("http://").to_owned();
    for p in [&p1, &p2] {
        assert!(p.tunnels() >= 1);
        assert!(
            p.targets().iter().all(|t| *t == upstream),
            "{:?}",
            p.targets()
        );
    }
    // The URL's user name and password reach the proxy as Basic credentials.
    let basic = format!("Basic {}", base64_of(&format!("alice:{SECRET}")));
    assert!(p1.auths().iter().all(|a| *a == basic) && !p1.auths().is_empty());
    assert!(p2.auths().is_empty());
    assert_eq!(up.requests().len(), 6);
    assert!(!d.logs().join("\n").contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_keys_stick_to_one_proxy_and_move_when_it_dies() {
    let (p1, p2) = (ConnectProxy::start().await, ConnectProxy::start().await);
    let up = Upstream::start(ok_or_stream).await;
    let pool = format!("proxies = [{:?}, {:?}]", p1.url(), p2.url());
    let d = Daemon::start(&Config::new(&up).keys(keys(16)).upstream(&pool)).await;

    generate_ok(&d, 32).await;
    let (on1, on2) = (distinct(p1.keys()), distinct(p2.keys()));
    assert!(
        on1.is_disjoint(&on2),
        "a key went through both: {on1:?} {on2:?}"
    );
    assert_eq!(on1.len() + on2.len(), 16, "every key was used");
    assert!(!on1.is_empty() && !on2.is_empty(), "{on1:?} {on2:?}");

    p1.refuse();
    let (tunnels, seen_before) = (p1.tunnels(), p1.keys().len());
    generate_ok(&d, 32).await;
    assert_eq!(
        p1.tunnels(),
        tunnels,
        "a tunnel opened through the dead proxy"
    );
    assert_eq!(p1.keys().len(), seen_before);
    let now_on2 = distinct(p2.keys());
    assert!(
        on1.is_subset(&now_on2),
        "{on1:?} did not move to {now_on2:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connect_is_sent_again_through_the_next_proxy() {
    let (dead, live) = (ConnectProxy::start().await, ConnectProxy::start().await);
    dead.refuse();
    let up = Upstream::start(ok_or_stream).await;
    let pool = format!(
        "proxies = [{:?}, {:?}]",
        dead.url_with("bob", SECRET),
        live.url()
    );
    // One attempt per request: a failed connect must not cost the client its request.
    let cfg = Config::new(&up)
        .keys(keys(16))
        .upstream(&pool)
        .pool("max_attempts", "1");
    let d = Daemon::start(&cfg).await;

    generate_ok(&d, 32).await;
    assert!(dead.refused() >= 1, "no key was on the dead proxy");
    assert_eq!(dead.tunnels(), 0);
    assert_eq!(distinct(live.keys()).len(), 16);
    let logs = d.logs().join("\n");
    let masked = format!("http://bob:***@{}", dead.addr);
    assert!(logs.contains(&masked), "no warning naming {masked}");
    assert!(!logs.contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_proxy_of_a_key_is_an_error_that_hides_the_password() {
    let dead = ConnectProxy::start().await;
    dead.refuse();
    let up = Upstream::start(ok_or_stream).await;
    let k = key(1);
    let keys = declared(&[(&k, Some(&dead.url_with("carol", SECRET)))]);
    let cfg = Config::new(&up).keys(Vec::<String>::new()).extra(&keys);
    let d = Daemon::start(&cfg).await;

    let r = generate(&d, FLASH).await;
    assert!(r.status >= 500, "{} {}", r.status, r.text());
    assert!(!r.text().contains(SECRET), "{}", r.text());
    let masked = format!("http://carol:***@{}", dead.addr);
    assert!(r.text().contains(&masked), "{}", r.text());
    assert!(dead.refused() >= 1);
    assert!(up.requests().is_empty());
    assert!(!d.logs().join("\n").contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_sets_and_clears_a_keys_proxy_durably_and_masked() {
    let p1 = ConnectProxy::start().await;
    let up = Upstream::start(ok_or_stream).await;
    let k = key(1);
    let cfg = Config::new(&up).keys([k.clone()]).admin_password(PASSWORD);
    let mut d = Daemon::start(&cfg).await;
    let token = login(&d, PASSWORD).await;
    let id = key_id(&d, &token, &k).await;
    let path = format!("/api/keys/{id}");
    let masked = format!("http://dave:***@{}", p1.addr);

    let set = json!({ "proxy": p1.url_with("dave", SECRET) });
    let v = admin_ok(&d, Method::PATCH, &path, &token, Some(set)).await;
    assert_eq!(v["proxy"], masked.as_str(), "{v}");
    generate_ok(&d, 2).await;
    assert_eq!(p1.keys(), vec![k.clone(), k.clone()]);

    d.restart().await;
    let token = login(&d, PASSWORD).await;
    let r = admin(&d, Method::GET, "/api/keys", &token, None).await;
    assert!(!r.text().contains(SECRET), "password in GET /api/keys");
    assert_eq!(
        entry_of(&list_keys(&d, &token).await, &k)["proxy"],
        masked.as_str()
    );
    generate_ok(&d, 1).await;
    assert_eq!(p1.keys().len(), 3, "the proxy was lost in the restart");

    let clear = json!({ "proxy": Value::Null });
    let v = admin_ok(&d, Method::PATCH, &path, &token, Some(clear)).await;
    assert!(v["proxy"].is_null(), "{v}");
    let tunnels = p1.tunnels();
    generate_ok(&d, 2).await;
    assert_eq!((p1.keys().len(), p1.tunnels()), (3, tunnels));
    assert_eq!(up.requests().len(), 5);
    d.restart().await;
    let token = login(&d, PASSWORD).await;
    assert!(entry_of(&list_keys(&d, &token).await, &k)["proxy"].is_null());
    assert!(!d.logs().join("\n").contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_proxy_is_kept_in_redis_for_the_next_instance() {
    let redis = common::redis::RedisServer::start();
    let p1 = ConnectProxy::start().await;
    let up = Upstream::start(ok_or_stream).await;
    let k = key(1);
    let cfg = Config::new(&up).keys([k.clone()]).admin_password(PASSWORD);
    let top = format!("store = {:?}\n", redis.url());
    let mut a = Daemon::start_with_top_level(&cfg, &top).await;
    let token = login(&a, PASSWORD).await;
    let path = format!("/api/keys/{}", key_id(&a, &token, &k).await);
    let set = json!({ "proxy": p1.url_with("frank", SECRET) });
    admin_ok(&a, Method::PATCH, &path, &token, Some(set)).await;
    a.stop().await;

    let b = Daemon::start_with_top_level(&cfg, &top).await;
    let token = login(&b, PASSWORD).await;
    let masked = format!("http://frank:***@{}", p1.addr);
    assert_eq!(
        entry_of(&list_keys(&b, &token).await, &k)["proxy"],
        masked.as_str()
    );
    generate_ok(&b, 1).await;
    assert_eq!(p1.keys(), vec![k]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_refuses_a_bad_proxy_without_echoing_it() {
    let up = Upstream::start(ok_or_stream).await;
    let k = key(1);
    let d = Daemon::start(&Config::new(&up).keys([k.clone()]).admin_password(PASSWORD)).await;
    let token = login(&d, PASSWORD).await;
    let path = format!("/api/keys/{}", key_id(&d, &token, &k).await);
    for bad in [
        json!(format!("https://u:{SECRET}@127.0.0.1:1")),
        json!(format!("http://u:{SECRET}@127.0.0.1:1/path")),
        json!(format!("u:{SECRET}@127.0.0.1:1")),
        json!(3),
    ] {
        let r = admin(
            &d,
            Method::PATCH,
            &path,
            &token,
            Some(json!({ "proxy": bad })),
        )
        .await;
        assert_admin_error(&r, 400);
        assert!(!r.text().contains(SECRET), "{}", r.text());
    }
    assert!(entry_of(&list_keys(&d, &token).await, &k)["proxy"].is_null());
    generate_ok(&d, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_check_goes_through_the_keys_proxy() {
    let (p1, p2) = (ConnectProxy::start().await, ConnectProxy::start().await);
    let up = Upstream::start(ok_upstream()).await;
    let (k1, k2) = (key(1), key(2));
    let keys = declared(&[(&k1, Some(&p1.url())), (&k2, Some(&p2.url()))]);
    let cfg = Config::new(&up)
        .keys(Vec::<String>::new())
        .extra(&keys)
        .admin_password(PASSWORD);
    let d = Daemon::start(&cfg).await;
    let token = login(&d, PASSWORD).await;
    let id = key_id(&d, &token, &k1).await;

    let body = json!({ "ids": [id] });
    let v = admin_ok(&d, Method::POST, "/api/keys/check", &token, Some(body)).await;
    assert_eq!(v["valid"], 1, "{v}");
    assert_eq!(p1.keys(), vec![k1.clone()]);
    assert!(p2.keys().is_empty() && p2.tunnels() == 0);
    assert_eq!(up.keys_to("/models"), vec![k1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_sets_shows_masked_and_clears_a_keys_proxy() {
    let p1 = ConnectProxy::start().await;
    let up = Upstream::start(ok_or_stream).await;
    let d = Daemon::start(&Config::new(&up).keys([key(1)]).admin_password(PASSWORD)).await;
    let b = driver::Browser::start().await;
    b.goto(&d.url("/")).await;
    b.type_into("#password", PASSWORD).await;
    b.click("#login-submit").await;
    b.wait_for("main[data-view]").await;
    b.click("[data-nav=keys]").await;
    b.wait_text("#keys .key-brief", "AIza").await;

    b.click("#keys tbody tr:first-child [data-action=proxy]")
        .await;
    b.type_into("#proxy-input", &p1.url_with("erin", SECRET))
        .await;
    b.click("[data-action=save-proxy]").await;
    let masked = format!("http://erin:***@{}", p1.addr);
    let shown = b.wait_text("#keys .key-proxy", &masked).await;
    assert!(!shown.contains(SECRET));
    let page = b.js("return document.body.innerHTML;", json!([])).await;
    assert!(
        !page.as_str().unwrap().contains(SECRET),
        "password on the page"
    );
    assert_eq!(
        b.js(
            "return document.querySelectorAll('main img').length;",
            json!([])
        )
        .await,
        0
    );
    generate_ok(&d, 1).await;
    assert_eq!(p1.keys(), vec![key(1)]);

    b.click("#keys tbody tr:first-child [data-action=proxy]")
        .await;
    b.wait_text("dialog[open]", &masked).await;
    b.click("[data-action=clear-proxy]").await;
    b.wait_js(
        "the proxy to be cleared",
        "return !document.querySelector('dialog[open]') && !document.querySelector('#keys .key-proxy');",
        json!([]),
    )
    .await;
    let token = login(&d, PASSWORD).await;
    assert!(list_keys(&d, &token).await[0]["proxy"].is_null());

    // What is not a proxy URL is refused by the daemon, whose answer the page shows as text.
    b.click("#keys tbody tr:first-child [data-action=proxy]")
        .await;
    b.type_into("#proxy-input", "<img src=x onerror=alert(1)>")
        .await;
    b.click("[data-action=save-proxy]").await;
    b.wait_text(".toast-error", "proxy URL").await;
    let imgs = "return document.querySelectorAll('main img, .toast img').length;";
    assert_eq!(b.js(imgs, json!([])).await, 0);
    b.close().await;
}

#[test]
fn a_bad_proxy_url_stops_the_start_without_printing_it() {
    let dir = tempfile::tempdir().unwrap();
    for (table, line) in [
        (
            "[upstream]",
            format!("proxy = \"ftp://u:{SECRET}@127.0.0.1:1\""),
        ),
        (
            "[upstream]",
            format!("proxies = [\"http://u:{SECRET}@h:1/x\"]"),
        ),
        (
            "[[upstream_keys]]\nkey = \"AIzaSyTESTxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"",
            format!("proxy = \"https://u:{SECRET}@127.0.0.1:1\""),
        ),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, format!("{table}\n{line}\n")).unwrap();
        let (code, text) = check_config(&path);
        assert_ne!(code, Some(0), "{line} accepted: {text}");
        assert!(text.contains("proxy URL"), "{text}");
        assert!(!text.contains(SECRET), "{text}");
    }
}

fn base64_of(s: &str) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
