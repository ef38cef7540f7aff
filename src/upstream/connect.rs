//! How connections to the upstream are made: host names resolved by [`Dns`], TCP with a
//! connect timeout, straight or
//! through `upstream.proxy` (HTTP CONNECT or SOCKS5), then rustls for https with ALPN `h2`
//! and `http/1.1` (only `http/1.1` for Live sessions: a WebSocket is an HTTP/1.1 upgrade),
//! trusting the bundled web-pki roots and `upstream.extra_ca_file`.

use super::dns::Dns;
use crate::config::UpstreamConfig;
use crate::relay::BoxError;
use anyhow::Context as _;
use http::Uri;
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

/// Straight to the upstream, or through the egress proxy.
#[derive(Clone)]
pub enum Connector {
    Direct(HttpsConnector<HttpConnector<Dns>>),
    Tunnel(HttpsConnector<Tunnel<HttpConnector<Dns>>>),
    Socks(HttpsConnector<SocksV5<HttpConnector<Dns>>>),
}

impl Connector {
    pub fn new(cfg: &UpstreamConfig) -> anyhow::Result<Self> {
        Self::build(cfg, true)
    }

    /// A connector offering only HTTP/1.1 in ALPN (for WebSocket upgrades).
    pub fn http1_only(cfg: &UpstreamConfig) -> anyhow::Result<Self> {
        Self::build(cfg, false)
    }

    fn build(cfg: &UpstreamConfig, h2: bool) -> anyhow::Result<Self> {
        let dns = Dns::new(&cfg.dns_servers);
        let mut tcp = HttpConnector::new_with_resolver(dns);
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(cfg.connect_timeout));
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(Duration::from_secs(60)));
        let tls = tls_config(cfg)?;
        let Some(proxy) = &cfg.proxy else {
            return Ok(Self::Direct(wrap(tls, h2, tcp)));
        };
        let proxy: Uri = proxy
            .expose()
            .parse()
            .map_err(|_| anyhow::anyhow!("upstream.proxy is not a valid URL"))?;
        match proxy.scheme_str() {
            Some("http") => Ok(Self::Tunnel(wrap(tls, h2, Tunnel::new(proxy, tcp)))),
            Some("socks5") | Some("socks5h") => {
                let remote_dns = proxy.scheme_str() == Some("socks5h");
                let socks = SocksV5::new(proxy, tcp).local_dns(!remote_dns);
                Ok(Self::Socks(wrap(tls, h2, socks)))
            }
            _ => anyhow::bail!("upstream.proxy must be http://, socks5:// or socks5h://"),
        }
    }
}

impl Connector {
    /// One new connection to `uri`'s host.
    pub async fn connect(&self, uri: Uri) -> Result<Stream, BoxError> {
        let mut c = self.clone();
        std::future::poll_fn(|cx| c.poll_ready(cx)).await?;
        c.call(uri).await
    }
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
