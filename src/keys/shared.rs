//! What instances sharing a Redis check together before a key is used: per-key
//! concurrency caps (with `max_concurrent_per_key > 0`, a key checked out locally must
//! also win a slot in `{prefix}:kslot:{key id}`, one Lua round trip) and the quota
//! ledger ([`SharedLedger`]). If Redis cannot be reached the local checks alone apply,
//! so requests keep flowing.

use crate::store::RedisStore;
use fred::prelude::*;

const TAKE: &str = r#"
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 600000)
return 1
"#;

pub struct SharedSlots {
    store: RedisStore,
    cap: u32,
}

/// A slot held in the shared counter; given back when dropped.
pub struct SharedSlot {
    client: Client,
    key: String,
}

impl Drop for SharedSlot {
    fn drop(&mut self) {
        if self.key.is_empty() {
            return;
        }
        let (client, key) = (self.client.clone(), std::mem::take(&mut self.key));
        tokio::spawn(async move {
            let _: Result<(), _> = client.decr(&key).await;
        });
    }
}

impl SharedSlots {
    pub fn new(store: RedisStore, cap: u32) -> Option<Self> {
        (cap > 0).then_some(Self { store, cap })
    }

    /// A slot when the key has room on every instance, `None` when it is at its cap
    /// elsewhere; Redis trouble counts as room (and holds nothing).
    pub async fn take(&self, key_id: &str) -> Option<SharedSlot> {
        let key = self.store.key_name(&format!("kslot:{key_id}"));
        let client = self.store.client();
        match client
            .eval::<i64, _, _, _>(TAKE, vec![key.clone()], vec![self.cap.to_string()])
            .await
        {
            Ok(0) => None,
            Ok(_) => Some(SharedSlot {
                client: client.clone(),
                key,
            }),
            Err(e) => {
                tracing::debug!(error = %e.details(), "shared key slots unavailable; local cap only");
                Some(SharedSlot {
                    client: client.clone(),
                    key: String::new(),
                })
            }
        }
    }
}

/// The quota ledger shared by every instance on one Redis (see `store::redis_ledger`):
/// a leased (key, model) with a known limit is also counted there, in one Lua round
/// trip, before it is used; the answers' prompt tokens are added when they end,
/// without the request waiting. If Redis cannot be reached the local ledger alone
/// applies, so requests keep flowing.
pub struct SharedLedger {
    store: RedisStore,
    /// Tells this instance's counted requests apart from every other's.
    nonce: String,
    seq: std::sync::atomic::AtomicU64,
}

impl SharedLedger {
    pub fn new(store: RedisStore) -> Self {
        Self {
            store,
            nonce: format!("{:016x}", rand::random::<u64>()),
            seq: Default::default(),
        }
    }

    fn unique(&self) -> String {
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}-{n}", self.nonce)
    }

    /// Counts a request in the shared ledger; `None` when Redis cannot be asked.
    pub async fn take(
        &self,
        key_id: &str,
        model: &str,
        limits: &crate::store::QuotaLimits,
        now: i64,
    ) -> Option<crate::store::Taken> {
        let day_end = super::next_pacific_midnight(now);
        let unique = self.unique();
        let taken = self
            .store
            .ledger_take(key_id, model, limits, now, day_end, &unique)
            .await;
        taken
            .inspect_err(|e| tracing::debug!(error = %e, "shared ledger unavailable; local only"))
            .ok()
    }

    /// Forgets every count of a key on every instance.
    pub async fn reset(&self, key_id: &str, now: i64) {
        let day_end = super::next_pacific_midnight(now);
        if let Err(e) = self.store.ledger_reset(key_id, day_end).await {
            tracing::warn!(error = %e, "the shared ledger's counts were not reset");
        }
    }

    /// Adds an answer's prompt tokens to the shared ledger, in the background.
    pub fn add_tokens(&self, key_id: &str, model: &str, tokens: u64, now: i64) {
        if tokens == 0 {
            return;
        }
        let (store, unique) = (self.store.clone(), self.unique());
        let (key_id, model) = (key_id.to_owned(), model.to_owned());
        tokio::spawn(async move {
            if let Err(e) = store
                .ledger_tokens(&key_id, &model, tokens, now, &unique)
                .await
            {
                tracing::debug!(error = %e, "shared ledger unavailable; tokens counted locally");
            }
        });
    }
}
