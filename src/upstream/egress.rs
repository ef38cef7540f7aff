//! The connections of one egress (straight, or one proxy): HTTP/2 hosts and hyper-util's
//! HTTP/1.1 client, one set per lane. Keys on different proxies never share a
//! connection, since each proxy has an `Egress` of its own.

use super::body::UpstreamBody;
use super::connect::{Connector, Parts};
use super::{SendError, connect_error, pool};
use crate::config::ProxyUrl;
use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A kept connection is closed rather than reused once it has been idle this long (NAT
/// and load balancers drop quiet connections without telling anyone).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Most idle HTTP/1.1 connections kept per host and pool.
const MAX_IDLE: usize = 256;

pub struct Egress {
    /// The proxy, `None` for straight connections.
    pub proxy: Option<ProxyUrl>,
    /// Also makes the connection of each streamed upload (see `streaming`).
    connector: Connector,
    /// Offers only HTTP/1.1: connections for WebSocket upgrades.
    http1: Connector,
    /// HTTP/1.1, per lane.
    pools: Vec<Client<Connector, Full<Bytes>>>,
    /// HTTP/2, per lane: the hosts spoken to so far (usually one or two).
    h2: Vec<Mutex<Vec<Arc<pool::Host>>>>,
    h2_settings: pool::Settings,
}

impl Egress {
    /// Connections through `proxy` for `lanes` lanes.
    pub fn new(
        parts: &Parts,
        proxy: Option<&ProxyUrl>,
        lanes: usize,
        h2_settings: &pool::Settings,
    ) -> Self {
        let connector = Connector::new(parts, proxy, true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        Self {
            proxy: proxy.cloned(),
            http1: Connector::new(parts, proxy, false),
            pools: (0..lanes)
                .map(|_| builder.build(connector.clone()))
                .collect(),
            h2: (0..lanes).map(|_| Mutex::default()).collect(),
            h2_settings: h2_settings.clone(),
            connector,
        }
    }

    /// The connector offering HTTP/2 and HTTP/1.1, or HTTP/1.1 only.
    pub fn connector(&self, h2: bool) -> &Connector {
        if h2 { &self.connector } else { &self.http1 }
    }

    /// Sends one request on `lane`'s connections and waits for the response head.
    pub async fn send(
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
            Err(e) => Err(connect_error(&e)),
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
