//! `AppState`: everything a request needs, built once at start from the config and the
//! store, then shared as one `Arc`. Start-up also imports the keys and users declared in
//! the config (idempotently) and starts the background tasks it owns.

use crate::auth::AdminAuth;
use crate::config::Config;
use crate::events::Hub;
use crate::keys::persist::{self, Persister};
use crate::keys::shared::SharedSlots;
use crate::keys::{Pool, unix_ms};
use crate::limits::Limits;
use crate::logs::LogSink;
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::spread::Spread;
use crate::store::{Change, Store, Write};
use crate::tls::Tls;
use crate::upstream::Upstream;
use crate::users::{self, Users};
use anyhow::Context;
use std::sync::Arc;
use tokio::task::JoinHandle;

pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub pool: Arc<Pool>,
    pub users: Users,
    pub limits: Arc<Limits>,
    /// Per-key concurrency caps shared by every instance (Redis with a cap only).
    pub key_slots: Option<SharedSlots>,
    pub admin: AdminAuth,
    /// Serialises admin read-modify-write changes to the user list.
    pub admin_lock: tokio::sync::Mutex<()>,
    pub upstream: Upstream,
    pub persister: Persister,
    pub hub: Hub,
    pub logs: LogSink,
    pub metrics: Arc<Metrics>,
    /// Open client connections per serving thread (see `spread`).
    pub spread: Spread,
    /// The certificate of the HTTPS listeners, when `[tls]` is set.
    pub tls: Option<Tls>,
    /// The Live API sessions open now.
    pub live: Arc<crate::logs::OpenSessions>,
}

impl AppState {
    /// Opens the store, loads the pool, applies the config's declarations.
    pub async fn build(config: Config) -> anyhow::Result<(Arc<Self>, Background)> {
        let store = open_store(&config).await?;
        let snapshot = store.load().await.context("loading the store")?;
        let (tx, rx) = persist::channel();
        let hub = Hub::default();
        let mut pool_config = config.pool.clone();
        pool_config.groups = config.groups.clone();
        let pool = Arc::new(Pool::new(pool_config, &snapshot, tx.clone(), hub.clone()));
        let (persister, writer) = persist::spawn(pool.clone(), store.clone(), tx, rx);
        declare_keys(&config, &pool, &persister).await;

        let mut records = snapshot.users.clone();
        let writes = import_users(&config, &mut records);
        store.apply(writes).await.context("saving users")?;
        let users = Users::new(&records);

        let admin = AdminAuth::init(&config.admin, &store)
            .await
            .context("setting up admin login")?;
        let upstream = Upstream::new(&config.upstream, config.server.worker_count())?;
        let metrics = Arc::new(Metrics::default());
        let (logs, log_writer) = LogSink::spawn(
            store.clone(),
            hub.clone(),
            metrics.clone(),
            config.logs.enabled,
        );
        tracing::info!(keys = pool.len(), users = records.len(), "store loaded");
        let (key_slots, limits) = share(&config, &store, &pool);
        let spread = Spread::new(config.server.worker_count());
        let tls = match &config.tls {
            Some(cfg) => Some(Tls::start(cfg, &store).await.context("[tls]")?),
            None => None,
        };
        let state = Arc::new(Self {
            config,
            store,
            pool,
            users,
            limits,
            key_slots,
            admin,
            admin_lock: tokio::sync::Mutex::new(()),
            upstream,
            persister,
            hub,
            logs,
            spread,
            metrics,
            tls,
            live: Arc::default(),
        });
        let background = Background {
            persist: writer,
            logs: log_writer,
        };
        Ok((state, background))
    }
}

/// The store the config names: its Redis URL, else the redb file in the data dir.
async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let url = config.store.as_ref().map(|s| s.expose().to_owned());
    Store::open(url.as_deref(), &config.data_dir, &config.store_prefix)
        .await
        .with_context(|| match &url {
            Some(_) => "opening the Redis store".to_owned(),
            None => format!("opening the store in {}", config.data_dir.display()),
        })
}

/// Adds the upstream keys the config declares and applies what it says of each, durably
/// before anything is served.
async fn declare_keys(config: &Config, pool: &Pool, persister: &Persister) {
    let declared: Vec<(Secret, Option<String>)> = config
        .upstream_keys
        .iter()
        .map(|k| (Secret::new(k.key.expose().trim()), k.note.clone()))
        .collect();
    let added = pool.add(&declared, unix_ms());
    for k in &config.upstream_keys {
        if let Some(e) = pool.get(&crate::keys::key_id(k.key.expose().trim())) {
            pool.declare(&e, k);
        }
    }
    persister.sync().await;
    if !added.is_empty() {
        tracing::info!(
            count = added.len(),
            "imported upstream keys from the config"
        );
    }
}

/// What instances sharing a Redis store share besides it: the quota ledger, the per-key
/// concurrency caps and the user limits. A redb store shares nothing.
fn share(config: &Config, store: &Store, pool: &Pool) -> (Option<SharedSlots>, Arc<Limits>) {
    match store {
        Store::Redis(r) => {
            pool.share_ledger(crate::keys::shared::SharedLedger::new((**r).clone()));
            let slots = SharedSlots::new((**r).clone(), config.pool.max_concurrent_per_key);
            (slots, Arc::new(Limits::shared((**r).clone())))
        }
        Store::Redb(_) => (None, Arc::new(Limits::default())),
    }
}

/// How often instances sharing a store reload it in full, besides change messages.
const RECONCILE_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// With a shared store, keeps this instance's pool and users in step with the others.
pub async fn sync_from_store(state: Arc<AppState>) {
    let mut changes = match state.store.changes(RECONCILE_EVERY).await {
        Ok(Some(rx)) => rx,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(error = %e, "cannot follow the shared store's changes");
            return;
        }
    };
    while let Some(change) = changes.recv().await {
        let result = match change {
            Change::Key(id) => state
                .store
                .load_key(&id)
                .await
                .map(|(rec, st)| state.pool.sync_key(&id, rec, st)),
            Change::Reset(id) => {
                state.pool.forget_usage(&id);
                Ok(())
            }
            Change::Users => state
                .store
                .load_users()
                .await
                .map(|u| state.users.replace(&u)),
            Change::All => state.store.load().await.map(|snap| {
                state.pool.sync_all(&snap);
                state.users.replace(&snap.users);
            }),
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "reloading from the shared store failed; will retry");
        }
    }
}

/// The writer tasks the state owns; `main` ends them in order at shutdown.
pub struct Background {
    pub persist: JoinHandle<()>,
    pub logs: JoinHandle<()>,
}

/// Creates or updates the `[[users]]` of the config. A user without a key in the config
/// gets a generated one on first start, printed once; an existing user keeps theirs.
fn import_users(config: &Config, records: &mut Vec<crate::store::UserRecord>) -> Vec<Write> {
    let now = unix_ms() / 1000;
    let mut writes = Vec::new();
    for declared in &config.users {
        let mut existing = records.iter_mut().find(|r| r.name == declared.name);
        if let (Some(rec), Some(g)) = (existing.as_mut(), &declared.groups) {
            if rec.groups != *g {
                rec.groups = g.clone();
                writes.push(Write::PutUser(rec.clone()));
            }
        }
        match (existing, &declared.key) {
            (Some(rec), Some(key)) => {
                let hash = users::hash_key(key.expose());
                if rec.key_hash != hash {
                    rec.key_hash = hash;
                    rec.key_prefix = users::display_prefix(key.expose());
                    writes.push(Write::PutUser(rec.clone()));
                }
            }
            (Some(_), None) => {}
            (None, key) => {
                let key = match key {
                    Some(k) => k.clone(),
                    None => {
                        let k = users::generate_key();
                        print_banner(&declared.name, &k);
                        k
                    }
                };
                let mut rec = users::record(&declared.name, &key, now);
                rec.groups = declared.groups.clone().unwrap_or_default();
                writes.push(Write::PutUser(rec.clone()));
                records.push(rec);
            }
        }
    }
    writes
}

/// The one place a generated user key is shown: stderr, once, outside the log stream.
fn print_banner(name: &str, key: &Secret) {
    eprintln!(
        "\n==================== gemini-balance ====================\n\
         New user key for {name:?} (shown once, store it now):\n\n    {}\n\
         ========================================================\n",
        key.expose()
    );
}
