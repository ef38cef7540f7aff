//! Taking a key for an attempt (also for Live sessions): the pool's choice, confirmed by
//! the shared ledger and holding a shared slot where the cap is shared; when none is
//! usable, queueing until `queue_until` for one to come back when waiting can help. It
//! never sends anything upstream.

use crate::app::AppState;
use crate::keys::{KeyEntry, Lease, NoKey, unix_ms};
use std::borrow::Cow;
use std::sync::Arc;
use tokio::time::Instant;

/// What one look for a key found.
enum Look {
    Got(Lease),
    /// A key another instance has at its shared cap: skipped until the next wait.
    FullElsewhere(Arc<KeyEntry>),
    None(NoKey),
}

/// Waits for a usable key until `queue_until` when waiting can help (also for Live
/// sessions), holding a shared slot where the cap is shared.
/// Only keys of `groups` serve when it names any (the user's groups).
pub async fn acquire(
    state: &AppState,
    model: &str,
    groups: &[String],
    tried: &[Arc<KeyEntry>],
    queue_until: Instant,
) -> Result<Lease, NoKey> {
    let freed = state.pool.freed();
    let mut full_elsewhere: Vec<Arc<KeyEntry>> = Vec::new();
    let mut last_try = false;
    // The first look registers nothing (the usual case: a key is free); after it the
    // request counts as queueing and registers before every look, so no release is missed.
    let mut queueing = None;
    loop {
        let notified = freed.notified();
        tokio::pin!(notified);
        if queueing.is_some() {
            notified.as_mut().enable();
        }
        let now = unix_ms();
        let exclude = excluding(tried, &full_elsewhere);
        let mut no = match look(state, model, groups, &exclude, now).await {
            Look::Got(lease) => return Ok(lease),
            Look::FullElsewhere(entry) => {
                full_elsewhere.push(entry);
                continue;
            }
            Look::None(no) => no,
        };
        no.busy |= !full_elsewhere.is_empty();
        full_elsewhere.clear();
        if queueing.is_none() {
            queueing = Some(freed.queue());
            continue;
        }
        if last_try {
            return Err(no);
        }
        let wait = match no.retry_after(now) {
            Some(d) if no.busy || Instant::now() + d <= queue_until => d,
            _ => return Err(no),
        };
        let wake = (Instant::now() + wait).min(queue_until);
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
        // Once the queue time is over, look once more: a key may have come back just now.
        last_try = Instant::now() >= queue_until;
    }
}

/// The keys not to take: those tried, and those full elsewhere since the last wait.
fn excluding<'a>(tried: &'a [Arc<KeyEntry>], full: &[Arc<KeyEntry>]) -> Cow<'a, [Arc<KeyEntry>]> {
    if full.is_empty() {
        tried.into()
    } else {
        tried.iter().chain(full).cloned().collect::<Vec<_>>().into()
    }
}

/// One look: the pool's choice outside `exclude`, confirmed by the shared ledger and
/// holding its shared slot where the cap is shared.
async fn look(
    state: &AppState,
    model: &str,
    groups: &[String],
    exclude: &[Arc<KeyEntry>],
    now: i64,
) -> Look {
    let pool = &state.pool;
    match pool.acquire_in(model, now, exclude, groups) {
        Ok(lease) if !pool.confirm(&lease, model, now).await => {
            Look::FullElsewhere(lease.entry.clone())
        }
        Ok(mut lease) => match &state.key_slots {
            None => Look::Got(lease),
            Some(slots) => match slots.take(&lease.entry.id).await {
                Some(slot) => {
                    lease.hold(slot);
                    Look::Got(lease)
                }
                None => Look::FullElsewhere(lease.entry.clone()),
            },
        },
        Err(no) => Look::None(no),
    }
}
