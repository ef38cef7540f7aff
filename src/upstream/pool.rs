//! HTTP/2 connections to one upstream host, for one serving thread, on hyper's
//! connection-level client. Each connection carries as many streams as the server's
//! SETTINGS_MAX_CONCURRENT_STREAMS allows (Google: 100); when every open connection is
//! full, another is opened (up to `upstream.max_connections_per_host`), and only past that
//! cap does a request wait for a free stream, until its deadline. A connection being
//! opened is counted as room for as many requests as the last limit the host announced,
//! so a burst opens as many connections as it needs, not one per request.
//!
//! A new connection takes one request until the server's SETTINGS have arrived. A
//! connection that got GOAWAY, grew older than `upstream.max_connection_age`, or whose
//! keep-alive ping went unanswered takes no new request; it closes when its last stream
//! ends. Requests the server did not process (REFUSED_STREAM, or above a graceful
//! GOAWAY's last stream) are sent again here. A host that offers no `h2` in ALPN is
//! marked HTTP/1.1 and left to the caller. Retries on other keys belong to `proxy`.

use super::body::UpstreamBody;
use super::connect::Connector;
use super::place::{Next, View, next};
use super::watch::{Signals, Watched};
use super::{SendError, describe};
use bytes::Bytes;
use http::{Request, Response, Uri, header};
use http_body_util::Full;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// An idle connection is closed after this long (NAT and load balancers drop quiet ones).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How often a connection's task looks whether it is idle or old enough to close.
const REAP_EVERY: Duration = Duration::from_secs(15);
/// Sends of one request after the server said it did not process it.
const RETRIES: usize = 3;
/// The stream limit assumed for a host before any of its connections announced one
/// (hyper's and RFC 9113's suggested minimum).
const FIRST_HINT: usize = 100;

type Io = TokioIo<Watched<TokioIo<super::connect::Stream>>>;
type Conn = http2::Connection<Io, Full<Bytes>, TokioExecutor>;
type Sender = http2::SendRequest<Full<Bytes>>;
type Driven = Arc<Mutex<Option<Pin<Box<Conn>>>>>;

mod open;
use open::Count;
pub use open::Settings;

/// One host's connections (per serving thread).
pub struct Host {
    base: Uri,
    state: Mutex<State>,
    changed: Arc<Notify>,
    settings: Settings,
}

#[derive(Default)]
struct State {
    conns: Vec<Entry>,
    connecting: usize,
    /// Requests in `acquire` without a stream (those opening a connection included).
    waiting: usize,
    hint: usize,
    http1: bool,
    next_id: u64,
}

struct Entry {
    id: u64,
    sender: Sender,
    signals: Arc<Signals>,
    /// The connection's dispatch task, polled by its own task; kept here to read the
    /// server's current stream limit. `None` once it has ended.
    conn: Driven,
    in_flight: usize,
    born: Instant,
    idle_since: Instant,
}

/// A stream held on a connection: given back when dropped.
pub struct Slot {
    host: Arc<Host>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.host.release(self.id);
    }
}

pub enum Sent {
    Answer(Response<UpstreamBody>),
    /// The host speaks HTTP/1.1 only: the request, unsent.
    Http1(Request<Full<Bytes>>),
}

enum Got {
    Stream(Slot, Sender),
    Http1,
}

enum Look {
    Got(Got),
    Open,
    Wait,
}

impl Host {
    /// `base`: `https://host[:port]/`.
    pub fn new(base: Uri, settings: &Settings) -> Arc<Self> {
        Arc::new(Self {
            base,
            state: Mutex::new(State {
                hint: FIRST_HINT,
                ..State::default()
            }),
            changed: Arc::new(Notify::new()),
            settings: settings.clone(),
        })
    }

    pub fn authority(&self) -> Option<&http::uri::Authority> {
        self.base.authority()
    }

    /// Sends `req` (absolute URI) on a stream of this host's connections and waits for the
    /// answer head; the caller bounds it by the request's deadline.
    pub async fn send(
        self: &Arc<Self>,
        connector: &Connector,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Sent, SendError> {
        req.headers_mut().remove(header::HOST);
        for attempt in 0..=RETRIES {
            let (slot, mut sender) = match self.acquire(connector).await? {
                Got::Http1 => return Ok(Sent::Http1(req)),
                Got::Stream(slot, sender) => (slot, sender),
            };
            let spare = (attempt < RETRIES).then(|| super::copy(&req));
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let held: super::body::Held = Box::new(slot);
                    return Ok(Sent::Answer(resp.map(|b| UpstreamBody::pooled(b, held))));
                }
                Err(mut e) => match (e.take_message(), spare) {
                    (Some(unsent), _) => req = unsent,
                    (None, Some(again)) if unprocessed(e.error()) => req = again,
                    _ => return Err(SendError::Failed(describe(&e.into_error()))),
                },
            }
        }
        Err(SendError::Failed(
            "the upstream refused the request on every try".to_owned(),
        ))
    }

    async fn acquire(self: &Arc<Self>, connector: &Connector) -> Result<Got, SendError> {
        let mut waiting = None;
        let mut look = self.look(&mut waiting);
        loop {
            match look {
                Look::Got(got) => return Ok(got),
                Look::Open => return self.open(connector).await,
                Look::Wait => {}
            }
            // Registered before looking again, so no change between the two is missed.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            look = self.look(&mut waiting);
            if matches!(look, Look::Wait) {
                notified.await;
                look = self.look(&mut waiting);
            }
        }
    }

    /// One look at the connections: a stream taken, or what to do. From the first look
    /// that finds none, the request counts as waiting (`waiting` holds that count).
    fn look<'a>(self: &'a Arc<Self>, waiting: &mut Option<Count<'a>>) -> Look {
        let mut st = self.state.lock().unwrap();
        if st.http1 {
            return Look::Got(Got::Http1);
        }
        if waiting.is_none() {
            st.waiting += 1;
        }
        let next = self.place(&mut st);
        if let Next::Use(i) = next {
            if waiting.is_none() {
                st.waiting -= 1;
            }
            let e = &mut st.conns[i];
            e.in_flight += 1;
            let slot = Slot {
                host: self.clone(),
                id: e.id,
            };
            return Look::Got(Got::Stream(slot, e.sender.clone()));
        }
        if waiting.is_none() {
            *waiting = Some(Count {
                host: self,
                field: |s| &mut s.waiting,
                notify: false,
            });
        }
        if next == Next::Open {
            Look::Open
        } else {
            Look::Wait
        }
    }

    /// Drops the connections that have no stream and take no new request or were idle
    /// too long, then says where the next request goes.
    fn place(&self, st: &mut State) -> Next {
        let now = Instant::now();
        let mut views: Vec<View> = st.conns.iter().map(|e| self.view(e, now)).collect();
        let gone = |v: &View, e: &Entry| {
            e.in_flight == 0 && (!v.open || now - e.idle_since >= IDLE_TIMEOUT)
        };
        if views.iter().zip(&st.conns).any(|(v, e)| gone(v, e)) {
            let keep: Vec<bool> = views
                .iter()
                .zip(&st.conns)
                .map(|(v, e)| !gone(v, e))
                .collect();
            let mut i = 0;
            st.conns.retain(|_| (keep[i], i += 1).0);
            let mut i = 0;
            views.retain(|_| (keep[i], i += 1).0);
        }
        if let Some(v) = views.iter().find(|v| v.settled && v.open) {
            st.hint = v.limit;
        }
        next(
            &views,
            st.connecting,
            st.waiting,
            st.hint,
            self.settings.cap,
        )
    }

    fn view(&self, e: &Entry, now: Instant) -> View {
        let aged = self.settings.max_age.is_some_and(|age| now - e.born >= age);
        let open = !aged && !e.sender.is_closed() && !e.signals.going_away();
        let settled = e.signals.settled();
        let limit = match e.conn.lock().unwrap().as_ref() {
            Some(c) if settled => c.current_max_send_streams(),
            Some(_) => 1,
            None => 0,
        };
        View {
            open,
            in_flight: e.in_flight,
            limit,
            settled,
        }
    }
}

/// True when the server said it did not act on the request: the stream was refused, or
/// it was above the last stream of a graceful GOAWAY (h2 reports those with the GOAWAY's
/// NO_ERROR; a GOAWAY with an error code may also end streams the server did process).
fn unprocessed(e: &hyper::Error) -> bool {
    let Some(h2) = std::error::Error::source(e).and_then(|s| s.downcast_ref::<h2::Error>()) else {
        return false;
    };
    let reason = h2.reason();
    h2.is_remote()
        && ((h2.is_reset() && reason == Some(h2::Reason::REFUSED_STREAM))
            || (h2.is_go_away() && reason == Some(h2::Reason::NO_ERROR)))
}
