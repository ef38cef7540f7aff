//! Opening, releasing and closing the connections of one host: the handshake, the task
//! that drives each connection and looks now and then whether it should close, and the
//! counts of requests waiting and connections being opened.

use super::{Driven, Entry, Got, Host, REAP_EVERY, Slot, State};
use crate::config::UpstreamConfig;
use crate::upstream::connect::Connector;
use crate::upstream::watch::{Signals, Watched};
use crate::upstream::{SendError, connect_error, describe};
use hyper::client::conn::http2;
use hyper_util::client::legacy::connect::Connection as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// How connections are made and kept, from `[upstream]`.
#[derive(Clone)]
pub struct Settings {
    pub(super) cap: usize,
    pub(super) max_age: Option<Duration>,
    builder: http2::Builder<TokioExecutor>,
}

impl Settings {
    pub fn new(cfg: &UpstreamConfig) -> Self {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new());
        if !cfg.keepalive_interval.is_zero() {
            builder
                .keep_alive_interval(cfg.keepalive_interval)
                .keep_alive_timeout(cfg.keepalive_timeout)
                .keep_alive_while_idle(true);
        }
        Self {
            cap: cfg.max_connections_per_host,
            max_age: (!cfg.max_connection_age.is_zero()).then_some(cfg.max_connection_age),
            builder,
        }
    }
}

impl Host {
    /// Opens a connection and takes its first stream.
    pub(super) async fn open(self: &Arc<Self>, connector: &Connector) -> Result<Got, SendError> {
        self.state.lock().unwrap().connecting += 1;
        let _connecting = Count {
            host: self,
            field: |s| &mut s.connecting,
            notify: true,
        };
        let io = connector
            .connect(self.base.clone())
            .await
            .map_err(|e| connect_error(&*e))?;
        if !io.connected().is_negotiated_h2() {
            self.state.lock().unwrap().http1 = true;
            self.changed.notify_waiters();
            return Ok(Got::Http1);
        }
        let signals = Signals::new(self.changed.clone());
        let io = TokioIo::new(Watched::new(TokioIo::new(io), signals.clone()));
        let (sender, conn) = self
            .settings
            .builder
            .handshake(io)
            .await
            .map_err(|e| SendError::Failed(describe(&e)))?;
        let conn = Arc::new(Mutex::new(Some(Box::pin(conn))));
        let now = Instant::now();
        let mut st = self.state.lock().unwrap();
        let id = st.next_id;
        st.next_id += 1;
        tokio::spawn(drive(conn.clone(), Arc::downgrade(self), id));
        st.conns.push(Entry {
            id,
            sender: sender.clone(),
            signals,
            conn,
            in_flight: 1,
            born: now,
            idle_since: now,
        });
        let slot = Slot {
            host: self.clone(),
            id,
        };
        Ok(Got::Stream(slot, sender))
    }

    pub(super) fn release(&self, id: u64) {
        let mut st = self.state.lock().unwrap();
        if let Some(e) = st.conns.iter_mut().find(|e| e.id == id) {
            e.in_flight -= 1;
            if e.in_flight == 0 {
                e.idle_since = Instant::now();
            }
        }
        drop(st);
        self.changed.notify_one();
    }

    /// Closes connection `id` when it is idle past its time or too old; true when gone.
    fn reap(&self, id: u64) -> bool {
        let mut st = self.state.lock().unwrap();
        self.place(&mut st);
        !st.conns.iter().any(|e| e.id == id)
    }
}

/// Runs a connection's dispatch until it ends, looking now and then whether it should
/// close; then drops it (requests queued on it come back unsent, its senders read as
/// closed) and wakes the waiting requests.
async fn drive(conn: Driven, host: Weak<Host>, id: u64) {
    let run = std::future::poll_fn(|cx| match conn.lock().unwrap().as_mut() {
        Some(c) => c.as_mut().poll(cx),
        None => std::task::Poll::Ready(Ok(())),
    });
    tokio::pin!(run);
    let mut tick = tokio::time::interval_at(Instant::now() + REAP_EVERY, REAP_EVERY);
    let mut kept = true;
    while kept {
        tokio::select! {
            _ = &mut run => break,
            _ = tick.tick() => kept = host.upgrade().is_some_and(|h| !h.reap(id)),
        }
    }
    if !kept {
        // Out of the pool: the dispatch ends by itself once its streams have.
        let _ = run.await;
    }
    let ended = conn.lock().unwrap().take();
    drop(ended);
    if let Some(h) = host.upgrade() {
        h.changed.notify_waiters();
    }
}

/// A counter in the host's state, already raised, lowered when this is dropped.
pub(super) struct Count<'a> {
    pub(super) host: &'a Host,
    pub(super) field: fn(&mut State) -> &mut usize,
    /// Wake the waiting requests then (fewer connections being opened: one of them may
    /// have to open another).
    pub(super) notify: bool,
}

impl Drop for Count<'_> {
    fn drop(&mut self) {
        *(self.field)(&mut self.host.state.lock().unwrap()) -= 1;
        if self.notify {
            self.host.changed.notify_waiters();
        }
    }
}
