//! The HTTP client that talks to Google, all hyper over rustls with bundled web-pki roots
//! (a static binary works on any VPS), a connect timeout, and egress proxies (HTTP CONNECT
//! or SOCKS5, see `connect`): a key's own, else one of `upstream.proxies` chosen by the
//! key (see `route`), else `upstream.proxy`. Each egress has connections of its own
//! (see `egress`). An https upstream that offers `h2` in ALPN is spoken to over HTTP/2
//! connections that follow its stream limit and grow with the load (see `pool`); plain
//! http:// and hosts that offer only HTTP/1.1 go through hyper-util's pooled HTTP/1.1
//! client.
//!
//! Each serving thread has its own connections, named by the request's [`Lane`]: a
//! request, its upstream connection and that connection's task stay on one thread, with
//! no cross-thread hand-off per request. Work that no serving thread does (start-up, the
//! key checker) shares one more lane.
//!
//! Live sessions get a connection of their own ([`Upstream::connect_http1`]): HTTP/1.1
//! only, since a WebSocket is an upgrade of an HTTP/1.1 request.
//!
//! It sends requests and returns response heads, sending one again only through another
//! proxy of the pool when its proxy failed to connect (nothing reached Google then);
//! retries on other keys, classification and relaying belong to `proxy`.

use crate::boxerror::BoxError;
use crate::config::{ProxyUrl, UpstreamConfig};
use bytes::Bytes;
use egress::Egress;
use http::{Request, Response, Uri};
use http_body_util::Full;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

mod body;
mod connect;
pub(crate) mod dns;
mod egress;
mod place;
mod pool;
mod route;
mod streaming;
mod watch;

pub use body::UpstreamBody;

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

/// The key a request is sent with, which decides its egress: the key's own proxy when it
/// has one, else its proxy of `upstream.proxies` (by its id), else `upstream.proxy` or
/// straight.
pub struct Via<'a> {
    key_id: &'a str,
    proxy: Option<Arc<ProxyUrl>>,
}

impl<'a> Via<'a> {
    pub fn key(key_id: &'a str, proxy: Option<Arc<ProxyUrl>>) -> Self {
        Self { key_id, proxy }
    }
}

/// The connections of every egress, each with one set per serving thread plus the shared
/// one (lane 0).
pub struct Upstream {
    parts: connect::Parts,
    lanes: usize,
    h2_settings: pool::Settings,
    /// `upstream.proxy`, or straight.
    default: Egress,
    /// `upstream.proxies`, and which of them rest after failed connects.
    pool: Vec<Egress>,
    health: route::Health,
    /// The keys' own proxies, each set up when first used.
    own: Mutex<HashMap<ProxyUrl, Arc<Egress>>>,
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
    /// The egress proxy could not be reached or would not connect: nothing was sent.
    #[error("{0}")]
    Proxy(String),
}

/// An egress picked for a request: one of the client's own, or a key's proxy.
enum Picked<'a> {
    Kept(&'a Egress, Option<usize>),
    Own(Arc<Egress>),
}

impl std::ops::Deref for Picked<'_> {
    type Target = Egress;
    fn deref(&self) -> &Egress {
        match self {
            Self::Kept(e, _) => e,
            Self::Own(e) => e,
        }
    }
}

impl Upstream {
    /// Connections for `workers` serving threads and the shared lane.
    pub fn new(cfg: &UpstreamConfig, workers: usize) -> anyhow::Result<Self> {
        let parts = connect::Parts::new(cfg)?;
        let h2_settings = pool::Settings::new(cfg);
        let lanes = workers + 1;
        let egress = |p: Option<&ProxyUrl>| Egress::new(&parts, p, lanes, &h2_settings);
        let default = egress(cfg.proxy.as_ref());
        let pool = cfg.proxies.iter().map(|p| egress(Some(p))).collect();
        let names: Vec<&str> = cfg.proxies.iter().map(ProxyUrl::masked).collect();
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
            health: route::Health::new(&names, Instant::now()),
            default,
            pool,
            own: Mutex::default(),
            parts,
            lanes,
            h2_settings,
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

    /// Sends one request (absolute URI) for `via`'s key on `lane`'s connections and waits
    /// for the response head, until `deadline` at most. When a proxy of the pool fails to
    /// connect, the request goes once more through the key's next proxy.
    pub async fn send(
        &self,
        lane: Lane,
        via: &Via<'_>,
        req: Request<Full<Bytes>>,
        deadline: Instant,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let lane = lane.0.min(self.lanes - 1);
        match tokio::time::timeout_at(deadline, self.send_via(lane, via, req)).await {
            Err(_) => Err(SendError::Timeout),
            Ok(sent) => sent,
        }
    }

    async fn send_via(
        &self,
        lane: usize,
        via: &Via<'_>,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let egress = self.pick(via);
        let Picked::Kept(_, Some(i)) = egress else {
            return egress.send(lane, req).await;
        };
        let spare = copy(&req);
        match egress.send(lane, req).await {
            Err(SendError::Proxy(why)) => match self.fail_over(via, i, &why) {
                Some(next) => self.pool[next].send(lane, spare).await,
                None => Err(SendError::Proxy(why)),
            },
            sent => sent,
        }
    }

    /// A new connection to `uri`'s host for `via`'s key, offering HTTP/2 or not; through
    /// the key's next proxy when its proxy of the pool fails.
    async fn connect_via(
        &self,
        via: &Via<'_>,
        uri: Uri,
        h2: bool,
    ) -> Result<connect::Stream, BoxError> {
        let egress = self.pick(via);
        let first = egress.connector(h2).connect(uri.clone()).await;
        match (first, &egress) {
            (Err(e), Picked::Kept(_, Some(i))) if connect::proxy_failed(&*e) => {
                match self.fail_over(via, *i, &describe(&*e)) {
                    Some(next) => self.pool[next].connector(h2).connect(uri).await,
                    None => Err(e),
                }
            }
            (first, _) => first,
        }
    }

    /// The egress of `via`'s key now.
    fn pick(&self, via: &Via<'_>) -> Picked<'_> {
        if let Some(p) = &via.proxy {
            if let Some(e) = self.pool.iter().find(|e| e.proxy.as_ref() == Some(&**p)) {
                return Picked::Kept(e, None);
            }
            let mut own = self.own.lock().unwrap();
            let e = own.entry((**p).clone()).or_insert_with(|| {
                Arc::new(Egress::new(
                    &self.parts,
                    Some(p),
                    self.lanes,
                    &self.h2_settings,
                ))
            });
            return Picked::Own(e.clone());
        }
        match self.health.pick(via.key_id, Instant::now(), None) {
            Some(i) => Picked::Kept(&self.pool[i], Some(i)),
            None => Picked::Kept(&self.default, None),
        }
    }

    /// Proxy `failed` of the pool did not connect: it rests, and `via`'s key takes its
    /// next proxy (`None` when there is no other).
    fn fail_over(&self, via: &Via<'_>, failed: usize, why: &str) -> Option<usize> {
        let now = Instant::now();
        if self.health.fail(failed, now) {
            tracing::warn!(
                proxy = %self.pool[failed].proxy.as_ref().map_or("", |p| p.masked()),
                %why,
                rest_s = route::REST.as_secs(),
                "egress proxy failed to connect; its keys use their next proxy meanwhile"
            );
        }
        self.health.pick(via.key_id, now, Some(failed))
    }
}

/// A connection of a Live session: tokio I/O over TCP, TLS for `https`.
pub type Http1Io = hyper_util::rt::TokioIo<connect::Stream>;

impl Upstream {
    /// A new connection to `uri`'s host for `via`'s key, speaking HTTP/1.1 only (ALPN
    /// `http/1.1` over TLS), for a WebSocket upgrade.
    pub async fn connect_http1(&self, via: &Via<'_>, uri: Uri) -> Result<Http1Io, SendError> {
        match self.connect_via(via, uri, false).await {
            Ok(io) => Ok(hyper_util::rt::TokioIo::new(io)),
            Err(e) => Err(connect_error(&*e)),
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

/// A failed connect or send as a [`SendError`]: `Proxy` when the egress proxy failed.
fn connect_error(e: &(dyn std::error::Error + 'static)) -> SendError {
    match connect::proxy_failed(e) {
        true => SendError::Proxy(describe(e)),
        false => SendError::Failed(describe(e)),
    }
}

/// A copy of a request whose body is in memory, to send it again.
fn copy(req: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut r = Request::new(req.body().clone());
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.version_mut() = req.version();
    *r.headers_mut() = req.headers().clone();
    r
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
