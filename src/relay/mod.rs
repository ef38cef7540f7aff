//! Relaying an upstream answer to the client as it arrives, holding the key's lease until
//! the last byte. Streams are cut at event boundaries — SSE events (`…\r\n\r\n`) or the
//! elements of Google's JSON-array stream (`[{…}\r\n,{…}]`) — so the client only ever gets
//! whole events, and a cut upstream ends the client's stream with one well-formed error
//! event (SSE) or a closed array whose last element is an error object. Nothing after the
//! first byte is ever retried: a second answer is never spliced onto the first.
//!
//! Non-stream answers pass through frame by frame, untouched. One pending stream event
//! is held up to [`MAX_EVENT`]: an upstream that goes on past it without an event
//! boundary has the stream ended with the error event.

mod body;
mod cut;
mod json_array;
mod sse;
mod usage;

use crate::boxerror::BoxError;
use crate::upstream::UpstreamBody;
use crate::usage::Tokens;
use bytes::{Bytes, BytesMut};
use http_body::{Body as _, Frame};
use json_array::JsonScan;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use usage::UsageWatch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Passthrough,
    Sse,
    JsonArray,
}

/// Which error event to write when a stream is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStyle {
    Google,
    OpenAi,
}

/// How a relayed answer ended, handed to the finish hook exactly once.
#[derive(Debug, Default)]
pub struct Finish {
    /// Set when the upstream broke off; the client got an error event instead.
    pub truncated: Option<String>,
    /// The client went away before the end.
    pub cancelled: bool,
    pub bytes: u64,
    /// Token usage reported by the answer (the last usage block seen).
    pub tokens: Option<Tokens>,
    /// When the first byte went to the client.
    pub first_byte: Option<Instant>,
}

pub type OnFinish = Box<dyn FnOnce(&Finish) + Send + Sync>;

/// A non-stream answer up to this size is read whole before it is committed, so a cut
/// or stall inside it fails over to another key instead of reaching the client.
const PRIME_LIMIT: usize = 256 * 1024;

/// Stream bytes gathered before whole events are sent even though more are ready.
const COALESCE_LIMIT: usize = 64 * 1024;

/// The most one stream event (an SSE event, a JSON-array element) may hold while it is
/// not yet whole; Google's are a few KiB, an inline image a few MiB.
pub const MAX_EVENT: usize = 8 << 20;

enum Step {
    Unit(Bytes),
    End,
    Cut(String),
    Failed(BoxError),
}

pub struct Relay {
    upstream: UpstreamBody,
    format: Format,
    style: ErrorStyle,
    buf: BytesMut,
    json: JsonScan,
    upstream_done: bool,
    /// The upstream broke off; sent after the whole events still buffered.
    cut: Option<String>,
    /// Gave the upstream connection a turn since the last frame (see `poll_step`).
    yielded: bool,
    /// Read before the answer was committed to the client, sent first.
    primed: std::collections::VecDeque<Bytes>,
    done: bool,
    idle: Duration,
    /// Fires `idle` after the last frame. Not re-armed per frame (that costs a timer
    /// update each time): when it fires early, it is moved to `last_frame + idle`.
    sleep: Pin<Box<Sleep>>,
    last_frame: Instant,
    /// When a non-stream answer must have ended (`limit_total`); `sleep` fires by then.
    total: Option<Instant>,
    /// Bytes at the front of `buf` known to hold no event boundary (SSE).
    scanned: usize,
    finish: Finish,
    on_finish: Vec<OnFinish>,
    /// Where the answer's usage block is (see `usage`).
    usage: UsageWatch,
    /// Events the client must not see (the usage-only chunk it did not ask for).
    hide: Option<fn(&[u8]) -> bool>,
}

impl Relay {
    pub fn new(upstream: UpstreamBody, format: Format, style: ErrorStyle, idle: Duration) -> Self {
        let now = Instant::now();
        Self {
            upstream,
            format,
            style,
            buf: BytesMut::new(),
            json: JsonScan::default(),
            upstream_done: false,
            cut: None,
            yielded: false,
            primed: std::collections::VecDeque::new(),
            done: false,
            idle,
            sleep: Box::pin(tokio::time::sleep_until(now + idle)),
            last_frame: now,
            total: None,
            scanned: 0,
            finish: Finish::default(),
            on_finish: Vec::new(),
            usage: UsageWatch::new(format == Format::Passthrough),
            hide: None,
        }
    }

    /// Ends a non-stream answer `within` from now however slowly it trickles (a cut,
    /// or a failed priming before anything was sent). Streams keep the idle limit only.
    pub fn limit_total(&mut self, within: Duration) {
        if self.format != Format::Passthrough {
            return;
        }
        let at = Instant::now() + within;
        self.total = Some(at);
        if at < self.sleep.deadline() {
            self.sleep.as_mut().reset(at);
        }
    }

    /// Holds back every event for which `hide` is true (still seen by the finish hook).
    pub fn hide_events(&mut self, hide: fn(&[u8]) -> bool) {
        self.hide = Some(hide);
    }

    /// Runs `f` once when the relay ends, however it ends (also when the client leaves).
    /// Hooks run in the order they were added.
    pub fn on_finish(&mut self, f: OnFinish) {
        self.on_finish.push(f);
    }

    /// What priming read, in order: the start of the answer.
    pub fn primed(&self) -> impl Iterator<Item = &Bytes> {
        self.primed.iter()
    }

    pub fn is_done(&self) -> bool {
        self.done && self.primed.is_empty()
    }

    /// The exact length of the answer when priming read all of it (a non-stream answer
    /// up to [`PRIME_LIMIT`]): hyper then sends it with a `Content-Length` in one piece
    /// instead of in chunks, whatever framing the upstream chose.
    pub fn size_hint(&self) -> http_body::SizeHint {
        if self.format == Format::Passthrough
            && self.upstream_done
            && self.hide.is_none()
            && self.cut.is_none()
            && !self.done
            && self.buf.is_empty()
        {
            let len: usize = self.primed.iter().map(Bytes::len).sum();
            if len > 0 {
                return http_body::SizeHint::with_exact(len as u64);
            }
        }
        http_body::SizeHint::default()
    }

    /// Reads ahead before anything is committed to the client, so a failure there can
    /// still be retried on another key: a stream up to its first whole event, any other
    /// answer whole if it is at most [`PRIME_LIMIT`] bytes. `Err` carries the reason.
    pub async fn prime(&mut self) -> Result<(), String> {
        let mut read = 0;
        loop {
            match std::future::poll_fn(|cx| self.poll_step(cx)).await {
                Step::Unit(b) => {
                    read += b.len();
                    self.primed.push_back(b);
                    if self.format != Format::Passthrough || read >= PRIME_LIMIT {
                        return Ok(());
                    }
                }
                Step::End => {
                    self.upstream_done = true;
                    return Ok(());
                }
                Step::Cut(reason) => return Err(reason),
                Step::Failed(e) => return Err(e.to_string()),
            }
        }
    }

    /// The next unit to send, or how the answer ended. Stream frames that are already
    /// here are all read before whole events are cut off, so what one upstream read
    /// brought (often many events) leaves in one frame and one write.
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        loop {
            if self.upstream_done || self.cut.is_some() {
                return Poll::Ready(self.last_step());
            }
            match Pin::new(&mut self.upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    self.yielded = false;
                    self.last_frame = Instant::now();
                    if let Ok(data) = frame.into_data() {
                        // HTTP/2 often ends an answer with an empty DATA frame: a unit of
                        // nothing would keep a fully sent answer from counting as done.
                        if data.is_empty() {
                            continue;
                        }
                        if self.format == Format::Passthrough {
                            return Poll::Ready(Step::Unit(data));
                        }
                        self.buf.extend_from_slice(&data);
                        if self.buf.len() >= COALESCE_LIMIT {
                            if let Some(unit) = self.take_unit() {
                                return Poll::Ready(Step::Unit(unit));
                            }
                            if self.buf.len() > MAX_EVENT {
                                self.buf = BytesMut::new();
                                self.scanned = 0;
                                self.cut = Some(format!(
                                    "an upstream event exceeded {} MiB",
                                    MAX_EVENT >> 20
                                ));
                            }
                        }
                    }
                }
                Poll::Ready(Some(Err(e))) => match self.format {
                    Format::Passthrough => return Poll::Ready(Step::Failed(e.into())),
                    _ => self.cut = Some(format!("upstream connection failed: {e}")),
                },
                Poll::Ready(None) => self.upstream_done = true,
                Poll::Pending => {
                    // The answer arrives through its connection's task: give that one
                    // turn to pass on what it already read before writing what we have.
                    if !self.yielded && !self.buf.is_empty() {
                        self.yielded = true;
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    if let Some(unit) = self.take_unit() {
                        return Poll::Ready(Step::Unit(unit));
                    }
                    return self.poll_limits(cx);
                }
            }
        }
    }

    /// Once the upstream ended or the answer was cut: the units still held, then how it ended.
    fn last_step(&mut self) -> Step {
        if let Some(unit) = self.take_unit() {
            return Step::Unit(unit);
        }
        match self.cut.take() {
            Some(reason) => Step::Cut(reason),
            None if self.ended_cleanly() => Step::End,
            None => Step::Cut("upstream ended in the middle of an event".to_owned()),
        }
    }

    /// Waits for the idle limit (and a non-stream answer's total limit); the stream is
    /// cut once one is reached.
    fn poll_limits(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        while self.sleep.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if self.total.is_some_and(|t| t <= now) {
                let reason = "the upstream answer took longer than body_timeout";
                return Poll::Ready(Step::Cut(reason.to_owned()));
            }
            let deadline = self.last_frame + self.idle;
            if deadline <= now {
                return Poll::Ready(Step::Cut("upstream went silent".to_owned()));
            }
            let next = self.total.map_or(deadline, |t| t.min(deadline));
            self.sleep.as_mut().reset(next);
        }
        Poll::Pending
    }

    /// Splits off every whole event buffered so far, as one unit: what one upstream read
    /// brought goes out in one write.
    fn take_unit(&mut self) -> Option<Bytes> {
        let end = match self.format {
            Format::Passthrough => return None,
            Format::Sse => match sse::last_boundary(&self.buf, self.scanned) {
                Some(end) => {
                    self.scanned = 0;
                    end
                }
                None => {
                    // A boundary may end in bytes yet to come: look at the last two again.
                    self.scanned = self.buf.len().saturating_sub(2);
                    return None;
                }
            },
            Format::JsonArray => {
                let end = self.json.scan(&self.buf)?;
                self.json.consumed(end);
                end
            }
        };
        Some(self.buf.split_to(end).freeze())
    }

    fn ended_cleanly(&self) -> bool {
        match self.format {
            Format::Passthrough => true,
            Format::Sse => self.buf.iter().all(u8::is_ascii_whitespace),
            Format::JsonArray => self.json.closed && self.buf.iter().all(u8::is_ascii_whitespace),
        }
    }

    /// The error event that ends this stream when it is cut.
    fn error_tail(&self, reason: &str) -> Bytes {
        cut::error_event(self.style, self.format, self.finish.bytes > 0, reason)
    }

    fn end(&mut self, truncated: Option<String>) {
        self.done = true;
        self.finish.truncated = truncated;
        self.run_hooks();
    }

    fn run_hooks(&mut self) {
        if self.on_finish.is_empty() {
            return;
        }
        self.finish.tokens = self.usage.tokens();
        for f in std::mem::take(&mut self.on_finish) {
            f(&self.finish);
        }
    }

    fn sent(&mut self, unit: &Bytes) {
        self.counted(unit);
        self.usage.seen(unit);
    }

    fn counted(&mut self, unit: &Bytes) {
        if self.finish.first_byte.is_none() {
            // When the frame holding it came in (read just now, or while priming).
            self.finish.first_byte = Some(self.last_frame);
        }
        self.finish.bytes += unit.len() as u64;
    }

    /// `unit` without the events the client must not see; `None` when nothing is left.
    /// Every event is still seen (for usage) and a unit with nothing hidden is sent as is.
    fn visible(&mut self, unit: Bytes) -> Option<Bytes> {
        let Some(hide) = self.hide else {
            self.sent(&unit);
            return Some(unit);
        };
        let events = sse::events(&unit);
        let shown: Vec<_> = events
            .iter()
            .filter(|e| !hide(&unit[(*e).clone()]))
            .collect();
        if shown.len() == events.len() {
            self.sent(&unit);
            return Some(unit);
        }
        self.usage.seen(&unit);
        let mut kept = BytesMut::new();
        for e in shown {
            kept.extend_from_slice(&unit[e.clone()]);
        }
        let kept = kept.freeze();
        if kept.is_empty() {
            return None;
        }
        self.counted(&kept);
        Some(kept)
    }
}
