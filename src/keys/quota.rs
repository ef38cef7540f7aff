//! What a 429 does to the pool: how long a (key, model) is out for what ran out, and
//! which other keys are out with it. Google counts its quotas per Cloud project, not per
//! key, so a 429 naming quotas takes the model out on every key of the key's project
//! (the project set by the admin, or learned from the 429's `ErrorInfo`).
//!
//! | Google says                          | the (key, model) is out                       |
//! |--------------------------------------|-----------------------------------------------|
//! | a per-minute limit, or none named    | for `retryDelay` + margin (else a back-off)   |
//! | a per-day limit                      | until the next midnight in Los Angeles        |
//! | a limit of `0`                       | `unavailable`: skipped for a day, then tried  |

use super::classify::Exhausted;
use super::persist::Dirty;
use super::{KeyEntry, Pool};
use crate::config::PoolConfig;
use crate::store::QuotaLimits;
use std::time::Duration;

/// How long a model found missing from a key's tier stays skipped before one request
/// looks again: a day.
pub const RECHECK_UNAVAILABLE_MS: i64 = 24 * 3600 * 1000;

/// One 429, as the pool applies it.
pub(super) struct Hit<'a> {
    pub model: &'a str,
    pub exhausted: Exhausted,
    pub retry_after: Option<Duration>,
    pub reason: &'a str,
    /// The project Google named, learned for a key that has none.
    pub project: Option<&'a str>,
    /// The quotas are the project's: its other keys are out too.
    pub shared: bool,
    /// Request limits the 429 revealed, for the ledger.
    pub limits: &'a QuotaLimits,
}

impl Pool {
    /// Applies a 429 to the key that got it and, for project quotas, to its siblings.
    pub(super) fn quota_hit(&self, entry: &KeyEntry, hit: &Hit<'_>, now: i64) {
        let project = self.learn_project(entry, hit.project);
        self.rate_limit(entry, hit, now);
        let Some(project) = project.filter(|_| hit.shared) else {
            return;
        };
        for sibling in self.entries() {
            if sibling.id != entry.id && sibling.project().as_deref() == Some(project.as_str()) {
                self.rate_limit(&sibling, hit, now);
            }
        }
    }

    /// The key's project, first taking the one Google named if the key has none.
    fn learn_project(&self, entry: &KeyEntry, named: Option<&str>) -> Option<String> {
        let mut s = entry.lock();
        if s.project.is_none() {
            if let Some(p) = named {
                s.project = Some(p.to_owned());
                drop(s);
                self.mark(Dirty::Key(entry.id.clone()));
                tracing::info!(key = %entry.brief, project = p, "learned the key's project");
                return Some(p.to_owned());
            }
        }
        s.project.clone()
    }

    /// Takes (key, model) out for what ran out (the table above).
    fn rate_limit(&self, entry: &KeyEntry, hit: &Hit<'_>, now: i64) {
        let (model, reason) = (hit.model, hit.reason);
        let mut s = entry.lock();
        let m = s.models.entry(model.to_owned()).or_default();
        m.last_error = Some(format!("429 {reason}"));
        m.cooling_reason = reason.to_owned();
        m.limits.learn(hit.limits);
        let (change, until) = match hit.exhausted {
            Exhausted::Tier => {
                m.unavailable_until_ms = now + RECHECK_UNAVAILABLE_MS;
                ("unavailable", m.unavailable_until_ms)
            }
            Exhausted::Day => {
                m.cooling_until_ms = next_pacific_midnight(now);
                ("cooled", m.cooling_until_ms)
            }
            Exhausted::Minute => {
                m.cooling_until_ms = match hit.retry_after {
                    Some(d) => now + (d + self.cfg.retry_delay_margin).as_millis() as i64,
                    None => now + backoff_ms(&self.cfg, m.backoff_level),
                };
                m.backoff_level = m.backoff_level.saturating_add(1).min(32);
                ("cooled", m.cooling_until_ms)
            }
        };
        drop(s);
        self.mark(Dirty::Model(entry.id.clone(), model.to_owned()));
        tracing::info!(key = %entry.brief, model, until_ms = until, %reason, change, "key out for model");
        self.announce(
            &entry.id,
            &entry.brief,
            change,
            Some(model),
            Some(reason),
            Some(until),
        );
    }
}

fn backoff_ms(cfg: &PoolConfig, level: u32) -> i64 {
    let base = cfg.cooldown_base.as_millis() as i64;
    let max = cfg.cooldown_max.as_millis() as i64;
    base.saturating_mul(1i64 << level.min(30)).min(max)
}

/// Google's daily quotas reset at midnight Pacific time.
pub fn next_pacific_midnight(now_ms: i64) -> i64 {
    let next = (|| {
        let tz = jiff::tz::TimeZone::get("America/Los_Angeles").ok()?;
        let now = jiff::Timestamp::from_millisecond(now_ms)
            .ok()?
            .to_zoned(tz.clone());
        let tomorrow = now.date().tomorrow().ok()?;
        Some(tomorrow.to_zoned(tz).ok()?.timestamp().as_millisecond())
    })();
    next.unwrap_or(now_ms + 24 * 3600 * 1000)
}
