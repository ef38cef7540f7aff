//! The fast path over real loopback sockets, talked to byte by byte.

use super::*;
use crate::body::Body as RespBody;
use http::HeaderValue;
use http_body_util::BodyExt;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// What the test handler saw and can be made to do.
#[derive(Default)]
struct Seen {
    requests: Vec<(String, String, Vec<u8>)>,
    /// Frames for `/stream` answers.
    stream: Option<mpsc::Receiver<Bytes>>,
    /// Fires when a `/wait` handler is dropped.
    dropped: Option<oneshot::Sender<()>>,
}

struct DropSignal(Option<oneshot::Sender<()>>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

async fn answer(seen: Arc<Mutex<Seen>>, req: Request<ReqBody>) -> Response<RespBody> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes().to_vec();
    let path = parts.uri.path().to_owned();
    let key = parts
        .headers
        .get("x-key")
        .map_or("", |v| v.to_str().unwrap())
        .to_owned();
    seen.lock()
        .unwrap()
        .requests
        .push((path.clone(), key, body.clone()));
    match path.as_str() {
        "/wait" => {
            let _signal = DropSignal(seen.lock().unwrap().dropped.take());
            std::future::pending().await
        }
        "/stream" => {
            let rx = seen.lock().unwrap().stream.take().unwrap();
            Response::new(RespBody::Events(rx))
        }
        "/empty" => {
            let mut resp = Response::new(RespBody::empty());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            resp
        }
        "/big" => Response::new(RespBody::full(vec![b'x'; COPY_MAX * 3])),
        _ => {
            let mut resp = Response::new(RespBody::full(body));
            resp.headers_mut()
                .insert("x-path", HeaderValue::from_str(&path).unwrap());
            resp
        }
    }
}

struct Server {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Seen>>,
    shutdown: CancellationToken,
    ended: tokio::task::JoinHandle<Ended>,
}

async fn server(header_timeout: Duration) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shutdown = CancellationToken::new();
    let (s, stop) = (seen.clone(), shutdown.clone());
    let ended = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        serve(tcp, header_timeout, &stop, |req| answer(s.clone(), req)).await
    });
    Server {
        addr,
        seen,
        shutdown,
        ended,
    }
}

/// One answer: status, lower-cased head text, body (Content-Length or chunked).
async fn read_answer(c: &mut TcpStream, pending: &mut Vec<u8>) -> (u16, String, Vec<u8>) {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(n) = resp.parse(pending).unwrap() {
            let code = resp.code.unwrap();
            let head = String::from_utf8(pending[..n].to_vec())
                .unwrap()
                .to_lowercase();
            let length = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| {
                    std::str::from_utf8(h.value)
                        .unwrap()
                        .parse::<usize>()
                        .unwrap()
                });
            pending.drain(..n);
            let body = match length {
                Some(len) => {
                    fill(c, pending, len).await;
                    pending.drain(..len).collect()
                }
                None if head.contains("transfer-encoding: chunked") => {
                    let mut body = Vec::new();
                    loop {
                        let line = read_line(c, pending).await;
                        let len = usize::from_str_radix(&line, 16).unwrap();
                        fill(c, pending, len + 2).await;
                        body.extend(pending.drain(..len));
                        pending.drain(..2);
                        if len == 0 {
                            break body;
                        }
                    }
                }
                None => Vec::new(),
            };
            return (code, head, body);
        }
        read_some(c, pending).await;
    }
}

async fn read_some(c: &mut TcpStream, pending: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    let n = c.read(&mut chunk).await.unwrap();
    assert!(n > 0, "connection closed early");
    pending.extend_from_slice(&chunk[..n]);
}

async fn fill(c: &mut TcpStream, pending: &mut Vec<u8>, len: usize) {
    while pending.len() < len {
        read_some(c, pending).await;
    }
}

async fn read_line(c: &mut TcpStream, pending: &mut Vec<u8>) -> String {
    loop {
        if let Some(at) = pending.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8(pending[..at].to_vec()).unwrap();
            pending.drain(..at + 2);
            return line;
        }
        read_some(c, pending).await;
    }
}

/// Reads to the end of the stream: true if the server closed the connection (false, not a
/// hang, when it keeps it open).
async fn closed(c: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(TIMEOUT * 2, c.read_to_end(&mut rest)).await,
        Ok(Ok(_))
    )
}

/// A server answering `request` (a `/stream` request) with the frames sent on the
/// returned sender, and the client connection that sent it.
async fn streaming(request: &[u8]) -> (Server, mpsc::Sender<Bytes>, TcpStream) {
    let s = server(TIMEOUT).await;
    let (tx, rx) = mpsc::channel(4);
    s.seen.lock().unwrap().stream = Some(rx);
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(request).await.unwrap();
    (s, tx, c)
}

const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let s = server(TIMEOUT).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let two = "POST /a HTTP/1.1\r\nHost: x\r\nX-Key: one\r\nContent-Length: 5\r\n\r\nhello\
               GET /b HTTP/1.1\r\nHost: x\r\nX-Key: two\r\n\r\n";
    c.write_all(two.as_bytes()).await.unwrap();
    let mut pending = Vec::new();
    let (code, head, body) = read_answer(&mut c, &mut pending).await;
    assert_eq!((code, body.as_slice()), (200, &b"hello"[..]));
    assert!(head.contains("x-path: /a\r\n") && head.contains("content-length: 5\r\n"));
    assert!(head.contains("\r\ndate: "), "{head}");
    let (code, head, body) = read_answer(&mut c, &mut pending).await;
    assert_eq!((code, body.len()), (200, 0));
    assert!(head.contains("x-path: /b\r\n") && head.contains("content-length: 0\r\n"));
    // Still open: a third request on the same connection.
    c.write_all(b"DELETE /c HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (code, head, _) = read_answer(&mut c, &mut pending).await;
    assert!(code == 200 && head.contains("x-path: /c\r\n"));
    let seen = &s.seen.lock().unwrap().requests;
    let keys: Vec<&str> = seen.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(keys, ["one", "two", ""]);
}

#[tokio::test]
async fn a_head_and_body_in_pieces_make_one_request() {
    let s = server(TIMEOUT).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let body = vec![b'b'; 20_000];
    let head = format!(
        "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    for piece in [
        &head.as_bytes()[..7],
        &head.as_bytes()[7..],
        &body[..9_000],
        &body[9_000..],
    ] {
        c.write_all(piece).await.unwrap();
        c.flush().await.unwrap();
        tokio::task::yield_now().await;
    }
    let (code, _, echoed) = read_answer(&mut c, &mut Vec::new()).await;
    assert_eq!((code, echoed), (200, body));
}

#[tokio::test]
async fn what_the_fast_path_does_not_take_goes_to_hyper_with_every_byte() {
    let cases: [&[u8]; 4] = [
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
    ];
    for bytes in cases {
        let s = server(TIMEOUT).await;
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(bytes).await.unwrap();
        let Ended::Hyper(mut io) = s.ended.await.unwrap() else {
            panic!(
                "{:?} stayed on the fast path",
                String::from_utf8_lossy(bytes)
            );
        };
        let mut replayed = vec![0u8; bytes.len()];
        io.read_exact(&mut replayed).await.unwrap();
        assert_eq!(replayed, bytes);
        assert!(s.seen.lock().unwrap().requests.is_empty());
    }
    // After a request the fast path served, too: the second one is handed over whole.
    let s = server(TIMEOUT).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let second =
        b"POST /b HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
    c.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    read_answer(&mut c, &mut Vec::new()).await;
    c.write_all(second).await.unwrap();
    let Ended::Hyper(mut io) = s.ended.await.unwrap() else {
        panic!("Expect stayed on the fast path");
    };
    let mut replayed = vec![0u8; second.len()];
    io.read_exact(&mut replayed).await.unwrap();
    assert_eq!(&replayed, second);
}

#[tokio::test]
async fn a_body_too_big_to_hold_goes_to_hyper() {
    let s = server(TIMEOUT).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let head = format!("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: {BUF_MAX}\r\n\r\n");
    c.write_all(head.as_bytes()).await.unwrap();
    assert!(matches!(s.ended.await.unwrap(), Ended::Hyper(_)));
}

#[tokio::test]
async fn a_client_that_hangs_up_cancels_its_request() {
    let s = server(TIMEOUT).await;
    let (tx, rx) = oneshot::channel();
    s.seen.lock().unwrap().dropped = Some(tx);
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Pipelined bytes while it waits are not a hang-up.
    c.write_all(b"GET /next HTTP/1.1\r\n").await.unwrap();
    drop(c);
    tokio::time::timeout(TIMEOUT, rx)
        .await
        .expect("the waiting handler is dropped")
        .unwrap();
    assert!(matches!(s.ended.await.unwrap(), Ended::Closed));
}

#[tokio::test]
async fn streamed_answers_are_chunked_frame_by_frame_and_end_when_the_client_goes() {
    let (s, tx, mut c) = streaming(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n").await;
    tx.send(Bytes::from_static(b"data: 1\r\n\r\n"))
        .await
        .unwrap();
    let mut pending = Vec::new();
    let head = loop {
        read_some(&mut c, &mut pending).await;
        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break String::from_utf8(pending.drain(..at + 4).collect()).unwrap();
        }
    };
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("transfer-encoding: chunked"));
    assert_eq!(read_line(&mut c, &mut pending).await, "b");
    assert_eq!(read_line(&mut c, &mut pending).await, "data: 1");
    assert_eq!(read_line(&mut c, &mut pending).await, "");
    assert_eq!(read_line(&mut c, &mut pending).await, "");
    // The next frame comes when it is sent, not when the stream ends.
    tx.send(Bytes::from_static(b"two")).await.unwrap();
    assert_eq!(read_line(&mut c, &mut pending).await, "3");
    assert_eq!(read_line(&mut c, &mut pending).await, "two");
    drop(c);
    // The answer (and with it the receiver) is dropped.
    tokio::time::timeout(TIMEOUT, tx.closed())
        .await
        .expect("the stream is dropped when the client goes");
    assert!(matches!(s.ended.await.unwrap(), Ended::Closed));
}

#[tokio::test]
async fn a_finished_stream_ends_with_the_last_chunk_and_the_connection_is_kept() {
    let (_s, tx, mut c) = streaming(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n").await;
    tx.send(Bytes::from_static(b"a")).await.unwrap();
    tx.send(Bytes::from_static(b"bc")).await.unwrap();
    drop(tx);
    let mut pending = Vec::new();
    let (code, _, body) = read_answer(&mut c, &mut pending).await;
    assert_eq!((code, body.as_slice()), (200, &b"abc"[..]));
    c.write_all(b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (code, head, _) = read_answer(&mut c, &mut pending).await;
    assert_eq!(code, 204);
    assert!(!head.contains("content-length") && !head.contains("transfer-encoding"));
    c.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (code, _, body) = read_answer(&mut c, &mut pending).await;
    assert_eq!((code, body.len()), (200, COPY_MAX * 3));
}

#[tokio::test]
async fn a_long_stream_of_ready_frames_arrives_whole_and_in_order() {
    let (_s, tx, mut c) = streaming(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let frames: Vec<Bytes> = (0..200u8).map(|i| Bytes::from(vec![i; 1000])).collect();
    let sent = frames.concat();
    tokio::spawn(async move {
        for f in frames {
            tx.send(f).await.unwrap();
        }
    });
    let (code, _, body) = read_answer(&mut c, &mut Vec::new()).await;
    assert_eq!(code, 200);
    assert!(body == sent, "{} bytes of {}", body.len(), sent.len());
}

#[tokio::test]
async fn connection_close_is_honoured_and_said() {
    let s = server(TIMEOUT).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (code, head, _) = read_answer(&mut c, &mut Vec::new()).await;
    assert_eq!(code, 200);
    assert!(head.contains("connection: close\r\n"));
    assert!(closed(&mut c).await);
    assert!(matches!(s.ended.await.unwrap(), Ended::Closed));
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_says_close_on_the_last_answer() {
    let s = server(TIMEOUT).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (_, head, _) = read_answer(&mut c, &mut Vec::new()).await;
    assert!(!head.contains("connection: close"));
    s.shutdown.cancel();
    assert!(closed(&mut c).await);
    assert!(matches!(s.ended.await.unwrap(), Ended::Closed));

    let request = b"POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    let (s, tx, mut c) = streaming(request).await;
    tx.send(Bytes::from_static(b"x")).await.unwrap();
    let mut pending = Vec::new();
    read_some(&mut c, &mut pending).await;
    s.shutdown.cancel();
    tx.send(Bytes::from_static(b"y")).await.unwrap();
    drop(tx);
    // The stream in flight finishes; the connection closes after it.
    let (code, _, body) = read_answer(&mut c, &mut pending).await;
    assert_eq!((code, body.as_slice()), (200, &b"xy"[..]));
    assert!(closed(&mut c).await);
}

#[tokio::test(start_paused = true)]
async fn the_head_must_arrive_within_the_timeout_counted_from_when_waiting_began() {
    let s = server(TIMEOUT).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let mut pending = Vec::new();
    // Requests 6 s apart keep the connection: the deadline moves with each one.
    for _ in 0..3 {
        c.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_answer(&mut c, &mut pending).await.0, 200);
        tokio::time::advance(Duration::from_secs(6)).await;
    }
    // A head that stops half-way is cut off when the timeout is over.
    c.write_all(b"GET /a HTTP/1.1\r\nHo").await.unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    let before = Instant::now();
    assert!(closed(&mut c).await);
    assert!(before.elapsed() < Duration::from_secs(1), "closed late");
    assert_eq!(s.seen.lock().unwrap().requests.len(), 3);
    assert!(matches!(s.ended.await.unwrap(), Ended::Closed));
}
