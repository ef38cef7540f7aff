//! Admission of client connections: `server.max_connections` across every serving thread,
//! and `server.max_connections_per_ip` from one address, so one client holding silent
//! sockets cannot take every slot from the others. An IPv6 client counts by its /64 (one
//! host is given a whole /64); IPv4-mapped IPv6 addresses count as the IPv4 address.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The open-connection counts a listener admits against (shared by all its threads).
pub struct Gate {
    slots: Arc<Semaphore>,
    per_ip: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection's place, given back when dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    gate: Arc<Gate>,
    from: IpAddr,
}

impl Gate {
    pub fn new(max_connections: usize, per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(max_connections)),
            per_ip,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Waits for one of the `max_connections` places.
    pub async fn place(&self) -> OwnedSemaphorePermit {
        let permit = self.slots.clone().acquire_owned().await;
        permit.expect("the semaphore is never closed")
    }

    /// Admits a connection from `peer` on `permit`; `None` when that address already
    /// holds `max_connections_per_ip`.
    pub fn admit(self: &Arc<Self>, permit: OwnedSemaphorePermit, peer: IpAddr) -> Option<Slot> {
        let from = bucket(peer);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(from).or_insert(0);
        if *n >= self.per_ip {
            return None;
        }
        *n += 1;
        Some(Slot {
            _permit: permit,
            gate: self.clone(),
            from,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.from) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.from);
            }
        }
    }
}

/// The address a connection counts under.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn admit(gate: &Arc<Gate>, ip: &str) -> Option<Slot> {
        let permit = gate.place().await;
        gate.admit(permit, ip.parse().unwrap())
    }

    #[tokio::test]
    async fn an_address_gets_its_share_and_others_still_get_in() {
        let gate = Gate::new(10, 2);
        let a = [
            admit(&gate, "10.0.0.1").await,
            admit(&gate, "10.0.0.1").await,
        ];
        assert!(a.iter().all(Option::is_some));
        assert!(admit(&gate, "10.0.0.1").await.is_none());
        assert!(admit(&gate, "10.0.0.2").await.is_some());
        drop(a);
        assert!(admit(&gate, "10.0.0.1").await.is_some());
        assert!(
            gate.open.lock().unwrap().is_empty(),
            "closed addresses are forgotten"
        );
    }

    #[tokio::test]
    async fn one_ipv6_host_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let gate = Gate::new(10, 1);
        let _one = admit(&gate, "2001:db8:1:2::1").await.unwrap();
        assert!(admit(&gate, "2001:db8:1:2:ffff::9").await.is_none());
        assert!(admit(&gate, "2001:db8:1:3::1").await.is_some());
        let _v4 = admit(&gate, "192.0.2.7").await.unwrap();
        assert!(admit(&gate, "::ffff:192.0.2.7").await.is_none());
    }
}
