//! Host names of the upstream and of egress proxies, resolved in Rust with hickory: the
//! name servers of `/etc/resolv.conf` (or `upstream.dns_servers`), `/etc/hosts` first,
//! IPv4 and IPv6 asked together, answers cached for their TTL. The static binary then
//! needs nothing of the host's C library (NSS) to find Google. IP literals never reach
//! here: the TCP connector uses them as they are.

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, NameServerConfigGroup, ResolveHosts, ResolverConfig,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};
use hyper_util::client::legacy::connect::dns::Name;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

/// Answers kept at most this many (names × record types).
const CACHE: usize = 256;

/// A shared resolver, cheap to clone, usable as hyper-util's `HttpConnector` resolver.
#[derive(Clone)]
pub struct Dns(Arc<TokioResolver>);

impl Dns {
    /// The system's name servers, or `servers` when some are given.
    pub fn new(servers: &[SocketAddr]) -> Result<Dns, ResolveError> {
        let provider = TokioConnectionProvider::default();
        let mut builder = if servers.is_empty() {
            TokioResolver::builder(provider)?
        } else {
            let group: Vec<NameServerConfig> = servers
                .iter()
                .flat_map(|&a| [Protocol::Udp, Protocol::Tcp].map(|p| NameServerConfig::new(a, p)))
                .collect();
            let config =
                ResolverConfig::from_parts(None, vec![], NameServerConfigGroup::from(group));
            TokioResolver::builder_with_config(config, provider)
        };
        let opts = builder.options_mut();
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.use_hosts_file = ResolveHosts::Always;
        opts.cache_size = CACHE;
        Ok(Dns(Arc::new(builder.build())))
    }

    /// The addresses of `host` (port 0: the connector sets the port).
    pub async fn lookup(&self, host: &str) -> io::Result<Vec<SocketAddr>> {
        let found = self
            .0
            .lookup_ip(host)
            .await
            .map_err(|e| io::Error::other(format!("cannot resolve {host}: {e}")))?;
        let addrs: Vec<SocketAddr> = found.iter().map(|ip| SocketAddr::new(ip, 0)).collect();
        if addrs.is_empty() {
            return Err(io::Error::other(format!("{host} has no address")));
        }
        Ok(addrs)
    }
}

impl Service<Name> for Dns {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let dns = self.clone();
        Box::pin(async move { dns.lookup(name.as_str()).await.map(Vec::into_iter) })
    }
}
