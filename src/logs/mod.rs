//! The request log: one record per client request on a proxy route, with its
//! attempt chain and token counts — never prompt or completion text. Records are built
//! when the answer's last byte has gone (or at once for answers without a body to relay),
//! handed to one writer task without waiting, and committed in batches together with the
//! statistics buckets they feed. A full queue drops records (counted) rather than slow a
//! request: the log never holds up the proxy.
//!
//! Batching window: a serving thread packs its records into a chunk and queues the chunk
//! when it holds [`CHUNK_RECORDS`] records or [`CHUNK_WAIT`] (50 ms) after its first. The
//! writer wakes every [`FLUSH_EVERY`] (0.5 s), or early when about [`BATCH_MAX`] records
//! are waiting, and commits what is queued. Only the tick's commit waits for the disk (an
//! fsync); commits between ticks are made durable by it. So a record is on disk within
//! 50 ms, one tick and one commit of its request finishing, and a crash loses at most the
//! last second of the log; a serving thread that stops queues what it holds ([`LogLane`]). Handing a
//! record over never wakes the writer (it is a push onto a queue), which keeps the
//! request path free of cross-thread wake-ups.
//!
//! Live sessions still open are listed in [`OpenSessions`] until their record takes over.

mod open;
mod trace;

pub use crate::store::PackedLogs;
pub use open::{OpenSession, OpenSessions};
pub use trace::{Attempt, Finished, Relayed, Trace};

use crate::events::{Event, Hub};
use crate::metrics::Metrics;
use crate::record::RecordRef;
use crate::store::{LogCommit, Store};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

pub const FLUSH_EVERY: Duration = Duration::from_millis(500);
const BATCH_MAX: usize = 2000;
/// Records a serving thread packs into one chunk before handing it over.
const CHUNK_RECORDS: usize = 64;
/// How long a serving thread keeps a chunk that is not full.
pub const CHUNK_WAIT: Duration = Duration::from_millis(50);
/// Chunks waiting for the writer (at most `CHUNK_RECORDS` records each).
const QUEUE: usize = 1024;

/// The way to the writer.
#[derive(Clone)]
struct Queue {
    tx: mpsc::Sender<PackedLogs>,
    /// Wakes the writer early when a full batch is waiting.
    full: Arc<Notify>,
    metrics: Arc<Metrics>,
    dropped: Arc<AtomicU64>,
}

impl Queue {
    /// Queues a chunk without waiting; a full queue drops it (counted).
    fn send(&self, chunk: PackedLogs) {
        let n = chunk.len() as u64;
        if self.tx.try_send(chunk).is_err() {
            let total = self.dropped.fetch_add(n, Ordering::Relaxed) + n;
            self.metrics.set_log_dropped(total);
        } else if self.tx.max_capacity() - self.tx.capacity() >= BATCH_MAX / CHUNK_RECORDS {
            self.full.notify_one();
        }
    }
}

#[derive(Clone)]
pub struct LogSink {
    /// `None` when the log is off (`logs.enabled = false`): metrics and the feed still run.
    queue: Option<Queue>,
    hub: Hub,
    metrics: Arc<Metrics>,
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
        let queue = Queue {
            tx,
            full,
            metrics: metrics.clone(),
            dropped: Arc::new(AtomicU64::new(0)),
        };
        let sink = Self {
            queue: enabled.then_some(queue),
            hub,
            metrics,
        };
        (sink, handle)
    }

    /// Queues a finished request's record by itself and tells live subscribers (a thread
    /// that serves no lane). Never waits.
    pub fn record(&self, finished: Finished) {
        let rec = finished.view();
        self.publish(&rec, None);
        if let Some(queue) = &self.queue {
            let mut one = PackedLogs::with_capacity(1);
            one.push(&rec);
            queue.send(one);
        }
    }

    /// Counts a record in the metrics (in serving thread `lane`'s shard) and shows it to
    /// live subscribers.
    fn publish(&self, rec: &RecordRef<'_>, lane: Option<usize>) {
        self.metrics.observe(rec, lane);
        if self.hub.has_subscribers() {
            if let Ok(json) = serde_json::to_string(rec) {
                self.hub.publish(Event::Request(json.into()));
            }
        }
    }
}

/// A serving thread's side of the log: the chunk it fills and the metrics shard it counts
/// in. The serving loop owns it and passes it to each request, so a thread's batching is
/// state that can be seen where it is used rather than hidden in a thread-local.
pub struct LogLane {
    sink: LogSink,
    /// The serving thread (0-based); `None` hands each record over at once.
    lane: Option<usize>,
    /// Records waiting for the chunk to fill or its time to run out; only this serving
    /// thread takes the lock, so it is never contended.
    chunk: Mutex<PackedLogs>,
}

impl LogLane {
    pub fn new(sink: LogSink, lane: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            sink,
            lane,
            chunk: Mutex::new(PackedLogs::default()),
        })
    }

    /// Queues a finished request's record and tells live subscribers. Never waits.
    ///
    /// A serving thread packs its records into its chunk and hands the chunk over when it
    /// is full or [`CHUNK_WAIT`] after its first record: records cross threads, and are
    /// freed on the writer's, a chunk at a time.
    pub fn record(self: &Arc<Self>, finished: Finished) {
        if self.lane.is_none() {
            return self.sink.record(finished);
        }
        let rec = finished.view();
        self.sink.publish(&rec, self.lane);
        let Some(queue) = &self.sink.queue else {
            return;
        };
        let (first, full) = {
            let mut chunk = self.chunk.lock().unwrap_or_else(|e| e.into_inner());
            chunk.push(&rec);
            if chunk.len() >= CHUNK_RECORDS {
                (
                    false,
                    Some(std::mem::replace(
                        &mut *chunk,
                        PackedLogs::with_capacity(CHUNK_RECORDS),
                    )),
                )
            } else {
                (chunk.len() == 1, None)
            }
        };
        if let Some(full) = full {
            queue.send(full);
        }
        if first {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let lane = self.clone();
                    runtime.spawn(async move {
                        tokio::time::sleep(CHUNK_WAIT).await;
                        lane.flush();
                    });
                }
                // The thread's event loop is gone (it is shutting down): no timer to wait for.
                Err(_) => self.flush(),
            }
        }
    }

    /// Hands what the chunk holds to the writer now.
    fn flush(&self) {
        let chunk = std::mem::take(&mut *self.chunk.lock().unwrap_or_else(|e| e.into_inner()));
        if let (false, Some(queue)) = (chunk.is_empty(), &self.sink.queue) {
            queue.send(chunk);
        }
    }
}

/// A serving thread that stops queues what its chunk holds.
impl Drop for LogLane {
    fn drop(&mut self) {
        self.flush();
    }
}

async fn writer(store: Store, mut rx: mpsc::Receiver<PackedLogs>, full: Arc<Notify>) {
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
        let mut records = 0;
        loop {
            match rx.try_recv() {
                Ok(chunk) => {
                    records += chunk.len();
                    batch.push(chunk);
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
            if records >= BATCH_MAX {
                save(&store, std::mem::take(&mut batch), LogCommit::Deferred).await;
                records = 0;
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
async fn save(store: &Store, batch: Vec<PackedLogs>, commit: LogCommit) -> bool {
    let batch: Arc<[PackedLogs]> = batch.into();
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=5 {
        match store.append_logs_when(batch.clone(), commit).await {
            Ok(()) => return true,
            Err(e) => {
                let records: usize = batch.iter().map(PackedLogs::len).sum();
                tracing::error!(error = %e, attempt, records, "writing the request log failed");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    let records: usize = batch.iter().map(PackedLogs::len).sum();
    tracing::error!(records, "request log batch dropped after repeated failures");
    false
}
