//! Key groups: every key belongs to one (`default` unless set), and a request is served
//! by the first group, in the order of `[[groups]]` (`order`, then name), that serves its
//! model and has a usable key — so free keys are spent first, and a paid group only when
//! every key before it is out (cooling, at a limit, busy). A group's `models` globs say
//! which models it serves (none: all); its `limits` hold for each of its keys.
//!
//! The pool's key list is kept split by group ([`Keys`]), rebuilt whole when a key is
//! added, removed or moved, so selection never sorts or filters per request.

use super::limits;
use super::persist::Dirty;
use super::{KeyEntry, Pool};
use crate::config::SetLimits;
use crate::config::{DEFAULT_GROUP, GroupConfig};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use wildmatch::WildMatch;

/// The keys of the pool: all of them, by id, and split by group in serving order.
#[derive(Default)]
pub(super) struct Keys {
    pub list: Vec<Arc<KeyEntry>>,
    pub by_id: HashMap<String, Arc<KeyEntry>>,
    pub groups: Vec<Group>,
}

/// One group's keys, in the pool's order.
pub(super) struct Group {
    pub name: String,
    /// Models served, as globs; empty: every model.
    models: Vec<WildMatch>,
    pub list: Vec<Arc<KeyEntry>>,
    /// Where round-robin (and least-used's window) starts next in this group.
    pub cursor: AtomicUsize,
}

impl Group {
    pub fn serves(&self, model: &str) -> bool {
        self.models.is_empty() || model.is_empty() || self.models.iter().any(|m| m.matches(model))
    }
}

impl Keys {
    pub fn build(list: Vec<Arc<KeyEntry>>, declared: &[GroupConfig]) -> Self {
        let by_id = list.iter().map(|e| (e.id.clone(), e.clone())).collect();
        let mut split: Vec<(String, Vec<Arc<KeyEntry>>)> = Vec::new();
        for e in &list {
            let name = e.group();
            match split.iter_mut().find(|(n, _)| *n == name) {
                Some((_, keys)) => keys.push(e.clone()),
                None => split.push((name, vec![e.clone()])),
            }
        }
        // Declared groups by (order, name); `default`, when not declared, at order 0; a
        // group no longer declared after every declared one.
        let rank = |name: &str| match declared.iter().find(|g| g.name == name) {
            Some(g) => (0, g.order),
            None if name == DEFAULT_GROUP => (0, 0),
            None => (1, 0),
        };
        split.sort_by(|(a, _), (b, _)| (rank(a), a).cmp(&(rank(b), b)));
        let groups = split
            .into_iter()
            .map(|(name, list)| Group {
                models: declared
                    .iter()
                    .find(|g| g.name == name)
                    .map(|g| g.models.iter().map(|m| WildMatch::new(m)).collect())
                    .unwrap_or_default(),
                name,
                list,
                cursor: AtomicUsize::new(0),
            })
            .collect();
        Self {
            list,
            by_id,
            groups,
        }
    }
}

impl KeyEntry {
    /// The key's group's name.
    pub fn group(&self) -> String {
        self.lock()
            .group
            .clone()
            .unwrap_or_else(|| DEFAULT_GROUP.to_owned())
    }
}

impl Pool {
    /// The key list split anew by group.
    pub(super) fn keys_of(&self, list: Vec<Arc<KeyEntry>>) -> Keys {
        Keys::build(list, &self.cfg.groups)
    }

    /// Whether `name` is a group a key may be put in: `default` or a declared one.
    pub fn knows_group(&self, name: &str) -> bool {
        name == DEFAULT_GROUP || self.cfg.groups.iter().any(|g| g.name == name)
    }

    /// Moves a key to a group (`None`: `default`); the caller checked it is known.
    pub fn set_group(&self, entry: &KeyEntry, group: Option<String>) {
        let group = group.filter(|g| g != DEFAULT_GROUP);
        {
            let mut s = entry.lock();
            if s.group == group {
                return;
            }
            s.group = group;
        }
        self.compile_limits(entry);
        self.regroup();
        self.mark(Dirty::Key(entry.id.clone()));
        self.freed.notify_all();
    }

    /// Splits the key list by group again (a key changed group).
    pub(super) fn regroup(&self) {
        self.keys.rcu(|current| self.keys_of(current.list.clone()));
    }

    /// Makes the key's ready limits match its own and its group's.
    pub(super) fn compile_limits(&self, entry: &KeyEntry) {
        let mut s = entry.lock();
        let group = self.group_limits(s.group.as_deref());
        s.admin_limits = limits::compile(&s.set_limits, &group);
    }

    /// The limits of a group for each of its keys.
    fn group_limits(&self, group: Option<&str>) -> Vec<(String, SetLimits)> {
        let name = group.unwrap_or(DEFAULT_GROUP);
        self.cfg
            .groups
            .iter()
            .find(|g| g.name == name)
            .map(|g| g.limits.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    /// The groups in serving order, and how many keys each has.
    pub fn groups(&self) -> Vec<(String, usize)> {
        let keys = self.keys.load();
        keys.groups
            .iter()
            .map(|g| (g.name.clone(), g.list.len()))
            .collect()
    }
}
