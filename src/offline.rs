//! Subcommands that work on the store while the daemon is stopped: `keys import FILE`,
//! `keys export` and `migrate --from --to`. The redb file is locked by a running daemon, so these fail with a
//! clear error rather than race it.

use crate::cli::KeysAction;
use crate::config::Config;
use crate::keys::format::{extract_keys, looks_like_key};
use crate::keys::{key_id, unix_ms};
use crate::secret::Secret;
use crate::store::{KeyRecord, Store, Write};
use anyhow::Context;
use std::collections::HashSet;
use std::io::Write as _;

pub async fn keys(config: &Config, action: KeysAction) -> anyhow::Result<()> {
    let store = Store::open_redb(&config.data_dir).await.with_context(|| {
        format!(
            "opening the store in {} (is the daemon running?)",
            config.data_dir.display()
        )
    })?;
    let snapshot = store.load().await?;
    match action {
        KeysAction::Export => {
            let mut out = std::io::stdout().lock();
            for k in &snapshot.keys {
                writeln!(out, "{}", k.key.expose())?;
            }
            Ok(())
        }
        KeysAction::Import { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let known: HashSet<String> = snapshot.keys.iter().map(|k| k.id.clone()).collect();
            // Counts are of distinct keys: a key twice in the file is counted once.
            let mut pasted = HashSet::new();
            let (mut present, mut rejected) = (0, 0);
            let mut writes = Vec::new();
            for candidate in extract_keys(&text) {
                if !pasted.insert(candidate.clone()) {
                    continue;
                }
                if !looks_like_key(&candidate) {
                    rejected += 1;
                    continue;
                }
                let id = key_id(&candidate);
                if known.contains(&id) {
                    present += 1;
                    continue;
                }
                writes.push(Write::PutKey(KeyRecord {
                    id,
                    key: Secret::new(candidate),
                    note: None,
                    disabled: false,
                    invalid: None,
                    created_at: unix_ms() / 1000,
                    project: None,
                    limits: Default::default(),
                    group: None,
                    proxy: None,
                }));
            }
            let added = writes.len();
            store.apply(writes).await?;
            println!("added {added}, present {present}, rejected {rejected}");
            Ok(())
        }
    }
}

/// Opens a store named on the command line: a Redis URL or a redb data directory.
async fn open_named(spec: &str, prefix: &str) -> anyhow::Result<Store> {
    let store = if crate::config::is_redis_url(spec) {
        Store::open(Some(spec), std::path::Path::new("."), prefix).await
    } else {
        Store::open_redb(std::path::Path::new(spec)).await
    };
    store.map_err(|e| anyhow::anyhow!("opening {}: {e}", redact(spec)))
}

/// A store name fit for messages: a URL loses its credentials.
fn redact(spec: &str) -> String {
    match spec.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => spec.to_owned(),
        },
        None => spec.to_owned(),
    }
}

pub async fn migrate(config: &Config, from: &str, to: &str) -> anyhow::Result<()> {
    let src = open_named(from, &config.store_prefix).await?;
    let dst = open_named(to, &config.store_prefix).await?;
    let snap = src.load().await?;
    let mut writes: Vec<Write> = snap.keys.iter().cloned().map(Write::PutKey).collect();
    writes.extend(
        snap.model_states
            .iter()
            .map(|(key_id, model, state)| Write::PutModelState {
                key_id: key_id.clone(),
                model: model.clone(),
                state: state.clone(),
            }),
    );
    writes.extend(snap.users.iter().cloned().map(Write::PutUser));
    for (name, value) in src.all_meta().await? {
        writes.push(Write::PutMeta(name, value));
    }
    dst.apply(writes).await?;
    let buckets = src.stats_range(0, i64::MAX).await?;
    let bucket_count = buckets.len();
    dst.import(Vec::new(), buckets).await?;
    let mut q = crate::store::LogQuery {
        limit: 1000,
        ..Default::default()
    };
    let mut records = 0;
    loop {
        let (page, next) = src.query_logs(q.clone()).await?;
        records += page.len();
        dst.import(crate::store::pack_all(&page), Vec::new())
            .await?;
        match next {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    println!(
        "copied {} keys, {} key states, {} users, {records} log records, {bucket_count} statistics buckets from {} to {}",
        snap.keys.len(),
        snap.model_states.len(),
        snap.users.len(),
        src.kind(),
        dst.kind()
    );
    Ok(())
}
