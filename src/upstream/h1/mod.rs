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

mod body;

pub use body::Body;
use body::{Framing, framing};

use super::pool::{Home, Stream};
use crate::body::BoxError;
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

/// The largest answer head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most headers in an answer head.
const MAX_HEADERS: usize = 128;
/// Read size, and the most a buffer keeps between reads.
const READ_SIZE: usize = 8 * 1024;
/// Bodies up to this size go out in the same write as the head.
const COPY_BODY: usize = 16 * 1024;

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
        // Whether any of the answer came (an interim head included): only a kept
        // connection that failed before that may be tried again.
        let mut received = false;
        loop {
            match self.parse_head(no_body) {
                Ok(Some(Head::Final(resp, framing, keep_alive))) => {
                    let body = Body::new(self, framing, keep_alive, home);
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
            match self.read_more().await {
                Ok(0) => {
                    return Err(Failed {
                        error: "the upstream closed the connection before answering".into(),
                        retry: reused && !received,
                    });
                }
                Ok(_) => received = true,
                Err(e) => {
                    let reset = matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                    );
                    return Err(Failed {
                        error: Box::new(e),
                        retry: reused && !received && reset,
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
        let count = spans.len();
        let head = self.buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(count);
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

#[cfg(test)]
mod tests;
