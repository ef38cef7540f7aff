//! The admin login's throttle. An attempt is counted before its password is checked, so
//! a burst cannot slip past the count while its checks run; each client address (see
//! `client_addr` for how it is found) has at most one check in flight, and the whole
//! daemon at most [`CHECKS_IN_FLIGHT`] — each argon2 check holds about 19 MiB, so this
//! bounds the memory a stranger can make the daemon use.
//!
//! An address that used up its attempts waits until its window (from its first counted
//! attempt) ends; a successful login clears its count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Password checks running at once, over all addresses.
pub const CHECKS_IN_FLIGHT: usize = 2;
/// Addresses remembered before those whose window has ended are forgotten.
const REMEMBERED: usize = 10_000;

/// Why an attempt may not start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address used up its attempts; it may try again after this long.
    Throttled(Duration),
    /// A check for this address, or the daemon's most, is already running.
    Busy,
}

pub struct LoginGate {
    inner: Arc<Inner>,
}

struct Inner {
    attempts: u32,
    window_ms: i64,
    checks: Arc<Semaphore>,
    by_addr: Mutex<HashMap<IpAddr, Entry>>,
}

#[derive(Clone, Copy)]
struct Entry {
    count: u32,
    since_ms: i64,
    checking: bool,
}

/// A counted attempt: holds its address's and the daemon's check slot until dropped.
/// Moved into the blocking check, so a client that goes away does not free the slot early.
pub struct Attempt {
    inner: Arc<Inner>,
    addr: IpAddr,
    _check: OwnedSemaphorePermit,
}

impl LoginGate {
    /// `attempts` per address in each `window`.
    pub fn new(attempts: u32, window: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                attempts: attempts.max(1),
                window_ms: window.as_millis().max(1) as i64,
                checks: Arc::new(Semaphore::new(CHECKS_IN_FLIGHT)),
                by_addr: Mutex::default(),
            }),
        }
    }

    /// Counts an attempt from `addr` at `now_ms` (Unix ms) and takes its check slots.
    pub fn begin(&self, addr: IpAddr, now_ms: i64) -> Result<Attempt, Refusal> {
        let inner = &self.inner;
        let mut map = inner.lock();
        if map.len() >= REMEMBERED {
            map.retain(|_, e| e.checking || now_ms < e.since_ms + inner.window_ms);
        }
        let fresh = Entry {
            count: 0,
            since_ms: now_ms,
            checking: false,
        };
        let entry = map.entry(addr).or_insert(fresh);
        if now_ms >= entry.since_ms + inner.window_ms {
            *entry = Entry {
                checking: entry.checking,
                ..fresh
            };
        }
        if entry.count >= inner.attempts {
            let wait = entry.since_ms + inner.window_ms - now_ms;
            return Err(Refusal::Throttled(Duration::from_millis(wait as u64)));
        }
        if entry.checking {
            return Err(Refusal::Busy);
        }
        let check = inner
            .checks
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Busy)?;
        entry.count += 1;
        entry.checking = true;
        Ok(Attempt {
            inner: inner.clone(),
            addr,
            _check: check,
        })
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.by_addr.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Attempt {
    /// The password was right: the address's count starts over.
    pub fn succeeded(self) {
        let mut map = self.inner.lock();
        if let Some(e) = map.get_mut(&self.addr) {
            e.count = 0;
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if let Some(e) = self.inner.lock().get_mut(&self.addr) {
            e.checking = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn attempts_are_counted_before_the_check_and_one_runs_per_address() {
        let gate = LoginGate::new(5, Duration::from_secs(60));
        let a = ip("192.0.2.1");
        let first = gate.begin(a, T0).unwrap();
        assert_eq!(gate.begin(a, T0).err(), Some(Refusal::Busy));
        drop(first);
        for _ in 0..4 {
            drop(gate.begin(a, T0).unwrap());
        }
        assert_eq!(
            gate.begin(a, T0 + 1000).err(),
            Some(Refusal::Throttled(Duration::from_secs(59)))
        );
        assert!(gate.begin(ip("192.0.2.2"), T0).is_ok(), "another address");
        assert!(gate.begin(a, T0 + 60_000).is_ok(), "the window ended");
    }

    #[test]
    fn the_daemon_runs_at_most_a_few_checks_at_once() {
        let gate = LoginGate::new(5, Duration::from_secs(60));
        let held: Vec<_> = (0..CHECKS_IN_FLIGHT)
            .map(|i| gate.begin(ip(&format!("192.0.2.{i}")), T0).unwrap())
            .collect();
        assert_eq!(
            gate.begin(ip("198.51.100.1"), T0).err(),
            Some(Refusal::Busy)
        );
        drop(held);
        assert!(gate.begin(ip("198.51.100.1"), T0).is_ok());
    }

    #[test]
    fn a_success_clears_the_count() {
        let gate = LoginGate::new(2, Duration::from_secs(60));
        let a = ip("192.0.2.1");
        drop(gate.begin(a, T0).unwrap());
        gate.begin(a, T0).unwrap().succeeded();
        drop(gate.begin(a, T0).unwrap());
        assert!(gate.begin(a, T0).is_ok(), "two more after the success");
    }
}
