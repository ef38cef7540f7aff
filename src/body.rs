//! The one response body type. Small answers are `Full`; upstream answers are relayed as
//! they arrive (`Upstream` untouched, `Relay` re-framed for streams) and never collected.
//! And the request body: hyper's, read at a minimum pace ([`Paced`]).

use crate::boxerror::BoxError;
use crate::relay::Relay;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

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

/// A request body as hyper delivers it (HTTP/1.1 or HTTP/2, whole or streamed), held to
/// the body pace of `[server]` while it arrives.
pub type ReqBody = Paced<hyper::body::Incoming>;

/// How fast a request body must arrive: never silent for longer than `timeout`, and on
/// average at least `rate` bytes a second. Time the reader spends elsewhere (an upload
/// waiting on the upstream) does not count against the client.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub timeout: Duration,
    pub rate: u64,
}

/// A body too slow for its [`Pace`]: the reader gets this error and the connection ends.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived too slowly")]
pub struct TooSlow;

/// A body read at a [`Pace`]. The time the client may still take (`slack`) runs down while
/// the reader waits for it, grows by each frame's bytes at `rate`, and never exceeds
/// `timeout`. A body that arrives with its head never arms a timer.
pub struct Paced<B> {
    inner: B,
    pace: Pace,
    slack: Duration,
    waiting_since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> Paced<B> {
    pub fn new(inner: B, pace: Pace) -> Self {
        Self {
            inner,
            pace,
            slack: pace.timeout,
            waiting_since: None,
            timer: None,
        }
    }

    /// Counts a frame of `len` bytes that ended a wait (or came at once).
    fn arrived(&mut self, len: usize) {
        if let Some(since) = self.waiting_since.take() {
            self.slack = self.slack.saturating_sub(since.elapsed());
        }
        let nanos = (len as u64).saturating_mul(1_000_000_000) / self.pace.rate.max(1);
        self.slack = (self.slack + Duration::from_nanos(nanos)).min(self.pace.timeout);
    }

    /// Ready when the client has used up its slack in this wait.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let since = *self.waiting_since.get_or_insert_with(Instant::now);
        let deadline = since + self.slack;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

impl<B> http_body::Body for Paced<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let me = self.get_mut();
        match Pin::new(&mut me.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let len = match &frame {
                    Some(Ok(f)) => f.data_ref().map_or(0, Bytes::len),
                    _ => 0,
                };
                me.arrived(len);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending if me.expired(cx) => Poll::Ready(Some(Err(TooSlow.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body held whole (`None` once sent, or empty): one frame, then the end.
fn whole_frame<E>(b: &mut Option<Bytes>) -> Poll<Option<Result<Frame<Bytes>, E>>> {
    Poll::Ready(b.take().map(|b| Ok(Frame::data(b))))
}

fn whole_hint(b: &Option<Bytes>) -> SizeHint {
    SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::sync::mpsc;

    /// A body whose frames a test sends when it likes.
    struct Fed(mpsc::Receiver<Bytes>);

    impl http_body::Body for Fed {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.get_mut()
                .0
                .poll_recv(cx)
                .map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    /// A paced body (1 s of silence at most, 100 bytes a second) and its feed.
    fn paced() -> (mpsc::Sender<Bytes>, Paced<Fed>) {
        let (tx, rx) = mpsc::channel(16);
        let pace = Pace {
            timeout: Duration::from_secs(1),
            rate: 100,
        };
        (tx, Paced::new(Fed(rx), pace))
    }

    /// Sends `bytes` bytes every `every`, `times` times, then ends the body.
    fn trickle(tx: mpsc::Sender<Bytes>, bytes: usize, every: Duration, times: usize) {
        tokio::spawn(async move {
            for _ in 0..times {
                tokio::time::sleep(every).await;
                if tx.send(Bytes::from(vec![b'x'; bytes])).await.is_err() {
                    return;
                }
            }
        });
    }

    async fn read_all(body: &mut Paced<Fed>) -> Result<usize, BoxError> {
        let mut n = 0;
        while let Some(frame) = body.frame().await {
            n += frame?.into_data().map_or(0, |d| d.len());
        }
        Ok(n)
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_at_the_pace_arrives_whole() {
        let (tx, mut body) = paced();
        trickle(tx, 50, Duration::from_millis(400), 20);
        assert_eq!(read_all(&mut body).await.unwrap(), 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_or_too_slow_body_fails() {
        let (_tx, mut body) = paced();
        let err = read_all(&mut body).await.unwrap_err();
        assert!(err.is::<TooSlow>(), "{err}");
        // One byte every 0.9 s: each gap is shorter than the timeout, the rate far lower.
        let (tx, mut body) = paced();
        trickle(tx, 1, Duration::from_millis(900), 20);
        assert!(read_all(&mut body).await.unwrap_err().is::<TooSlow>());
    }

    #[tokio::test(start_paused = true)]
    async fn time_the_reader_spends_elsewhere_is_not_the_clients() {
        let (tx, mut body) = paced();
        for _ in 0..3 {
            tx.send(Bytes::from_static(b"x")).await.unwrap();
        }
        drop(tx);
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert!(body.frame().await.unwrap().is_ok());
        }
        assert!(body.frame().await.is_none());
    }
}
