//! What an HTTP/2 connection's pool must know that hyper does not tell: when the server's
//! first SETTINGS frame has arrived (its stream limit is known from then on) and when the
//! server sent GOAWAY (no new request may go on the connection). [`Watched`] sits between
//! hyper and the TLS stream and reads the 9-byte frame headers of what the server sends
//! (RFC 9113 §4.1), skipping every payload; h2 still decodes and handles every frame. It
//! never changes, holds or delays a byte.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

const HEADER: usize = 9;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;

/// What the frames said so far; `changed` is notified when either flag is first set.
pub struct Signals {
    settled: AtomicBool,
    going_away: AtomicBool,
    changed: Arc<Notify>,
}

impl Signals {
    pub fn new(changed: Arc<Notify>) -> Arc<Self> {
        Arc::new(Self {
            settled: AtomicBool::new(false),
            going_away: AtomicBool::new(false),
            changed,
        })
    }

    /// The server's first SETTINGS frame has been read (so h2 has applied it by the time
    /// the connection's task yields).
    pub fn settled(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }

    /// The server sent GOAWAY.
    pub fn going_away(&self) -> bool {
        self.going_away.load(Ordering::Acquire)
    }

    fn set(&self, flag: &AtomicBool) {
        if !flag.swap(true, Ordering::AcqRel) {
            self.changed.notify_waiters();
        }
    }
}

/// Where the reader stands in the server's frame sequence.
#[derive(Default)]
struct Frames {
    header: [u8; HEADER],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    skip: usize,
    /// The current frame is a SETTINGS frame (not an ACK): settled once it is all read.
    settings: bool,
}

impl Frames {
    /// Walks `bytes` (the next bytes the server sent), reporting frames.
    fn feed(&mut self, mut bytes: &[u8], signals: &Signals) {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
            }
            if self.skip == 0 && std::mem::take(&mut self.settings) {
                signals.set(&signals.settled);
            }
            if bytes.is_empty() {
                return;
            }
            let n = (HEADER - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have < HEADER {
                return;
            }
            self.have = 0;
            let h = self.header;
            self.skip = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            match h[3] {
                SETTINGS => self.settings = h[4] & ACK == 0,
                GOAWAY => signals.set(&signals.going_away),
                _ => {}
            }
        }
    }
}

/// An I/O stream whose inbound HTTP/2 frame headers are watched (see the module header).
pub struct Watched<T> {
    inner: T,
    frames: Frames,
    signals: Arc<Signals>,
}

impl<T> Watched<T> {
    pub fn new(inner: T, signals: Arc<Signals>) -> Self {
        Self {
            inner,
            frames: Frames::default(),
            signals,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.frames.feed(&buf.filled()[before..], &this.signals);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, b)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn settings_and_goaway_are_seen_across_any_split_of_the_bytes() {
        let mut wire = frame(SETTINGS, 0, &[0, 3, 0, 0, 0, 4]);
        let settled_at = wire.len();
        // A DATA frame whose payload looks like frame headers is skipped whole.
        wire.extend(frame(0x0, 0, &frame(GOAWAY, 0, &[0; 8])));
        wire.extend(frame(SETTINGS, ACK, &[]));
        let goaway_at = wire.len() + HEADER;
        wire.extend(frame(GOAWAY, 0, &[0; 8]));
        for cut in 1..wire.len() {
            let signals = Signals::new(Arc::new(Notify::new()));
            let mut frames = Frames::default();
            frames.feed(&wire[..cut], &signals);
            assert_eq!(signals.settled(), cut >= settled_at, "cut at {cut}");
            assert_eq!(signals.going_away(), cut >= goaway_at, "cut at {cut}");
            frames.feed(&wire[cut..], &signals);
            assert!(signals.settled() && signals.going_away());
        }
    }

    #[test]
    fn a_settings_ack_alone_does_not_settle() {
        let signals = Signals::new(Arc::new(Notify::new()));
        Frames::default().feed(&frame(SETTINGS, ACK, &[]), &signals);
        assert!(!signals.settled());
    }
}
