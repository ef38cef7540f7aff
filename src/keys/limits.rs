//! Limits the admin sets: for a key (`limits` of its record, by model name or glob) and
//! for a key group (each key of the group gets them). With a limit Google revealed for
//! the same (key, model), each of requests a minute, requests a day and input tokens a
//! minute holds at the smaller of the two: the admin can tighten Google's limits, never
//! lift them. Several patterns matching one model combine the same way. Pure rules: the
//! key state that holds them is `entry`'s.

use crate::config::SetLimits;
use crate::store::QuotaLimits;
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

/// The limits that hold for `model`: Google's (`learned`) and the admin's, the smaller
/// of each.
pub(super) fn tightest(admin: &[AdminLimit], learned: QuotaLimits, model: &str) -> QuotaLimits {
    admin
        .iter()
        .filter(|a| a.pattern.matches(model))
        .fold(learned, |acc, a| acc.tightest(&a.limits))
}

/// Models with limits set by a plain name (not a glob), to show even before use.
pub(super) fn named(set: &BTreeMap<String, SetLimits>) -> impl Iterator<Item = &str> {
    set.keys()
        .map(String::as_str)
        .filter(|m| !m.contains(['*', '?']))
}
