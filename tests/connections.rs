//! Connection limits, black-box, with sockets written byte for byte: a request body that
//! stops arriving, an HTTP/2 connection that sends its preface and nothing more, one left
//! idle after its request and one whose peer never answers pings are closed; one address
//! holding its share of connections leaves room for the others; an HTTP/1.1 request
//! without exactly one `Host` is refused.

mod common;

use common::client::TIMEOUT;
use common::raw::{raw, read_response};
use common::{Config, Daemon, FLASH, USER_KEY, model_path};
use std::net::SocketAddr;
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
