//! The affinity table: which pool key (Cloud project) and which user own a resource Google
//! keeps per project — `files/…`, `cachedContents/…`, `batches/…`, operations,
//! `interactions/…`, upload sessions (`upload/{id}`) — and until when Google keeps it.
//!
//! redb: `resources` (name → JSON record) with two index tables, `resource_users`
//! ((user, name) → ()) and `resource_expiry` ((expires, name) → ()), written in one
//! transaction. Redis: the hash `P:res` (name → JSON), the sorted set `P:res_exp` (score:
//! expiry) and one sorted set per user `P:resu:{user}`, written in one MULTI; every
//! instance reads the same rows, so all of them route a resource to the same key.

use super::redb::{backend, decode, encode};
use super::redis::{err, json};
use super::{RedbStore, RedisStore, Store, StoreError};
use fred::prelude::*;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError};
use serde::{Deserialize, Serialize};

const RESOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("resources");
const BY_USER: TableDefinition<(&str, &str), ()> = TableDefinition::new("resource_users");
const BY_EXPIRY: TableDefinition<(i64, &str), ()> = TableDefinition::new("resource_expiry");

/// One resource and who owns it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResourceRecord {
    /// Google's name: `files/abc`, `cachedContents/x`, `models/veo/operations/y`,
    /// `interactions/id`; an upload session is `upload/{upload id}`.
    pub name: String,
    /// The pool key that created it.
    pub key_id: String,
    /// The user whose request created it.
    pub user_id: String,
    pub created_ms: i64,
    /// When Google drops it; the row is pruned then.
    pub expires_ms: i64,
    /// Bytes, when known (files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// An upload session's upload URL at Google (no credential in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

impl ResourceRecord {
    /// `files`, `cachedContents`, `batches`, `operations`, `interactions`, `upload`, …
    pub fn kind(&self) -> &str {
        let first = self.name.split('/').next().unwrap_or("");
        if first == "models" && self.name.contains("/operations/") {
            "operations"
        } else {
            first
        }
    }
}

impl Store {
    /// Records (or replaces) a resource's owner.
    pub async fn put_resource(&self, rec: ResourceRecord) -> Result<(), StoreError> {
        match self {
            Store::Redb(s) => s.put_resource(rec).await,
            Store::Redis(s) => s.put_resource(rec).await,
        }
    }

    /// The owner row of `name`, even when expired (the caller compares with its clock).
    pub async fn resource(&self, name: &str) -> Result<Option<ResourceRecord>, StoreError> {
        match self {
            Store::Redb(s) => s.resource(name).await,
            Store::Redis(s) => s.resource(name).await,
        }
    }

    pub async fn delete_resource(&self, name: &str) -> Result<(), StoreError> {
        match self {
            Store::Redb(s) => s.delete_resource(name).await,
            Store::Redis(s) => s.delete_resource(name).await,
        }
    }

    /// A user's resources (every user's with `None`), sorted by name.
    pub async fn resources(&self, user: Option<&str>) -> Result<Vec<ResourceRecord>, StoreError> {
        let mut out = match self {
            Store::Redb(s) => s.resources(user).await?,
            Store::Redis(s) => s.resources(user).await?,
        };
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Drops the rows whose resource Google has dropped by `now_ms`; answers how many.
    pub async fn prune_resources(&self, now_ms: i64) -> Result<u64, StoreError> {
        match self {
            Store::Redb(s) => s.prune_resources(now_ms).await,
            Store::Redis(s) => s.prune_resources(now_ms).await,
        }
    }
}

/// A table that was never written reads as empty.
fn missing<T>(e: TableError, empty: T) -> Result<T, StoreError> {
    match e {
        TableError::TableDoesNotExist(_) => Ok(empty),
        e => Err(backend(e)),
    }
}

impl RedbStore {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(backend)?
    }

    async fn put_resource(&self, rec: ResourceRecord) -> Result<(), StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            {
                let mut rows = txn.open_table(RESOURCES).map_err(backend)?;
                let mut users = txn.open_table(BY_USER).map_err(backend)?;
                let mut expiry = txn.open_table(BY_EXPIRY).map_err(backend)?;
                let old = rows
                    .get(rec.name.as_str())
                    .map_err(backend)?
                    .map(|v| decode::<ResourceRecord>(&rec.name, v.value()))
                    .transpose()?;
                if let Some(old) = old {
                    users
                        .remove((old.user_id.as_str(), old.name.as_str()))
                        .map_err(backend)?;
                    expiry
                        .remove((old.expires_ms, old.name.as_str()))
                        .map_err(backend)?;
                }
                rows.insert(rec.name.as_str(), encode(&rec).as_slice())
                    .map_err(backend)?;
                users
                    .insert((rec.user_id.as_str(), rec.name.as_str()), ())
                    .map_err(backend)?;
                expiry
                    .insert((rec.expires_ms, rec.name.as_str()), ())
                    .map_err(backend)?;
            }
            txn.commit().map_err(backend)
        })
        .await
    }

    async fn resource(&self, name: &str) -> Result<Option<ResourceRecord>, StoreError> {
        let name = name.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let rows = match txn.open_table(RESOURCES) {
                Ok(t) => t,
                Err(e) => return missing(e, None),
            };
            let row = rows.get(name.as_str()).map_err(backend)?;
            row.map(|v| decode(&name, v.value())).transpose()
        })
        .await
    }

    async fn delete_resource(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            remove_rows(&txn, std::slice::from_ref(&name))?;
            txn.commit().map_err(backend)
        })
        .await
    }

    async fn resources(&self, user: Option<&str>) -> Result<Vec<ResourceRecord>, StoreError> {
        let user = user.map(str::to_owned);
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let rows = match txn.open_table(RESOURCES) {
                Ok(t) => t,
                Err(e) => return missing(e, Vec::new()),
            };
            let mut out = Vec::new();
            let Some(user) = user else {
                for row in rows.iter().map_err(backend)? {
                    let (k, v) = row.map_err(backend)?;
                    out.push(decode(k.value(), v.value())?);
                }
                return Ok(out);
            };
            let users = txn.open_table(BY_USER).map_err(backend)?;
            let range = users.range((user.as_str(), "")..).map_err(backend)?;
            for row in range {
                let (k, _) = row.map_err(backend)?;
                let (u, name) = k.value();
                if u != user {
                    break;
                }
                if let Some(v) = rows.get(name).map_err(backend)? {
                    out.push(decode(name, v.value())?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn prune_resources(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            let names: Vec<String> = {
                let expiry = txn.open_table(BY_EXPIRY).map_err(backend)?;
                let range = expiry.range(..(now_ms, "")).map_err(backend)?;
                range
                    .map(|row| row.map(|(k, _)| k.value().1.to_owned()))
                    .collect::<Result<_, _>>()
                    .map_err(backend)?
            };
            remove_rows(&txn, &names)?;
            txn.commit().map_err(backend)?;
            Ok(names.len() as u64)
        })
        .await
    }
}

fn remove_rows(txn: &redb::WriteTransaction, names: &[String]) -> Result<(), StoreError> {
    let mut rows = txn.open_table(RESOURCES).map_err(backend)?;
    let mut users = txn.open_table(BY_USER).map_err(backend)?;
    let mut expiry = txn.open_table(BY_EXPIRY).map_err(backend)?;
    for name in names {
        let old = rows
            .remove(name.as_str())
            .map_err(backend)?
            .map(|v| decode::<ResourceRecord>(name, v.value()))
            .transpose()?;
        if let Some(old) = old {
            users
                .remove((old.user_id.as_str(), name.as_str()))
                .map_err(backend)?;
            expiry
                .remove((old.expires_ms, name.as_str()))
                .map_err(backend)?;
        }
    }
    Ok(())
}

impl RedisStore {
    async fn put_resource(&self, rec: ResourceRecord) -> Result<(), StoreError> {
        if let Some(old) = self.resource(&rec.name).await? {
            if old.user_id != rec.user_id {
                let _: () = self
                    .client
                    .zrem(self.k(&format!("resu:{}", old.user_id)), old.name.as_str())
                    .await
                    .map_err(err)?;
            }
        }
        let trx = self.client.multi();
        let name = rec.name.as_str();
        let score = rec.expires_ms as f64;
        let queued: Result<(), Error> = async {
            trx.hset::<(), _, _>(self.k("res"), (name, json(&rec)))
                .await?;
            trx.zadd::<(), _, _>(self.k("res_exp"), None, None, false, false, (score, name))
                .await?;
            trx.zadd::<(), _, _>(
                self.k(&format!("resu:{}", rec.user_id)),
                None,
                None,
                false,
                false,
                (score, name),
            )
            .await
        }
        .await;
        queued.map_err(err)?;
        let _: () = trx.exec(true).await.map_err(err)?;
        Ok(())
    }

    async fn resource(&self, name: &str) -> Result<Option<ResourceRecord>, StoreError> {
        let v: Option<String> = self.client.hget(self.k("res"), name).await.map_err(err)?;
        v.map(|v| super::redis::decode(name, v.as_bytes()))
            .transpose()
    }

    async fn delete_resource(&self, name: &str) -> Result<(), StoreError> {
        self.remove_resources(&[name.to_owned()]).await
    }

    async fn remove_resources(&self, names: &[String]) -> Result<(), StoreError> {
        if names.is_empty() {
            return Ok(());
        }
        let rows: Vec<Option<String>> = self
            .client
            .hmget(self.k("res"), names.to_vec())
            .await
            .map_err(err)?;
        let trx = self.client.multi();
        for (name, row) in names.iter().zip(rows) {
            let user = row
                .and_then(|v| serde_json::from_str::<ResourceRecord>(&v).ok())
                .map(|r| r.user_id);
            let queued: Result<(), Error> = async {
                trx.hdel::<(), _, _>(self.k("res"), name.as_str()).await?;
                trx.zrem::<(), _, _>(self.k("res_exp"), name.as_str())
                    .await?;
                if let Some(user) = user {
                    trx.zrem::<(), _, _>(self.k(&format!("resu:{user}")), name.as_str())
                        .await?;
                }
                Ok(())
            }
            .await;
            queued.map_err(err)?;
        }
        let _: () = trx.exec(true).await.map_err(err)?;
        Ok(())
    }

    async fn resources(&self, user: Option<&str>) -> Result<Vec<ResourceRecord>, StoreError> {
        let rows: Vec<String> = match user {
            None => {
                let all: std::collections::HashMap<String, String> =
                    self.client.hgetall(self.k("res")).await.map_err(err)?;
                all.into_values().collect()
            }
            Some(user) => {
                let names: Vec<String> = self
                    .client
                    .zrange(
                        self.k(&format!("resu:{user}")),
                        0,
                        -1,
                        None,
                        false,
                        None,
                        false,
                    )
                    .await
                    .map_err(err)?;
                if names.is_empty() {
                    return Ok(Vec::new());
                }
                let rows: Vec<Option<String>> =
                    self.client.hmget(self.k("res"), names).await.map_err(err)?;
                rows.into_iter().flatten().collect()
            }
        };
        rows.iter()
            .map(|v| super::redis::decode("resource", v.as_bytes()))
            .collect()
    }

    async fn prune_resources(&self, now_ms: i64) -> Result<u64, StoreError> {
        let names: Vec<String> = self
            .client
            .zrangebyscore(self.k("res_exp"), "-inf", format!("({now_ms}"), false, None)
            .await
            .map_err(err)?;
        self.remove_resources(&names).await?;
        Ok(names.len() as u64)
    }
}

#[cfg(test)]
pub(super) mod behaviour;
