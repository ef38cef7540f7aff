//! `[upstream]`: where Google is, how it is reached (egress proxies, DNS, extra CAs), and
//! the timeouts and connection limits of the client that talks to it.

use super::ProxyUrl;
use anyhow::{Context, bail};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    pub base_url: String,
    pub openai_base_url: Option<String>,
    /// The egress of every key that has no proxy of its own when `proxies` is empty.
    pub proxy: Option<ProxyUrl>,
    /// A pool of egress proxies: each key without a proxy of its own sticks to one of
    /// them (by rendezvous hashing on its id) and moves on while that one fails.
    pub proxies: Vec<ProxyUrl>,
    pub allow_plain_http: bool,
    /// PEM file of CA certificates trusted for the upstream in addition to the bundled
    /// web-pki roots (a TLS-inspecting egress proxy, a private test upstream).
    pub extra_ca_file: Option<std::path::PathBuf>,
    /// Name servers (`ip:port`) for the upstream's and the proxy's host names; empty: those
    /// of `/etc/resolv.conf`.
    pub dns_servers: Vec<std::net::SocketAddr>,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time allowed for the upstream's response headers on one attempt.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Longest silence tolerated between two chunks of a streamed answer.
    #[serde(with = "humantime_serde")]
    pub stream_idle_timeout: Duration,
    /// Longest time a non-stream answer's body may take after its headers, however it
    /// trickles: the key and user slots it holds are freed then.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// HTTP/2 connections to one upstream host per serving thread, at most; past them a
    /// request waits for a free stream until its deadline.
    pub max_connections_per_host: usize,
    /// An HTTP/2 connection takes no new requests once this old (0: no limit).
    #[serde(with = "humantime_serde")]
    pub max_connection_age: Duration,
    /// A connection that has heard nothing from the upstream this long is pinged (0: never).
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// A ping unanswered this long closes its connection.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            base_url: "https://generativelanguage.googleapis.com".to_owned(),
            openai_base_url: None,
            proxy: None,
            proxies: Vec::new(),
            allow_plain_http: false,
            extra_ca_file: None,
            dns_servers: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(300),
            stream_idle_timeout: Duration::from_secs(300),
            body_timeout: Duration::from_secs(300),
            max_connections_per_host: 64,
            max_connection_age: Duration::from_secs(3600),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

impl UpstreamConfig {
    pub fn openai_base(&self) -> String {
        match &self.openai_base_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("{}/v1beta/openai", self.base_url.trim_end_matches('/')),
        }
    }

    /// The checks of `[upstream]` that its types do not make (proxy URLs are checked as
    /// they are read).
    pub(super) fn check(&self) -> anyhow::Result<()> {
        let base = &self.base_url;
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            bail!("upstream.base_url must start with https:// (got a non-URL value)");
        }
        if base.starts_with("http://") && !self.allow_plain_http {
            bail!(
                "upstream.base_url is plain http://; set upstream.allow_plain_http = true to allow it"
            );
        }
        base.parse::<http::Uri>()
            .context("upstream.base_url is not a valid URL")?;
        if self.max_connections_per_host == 0 {
            bail!("upstream.max_connections_per_host must be at least 1");
        }
        let mut seen = std::collections::HashSet::new();
        if self.proxies.iter().any(|p| !seen.insert(p)) {
            bail!("upstream.proxies lists a proxy twice");
        }
        if let Some(path) = &self.extra_ca_file {
            crate::pem::certificates(path).context("upstream.extra_ca_file")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn plain_http_upstream_needs_opt_in() {
        let c = Config::parse("[upstream]\nbase_url = \"http://127.0.0.1:1\"\n").unwrap();
        assert!(c.validate().is_err());
        let c = Config::parse(
            "[upstream]\nbase_url = \"http://127.0.0.1:1\"\nallow_plain_http = true\n",
        )
        .unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn proxies_are_checked_when_read_and_never_quoted() {
        let c = Config::parse(
            "[upstream]\nproxies = [\"http://a:1\", \"socks5h://u:pw@b:2\"]\n\
             [[upstream_keys]]\nkey = \"AIzaX\"\nproxy = \"socks5://c:3\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.upstream.proxies[1].masked(), "socks5h://u:***@b:2");
        assert_eq!(
            c.upstream_keys[0].proxy.as_ref().unwrap().masked(),
            "socks5://c:3"
        );
        for bad in [
            "[upstream]\nproxy = \"ftp://u:hunter2@a:1\"\n",
            "[upstream]\nproxies = [\"http://u:hunter2@a:1/x\"]\n",
            "[[upstream_keys]]\nkey = \"AIzaX\"\nproxy = \"https://u:hunter2@a:1\"\n",
        ] {
            let err = format!("{:#}", Config::parse(bad).unwrap_err());
            assert!(
                err.contains("proxy URL") && !err.contains("hunter2"),
                "{err}"
            );
        }
        let twice = Config::parse("[upstream]\nproxies = [\"http://a:1\", \"http://a:1\"]\n");
        let err = twice.unwrap().validate().unwrap_err().to_string();
        assert!(err.contains("upstream.proxies"), "{err}");
    }
}
