//! Connection limits, black-box, with sockets written byte for byte: a client dribbling
//! its request head is cut off after `header_read_timeout`, a declared huge body is refused
//! before it is read and a chunked one at `max_body_bytes`, silent connections cannot hold
//! every `max_connections` slot and queued requests complete; a request body that stops
//! arriving, an HTTP/2 connection that sends its preface and nothing more, one left idle
//! after its request and one whose peer never answers pings are closed; one address
//! holding its share of connections leaves room for the others; keep-alive connections are
//! spread evenly over the serving threads; an HTTP/1.1 request without exactly one `Host`
//! is refused.

mod common;

use common::client::{self, TIMEOUT};
use common::raw::{raw, read_response};
use common::{
    Config, Daemon, FLASH, GENERATE_BODY, USER_KEY, Upstream, assert_google_error_value,
    metrics_auth, model_path, ok_all_routes, user_auth,
};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A daemon with `[server]` settings (raw TOML lines); no request here reaches Google.
async fn daemon(server: &str) -> Daemon {
    let cfg = Config::with_url("http://127.0.0.1:9").extra(&format!("[server]\n{server}"));
    Daemon::start(&cfg).await
}

/// Reads until the daemon closes the connection (a reset counts as closed) and answers
/// what arrived; panics if it is still open after `TIMEOUT`.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => panic!(
                "the connection is still open after {TIMEOUT:?}; it sent {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0) | Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A connection to `to` from the loopback address `from` (all of 127.0.0.0/8 is local).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_stops_arriving_is_closed_after_the_body_timeout() {
    let d = daemon("body_read_timeout = \"300ms\"").await;
    let login = "POST /api/login HTTP/1.1\r\nHost: gw\r\ncontent-type: application/json\r\n\
                 content-length: 100\r\n\r\n{";
    let path = model_path(FLASH, "generateContent");
    let generate = format!(
        "POST {path} HTTP/1.1\r\nHost: gw\r\nx-goog-api-key: {USER_KEY}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
    );
    for head in [login.to_owned(), generate] {
        let mut s = TcpStream::connect(d.addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let got = read_until_closed(&mut s).await;
        assert!(
            !got.starts_with(b"HTTP/1.1 2"),
            "a body never sent whole was accepted: {}",
            String::from_utf8_lossy(&got)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_preface_with_nothing_after_it_is_closed_after_the_handshake_timeout() {
    let d = daemon("handshake_timeout = \"300ms\"").await;
    let mut s = TcpStream::connect(d.addr).await.unwrap();
    s.write_all(PREFACE).await.unwrap();
    read_until_closed(&mut s).await;
    // A connection that sends nothing at all is closed too.
    let mut s = TcpStream::connect(d.addr).await.unwrap();
    assert!(read_until_closed(&mut s).await.is_empty());
}

/// The frame types of the HTTP/2 frames in `bytes` (whole frames only).
fn frame_types(bytes: &[u8]) -> Vec<(u8, u8)> {
    let mut types = Vec::new();
    let mut at = 0;
    while bytes.len() >= at + 9 {
        let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        types.push((bytes[at + 3], bytes[at + 4]));
        at += 9 + len;
    }
    types
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_peer_that_never_answers_a_ping_is_closed() {
    let d = daemon(
        "handshake_timeout = \"60s\"\nidle_timeout = \"60s\"\n\
         http2_keep_alive_interval = \"200ms\"\nhttp2_keep_alive_timeout = \"200ms\"",
    )
    .await;
    let mut s = TcpStream::connect(d.addr).await.unwrap();
    // The preface and an empty SETTINGS frame; then silence, pings included.
    s.write_all(&[PREFACE, &[0, 0, 0, 4, 0, 0, 0, 0, 0]].concat())
        .await
        .unwrap();
    let got = read_until_closed(&mut s).await;
    let types = frame_types(&got);
    assert!(
        types.contains(&(6, 0)),
        "no PING before the connection closed: {types:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_left_idle_is_closed_after_the_idle_timeout() {
    let d = daemon("idle_timeout = \"300ms\"").await;
    let tcp = TcpStream::connect(d.addr).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(tcp);
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get(d.url("/healthz"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);
    let ended = tokio::time::timeout(TIMEOUT, conn).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection is still open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holding_its_share_of_connections_leaves_healthz_to_the_others() {
    let d = daemon(
        "max_connections = 16\nmax_connections_per_ip = 4\n\
         header_read_timeout = \"60s\"\nhandshake_timeout = \"60s\"",
    )
    .await;
    // The crowd comes from 127.0.0.3: the harness's own probes use 127.0.0.1.
    let mut silent = Vec::new();
    for _ in 0..16 {
        silent.push(connect_from([127, 0, 0, 3], d.addr).await);
    }
    // Another address still gets in.
    let mut s = connect_from([127, 0, 0, 2], d.addr).await;
    let get = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", d.addr);
    s.write_all(get.as_bytes()).await.unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The crowded address does not: its next connection is closed unanswered.
    let mut s = connect_from([127, 0, 0, 3], d.addr).await;
    let _ = s.write_all(get.as_bytes()).await;
    assert!(read_until_closed(&mut s).await.is_empty());
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http11_request_without_exactly_one_host_is_refused() {
    let d = daemon("").await;
    let none = raw(
        d.addr,
        b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(none.status, 400, "{}", none.text());
    let two = "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n";
    let two = raw(d.addr, two.as_bytes()).await;
    assert_eq!(two.status, 400, "{}", two.text());
    let one = raw(
        d.addr,
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(one.status, 200, "{}", one.text());
    // HTTP/1.0 has no Host requirement.
    let old = raw(d.addr, b"GET /healthz HTTP/1.0\r\n\r\n").await;
    assert_eq!(old.status, 200, "{}", old.text());
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

// A client dribbling its request head is cut off after header_read_timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_off_after_header_read_timeout() {
    let up = Upstream::start(ok_all_routes()).await;
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

// A declared 100 MB body is refused at once and not buffered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_huge_body_gets_413_at_once_without_being_buffered() {
    let up = Upstream::start(ok_all_routes()).await;
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

// A chunked body is cut off at max_body_bytes; a small chunked body still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_max_body_bytes_gets_413() {
    let up = Upstream::start(ok_all_routes()).await;
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

// Silent connections (connect, send nothing) are cut off by header_read_timeout, so
// they cannot hold every max_connections slot; queued requests complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_cannot_hold_all_max_connections_slots() {
    let up = Upstream::start(ok_all_routes()).await;
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

// The same queue drains once the idle clients give up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_complete_once_idle_connections_close() {
    let up = Upstream::start(ok_all_routes()).await;
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

// Keep-alive connections are spread evenly over the serving threads, however the
// accepts fall, and closed ones are counted out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_are_spread_evenly_over_serving_threads() {
    let up = Upstream::start(ok_all_routes()).await;
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
