//! Operations and security, black-box: slow-header clients are cut off, huge bodies are
//! refused before they are read, a full connection table queues instead of crashing, no path
//! reaches the file system, SIGTERM drains streams, `admin_listen` splits the routes, no
//! secret reaches a log or a response it does not belong in, `check-config` explains
//! without echoing secrets, the systemd unit verifies, SIGHUP reloads the log level,
//! keep-alive connections are spread evenly over the serving threads.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client;
use common::raw::{raw, raw_get, read_response};
use common::{
    Config, Daemon, GENERATE_BODY, Reply, StreamReply, USER_KEY, Upstream,
    assert_google_error_value, check_config, chunk, chunk_text, metrics_auth, model_path,
    sse_json_events, user_auth,
};
use http::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

const FLASH: &str = "gemini-2.5-flash";
const PASSWORD: &str = "ops-admin-pw";

fn ok_upstream() -> impl Fn(&common::Recorded) -> Reply + Send + Sync + 'static {
    |r| {
        if r.path.ends_with("/chat/completions") {
            Reply::openai_chat_ok()
        } else if r.path.ends_with("/models") {
            Reply::json(
                200,
                &json!({"models": [{"name": "models/gemini-2.5-flash"}]}),
            )
        } else {
            Reply::generate_ok("hello")
        }
    }
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

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

async fn login_at(base: &str, password: &str) -> String {
    let r = client::post(
        &format!("{base}/api/login"),
        &[],
        json!({ "password": password }).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "login: {}", r.text());
    r.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

// 1. A client dribbling its request head is cut off after header_read_timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_off_after_header_read_timeout() {
    let up = Upstream::start(ok_upstream()).await;
    let d = Daemon::start(&Config::new(&up).extra("[server]\nheader_read_timeout = \"1s\"")).await;

    let s = TcpStream::connect(d.addr).await.expect("connect");
    let (mut rd, mut wr) = s.into_split();
    let started = Instant::now();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        let mut got = Vec::new();
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return (Instant::now(), got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    });
    // A complete head would take 10 s: one header line per second, never the blank line.
    let mut lines_sent = 0;
    let mut write_failed = false;
    wr.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("first write");
    for i in 0..10 {
        if reader.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if wr
            .write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
            .await
            .is_err()
        {
            write_failed = true;
            break;
        }
        lines_sent += 1;
    }
    let (closed_at, got) = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the server never closed the slow connection")
        .unwrap();
    let after = closed_at.duration_since(started);
    assert!(
        after < Duration::from_secs(5),
        "connection closed only after {after:?} (timeout 1 s); lines sent {lines_sent}, write failed {write_failed}"
    );
    assert!(
        lines_sent < 10,
        "the slow client finished its 10 lines before being cut off"
    );
    let got = String::from_utf8_lossy(&got);
    assert!(
        !got.contains(" 200 "),
        "the incomplete request was answered 200: {got:?}"
    );

    let r = client::get(&d.url("/healthz"), &[]).await;
    assert_eq!(r.status, 200, "healthz after slowloris: {}", r.text());
    let r = client::post(
        &d.url(&model_path(FLASH, "generateContent")),
        &user_auth(),
        GENERATE_BODY,
    )
    .await;
    assert_eq!(
        r.status,
        200,
        "a normal request after slowloris: {}",
        r.text()
    );
}

// 2a. A declared 100 MB body is refused at once and not buffered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_huge_body_gets_413_at_once_without_being_buffered() {
    let up = Upstream::start(ok_upstream()).await;
    let d = Daemon::start(&Config::new(&up)).await;
    let rss_before = vm_rss_kib(d.pid());

    let path = model_path(FLASH, "generateContent");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nx-goog-api-key: {USER_KEY}\r\n\
         content-type: application/json\r\nContent-Length: 104857600\r\n\r\n",
        d.addr
    );
    let mut s = TcpStream::connect(d.addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write head");
    let filler = vec![b' '; 4096];
    s.write_all(&filler).await.expect("write a few KB");
    let sent_at = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), read_response(&mut s))
        .await
        .expect("no 413 within 5 s of sending a few KB of a 100 MB body");
    let waited = sent_at.elapsed();
    assert_eq!(r.status, 413, "status; body: {}", r.text());
    assert!(waited < Duration::from_secs(3), "413 took {waited:?}");
    let v: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("413 body is not JSON ({e}): {}", r.text()));
    assert_google_error_value(&v, Some(413), None);

    // Keep pushing for a while: whatever the daemon still accepts must not be kept.
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(500), s.write_all(&chunk)).await {
            Ok(Ok(())) => {}
            _ => break,
        }
    }
    drop(s);
    let r = client::get(&d.url("/healthz"), &[]).await;
    assert_eq!(r.status, 200);
    let rss_after = vm_rss_kib(d.pid());
    let grew_mib = rss_after.saturating_sub(rss_before) / 1024;
    assert!(
        grew_mib < 30,
        "RSS grew by {grew_mib} MiB ({rss_before} KiB → {rss_after} KiB) for a refused 100 MB body"
    );
    assert!(
        up.requests_to(":generateContent").is_empty(),
        "the refused request reached the upstream"
    );
}

// 2b. A chunked body is cut off at max_body_bytes; a small chunked body still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_max_body_bytes_gets_413() {
    let up = Upstream::start(ok_upstream()).await;
    let d = Daemon::start(&Config::new(&up).extra("[server]\nmax_body_bytes = 1024")).await;
    let path = model_path(FLASH, "generateContent");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nx-goog-api-key: {USER_KEY}\r\n\
         content-type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        d.addr
    );

    // 4 KiB in eight 512-byte chunks: a JSON string padded with spaces.
    let mut req = head.clone().into_bytes();
    for _ in 0..8 {
        req.extend_from_slice(b"200\r\n");
        req.extend_from_slice(&[b' '; 512]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = raw(d.addr, &req).await;
    assert_eq!(r.status, 413, "status; body: {}", r.text());
    let v: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("413 body is not JSON ({e}): {}", r.text()));
    assert_google_error_value(&v, Some(413), None);
    assert!(up.requests_to(":generateContent").is_empty());

    let mut req = head.into_bytes();
    req.extend_from_slice(
        format!("{:x}\r\n{GENERATE_BODY}\r\n0\r\n\r\n", GENERATE_BODY.len()).as_bytes(),
    );
    let r = raw(d.addr, &req).await;
    assert_eq!(r.status, 200, "small chunked body: {}", r.text());
}

// 3a. Silent connections (connect, send nothing) are cut off by header_read_timeout, so
// they cannot hold every max_connections slot; queued requests complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_cannot_hold_all_max_connections_slots() {
    let up = Upstream::start(ok_upstream()).await;
    let mut d = Daemon::start(
        &Config::new(&up).extra("[server]\nmax_connections = 4\nheader_read_timeout = \"1s\""),
    )
    .await;

    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(d.addr).await.expect("connect idle"));
    }
    let mut tasks = Vec::new();
    for i in 0..4 {
        let url = if i == 0 {
            d.url("/healthz")
        } else {
            d.url(&model_path(FLASH, "generateContent"))
        };
        tasks.push(tokio::spawn(async move {
            if url.ends_with("/healthz") {
                client::get(&url, &[]).await
            } else {
                client::post(&url, &user_auth(), GENERATE_BODY).await
            }
        }));
    }
    for t in tasks {
        let r = t.await.expect("request task panicked (no answer in time?)");
        assert_eq!(r.status, 200, "queued request: {}", r.text());
    }
    assert!(d.is_running(), "daemon exited:\n{}", d.logs().join("\n"));

    // The idle connections were closed by the daemon (header_read_timeout), not left hanging.
    let deadline = tokio::time::Instant::now() + client::TIMEOUT;
    for mut s in idle {
        let mut b = [0u8; 64];
        let r = tokio::time::timeout_at(deadline, s.read(&mut b)).await;
        assert!(
            matches!(r, Ok(Ok(_)) | Ok(Err(_))),
            "an idle connection was never closed"
        );
    }
    let r = client::get(&d.url("/healthz"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(d.is_running());
}

// 3b. The same queue drains once the idle clients give up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_complete_once_idle_connections_close() {
    let up = Upstream::start(ok_upstream()).await;
    let mut d = Daemon::start(&Config::new(&up).extra("[server]\nmax_connections = 4")).await;

    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(d.addr).await.expect("connect idle"));
    }
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let url = d.url(&model_path(FLASH, "generateContent"));
        tasks.push(tokio::spawn(async move {
            client::post(&url, &user_auth(), GENERATE_BODY).await
        }));
    }
    let health = d.url("/healthz");
    tasks.push(tokio::spawn(async move { client::get(&health, &[]).await }));
    assert!(d.is_running(), "daemon exited with 24 connections open");
    drop(idle);
    for t in tasks {
        let r = t.await.expect("request task panicked (no answer in time?)");
        assert_eq!(r.status, 200, "queued request: {}", r.text());
    }
    assert!(d.is_running(), "daemon exited:\n{}", d.logs().join("\n"));
    let r = client::get(&d.url("/healthz"), &[]).await;
    assert_eq!(r.status, 200);
}

// 4. No path reaches the file system; the page has its security headers and an ETag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_paths_never_serve_files_and_the_page_is_cached_by_etag() {
    let up = Upstream::start(ok_upstream()).await;
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

// 5. SIGTERM: stop accepting, let the running stream finish, exit 0.
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

// 6. admin_listen: admin routes only there, proxy routes only on the main address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listen_separates_admin_and_proxy_routes() {
    let up = Upstream::start(ok_upstream()).await;
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

// 7. Secrets never reach logs or responses they do not belong in.
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

// 8a. check-config accepts the example and names an unknown key with its line.
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

// 8b. check-config never prints the admin password.
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

// 8c. A world-readable config holding secrets gets a chmod 600 warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn world_readable_config_with_secrets_is_warned_about() {
    let up = Upstream::start(ok_upstream()).await;
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

// 9. The shipped systemd unit verifies.
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

// 10. SIGHUP re-reads the log level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_log_level() {
    let up = Upstream::start(ok_upstream()).await;
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

/// Open client connections per serving thread, from `/metrics` (a connection of its own,
/// closed after the answer).
async fn open_connections(addr: SocketAddr) -> Vec<u64> {
    let (name, value) = metrics_auth();
    let req = format!(
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n{name}: {value}\r\nConnection: close\r\n\r\n"
    );
    let r = raw(addr, req.as_bytes()).await;
    assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
    r.text()
        .lines()
        .filter(|l| l.starts_with("gemini_balance_open_connections{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().expect("a count"))
        .collect()
}

/// Polls `/metrics` until `done` holds for the per-thread counts (connections closed by a
/// client are counted out once the daemon sees them end).
async fn open_connections_until(addr: SocketAddr, done: impl Fn(&[u64]) -> bool) -> Vec<u64> {
    let deadline = Instant::now() + client::TIMEOUT;
    loop {
        let open = open_connections(addr).await;
        if done(&open) {
            return open;
        }
        assert!(
            Instant::now() < deadline,
            "open connections per thread never settled: {open:?}"
        );
        tokio::task::yield_now().await;
    }
}

// 11. Keep-alive connections are spread evenly over the serving threads, however the
// accepts fall, and closed ones are counted out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_are_spread_evenly_over_serving_threads() {
    let up = Upstream::start(ok_upstream()).await;
    let d = Daemon::start(&Config::new(&up).extra("[server]\nworkers = 3")).await;
    let mut held = Vec::new();
    for _ in 0..12 {
        let mut s = TcpStream::connect(d.addr).await.expect("connect");
        let req = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", d.addr);
        s.write_all(req.as_bytes()).await.expect("write");
        assert_eq!(read_response(&mut s).await.status, 200);
        held.push(s);
    }
    // The twelve held connections plus the one asking (start-up's own are gone once the
    // sum is 13).
    let open = open_connections_until(d.addr, |o| o.iter().sum::<u64>() == 13).await;
    assert_eq!(open.len(), 3, "one count per serving thread: {open:?}");
    let (min, max) = (open.iter().min().unwrap(), open.iter().max().unwrap());
    assert!(max - min <= 1, "connections not spread evenly: {open:?}");

    // Every held connection still works where it was placed.
    for s in &mut held {
        let req = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", d.addr);
        s.write_all(req.as_bytes()).await.expect("write");
        assert_eq!(read_response(s).await.status, 200);
    }
    drop(held);
    open_connections_until(d.addr, |o| o.iter().sum::<u64>() == 1).await;
}
