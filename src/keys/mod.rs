//! The upstream key pool: which keys exist, what state each is in (per key and per
//! key × model), choosing one for a request, and what an upstream answer does to it.
//!
//! The pool is the hot-path authority: it lives in memory, read through an `ArcSwap`
//! snapshot of the key list (replaced whole on edits), with one short `Mutex` per key for
//! its state. It never waits on the store: changes are announced to the persistence task
//! (`persist`), which writes them in coalesced batches. Time is passed in as Unix ms.

mod admin;
pub mod classify;
pub mod format;
pub mod google_error;
mod ledger;
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
use persist::{Dirty, Msg};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

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

/// The state a key shows for one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    Active,
    Cooling,
    /// The key's tier does not include the model (for that model only).
    Unavailable,
    Invalid,
    Disabled,
}

pub struct KeyEntry {
    pub id: String,
    pub key: Secret,
    /// The key as an `x-goog-api-key` value (marked sensitive), made once.
    pub goog_header: Option<http::HeaderValue>,
    pub brief: String,
    pub created_at: i64,
    state: Mutex<EntryState>,
    /// The state is plain: enabled, valid, no per-model state. Set whenever the state's
    /// lock is let go ([`EntryGuard`]); lets selection and success reports, the common
    /// case, skip the lock the serving threads would otherwise take in turn.
    plain: AtomicBool,
    in_flight: AtomicU32,
    requests: AtomicU64,
    /// Requests since the last daily reset, and when the current day ends (Unix ms).
    today: AtomicU64,
    day_end_ms: AtomicI64,
}

#[derive(Default)]
struct EntryState {
    note: Option<String>,
    project: Option<String>,
    disabled: bool,
    invalid: Option<Invalid>,
    models: HashMap<String, ModelState>,
    /// The ledger's counts, for the models with known limits.
    usage: HashMap<String, ledger::Usage>,
}

impl EntryState {
    fn plain(&self) -> bool {
        !self.disabled && self.invalid.is_none() && self.models.is_empty()
    }
}

/// The locked state of a key; records whether it is plain when let go.
struct EntryGuard<'a> {
    state: std::sync::MutexGuard<'a, EntryState>,
    plain: &'a AtomicBool,
}

impl std::ops::Deref for EntryGuard<'_> {
    type Target = EntryState;
    fn deref(&self) -> &EntryState {
        &self.state
    }
}

impl std::ops::DerefMut for EntryGuard<'_> {
    fn deref_mut(&mut self) -> &mut EntryState {
        &mut self.state
    }
}

impl Drop for EntryGuard<'_> {
    fn drop(&mut self) {
        let plain = self.state.plain();
        if self.plain.load(Ordering::Relaxed) != plain {
            self.plain.store(plain, Ordering::Release);
        }
    }
}

impl KeyEntry {
    pub(crate) fn new(rec: KeyRecord) -> Self {
        let goog_header = http::HeaderValue::from_str(rec.key.expose())
            .ok()
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        Self {
            brief: fingerprint(rec.key.expose()),
            goog_header,
            id: rec.id,
            key: rec.key,
            created_at: rec.created_at,
            plain: AtomicBool::new(!rec.disabled && rec.invalid.is_none()),
            state: Mutex::new(EntryState {
                note: rec.note,
                project: rec.project,
                disabled: rec.disabled,
                invalid: rec.invalid,
                models: HashMap::new(),
                usage: HashMap::new(),
            }),
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            today: AtomicU64::new(0),
            day_end_ms: AtomicI64::new(0),
        }
    }

    /// Counts one request towards today's usage.
    fn count_request(&self, now: i64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if now >= self.day_end_ms.load(Ordering::Relaxed) {
            self.today.store(0, Ordering::Relaxed);
            self.day_end_ms
                .store(next_pacific_midnight(now), Ordering::Relaxed);
        }
        self.today.fetch_add(1, Ordering::Relaxed);
    }

    fn lock(&self) -> EntryGuard<'_> {
        // A panic while holding this lock leaves plain data behind; keep serving.
        EntryGuard {
            state: self.state.lock().unwrap_or_else(|e| e.into_inner()),
            plain: &self.plain,
        }
    }

    /// Enabled, valid, and no model cooling or remembered (read without the lock).
    fn is_plain(&self) -> bool {
        self.plain.load(Ordering::Acquire)
    }

    pub fn record(&self) -> KeyRecord {
        let s = self.lock();
        KeyRecord {
            id: self.id.clone(),
            key: self.key.clone(),
            note: s.note.clone(),
            disabled: s.disabled,
            invalid: s.invalid.clone(),
            created_at: self.created_at,
            project: s.project.clone(),
        }
    }

    /// The Cloud project whose quotas the key shares, if known.
    pub fn project(&self) -> Option<String> {
        self.lock().project.clone()
    }

    pub fn model_state(&self, model: &str) -> Option<ModelState> {
        self.lock().models.get(model).cloned()
    }

    /// The key's status for `model` at `now`, and when a cooling key comes back.
    pub fn status(&self, model: &str, now: i64) -> (KeyStatus, i64) {
        if self.is_plain() {
            return (KeyStatus::Active, 0);
        }
        let mut guard = self.lock();
        let s = &mut *guard;
        if s.disabled {
            return (KeyStatus::Disabled, 0);
        }
        if s.invalid.is_some() {
            return (KeyStatus::Invalid, 0);
        }
        match s.models.get(model) {
            Some(m) if m.unavailable_until_ms > now => {
                (KeyStatus::Unavailable, m.unavailable_until_ms)
            }
            Some(m) if m.cooling_until_ms > now => (KeyStatus::Cooling, m.cooling_until_ms),
            // A known limit reached: out until the ledger has room again.
            Some(m) if !m.limits.is_empty() => {
                let full = match s.usage.get_mut(model) {
                    Some(u) => u.full_until(&m.limits, now),
                    None => None,
                };
                full.map_or((KeyStatus::Active, 0), |t| (KeyStatus::Cooling, t))
            }
            _ => (KeyStatus::Active, 0),
        }
    }

    /// Counts a request for `model` in the ledger when its limits are known.
    fn spend(&self, model: &str, now: i64) {
        if self.is_plain() {
            return;
        }
        let mut guard = self.lock();
        let s = &mut *guard;
        if let Some(m) = s.models.get(model).filter(|m| !m.limits.is_empty()) {
            s.usage
                .entry(model.to_owned())
                .or_default()
                .count(&m.limits, now);
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Keys {
    list: Vec<Arc<KeyEntry>>,
    by_id: HashMap<String, Arc<KeyEntry>>,
}

impl Keys {
    fn from_list(list: Vec<Arc<KeyEntry>>) -> Self {
        let by_id = list.iter().map(|e| (e.id.clone(), e.clone())).collect();
        Self { list, by_id }
    }
}

pub struct Pool {
    keys: ArcSwap<Keys>,
    cursor: AtomicUsize,
    cfg: PoolConfig,
    /// Woken when a lease ends or a key comes back, for requests queueing for a key.
    freed: Arc<select::Freed>,
    dirty: mpsc::UnboundedSender<Msg>,
    hub: Hub,
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
        let keys = Keys::from_list(list);
        for (key_id, model, state) in &snapshot.model_states {
            if let Some(e) = keys.by_id.get(key_id) {
                e.lock().models.insert(model.clone(), state.clone());
            }
        }
        Self {
            keys: ArcSwap::from_pointee(keys),
            cursor: AtomicUsize::new(0),
            cfg,
            freed: Arc::default(),
            dirty,
            hub,
        }
    }

    pub fn config(&self) -> &PoolConfig {
        &self.cfg
    }

    pub fn len(&self) -> usize {
        self.keys.load().list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
                };
                added.push(rec.clone());
                list.push(Arc::new(KeyEntry::new(rec)));
            }
            Keys::from_list(list)
        });
        for rec in &added {
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
        let mut s = entry.lock();
        match outcome {
            Outcome::Success => {
                // A success clears the cool-down and streaks; learned limits stay.
                let Some(m) = s.models.get_mut(model) else {
                    return;
                };
                let kept = ModelState {
                    limits: m.limits.clone(),
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
            Outcome::ClientError => {}
            Outcome::Invalid { reason } => {
                s.invalid = Some(Invalid {
                    reason: reason.clone(),
                    at: now / 1000,
                });
                drop(s);
                self.mark(Dirty::Key(entry.id.clone()));
                tracing::warn!(key = %entry.brief, %reason, "upstream key retired");
                self.announce(&entry.id, &entry.brief, "retired", None, Some(reason), None);
            }
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
            Outcome::Transient { reason } => {
                let m = s.models.entry(model.to_owned()).or_default();
                m.failure_streak += 1;
                m.last_error = Some(reason.clone());
                let cooled = if m.failure_streak >= self.cfg.failure_threshold {
                    m.failure_streak = 0;
                    m.cooling_until_ms = now + self.cfg.failure_cooldown.as_millis() as i64;
                    m.cooling_reason =
                        format!("{} consecutive failures", self.cfg.failure_threshold);
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
        }
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
