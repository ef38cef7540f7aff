//! How connections to the upstream are made: host names resolved by [`Dns`], TCP with a
//! connect timeout, straight or through one egress proxy (HTTP CONNECT or SOCKS5, with
//! the URL's user name and password), then rustls for https with ALPN `h2` and `http/1.1`
//! (only `http/1.1` for Live sessions: a WebSocket is an HTTP/1.1 upgrade), trusting the
//! bundled web-pki roots and `upstream.extra_ca_file`.
//!
//! A failure on the way to or through the proxy comes back as [`ProxyFailed`], so the
//! caller can tell a dead proxy from a failing upstream.

use super::dns::Dns;
use crate::boxerror::BoxError;
use crate::config::{ProxyKind, ProxyUrl, UpstreamConfig};
use anyhow::Context as _;
use base64::Engine as _;
use http::{HeaderValue, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::{SocksV5, Tunnel};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tower_service::Service;

pub type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;
type Tcp = HttpConnector<Dns>;

/// Straight to the upstream, or through an egress proxy.
#[derive(Clone)]
pub enum Connector {
    Direct(HttpsConnector<Tcp>),
    Tunnel(HttpsConnector<Marked<Tunnel<Tcp>>>),
    Socks(HttpsConnector<Marked<SocksV5<Tcp>>>),
}

/// What every connector of one upstream client shares: name resolution, TCP settings and
/// the TLS roots.
#[derive(Clone)]
pub struct Parts {
    tcp: Tcp,
    tls: rustls::ClientConfig,
}

impl Parts {
    pub fn new(cfg: &UpstreamConfig) -> anyhow::Result<Self> {
        let mut tcp = HttpConnector::new_with_resolver(Dns::new(&cfg.dns_servers));
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(cfg.connect_timeout));
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(Duration::from_secs(60)));
        Ok(Self {
            tcp,
            tls: tls_config(cfg)?,
        })
    }
}

impl Connector {
    /// Connections through `proxy` (straight without one); `h2`: offer HTTP/2 in ALPN.
    pub fn new(parts: &Parts, proxy: Option<&ProxyUrl>, h2: bool) -> Self {
        let (tls, tcp) = (parts.tls.clone(), parts.tcp.clone());
        let Some(proxy) = proxy else {
            return Self::Direct(wrap(tls, h2, tcp));
        };
        let endpoint = proxy.endpoint().clone();
        let name = proxy.masked().into();
        match proxy.kind() {
            ProxyKind::Http => {
                let mut tunnel = Tunnel::new(endpoint, tcp);
                if let Some(auth) = proxy.credentials().and_then(basic) {
                    tunnel = tunnel.with_auth(auth);
                }
                Self::Tunnel(wrap(
                    tls,
                    h2,
                    Marked {
                        inner: tunnel,
                        name,
                    },
                ))
            }
            kind => {
                let mut socks = SocksV5::new(endpoint, tcp).local_dns(kind == ProxyKind::Socks5);
                if let Some((user, pass)) = proxy.credentials() {
                    socks = socks.with_auth(user.to_owned(), pass.to_owned());
                }
                Self::Socks(wrap(tls, h2, Marked { inner: socks, name }))
            }
        }
    }

    /// One new connection to `uri`'s host.
    pub async fn connect(&self, uri: Uri) -> Result<Stream, BoxError> {
        let mut c = self.clone();
        std::future::poll_fn(|cx| c.poll_ready(cx)).await?;
        c.call(uri).await
    }
}

/// `Proxy-Authorization: Basic …` for a CONNECT proxy.
fn basic((user, pass): (&str, &str)) -> Option<HeaderValue> {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    HeaderValue::from_str(&format!("Basic {token}")).ok()
}

impl Service<Uri> for Connector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Self::Direct(c) => c.poll_ready(cx),
            Self::Tunnel(c) => c.poll_ready(cx),
            Self::Socks(c) => c.poll_ready(cx),
        }
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        match self {
            Self::Direct(c) => c.call(uri),
            Self::Tunnel(c) => c.call(uri),
            Self::Socks(c) => c.call(uri),
        }
    }
}

/// The proxy could not be reached, or would not open the tunnel; names the proxy masked.
#[derive(Debug, thiserror::Error)]
#[error("egress proxy {name}")]
pub struct ProxyFailed {
    name: std::sync::Arc<str>,
    source: BoxError,
}

/// A proxy connector whose failures are [`ProxyFailed`].
#[derive(Clone)]
pub struct Marked<C> {
    inner: C,
    name: std::sync::Arc<str>,
}

impl<C> Service<Uri> for Marked<C>
where
    C: Service<Uri, Response = TokioIo<TcpStream>>,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
{
    type Response = TokioIo<TcpStream>;
    type Error = ProxyFailed;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ProxyFailed>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyFailed>> {
        let name = &self.name;
        self.inner.poll_ready(cx).map_err(|e| ProxyFailed {
            name: name.clone(),
            source: e.into(),
        })
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (fut, name) = (self.inner.call(uri), self.name.clone());
        Box::pin(async move {
            fut.await.map_err(|e| ProxyFailed {
                name,
                source: e.into(),
            })
        })
    }
}

/// True when `e` or one of its causes says the egress proxy failed.
pub fn proxy_failed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.is::<ProxyFailed>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// TLS for https URIs around `conn`, offering `h2` and `http/1.1`, or `http/1.1` alone.
fn wrap<H>(tls: rustls::ClientConfig, h2: bool, conn: H) -> HttpsConnector<H> {
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1();
    if h2 {
        https.enable_http2().wrap_connector(conn)
    } else {
        https.wrap_connector(conn)
    }
}

/// rustls with the bundled web-pki roots, plus the CAs of `upstream.extra_ca_file`.
fn tls_config(cfg: &UpstreamConfig) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = &cfg.extra_ca_file {
        for cert in crate::pem::certificates(path).context("upstream.extra_ca_file")? {
            roots.add(cert).context("upstream.extra_ca_file")?;
        }
    }
    rustls::ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
        .with_safe_default_protocol_versions()
        .context("TLS setup")
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}
