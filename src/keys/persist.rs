//! The one task that writes pool state to the store. The pool only announces what changed
//! ([`Dirty`]); the writer reads the current in-memory value when it commits, so a burst
//! of changes to one key becomes one write, and writes can never land out of order.
//!
//! Admin changes wait for their write with [`Persister::sync`] before answering; request-
//! path changes never wait. A failed commit is retried with the changes kept. The quota
//! ledger's counts, which change with every request to a limited key, are saved every
//! [`LEDGER_EVERY`] and with each sync instead.

use super::Pool;
use crate::store::{Store, Write};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dirty {
    /// The key-level record (added, removed, invalid, disabled, note).
    Key(String),
    /// The (key, model) state.
    Model(String, String),
}

pub enum Msg {
    Dirty(Dirty),
    Sync(oneshot::Sender<()>),
}

/// Handle for waiting until everything announced so far is on disk.
#[derive(Clone)]
pub struct Persister {
    tx: mpsc::UnboundedSender<Msg>,
}

impl Persister {
    pub async fn sync(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Sync(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Creates the queue: the pool sends [`Msg::Dirty`] on it, [`Persister`] sends syncs.
pub fn channel() -> (mpsc::UnboundedSender<Msg>, mpsc::UnboundedReceiver<Msg>) {
    mpsc::unbounded_channel()
}

/// Starts the writer on the queue from [`channel`]. It runs until aborted at shutdown,
/// which first calls [`Persister::sync`] so nothing announced is lost.
pub fn spawn(
    pool: Arc<Pool>,
    store: Store,
    tx: mpsc::UnboundedSender<Msg>,
    mut rx: mpsc::UnboundedReceiver<Msg>,
) -> (Persister, tokio::task::JoinHandle<()>) {
    let handle = tokio::spawn(async move {
        let mut pending: BTreeSet<Dirty> = BTreeSet::new();
        let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
        let mut ledger = tokio::time::interval(LEDGER_EVERY);
        ledger.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => m,
                    None => break,
                },
                _ = ledger.tick() => {
                    save_ledger(&pool, &store).await;
                    continue;
                }
            };
            take(first, &mut pending, &mut waiters);
            while let Ok(m) = rx.try_recv() {
                take(m, &mut pending, &mut waiters);
            }
            flush(&pool, &store, &mut pending).await;
            if !waiters.is_empty() {
                save_ledger(&pool, &store).await;
            }
            for w in waiters.drain(..) {
                let _ = w.send(());
            }
        }
    });
    (Persister { tx }, handle)
}

fn take(m: Msg, pending: &mut BTreeSet<Dirty>, waiters: &mut Vec<oneshot::Sender<()>>) {
    match m {
        Msg::Dirty(d) => {
            pending.insert(d);
        }
        Msg::Sync(w) => waiters.push(w),
    }
}

async fn flush(pool: &Pool, store: &Store, pending: &mut BTreeSet<Dirty>) {
    if pending.is_empty() {
        return;
    }
    let writes: Vec<Write> = pending.iter().map(|d| snapshot(pool, d)).collect();
    let mut delay = Duration::from_millis(100);
    loop {
        match store.apply(writes.clone()).await {
            Ok(()) => break,
            Err(e) => {
                tracing::error!(error = %e, retry_in = ?delay, "saving key state failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
    pending.clear();
}

/// How often the quota ledger's counts are saved (redb). A crash loses at most the
/// counts of this long; a shutdown saves them all (it syncs first).
pub const LEDGER_EVERY: Duration = Duration::from_secs(5);

/// Saves the ledger counts that changed since the last save, in one commit. The
/// request path only flags a key's ledger; this reads the counts when it saves. On
/// Redis the counts are shared in Redis as requests go, so nothing is saved here.
async fn save_ledger(pool: &Pool, store: &Store) {
    if matches!(store, Store::Redis(_)) {
        return;
    }
    let now = super::unix_ms();
    let mut writes = Vec::new();
    for e in pool.entries() {
        for (model, usage) in e.take_ledger(now) {
            let key_id = e.id.clone();
            writes.push(match usage {
                Some(usage) => Write::PutUsage {
                    key_id,
                    model,
                    usage,
                },
                None => Write::DeleteUsage { key_id, model },
            });
        }
    }
    if let Err(e) = store.apply(writes).await {
        tracing::warn!(error = %e, "saving the quota ledger failed; the next change saves it");
    }
}

/// The write that makes the store match the pool's current value.
fn snapshot(pool: &Pool, d: &Dirty) -> Write {
    match d {
        Dirty::Key(id) => match pool.get(id) {
            Some(e) => Write::PutKey(e.record()),
            None => Write::DeleteKey(id.clone()),
        },
        Dirty::Model(id, model) => match pool.get(id).and_then(|e| e.model_state(model)) {
            Some(state) => Write::PutModelState {
                key_id: id.clone(),
                model: model.clone(),
                state,
            },
            None => Write::DeleteModelState {
                key_id: id.clone(),
                model: model.clone(),
            },
        },
    }
}
