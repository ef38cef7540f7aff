//! The configuration file: serde structs with defaults, unknown keys rejected by name,
//! and `validate()` run before anything binds.
//!
//! This module only reads and checks settings; it opens no sockets and touches no store.
//! Secrets come from the file, from the environment, or from `*_file` paths (systemd
//! `LoadCredential`), and are held as [`Secret`] so they never print.

use crate::secret::Secret;
use anyhow::{Context, bail};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod groups;
mod proxy;
mod server;
mod tls;
mod upstream;
pub use groups::{DEFAULT_GROUP, GroupConfig, SetLimits, check_limits, valid_group};
pub use proxy::{ProxyKind, ProxyUrl, stored as stored_proxy};
pub use server::ServerConfig;
pub use tls::{AcmeConfig, Challenge, TlsConfig};
pub use upstream::UpstreamConfig;

/// The URL schemes of a Redis store; anything else names a redb data directory.
pub const REDIS_SCHEMES: [&str; 3] = ["redis://", "rediss://", "redis+unix://"];

/// Whether a store name is a Redis URL.
pub fn is_redis_url(spec: &str) -> bool {
    REDIS_SCHEMES.iter().any(|scheme| spec.starts_with(scheme))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: SocketAddr,
    /// When set, the admin API, admin page and metrics are served here only (e.g. on
    /// loopback), and `listen` serves only the proxy routes.
    pub admin_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub store: Option<Secret>,
    /// Namespace of every Redis key this daemon writes (`{prefix}:keys`, …).
    pub store_prefix: String,
    pub log_level: String,
    pub admin: AdminConfig,
    pub upstream: UpstreamConfig,
    pub pool: PoolConfig,
    pub server: ServerConfig,
    /// HTTPS on `listen` and `admin_listen`; plain HTTP without it.
    pub tls: Option<TlsConfig>,
    pub logs: LogsConfig,
    pub upstream_keys: Vec<UpstreamKeyConfig>,
    /// Key groups, spent in their order (`[[groups]]`).
    pub groups: Vec<GroupConfig>,
    pub users: Vec<UserConfig>,
    /// Problems worth a warning that do not stop the start (logged once logging is up).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            admin_listen: None,
            data_dir: PathBuf::from("./data"),
            store: None,
            store_prefix: "gemini-balance".to_owned(),
            log_level: "info".to_owned(),
            admin: AdminConfig::default(),
            upstream: UpstreamConfig::default(),
            pool: PoolConfig::default(),
            server: ServerConfig::default(),
            tls: None,
            logs: LogsConfig::default(),
            upstream_keys: Vec::new(),
            groups: Vec::new(),
            users: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub password_hash: Option<Secret>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    /// How long an admin login lasts.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Login attempts allowed per client address in one `login_window` before 429.
    pub login_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub login_window: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            password_hash: None,
            password: None,
            password_file: None,
            session_ttl: Duration::from_secs(12 * 3600),
            login_attempts: 5,
            login_window: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    RoundRobin,
    LeastUsed,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    pub strategy: Strategy,
    /// Upstream attempts per client request (never more than the number of keys).
    pub max_attempts: u32,
    /// Concurrent upstream requests per key; 0 means no cap.
    pub max_concurrent_per_key: u32,
    #[serde(with = "humantime_serde")]
    pub cooldown_base: Duration,
    #[serde(with = "humantime_serde")]
    pub cooldown_max: Duration,
    /// Margin added to Google's `retryDelay`.
    #[serde(with = "humantime_serde")]
    pub retry_delay_margin: Duration,
    /// Consecutive 5xx / network failures before a (key, model) cools briefly.
    pub failure_threshold: u32,
    #[serde(with = "humantime_serde")]
    pub failure_cooldown: Duration,
    /// How long a request may wait for a cooling or busy key before 429/503.
    #[serde(with = "humantime_serde")]
    pub queue_wait: Duration,
    /// Overall budget for one client request, all attempts included (to the first byte).
    #[serde(with = "humantime_serde")]
    pub request_deadline: Duration,
    /// How often `invalid` keys are re-validated with a quota-free call; 0 disables.
    #[serde(with = "humantime_serde")]
    pub revalidate_interval: Duration,
    /// The `[[groups]]` of the file, for the pool (not a `[pool]` key).
    #[serde(skip)]
    pub groups: Vec<GroupConfig>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::RoundRobin,
            max_attempts: 3,
            max_concurrent_per_key: 0,
            cooldown_base: Duration::from_secs(60),
            cooldown_max: Duration::from_secs(12 * 3600),
            retry_delay_margin: Duration::from_secs(1),
            failure_threshold: 3,
            failure_cooldown: Duration::from_secs(30),
            queue_wait: Duration::from_secs(5),
            request_deadline: Duration::from_secs(600),
            revalidate_interval: Duration::from_secs(6 * 3600),
            groups: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// Write a request log record per proxied request (statistics come from it).
    pub enabled: bool,
    pub log_retention_days: u32,
    pub stats_retention_days: u32,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            log_retention_days: 30,
            stats_retention_days: 400,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamKeyConfig {
    pub key: Secret,
    #[serde(default)]
    pub note: Option<String>,
    /// The key's Cloud project (its number): keys of one project share its quotas.
    #[serde(default)]
    pub project: Option<String>,
    /// The key's group (a `[[groups]]` name); the store's (else `default`) when unset.
    #[serde(default)]
    pub group: Option<String>,
    /// Limits for this key, by model name or glob; replace the store's when set.
    #[serde(default)]
    pub limits: Option<std::collections::BTreeMap<String, SetLimits>>,
    /// The key's own egress proxy: its traffic always goes there.
    #[serde(default)]
    pub proxy: Option<ProxyUrl>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    #[serde(default)]
    pub key: Option<Secret>,
    /// The key groups that may serve the user; replaces the store's when set.
    #[serde(default)]
    pub groups: Option<Vec<String>>,
}

impl Config {
    /// Reads the file (if any) and applies environment overrides for secrets.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                let mut config = Self::parse(&text)
                    .with_context(|| format!("in config file {}", path.display()))?;
                config.check_permissions(path);
                config
            }
            None => Self::default(),
        };
        config.apply_env()?;
        Ok(config)
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        // toml's messages name the offending key and line; they quote no values for
        // unknown-field errors, but a type error can echo a value, so keep only the summary.
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            match line {
                Some(line) => anyhow::anyhow!("line {line}: {}", e.message()),
                None => anyhow::anyhow!("{}", e.message()),
            }
        })
    }

    /// A config that may hold secrets should not be readable by every local user.
    fn check_permissions(&mut self, path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let holds_secrets = self.admin.password.is_some()
            || self.admin.password_hash.is_some()
            || self.store.is_some()
            || !self.upstream_keys.is_empty()
            || self.users.iter().any(|u| u.key.is_some());
        let world_readable = std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o004 != 0)
            .unwrap_or(false);
        if holds_secrets && world_readable {
            self.warnings.push(format!(
                "config file {} holds secrets and is readable by every user; run chmod 600 on it",
                path.display()
            ));
        }
    }

    fn apply_env(&mut self) -> anyhow::Result<()> {
        if let Ok(pw) = std::env::var("GEMINI_BALANCE_ADMIN_PASSWORD") {
            self.admin.password = Some(Secret::new(pw));
        }
        if let Some(path) = &self.admin.password_file {
            let pw = std::fs::read_to_string(path)
                .with_context(|| format!("reading admin.password_file {}", path.display()))?;
            self.admin.password = Some(Secret::new(pw.trim_end_matches(['\r', '\n'])));
        }
        if let Ok(url) = std::env::var("GEMINI_BALANCE_STORE") {
            self.store = Some(Secret::new(url));
        }
        Ok(())
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.upstream.check()?;
        if self.admin.login_attempts == 0 || self.admin.login_window.is_zero() {
            bail!("admin.login_attempts and admin.login_window must be positive");
        }
        if self.pool.max_attempts == 0 {
            bail!("pool.max_attempts must be at least 1");
        }
        if self.pool.cooldown_base > self.pool.cooldown_max {
            bail!("pool.cooldown_base must not exceed pool.cooldown_max");
        }
        self.server.check()?;
        if let Some(tls) = &self.tls {
            tls.check()?;
        }
        let mut names = std::collections::HashSet::new();
        for user in &self.users {
            if user.name.trim().is_empty() {
                bail!("[[users]] entry with an empty name");
            }
            if !names.insert(user.name.as_str()) {
                bail!("[[users]] name {:?} appears twice", user.name);
            }
        }
        for key in &self.upstream_keys {
            if key.key.expose().trim().is_empty() {
                bail!("[[upstream_keys]] entry with an empty key");
            }
            if key.project.as_deref().is_some_and(|p| p.trim().is_empty()) {
                bail!("[[upstream_keys]] entry with an empty project");
            }
            if let Some(Err(e)) = key.limits.as_ref().map(check_limits) {
                bail!("[[upstream_keys]] limits: {e}");
            }
        }
        groups::check_groups(
            &self.groups,
            self.upstream_keys.iter().filter_map(|k| k.group.as_deref()),
            self.users
                .iter()
                .flat_map(|u| u.groups.iter().flatten().map(String::as_str)),
        )?;
        if let Some(store) = &self.store {
            let s = store.expose();
            if !is_redis_url(s) {
                bail!(
                    "store must be a redis://, rediss:// or redis+unix:// URL (leave it out for the redb file)"
                );
            }
        }
        if self.store_prefix.is_empty() || self.store_prefix.contains(char::is_whitespace) {
            bail!("store_prefix must be a non-empty word");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_example_parses_and_validates() {
        let text = include_str!("../gemini-balance.toml.example");
        let config = Config::parse(text).expect("example parses");
        config.validate().expect("example validates");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[pool]\nmax_atempts = 3\n").unwrap_err();
        assert!(err.to_string().contains("max_atempts"), "{err}");
    }

    #[test]
    fn durations_are_human() {
        let c = Config::parse("[pool]\nqueue_wait = \"500ms\"\ncooldown_base = \"2m\"\n").unwrap();
        assert_eq!(c.pool.queue_wait, Duration::from_millis(500));
        assert_eq!(c.pool.cooldown_base, Duration::from_secs(120));
    }

    #[test]
    fn trusted_proxies_are_networks() {
        let c = Config::parse("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1/128\"]\n");
        assert_eq!(c.unwrap().server.trusted_proxies.len(), 2);
        let err = Config::parse("[server]\ntrusted_proxies = [\"10.0.0.1\"]\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn a_zero_connection_limit_is_named() {
        for line in [
            "idle_timeout = \"0s\"",
            "max_connections_per_ip = 0",
            "min_body_rate = 0",
        ] {
            let c = Config::parse(&format!("[server]\n{line}\n")).unwrap();
            let err = c.validate().unwrap_err().to_string();
            let name = line.split(' ').next().unwrap();
            assert!(err.contains(name), "{line}: {err}");
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = Config::parse(
            "[admin]\npassword = \"hunter2-marker\"\n[[upstream_keys]]\nkey = \"AIzaMARKER\"\n",
        )
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2-marker") && !dbg.contains("AIzaMARKER"));
    }
}
