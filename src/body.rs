//! The one response body type. Small answers are `Full`; upstream answers are relayed as
//! they arrive (`Upstream` untouched, `Relay` re-framed for streams) and never collected.

use crate::relay::{BoxError, Relay};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

pub enum Body {
    Full(Option<Bytes>),
    Relay(Box<Relay>),
    /// A live feed: frames arrive on a channel until its sender goes.
    Events(tokio::sync::mpsc::Receiver<Bytes>),
}

impl Body {
    pub fn empty() -> Self {
        Self::Full(None)
    }

    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self::Full((!bytes.is_empty()).then_some(bytes))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Self::Full(b) => whole_frame(b),
            Self::Relay(r) => Pin::new(r.as_mut()).poll_frame(cx),
            Self::Events(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(b) => b.is_none(),
            Self::Relay(r) => r.is_done(),
            Self::Events(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(b) => whole_hint(b),
            Self::Relay(r) => r.size_hint(),
            Self::Events(_) => SizeHint::default(),
        }
    }
}

/// A request body as hyper delivers it (HTTP/1.1 or HTTP/2, whole or streamed).
pub type ReqBody = hyper::body::Incoming;

/// A body held whole (`None` once sent, or empty): one frame, then the end.
fn whole_frame<E>(b: &mut Option<Bytes>) -> Poll<Option<Result<Frame<Bytes>, E>>> {
    Poll::Ready(b.take().map(|b| Ok(Frame::data(b))))
}

fn whole_hint(b: &Option<Bytes>) -> SizeHint {
    SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
}
