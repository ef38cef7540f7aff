//! One client connection, served by hyper: hyper-util's auto builder reads HTTP/1.1 or,
//! after the HTTP/2 preface, h2c, with the limits of `[server]` set on it (header read
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

/// The connection builder every connection of a listener shares, and the limits kept
/// around it.
#[derive(Clone)]
pub struct Server {
    builder: auto::Builder<TokioExecutor>,
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
        Self {
            builder,
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
    pub async fn serve<I, H, F>(&self, io: I, handler: H, stopping: &CancellationToken)
    where
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
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), svc);
        let mut conn = pin!(conn);
        let mut timer = pin!(tokio::time::sleep_until(busy.origin + self.handshake));
        let (mut stopped, mut leaving) = (false, false);
        loop {
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stopping.cancelled(), if !stopped => {
                    stopped = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = timer.as_mut() => {
                    let now = Instant::now();
                    match busy.idle_until(self.idle) {
                        _ if leaving => return,
                        // No first request within the handshake timeout.
                        None => return,
                        Some(until) if until > now => timer.as_mut().reset(until),
                        Some(_) => {
                            leaving = true;
                            conn.as_mut().graceful_shutdown();
                            timer.as_mut().reset(now + self.goodbye);
                        }
                    }
                }
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
