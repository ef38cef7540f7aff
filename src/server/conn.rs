//! One client connection, served by hyper: hyper's HTTP/1.1 connection when the first
//! bytes (or ALPN) say HTTP/1.1, otherwise hyper-util's auto builder, which reads HTTP/1.1
//! or, after the HTTP/2 preface, h2c; the limits of `[server]` are set on both (header read
//! timeout, which is also the idle keep-alive limit of HTTP/1.1, head size, HTTP/2
//! keep-alive pings). Around it, what hyper has no setting for: the first request must
//! arrive within `handshake_timeout`, a connection with no request in flight for
//! `idle_timeout` is closed, and request bodies are read at the body pace.

use crate::body::{Body, Pace, Paced, ReqBody};
use crate::config::ServerConfig;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The most a request head may be (HTTP/1.1 read buffer, HTTP/2 header list).
pub const HEAD_MAX: usize = 64 * 1024;

/// What a connection speaks, as far as is known before hyper reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1 for certain: served by hyper's HTTP/1.1 connection directly, which reads
    /// the first head in one piece into one 8 KiB buffer (behind hyper-util's version
    /// check the first read is a separate 24-byte piece, and the buffer doubles).
    Http1,
    /// HTTP/2 or not yet known: hyper-util's auto builder tells by the preface.
    Either,
    /// Nothing arrived within the handshake timeout, or the client left: not served.
    Silent,
}

impl Proto {
    /// What a plain connection's first bytes say, without reading them.
    pub async fn sniff(tcp: &tokio::net::TcpStream, within: Duration) -> Proto {
        const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let mut first = [0u8; 24];
        match tokio::time::timeout(within, tcp.peek(&mut first)).await {
            Ok(Ok(0)) | Err(_) => Proto::Silent,
            Ok(Ok(n)) if !PREFACE.starts_with(&first[..n]) => Proto::Http1,
            _ => Proto::Either,
        }
    }
}

/// Runs a hyper connection until it ends, closing it gracefully when `stopping` fires or
/// it stays idle, and dropping it when its first request or its goodbye takes too long.
/// A macro: hyper's connection types share `graceful_shutdown` but no trait for it.
macro_rules! drive {
    ($server:expr, $busy:expr, $stopping:expr, $conn:expr) => {{
        let (server, busy) = ($server, &$busy);
        let mut conn = $conn;
        let mut timer = pin!(tokio::time::sleep_until(busy.origin + server.handshake));
        let (mut stopped, mut leaving) = (false, false);
        loop {
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = $stopping.cancelled(), if !stopped => {
                    stopped = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = timer.as_mut() => {
                    let now = Instant::now();
                    match busy.idle_until(server.idle) {
                        _ if leaving => return,
                        // No first request within the handshake timeout.
                        None => return,
                        Some(until) if until > now => timer.as_mut().reset(until),
                        Some(_) => {
                            leaving = true;
                            conn.as_mut().graceful_shutdown();
                            timer.as_mut().reset(now + server.goodbye);
                        }
                    }
                }
            }
        }
    }};
}
/// The connection builders every connection of a listener shares, and the limits kept
/// around them.
#[derive(Clone)]
pub struct Server {
    builder: auto::Builder<TokioExecutor>,
    http1: hyper::server::conn::http1::Builder,
    handshake: Duration,
    idle: Duration,
    /// How long an idle HTTP/2 client has to acknowledge the closing GOAWAY.
    goodbye: Duration,
    pace: Pace,
}

impl Server {
    pub fn new(cfg: &ServerConfig) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(cfg.header_read_timeout)
            .max_buf_size(HEAD_MAX);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(HEAD_MAX as u32)
            .keep_alive_interval(cfg.http2_keep_alive_interval)
            .keep_alive_timeout(cfg.http2_keep_alive_timeout);
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(cfg.header_read_timeout)
            .max_header_size(HEAD_MAX)
            .max_buf_size(HEAD_MAX);
        Self {
            builder,
            http1,
            // The first head, like every later one, within `header_read_timeout` too.
            handshake: cfg.handshake_timeout.min(cfg.header_read_timeout),
            idle: cfg.idle_timeout,
            goodbye: cfg.http2_keep_alive_timeout,
            pace: Pace {
                timeout: cfg.body_read_timeout,
                rate: cfg.min_body_rate,
            },
        }
    }

    /// How long a client has to finish its TLS handshake (and then its first request).
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake
    }

    /// Serves `io` until the client closes it, it breaks a limit, or `stopping` fires and
    /// the requests in flight are answered.
    pub async fn serve<I, H, F>(
        &self,
        io: I,
        proto: Proto,
        handler: H,
        stopping: &CancellationToken,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        H: Fn(Request<ReqBody>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let busy = Arc::new(Busy::new());
        let (pace, counter) = (self.pace, busy.clone());
        let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
            let guard = Guard::start(&counter);
            // Boxed: hyper keeps a slot the size of this future for the connection's
            // whole life, while the handler's state lives only until the answer's head.
            let answer = Box::pin(handler(req.map(|b| Paced::new(b, pace))));
            async move {
                let resp = answer.await.map(|body| Tracked {
                    body,
                    _guard: guard,
                });
                Ok::<_, Infallible>(resp)
            }
        });
        // With upgrades: a Live session's WebSocket takes the connection over.
        let io = TokioIo::new(io);
        match proto {
            Proto::Silent => {}
            Proto::Http1 => {
                let conn = self.http1.serve_connection(io, svc).with_upgrades();
                drive!(self, busy, stopping, pin!(conn));
            }
            Proto::Either => {
                // Boxed, so the connection's task is the size of the HTTP/1.1 arm.
                let conn = self.builder.serve_connection_with_upgrades(io, svc);
                drive!(self, busy, stopping, Box::pin(conn));
            }
        }
    }
}

/// What a connection is doing: requests in flight, and when the last one ended.
struct Busy {
    origin: Instant,
    started: AtomicUsize,
    in_flight: AtomicUsize,
    /// Milliseconds from `origin` to the end of the last request.
    last_ms: AtomicU64,
}

impl Busy {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            started: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    /// When the connection will have been idle for `idle` (later than now while a
    /// request is in flight); `None` before its first request.
    fn idle_until(&self, idle: Duration) -> Option<Instant> {
        if self.started.load(Ordering::Relaxed) == 0 {
            return None;
        }
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Some(Instant::now() + idle);
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(self.origin + last + idle)
    }
}

/// One request in flight, from its head until its answer's last byte (or until hyper
/// drops the answer).
struct Guard(Arc<Busy>);

impl Guard {
    fn start(busy: &Arc<Busy>) -> Self {
        busy.started.fetch_add(1, Ordering::Relaxed);
        busy.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(busy.clone())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let ms = self.0.origin.elapsed().as_millis() as u64;
        self.0.last_ms.fetch_max(ms, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An answer's body, holding its request's place in [`Busy`] until it is dropped.
struct Tracked {
    body: Body,
    _guard: Guard,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
