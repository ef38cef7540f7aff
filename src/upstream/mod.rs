//! The HTTP client that talks to Google: rustls with bundled web-pki roots (a static
//! binary works on any VPS), HTTP/2 where the server offers it, keep-alive pooling, a
//! connect timeout, and an optional HTTP CONNECT or SOCKS5 egress proxy.
//!
//! Each serving thread (see `daemon`) has its own connection pool (`pool`): a request, its
//! upstream connection and that connection's task stay on one thread, with no
//! cross-thread hand-off per request. Threads that do not serve (start-up, the key
//! checker) share one more pool.
//!
//! It sends requests and returns response heads; retry, classification and relaying
//! belong to `proxy`.

use crate::config::UpstreamConfig;
use anyhow::Context;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::{SocksV5, Tunnel};
use pool::{Connector, Pool};
use std::cell::Cell;
use std::path::Path;
use std::time::Duration;

mod h1;
mod pool;
mod streaming;

/// One pool per serving thread, plus one for every other thread (index 0).
pub struct Upstream {
    connector: Connector,
    pools: Vec<Pool>,
    /// `Host` values for the base URLs (HTTP/1.1 requests carry one), made once.
    hosts: Vec<(http::uri::Authority, HeaderValue)>,
    /// The base URLs parsed once: request URIs share their scheme and host bytes, so the
    /// pool finds a request's connections by pointer instead of comparing names.
    bases: Vec<Base>,
}

struct Base {
    url: String,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// The base URL's own path, without a trailing `/` (usually empty).
    prefix: String,
}

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Marks the current thread as serving thread `n` (1-based): its requests use client `n`.
pub fn set_worker(n: usize) {
    WORKER.with(|w| w.set(n));
}

/// An upstream answer's body: read by this crate's HTTP/1.1 client, or hyper's HTTP/2.
pub enum UpBody {
    H1(h1::Body),
    H2(Incoming),
}

impl UpBody {
    /// Read by hyper's HTTP/2 connection task (not by the caller's own task).
    pub fn is_h2(&self) -> bool {
        matches!(self, Self::H2(_))
    }
}

impl From<Incoming> for UpBody {
    fn from(body: Incoming) -> Self {
        Self::H2(body)
    }
}

impl http_body::Body for UpBody {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Self::H1(b) => std::pin::Pin::new(b).poll_frame(cx),
            Self::H2(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as crate::body::BoxError),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::H1(b) => b.is_end_stream(),
            Self::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Self::H1(b) => b.size_hint(),
            Self::H2(b) => b.size_hint(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("timed out waiting for the upstream's answer")]
    Timeout,
    #[error("{0}")]
    Failed(String),
}

impl Upstream {
    /// Clients for `workers` serving threads and one more for everything else.
    pub fn new(cfg: &UpstreamConfig, workers: usize) -> anyhow::Result<Self> {
        let tls = tls_config(cfg.extra_ca_file.as_deref())?;
        let connector = connector(cfg, tls)?;
        let pools = (0..=workers).map(|_| Pool::default()).collect();
        let hosts = [cfg.base_url.clone(), cfg.openai_base()]
            .iter()
            .filter_map(|base| {
                let uri: Uri = base.parse().ok()?;
                Some((uri.authority()?.clone(), host_value(&uri)?))
            })
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
            connector,
            pools,
            hosts,
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

    fn pool(&self) -> &Pool {
        let n = WORKER.with(Cell::get);
        &self.pools[n.min(self.pools.len() - 1)]
    }

    /// Sends one request and waits for the response head, until `deadline` at most.
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
        deadline: tokio::time::Instant,
    ) -> Result<Response<UpBody>, SendError> {
        let made;
        let host = match self.hosts.iter().find(|(a, _)| {
            req.uri()
                .authority()
                .is_some_and(|b| std::ptr::eq(a.as_str(), b.as_str()) || a == b)
        }) {
            Some((_, host)) => Some(host),
            None => {
                made = host_value(req.uri());
                made.as_ref()
            }
        };
        let fut = self.pool().send(&self.connector, req, host);
        match tokio::time::timeout_at(deadline, fut).await {
            Err(_) => Err(SendError::Timeout),
            Ok(Err(e)) => Err(SendError::Failed(describe(&*e))),
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}

/// rustls with the bundled web-pki roots, plus the CAs of `extra_ca` when set.
fn tls_config(extra_ca: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_ca {
        for cert in crate::pem::certificates(path).context("upstream.extra_ca_file")? {
            roots.add(cert).context("upstream.extra_ca_file")?;
        }
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(
            rustls::crypto::ring::default_provider().into(),
        )
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// Connections straight to the upstream or through `upstream.proxy`; TLS for https with
/// ALPN `h2` and `http/1.1`, plain TCP for http.
fn connector(cfg: &UpstreamConfig, tls: rustls::ClientConfig) -> anyhow::Result<Connector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(cfg.connect_timeout));
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2();
    let Some(proxy) = &cfg.proxy else {
        return Ok(Connector::Direct(https.wrap_connector(http)));
    };
    let proxy_uri: Uri = proxy
        .expose()
        .parse()
        .map_err(|_| anyhow::anyhow!("upstream.proxy is not a valid URL"))?;
    match proxy_uri.scheme_str() {
        Some("http") => {
            let tunnel = Tunnel::new(proxy_uri, http);
            Ok(Connector::Tunnel(https.wrap_connector(tunnel)))
        }
        Some("socks5") | Some("socks5h") => {
            let remote_dns = proxy_uri.scheme_str() == Some("socks5h");
            let socks = SocksV5::new(proxy_uri, http).local_dns(!remote_dns);
            Ok(Connector::Socks(https.wrap_connector(socks)))
        }
        _ => anyhow::bail!("upstream.proxy must be http://, socks5:// or socks5h://"),
    }
}

/// The `Host` header for `uri`: the host, with the port when it
/// is not the scheme's default.
fn host_value(uri: &Uri) -> Option<HeaderValue> {
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
    use super::host_value;

    #[test]
    fn host_header_names_the_port_only_when_it_is_not_the_default() {
        let host = |u: &str| host_value(&u.parse().unwrap()).unwrap();
        assert_eq!(
            host("https://generativelanguage.googleapis.com/v1beta"),
            "generativelanguage.googleapis.com"
        );
        assert_eq!(host("https://example.com:443/"), "example.com");
        assert_eq!(host("http://example.com:80"), "example.com");
        assert_eq!(host("http://127.0.0.1:8123/x"), "127.0.0.1:8123");
        assert_eq!(host("https://[::1]:8443"), "[::1]:8443");
        assert_eq!(host("http://example.com:443"), "example.com:443");
    }

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
        // Known bases share the parsed host (the pool finds connections by it).
        let a = up.uri(base, "/a", None).unwrap();
        let b = up.uri(base, "/b", None).unwrap();
        assert!(std::ptr::eq(
            a.authority().unwrap().as_str(),
            b.authority().unwrap().as_str()
        ));
        // What cannot be a path is refused, not sent.
        assert_eq!(uri(base, "/a b", None), None);
        assert_eq!(uri(base, "/a\n", None), None);
    }
}
