//! Who a request comes from, as far as the daemon may believe it. The server marks each
//! request with its connection ([`Conn`]). Forwarded headers (`X-Forwarded-For`,
//! `X-Forwarded-Proto`, `X-Forwarded-Host`) are believed only when the socket peer is one
//! of `server.trusted_proxies`; the client is then the rightmost `X-Forwarded-For` hop
//! that is not itself a trusted proxy. Throttles key on [`bucket`]: an IPv6 client is its
//! /64, which one host can fill with addresses at will.
//!
//! A leaf module: it reads headers and the config's networks, nothing else.

use http::HeaderMap;
use http::request::Parts;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The connection a request came on, put in its extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub peer: IpAddr,
    /// The connection is TLS to this daemon (set by a TLS listener).
    pub tls: bool,
}

impl Conn {
    pub fn of(parts: &Parts) -> Option<Conn> {
        parts.extensions.get::<Conn>().copied()
    }
}

/// Whether `peer` is a proxy whose forwarded headers are believed.
pub fn trusted(proxies: &[IpNet], peer: IpAddr) -> bool {
    let peer = canonical(peer);
    proxies.iter().any(|net| net.contains(&peer))
}

/// The client's address: the peer, or behind a trusted proxy the rightmost untrusted hop
/// of `X-Forwarded-For` (all hops trusted: the leftmost).
pub fn client_ip(proxies: &[IpNet], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !trusted(proxies, peer) {
        return canonical(peer);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = canonical(peer);
    for hop in hops.iter().rev() {
        // A hop that is not an address was not written by a proxy we trust: stop at the
        // last one that was.
        let Some(ip) = parse_hop(hop) else { break };
        client = canonical(ip);
        if !trusted(proxies, client) {
            break;
        }
    }
    client
}

/// `X-Forwarded-For` hops are addresses, sometimes with a port (`[::1]:80`, `1.2.3.4:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// The value of forwarded header `name` (its first entry), when the peer is trusted.
pub fn forwarded<'a>(proxies: &[IpNet], parts: &'a Parts, name: &str) -> Option<&'a str> {
    let conn = Conn::of(parts)?;
    if !trusted(proxies, conn.peer) {
        return None;
    }
    let v = parts.headers.get(name)?.to_str().ok()?;
    Some(v.split(',').next().unwrap_or("").trim()).filter(|v| !v.is_empty())
}

/// Whether the client reached us over HTTPS: on a TLS connection of our own, or through a
/// trusted proxy that says so in `X-Forwarded-Proto`.
pub fn over_https(proxies: &[IpNet], parts: &Parts) -> bool {
    Conn::of(parts).is_some_and(|c| c.tls)
        || forwarded(proxies, parts, "x-forwarded-proto")
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// The key a per-client throttle counts under: an IPv4 address, or an IPv6 /64.
pub fn bucket(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:1.2.3.4`, a dual-stack socket) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_peer() {
        let proxies = nets(&["10.0.0.0/8"]);
        let h = xff("198.51.100.9, 203.0.113.5, 10.1.1.1");
        assert_eq!(client_ip(&proxies, ip("10.0.0.1"), &h), ip("203.0.113.5"));
        assert_eq!(client_ip(&proxies, ip("192.0.2.1"), &h), ip("192.0.2.1"));
        assert_eq!(client_ip(&[], ip("10.0.0.1"), &h), ip("10.0.0.1"));
        let all_trusted = xff("10.2.2.2, 10.3.3.3");
        assert_eq!(
            client_ip(&proxies, ip("10.0.0.1"), &all_trusted),
            ip("10.2.2.2")
        );
        let junk = xff("203.0.113.5, junk, 10.3.3.3");
        assert_eq!(client_ip(&proxies, ip("10.0.0.1"), &junk), ip("10.3.3.3"));
        let ported = xff("[2001:db8::1]:443");
        assert_eq!(
            client_ip(&proxies, ip("10.0.0.1"), &ported),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn ipv6_clients_are_bucketed_by_their_64() {
        assert_eq!(bucket(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(bucket(ip("2001:db8:1:2::ffff")), ip("2001:db8:1:2::"));
        assert_ne!(bucket(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(bucket(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(bucket(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }
}
