//! One upstream key in the pool: its secret, its state (per key and per key × model,
//! behind one short `Mutex`), the atomics that let selection skip the lock for a plain
//! key, and what state it shows for a model at a given time.

use super::ledger::Usage;
use super::limits::{self, AdminLimit};
use crate::config::ProxyUrl;
use crate::config::SetLimits;
use crate::secret::{Secret, fingerprint};
use crate::store::{Invalid, KeyRecord, ModelState, QuotaLimits, UsageRecord};
use arc_swap::ArcSwapOption;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};

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
    pub(super) state: Mutex<EntryState>,
    /// The state is plain: enabled, valid, no per-model state. Set whenever the state's
    /// lock is let go ([`EntryGuard`]); lets selection and success reports, the common
    /// case, skip the lock the serving threads would otherwise take in turn.
    pub(super) plain: AtomicBool,
    pub(super) in_flight: AtomicU32,
    pub(super) requests: AtomicU64,
    /// Requests since the last daily reset, and when the current day ends (Unix ms).
    pub(super) today: AtomicU64,
    pub(super) day_end_ms: AtomicI64,
    /// The ledger's counts changed since they were last saved.
    pub(super) ledger_dirty: AtomicBool,
    /// The key's own egress proxy, read by every request it serves.
    pub(super) proxy: ArcSwapOption<ProxyUrl>,
}

#[derive(Default)]
pub(super) struct EntryState {
    pub(super) note: Option<String>,
    pub(super) project: Option<String>,
    pub(super) disabled: bool,
    pub(super) invalid: Option<Invalid>,
    pub(super) models: HashMap<String, ModelState>,
    /// The key's group (`None`: `default`).
    pub(super) group: Option<String>,
    /// Limits the admin set for the key, by model name or glob, as stored.
    pub(super) set_limits: BTreeMap<String, SetLimits>,
    /// Those and its group's, ready to match (see `limits`).
    pub(super) admin_limits: Vec<AdminLimit>,
    /// The ledger's counts, for the models with known limits.
    pub(super) usage: HashMap<String, Usage>,
}

impl EntryState {
    pub(super) fn plain(&self) -> bool {
        !self.disabled
            && self.invalid.is_none()
            && self.models.is_empty()
            && self.admin_limits.is_empty()
    }

    /// The limits that hold for `model`: Google's and the admin's, the smaller of each.
    pub(super) fn limits_for(&self, model: &str) -> QuotaLimits {
        let learned = self.models.get(model).map(|m| m.limits).unwrap_or_default();
        limits::tightest(&self.admin_limits, learned, model)
    }

    /// Models with limits set by a plain name (not a glob), to show even before use.
    pub(super) fn named_models(&self) -> impl Iterator<Item = &str> {
        limits::named(&self.set_limits)
    }
}

/// The locked state of a key; records whether it is plain when let go.
pub(super) struct EntryGuard<'a> {
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
            plain: AtomicBool::new(!rec.disabled && rec.invalid.is_none() && rec.limits.is_empty()),
            state: Mutex::new(EntryState {
                note: rec.note,
                project: rec.project,
                disabled: rec.disabled,
                invalid: rec.invalid,
                models: HashMap::new(),
                admin_limits: limits::compile(&rec.limits, &[]),
                set_limits: rec.limits,
                group: rec.group,
                usage: HashMap::new(),
            }),
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            today: AtomicU64::new(0),
            day_end_ms: AtomicI64::new(0),
            ledger_dirty: AtomicBool::new(false),
            proxy: ArcSwapOption::from(rec.proxy.map(std::sync::Arc::new)),
        }
    }

    /// Counts one request towards today's usage.
    pub(super) fn count_request(&self, now: i64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if now >= self.day_end_ms.load(Ordering::Relaxed) {
            self.today.store(0, Ordering::Relaxed);
            self.day_end_ms
                .store(super::next_pacific_midnight(now), Ordering::Relaxed);
        }
        self.today.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn lock(&self) -> EntryGuard<'_> {
        // A panic while holding this lock leaves plain data behind; keep serving.
        EntryGuard {
            state: self.state.lock().unwrap_or_else(|e| e.into_inner()),
            plain: &self.plain,
        }
    }

    /// Enabled, valid, and no model cooling or remembered (read without the lock).
    pub(super) fn is_plain(&self) -> bool {
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
            limits: s.set_limits.clone(),
            group: s.group.clone(),
            proxy: self.proxy().map(|p| (*p).clone()),
        }
    }

    /// The key's own egress proxy, if it has one.
    pub fn proxy(&self) -> Option<std::sync::Arc<ProxyUrl>> {
        self.proxy.load_full()
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
        self.status_with(model, now, true)
    }

    /// [`KeyEntry::status`] with the ledger's limits left aside: for a request only
    /// this key can serve.
    pub fn status_pinned(&self, model: &str, now: i64) -> (KeyStatus, i64) {
        self.status_with(model, now, false)
    }

    fn status_with(&self, model: &str, now: i64, ledger: bool) -> (KeyStatus, i64) {
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
                return (KeyStatus::Unavailable, m.unavailable_until_ms);
            }
            Some(m) if m.cooling_until_ms > now => {
                return (KeyStatus::Cooling, m.cooling_until_ms);
            }
            _ => {}
        }
        if !ledger {
            return (KeyStatus::Active, 0);
        }
        // A known limit reached: out until the ledger has room again.
        let limits = s.limits_for(model);
        let full = match s.usage.get_mut(model) {
            Some(u) if !limits.is_empty() => u.full_until(&limits, now),
            _ => None,
        };
        full.map_or((KeyStatus::Active, 0), |t| (KeyStatus::Cooling, t))
    }

    /// Counts a request for `model` in the ledger; the limits when it has any.
    pub(super) fn spend(&self, model: &str, now: i64) -> Option<QuotaLimits> {
        self.ledger(model, |u| u.count(now))
    }

    /// Counts the prompt tokens of an answer for `model`; the limits when it has any.
    pub(super) fn spend_tokens(&self, model: &str, tokens: u64, now: i64) -> Option<QuotaLimits> {
        self.ledger(model, |u| u.count_tokens(tokens, now))
    }

    /// Runs `f` on the ledger of (key, `model`) when it has a known limit, and marks the
    /// ledger for saving; answers the limits.
    pub(super) fn ledger(&self, model: &str, f: impl FnOnce(&mut Usage)) -> Option<QuotaLimits> {
        if self.is_plain() {
            return None;
        }
        let mut guard = self.lock();
        let s = &mut *guard;
        let limits = s.limits_for(model);
        if limits.is_empty() {
            return None;
        }
        f(s.usage.entry(model.to_owned()).or_default());
        self.ledger_dirty.store(true, Ordering::Relaxed);
        Some(limits)
    }

    /// The ledger's counts to save, if they changed since last asked: (model, counts),
    /// `None` for a model whose counts are all spent.
    pub(super) fn take_ledger(&self, now: i64) -> Vec<(String, Option<UsageRecord>)> {
        if !self.ledger_dirty.swap(false, Ordering::Relaxed) {
            return Vec::new();
        }
        let mut s = self.lock();
        let out = s
            .usage
            .iter()
            .map(|(m, u)| (m.clone(), (!u.is_spent(now)).then(|| u.to_record())))
            .collect();
        s.usage.retain(|_, u| !u.is_spent(now));
        out
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}
