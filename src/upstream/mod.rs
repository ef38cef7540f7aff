//! The HTTP client that talks to Google, all hyper over rustls with bundled web-pki roots
//! (a static binary works on any VPS), a connect timeout, and an optional HTTP CONNECT or
//! SOCKS5 egress proxy (see `connect`). An https upstream that offers `h2` in ALPN is
//! spoken to over HTTP/2 connections that follow its stream limit and grow with the load
//! (see `pool`); plain http:// and hosts that offer only HTTP/1.1 go through hyper-util's
//! pooled HTTP/1.1 client.
//!
//! Each serving thread has its own connections, named by the request's [`Lane`]: a
//! request, its upstream connection and that connection's task stay on one thread, with
//! no cross-thread hand-off per request. Work that no serving thread does (start-up, the
//! key checker) shares one more lane.
//!
//! Live sessions get a connection of their own ([`Upstream::connect_http1`]): HTTP/1.1
//! only, since a WebSocket is an upgrade of an HTTP/1.1 request.
//!
//! It sends requests and returns response heads; retry, classification and relaying
//! belong to `proxy`.

use crate::config::UpstreamConfig;
use bytes::Bytes;
use connect::Connector;
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod body;
mod connect;
pub(crate) mod dns;
mod place;
mod pool;
mod streaming;
mod watch;

pub use body::UpstreamBody;

/// A kept connection is closed rather than reused once it has been idle this long (NAT
/// and load balancers drop quiet connections without telling anyone).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Most idle HTTP/1.1 connections kept per host and pool.
const MAX_IDLE: usize = 256;

/// Which pool a request's connections come from: a serving thread's own, or the shared
/// one. The server puts it in each request's extensions; `Lane::of` reads it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lane(usize);

impl Lane {
    /// The pool of work that no serving thread does (start-up, the key checker).
    pub const SHARED: Self = Self(0);

    /// Serving thread `n` (0-based).
    pub fn serving(n: usize) -> Self {
        Self(n + 1)
    }

    /// The lane a request was given by the server; the shared one when it has none.
    pub fn of(extensions: &http::Extensions) -> Self {
        extensions.get().copied().unwrap_or(Self::SHARED)
    }
}

/// One set of connections per serving thread, plus the shared one (index 0).
pub struct Upstream {
    /// Also makes the connection of each streamed upload (see `streaming`).
    connector: Connector,
    /// Offers only HTTP/1.1: connections for WebSocket upgrades.
    http1: Connector,
    /// HTTP/1.1, per lane.
    pools: Vec<Client<Connector, Full<Bytes>>>,
    /// HTTP/2, per lane: the hosts spoken to so far (usually one or two).
    h2: Vec<Mutex<Vec<Arc<pool::Host>>>>,
    h2_settings: pool::Settings,
    /// The base URLs parsed once: request URIs share their scheme and host.
    bases: Vec<Base>,
}

struct Base {
    url: String,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// The base URL's own path, without a trailing `/` (usually empty).
    prefix: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("timed out waiting for the upstream's answer")]
    Timeout,
    #[error("{0}")]
    Failed(String),
}

impl Upstream {
    /// Pools for `workers` serving threads and the shared one.
    pub fn new(cfg: &UpstreamConfig, workers: usize) -> anyhow::Result<Self> {
        let connector = Connector::new(cfg)?;
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        let pools = (0..=workers)
            .map(|_| builder.build(connector.clone()))
            .collect();
        let bases = [cfg.base_url.clone(), cfg.openai_base()]
            .into_iter()
            .filter_map(|url| {
                let uri: Uri = url.parse().ok()?;
                Some(Base {
                    scheme: uri.scheme()?.clone(),
                    authority: uri.authority()?.clone(),
                    prefix: uri.path().trim_end_matches('/').to_owned(),
                    url,
                })
            })
            .collect();
        Ok(Self {
            http1: Connector::http1_only(cfg)?,
            connector,
            h2: (0..=workers).map(|_| Mutex::default()).collect(),
            h2_settings: pool::Settings::new(cfg),
            pools,
            bases,
        })
    }

    /// `base` (a base URL) joined with `path` and `query`; `None` when that is no URI.
    pub fn uri(&self, base: &str, path: &str, query: Option<&str>) -> Option<Uri> {
        let Some(b) = self.bases.iter().find(|b| b.url == base) else {
            let mut s = String::with_capacity(base.len() + path.len() + 64);
            s.push_str(base.trim_end_matches('/'));
            s.push_str(path);
            if let Some(q) = query {
                s.push('?');
                s.push_str(q);
            }
            return s.parse().ok();
        };
        let mut pq = String::with_capacity(b.prefix.len() + path.len() + 64);
        pq.push_str(&b.prefix);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        if !pq.starts_with('/') {
            return None;
        }
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(b.scheme.clone());
        parts.authority = Some(b.authority.clone());
        parts.path_and_query =
            Some(http::uri::PathAndQuery::from_maybe_shared(Bytes::from(pq)).ok()?);
        Uri::from_parts(parts).ok()
    }

    /// Sends one request (absolute URI) on `lane`'s connections and waits for the response
    /// head, until `deadline` at most.
    pub async fn send(
        &self,
        lane: Lane,
        req: Request<Full<Bytes>>,
        deadline: tokio::time::Instant,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let lane = lane.0.min(self.pools.len() - 1);
        match tokio::time::timeout_at(deadline, self.send_on(lane, req)).await {
            Err(_) => Err(SendError::Timeout),
            Ok(sent) => sent,
        }
    }

    async fn send_on(
        &self,
        lane: usize,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        if let Some(host) = self.h2_host(lane, req.uri()) {
            match host.send(&self.connector, req).await? {
                pool::Sent::Answer(resp) => return Ok(resp),
                pool::Sent::Http1(unsent) => req = unsent,
            }
        }
        match self.pools[lane].request(req).await {
            Ok(resp) => Ok(resp.map(UpstreamBody::from)),
            Err(e) => Err(SendError::Failed(describe(&e))),
        }
    }

    /// The HTTP/2 connections of `lane` to `uri`'s host, for an https URI.
    fn h2_host(&self, lane: usize, uri: &Uri) -> Option<Arc<pool::Host>> {
        if uri.scheme() != Some(&http::uri::Scheme::HTTPS) {
            return None;
        }
        let authority = uri.authority()?;
        let mut hosts = self.h2[lane].lock().unwrap();
        if let Some(h) = hosts.iter().find(|h| h.authority() == Some(authority)) {
            return Some(h.clone());
        }
        let base = Uri::builder()
            .scheme(http::uri::Scheme::HTTPS)
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .ok()?;
        let host = pool::Host::new(base, &self.h2_settings);
        hosts.push(host.clone());
        Some(host)
    }
}

/// A connection of a Live session: tokio I/O over TCP, TLS for `https`.
pub type Http1Io = hyper_util::rt::TokioIo<connect::Stream>;

impl Upstream {
    /// A new connection to `uri`'s host speaking HTTP/1.1 only (ALPN `http/1.1` over TLS),
    /// for a WebSocket upgrade.
    pub async fn connect_http1(&self, uri: Uri) -> Result<Http1Io, SendError> {
        match self.http1.connect(uri).await {
            Ok(io) => Ok(hyper_util::rt::TokioIo::new(io)),
            Err(e) => Err(SendError::Failed(describe(&*e))),
        }
    }
}

/// The `Host` header for `uri`: the host, with the port when it is not the scheme's
/// default.
fn host_value(uri: &Uri) -> Option<http::HeaderValue> {
    let host = uri.host()?;
    let default_port = match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    };
    match uri.port_u16() {
        Some(port) if Some(port) != default_port => format!("{host}:{port}").parse().ok(),
        _ => host.parse().ok(),
    }
}

/// The error and its causes in one line. hyper's errors name hosts, never credentials;
/// the request URI (which never carries a key) is not included.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_uris_join_the_base_url_path_and_query() {
        let cfg = crate::config::UpstreamConfig {
            base_url: "https://example.com/prefix/".to_owned(),
            ..Default::default()
        };
        let up = super::Upstream::new(&cfg, 1).unwrap();
        let uri =
            |base: &str, path: &str, q: Option<&str>| up.uri(base, path, q).map(|u| u.to_string());
        let base = cfg.base_url.as_str();
        assert_eq!(
            uri(base, "/v1beta/models/m:generateContent", Some("alt=sse")).as_deref(),
            Some("https://example.com/prefix/v1beta/models/m:generateContent?alt=sse")
        );
        let openai = cfg.openai_base();
        assert_eq!(
            uri(&openai, "/chat/completions", None).as_deref(),
            Some("https://example.com/prefix/v1beta/openai/chat/completions")
        );
        // A base URL the client was not built with is parsed as it comes.
        assert_eq!(
            uri("http://other.test:8080/", "/x", Some("a=1")).as_deref(),
            Some("http://other.test:8080/x?a=1")
        );
        // What cannot be a path is refused, not sent.
        assert_eq!(uri(base, "/a b", None), None);
        assert_eq!(uri(base, "/a\n", None), None);
    }
}
