use super::*;
use crate::upstream::pool::test_home;
use http_body_util::BodyExt;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// A connection to a scripted upstream that reads one request, answers `answer` in
/// the pieces given, then closes when `close`. Gives the request it read.
async fn scripted(
    answer: Vec<&'static [u8]>,
    close: bool,
) -> (Conn, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        while !request_complete(&req) {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client closed before sending its request");
            req.extend_from_slice(&buf[..n]);
        }
        for piece in answer {
            s.write_all(piece).await.unwrap();
            s.flush().await.unwrap();
        }
        if !close {
            // Hold the connection open until the client is done with it.
            let _ = s.read(&mut buf).await;
        }
        req
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    (Conn::new(MaybeHttpsStream::Http(TokioIo::new(tcp))), server)
}

use hyper_rustls::MaybeHttpsStream;

fn request_complete(req: &[u8]) -> bool {
    let text = String::from_utf8_lossy(req).to_lowercase();
    let Some(end) = text.find("\r\n\r\n") else {
        return false;
    };
    let len: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    req.len() >= end + 4 + len
}

fn post(body: &'static str) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(Bytes::from_static(body.as_bytes())));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = "/v1beta/models/m:generateContent?alt=sse".parse().unwrap();
    let h = req.headers_mut();
    h.insert(
        http::header::HOST,
        HeaderValue::from_static("upstream.test"),
    );
    h.insert("x-goog-api-key", HeaderValue::from_static("AIza-test"));
    h.insert(
        http::header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
    req
}

/// Status, body (or the body's error) and whether the connection went back.
async fn exchange(answer: Vec<&'static [u8]>, close: bool) -> (u16, Result<String, String>, bool) {
    let (conn, server) = scripted(answer, close).await;
    let (home, hosts) = test_home();
    let resp = match conn.send(&post("{}"), false, home).await {
        Ok(resp) => resp,
        Err(f) => return (0, Err(f.error.to_string()), false),
    };
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|c| String::from_utf8(c.to_bytes().to_vec()).unwrap())
        .map_err(|e| e.to_string());
    let kept = hosts.idle() == 1;
    drop(hosts);
    server.abort();
    (status, body, kept)
}

#[tokio::test]
async fn the_request_goes_out_in_origin_form_with_its_own_length() {
    let (conn, server) = scripted(vec![b"HTTP/1.1 204 No Content\r\n\r\n"], true).await;
    let (home, _hosts) = test_home();
    let resp = conn
        .send(&post("{\"a\":1}"), false, home)
        .await
        .ok()
        .unwrap();
    assert_eq!(resp.status(), 204);
    let req = String::from_utf8(server.await.unwrap()).unwrap();
    assert!(
        req.starts_with("POST /v1beta/models/m:generateContent?alt=sse HTTP/1.1\r\n"),
        "{req}"
    );
    assert!(req.contains("host: upstream.test\r\n"), "{req}");
    assert!(req.contains("x-goog-api-key: AIza-test\r\n"), "{req}");
    assert!(req.contains("content-length: 7\r\n"), "{req}");
    assert!(!req.contains("transfer-encoding"), "{req}");
    assert!(req.ends_with("\r\n\r\n{\"a\":1}"), "{req}");
}

#[tokio::test]
async fn a_body_of_known_length_in_pieces_and_the_connection_goes_back() {
    let got = exchange(
        vec![
            b"HTTP/1.1 200 OK\r\ncontent-",
            b"length: 11\r\ncontent-type: text/plain\r\n\r\nhello",
            b" world",
        ],
        false,
    )
    .await;
    assert_eq!(got, (200, Ok("hello world".into()), true));
}

#[tokio::test]
async fn chunked_bodies_with_extensions_and_trailers() {
    let got = exchange(
        vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;name=v\r\nhel",
            b"lo\r\n6\r\n world\r\nA\r\n, 10 bytes\r\n0\r\nx-trailer: 1\r\n\r\n",
        ],
        false,
    )
    .await;
    assert_eq!(got, (200, Ok("hello world, 10 bytes".into()), true));
}

#[tokio::test]
async fn without_a_length_the_body_runs_to_the_close_and_the_connection_is_dropped() {
    let got = exchange(vec![b"HTTP/1.1 200 OK\r\n\r\nall of ", b"it"], true).await;
    assert_eq!(got, (200, Ok("all of it".into()), false));
}

#[tokio::test]
async fn connection_close_http_1_0_and_double_framing_are_not_reused() {
    let close = exchange(
        vec![b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"],
        false,
    )
    .await;
    assert_eq!(close, (200, Ok("ok".into()), false));
    let old = exchange(
        vec![b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"],
        false,
    )
    .await;
    assert_eq!(old, (200, Ok("ok".into()), false));
    // Chunked wins over a length; the connection is not trusted after it.
    let both = exchange(
        vec![b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"],
        false,
    )
    .await;
    assert_eq!(both, (200, Ok("ok".into()), false));
}

#[tokio::test]
async fn interim_answers_are_skipped_and_empty_answers_have_no_body() {
    let got = exchange(
        vec![b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"],
        false,
    )
    .await;
    assert_eq!(got, (204, Ok(String::new()), true));
}

#[tokio::test]
async fn broken_answers_are_errors_not_bodies() {
    let (_, body, kept) = exchange(
        vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"],
        true,
    )
    .await;
    assert!(body.unwrap_err().contains("closed the connection"));
    assert!(!kept);
    let (_, body, _) = exchange(
        vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n"],
        false,
    )
    .await;
    assert!(body.unwrap_err().contains("chunk size"));
    let (status, head, _) = exchange(
        vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok"],
        false,
    )
    .await;
    assert_eq!(status, 0);
    assert!(head.unwrap_err().contains("conflicting Content-Length"));
    let (status, head, _) = exchange(vec![b"garbage\r\n\r\n"], false).await;
    assert_eq!(status, 0);
    assert!(head.unwrap_err().contains("malformed"));
    let (status, head, _) = exchange(vec![], true).await;
    assert_eq!(status, 0);
    assert!(head.unwrap_err().contains("before answering"));
}

#[tokio::test]
async fn a_connection_the_upstream_closed_is_stale() {
    let (mut conn, server) = scripted(vec![], true).await;
    assert!(!conn.is_stale(), "an open, quiet connection is good");
    // The scripted upstream closes once it has read a request.
    conn.io.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    server.await.unwrap();
    let mut waited = 0;
    while !conn.is_stale() {
        // Readiness arrives through the runtime's reactor: let it turn.
        tokio::task::yield_now().await;
        waited += 1;
        assert!(waited < 100_000, "the close was never seen");
    }
}

/// Whether a failed request may go again on a new connection.
async fn retry_after(answer: Vec<&'static [u8]>, reused: bool) -> bool {
    let (conn, server) = scripted(answer, true).await;
    let (home, _pool) = test_home();
    let failed = conn.send(&post("{}"), reused, home).await.err().unwrap();
    server.abort();
    failed.retry
}

#[tokio::test]
async fn only_a_kept_connection_closed_before_any_answer_is_tried_again() {
    assert!(retry_after(vec![], true).await, "closed unanswered, kept");
    assert!(!retry_after(vec![], false).await, "closed unanswered, new");
    assert!(
        !retry_after(vec![b"HTTP/1.1 100 Continue\r\n\r\n"], true).await,
        "an interim answer came: the upstream has the request"
    );
    assert!(
        !retry_after(vec![b"HTTP/1.1 200 OK\r\ncontent-le"], true).await,
        "half a head came"
    );
}
