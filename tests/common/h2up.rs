//! A fake upstream that behaves like Google's front end where the connection pool is
//! concerned: HTTP/2 only, over TLS with ALPN `h2` (the test certificate for 127.0.0.1),
//! a small SETTINGS_MAX_CONCURRENT_STREAMS, GOAWAY by hyper's graceful shutdown (GOAWAY
//! with the last stream id 2^31-1, a PING, then the real last stream id), streams refused
//! with REFUSED_STREAM on request, connections that can be frozen (the server stops
//! reading and answering, pings included, as a dead peer behind a NAT does), and
//! connections that end abruptly: at the client's first request, a GOAWAY that names no
//! stream as processed, then the socket closes (a front end going down hard).
//!
//! It counts connections and the streams open on each, at once and at most; streamed
//! answers (`alt=sse`) send one event and then hold until [`H2Upstream::release`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::upstream::{chunk, chunk_with_finish, tls_acceptor};

/// One connection as the fake saw it.
#[derive(Default)]
pub struct ConnStats {
    pub open: AtomicUsize,
    pub most: AtomicUsize,
    /// Streams it took after it was told to go away.
    pub after_goaway: AtomicUsize,
    goaway: Notify,
    told: AtomicBool,
    frozen: AtomicBool,
    pub closed: AtomicBool,
}

#[derive(Default)]
struct Shared {
    conns: Mutex<Vec<Arc<ConnStats>>>,
    open: AtomicUsize,
    requests: AtomicUsize,
    /// Requests still to refuse with REFUSED_STREAM.
    refuse: AtomicUsize,
    refused: AtomicUsize,
    /// Connections still to end abruptly, and how many did.
    abrupt: AtomicUsize,
    ended_abruptly: AtomicUsize,
    changed: Notify,
}

pub struct H2Upstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    release: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl H2Upstream {
    /// Serves on `127.0.0.1:0`, allowing `limit` concurrent streams per connection.
    pub async fn start(limit: u32) -> H2Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared::default());
        let (release, held) = watch::channel(false);
        let tls = tls_acceptor(&["h2"]);
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let stats = Arc::new(ConnStats::default());
                s.conns.lock().unwrap().push(stats.clone());
                let abrupt = s
                    .abrupt
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if abrupt {
                    tokio::spawn(end_abruptly(tcp, tls.clone(), s.clone(), stats));
                    continue;
                }
                tokio::spawn(serve(
                    tcp,
                    tls.clone(),
                    limit,
                    s.clone(),
                    stats,
                    held.clone(),
                ));
            }
        });
        H2Upstream {
            addr,
            shared,
            release,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Lets every held stream (and every later one) finish.
    pub fn release(&self) {
        let _ = self.release.send(true);
    }

    pub fn connections(&self) -> Vec<Arc<ConnStats>> {
        self.shared.conns.lock().unwrap().clone()
    }

    /// Streams open now, over all connections.
    pub fn open_streams(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// The most streams any one connection had open at once.
    pub fn most_on_one_connection(&self) -> usize {
        let conns = self.connections();
        conns
            .iter()
            .map(|c| c.most.load(Ordering::SeqCst))
            .max()
            .unwrap_or(0)
    }

    /// Requests answered (refused ones not counted).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Refuses the next `n` requests with RST_STREAM(REFUSED_STREAM).
    pub fn refuse_next(&self, n: usize) {
        self.shared.refuse.store(n, Ordering::SeqCst);
    }

    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// The next `n` connections end abruptly at their first request.
    pub fn end_abruptly(&self, n: usize) {
        self.shared.abrupt.store(n, Ordering::SeqCst);
    }

    /// Connections that ended abruptly after a request arrived on them.
    pub fn ended_abruptly(&self) -> usize {
        self.shared.ended_abruptly.load(Ordering::SeqCst)
    }

    /// Starts a graceful shutdown (GOAWAY) on every connection open now.
    pub fn goaway_all(&self) {
        for c in self.connections() {
            c.told.store(true, Ordering::SeqCst);
            c.goaway.notify_one();
        }
    }

    /// Every connection open now stops reading and answering (pings included).
    pub fn freeze_all(&self) {
        for c in self.connections() {
            c.frozen.store(true, Ordering::SeqCst);
        }
    }
}

impl Drop for H2Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    tcp: TcpStream,
    tls: tokio_rustls::TlsAcceptor,
    limit: u32,
    shared: Arc<Shared>,
    stats: Arc<ConnStats>,
    held: watch::Receiver<bool>,
) {
    let io = Freezable {
        inner: tcp,
        stats: stats.clone(),
    };
    if let Ok(tls) = tls.accept(io).await {
        let (sh, st) = (shared.clone(), stats.clone());
        let svc = service_fn(move |req| handle(req, sh.clone(), st.clone(), held.clone()));
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder.max_concurrent_streams(limit);
        let conn = builder.serve_connection(TokioIo::new(tls), svc);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = stats.goaway.notified() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }
    stats.closed.store(true, Ordering::SeqCst);
    shared.changed.notify_waiters();
}

const SETTINGS: u8 = 0x4;
const HEADERS: u8 = 0x1;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;

/// One HTTP/2 frame on connection stream 0.
fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
    f.extend_from_slice(payload);
    f
}

/// Speaks HTTP/2 at the frame level up to the client's first HEADERS, then answers it
/// with GOAWAY (last stream id 0, NO_ERROR: the request was not processed) and closes.
async fn end_abruptly(
    tcp: TcpStream,
    tls: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    stats: Arc<ConnStats>,
) {
    if let Ok(mut io) = tls.accept(tcp).await {
        let mut preface = [0u8; 24];
        let mut ok = io.read_exact(&mut preface).await.is_ok()
            && io.write_all(&frame(SETTINGS, 0, &[])).await.is_ok();
        while ok {
            let mut head = [0u8; 9];
            if io.read_exact(&mut head).await.is_err() {
                break;
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            if io.read_exact(&mut payload).await.is_err() {
                break;
            }
            match (head[3], head[4] & ACK) {
                (SETTINGS, 0) => ok = io.write_all(&frame(SETTINGS, ACK, &[])).await.is_ok(),
                (HEADERS, _) => {
                    let mut goaway = 0u32.to_be_bytes().to_vec();
                    goaway.extend_from_slice(&0u32.to_be_bytes());
                    let _ = io.write_all(&frame(GOAWAY, 0, &goaway)).await;
                    let _ = io.shutdown().await;
                    shared.ended_abruptly.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                _ => {}
            }
        }
    }
    stats.closed.store(true, Ordering::SeqCst);
    shared.changed.notify_waiters();
}

type Reply = Result<Response<Held>, h2::Error>;

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    stats: Arc<ConnStats>,
    mut held: watch::Receiver<bool>,
) -> Reply {
    let refuse = shared
        .refuse
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if refuse {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        // hyper resets the stream with the reason of an h2 error the service returns.
        return Err(h2::Error::from(h2::Reason::REFUSED_STREAM));
    }
    let stream = req.uri().query().is_some_and(|q| q.contains("alt=sse"));
    let guard = Open::new(&shared, &stats);
    let _ = req.into_body().collect().await;
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    if stream {
        tokio::spawn(async move {
            let first = format!("data: {}\r\n\r\n", chunk("one"));
            if tx.send(Bytes::from(first)).await.is_err() {
                return;
            }
            let _ = held.wait_for(|go| *go).await;
            let last = format!("data: {}\r\n\r\n", chunk_with_finish("two", Some("STOP")));
            let _ = tx.send(Bytes::from(last)).await;
        });
    } else {
        let body = chunk_with_finish("hello", Some("STOP")).to_string();
        let _ = tx.try_send(Bytes::from(body));
    }
    let content_type = if stream {
        "text/event-stream"
    } else {
        "application/json; charset=UTF-8"
    };
    Ok(Response::builder()
        .header("content-type", content_type)
        .body(Held { rx, _open: guard })
        .unwrap())
}

/// A stream counted open from its request until its answer's body is done or dropped.
struct Open {
    shared: Arc<Shared>,
    stats: Arc<ConnStats>,
}

impl Open {
    fn new(shared: &Arc<Shared>, stats: &Arc<ConnStats>) -> Self {
        if stats.told.load(Ordering::SeqCst) {
            stats.after_goaway.fetch_add(1, Ordering::SeqCst);
        }
        let now = stats.open.fetch_add(1, Ordering::SeqCst) + 1;
        stats.most.fetch_max(now, Ordering::SeqCst);
        shared.open.fetch_add(1, Ordering::SeqCst);
        Self {
            shared: shared.clone(),
            stats: stats.clone(),
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::SeqCst);
        self.shared.open.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Held {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    _open: Open,
}

impl Body for Held {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// The TCP stream under TLS; once frozen, what arrives is read and dropped and nothing is
/// written, so the server neither answers nor notices the peer until it closes.
struct Freezable {
    inner: TcpStream,
    stats: Arc<ConnStats>,
}

impl AsyncRead for Freezable {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.stats.frozen.load(Ordering::SeqCst) {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let mut scratch = [0u8; 4096];
        loop {
            let mut sink = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut sink) {
                Poll::Ready(Ok(())) if sink.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => continue,
                other => return other,
            }
        }
    }
}

impl AsyncWrite for Freezable {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.stats.frozen.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(b.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, b)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
