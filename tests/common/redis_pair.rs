//! Two daemons on one private `redis-server`, from a test's side: the config's store lines,
//! starting the pair, the id a key gets, and waiting until one instance shows what the
//! other changed. (`redis.rs` runs the server itself and stays free of the harness, for
//! the store's unit tests.)

use std::time::Duration;

use super::admin::{brief, list_keys};
use super::daemon::{Config, Daemon};
use super::redis::RedisServer;
use super::wait_for;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The admin password of every daemon of a pair.
pub const PASSWORD: &str = "redis-store-admin-pw-42";

/// How long another instance may take to see a change (a message, or the 15 s reconcile).
pub const SHARED_WITHIN: Duration = Duration::from_secs(10);

/// The config's top-level store settings for `redis` (and a prefix, if not the default).
pub fn store_top(redis: &RedisServer, prefix: Option<&str>) -> String {
    let mut t = format!("store = {:?}\n", redis.url());
    if let Some(p) = prefix {
        t += &format!("store_prefix = {p:?}\n");
    }
    t
}

/// Two daemons on the same config and the same Redis.
pub async fn pair(cfg: &Config, top: &str) -> (Daemon, Daemon) {
    let a = Daemon::start_with_top_level(cfg, top).await;
    let b = Daemon::start_with_top_level(cfg, top).await;
    (a, b)
}

/// The id the daemon gives an upstream key: hex of the first 8 bytes of its SHA-256.
pub fn key_id(k: &str) -> String {
    Sha256::digest(k.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Logs in with [`PASSWORD`].
pub async fn login(d: &Daemon) -> String {
    super::admin::login(d, PASSWORD).await
}

/// The listed entry of upstream key `k`, found by its brief.
pub fn find_key<'a>(list: &'a [Value], k: &str) -> Option<&'a Value> {
    let b = brief(k);
    let found: Vec<_> = list.iter().filter(|e| e["brief"] == b.as_str()).collect();
    assert!(found.len() <= 1, "two keys with brief {b}: {list:?}");
    found.first().copied()
}

/// Waits until `d`'s key list shows `k` with `pred` true of its entry.
pub async fn wait_key(
    d: &Daemon,
    token: &str,
    k: &str,
    what: &str,
    pred: impl Fn(Option<&Value>) -> bool,
) {
    let pred = &pred;
    wait_for(what, SHARED_WITHIN, || async move {
        let list = list_keys(d, token).await;
        if pred(find_key(&list, k)) {
            Ok(())
        } else {
            Err(format!("{list:?}"))
        }
    })
    .await
}
