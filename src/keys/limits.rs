//! Limits the admin sets: for a key (`limits` of its record, by model name or glob) and
//! for a key group (each key of the group gets them). With a limit Google revealed for
//! the same (key, model), each of requests a minute, requests a day and input tokens a
//! minute holds at the smaller of the two: the admin can tighten Google's limits, never
//! lift them. Several patterns matching one model combine the same way.

use super::entry::EntryState;
use super::persist::Dirty;
use super::{KeyEntry, Pool};
use crate::store::{QuotaLimits, SetLimits};
use std::collections::BTreeMap;
use wildmatch::WildMatch;

/// One set limit, ready to match a model.
#[derive(Debug)]
pub struct AdminLimit {
    pattern: WildMatch,
    limits: QuotaLimits,
}

/// The key's own limits and then its group's, ready to match.
pub(super) fn compile(
    own: &BTreeMap<String, SetLimits>,
    group: &[(String, SetLimits)],
) -> Vec<AdminLimit> {
    own.iter()
        .chain(group.iter().map(|(p, l)| (p, l)))
        .map(|(p, l)| AdminLimit {
            pattern: WildMatch::new(p),
            limits: (*l).into(),
        })
        .collect()
}

impl EntryState {
    /// The limits that hold for `model`: Google's and the admin's, the smaller of each.
    pub(super) fn limits_for(&self, model: &str) -> QuotaLimits {
        let learned = self.models.get(model).map(|m| m.limits).unwrap_or_default();
        self.admin_limits
            .iter()
            .filter(|a| a.pattern.matches(model))
            .fold(learned, |acc, a| acc.tightest(&a.limits))
    }

    /// Models with limits set by a plain name (not a glob), to show even before use.
    pub(super) fn named_models(&self) -> impl Iterator<Item = &str> {
        self.set_limits
            .keys()
            .map(String::as_str)
            .filter(|m| !m.contains(['*', '?']))
    }
}

impl Pool {
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

    /// Makes the key's ready limits match its own and its group's.
    pub(super) fn compile_limits(&self, entry: &KeyEntry) {
        let mut s = entry.lock();
        let group = self.group_limits(s.group.as_deref());
        s.admin_limits = compile(&s.set_limits, &group);
    }

    /// The limits of a group for each of its keys.
    fn group_limits(&self, group: Option<&str>) -> Vec<(String, SetLimits)> {
        let name = group.unwrap_or(crate::config::DEFAULT_GROUP);
        self.cfg
            .groups
            .iter()
            .find(|g| g.name == name)
            .map(|g| g.limits.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }
}
