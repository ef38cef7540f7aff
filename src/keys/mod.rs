//! The upstream key pool: which keys exist, what state each is in (per key and per
//! key × model), choosing one for a request, and what an upstream answer does to it.
//!
//! The pool is the hot-path authority: it lives in memory, read through an `ArcSwap`
//! snapshot of the key list (replaced whole on edits), with one short `Mutex` per key for
//! its state. It never waits on the store: changes are announced to the persistence task
//! (`persist`), which writes them in coalesced batches. Time is passed in as Unix ms.

mod admin;
pub mod classify;
mod entry;
pub mod format;
pub mod google_error;
mod groups;
mod ledger;
mod limits;
pub mod persist;
mod quota;
mod select;
pub mod shared;

use crate::config::PoolConfig;
use crate::events::{Hub, KeyChange};
use crate::secret::{Secret, fingerprint};
use crate::store::{Invalid, KeyRecord, ModelState, Snapshot};
use arc_swap::ArcSwap;
use classify::Outcome;
use entry::EntryGuard;
use groups::Keys;
use persist::{Dirty, Msg};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::sync::mpsc;

pub use entry::{KeyEntry, KeyStatus};
pub use quota::next_pacific_midnight;
pub use select::{Lease, NoKey};

/// The stable id of an upstream key: a prefix of its SHA-256, safe to show and to put in URLs.
pub fn key_id(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub struct Pool {
    keys: ArcSwap<Keys>,
    cfg: PoolConfig,
    /// Woken when a lease ends or a key comes back, for requests queueing for a key.
    freed: Arc<select::Freed>,
    dirty: mpsc::UnboundedSender<Msg>,
    hub: Hub,
    /// The quota ledger of every instance, with a shared Redis.
    shared: std::sync::OnceLock<shared::SharedLedger>,
}

impl Pool {
    pub fn new(
        cfg: PoolConfig,
        snapshot: &Snapshot,
        dirty: mpsc::UnboundedSender<Msg>,
        hub: Hub,
    ) -> Self {
        let list: Vec<Arc<KeyEntry>> = snapshot
            .keys
            .iter()
            .map(|r| Arc::new(KeyEntry::new(r.clone())))
            .collect();
        let keys = Keys::build(list, &cfg.groups);
        for (key_id, model, state) in &snapshot.model_states {
            if let Some(e) = keys.by_id.get(key_id) {
                e.lock().models.insert(model.clone(), state.clone());
            }
        }
        let pool = Self {
            keys: ArcSwap::from_pointee(keys),
            cfg,
            freed: Arc::default(),
            dirty,
            hub,
            shared: Default::default(),
        };
        for (key_id, model, rec) in &snapshot.usage {
            if let Some(e) = pool.get(key_id) {
                let usage = ledger::Usage::from_record(rec);
                e.lock().usage.insert(model.clone(), usage);
            }
        }
        for e in pool.entries() {
            pool.compile_limits(&e);
        }
        pool
    }

    pub fn config(&self) -> &PoolConfig {
        &self.cfg
    }

    pub fn len(&self) -> usize {
        self.keys.load().list.len()
    }

    pub fn get(&self, id: &str) -> Option<Arc<KeyEntry>> {
        self.keys.load().by_id.get(id).cloned()
    }

    pub fn entries(&self) -> Vec<Arc<KeyEntry>> {
        self.keys.load().list.clone()
    }

    /// Adds keys not yet in the pool; answers the records that were added.
    pub fn add(&self, keys: &[(Secret, Option<String>)], now: i64) -> Vec<KeyRecord> {
        let mut added = Vec::new();
        self.keys.rcu(|current| {
            added.clear();
            let mut list = current.list.clone();
            let mut seen: std::collections::HashSet<String> =
                current.by_id.keys().cloned().collect();
            for (key, note) in keys {
                let id = key_id(key.expose());
                if !seen.insert(id.clone()) {
                    continue;
                }
                let rec = KeyRecord {
                    id,
                    key: key.clone(),
                    note: note.clone(),
                    disabled: false,
                    invalid: None,
                    created_at: now / 1000,
                    project: None,
                    limits: Default::default(),
                    group: None,
                    proxy: None,
                };
                added.push(rec.clone());
                list.push(Arc::new(KeyEntry::new(rec)));
            }
            self.keys_of(list)
        });
        for rec in &added {
            if let Some(e) = self.get(&rec.id) {
                self.compile_limits(&e);
            }
            self.mark(Dirty::Key(rec.id.clone()));
            self.announce(
                &rec.id,
                &fingerprint(rec.key.expose()),
                "added",
                None,
                None,
                None,
            );
        }
        self.freed.notify_all();
        added
    }

    /// Applies what an upstream answer means for (key, model).
    pub fn report(&self, entry: &KeyEntry, model: &str, outcome: &Outcome, now: i64) {
        if matches!(outcome, Outcome::Success | Outcome::ClientError) && entry.is_plain() {
            return; // no state to clear
        }
        let s = entry.lock();
        match outcome {
            Outcome::Success => self.succeeded(entry, s, model),
            Outcome::ClientError => {}
            Outcome::Invalid { reason } => self.retired(entry, s, reason, now),
            Outcome::RateLimited {
                retry_after,
                exhausted,
                reason,
                project,
                shared,
                limits,
            } => {
                drop(s);
                let hit = quota::Hit {
                    limits,
                    model,
                    exhausted: *exhausted,
                    retry_after: *retry_after,
                    reason,
                    project: project.as_deref(),
                    shared: *shared,
                };
                self.quota_hit(entry, &hit, now);
            }
            Outcome::Transient { reason } => self.failed(entry, s, model, reason, now),
        }
    }

    /// A success clears the model's cool-down and streaks; learned limits stay.
    fn succeeded(&self, entry: &KeyEntry, mut s: EntryGuard<'_>, model: &str) {
        let Some(m) = s.models.get_mut(model) else {
            return;
        };
        let kept = ModelState {
            limits: m.limits,
            ..ModelState::default()
        };
        if *m != kept {
            if kept.is_default() {
                s.models.remove(model);
            } else {
                *m = kept;
            }
            drop(s);
            self.mark(Dirty::Model(entry.id.clone(), model.to_owned()));
        }
    }

    /// Google said the key is invalid, suspended or denied: it serves no more.
    fn retired(&self, entry: &KeyEntry, mut s: EntryGuard<'_>, reason: &str, now: i64) {
        s.invalid = Some(Invalid {
            reason: reason.to_owned(),
            at: now / 1000,
        });
        drop(s);
        self.mark(Dirty::Key(entry.id.clone()));
        tracing::warn!(key = %entry.brief, %reason, "upstream key retired");
        self.announce(&entry.id, &entry.brief, "retired", None, Some(reason), None);
    }

    /// A transient failure adds to the model's streak; `failure_threshold` of them in a
    /// row cool the key for the model.
    fn failed(&self, entry: &KeyEntry, mut s: EntryGuard<'_>, model: &str, reason: &str, now: i64) {
        let m = s.models.entry(model.to_owned()).or_default();
        m.failure_streak += 1;
        m.last_error = Some(reason.to_owned());
        let cooled = if m.failure_streak >= self.cfg.failure_threshold {
            m.failure_streak = 0;
            m.cooling_until_ms = now + self.cfg.failure_cooldown.as_millis() as i64;
            m.cooling_reason = format!("{} consecutive failures", self.cfg.failure_threshold);
            Some((m.cooling_until_ms, m.cooling_reason.clone()))
        } else {
            None
        };
        drop(s);
        self.mark(Dirty::Model(entry.id.clone(), model.to_owned()));
        if let Some((until, reason)) = cooled {
            self.announce(
                &entry.id,
                &entry.brief,
                "cooled",
                Some(model),
                Some(&reason),
                Some(until),
            );
        }
    }

    /// Counts the prompt tokens of an answer that ended at `now` in the ledger of
    /// (key, model), for a token limit.
    pub fn count_tokens(&self, entry: &KeyEntry, model: &str, prompt_tokens: u64, now: i64) {
        let counted = entry.spend_tokens(model, prompt_tokens, now).is_some();
        if let Some(shared) = self.shared.get().filter(|_| counted) {
            shared.add_tokens(&entry.id, model, prompt_tokens, now);
        }
    }

    /// Shares the quota ledger with the other instances on a Redis.
    pub fn share_ledger(&self, ledger: shared::SharedLedger) {
        let _ = self.shared.set(ledger);
    }

    /// With a shared ledger, counts a leased (key, model) that has limits there too (one
    /// round trip). False when the other instances' requests filled it: the (key, model)
    /// is then out locally until the shared ledger has room, and the caller drops the
    /// lease and tries another key. Redis trouble leaves the local ledger alone in charge.
    pub async fn confirm(&self, lease: &Lease, model: &str, now: i64) -> bool {
        let (Some(shared), Some(limits)) = (self.shared.get(), lease.limits) else {
            return true;
        };
        let Some(t) = shared.take(&lease.entry.id, model, &limits, now).await else {
            return true;
        };
        let used = ledger::Used {
            minute: t.minute,
            today: t.today,
            tokens_minute: t.tokens_minute,
        };
        lease.entry.ledger(model, |u| {
            if !t.counted {
                u.uncount();
            }
            u.shared(used, (!t.counted).then_some(t.out_until_ms), now);
        });
        t.counted
    }

    /// With a shared ledger, counts a leased (key, model) that has limits there too, with
    /// no check: for a request only that key can serve, so the others see its use.
    pub async fn count_shared(&self, lease: &Lease, model: &str, now: i64) {
        let (Some(shared), Some(_)) = (self.shared.get(), lease.limits) else {
            return;
        };
        let unchecked = crate::store::QuotaLimits::default();
        if let Some(t) = shared.take(&lease.entry.id, model, &unchecked, now).await {
            let used = ledger::Used {
                minute: t.minute,
                today: t.today,
                tokens_minute: t.tokens_minute,
            };
            lease.entry.ledger(model, |u| u.shared(used, None, now));
        }
    }

    /// With a shared ledger, forgets the counts every instance made of the keys `ids`
    /// (the admin reset them) and has the other instances forget theirs. Redis trouble
    /// leaves the shared counts to age out.
    pub async fn reset_shared(&self, ids: &[&str], now: i64) {
        if let Some(shared) = self.shared.get() {
            let all = ids.iter().map(|id| shared.reset(id, now));
            futures_util::future::join_all(all).await;
        }
    }

    /// Forgets the ledger's counts of a key here (another instance reset it).
    pub fn forget_usage(&self, id: &str) {
        let Some(entry) = self.get(id) else {
            return;
        };
        // Emptied, not removed, so that the next save deletes the saved counts.
        let mut s = entry.lock();
        s.usage.values_mut().for_each(|u| *u = Default::default());
        drop(s);
        entry
            .ledger_dirty
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.freed.notify_all();
    }

    /// Brings an invalid key back (re-validated) without touching its other state.
    pub fn revive(&self, entry: &KeyEntry) {
        let was_invalid = entry.lock().invalid.take().is_some();
        if was_invalid {
            self.mark(Dirty::Key(entry.id.clone()));
            self.announce(&entry.id, &entry.brief, "revived", None, None, None);
            self.freed.notify_all();
        }
    }

    /// Tells the live feed about a key's change.
    fn announce(
        &self,
        id: &str,
        brief: &str,
        change: &'static str,
        model: Option<&str>,
        reason: Option<&str>,
        until_ms: Option<i64>,
    ) {
        self.hub.key(KeyChange {
            id: id.to_owned(),
            brief: brief.to_owned(),
            change,
            model: model.map(str::to_owned),
            reason: reason.map(str::to_owned),
            until_ms,
        });
    }

    fn mark(&self, d: Dirty) {
        // The writer outlives every request; if it is gone we are shutting down.
        let _ = self.dirty.send(Msg::Dirty(d));
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod bench;
