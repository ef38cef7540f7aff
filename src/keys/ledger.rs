//! The quota ledger: for each (key, model) whose request limits Google revealed
//! (`quotaValue` of a per-minute or per-day request quota in a 429), the requests sent in
//! the last 60 seconds and in the current Pacific day, so that selection skips the key
//! before Google would answer 429 and serves the request on another key. A (key, model)
//! with no known limit has no entry and costs nothing.
//!
//! The limits are kept with the model's state in the store, so they survive a restart;
//! the counts live in memory and start empty (erring towards sending: Google's own 429
//! then teaches the pool again).

use super::quota::next_pacific_midnight;
use crate::store::QuotaLimits;
use std::collections::VecDeque;

const MINUTE_MS: i64 = 60_000;

/// Requests sent with one (key, model) that has known limits.
#[derive(Debug, Default)]
pub(super) struct Usage {
    /// Send times (Unix ms) within the last 60 s, oldest first; kept only while a
    /// per-minute limit is known.
    minute: VecDeque<i64>,
    today: u64,
    day_end_ms: i64,
}

impl Usage {
    /// When the next request may go, if a known limit is reached at `now`.
    pub fn full_until(&mut self, limits: &QuotaLimits, now: i64) -> Option<i64> {
        self.roll(now);
        if limits.per_day.is_some_and(|n| self.today >= u64::from(n)) {
            return Some(self.day_end_ms);
        }
        match (limits.per_minute, self.minute.front()) {
            (Some(n), Some(oldest)) if self.minute.len() >= n as usize => Some(oldest + MINUTE_MS),
            _ => None,
        }
    }

    /// Counts one request sent at `now`.
    pub fn count(&mut self, limits: &QuotaLimits, now: i64) {
        self.roll(now);
        if limits.per_minute.is_some() {
            self.minute.push_back(now);
        }
        self.today += 1;
    }

    /// Requests in the 60 s before `now`, and today (read without rolling).
    pub fn used(&self, now: i64) -> (u64, u64) {
        let minute = self.minute.iter().filter(|&&t| t > now - MINUTE_MS).count() as u64;
        let today = if now < self.day_end_ms { self.today } else { 0 };
        (minute, today)
    }

    fn roll(&mut self, now: i64) {
        while self.minute.front().is_some_and(|&t| t <= now - MINUTE_MS) {
            self.minute.pop_front();
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

    #[test]
    fn a_per_minute_limit_holds_over_any_sixty_seconds() {
        let limits = QuotaLimits {
            per_minute: Some(2),
            per_day: None,
        };
        let mut u = Usage::default();
        assert_eq!(u.full_until(&limits, T0), None);
        u.count(&limits, T0);
        u.count(&limits, T0 + 10_000);
        assert_eq!(u.full_until(&limits, T0 + 20_000), Some(T0 + 60_000));
        assert_eq!(u.used(T0 + 20_000), (2, 2));
        assert_eq!(u.full_until(&limits, T0 + 60_000), None, "the oldest left");
        u.count(&limits, T0 + 60_000);
        assert_eq!(u.full_until(&limits, T0 + 60_001), Some(T0 + 70_000));
    }

    #[test]
    fn a_per_day_limit_holds_until_pacific_midnight() {
        let limits = QuotaLimits {
            per_minute: None,
            per_day: Some(2),
        };
        let mut u = Usage::default();
        u.count(&limits, T0);
        u.count(&limits, T0 + 1);
        let midnight = next_pacific_midnight(T0);
        assert_eq!(u.full_until(&limits, T0 + 2), Some(midnight));
        assert_eq!(u.full_until(&limits, midnight), None, "a new day");
        assert_eq!(u.used(midnight), (0, 0));
    }
}
