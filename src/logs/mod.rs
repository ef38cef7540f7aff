//! The request log (SPEC 5): one record per client request on a proxy route, with its
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
//! last second of the log; a serving thread that stops queues what it holds. Handing a
//! record over never wakes the writer (it is a push onto a queue), which keeps the
//! request path free of cross-thread wake-ups.

mod trace;

pub use crate::store::PackedLogs;
pub use trace::{Attempt, Finished, Relayed, Trace};

use crate::events::{Event, Hub};
use crate::metrics::Metrics;
use crate::store::{LogCommit, Store};
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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

thread_local! {
    /// Whether this thread hands its records over in chunks (serving threads).
    static CHUNKED: Cell<bool> = const { Cell::new(false) };
    /// This serving thread's chunk being filled, with the queue it goes to.
    static CHUNK: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// Makes the current thread collect its records in chunks (a serving thread: it runs a
/// single-threaded event loop, where the flush timer runs on the same thread).
pub fn chunk_on_this_thread() {
    CHUNKED.with(|c| c.set(true));
}

/// Hands the current thread's collected records to the writer now (the flush timer, and
/// a serving thread that has stopped).
pub fn flush_this_thread() {
    let local = CHUNK.with(|c| c.borrow_mut().take());
    drop(local);
}

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

/// A serving thread's chunk; whatever it holds is sent when it is dropped.
struct Local {
    queue: Queue,
    chunk: PackedLogs,
}

impl Drop for Local {
    fn drop(&mut self) {
        if !self.chunk.is_empty() {
            self.queue.send(std::mem::take(&mut self.chunk));
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

    /// Queues a finished request's record and tells live subscribers. Never waits.
    ///
    /// A serving thread packs its records into a chunk of its own and hands the chunk
    /// over when it is full or [`CHUNK_WAIT`] after its first record: records cross
    /// threads, and are freed on the writer's, a chunk at a time. Other threads hand each
    /// record over at once.
    pub fn record(&self, finished: Finished) {
        let rec = finished.view();
        self.metrics.observe(&rec);
        if self.hub.has_subscribers() {
            if let Ok(json) = serde_json::to_string(&rec) {
                self.hub.publish(Event::Request(json.into()));
            }
        }
        let Some(queue) = &self.queue else { return };
        if !CHUNKED.with(Cell::get) {
            let mut one = PackedLogs::with_capacity(1);
            one.push(&rec);
            queue.send(one);
            return;
        }
        let first = CHUNK.with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref()
                .is_some_and(|l| !l.queue.tx.same_channel(&queue.tx))
            {
                // Another sink's chunk (several daemons in one test process): send it on.
                *c = None;
            }
            let local = c.get_or_insert_with(|| Local {
                queue: queue.clone(),
                chunk: PackedLogs::with_capacity(CHUNK_RECORDS),
            });
            local.chunk.push(&rec);
            if local.chunk.len() >= CHUNK_RECORDS {
                let full =
                    std::mem::replace(&mut local.chunk, PackedLogs::with_capacity(CHUNK_RECORDS));
                local.queue.send(full);
                return false;
            }
            local.chunk.len() == 1
        });
        if first {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(async {
                        tokio::time::sleep(CHUNK_WAIT).await;
                        flush_this_thread();
                    });
                }
                // The thread's event loop is gone (it is shutting down): no timer to wait for.
                Err(_) => flush_this_thread(),
            }
        }
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
