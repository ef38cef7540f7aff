//! The streamed answer bodies: events or raw chunks sent through a channel, gated, paced,
//! stalled or cut as scripted, each counted as open while it lives and as abandoned when
//! the daemon drops it before its end.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use super::{RawStream, Shared, StreamFormat, StreamReply, UpBody};

pub(super) fn stream_response(s: StreamReply, shared: &Arc<Shared>) -> Response<UpBody> {
    let (tx, rx) = mpsc::channel(16);
    let content_type = match s.format {
        StreamFormat::Sse => "text/event-stream",
        StreamFormat::JsonArray => "application/json; charset=UTF-8",
    };
    tokio::spawn(async move {
        let n = s.events.len();
        for i in 0..=n {
            if let Some((at, gate)) = &s.gate {
                if *at == i {
                    gate.notified().await;
                }
            }
            if s.cut_after == Some(i) {
                let _ = tx.send(Err(io::Error::other("scripted cut"))).await;
                return;
            }
            let text = match s.format {
                StreamFormat::Sse if i < n => format!("data: {}\r\n\r\n", s.events[i]),
                StreamFormat::Sse => return,
                StreamFormat::JsonArray if i == 0 && n > 0 => format!("[{}", s.events[0]),
                StreamFormat::JsonArray if i < n => format!("\r\n,{}", s.events[i]),
                StreamFormat::JsonArray if n == 0 => "[]".to_string(),
                StreamFormat::JsonArray => "]".to_string(),
            };
            if tx.send(Ok(Frame::data(Bytes::from(text)))).await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .status(200)
        .header("content-type", content_type)
        .body(ChannelBody::new(rx, shared).boxed())
        .unwrap()
}

pub(super) fn raw_stream_response(s: RawStream, shared: &Arc<Shared>) -> Response<UpBody> {
    let (tx, rx) = mpsc::channel(16);
    let content_type = s.content_type.clone();
    tokio::spawn(async move {
        for i in 0..=s.chunks.len() {
            if let Some((at, gate)) = &s.gate {
                if *at == i {
                    gate.notified().await;
                }
            }
            if s.cut_after == Some(i) {
                let _ = tx.send(Err(io::Error::other("scripted cut"))).await;
                return;
            }
            if s.stall_after == Some(i) {
                // Holds the channel open until the daemon drops the body.
                tx.closed().await;
                return;
            }
            let Some(chunk) = s.chunks.get(i) else {
                return;
            };
            if !s.every.is_zero() {
                tokio::time::sleep(s.every).await;
            }
            if tx.send(Ok(Frame::data(chunk.clone()))).await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .status(200)
        .header("content-type", content_type)
        .body(ChannelBody::new(rx, shared).boxed())
        .unwrap()
}

pub(super) fn trickle_response(
    head: Bytes,
    every: Duration,
    shared: &Arc<Shared>,
) -> Response<UpBody> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut next = head;
        while tx.send(Ok(Frame::data(next))).await.is_ok() {
            tokio::time::sleep(every).await;
            next = Bytes::from_static(b" ");
        }
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json; charset=UTF-8")
        .body(ChannelBody::new(rx, shared).boxed())
        .unwrap()
}

/// A body fed from a channel (an `Err` aborts the connection mid-body) that counts as open
/// while it lives and as abandoned when the daemon drops it before its end.
struct ChannelBody {
    rx: mpsc::Receiver<Result<Frame<Bytes>, io::Error>>,
    shared: Arc<Shared>,
    finished: bool,
}

impl ChannelBody {
    fn new(rx: mpsc::Receiver<Result<Frame<Bytes>, io::Error>>, shared: &Arc<Shared>) -> Self {
        shared.open_bodies.fetch_add(1, Ordering::SeqCst);
        Self {
            rx,
            shared: shared.clone(),
            finished: false,
        }
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let p = self.rx.poll_recv(cx);
        if matches!(p, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.finished = true;
        }
        p
    }
}

impl Drop for ChannelBody {
    fn drop(&mut self) {
        self.shared.open_bodies.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            self.shared.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}
