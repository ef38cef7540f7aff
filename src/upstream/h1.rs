//! HTTP/1.1 to the upstream, driven inside the request's own task.
//!
//! hyper's client connection runs as a task of its own: each request crosses to it over a
//! channel, the answer comes back over another, and a chunked body crosses one chunk per
//! turn of that task. This client does the same work where the request is: the head is
//! written in one call, the answer head is parsed with httparse, and the body is decoded
//! from the connection's buffer as the relay asks for it. The connection goes back to its
//! pool when the body has been read to its end (never halfway), and only when the answer
//! allowed keep-alive.
//!
//! Why not hyper here: measured with `bench/instructions.sh`, the hand-offs cost 10 % of
//! the daemon's instructions per generateContent and a third per 10-event SSE answer
//! (hyper's byte-at-a-time chunked decoder included); parsing stays with httparse, the
//! crate hyper itself parses with. hyper still serves clients and speaks HTTP/2, which is
//! what Google offers.
//!
//! The answer is framed as RFC 9112 says: no body for 1xx (skipped), 204 and 304;
//! `Transfer-Encoding` ending in `chunked` wins over `Content-Length` (and then the
//! connection is not reused); conflicting lengths are an error; without either, the body
//! runs to the end of the connection.

use super::pool::{Home, Stream};
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

/// The largest answer head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most headers in an answer head.
const MAX_HEADERS: usize = 128;
/// Read size, and the most a buffer keeps between reads.
const READ_SIZE: usize = 8 * 1024;
/// Bodies up to this size go out in the same write as the head.
const COPY_BODY: usize = 16 * 1024;
/// The longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 4 * 1024;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One HTTP/1.1 connection with what has been read from it and not used yet.
pub struct Conn {
    /// Boxed: a TLS stream is over a kilobyte, and a `Conn` moves with every request.
    io: Box<TokioIo<Stream>>,
    buf: BytesMut,
}

/// Why a request failed; `retry` when it failed on a kept connection before any of the
/// answer arrived (the upstream had closed it): safe to send again on a new one.
pub struct Failed {
    pub error: BoxError,
    pub retry: bool,
}

impl Conn {
    pub fn new(io: Stream) -> Self {
        Self {
            io: Box::new(TokioIo::new(io)),
            buf: BytesMut::new(),
        }
    }

    /// Closed by the upstream, or holding bytes nobody asked for: not to be used again.
    /// Looks without waiting (a read only when the socket is known to be readable).
    pub fn is_stale(&mut self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        !matches!(
            Pin::new(&mut *self.io).poll_read(&mut cx, &mut probe),
            Poll::Pending
        )
    }

    /// Sends `req` (origin-form URI, `Host` already set) and reads the answer head.
    /// `reused`: the connection served a request before (see [`Failed::retry`]).
    pub async fn send(
        mut self,
        req: &Request<Full<Bytes>>,
        reused: bool,
        home: Home,
    ) -> Result<Response<Body>, Failed> {
        let body = full_bytes(req.body().clone());
        let mut head = Vec::with_capacity(256 + body.len().min(COPY_BODY));
        encode_head(
            &mut head,
            req.method(),
            req.uri(),
            req.headers(),
            body.len(),
        );
        let written = async {
            if body.len() <= COPY_BODY {
                head.extend_from_slice(&body);
                self.io.write_all(&head).await?;
            } else {
                self.io.write_all(&head).await?;
                self.io.write_all(&body).await?;
            }
            self.io.flush().await
        }
        .await;
        if let Err(e) = written {
            return Err(Failed {
                error: Box::new(e),
                retry: reused,
            });
        }
        let no_body = req.method() == Method::HEAD;
        loop {
            match self.parse_head(no_body) {
                Ok(Some(Head::Final(resp, framing, keep_alive))) => {
                    let mut body = Body {
                        conn: Some(self),
                        framing,
                        keep_alive,
                        home: Some(home),
                    };
                    body.release_if_done();
                    return Ok(resp.map(|()| body));
                }
                Ok(Some(Head::Interim)) => continue,
                Ok(None) => {}
                Err(error) => {
                    return Err(Failed {
                        error,
                        retry: false,
                    });
                }
            }
            let got_any = !self.buf.is_empty();
            match self.read_more().await {
                Ok(0) => {
                    return Err(Failed {
                        error: "the upstream closed the connection before answering".into(),
                        retry: reused && !got_any,
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    let reset = matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                    );
                    return Err(Failed {
                        error: Box::new(e),
                        retry: reused && !got_any && reset,
                    });
                }
            }
        }
    }

    async fn read_more(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_read_more(cx)).await
    }

    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(READ_SIZE);
        tokio_util::io::poll_read_buf(Pin::new(&mut *self.io), cx, &mut self.buf)
    }

    /// The answer head when the buffer holds all of it.
    fn parse_head(&mut self, no_body: bool) -> Result<Option<Head>, BoxError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut slots);
        let len = match parsed.parse(&self.buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if self.buf.len() > MAX_HEAD => {
                return Err("the upstream's answer head is too large".into());
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(format!("the upstream's answer head is malformed ({e})").into()),
        };
        let code = parsed.code.unwrap_or(0);
        let status = StatusCode::from_u16(code)
            .map_err(|_| format!("the upstream answered with status {code}"))?;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err("the upstream switched protocols".into());
            }
            self.buf.advance(len);
            return Ok(Some(Head::Interim));
        }
        let version = if parsed.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        // Names and values are slices of the head's bytes (no copy each).
        let base = self.buf.as_ptr() as usize;
        let spans: Vec<(usize, usize, usize, usize)> = parsed
            .headers
            .iter()
            .map(|h| {
                let name = h.name.as_ptr() as usize - base;
                let value = h.value.as_ptr() as usize - base;
                (name, h.name.len(), value, h.value.len())
            })
            .collect();
        let head = self.buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(spans.len());
        for (name, name_len, value, value_len) in spans {
            let name = HeaderName::from_bytes(&head[name..name + name_len])
                .map_err(|_| "the upstream sent an invalid header name")?;
            let value = HeaderValue::from_maybe_shared(head.slice(value..value + value_len))
                .map_err(|_| "the upstream sent an invalid header value")?;
            headers.append(name, value);
        }
        let (framing, reusable) = framing(status, &headers, no_body)?;
        let keep_alive = reusable && version == Version::HTTP_11 && !says_close(&headers);
        let mut resp = Response::new(());
        *resp.status_mut() = status;
        *resp.version_mut() = version;
        *resp.headers_mut() = headers;
        Ok(Some(Head::Final(resp, framing, keep_alive)))
    }
}

enum Head {
    Final(Response<()>, Framing, bool),
    Interim,
}

/// How the answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    Close,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data: this much left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailers,
}

/// The framing of an answer, and whether its connection may be reused after it.
fn framing(
    status: StatusCode,
    headers: &HeaderMap,
    no_body: bool,
) -> Result<(Framing, bool), BoxError> {
    if no_body || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Done, true));
    }
    let has_length = headers.contains_key(http::header::CONTENT_LENGTH);
    if let Some(last) = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .next_back()
    {
        let last = last.to_str().unwrap_or("");
        let chunked = last
            .rsplit(',')
            .next()
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        // With a length as well, the sender is confused or lying: read the chunks, and
        // do not trust what may follow on this connection.
        return Ok(if chunked {
            (Framing::Chunked(Chunk::Size), !has_length)
        } else {
            (Framing::Close, false)
        });
    }
    let mut length: Option<u64> = None;
    for v in headers.get_all(http::header::CONTENT_LENGTH) {
        for part in v.to_str().unwrap_or("x").split(',') {
            let n: u64 = part
                .trim()
                .parse()
                .map_err(|_| "the upstream sent an invalid Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("the upstream sent conflicting Content-Length values".into());
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => (Framing::Done, true),
        Some(n) => (Framing::Length(n), true),
        None => (Framing::Close, false),
    })
}

fn says_close(headers: &HeaderMap) -> bool {
    headers.get_all(http::header::CONNECTION).iter().any(|v| {
        v.to_str()
            .unwrap_or("")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("close"))
    })
}

fn full_bytes(body: Full<Bytes>) -> Bytes {
    let mut body = std::pin::pin!(body);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match body.as_mut().poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

/// The request line and headers. `Content-Length` is written from the body, never
/// copied; framing and hop-by-hop headers of the client's are not forwarded.
fn encode_head(
    out: &mut Vec<u8>,
    method: &Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    len: usize,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if matches!(
            *name,
            http::header::CONTENT_LENGTH
                | http::header::TRANSFER_ENCODING
                | http::header::CONNECTION
                | http::header::TE
                | http::header::UPGRADE
        ) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let carries_body = len > 0 || matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    if carries_body {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(len.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// An answer's body, read from its connection as it is polled.
pub struct Body {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    home: Option<Home>,
}

impl Body {
    /// Once the body is complete, the connection goes home (when it may be reused).
    fn release_if_done(&mut self) {
        if self.framing != Framing::Done {
            return;
        }
        if let (Some(conn), Some(home)) = (self.conn.take(), self.home.take()) {
            if self.keep_alive && conn.buf.is_empty() {
                home.put_back(conn);
            }
        }
    }

    /// The next piece of body already in the buffer, if any.
    fn decode(&mut self) -> Result<Option<Bytes>, BoxError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        let buf = &mut conn.buf;
        loop {
            match self.framing {
                Framing::Done => return Ok(None),
                Framing::Close => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(buf.split().freeze()));
                }
                Framing::Length(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    let data = buf.split_to(n).freeze();
                    self.framing = match left - n as u64 {
                        0 => Framing::Done,
                        rest => Framing::Length(rest),
                    };
                    return Ok(Some(data));
                }
                Framing::Chunked(Chunk::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    let data = buf.split_to(n).freeze();
                    self.framing = Framing::Chunked(match left - n as u64 {
                        0 => Chunk::DataEnd,
                        rest => Chunk::Data(rest),
                    });
                    return Ok(Some(data));
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("the upstream sent a malformed chunk".into());
                    }
                    buf.advance(2);
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Size) => {
                    let Some(end) = line_end(buf)? else {
                        return Ok(None);
                    };
                    let line = &buf[..end];
                    let digits = line
                        .iter()
                        .position(|b| matches!(b, b';' | b' ' | b'\t'))
                        .map_or(line, |at| &line[..at]);
                    let size = parse_hex(digits)?;
                    buf.advance(end + 2);
                    self.framing = Framing::Chunked(if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    });
                }
                Framing::Chunked(Chunk::Trailers) => {
                    let Some(end) = line_end(buf)? else {
                        return Ok(None);
                    };
                    buf.advance(end + 2);
                    if end == 0 {
                        self.framing = Framing::Done;
                    }
                }
            }
        }
    }
}

/// Where the CRLF ending the line at the front of `buf` is.
fn line_end(buf: &[u8]) -> Result<Option<usize>, BoxError> {
    match memchr::memmem::find(buf, b"\r\n") {
        Some(at) if at <= MAX_CHUNK_LINE => Ok(Some(at)),
        Some(_) => Err("the upstream sent an overlong chunk line".into()),
        None if buf.len() > MAX_CHUNK_LINE => {
            Err("the upstream sent an overlong chunk line".into())
        }
        None => Ok(None),
    }
}

fn parse_hex(digits: &[u8]) -> Result<u64, BoxError> {
    if digits.is_empty() || digits.len() > 15 {
        return Err("the upstream sent an invalid chunk size".into());
    }
    let mut n: u64 = 0;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err("the upstream sent an invalid chunk size".into()),
        };
        n = n * 16 + u64::from(v);
    }
    Ok(n)
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            match this.decode() {
                Ok(Some(data)) => {
                    this.release_if_done();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(None) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            this.release_if_done();
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(conn.poll_read_more(cx)) {
                Ok(0) if this.framing == Framing::Close => {
                    this.framing = Framing::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(
                        "the upstream closed the connection in the middle of its answer".into(),
                    )));
                }
                Ok(_) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
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
    async fn exchange(
        answer: Vec<&'static [u8]>,
        close: bool,
    ) -> (u16, Result<String, String>, bool) {
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
}
