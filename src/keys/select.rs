//! Choosing a key: round-robin (default) or least-used over the keys usable for a model,
//! group by group in serving order (see `groups`), honouring the per-key concurrency
//! cap. A [`Lease`] holds the key's slot until dropped.
//!
//! Selection is O(1) on average with round-robin: it starts at a moving cursor and stops
//! at the first usable key, so the cost does not grow with the pool unless most keys are
//! unusable for the requested model (about 90 ns a pick from 10 to 10,000 keys, see
//! `bench.rs`). Least-used compares at most 64 keys a pick when one of them is idle: the
//! whole pool when it is that small, otherwise a window that moves on by 64 keys each pick
//! (under 1 µs at any pool size); only when all 64 are busy does it search the whole pool
//! (about 12 ns a key), so it never prefers a busy key to an idle one.

use super::groups::Group;
use super::{KeyEntry, KeyStatus, Pool};
use crate::config::Strategy;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// How many keys least-used compares per pick (see [`Pool::acquire`]).
const LEAST_USED_WINDOW: usize = 64;

/// A key checked out for one upstream attempt; releases its concurrency slot on drop.
pub struct Lease {
    pub entry: Arc<KeyEntry>,
    freed: Arc<Freed>,
    /// A slot held elsewhere for this attempt (a shared cap), released with the lease.
    shared: Option<super::shared::SharedSlot>,
    /// The limits of the leased (key, model), when it has any (its ledger counted it).
    pub(super) limits: Option<crate::store::QuotaLimits>,
}

impl Lease {
    pub fn hold(&mut self, slot: super::shared::SharedSlot) {
        self.shared = Some(slot);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.entry.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.freed.released();
    }
}

/// Wakes requests queueing for a key when a lease ends or a key comes back.
///
/// A lease's end wakes only when some request is queueing: the common case (nobody
/// waits) then costs a load instead of the `Notify`'s lock, which the serving threads
/// would otherwise take in turn on every request. The queueing side counts itself in
/// ([`Freed::queue`]) *before* it registers and looks at the pool again, and the
/// releasing side gives its slot back *before* it reads the count (both sequentially
/// consistent): so either the release sees the queuer and wakes it, or the queuer's
/// look sees the slot.
#[derive(Default)]
pub struct Freed {
    notify: Notify,
    queueing: AtomicUsize,
}

impl Freed {
    /// A key came back or was added: wake every queueing request.
    pub fn notify_all(&self) {
        self.notify.notify_waiters();
    }

    /// A lease ended (its slot already given back).
    fn released(&self) {
        if self.queueing.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// Counts the caller in as queueing until the guard drops. Take it before
    /// registering for [`Freed::notified`] and looking at the pool again.
    pub fn queue(&self) -> Queueing<'_> {
        self.queueing.fetch_add(1, Ordering::SeqCst);
        Queueing(self)
    }

    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

pub struct Queueing<'a>(&'a Freed);

impl Drop for Queueing<'_> {
    fn drop(&mut self) {
        self.0.queueing.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why no key could be had right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoKey {
    /// Unix ms when the earliest cooling key comes back, if any key is cooling.
    pub earliest_ms: Option<i64>,
    /// Some usable key was skipped only because it is at its concurrency cap.
    pub busy: bool,
}

impl NoKey {
    /// How long the caller should wait before trying again, if waiting can help.
    pub fn retry_after(&self, now: i64) -> Option<Duration> {
        if self.busy {
            return Some(Duration::from_secs(1));
        }
        self.earliest_ms
            .map(|t| Duration::from_millis((t - now).max(0) as u64))
    }
}

impl Pool {
    /// Checks out a usable key for `model`, skipping the ids in `exclude`: from the
    /// first group that serves the model and has one (see `groups`).
    pub fn acquire(
        &self,
        model: &str,
        now: i64,
        exclude: &[Arc<KeyEntry>],
    ) -> Result<Lease, NoKey> {
        self.acquire_in(model, now, exclude, &[])
    }

    /// [`Pool::acquire`] among the groups named in `only` (empty: every group).
    pub fn acquire_in(
        &self,
        model: &str,
        now: i64,
        exclude: &[Arc<KeyEntry>],
        only: &[String],
    ) -> Result<Lease, NoKey> {
        let keys = self.keys.load();
        let mut no = NoKey {
            earliest_ms: None,
            busy: false,
        };
        let allowed = |g: &&super::groups::Group| only.is_empty() || only.contains(&g.name);
        for group in keys
            .groups
            .iter()
            .filter(|g| g.serves(model))
            .filter(allowed)
        {
            if let Some(lease) = self.pick(group, model, now, exclude, &mut no) {
                return Ok(lease);
            }
        }
        Err(no)
    }

    /// A usable key of `list` by the pool's strategy, or `None` with why in `no`.
    fn pick(
        &self,
        group: &Group,
        model: &str,
        now: i64,
        exclude: &[Arc<KeyEntry>],
        no: &mut NoKey,
    ) -> Option<Lease> {
        if group.list.is_empty() {
            return None;
        }
        match self.cfg.strategy {
            Strategy::RoundRobin => self.round_robin(group, model, now, exclude, no),
            Strategy::LeastUsed => self.least_used(group, model, now, exclude, no),
        }
    }

    /// Whether `e` can serve `model` now; notes when a cooling one comes back.
    fn usable(
        &self,
        e: &Arc<KeyEntry>,
        model: &str,
        now: i64,
        exclude: &[Arc<KeyEntry>],
        no: &mut NoKey,
    ) -> bool {
        if exclude.iter().any(|x| Arc::ptr_eq(x, e)) {
            return false;
        }
        match e.status(model, now) {
            (KeyStatus::Active, _) => true,
            (KeyStatus::Cooling, until) => {
                no.earliest_ms = Some(no.earliest_ms.map_or(until, |t: i64| t.min(until)));
                false
            }
            _ => false,
        }
    }

    fn round_robin(
        &self,
        group: &Group,
        model: &str,
        now: i64,
        exclude: &[Arc<KeyEntry>],
        no: &mut NoKey,
    ) -> Option<Lease> {
        let (list, cursor) = (&group.list, &group.cursor);
        let (n, cap) = (list.len(), self.cfg.max_concurrent_per_key);
        let start = cursor.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let e = &list[(start + i) % n];
            if self.usable(e, model, now, exclude, no) {
                if let Some(lease) = self.try_lease(e, cap, model, now) {
                    // Skipped keys must not hand their turn to this one: move the
                    // cursor past it, so every usable key gets an equal share.
                    if i > 0 {
                        cursor.fetch_add(i, Ordering::Relaxed);
                    }
                    return Some(lease);
                }
                no.busy = true;
            }
        }
        None
    }

    fn least_used(
        &self,
        group: &Group,
        model: &str,
        now: i64,
        exclude: &[Arc<KeyEntry>],
        no: &mut NoKey,
    ) -> Option<Lease> {
        let (list, cursor) = (&group.list, &group.cursor);
        let (n, cap) = (list.len(), self.cfg.max_concurrent_per_key);
        let usage = |e: &&Arc<KeyEntry>| (e.in_flight(), e.requests());
        // The least used of the next WINDOW keys from a rotating start (the whole
        // pool when it is no larger). An idle key there is taken; when every key in
        // the window is busy the whole pool is searched, so a busy key is never
        // chosen over an idle one anywhere.
        let whole = n <= LEAST_USED_WINDOW;
        let start = if whole {
            0
        } else {
            cursor.fetch_add(LEAST_USED_WINDOW, Ordering::Relaxed)
        };
        let in_window = (0..n.min(LEAST_USED_WINDOW))
            .map(|i| &list[(start + i) % n])
            .filter(|e| self.usable(e, model, now, exclude, no))
            .min_by_key(usage);
        let mut best = in_window.filter(|e| whole || e.in_flight() == 0);
        if best.is_none() && !whole {
            best = list
                .iter()
                .filter(|e| self.usable(e, model, now, exclude, no))
                .min_by_key(usage);
        }
        let best = best?;
        if let Some(lease) = self.try_lease(best, cap, model, now) {
            return Some(lease);
        }
        // The best is at its cap: every usable key, least used first.
        let mut usable: Vec<&Arc<KeyEntry>> = list
            .iter()
            .filter(|e| self.usable(e, model, now, exclude, no))
            .collect();
        usable.sort_by_key(usage);
        for e in usable {
            if let Some(lease) = self.try_lease(e, cap, model, now) {
                return Some(lease);
            }
            no.busy = true;
        }
        None
    }

    /// Checks out `e` itself for `model` (a request only it can serve), counted in its
    /// ledger; `None` at its concurrency cap. The caller checked its status.
    pub fn pin(&self, e: &Arc<KeyEntry>, model: &str, now: i64) -> Option<Lease> {
        self.try_lease(e, self.cfg.max_concurrent_per_key, model, now)
    }

    fn try_lease(&self, e: &Arc<KeyEntry>, cap: u32, model: &str, now: i64) -> Option<Lease> {
        let taken = e
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (cap == 0 || n < cap).then_some(n + 1)
            });
        taken.ok()?;
        e.count_request(now);
        let limits = e.spend(model, now);
        Some(Lease {
            entry: e.clone(),
            freed: self.freed.clone(),
            shared: None,
            limits,
        })
    }

    /// Notified when a lease ends or a key is added or revived, for requests that
    /// queue (see [`Freed`]).
    pub fn freed(&self) -> &Freed {
        &self.freed
    }
}
