//! A serving thread's upstream connections, driven with hyper's connection-level client.
//!
//! hyper-util's pooled client costs about 2 µs a request on top of the connection itself
//! (a pool behind a lock and a hashed key, a boxed send future, and a task spawned per
//! request to give the connection back once the answer is read). Here each serving
//! thread keeps its own list per upstream host: an HTTP/1.1 connection is taken when it is
//! ready for a request and put back as soon as the request is handed to it (it is ready
//! again once the answer has been read); an HTTP/2 connection (when the upstream offers
//! it in ALPN) is shared by all of the thread's requests. Requests that find no
//! connection each open one (at start-up several may open HTTP/2 connections at once;
//! the last one made is kept).

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::proxy::{SocksV5, Tunnel};
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::sync::Mutex;
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;

/// A kept connection is closed rather than reused once this long has passed since its
/// last request began (NAT and load balancers drop quiet connections without telling
/// anyone; after a long stream this drops a connection that is still good, which only
/// costs a new one).
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
    async fn connect(&self, uri: Uri) -> Result<Stream, BoxError> {
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
    sender: http1::SendRequest<Full<Bytes>>,
    /// When its last request was handed over.
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

/// The connections of one serving thread (the lock is only ever taken by that thread,
/// except for the shared pool of the threads that do not serve).
#[derive(Default)]
pub struct Pool {
    hosts: Mutex<Vec<Host>>,
}

enum Fresh {
    Http1(http1::SendRequest<Full<Bytes>>),
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
    ) -> Result<Response<Incoming>, BoxError> {
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
                    Ok(resp) => return Ok(resp),
                    // The connection went away before the request was sent on it (a
                    // GOAWAY between our check and the send): once more, on a new one.
                    Err(mut e) => match e.take_message() {
                        Some(back) if !fresh_only => {
                            self.with_host(&key, |h| h.http2 = None);
                            req = back;
                            fresh_only = true;
                            continue;
                        }
                        _ => return Err(e.into_error().into()),
                    },
                }
            }
            let idle = if fresh_only {
                None
            } else {
                self.take_http1(&key)
            };
            let mut sender = match idle {
                Some(sender) => sender,
                None => match self.connect(connector, &key).await? {
                    Fresh::Http2 => continue,
                    Fresh::Http1(sender) => {
                        fresh_only = true;
                        sender
                    }
                },
            };
            to_origin_form(&mut req, &uri, host);
            let answer = sender.try_send_request(req);
            self.put_http1(&key, sender);
            match answer.await {
                Ok(resp) => return Ok(resp),
                // The connection closed before the request went out (a pooled one the
                // upstream had let go): once more, on a new connection.
                Err(mut e) => match e.take_message() {
                    Some(back) if !fresh_only => {
                        req = back;
                        fresh_only = true;
                    }
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    fn with_host<T>(&self, key: &Key, f: impl FnOnce(&mut Host) -> T) -> T {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
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
        f(&mut hosts[at])
    }

    fn http2(&self, key: &Key) -> Option<http2::SendRequest<Full<Bytes>>> {
        self.with_host(key, |h| {
            if h.http2.as_ref().is_some_and(http2::SendRequest::is_closed) {
                h.http2 = None;
            }
            h.http2.clone()
        })
    }

    /// An HTTP/1.1 connection ready for a request, dropping closed and long-kept ones.
    fn take_http1(&self, key: &Key) -> Option<http1::SendRequest<Full<Bytes>>> {
        self.with_host(key, |h| {
            while let Some(at) = h.http1.iter().rposition(|i| i.sender.is_ready()) {
                let idle = h.http1.swap_remove(at);
                if idle.since.elapsed() < IDLE_TIMEOUT {
                    return Some(idle.sender);
                }
            }
            h.http1.retain(|i| !i.sender.is_closed());
            None
        })
    }

    /// Puts a connection back; it is taken again once it is ready.
    fn put_http1(&self, key: &Key, sender: http1::SendRequest<Full<Bytes>>) {
        self.with_host(key, |h| {
            if h.http1.len() >= MAX_HTTP1 {
                h.http1.retain(|i| !i.sender.is_closed());
            }
            if h.http1.len() < MAX_HTTP1 {
                h.http1.push(Idle {
                    sender,
                    since: Instant::now(),
                });
            }
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
            self.with_host(key, |h| h.http2 = Some(sender));
            return Ok(Fresh::Http2);
        }
        let (sender, conn) = http1::handshake(io).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Fresh::Http1(sender))
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
