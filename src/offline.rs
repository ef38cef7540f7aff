//! Subcommands that work on the store while the daemon is stopped: `keys import FILE`
//! and `keys export`. The redb file is locked by a running daemon, so these fail with a
//! clear error rather than race it.

use crate::admin::keys::{extract_keys, looks_like_key};
use crate::cli::KeysAction;
use crate::config::Config;
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
            let mut known: HashSet<String> = snapshot.keys.iter().map(|k| k.id.clone()).collect();
            let (mut present, mut rejected) = (0, 0);
            let mut writes = Vec::new();
            for candidate in extract_keys(&text) {
                if !looks_like_key(&candidate) {
                    rejected += 1;
                    continue;
                }
                let id = key_id(&candidate);
                if !known.insert(id.clone()) {
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
                }));
            }
            let added = writes.len();
            store.apply(writes).await?;
            println!("added {added}, present {present}, rejected {rejected}");
            Ok(())
        }
    }
}
