//! Black-box tests of the way to Google: TLS with rustls, HTTP/2 where the
//! upstream offers it and HTTP/1.1 where it does not, no trust in certificates the roots
//! do not vouch for, the egress proxy, and kept connections the upstream dropped. The fake upstream serves TLS with a test certificate for
//! 127.0.0.1 (`tests/fixtures/tls`); `upstream.extra_ca_file` makes the daemon trust its CA.

mod common;

use std::sync::{Arc, Mutex};

use common::upstream::{chunk_with_finish, test_ca_path};
use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn generate(d: &Daemon) -> Response {
    client::post(
        &d.url(&model_path(FLASH, "generateContent")),
        &user_auth(),
        GENERATE_BODY,
    )
    .await
}

fn trusting(up: &Upstream) -> Config {
    let ca = serde_json::to_string(test_ca_path().to_str().unwrap()).unwrap();
    Config::new(up).upstream(&format!("extra_ca_file = {ca}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_offering_http2_is_spoken_to_over_http2() {
    let up = Upstream::start_tls(ok_or_stream, &["h2", "http/1.1"]).await;
    let d = Daemon::start(&trusting(&up)).await;

    let r = generate(&d).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), chunk_with_finish("hello", Some("STOP")));
    let url = d.url(&format!(
        "{}?alt=sse",
        model_path(FLASH, "streamGenerateContent")
    ));
    let r = client::post(&url, &user_auth(), GENERATE_BODY).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let texts: Vec<String> = sse_json_events(&r.body)
        .iter()
        .filter_map(|e| chunk_text(e).map(str::to_owned))
        .collect();
    assert_eq!(texts, ["one", "two"]);

    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    for rec in &seen {
        assert_eq!(
            rec.version,
            http::Version::HTTP_2,
            "{} {}",
            rec.method,
            rec.path
        );
        assert!(rec.key().is_some_and(|k| k.starts_with("AIzaFAKE")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_offering_only_http1_gets_http1_with_its_host() {
    let up = Upstream::start_tls(ok_or_stream, &["http/1.1"]).await;
    let d = Daemon::start(&trusting(&up)).await;
    for _ in 0..2 {
        let r = generate(&d).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    for rec in &seen {
        assert_eq!(rec.version, http::Version::HTTP_11);
        let hosts: Vec<_> = rec.headers.get_all("host").iter().collect();
        assert_eq!(hosts, [up.addr.to_string().as_str()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_the_roots_do_not_vouch_for_is_refused() {
    let up = Upstream::start_tls(ok_or_stream, &["h2", "http/1.1"]).await;
    let d = Daemon::start(&Config::new(&up)).await;
    let r = generate(&d).await;
    assert!(
        r.status >= 500,
        "an untrusted upstream answered: {}",
        r.text()
    );
    let v: Value = r.json();
    assert_google_error_value(&v, None, None);
    assert!(
        up.requests().is_empty(),
        "no request crossed the failed handshake"
    );
}

#[test]
fn check_config_names_an_unusable_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("ca.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n").unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let missing = dir.path().join("missing.pem");
    for (file, why) in [
        (&garbage, "not a PEM certificate file"),
        (&empty, "no certificate in it"),
        (&missing, "upstream.extra_ca_file"),
    ] {
        let config = dir.path().join("gemini-balance.toml");
        let ca = serde_json::to_string(file.to_str().unwrap()).unwrap();
        std::fs::write(&config, format!("[upstream]\nextra_ca_file = {ca}\n")).unwrap();
        let (code, text) = check_config(&config);
        assert_ne!(code, Some(0), "{file:?} accepted: {text}");
        assert!(text.contains("upstream.extra_ca_file"), "{text}");
        assert!(text.contains(why), "{why:?} missing from: {text}");
    }
}

/// A minimal HTTP CONNECT egress proxy on `127.0.0.1:0`: it notes each CONNECT target and
/// then copies bytes both ways.
async fn connect_proxy() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let mut words = head.split_whitespace();
                let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
                    let _ = client
                        .write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                        .await;
                    return;
                };
                log.lock().unwrap().push(target.to_owned());
                let Ok(mut upstream) = TcpStream::connect(target).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_through_the_egress_proxy_and_reuse_its_tunnels() {
    let up = Upstream::start_tls(ok_or_stream, &["h2", "http/1.1"]).await;
    let (proxy, seen) = connect_proxy().await;
    let cfg = trusting(&up).upstream(&format!("proxy = \"http://{proxy}\""));
    let d = Daemon::start(&cfg).await;
    for _ in 0..4 {
        let r = generate(&d).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(up.requests().len(), 4);
    let tunnels = seen.lock().unwrap().clone();
    assert!(!tunnels.is_empty(), "nothing went through the proxy");
    assert!(
        tunnels.iter().all(|t| *t == up.addr.to_string()),
        "tunnels to {tunnels:?}"
    );
    // One HTTP/2 connection per serving thread at most, not one per request.
    assert!(tunnels.len() < 4, "a tunnel per request: {tunnels:?}");
}

/// Each serving thread keeps its own HTTP/2 connection to the upstream: requests that
/// arrive on different threads do not share one, and requests on one thread do. Four
/// kept-alive client connections are spread over the two serving threads, and each
/// carries one request after the other; the egress proxy counts the upstream connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_serving_thread_keeps_its_own_http2_connection() {
    let up = Upstream::start_tls(ok_or_stream, &["h2", "http/1.1"]).await;
    let (proxy, seen) = connect_proxy().await;
    let cfg = trusting(&up)
        .upstream(&format!("proxy = \"http://{proxy}\""))
        .extra("[server]\nworkers = 2");
    let d = Daemon::start(&cfg).await;
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nx-goog-api-key: {USER_KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{GENERATE_BODY}",
        model_path(FLASH, "generateContent"),
        d.addr,
        GENERATE_BODY.len()
    );
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(d.addr).await.expect("connect");
        s.write_all(request.as_bytes()).await.expect("write");
        let r = common::raw::read_response(&mut s).await;
        assert_eq!(r.status, 200, "{}", r.text());
        held.push(s);
    }
    for s in &mut held {
        s.write_all(request.as_bytes()).await.expect("write");
        assert_eq!(common::raw::read_response(s).await.status, 200);
    }
    assert_eq!(up.requests().len(), 8);
    let tunnels = seen.lock().unwrap().len();
    assert_eq!(tunnels, 2, "one upstream connection per serving thread");
}

/// An upstream that answers one request per connection and then closes it, without
/// saying so (no `Connection: close`): the connection the daemon kept is gone when the
/// next request wants it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_drops_kept_connections_fails_no_request() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(Mutex::new(0usize));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            *count.lock().unwrap() += 1;
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    req.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&req).to_lowercase();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let len: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if req.len() >= end + 4 + len {
                        break;
                    }
                }
                let body = chunk_with_finish("hello", Some("STOP")).to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                // Closed here, as the task ends.
            });
        }
    });
    let d = Daemon::start(&Config::with_url(&format!("http://{addr}"))).await;
    for i in 0..5 {
        let r = generate(&d).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.json(), chunk_with_finish("hello", Some("STOP")));
    }
    assert!(
        *connections.lock().unwrap() >= 5,
        "a new connection per request"
    );
}
