//! The `[server]` table: request and connection limits of the listeners, and how many
//! serving threads run, with their defaults and checks.

use crate::secret::Secret;
use anyhow::bail;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub max_body_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub max_connections: usize,
    /// Open connections one client address may hold (an IPv6 client: its /64).
    pub max_connections_per_ip: usize,
    /// How long a new connection has to bring its first request head.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Longest silence while a request body arrives; also the most slack a body earns.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Slowest average a request body may arrive at, in bytes a second.
    pub min_body_rate: u64,
    /// How often an HTTP/2 client is pinged, and how long it has to answer.
    #[serde(with = "humantime_serde")]
    pub http2_keep_alive_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub http2_keep_alive_timeout: Duration,
    /// Threads serving connections, each with its own event loop and upstream connection
    /// pool; 0 means one per CPU core.
    pub workers: usize,
    /// When set, `GET /metrics` needs `Authorization: Bearer <token>`; unset, metrics are
    /// served only on `admin_listen`.
    pub metrics_token: Option<Secret>,
    /// The most a file upload's bytes may be (streamed; `max_body_bytes` does not apply).
    pub max_upload_bytes: u64,
    /// The gateway's URL as clients reach it (`https://gw.example.com`), for the upload
    /// URLs it hands out; unset: from `Host` (or the forwarded headers, when trusted).
    pub public_url: Option<String>,
    /// Networks of the reverse proxies in front (`["127.0.0.1/32", "10.0.0.0/8"]`): only
    /// from these peers are `X-Forwarded-For` / `-Proto` / `-Host` believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl ServerConfig {
    /// Part of the config's `validate()`: the URL is one, no limit is zero.
    pub(super) fn check(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.public_url {
            let ok = url.parse::<http::Uri>().is_ok_and(|u| {
                u.host().is_some() && matches!(u.scheme_str(), Some("http" | "https"))
            });
            if !ok {
                bail!("server.public_url must be an http:// or https:// URL with a host");
            }
        }
        if self.max_body_bytes == 0 {
            bail!("server.max_body_bytes must be positive");
        }
        if self.workers > 256 {
            bail!("server.workers must be at most 256 (0 means one per CPU core)");
        }
        let durations = [
            ("header_read_timeout", self.header_read_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("idle_timeout", self.idle_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("http2_keep_alive_interval", self.http2_keep_alive_interval),
            ("http2_keep_alive_timeout", self.http2_keep_alive_timeout),
        ];
        if let Some((name, _)) = durations.iter().find(|(_, d)| d.is_zero()) {
            bail!("server.{name} must be positive");
        }
        let counts = [
            ("max_connections", self.max_connections as u64),
            ("max_connections_per_ip", self.max_connections_per_ip as u64),
            ("min_body_rate", self.min_body_rate),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, n)| *n == 0) {
            bail!("server.{name} must be at least 1");
        }
        Ok(())
    }

    /// How many serving threads to start.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 32 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            max_connections: 4096,
            max_connections_per_ip: 256,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            min_body_rate: 1024,
            http2_keep_alive_interval: Duration::from_secs(30),
            http2_keep_alive_timeout: Duration::from_secs(20),
            workers: 0,
            metrics_token: None,
            max_upload_bytes: 2 << 30,
            public_url: None,
            trusted_proxies: Vec::new(),
        }
    }
}
