//! A serving thread's upstream connections.
//!
//! Each serving thread keeps its own connections per upstream host. HTTP/1.1 connections
//! (`h1`) are driven inside the request's task: one is taken for a request and comes back
//! when its answer has been read to the end; requests that find none open one. When the
//! upstream offers HTTP/2 in ALPN, one hyper HTTP/2 connection is shared by all of the
//! thread's requests (at start-up several requests may each open one; the last one made
//! is kept).

use super::UpBody;
use super::h1::{self, Conn};
use crate::body::BoxError;
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, header};
use http_body_util::Full;
use hyper::client::conn::http2;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::proxy::{SocksV5, Tunnel};
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::sync::{Arc, Mutex};
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant};

pub type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;

/// A kept connection is closed rather than reused once it has been idle this long (NAT
/// and load balancers drop quiet connections without telling anyone).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Most HTTP/1.1 connections kept per host and thread.
const MAX_HTTP1: usize = 256;

/// How connections are made: straight, or through the egress proxy; TLS when the URI says
/// https, with ALPN `h2` and `http/1.1`.
#[derive(Clone)]
pub enum Connector {
    Direct(HttpsConnector<HttpConnector>),
    Tunnel(HttpsConnector<Tunnel<HttpConnector>>),
    Socks(HttpsConnector<SocksV5<HttpConnector>>),
}

impl Connector {
    pub(super) async fn connect(&self, uri: Uri) -> Result<Stream, BoxError> {
        async fn call<C>(mut c: C, uri: Uri) -> Result<Stream, BoxError>
        where
            C: tower_service::Service<Uri, Response = Stream>,
            C::Error: Into<BoxError>,
        {
            std::future::poll_fn(|cx| c.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            c.call(uri).await.map_err(Into::into)
        }
        match self {
            Self::Direct(c) => call(c.clone(), uri).await,
            Self::Tunnel(c) => call(c.clone(), uri).await,
            Self::Socks(c) => call(c.clone(), uri).await,
        }
    }
}

struct Idle {
    conn: Conn,
    /// When it came back.
    since: Instant,
}

/// Which upstream a connection goes to.
type Key = (Scheme, Authority);

/// One host's connections on one thread.
struct Host {
    key: Key,
    http1: Vec<Idle>,
    http2: Option<http2::SendRequest<Full<Bytes>>>,
}

type Hosts = Arc<Mutex<Vec<Host>>>;

/// The connections of one serving thread (the lock is only ever taken by that thread,
/// except for the shared pool of the threads that do not serve).
#[derive(Default)]
pub struct Pool {
    hosts: Hosts,
}

/// Where an HTTP/1.1 connection goes back to once its answer has been read.
pub struct Home {
    hosts: Hosts,
    at: usize,
}

impl Home {
    pub fn put_back(self, conn: Conn) {
        let mut hosts = lock(&self.hosts);
        let idle = &mut hosts[self.at].http1;
        if idle.len() >= MAX_HTTP1 {
            idle.retain(|i| i.since.elapsed() < IDLE_TIMEOUT);
        }
        if idle.len() < MAX_HTTP1 {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }
}

fn lock(hosts: &Hosts) -> std::sync::MutexGuard<'_, Vec<Host>> {
    hosts.lock().unwrap_or_else(|e| e.into_inner())
}

enum Fresh {
    Http1(Conn),
    Http2,
}

impl Pool {
    /// Sends `req` (an absolute URI) and waits for the response head. `host` is the `Host`
    /// header an HTTP/1.1 request carries.
    pub async fn send(
        &self,
        connector: &Connector,
        mut req: Request<Full<Bytes>>,
        host: Option<&HeaderValue>,
    ) -> Result<Response<UpBody>, BoxError> {
        let uri = req.uri().clone();
        let key = match (uri.scheme(), uri.authority()) {
            (Some(scheme), Some(authority)) => (scheme.clone(), authority.clone()),
            _ => return Err("the upstream URI has no scheme or host".into()),
        };
        let mut fresh_only = false;
        loop {
            if let Some(mut h2) = self.http2(&key) {
                // HTTP/2 names the host in `:authority`, taken from the absolute URI.
                *req.uri_mut() = uri.clone();
                req.headers_mut().remove(header::HOST);
                match h2.try_send_request(req).await {
                    Ok(resp) => return Ok(resp.map(UpBody::H2)),
                    // The connection went away before the request was sent on it (a
                    // GOAWAY between our check and the send): once more, on a new one.
                    Err(mut e) => match e.take_message() {
                        Some(back) if !fresh_only => {
                            self.with_host(&key, |_, h| h.http2 = None);
                            req = back;
                            fresh_only = true;
                            continue;
                        }
                        _ => return Err(e.into_error().into()),
                    },
                }
            }
            let (at, idle) = self.take_http1(&key, fresh_only);
            let (conn, reused) = match idle {
                Some(conn) => (conn, true),
                None => match self.connect(connector, &key).await? {
                    Fresh::Http2 => continue,
                    Fresh::Http1(conn) => (conn, false),
                },
            };
            to_origin_form(&mut req, &uri, host);
            let home = Home {
                hosts: self.hosts.clone(),
                at,
            };
            match conn.send(&req, reused, home).await {
                Ok(resp) => return Ok(resp.map(UpBody::H1)),
                // A kept connection the upstream had let go: once more, on a new one.
                Err(h1::Failed { retry: true, .. }) if !fresh_only => fresh_only = true,
                Err(failed) => return Err(failed.error),
            }
        }
    }

    fn with_host<T>(&self, key: &Key, f: impl FnOnce(usize, &mut Host) -> T) -> T {
        let mut hosts = lock(&self.hosts);
        let at = match hosts.iter().position(|h| same_host(&h.key, key)) {
            Some(at) => at,
            None => {
                hosts.push(Host {
                    key: key.clone(),
                    http1: Vec::new(),
                    http2: None,
                });
                hosts.len() - 1
            }
        };
        f(at, &mut hosts[at])
    }

    fn http2(&self, key: &Key) -> Option<http2::SendRequest<Full<Bytes>>> {
        self.with_host(key, |_, h| {
            if h.http2.as_ref().is_some_and(http2::SendRequest::is_closed) {
                h.http2 = None;
            }
            h.http2.clone()
        })
    }

    /// Where the host's connections are kept, and (unless `fresh_only`) the most recently
    /// used HTTP/1.1 connection still good, dropping stale ones.
    fn take_http1(&self, key: &Key, fresh_only: bool) -> (usize, Option<Conn>) {
        self.with_host(key, |at, h| {
            if fresh_only {
                return (at, None);
            }
            while let Some(mut idle) = h.http1.pop() {
                if idle.since.elapsed() < IDLE_TIMEOUT && !idle.conn.is_stale() {
                    return (at, Some(idle.conn));
                }
            }
            (at, None)
        })
    }

    /// A new connection: HTTP/2 (kept as the host's shared one) when ALPN chose it.
    async fn connect(&self, connector: &Connector, key: &Key) -> Result<Fresh, BoxError> {
        let base = Uri::builder()
            .scheme(key.0.clone())
            .authority(key.1.clone())
            .path_and_query("/")
            .build()?;
        let io = connector.connect(base).await?;
        if io.connected().is_negotiated_h2() {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.with_host(key, |_, h| h.http2 = Some(sender));
            return Ok(Fresh::Http2);
        }
        Ok(Fresh::Http1(Conn::new(io)))
    }
}

/// Keys made from one base URL share their bytes: equal without comparing them.
fn same_host(a: &Key, b: &Key) -> bool {
    let (x, y) = (a.1.as_str(), b.1.as_str());
    (std::ptr::eq(x, y) && a.0 == b.0) || a == b
}

/// HTTP/1.1 wants the path alone on the request line and the host in `Host`.
fn to_origin_form(req: &mut Request<Full<Bytes>>, uri: &Uri, host: Option<&HeaderValue>) {
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(path);
    if let Some(host) = host {
        req.headers_mut()
            .entry(header::HOST)
            .or_insert_with(|| host.clone());
    }
}

/// A pool of one host for tests of `h1`: where its connections go back, and the pool.
#[cfg(test)]
pub(super) fn test_home() -> (Home, TestPool) {
    let key: Key = (Scheme::HTTP, Authority::from_static("upstream.test"));
    let hosts: Hosts = Arc::new(Mutex::new(vec![Host {
        key,
        http1: Vec::new(),
        http2: None,
    }]));
    (
        Home {
            hosts: hosts.clone(),
            at: 0,
        },
        TestPool(hosts),
    )
}

#[cfg(test)]
pub(super) struct TestPool(Hosts);

#[cfg(test)]
impl TestPool {
    /// How many connections wait in it.
    pub(super) fn idle(&self) -> usize {
        lock(&self.0)[0].http1.len()
    }
}
