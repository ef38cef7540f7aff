//! The quota ledger: for each (key, model) with a known limit — revealed by Google
//! (`quotaValue` in a 429) or set by the admin for the key or its group — the requests
//! sent in the last 60 seconds, the requests of the current Pacific day and the input
//! tokens of the answers of the last 60 seconds, so that selection skips the key before
//! Google would answer 429 and serves the request on another key. A (key, model) with no
//! known limit has no entry and costs nothing.
//!
//! A request counts when its key is leased; its prompt tokens count when its answer
//! ends (from `usageMetadata`), so a key is skipped once the tokens already sent reach
//! the limit, not before a prompt that would cross it. The counts are saved with the
//! persistence task (see `persist`); instances sharing a Redis also check them there.

use super::quota::next_pacific_midnight;
use crate::store::{QuotaLimits, UsageRecord};
use std::collections::VecDeque;

pub const MINUTE_MS: i64 = 60_000;

/// What one (key, model) with known limits has used.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Usage {
    /// Send times (Unix ms) within the last 60 s, oldest first.
    minute: VecDeque<i64>,
    /// (time an answer ended, its prompt tokens) within the last 60 s, oldest first.
    tokens: VecDeque<(i64, u64)>,
    tokens_sum: u64,
    today: u64,
    day_end_ms: i64,
    /// Out until then because the shared ledger (other instances' requests) is full.
    held_until_ms: i64,
    /// The shared ledger's counts when last asked, and when (Unix ms).
    shared: Option<(i64, Used)>,
}

/// What a (key, model) used at some moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Used {
    pub minute: u64,
    pub today: u64,
    pub tokens_minute: u64,
}

impl Usage {
    /// When the next request may go, if a limit is reached at `now`.
    pub fn full_until(&mut self, limits: &QuotaLimits, now: i64) -> Option<i64> {
        self.roll(now);
        if limits.per_day.is_some_and(|n| self.today >= u64::from(n)) {
            return Some(self.day_end_ms.max(self.held_until_ms));
        }
        let mut until = (self.held_until_ms > now).then_some(self.held_until_ms);
        let mut later = |t: i64| until = Some(until.map_or(t, |u: i64| u.max(t)));
        if let Some(n) = limits.per_minute {
            let (n, len) = (n as usize, self.minute.len());
            if n == 0 {
                later(now + MINUTE_MS);
            } else if len >= n {
                // Room again when all but n - 1 of those sent are a minute old.
                later(self.minute[len - n] + MINUTE_MS);
            }
        }
        let tpm = limits.tokens_per_minute.map(u64::from);
        if let Some(max) = tpm.filter(|&m| self.tokens_sum >= m) {
            let mut left = self.tokens_sum;
            for &(at, n) in &self.tokens {
                left -= n;
                if left < max {
                    later(at + MINUTE_MS);
                    break;
                }
            }
        }
        until
    }

    /// Counts one request sent at `now`.
    pub fn count(&mut self, now: i64) {
        self.roll(now);
        self.minute.push_back(now);
        self.today += 1;
    }

    /// Takes back the request counted last (it was never sent).
    pub fn uncount(&mut self) {
        self.minute.pop_back();
        self.today = self.today.saturating_sub(1);
    }

    /// What the shared ledger said at `now`: its counts, and until when the (key,
    /// model) is out when it is full.
    pub fn shared(&mut self, used: Used, out_until: Option<i64>, now: i64) {
        self.shared = Some((now, used));
        if let Some(t) = out_until {
            self.held_until_ms = self.held_until_ms.max(t);
        }
    }

    /// Counts the prompt tokens of an answer that ended at `now`.
    pub fn count_tokens(&mut self, n: u64, now: i64) {
        self.roll(now);
        if n > 0 {
            self.tokens.push_back((now, n));
            self.tokens_sum += n;
        }
    }

    /// What was used in the 60 s before `now`, and today (read without rolling): by
    /// every instance when they share a ledger (as it was when last asked).
    pub fn used(&self, now: i64) -> Used {
        let local = self.used_here(now);
        match self.shared {
            Some((at, s)) if at > now - MINUTE_MS => Used {
                minute: local.minute.max(s.minute),
                today: local
                    .today
                    .max(if now < self.day_end_ms { s.today } else { 0 }),
                tokens_minute: local.tokens_minute.max(s.tokens_minute),
            },
            _ => local,
        }
    }

    fn used_here(&self, now: i64) -> Used {
        let recent = |t: i64| t > now - MINUTE_MS;
        Used {
            minute: self.minute.iter().filter(|&&t| recent(t)).count() as u64,
            today: if now < self.day_end_ms { self.today } else { 0 },
            tokens_minute: self
                .tokens
                .iter()
                .filter(|(t, _)| recent(*t))
                .map(|(_, n)| n)
                .sum(),
        }
    }

    /// Nothing counted in any window at `now`: the entry need not be kept.
    pub fn is_spent(&self, now: i64) -> bool {
        self.used_here(now) == Used::default() && self.held_until_ms <= now
    }

    pub fn to_record(&self) -> UsageRecord {
        UsageRecord {
            minute: self.minute.iter().copied().collect(),
            tokens: self.tokens.iter().copied().collect(),
            today: self.today,
            day_end_ms: self.day_end_ms,
        }
    }

    pub fn from_record(r: &UsageRecord) -> Self {
        Self {
            minute: r.minute.iter().copied().collect(),
            tokens_sum: r.tokens.iter().map(|(_, n)| n).sum(),
            tokens: r.tokens.iter().copied().collect(),
            today: r.today,
            day_end_ms: r.day_end_ms,
            ..Self::default()
        }
    }

    fn roll(&mut self, now: i64) {
        while self.minute.front().is_some_and(|&t| t <= now - MINUTE_MS) {
            self.minute.pop_front();
        }
        while let Some(&(t, n)) = self.tokens.front() {
            if t > now - MINUTE_MS {
                break;
            }
            self.tokens.pop_front();
            self.tokens_sum -= n;
        }
        if now >= self.day_end_ms {
            self.today = 0;
            self.day_end_ms = next_pacific_midnight(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    fn limits(per_minute: Option<u32>, per_day: Option<u32>, tpm: Option<u32>) -> QuotaLimits {
        QuotaLimits {
            per_minute,
            per_day,
            tokens_per_minute: tpm,
        }
    }

    #[test]
    fn a_per_minute_limit_holds_over_any_sixty_seconds() {
        let limits = limits(Some(2), None, None);
        let mut u = Usage::default();
        assert_eq!(u.full_until(&limits, T0), None);
        u.count(T0);
        u.count(T0 + 10_000);
        assert_eq!(u.full_until(&limits, T0 + 20_000), Some(T0 + 60_000));
        assert_eq!(u.used(T0 + 20_000).minute, 2);
        assert_eq!(u.used(T0 + 20_000).today, 2);
        assert_eq!(u.full_until(&limits, T0 + 60_000), None, "the oldest left");
        u.count(T0 + 60_000);
        assert_eq!(u.full_until(&limits, T0 + 60_001), Some(T0 + 70_000));
    }

    #[test]
    fn a_lowered_limit_waits_for_enough_to_age() {
        let mut u = Usage::default();
        for i in 0..4 {
            u.count(T0 + i * 1000);
        }
        let one = limits(Some(1), None, None);
        assert_eq!(u.full_until(&one, T0 + 5_000), Some(T0 + 3_000 + MINUTE_MS));
    }

    #[test]
    fn a_per_day_limit_holds_until_pacific_midnight() {
        let limits = limits(None, Some(2), None);
        let mut u = Usage::default();
        u.count(T0);
        u.count(T0 + 1);
        let midnight = next_pacific_midnight(T0);
        assert_eq!(u.full_until(&limits, T0 + 2), Some(midnight));
        assert_eq!(u.full_until(&limits, midnight), None, "a new day");
        assert_eq!(u.used(midnight), Used::default());
    }

    #[test]
    fn input_tokens_reaching_the_limit_keep_the_key_out_until_enough_age() {
        let limits = limits(None, None, Some(1000));
        let mut u = Usage::default();
        u.count_tokens(400, T0);
        u.count_tokens(500, T0 + 10_000);
        assert_eq!(u.full_until(&limits, T0 + 11_000), None, "900 < 1000");
        u.count_tokens(300, T0 + 20_000);
        assert_eq!(u.used(T0 + 20_000).tokens_minute, 1200);
        // Once the 400 are a minute old, 800 remain: room again.
        assert_eq!(u.full_until(&limits, T0 + 21_000), Some(T0 + MINUTE_MS));
        assert_eq!(u.full_until(&limits, T0 + MINUTE_MS), None);
        assert_eq!(u.used(T0 + MINUTE_MS).tokens_minute, 800);
    }

    #[test]
    fn a_hold_from_the_shared_ledger_keeps_it_out_until_then() {
        let limits = limits(Some(10), None, None);
        let mut u = Usage::default();
        let seen = Used {
            minute: 7,
            today: 30,
            tokens_minute: 0,
        };
        u.count(T0);
        u.shared(seen, Some(T0 + 5_000), T0);
        assert_eq!(u.full_until(&limits, T0), Some(T0 + 5_000));
        assert_eq!(u.used(T0).minute, 7, "the shared counts show");
        assert_eq!(
            u.used(T0 + MINUTE_MS).minute,
            0,
            "until they are a minute old"
        );
        assert_eq!(u.full_until(&limits, T0 + 5_000), None);
        u.uncount();
        assert!(u.is_spent(T0 + 5_000));
    }

    #[test]
    fn the_counts_come_back_from_their_record() {
        let mut u = Usage::default();
        u.count(T0);
        u.count_tokens(40, T0 + 1);
        let back = Usage::from_record(&u.to_record());
        assert_eq!(back, u);
        assert_eq!(back.used(T0 + 2).tokens_minute, 40);
    }
}
