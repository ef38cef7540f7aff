//! The HTTP/1.1 wire, black-box, with requests written byte for byte: pipelined and
//! kept-alive requests through the daemon, framing an attacker could use to smuggle a
//! second request, and `HEAD`, HTTP/1.0, chunked and `Expect: 100-continue` uploads
//! answered with keep-alive still working.

mod common;

use common::raw::{RawResponse, read_next, read_response};
use common::{Config, Daemon, FLASH, GENERATE_BODY, Reply, USER_KEY, Upstream, model_path};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn generate_ok() -> impl Fn(&common::Recorded) -> Reply + Send + Sync + 'static {
    |r| {
        if r.path.ends_with("/models") {
            Reply::json(200, &serde_json::json!({"models": []}))
        } else {
            Reply::generate_ok("hello")
        }
    }
}

fn post_head(d: &Daemon, extra: &str) -> String {
    let path = model_path(FLASH, "generateContent");
    format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nx-goog-api-key: {USER_KEY}\r\n\
         content-type: application/json\r\n{extra}\r\n",
        d.addr
    )
}

fn chunked(body: &str) -> String {
    format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len())
}

/// True when the server closes the connection (reads to the end, nothing more arrives).
async fn closes(s: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(common::client::TIMEOUT, s.read_to_end(&mut rest)).await;
    matches!(read, Ok(Ok(_))) && rest.is_empty()
}

fn request_id(r: &RawResponse) -> String {
    r.header("x-request-id").expect("x-request-id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_and_the_connection_stays_open() {
    let up = Upstream::start(generate_ok()).await;
    let d = Daemon::start(&Config::new(&up)).await;
    let mut s = TcpStream::connect(d.addr).await.unwrap();
    let one = format!(
        "{}{GENERATE_BODY}",
        post_head(&d, &format!("content-length: {}\r\n", GENERATE_BODY.len()))
    );
    let health = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", d.addr);
    // Two requests and the start of a third in one write; the rest of it later.
    let all = format!("{one}{health}{one}");
    let (now, later) = all.split_at(one.len() + health.len() + 40);
    s.write_all(now.as_bytes()).await.unwrap();
    let mut pending = Vec::new();
    let first = read_next(&mut s, &mut pending).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert!(first.text().contains("hello"));
    let second = read_next(&mut s, &mut pending).await;
    assert_eq!(second.status, 200);
    assert!(second.text().contains("\"status\""), "{}", second.text());
    s.write_all(later.as_bytes()).await.unwrap();
    let third = read_next(&mut s, &mut pending).await;
    assert_eq!(third.status, 200, "{}", third.text());
    assert_ne!(request_id(&first), request_id(&third));
    assert_eq!(up.requests_to(":generateContent").len(), 2);
    assert!(pending.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_that_could_smuggle_a_request_is_refused_or_closes_the_connection() {
    let up = Upstream::start(generate_ok()).await;
    let d = Daemon::start(&Config::new(&up)).await;
    let smuggled =
        format!("GET /v1beta/models HTTP/1.1\r\nHost: x\r\nx-goog-api-key: {USER_KEY}\r\n\r\n");

    // Content-Length and Transfer-Encoding together: the chunked framing counts, and the
    // connection closes after the answer, so what follows is never read as a request.
    for both in [
        "content-length: 4\r\ntransfer-encoding: chunked\r\n",
        "transfer-encoding: chunked\r\ncontent-length: 4\r\n",
    ] {
        let mut s = TcpStream::connect(d.addr).await.unwrap();
        let req = format!(
            "{}{}{smuggled}",
            post_head(&d, both),
            chunked(GENERATE_BODY)
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let r = read_response(&mut s).await;
        assert_eq!(r.status, 200, "{both:?}: {}", r.text());
        assert!(closes(&mut s).await, "{both:?}: the connection stayed open");
    }

    // Lengths that disagree, a length that is not a number, an encoding that is not
    // chunked: 400, nothing forwarded, the connection closed.
    for bad in [
        "content-length: 4\r\ncontent-length: 5\r\n",
        "content-length: 4, 5\r\n",
        "content-length: -4\r\n",
        "content-length: 0x4\r\n",
        "transfer-encoding: gzip\r\n",
        "transfer-encoding: chunked, gzip\r\n",
    ] {
        let mut s = TcpStream::connect(d.addr).await.unwrap();
        let req = format!("{}{{}}\r\n{smuggled}", post_head(&d, bad));
        s.write_all(req.as_bytes()).await.unwrap();
        let r = read_response(&mut s).await;
        assert_eq!(r.status, 400, "{bad:?}: {}", r.text());
        assert!(closes(&mut s).await, "{bad:?}: the connection stayed open");
    }
    assert_eq!(up.requests_to(":generateContent").len(), 2);
    assert!(
        up.requests_to("/models").is_empty(),
        "a smuggled request was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_http10_and_chunked_or_expect_uploads_are_answered_and_keep_alive_still_works() {
    let up = Upstream::start(generate_ok()).await;
    let d = Daemon::start(&Config::new(&up)).await;
    let host = d.addr;

    // HEAD: GET's head, no body, on a connection that then carries a POST.
    let mut s = TcpStream::connect(d.addr).await.unwrap();
    let mut pending = Vec::new();
    s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let get = read_next(&mut s, &mut pending).await;
    s.write_all(format!("HEAD /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let length = format!("content-length: {}\r\n", get.body.len());
    assert!(head.contains(&length), "HEAD says GET's length: {head}");
    let upload = format!(
        "{}{}",
        post_head(&d, "transfer-encoding: chunked\r\n"),
        chunked(GENERATE_BODY)
    );
    s.write_all(upload.as_bytes()).await.unwrap();
    let r = read_next(&mut s, &mut pending).await;
    assert_eq!(r.status, 200, "chunked upload after HEAD: {}", r.text());

    // Expect: 100-continue gets the interim answer, then the real one.
    let mut s = TcpStream::connect(d.addr).await.unwrap();
    let expect = format!(
        "expect: 100-continue\r\ncontent-length: {}\r\n",
        GENERATE_BODY.len()
    );
    s.write_all(post_head(&d, &expect).as_bytes())
        .await
        .unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).await.unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(GENERATE_BODY.as_bytes()).await.unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // HTTP/1.0: answered, then closed.
    let mut s = TcpStream::connect(d.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").await.unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("\"status\""));
    assert_eq!(up.requests_to(":generateContent").len(), 2);
}
