//! The HTTP/1.1 server side for the plain case, in the connection's own task: the head read
//! with httparse (header values are slices of the read buffer), the handler run while the
//! client is watched for hanging up, the answer's head and body written together, no timer
//! armed per request, and keep-alive and pipelining on the same buffer.
//!
//! Anything else — HTTP/1.0, `HEAD`, chunked or `Expect: 100-continue` uploads, upgrades,
//! h2c, a head or body over [`BUF_MAX`], any head httparse refuses — is handed to hyper with
//! the bytes read so far in front ([`Ended::Hyper`]), at the first request or between two,
//! and hyper serves the rest of that connection. So what a client may send is decided by
//! hyper's rules except in the one case this module checks ([`head`]).
//!
//! Timeouts match hyper's settings used before: the whole head must arrive within
//! `header_read_timeout` of the moment the connection started waiting for it (an idle
//! kept-alive connection included); bodies and answers have no deadline of their own.
//! The header deadline is one timer per connection, moved only when it fires early.

mod head;
mod rewind;
#[cfg(test)]
mod tests;
mod write;

use crate::body::ReqBody;
use bytes::{Bytes, BytesMut};
use head::{Head, Parse};
use http::{Request, Response, StatusCode};
use http_body::Body;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use write::Framing;

pub use rewind::Rewound;

/// The most the fast path holds of one request (head and body), and of bytes read ahead
/// while answering; hyper's buffer limit is the same.
pub const BUF_MAX: usize = 64 * 1024;
/// A body frame larger than this is written on its own instead of copied behind the head,
/// and frames that are ready together are written once they reach it.
const COPY_MAX: usize = 16 * 1024;
const READ_CHUNK: usize = 8 * 1024;

/// How the fast path left a connection.
pub enum Ended {
    /// Closed (or to be closed by dropping it).
    Closed,
    /// For hyper to serve from here, starting with the bytes already read.
    Hyper(Rewound),
}

/// Serves requests on `tcp` while they are plain HTTP/1.1. `shutdown` closes idle
/// connections and answers the request in flight with `connection: close`.
pub async fn serve<H, F, B>(
    mut tcp: TcpStream,
    header_timeout: Duration,
    shutdown: &CancellationToken,
    mut handler: H,
) -> Ended
where
    H: FnMut(Request<ReqBody>) -> F,
    F: Future<Output = Response<B>>,
    B: Body<Data = Bytes>,
{
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut head = Head::new();
    let mut out = Vec::with_capacity(1024);
    let mut deadline = Instant::now() + header_timeout;
    let mut timer = pin!(tokio::time::sleep_until(deadline));
    let mut stopping = pin!(shutdown.cancelled());
    loop {
        loop {
            if !buf.is_empty() {
                match head.parse(&buf) {
                    Parse::Ready => break,
                    Parse::Partial if buf.len() < BUF_MAX => {}
                    Parse::Partial | Parse::Hyper => {
                        return Ended::Hyper(Rewound::new(buf.freeze(), tcp));
                    }
                }
            }
            let more = poll_fn(|cx| {
                if let Poll::Ready(r) = poll_read(&mut tcp, &mut buf, cx) {
                    return Poll::Ready(r.unwrap_or(0) > 0);
                }
                if stopping.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(false);
                }
                poll_deadline(timer.as_mut(), deadline, cx).map(|()| false)
            });
            if !more.await {
                return Ended::Closed;
            }
        }
        let total = head.len + head.body;
        if total > BUF_MAX {
            return Ended::Hyper(Rewound::new(buf.freeze(), tcp));
        }
        while buf.len() < total {
            if !matches!(
                poll_fn(|cx| poll_read(&mut tcp, &mut buf, cx)).await,
                Ok(1..)
            ) {
                return Ended::Closed;
            }
        }
        let raw = buf.split_to(total).freeze();
        let Some(req) = head.request(&raw, ReqBody::full) else {
            let _ = tcp.write_all(BAD_REQUEST).await;
            return Ended::Closed;
        };
        drop(raw);
        let answered = {
            let mut answer = pin!(handler(req));
            poll_fn(|cx| match answer.as_mut().poll(cx) {
                Poll::Ready(resp) => Poll::Ready(Some(resp)),
                Poll::Pending => watch_client(&tcp, &mut buf, cx).map(|()| None),
            })
            .await
        };
        let Some(resp) = answered else {
            return Ended::Closed;
        };
        let close = head.close || shutdown.is_cancelled();
        if !respond(&mut tcp, &mut out, &mut buf, resp, close).await {
            return Ended::Closed;
        }
        // An idle kept connection holds no more than a small answer's worth.
        out.shrink_to(4096);
        deadline = Instant::now() + header_timeout;
    }
}

/// Answers to a request whose target `http` refuses (httparse took it); the connection
/// closes after it.
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Reads what has arrived into `buf` (0 at the end of the stream).
fn poll_read(
    tcp: &mut TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    tokio_util::io::poll_read_buf(Pin::new(tcp), cx, buf)
}

/// Ready when `deadline` has passed. The timer is moved only when it fires before the
/// deadline (the deadline moves with every request; the timer does not).
fn poll_deadline(mut timer: Pin<&mut Sleep>, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
    loop {
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if timer.deadline() >= deadline {
            return Poll::Ready(());
        }
        timer.as_mut().reset(deadline);
    }
}

/// Ready when the client has hung up (or failed) while its answer is being made. Bytes it
/// sends meanwhile (a pipelined request) are kept in `buf`, up to [`BUF_MAX`]; beyond that
/// the client is no longer watched.
fn watch_client(tcp: &TcpStream, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<()> {
    while buf.len() < BUF_MAX {
        match tcp.poll_read_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(()),
            Poll::Ready(Ok(())) => {}
        }
        buf.reserve(READ_CHUNK.min(BUF_MAX - buf.len()));
        match tcp.try_read_buf(buf) {
            Ok(0) => return Poll::Ready(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return Poll::Ready(()),
        }
    }
    Poll::Pending
}

enum Step<F> {
    Frame(Option<F>),
    Flush,
    Gone,
}

/// Writes the answer; whether the connection may carry another request.
async fn respond<B: Body<Data = Bytes>>(
    tcp: &mut TcpStream,
    out: &mut Vec<u8>,
    buf: &mut BytesMut,
    resp: Response<B>,
    close: bool,
) -> bool {
    let (parts, body) = resp.into_parts();
    let mut body = pin!(body);
    let status = parts.status;
    let close = close || write::asks_close(&parts.headers);
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = match body.size_hint().exact() {
        _ if bodiless => Framing::None,
        Some(n) => Framing::Length(n),
        None => Framing::Chunked,
    };
    out.clear();
    write::head(out, status, &parts.headers, framing, close);
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut ended = bodiless || body.is_end_stream();
    while !ended {
        let step = poll_fn(|cx| match body.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(Step::Frame(frame)),
            Poll::Pending if !out.is_empty() => Poll::Ready(Step::Flush),
            Poll::Pending => watch_client(tcp, buf, cx).map(|()| Step::Gone),
        })
        .await;
        match step {
            Step::Flush => {
                if tcp.write_all(out).await.is_err() {
                    return false;
                }
                out.clear();
            }
            Step::Gone => return false,
            Step::Frame(None) => ended = true,
            Step::Frame(Some(Err(_))) => {
                // Whatever was framed goes out; the missing end tells the client.
                let _ = tcp.write_all(out).await;
                return false;
            }
            Step::Frame(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                match framing {
                    Framing::Length(_) if data.len() as u64 > left => {
                        // More than the body said it would be: send what was declared.
                        out.extend_from_slice(&data[..left as usize]);
                        let _ = tcp.write_all(out).await;
                        return false;
                    }
                    Framing::Length(_) => left -= data.len() as u64,
                    Framing::Chunked => write::chunk_size(out, data.len()),
                    Framing::None => continue,
                }
                if data.len() > COPY_MAX {
                    if tcp.write_all(out).await.is_err() || tcp.write_all(&data).await.is_err() {
                        return false;
                    }
                    out.clear();
                } else {
                    out.extend_from_slice(&data);
                }
                if framing == Framing::Chunked {
                    out.extend_from_slice(b"\r\n");
                }
                ended = body.is_end_stream();
                // A body whose frames are all ready at once is not gathered whole.
                if !ended && out.len() >= COPY_MAX {
                    if tcp.write_all(out).await.is_err() {
                        return false;
                    }
                    out.clear();
                }
            }
        }
    }
    if framing == Framing::Chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    if tcp.write_all(out).await.is_err() {
        return false;
    }
    out.clear();
    !close && left == 0
}
