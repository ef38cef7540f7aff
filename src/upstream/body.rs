//! The body of an upstream answer: hyper's [`Incoming`], plus, for an answer on a pooled
//! HTTP/2 connection, the stream it holds there (a [`Held`] guard the pool hands in). The
//! stream goes back to its connection when the body has ended or is dropped, whichever
//! comes first; until then the pool counts it against the server's stream limit. It knows
//! nothing of the pool: the guard gives the stream back when dropped.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

/// What a body keeps until it ends: dropping it gives a pooled stream back.
pub type Held = Box<dyn Send + Sync>;

pub struct UpstreamBody {
    inner: Incoming,
    slot: Option<Held>,
}

impl UpstreamBody {
    pub(super) fn pooled(inner: Incoming, slot: Held) -> Self {
        Self {
            inner,
            slot: Some(slot),
        }
    }
}

impl From<Incoming> for UpstreamBody {
    /// A body that holds no pooled stream (HTTP/1.1, a connection of its own).
    fn from(inner: Incoming) -> Self {
        Self { inner, slot: None }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.slot = None,
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.slot = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
