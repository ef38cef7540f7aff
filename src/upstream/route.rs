//! Which proxy of `upstream.proxies` a key's requests take: rendezvous hashing on the
//! key's id, so each key sticks to one proxy and adding or removing a proxy moves only
//! the keys that hash to it. A proxy whose connects fail rests for [`REST`]; its keys
//! take their next proxy in the same order meanwhile and come back after. Time is passed
//! in, so the rules are tested without waiting.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// How long a proxy whose connect failed is left out.
pub const REST: Duration = Duration::from_secs(30);

/// The pool's proxies, by index, and when each may be used again.
pub struct Health {
    /// A hash of each proxy's name: its seed in every key's ranking.
    seeds: Vec<u64>,
    /// Milliseconds after `epoch` until which each proxy rests (0: it never failed).
    until: Vec<AtomicU64>,
    epoch: Instant,
}

impl Health {
    /// `names`: each proxy's stable name (its masked URL), in the pool's order.
    pub fn new<S: AsRef<str>>(names: &[S], epoch: Instant) -> Self {
        Self {
            seeds: names.iter().map(|n| hash(&(0u64, n.as_ref()))).collect(),
            until: names.iter().map(|_| AtomicU64::new(0)).collect(),
            epoch,
        }
    }

    pub fn len(&self) -> usize {
        self.seeds.len()
    }

    /// The proxy for `key_id` at `now`, never `skip`: its highest-ranked proxy that is not
    /// resting, else its highest-ranked one (a pool that is all down is still tried).
    /// `None` when there is no proxy but `skip`.
    pub fn pick(&self, key_id: &str, now: Instant, skip: Option<usize>) -> Option<usize> {
        let at = self.ms(now);
        let ranked = (0..self.len())
            .filter(|&i| Some(i) != skip)
            .map(|i| (hash(&(self.seeds[i], key_id)), i));
        let best_up = ranked
            .clone()
            .filter(|&(_, i)| self.until[i].load(Ordering::Relaxed) <= at)
            .max();
        best_up.or_else(|| ranked.max()).map(|(_, i)| i)
    }

    /// Proxy `i` failed to connect at `now`: it rests until `now + REST`. True when it was
    /// not resting already (the caller logs the change once).
    pub fn fail(&self, i: usize, now: Instant) -> bool {
        let at = self.ms(now);
        let until = at + REST.as_millis() as u64;
        self.until[i].swap(until, Ordering::Relaxed) <= at
    }

    /// Milliseconds since `epoch`, from 1 (0 means "never failed").
    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }
}

fn hash(v: &impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Vec<String> {
        (0..300).map(|i| format!("key{i}")).collect()
    }

    #[test]
    fn keys_spread_over_the_pool_and_stay_put() {
        let now = Instant::now();
        let h = Health::new(&["http://a:1", "http://b:2", "http://c:3"], now);
        let picks: Vec<usize> = ids()
            .iter()
            .map(|k| h.pick(k, now, None).unwrap())
            .collect();
        for p in 0..3 {
            let n = picks.iter().filter(|&&x| x == p).count();
            assert!((50..150).contains(&n), "proxy {p} got {n} of 300 keys");
        }
        let again: Vec<usize> = ids()
            .iter()
            .map(|k| h.pick(k, now, None).unwrap())
            .collect();
        assert_eq!(picks, again);
    }

    #[test]
    fn a_failed_proxy_rests_and_only_its_keys_move() {
        let t0 = Instant::now();
        let h = Health::new(&["http://a:1", "http://b:2", "http://c:3"], t0);
        let before: Vec<usize> = ids().iter().map(|k| h.pick(k, t0, None).unwrap()).collect();
        assert!(h.fail(1, t0));
        assert!(!h.fail(1, t0 + Duration::from_secs(1)), "already resting");
        let during = t0 + Duration::from_secs(10);
        for (k, &was) in ids().iter().zip(&before) {
            let now = h.pick(k, during, None).unwrap();
            if was == 1 {
                // Its next proxy is the one it would take were proxy 1 skipped.
                assert_eq!(Some(now), h.pick(k, during, Some(1)), "{k}");
                assert_ne!(now, 1);
            } else {
                assert_eq!(now, was, "{k} moved though its proxy is up");
            }
        }
        // Rested (counted from the last failure): every key is back where it was.
        let after = t0 + Duration::from_secs(1) + REST;
        let back: Vec<usize> = ids()
            .iter()
            .map(|k| h.pick(k, after, None).unwrap())
            .collect();
        assert_eq!(before, back);
    }

    #[test]
    fn a_pool_that_is_all_down_is_still_tried_and_skip_is_honoured() {
        let t0 = Instant::now();
        let h = Health::new(&["http://a:1", "http://b:2"], t0);
        h.fail(0, t0);
        h.fail(1, t0);
        assert!(h.pick("k", t0, None).is_some());
        assert_eq!(h.pick("k", t0, Some(0)), Some(1));
        let one = Health::new(&["http://a:1"], t0);
        assert_eq!(one.pick("k", t0, Some(0)), None);
    }
}
