//! The Redis back-end (through `fred`): several daemons sharing one Redis act as one pool.
//!
//! Layout under a configurable prefix `P`: `P:meta`, `P:keys` and `P:users` hashes of JSON
//! records; `P:kstate:{key id}` hashes of per-model state; the request log and statistics
//! buckets as described in `redis_logs.rs`.
//!
//! Sharing: every committed change is announced on `P:changes` with the writer's instance
//! id; other instances reload just that record (see `app::sync_from_store`), and all of
//! them reconcile in full every few seconds and after a reconnect, so a lost message costs
//! at most that long. Requests read only the in-memory copy: no Redis round trip on the
//! critical path unless a shared limit needs one.

use super::format::{self, FORMAT_VERSION};
use super::{KeyRecord, ModelState, Snapshot, StoreError, UserRecord, Write};
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Clone)]
pub struct RedisStore {
    pub(super) client: Client,
    subscriber_config: fred::types::config::Config,
    prefix: Arc<str>,
    instance: Arc<str>,
    healthy: Arc<AtomicBool>,
}

/// What another instance changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Key(String),
    /// The admin reset a key: its quota ledger counts are gone.
    Reset(String),
    Users,
    /// Reload everything (reconnected, or the periodic reconcile).
    All,
}

/// What a batch of writes changed, announced once it is applied.
#[derive(Default)]
struct Changed {
    keys: Vec<String>,
    users: bool,
}

pub(super) fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("redis: {e}"))
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(
    what: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(what.to_owned(), e.to_string()))
}

pub(super) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("store records always serialise")
}

pub(super) fn cmd(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, ClusterHash::FirstKey, false)
}

impl RedisStore {
    /// Connects, or fails at once with a clear error (nothing is served without a store).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let config = Config::from_url(url).map_err(|_| {
            StoreError::Backend(
                "the Redis URL is not valid (redis://[user:pass@]host:port/db, rediss://…, \
                 or redis+unix:///path/to/redis.sock)"
                    .into(),
            )
        })?;
        let client = Builder::from_config(config.clone())
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(5);
                c.internal_command_timeout = Duration::from_secs(5);
            })
            .with_performance_config(|p| {
                p.default_command_timeout = Duration::from_secs(5);
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build()
            .map_err(err)?;
        client.init().await.map_err(|e| {
            StoreError::Backend(format!("cannot connect to Redis: {}", e.details()))
        })?;
        let healthy = Arc::new(AtomicBool::new(true));
        let h = healthy.clone();
        client.on_error(move |(e, _)| {
            let h = h.clone();
            async move {
                if h.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e.details(), "Redis connection lost; serving from the last known state");
                }
                Ok(())
            }
        });
        let h = healthy.clone();
        client.on_reconnect(move |_| {
            let h = h.clone();
            async move {
                if !h.swap(true, Ordering::Relaxed) {
                    tracing::info!("Redis connection is back");
                }
                Ok(())
            }
        });
        let store = Self {
            client,
            subscriber_config: config,
            prefix: prefix.into(),
            instance: format!("{:016x}", rand::random::<u64>()).into(),
            healthy,
        };
        store.check_format().await?;
        Ok(store)
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub(super) fn k(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// Marks a new store with [`FORMAT_VERSION`]; a store of another format is refused.
    async fn check_format(&self) -> Result<(), StoreError> {
        let meta = self.k("meta");
        let found: Option<String> = self
            .client
            .hget(&meta, "format_version")
            .await
            .map_err(err)?;
        match found.and_then(|v| v.parse::<u32>().ok()) {
            Some(v) => format::check(v, FORMAT_VERSION, || {
                format!("Redis (prefix {:?})", self.prefix)
            }),
            None => {
                let _: () = self
                    .client
                    .hset(&meta, ("format_version", FORMAT_VERSION.to_string()))
                    .await
                    .map_err(err)?;
                Ok(())
            }
        }
    }

    pub async fn load(&self) -> Result<Snapshot, StoreError> {
        let mut snap = Snapshot::default();
        let keys: HashMap<String, String> =
            self.client.hgetall(self.k("keys")).await.map_err(err)?;
        let ids: Vec<&String> = keys.keys().collect();
        for chunk in ids.chunks(500) {
            let pipe = self.client.pipeline();
            for id in chunk {
                let _: () = pipe
                    .hgetall(self.k(&format!("kstate:{id}")))
                    .await
                    .map_err(err)?;
            }
            let states: Vec<HashMap<String, String>> = pipe.all().await.map_err(err)?;
            for (id, st) in chunk.iter().zip(states) {
                snap.keys
                    .push(decode::<KeyRecord>(id, keys[*id].as_bytes())?);
                for (model, v) in st {
                    let state: ModelState = decode(&model, v.as_bytes())?;
                    snap.model_states.push(((*id).clone(), model, state));
                }
            }
        }
        snap.keys
            .sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        snap.users = self.load_users().await?;
        Ok(snap)
    }

    async fn model_states(&self, id: &str) -> Result<Vec<(String, ModelState)>, StoreError> {
        let states: HashMap<String, String> = self
            .client
            .hgetall(self.k(&format!("kstate:{id}")))
            .await
            .map_err(err)?;
        states
            .into_iter()
            .map(|(m, v)| Ok((m.clone(), decode(&m, v.as_bytes())?)))
            .collect()
    }

    pub async fn load_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let users: HashMap<String, String> =
            self.client.hgetall(self.k("users")).await.map_err(err)?;
        users
            .iter()
            .map(|(id, v)| decode(id, v.as_bytes()))
            .collect()
    }

    pub async fn load_key(
        &self,
        id: &str,
    ) -> Result<(Option<KeyRecord>, Vec<(String, ModelState)>), StoreError> {
        let rec: Option<String> = self.client.hget(self.k("keys"), id).await.map_err(err)?;
        let rec = rec
            .map(|v| decode::<KeyRecord>(id, v.as_bytes()))
            .transpose()?;
        let states = if rec.is_some() {
            self.model_states(id).await?
        } else {
            Vec::new()
        };
        Ok((rec, states))
    }

    pub async fn apply(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let trx = self.client.multi();
        let mut changed = Changed::default();
        for w in writes {
            self.queue(&trx, w, &mut changed).await.map_err(err)?;
        }
        let _: () = trx.exec(true).await.map_err(err)?;
        self.announce(changed).await
    }

    /// Queues one write in the transaction and notes what it changes.
    async fn queue(
        &self,
        trx: &fred::clients::Transaction,
        w: Write,
        changed: &mut Changed,
    ) -> Result<(), Error> {
        match w {
            Write::PutKey(rec) => {
                changed.keys.push(rec.id.clone());
                trx.hset(self.k("keys"), (rec.id.as_str(), json(&rec)))
                    .await
            }
            Write::DeleteKey(id) => {
                let a: Result<(), Error> = trx.hdel(self.k("keys"), id.as_str()).await;
                changed.keys.push(id.clone());
                a.and(trx.del(self.k(&format!("kstate:{id}"))).await)
            }
            Write::PutModelState {
                key_id,
                model,
                state,
            } => {
                changed.keys.push(key_id.clone());
                trx.hset(
                    self.k(&format!("kstate:{key_id}")),
                    (model.as_str(), json(&state)),
                )
                .await
            }
            Write::DeleteModelState { key_id, model } => {
                changed.keys.push(key_id.clone());
                trx.hdel(self.k(&format!("kstate:{key_id}")), model.as_str())
                    .await
            }
            Write::PutUser(rec) => {
                changed.users = true;
                trx.hset(self.k("users"), (rec.id.as_str(), json(&rec)))
                    .await
            }
            Write::DeleteUser(id) => {
                changed.users = true;
                trx.hdel(self.k("users"), id.as_str()).await
            }
            Write::PutMeta(name, value) => {
                trx.hset(self.k("meta"), (name.as_str(), value.as_slice()))
                    .await
            }
            Write::DeleteMeta(name) => trx.hdel(self.k("meta"), name.as_str()).await,
            // The shared ledger lives in keys of its own, counted as requests go.
            Write::PutUsage { .. } | Write::DeleteUsage { .. } => Ok(()),
        }
    }

    /// Tells other instances which keys, and whether the users, changed.
    async fn announce(&self, mut changed: Changed) -> Result<(), StoreError> {
        changed.keys.sort();
        changed.keys.dedup();
        let channel = self.k("changes");
        for id in changed.keys {
            let _: () = self
                .client
                .publish(&channel, format!("{} key {id}", self.instance))
                .await
                .map_err(err)?;
        }
        if changed.users {
            let _: () = self
                .client
                .publish(&channel, format!("{} users", self.instance))
                .await
                .map_err(err)?;
        }
        Ok(())
    }

    /// Tells other instances the admin reset a key's ledger.
    pub(super) async fn announce_reset(&self, id: &str) -> Result<(), StoreError> {
        let message = format!("{} reset {id}", self.instance);
        let _: () = self
            .client
            .publish(self.k("changes"), message)
            .await
            .map_err(err)?;
        Ok(())
    }

    pub async fn all_meta(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let all: HashMap<String, Vec<u8>> =
            self.client.hgetall(self.k("meta")).await.map_err(err)?;
        Ok(all
            .into_iter()
            .filter(|(k, _)| k != "format_version")
            .collect())
    }

    pub async fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let v: Option<Vec<u8>> = self.client.hget(self.k("meta"), name).await.map_err(err)?;
        Ok(v)
    }

    /// Starts listening for other instances' changes; reconcile ticks come every `every`.
    pub async fn changes(&self, every: Duration) -> Result<mpsc::Receiver<Change>, StoreError> {
        let sub = Builder::from_config(self.subscriber_config.clone())
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build_subscriber_client()
            .map_err(err)?;
        sub.init().await.map_err(err)?;
        let _resubscribe = sub.manage_subscriptions();
        sub.subscribe(self.k("changes")).await.map_err(err)?;
        let (tx, rx) = mpsc::channel(1024);
        let mut messages = sub.message_rx();
        let mut reconnects = sub.reconnect_rx();
        let own = self.instance.clone();
        tokio::spawn(async move {
            let _keep = sub;
            let mut tick = tokio::time::interval(every);
            loop {
                let change = tokio::select! {
                    _ = tick.tick() => Change::All,
                    r = reconnects.recv() => match r {
                        Ok(_) => Change::All,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Change::All,
                        Err(_) => return,
                    },
                    m = messages.recv() => match m {
                        Ok(m) => {
                            let text: String = m.value.convert().unwrap_or_default();
                            let mut parts = text.splitn(3, ' ');
                            let (from, what, id) = (parts.next(), parts.next(), parts.next());
                            if from == Some(&*own) {
                                continue;
                            }
                            match (what, id) {
                                (Some("key"), Some(id)) => Change::Key(id.to_owned()),
                                (Some("reset"), Some(id)) => Change::Reset(id.to_owned()),
                                (Some("users"), _) => Change::Users,
                                _ => continue,
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Change::All,
                        Err(_) => return,
                    },
                };
                if tx.send(change).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    /// The client, for the shared-limit scripts.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn key_name(&self, name: &str) -> String {
        self.k(name)
    }
}
