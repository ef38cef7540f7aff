//! The request log (SPEC 5): one record per client request on a proxy route, with its
//! attempt chain and token counts — never prompt or completion text. Records are built
//! when the answer's last byte has gone (or at once for answers without a body to relay),
//! handed to one writer task without waiting, and committed in batches together with the
//! statistics buckets they feed. A full queue drops records (counted) rather than slow a
//! request: the log never holds up the proxy.
//!
//! Batching window: the writer wakes every [`FLUSH_EVERY`] (0.5 s), or early when
//! [`BATCH_MAX`] records are waiting, and commits what is queued. Only the tick's commit
//! waits for the disk (an fsync); commits between ticks are made durable by it. So a
//! record is on disk within one tick plus one commit of its request finishing, and a crash
//! loses at most the last second of the log. Handing a record over never wakes the writer
//! (it is a push onto a queue), which keeps the request path free of cross-thread
//! wake-ups.

mod record;

pub use crate::store::{AttemptRecord, LogRecord, PackedLog};
pub use record::Trace;

use crate::events::{Event, Hub};
use crate::metrics::Metrics;
use crate::store::{LogCommit, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

pub const FLUSH_EVERY: Duration = Duration::from_millis(500);
const BATCH_MAX: usize = 2000;
const QUEUE: usize = 16_384;

#[derive(Clone)]
pub struct LogSink {
    /// `None` when the log is off (`logs.enabled = false`): metrics and the feed still run.
    /// Records packed on the serving thread (see [`LogSink::record`]).
    tx: Option<mpsc::Sender<PackedLog>>,
    /// Wakes the writer early when a full batch is waiting.
    full: Arc<Notify>,
    hub: Hub,
    metrics: Arc<Metrics>,
    dropped: Arc<AtomicU64>,
}

impl LogSink {
    /// Starts the writer task; it ends once every sink is dropped and the queue is empty.
    pub fn spawn(
        store: Store,
        hub: Hub,
        metrics: Arc<Metrics>,
        enabled: bool,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let full = Arc::new(Notify::new());
        let handle = tokio::spawn(writer(store, rx, full.clone()));
        let sink = Self {
            tx: enabled.then_some(tx),
            full,
            hub,
            metrics,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (sink, handle)
    }

    /// Queues a finished request's record and tells live subscribers. Never waits.
    pub fn record(&self, rec: LogRecord) {
        self.metrics.observe(&rec);
        if self.hub.has_subscribers() {
            if let Ok(json) = serde_json::to_string(&rec) {
                self.hub.publish(Event::Request(json.into()));
            }
        }
        if let Some(tx) = &self.tx {
            // The record crosses threads as one compact buffer: its strings are freed here,
            // on the thread that made them (cheaper for the allocator), and the store keeps
            // the buffer as it is.
            let packed = PackedLog::pack(&rec);
            drop(rec);
            if tx.try_send(packed).is_err() {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                self.metrics.set_log_dropped(n);
            } else if tx.max_capacity() - tx.capacity() >= BATCH_MAX {
                self.full.notify_one();
            }
        }
    }
}

async fn writer(store: Store, mut rx: mpsc::Receiver<PackedLog>, full: Arc<Notify>) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Batches written between ticks (a full batch, or what an early wake found) skip the
    // disk flush; the tick's commit, or an empty durable one, makes them durable. So the
    // crash window stays one tick plus a commit, with one flush per tick under any load.
    let mut deferred = false;
    loop {
        let on_tick = tokio::select! {
            _ = tick.tick() => true,
            _ = full.notified() => false,
        };
        let mut closed = false;
        let mut batch = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(packed) => batch.push(packed),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
            if batch.len() == BATCH_MAX {
                save(&store, std::mem::take(&mut batch), LogCommit::Deferred).await;
                deferred = true;
            }
        }
        let durable = on_tick || closed;
        if !batch.is_empty() {
            let commit = if durable {
                LogCommit::Durable
            } else {
                LogCommit::Deferred
            };
            let saved = save(&store, batch, commit).await;
            deferred = !(durable && saved);
        } else if durable && deferred {
            match store.sync_logs().await {
                Ok(()) => deferred = false,
                Err(e) => tracing::error!(error = %e, "flushing the request log failed"),
            }
        }
        if closed {
            return;
        }
    }
}

/// Prunes old log records and buckets once an hour, in small transactions.
pub async fn retention_loop(
    store: Store,
    log_days: u32,
    stats_days: u32,
    stop: tokio_util::sync::CancellationToken,
) {
    const DAY_MS: i64 = 24 * 3600 * 1000;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        let now = crate::keys::unix_ms();
        let logs_before = now - i64::from(log_days) * DAY_MS;
        let stats_before = now - i64::from(stats_days) * DAY_MS;
        match store.prune(logs_before, stats_before).await {
            Ok((0, 0)) => {}
            Ok((logs, buckets)) => tracing::info!(logs, buckets, "pruned old request logs"),
            Err(e) => tracing::error!(error = %e, "pruning the request log failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

/// Writes a batch, retrying a failed write a few times; false when it was dropped.
async fn save(store: &Store, batch: Vec<PackedLog>, commit: LogCommit) -> bool {
    let batch: Arc<[PackedLog]> = batch.into();
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=5 {
        match store.append_logs_when(batch.clone(), commit).await {
            Ok(()) => return true,
            Err(e) => {
                tracing::error!(error = %e, attempt, records = batch.len(), "writing the request log failed");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    tracing::error!(
        records = batch.len(),
        "request log batch dropped after repeated failures"
    );
    false
}
