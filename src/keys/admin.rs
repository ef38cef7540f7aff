//! What the admin can do to the pool, and how a key looks from outside (`KeyView`).
//! Every change here is announced to the persistence task; callers that must answer only
//! once it is durable wait with `Persister::sync`.

use super::ledger::Usage;
use super::{Dirty, KeyEntry, KeyStatus, Pool};
use crate::config::SetLimits;
use crate::store::{KeyRecord, ModelState, QuotaLimits, Snapshot};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

#[derive(Debug, Serialize)]
pub struct KeyView {
    pub id: String,
    pub brief: String,
    pub state: KeyStatus,
    pub note: Option<String>,
    /// The Cloud project whose quotas the key shares, if known.
    pub project: Option<String>,
    /// The key's group.
    pub group: String,
    /// The key's own egress proxy, its password masked.
    pub proxy: Option<String>,
    /// Limits the admin set for the key, by model name or glob.
    pub limits: BTreeMap<String, SetLimits>,
    pub invalid_reason: Option<String>,
    pub invalid_since: Option<i64>,
    pub models: Vec<ModelView>,
    /// The longest current failure streak over the key's models.
    pub failure_streak: u32,
    pub last_error: Option<String>,
    pub in_flight: u32,
    pub requests_total: u64,
    pub usage_today: u64,
    pub created_at: i64,
}

#[derive(Debug, Serialize)]
pub struct ModelView {
    pub model: String,
    /// `active`, `cooling`, or `unavailable` (the key's tier lacks the model).
    pub state: KeyStatus,
    pub cooling: bool,
    pub cooling_seconds: u64,
    pub cooling_until_ms: i64,
    pub reason: String,
    pub failure_streak: u32,
    pub backoff_level: u32,
    pub last_error: Option<String>,
    /// When a model missing from the key's tier is looked at again (0: not missing).
    pub unavailable_until_ms: i64,
    /// The limits that hold (Google's, or the admin's where tighter), and the ledger's
    /// counts against them.
    pub limit_per_minute: Option<u32>,
    pub limit_per_day: Option<u32>,
    pub limit_tokens_per_minute: Option<u32>,
    pub used_last_minute: u64,
    pub used_today: u64,
    pub tokens_last_minute: u64,
}

impl KeyEntry {
    pub fn view(&self, now: i64) -> KeyView {
        let s = self.lock();
        // Every model with state, counts, or a limit set by name.
        let names: BTreeSet<&str> = s
            .models
            .keys()
            .chain(s.usage.keys())
            .map(String::as_str)
            .chain(s.named_models())
            .collect();
        let none = ModelState::default();
        let models: Vec<ModelView> = names
            .into_iter()
            .map(|model| {
                let m = s.models.get(model).unwrap_or(&none);
                model_view(model, m, s.usage.get(model), s.limits_for(model), now)
            })
            .collect();
        let state = if s.disabled {
            KeyStatus::Disabled
        } else if s.invalid.is_some() {
            KeyStatus::Invalid
        } else if models.iter().any(|m| m.cooling) {
            KeyStatus::Cooling
        } else {
            KeyStatus::Active
        };
        let last_error = s
            .invalid
            .as_ref()
            .map(|i| i.reason.clone())
            .or_else(|| models.iter().find_map(|m| m.last_error.clone()));
        KeyView {
            id: self.id.clone(),
            brief: self.brief.clone(),
            state,
            note: s.note.clone(),
            project: s.project.clone(),
            group: s
                .group
                .clone()
                .unwrap_or_else(|| crate::config::DEFAULT_GROUP.to_owned()),
            limits: s.set_limits.clone(),
            proxy: self.proxy().map(|p| p.masked().to_owned()),
            invalid_reason: s.invalid.as_ref().map(|i| i.reason.clone()),
            invalid_since: s.invalid.as_ref().map(|i| i.at),
            failure_streak: models.iter().map(|m| m.failure_streak).max().unwrap_or(0),
            models,
            last_error,
            in_flight: self.in_flight(),
            requests_total: self.requests(),
            usage_today: self.usage_today(now),
            created_at: self.created_at,
        }
    }
}

/// How one model looks on a key: its state, and the ledger's counts against its limits
/// (a (key, model) at a limit shows as cooling until the ledger has room).
fn model_view(
    model: &str,
    m: &ModelState,
    usage: Option<&Usage>,
    limits: QuotaLimits,
    now: i64,
) -> ModelView {
    let used = usage.map(|u| u.used(now)).unwrap_or_default();
    let full = usage.and_then(|u| u.clone().full_until(&limits, now));
    let (until, reason) = match full {
        Some(t) if t > m.cooling_until_ms => (t, "local limit".to_owned()),
        _ => (m.cooling_until_ms, m.cooling_reason.clone()),
    };
    let cooling = until > now;
    let unavailable = m.unavailable_until_ms > now;
    ModelView {
        model: model.to_owned(),
        state: if unavailable {
            KeyStatus::Unavailable
        } else if cooling {
            KeyStatus::Cooling
        } else {
            KeyStatus::Active
        },
        cooling,
        cooling_seconds: if cooling {
            ((until - now) as u64).div_ceil(1000)
        } else {
            0
        },
        cooling_until_ms: until,
        reason,
        failure_streak: m.failure_streak,
        backoff_level: m.backoff_level,
        last_error: m.last_error.clone(),
        unavailable_until_ms: if unavailable {
            m.unavailable_until_ms
        } else {
            0
        },
        limit_per_minute: limits.per_minute,
        limit_per_day: limits.per_day,
        limit_tokens_per_minute: limits.tokens_per_minute,
        used_last_minute: used.minute,
        used_today: used.today,
        tokens_last_minute: used.tokens_minute,
    }
}

impl Pool {
    /// Removes a key; answers whether it existed.
    pub fn remove(&self, id: &str) -> bool {
        let found = self.drop_entry(id);
        if found {
            self.mark(Dirty::Key(id.to_owned()));
            self.announce(id, "", "removed", None, None, None);
        }
        found
    }

    fn drop_entry(&self, id: &str) -> bool {
        let mut found = false;
        self.keys.rcu(|current| {
            found = current.by_id.contains_key(id);
            let list = current
                .list
                .iter()
                .filter(|e| e.id != id)
                .cloned()
                .collect();
            self.keys_of(list)
        });
        found
    }

    /// Makes one key match the shared store's copy (another instance changed it),
    /// without announcing the change back to the store.
    pub fn sync_key(&self, id: &str, rec: Option<KeyRecord>, states: Vec<(String, ModelState)>) {
        match (self.get(id), rec) {
            (Some(_), None) => {
                self.drop_entry(id);
            }
            (Some(e), Some(rec)) => {
                let mut s = e.lock();
                s.note = rec.note;
                s.project = rec.project;
                s.disabled = rec.disabled;
                s.invalid = rec.invalid;
                s.set_limits = rec.limits;
                let moved = s.group != rec.group;
                s.group = rec.group;
                s.models = states.into_iter().collect();
                drop(s);
                self.compile_limits(&e);
                if moved {
                    self.regroup();
                }
            }
            (None, Some(rec)) => {
                let entry = Arc::new(KeyEntry::new(rec));
                entry.lock().models = states.into_iter().collect();
                self.compile_limits(&entry);
                self.keys.rcu(|current| {
                    let mut list = current.list.clone();
                    if !current.by_id.contains_key(&entry.id) {
                        list.push(entry.clone());
                    }
                    self.keys_of(list)
                });
            }
            (None, None) => {}
        }
        self.freed.notify_all();
    }

    /// Makes the whole pool match a snapshot of the shared store.
    pub fn sync_all(&self, snap: &Snapshot) {
        let mut states: HashMap<&str, Vec<(String, ModelState)>> = HashMap::new();
        for (id, model, st) in &snap.model_states {
            states
                .entry(id.as_str())
                .or_default()
                .push((model.clone(), st.clone()));
        }
        let wanted: HashSet<&str> = snap.keys.iter().map(|k| k.id.as_str()).collect();
        for e in self.entries() {
            if !wanted.contains(e.id.as_str()) {
                self.drop_entry(&e.id);
            }
        }
        for rec in &snap.keys {
            let st = states.remove(rec.id.as_str()).unwrap_or_default();
            self.sync_key(&rec.id.clone(), Some(rec.clone()), st);
        }
    }

    pub fn set_disabled(&self, entry: &KeyEntry, disabled: bool) {
        entry.lock().disabled = disabled;
        self.mark(Dirty::Key(entry.id.clone()));
        let change = if disabled { "disabled" } else { "enabled" };
        self.announce(&entry.id, &entry.brief, change, None, None, None);
        self.freed.notify_all();
    }

    pub fn set_note(&self, entry: &KeyEntry, note: Option<String>) {
        entry.lock().note = note.filter(|n| !n.is_empty());
        self.mark(Dirty::Key(entry.id.clone()));
    }

    /// Sets (or with `None` clears) the key's own egress proxy.
    pub fn set_proxy(&self, entry: &KeyEntry, proxy: Option<crate::config::ProxyUrl>) {
        entry.proxy.store(proxy.map(Arc::new));
        self.mark(Dirty::Key(entry.id.clone()));
    }

    /// Sets (or with `None` forgets) the key's Cloud project.
    pub fn set_project(&self, entry: &KeyEntry, project: Option<String>) {
        entry.lock().project = project.filter(|p| !p.is_empty());
        self.mark(Dirty::Key(entry.id.clone()));
    }

    /// Replaces the key's own limits (checked by the caller).
    pub fn set_limits(&self, entry: &KeyEntry, limits: BTreeMap<String, SetLimits>) {
        entry.lock().set_limits = limits;
        self.compile_limits(entry);
        self.mark(Dirty::Key(entry.id.clone()));
        self.freed.notify_all();
    }

    /// Applies what the config file declares for a key (project, limits, group) where
    /// it differs from the pool's.
    pub fn declare(&self, entry: &KeyEntry, k: &crate::config::UpstreamKeyConfig) {
        let (project, limits) = {
            let s = entry.lock();
            (s.project.clone(), s.set_limits.clone())
        };
        if k.project.is_some() && k.project != project {
            self.set_project(entry, k.project.clone());
        }
        if let Some(l) = k.limits.as_ref().filter(|l| **l != limits) {
            self.set_limits(entry, l.clone());
        }
        if k.group.is_some() {
            self.set_group(entry, k.group.clone());
        }
        if k.proxy.is_some() && k.proxy.as_ref() != entry.proxy().as_deref() {
            self.set_proxy(entry, k.proxy.clone());
        }
    }

    /// How many independent quotas the keys that can serve have: one per project, plus
    /// one per key of no known project.
    pub fn quotas(&self) -> usize {
        let mut projects = HashSet::new();
        let mut alone = 0;
        for e in self.entries() {
            let s = e.lock();
            if s.disabled || s.invalid.is_some() {
                continue;
            }
            match &s.project {
                Some(p) => {
                    projects.insert(p.clone());
                }
                None => alone += 1,
            }
        }
        projects.len() + alone
    }

    /// Clears a key's retirement, cool-downs and failure counts (not its admin state).
    pub fn reset(&self, entry: &KeyEntry) {
        let models: Vec<String> = {
            let mut s = entry.lock();
            s.invalid = None;
            // Emptied, not removed, so that the next save deletes the saved counts.
            s.usage.values_mut().for_each(|u| *u = Default::default());
            s.models.drain().map(|(m, _)| m).collect()
        };
        entry.ledger_dirty.store(true, Ordering::Relaxed);
        self.mark(Dirty::Key(entry.id.clone()));
        for m in models {
            self.mark(Dirty::Model(entry.id.clone(), m));
        }
        self.freed.notify_all();
    }

    pub fn reset_all(&self) -> usize {
        let all = self.entries();
        for e in &all {
            self.reset(e);
        }
        all.len()
    }

    /// Retires a key found bad by a check, the same way an upstream answer would.
    pub fn retire(&self, entry: &Arc<KeyEntry>, reason: &str, now: i64) {
        let outcome = super::classify::Outcome::Invalid {
            reason: reason.to_owned(),
        };
        self.report(entry, "", &outcome, now);
    }
}

impl KeyEntry {
    /// Requests served since the last daily reset (midnight Pacific, like Google's quotas).
    pub fn usage_today(&self, now: i64) -> u64 {
        if now >= self.day_end_ms.load(Ordering::Relaxed) {
            0
        } else {
            self.today.load(Ordering::Relaxed)
        }
    }
}
