//! The admin page in a real headless Chromium, driven over WebDriver (fantoccini and
//! chromedriver) against the real daemon and a fake Gemini upstream: login, bulk-adding
//! keys, a hostile key note that must stay text, creating a user key and using its secret,
//! the request log and the live feed, the Chinese translation, logout and the return after
//! a session ends. It also takes screenshots of each page (desktop and phone, light and
//! dark): into cargo's scratch directory, or into docs/screenshots/ when run with
//! `UPDATE_SCREENSHOTS=1`.
//!
//! Needs /usr/bin/chromium and /usr/bin/chromedriver (Debian's `chromium chromium-driver`);
//! without them the tests fail with a message saying so.

mod common;
#[path = "browser_support/driver.rs"]
mod driver;
#[path = "browser_support/traffic.rs"]
mod traffic;

use std::path::PathBuf;

use common::*;
use driver::Browser;
use serde_json::json;

const PASSWORD: &str = "browser-test-password";
const XSS: &str = "<img src=x onerror=alert(1)>";

async fn start() -> (Upstream, Daemon, Browser) {
    let up = Upstream::start(|_| Reply::generate_ok("hello from the fake upstream")).await;
    let d = Daemon::start(&Config::new(&up).admin_password(PASSWORD)).await;
    let b = Browser::start().await;
    (up, d, b)
}

/// Opens the page, lands on the login view (no session yet) and signs in.
async fn login(b: &Browser, d: &Daemon) {
    b.goto(&d.url("/")).await;
    b.wait_for("#password").await;
    b.type_into("#password", PASSWORD).await;
    b.click("#login-submit").await;
    b.wait_for("main[data-view]").await;
}

/// Creates a user key through the form; returns the secret read from the page.
async fn create_user(b: &Browser, name: &str) -> String {
    b.click("[data-nav=users]").await;
    b.type_into("#create-user input[name=name]", name).await;
    b.type_into("#create-user input[name=rpm]", "600").await;
    b.click("[data-action=create-user]").await;
    let secret = b.wait_text("#user-secret", "gb-").await;
    assert!(
        b.js(
            "return !!document.querySelector('#secret-box .copy-btn');",
            json!([])
        )
        .await
        .as_bool()
        .unwrap(),
        "the secret has a copy button"
    );
    b.wait_text("#users tbody tr", name).await;
    secret.trim().to_string()
}

async fn proxied_request(d: &Daemon, secret: &str) {
    let r = client::post(
        &d.url(&model_path(FLASH, "generateContent")),
        &[("x-goog-api-key", secret)],
        GENERATE_BODY,
    )
    .await;
    assert_eq!(
        r.status,
        200,
        "proxied request with the page's secret: {}",
        r.text()
    );
}

/// The README's screenshots are only rewritten on request, so a test run leaves the
/// checkout as it was.
fn screenshot_dir() -> PathBuf {
    if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots")
    } else {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
    }
}

/// Each of `pages` at desktop and phone width, light and dark.
async fn screenshots(b: &Browser, pages: &[&str]) {
    let dir = screenshot_dir();
    for (size, w, h, mobile) in [("desktop", 1280, 800, false), ("phone", 375, 812, true)] {
        b.viewport(w, h, mobile).await;
        for theme in ["light", "dark"] {
            b.color_scheme(theme).await;
            b.js("delete document.documentElement.dataset.theme; localStorage.removeItem('gb.theme');", json!([])).await;
            for page in pages {
                b.js(
                    "location.hash = arguments[0];",
                    json!([format!("#/{page}")]),
                )
                .await;
                b.wait_for(&format!("main[data-view={page}]")).await;
                b.wait_js(
                    &format!("{page} to finish loading"),
                    "return !document.querySelector('.state-loading');",
                    json!([]),
                )
                .await;
                b.js(
                    "document.getElementById('toasts').replaceChildren();",
                    json!([]),
                )
                .await;
                b.settle().await;
                b.screenshot(&dir.join(format!("{page}-{size}-{theme}.png")))
                    .await;
            }
        }
    }
    b.viewport(1280, 800, false).await;
    b.color_scheme("light").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_page_keys_users_translation_and_logout() {
    let (_up, d, b) = start().await;

    // The login view: a wrong password is refused with the daemon's message.
    b.goto(&d.url("/")).await;
    b.wait_for("#password").await;
    b.screenshot(&screenshot_dir().join("login-desktop-light.png"))
        .await;
    b.type_into("#password", "not-the-password").await;
    b.click("#login-submit").await;
    b.wait_text("#login-msg", "Wrong password").await;
    b.type_into("#password", PASSWORD).await;
    b.click("#login-submit").await;
    b.wait_for("main[data-view=dashboard]").await;

    // Upstream keys: the two from the config, then two more pasted into the bulk-add box.
    b.click("[data-nav=keys]").await;
    b.wait_js(
        "the two configured keys",
        "return document.querySelectorAll('#keys tbody tr').length === 2;",
        json!([]),
    )
    .await;
    b.type_into(
        "#bulk-keys",
        "AIzaSyBrowserTest-first-key-0000001,\nAIzaSyBrowserTest-second-key-000002  not-a-key",
    )
    .await;
    b.click("[data-action=add-keys]").await;
    b.wait_text("#add-result", "Added 2").await;
    b.wait_js(
        "four keys, all active",
        "const rows = document.querySelectorAll('#keys tbody tr'); \
         return rows.length === 4 && [...rows].every(r => r.querySelector('.badge-active'));",
        json!([]),
    )
    .await;
    b.wait_text("#keys .key-brief", "AIza…0001").await;

    // A hostile note is shown as text and runs nothing.
    b.js(
        "window.__alerts = 0; window.alert = () => { window.__alerts += 1; };",
        json!([]),
    )
    .await;
    b.click("#keys tbody tr:first-child [data-action=note]")
        .await;
    b.type_into("#note-input", XSS).await;
    b.click("[data-action=save-note]").await;
    let note = b.wait_text("#keys .note", "onerror").await;
    assert_eq!(note, XSS, "the note is shown verbatim");
    let safe = b
        .js(
            "return { imgs: document.querySelectorAll('#keys img, main img').length, alerts: window.__alerts };",
            json!([]),
        )
        .await;
    assert_eq!(
        safe,
        json!({"imgs": 0, "alerts": 0}),
        "the note became markup"
    );

    // Destructive actions ask first; cancelling keeps the key.
    b.click("#keys tbody tr:last-child [data-action=delete]")
        .await;
    b.wait_for("dialog[open] .confirm").await;
    b.click("dialog[open] .btn-ghost:not(.modal-x)").await;
    b.wait_js(
        "the dialog to close",
        "return !document.querySelector('dialog[open]') && document.querySelectorAll('#keys tbody tr').length === 4;",
        json!([]),
    )
    .await;

    // Keys of one project share its quotas: giving two keys a project groups them under
    // it, and the page counts the pool's independent quotas.
    b.wait_text("#key-quotas", "4 independent quotas").await;
    for n in 1..=2 {
        b.click("#keys tbody[data-project=''] tr:not(.group-head) [data-action=project]")
            .await;
        b.type_into("#project-input", "861042").await;
        b.click("[data-action=save-project]").await;
        b.wait_js(
            "keys grouped under project 861042 and under no known project",
            "const rows = (p) => document.querySelectorAll(`#keys tbody[data-project='${p}'] tr:not(.group-head)`).length; \
             return !document.querySelector('dialog[open]') && rows('861042') === arguments[0] \
               && rows('') === 4 - arguments[0] && document.querySelectorAll('#keys .group-head').length === 2;",
            json!([n]),
        )
        .await;
    }
    b.wait_text("#key-quotas", "3 independent quotas").await;

    // A user key: created on the page, its secret read from the page and used by a client.
    let secret = create_user(&b, "browser-user").await;
    assert!(secret.starts_with("gb-"), "secret {secret:?}");
    proxied_request(&d, &secret).await;

    // A limit set on every key: the keys page shows each key's use against it.
    let token = common::admin::login(&d, PASSWORD).await;
    let keys = common::admin::admin_ok(&d, http::Method::GET, "/api/keys", &token, None).await;
    for k in keys["keys"].as_array().unwrap() {
        let path = format!("/api/keys/{}", k["id"].as_str().unwrap());
        let body = json!({"limits": {FLASH: {"rpm": 5, "rpd": 100}}});
        common::admin::admin_ok(&d, http::Method::PATCH, &path, &token, Some(body)).await;
    }
    proxied_request(&d, &secret).await;
    b.click("[data-nav=keys]").await;
    b.wait_js(
        "a key's FLASH use against its limits",
        "return [...document.querySelectorAll('#keys li[data-model] .limits')] \
           .some((el) => el.textContent === '1/5 a minute · 1/100 today');",
        json!([]),
    )
    .await;

    // Limits edited in the page: the key keeps its FLASH limits and gains one for PRO.
    let id = b
        .js(
            "document.getElementById('toasts').replaceChildren(); \
             return document.querySelector('#keys tr[data-id]').dataset.id;",
            json!([]),
        )
        .await;
    let id = id.as_str().expect("a key row's id").to_owned();
    b.click(&format!("#keys tr[data-id='{id}'] [data-action=limits]"))
        .await;
    b.wait_for("#limits-form").await;
    let last = "#limits-form tr.limit-row:last-child";
    b.type_into(&format!("{last} [name=model]"), PRO).await;
    b.type_into(&format!("{last} [name=rpm]"), "7").await;
    b.screenshot(&screenshot_dir().join("keys-limits-desktop-light.png"))
        .await;
    b.click("[data-action=save-limits]").await;
    b.wait_js(
        "the limits dialog to close",
        "return !document.querySelector('dialog[open]');",
        json!([]),
    )
    .await;
    let path = format!("/api/keys/{id}");
    let view = common::admin::admin_ok(&d, http::Method::GET, "/api/keys", &token, None).await;
    let k = view["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{path} in {view}"));
    assert_eq!(
        k["limits"],
        json!({FLASH: {"rpm": 5, "rpd": 100}, PRO: {"rpm": 7}}),
        "{k}"
    );

    // The theme toggle flips and is remembered.
    let theme = b
        .js(
            "document.querySelector('#theme-toggle').click(); \
             return [document.documentElement.dataset.theme, localStorage.getItem('gb.theme')];",
            json!([]),
        )
        .await;
    assert_eq!(theme[0], theme[1], "theme remembered: {theme}");
    b.js(
        "delete document.documentElement.dataset.theme; localStorage.removeItem('gb.theme');",
        json!([]),
    )
    .await;

    // The dashboard's are taken with days of traffic (below).
    screenshots(&b, &["keys", "users", "resources", "logs", "live"]).await;

    // Chinese: the navigation and the page change language, and the choice is remembered.
    b.click("[data-nav=keys]").await;
    b.click("#lang-toggle").await;
    b.wait_text("[data-nav=keys]", "上游密钥").await;
    b.wait_text("main h1", "上游密钥").await;
    assert_eq!(
        b.js("return localStorage.getItem('gb.lang');", json!([]))
            .await,
        "zh"
    );
    b.screenshot(&screenshot_dir().join("keys-desktop-light-zh.png"))
        .await;
    b.click("#lang-toggle").await;
    b.wait_text("[data-nav=keys]", "Upstream keys").await;

    // Log out: back at the login view, and the API refuses the old page.
    b.click("#logout").await;
    b.wait_for("#password").await;

    // A page opened without a session goes through login and comes back to it.
    b.js("location.hash = '#/users';", json!([])).await;
    b.wait_for("#password").await;
    b.type_into("#password", PASSWORD).await;
    b.click("#login-submit").await;
    b.wait_for("main[data-view=users]").await;
    b.wait_text("#users tbody tr", "browser-user").await;

    let console = b.console().await;
    let csp: Vec<_> = console
        .iter()
        .filter(|l| l.contains("Content Security Policy") || l.contains("Refused to"))
        .collect();
    assert!(csp.is_empty(), "CSP violations: {csp:#?}");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_shows_in_live_feed_and_request_log() {
    let (_up, d, b) = start().await;
    login(&b, &d).await;
    let secret = create_user(&b, "feed-user").await;

    // The live feed is open (connected) before the request is made.
    b.click("[data-nav=live]").await;
    b.wait_for("#live-status.live-on").await;
    proxied_request(&d, &secret).await;
    b.wait_text("#feed [data-kind=request]", FLASH).await;
    b.screenshot(&screenshot_dir().join("live-desktop-light-event.png"))
        .await;

    // Pausing holds new events back until resumed.
    b.click("[data-action=pause]").await;
    proxied_request(&d, &secret).await;
    b.wait_text("#live-status", "1").await;
    let shown = b
        .js(
            "return document.querySelectorAll('#feed [data-kind=request]').length;",
            json!([]),
        )
        .await;
    assert_eq!(shown, 1, "paused feed stays still");
    b.click("[data-action=pause]").await;
    b.wait_js(
        "the held event after resuming",
        "return document.querySelectorAll('#feed [data-kind=request]').length === 2;",
        json!([]),
    )
    .await;

    // The request log lists it; a click shows the attempt chain.
    // Logs are written in batches, so the list is refreshed until the request shows up.
    b.click("[data-nav=logs]").await;
    b.wait_js(
        "the request in the log",
        "for (const r of document.querySelectorAll('#logs tbody tr')) \
           if (r.textContent.includes('feed-user')) return true; \
         if (!document.querySelector('.state-loading') && Date.now() - (window.__refreshed || 0) > 1000) { \
           window.__refreshed = Date.now(); \
           document.querySelector('main .page-head .btn-ghost').click(); \
         } \
         return false;",
        json!([]),
    )
    .await;
    b.click("#logs tbody tr:first-child button.link").await;
    b.wait_for("#attempt-chain li").await;
    let chain = b.wait_text("#attempt-chain li", "AIza").await;
    assert!(
        chain.contains("AIza"),
        "attempt chain names the key: {chain}"
    );
    b.close().await;
}

/// The dashboard as the README shows it: two weeks of traffic in the statistics (seeded
/// in the shared store, `traffic`) and requests made now, every chart drawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_charts_days_of_traffic() {
    let redis = common::redis::RedisServer::start();
    let up = Upstream::start(|_| Reply::generate_ok("hello from the fake upstream")).await;
    let pool = keys(4);
    let cfg = Config::new(&up).keys(&pool).admin_password(PASSWORD);
    let top = format!("store = {:?}\n", redis.url());
    let d = Daemon::start_with_top_level(&cfg, &top).await;
    let ids: Vec<String> = pool.iter().map(|k| id_of(k)).collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    traffic::seed(&redis, now, 14, USER_NAME, &ids);
    for (n, model) in [(9, FLASH), (4, PRO), (3, FLASH)] {
        for _ in 0..n {
            let r = client::post(
                &d.url(&model_path(model, "generateContent")),
                &user_auth(),
                GENERATE_BODY,
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }

    let b = Browser::start().await;
    login(&b, &d).await;
    b.wait_js(
        "every dashboard panel drawn with data",
        "const panels = ['#chart-requests', '#chart-tokens', '#chart-success', '#chart-latency', '#per-key', '#heatmap']; \
         return !document.querySelector('.state-loading') \
           && panels.every((p) => document.querySelector(p + ' svg, ' + p + ' .bars') \
             && !document.querySelector(p + ' .state-empty'));",
        json!([]),
    )
    .await;
    let today = b
        .js(
            "return document.querySelector('#stat-requests .stat-value').textContent;",
            json!([]),
        )
        .await;
    assert_ne!(today, "0", "today's requests counted");
    screenshots(&b, &["dashboard"]).await;
    b.close().await;
}

/// The id the daemon gives a key: the first 8 bytes of its SHA-256, in hex.
fn id_of(key: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(key.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
