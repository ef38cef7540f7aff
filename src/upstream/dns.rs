//! Host names of the upstream and of egress proxies, resolved in Rust with hickory: the
//! name servers of `/etc/resolv.conf` (or `upstream.dns_servers`), `/etc/hosts` first,
//! IPv4 and IPv6 asked together, answers cached for their TTL. The static binary then
//! needs nothing of the host's C library (NSS) to find Google. IP literals never reach
//! here: the TCP connector uses them as they are.
//!
//! When `/etc/resolv.conf` cannot be read and no `dns_servers` are set, the daemon still
//! starts (an IP-literal upstream or proxy, and names in `/etc/hosts`, need no name
//! server) and says so once in the log; a name that needs a server then fails with that
//! reason. It never falls back to public resolvers the operator did not choose.

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
pub struct Dns {
    resolver: Arc<TokioResolver>,
    /// Why there are no name servers (the system configuration could not be read).
    no_servers: Option<Arc<str>>,
}

impl Dns {
    /// The system's name servers, or `servers` when some are given.
    pub fn new(servers: &[SocketAddr]) -> Dns {
        let provider = TokioConnectionProvider::default();
        let mut no_servers = None;
        let group: Vec<NameServerConfig> = servers
            .iter()
            .flat_map(|&a| [Protocol::Udp, Protocol::Tcp].map(|p| NameServerConfig::new(a, p)))
            .collect();
        let system = match servers.is_empty() {
            true => TokioResolver::builder(provider.clone()).map_err(|e| system_error(&e)),
            false => Err(String::new()),
        };
        let mut builder = match system {
            Ok(b) => b,
            Err(why) => {
                if servers.is_empty() {
                    tracing::warn!("{why}; only IP addresses and /etc/hosts names resolve");
                    no_servers = Some(why.into());
                }
                let config =
                    ResolverConfig::from_parts(None, vec![], NameServerConfigGroup::from(group));
                TokioResolver::builder_with_config(config, provider)
            }
        };
        let opts = builder.options_mut();
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.use_hosts_file = ResolveHosts::Always;
        opts.cache_size = CACHE;
        Dns {
            resolver: Arc::new(builder.build()),
            no_servers,
        }
    }

    /// The addresses of `host` (port 0: the connector sets the port).
    pub async fn lookup(&self, host: &str) -> io::Result<Vec<SocketAddr>> {
        let found = self.resolver.lookup_ip(host).await.map_err(|e| {
            let why = self.no_servers.as_deref().unwrap_or_default();
            let sep = if why.is_empty() { "" } else { "; " };
            io::Error::other(format!("cannot resolve {host}: {e}{sep}{why}"))
        })?;
        let addrs: Vec<SocketAddr> = found.iter().map(|ip| SocketAddr::new(ip, 0)).collect();
        if addrs.is_empty() {
            return Err(io::Error::other(format!("{host} has no address")));
        }
        Ok(addrs)
    }
}

fn system_error(e: &ResolveError) -> String {
    format!(
        "no name servers: the system configuration (/etc/resolv.conf) could not be read ({e}); \
         set upstream.dns_servers"
    )
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
