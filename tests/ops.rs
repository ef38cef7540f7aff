//! Operations, black-box: no path reaches the file system and the page and the admin API
//! carry their security headers, SIGTERM drains a running stream and exits 0,
//! `admin_listen` splits the admin routes from the proxy's, `check-config` explains a bad
//! file without echoing its secrets, a world-readable config with secrets is warned
//! about, the systemd unit verifies, and SIGHUP reloads the log level.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::admin::login_at;
use common::client;
use common::raw::{raw, raw_get};
use common::{
    Config, Daemon, FLASH, GENERATE_BODY, Reply, StreamReply, Upstream, check_config, chunk,
    chunk_text, metrics_auth, model_path, ok_all_routes, sse_json_events, user_auth,
};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::Notify;

const PASSWORD: &str = "ops-admin-pw";

/// The address from the daemon's `admin API on ADDR` log line.
async fn admin_addr(d: &Daemon) -> SocketAddr {
    let line = d.wait_log("admin API on ").await;
    let rest = &line[line.find("admin API on ").unwrap() + "admin API on ".len()..];
    rest.split_whitespace()
        .next()
        .unwrap()
        .trim_matches(|c: char| matches!(c, '"' | '\'' | ',' | '`'))
        .parse()
        .unwrap_or_else(|e| panic!("admin address in {line:?}: {e}"))
}

// No path reaches the file system; the page has its security headers and an ETag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_paths_never_serve_files_and_the_page_is_cached_by_etag() {
    let up = Upstream::start(ok_all_routes()).await;
    let d = Daemon::start(&Config::new(&up).admin_password(PASSWORD)).await;
    let cargo_toml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .expect("read Cargo.toml");
    let cargo_line = cargo_toml
        .lines()
        .find(|l| l.starts_with("name"))
        .expect("a name line")
        .to_string();

    for path in [
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/..%2fCargo.toml",
        "//etc/passwd",
        "/%2Fetc%2Fpasswd",
        "/assets/../../Cargo.toml",
        "/assets/..%2f..%2fCargo.toml",
        "/assets/%2e%2e/%2e%2e/Cargo.toml",
        "/..\\Cargo.toml",
        "/assets//etc/passwd",
    ] {
        let r = raw_get(d.addr, path).await;
        let body = r.text();
        assert_eq!(r.status, 404, "GET {path}: body {body:?}");
        assert!(
            !body.contains(&cargo_line) && !body.contains("[package]"),
            "GET {path} served Cargo.toml"
        );
        assert!(!body.contains("root:"), "GET {path} served /etc/passwd");
    }

    let r = raw_get(d.addr, "/").await;
    assert_eq!(r.status, 200, "GET /: {}", r.text());
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/html"), "content-type {ct:?}");
    assert!(
        r.header("content-security-policy").is_some(),
        "no CSP on /: {:?}",
        r.headers
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    let etag = r.header("etag").expect("GET / has an ETag").to_string();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n",
        d.addr
    );
    let r = raw(d.addr, req.as_bytes()).await;
    assert_eq!(r.status, 304, "If-None-Match {etag}: {}", r.text());
    assert!(r.body.is_empty());

    // Admin API answers, with and without a session, carry the same headers plus no-store.
    let token = login_at(&format!("http://{}", d.addr), PASSWORD).await;
    let auth = format!("Bearer {token}");
    for (what, r) in [
        (
            "unauthenticated",
            client::get(&d.url("/api/keys"), &[]).await,
        ),
        (
            "authenticated",
            client::get(&d.url("/api/keys"), &[("authorization", auth.as_str())]).await,
        ),
    ] {
        assert!(
            r.header("content-security-policy").is_some(),
            "{what} /api/keys: no CSP: {:?}",
            r.headers
        );
        assert_eq!(
            r.header("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{what}"
        );
        assert_eq!(
            r.header("x-frame-options").as_deref(),
            Some("DENY"),
            "{what}"
        );
        assert_eq!(
            r.header("referrer-policy").as_deref(),
            Some("no-referrer"),
            "{what}"
        );
        assert!(
            r.header("cache-control")
                .is_some_and(|c| c.contains("no-store")),
            "{what} /api/keys cache-control: {:?}",
            r.header("cache-control")
        );
    }
}

// SIGTERM: stop accepting, let the running stream finish, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_running_stream_and_exits_zero() {
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let up = Upstream::start(move |r| {
        if r.is_stream() {
            StreamReply::sse(vec![chunk("one"), chunk("two"), chunk("three")])
                .gate_before(2, g.clone())
                .into()
        } else {
            Reply::generate_ok("hello")
        }
    })
    .await;
    let mut d = Daemon::start(&Config::new(&up)).await;
    let addr = d.addr;

    let url = d.url(&format!(
        "{}?alt=sse",
        model_path(FLASH, "streamGenerateContent")
    ));
    let mut s = client::post_stream(&url, &user_auth(), GENERATE_BODY).await;
    assert_eq!(s.status, 200);
    s.read_until("two events", |b| sse_json_events(b).len() >= 2)
        .await;

    d.signal("TERM");
    // New connections are refused while the stream is still held open upstream.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(addr).await {
            Err(_) => break,
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "still accepting connections 5 s after SIGTERM"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(d.is_running(), "exited before the stream finished");
    gate.notify_one();

    let r = s.read_to_end().await;
    assert_eq!(
        r.body_error,
        None,
        "stream did not end cleanly: {}",
        r.text()
    );
    let texts: Vec<String> = sse_json_events(&r.body)
        .iter()
        .filter_map(|v| chunk_text(v).map(str::to_string))
        .collect();
    assert_eq!(texts, ["one", "two", "three"], "body: {}", r.text());

    let status = d
        .wait_exited(Duration::from_secs(15))
        .await
        .expect("exit status");
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "accepting after exit"
    );
}

// admin_listen: admin routes only there, proxy routes only on the main address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listen_separates_admin_and_proxy_routes() {
    let up = Upstream::start(ok_all_routes()).await;
    let d = Daemon::start_with_top_level(
        &Config::new(&up).admin_password(PASSWORD),
        "admin_listen = \"127.0.0.1:0\"",
    )
    .await;
    let admin = admin_addr(&d).await;
    assert_ne!(admin, d.addr);
    let admin_base = format!("http://{admin}");
    let gen_url = model_path(FLASH, "generateContent");

    // Main address: proxy and /healthz only.
    assert_eq!(client::get(&d.url("/healthz"), &[]).await.status, 200);
    let r = client::post(&d.url(&gen_url), &user_auth(), GENERATE_BODY).await;
    assert_eq!(r.status, 200, "proxy on main: {}", r.text());
    let r = client::post(
        &d.url("/api/login"),
        &[],
        json!({ "password": PASSWORD }).to_string(),
    )
    .await;
    assert_eq!(r.status, 404, "POST /api/login on main: {}", r.text());
    for path in ["/", "/api/keys", "/metrics", "/api/keys/export"] {
        let r = client::get(&d.url(path), &[]).await;
        assert_eq!(r.status, 404, "GET {path} on main: {}", r.text());
    }

    // Admin address: page, API, metrics; no proxy.
    let token = login_at(&admin_base, PASSWORD).await;
    let auth = format!("Bearer {token}");
    let r = client::get(
        &format!("{admin_base}/api/keys"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 200, "GET /api/keys on admin: {}", r.text());
    let r = client::get(&format!("{admin_base}/"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("text/html")
    );
    let r = client::get(&format!("{admin_base}/metrics"), &[metrics_auth()]).await;
    assert_eq!(r.status, 200, "GET /metrics on admin: {}", r.text());
    let before = up.requests_to(":generateContent").len();
    let r = client::post(
        &format!("{admin_base}{gen_url}"),
        &user_auth(),
        GENERATE_BODY,
    )
    .await;
    assert_eq!(r.status, 404, "proxy route on admin: {}", r.text());
    assert_eq!(up.requests_to(":generateContent").len(), before);
}

// check-config accepts the example and names an unknown key with its line.
#[test]
fn check_config_accepts_the_example_and_names_unknown_keys() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/gemini-balance.toml.example");
    let (code, out) = check_config(std::path::Path::new(example));
    assert_eq!(code, Some(0), "example: {out}");
    assert!(out.contains("config OK"), "example: {out}");

    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("gb.toml");
    std::fs::write(
        &f,
        "log_level = \"info\"\n\n[server]\nmax_conections = 10\n",
    )
    .unwrap();
    let (code, out) = check_config(&f);
    assert_eq!(code, Some(2), "unknown key: {out}");
    assert!(
        out.contains("max_conections"),
        "does not name the key: {out}"
    );
    assert!(
        out.contains("line 4") || out.contains(":4:"),
        "does not name line 4: {out}"
    );
}

// check-config never prints the admin password.
#[test]
fn check_config_errors_do_not_print_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("gb.toml");
    for (what, text) in [
        (
            "bad value in another table",
            "[admin]\npassword = \"MARKER-check-pw\"\n\n[server]\nmax_connections = \"lots\"\n",
        ),
        (
            "bad value next to the password",
            "[admin]\npassword = \"MARKER-check-pw\"\nsession_ttl = \"forever\"\n",
        ),
        (
            "unknown key next to the password",
            "[admin]\npassword = \"MARKER-check-pw\"\npasword = \"x\"\n",
        ),
        (
            "password of the wrong type",
            "[admin]\npassword = [\"MARKER-check-pw\"]\n",
        ),
        (
            "syntax error on the password line",
            "[admin]\npassword = \"MARKER-check-pw\n",
        ),
        (
            "upstream key of the wrong shape",
            "[[upstream_keys]]\nkey = \"AIzaMARKER-check-key\"\nnote = 5\n",
        ),
    ] {
        std::fs::write(&f, text).unwrap();
        let (code, out) = check_config(&f);
        assert_eq!(code, Some(2), "{what}: {out}");
        assert!(
            !out.contains("MARKER"),
            "{what}: output shows the secret:\n{out}"
        );
        assert!(out.contains("line"), "{what}: no line named:\n{out}");
    }
}

// A world-readable config holding secrets gets a chmod 600 warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn world_readable_config_with_secrets_is_warned_about() {
    let up = Upstream::start(ok_all_routes()).await;
    let mut d = Daemon::start(&Config::new(&up)).await;
    let p = d.config_path();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    d.restart().await;
    let warn = d.wait_log("chmod 600").await;
    assert!(
        warn.contains("WARN") || warn.to_lowercase().contains("warn"),
        "{warn}"
    );

    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    d.restart().await;
    let logs = d.logs();
    let last_start = logs
        .iter()
        .rposition(|l| l.contains("--- harness: stopped"))
        .unwrap();
    assert!(
        !logs[last_start..].iter().any(|l| l.contains("chmod 600")),
        "warned about a 0600 config:\n{}",
        logs[last_start..].join("\n")
    );
}

// The shipped systemd unit verifies.
#[test]
fn systemd_unit_verifies() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("note: systemd-analyze not installed; skipping the unit check");
        return;
    }
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/gemini-balance.service"
    ))
    .unwrap();
    let unit = unit.replace(
        "/usr/local/bin/gemini-balance",
        env!("CARGO_BIN_EXE_gemini-balance"),
    );
    assert!(unit.contains(env!("CARGO_BIN_EXE_gemini-balance")));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gemini-balance.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    assert!(
        out.status.success(),
        "systemd-analyze verify: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// SIGHUP re-reads the log level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_log_level() {
    let up = Upstream::start(ok_all_routes()).await;
    let mut d = Daemon::start_with_top_level(&Config::new(&up), "log_level = \"info\"").await;
    let p = d.config_path();
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains("log_level = \"info\""));
    std::fs::write(
        &p,
        text.replace("log_level = \"info\"", "log_level = \"debug\""),
    )
    .unwrap();
    d.signal("HUP");
    d.wait_log("SIGHUP: log level reloaded").await;
    assert!(d.is_running(), "SIGHUP killed the daemon");
    let r = client::post(
        &d.url(&model_path(FLASH, "generateContent")),
        &user_auth(),
        GENERATE_BODY,
    )
    .await;
    assert_eq!(r.status, 200, "after SIGHUP: {}", r.text());
}
