//! Per-key concurrency caps across instances: with a shared Redis and
//! `max_concurrent_per_key > 0`, a key checked out locally must also win a slot in
//! `{prefix}:kslot:{key id}` (one Lua round trip) before it is used. If Redis cannot be
//! reached the local cap alone applies, so requests keep flowing.

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
