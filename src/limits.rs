//! Per-user governance on the proxy routes (SPEC 3.6): model allow-list (globs),
//! requests per minute, daily token budget, and concurrent requests. Counters live in
//! memory, one short lock per check; a [`Permit`] holds the user's concurrency slot until
//! the answer's last byte and collects the tokens it used.
//!
//! Days are UTC days. Counters restart empty when the daemon restarts.

use crate::error::ApiError;
use crate::store::UserRecord;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wildmatch::WildMatch;

const DAY_MS: i64 = 24 * 3600 * 1000;
const MINUTE_MS: i64 = 60 * 1000;

#[derive(Default)]
pub struct Limits {
    users: Mutex<HashMap<String, Usage>>,
}

#[derive(Default, Clone, Copy)]
struct Usage {
    minute: i64,
    in_minute: u32,
    in_flight: u32,
    day: i64,
    requests_today: u64,
    tokens_today: u64,
    last_used_at: Option<i64>,
}

impl Usage {
    fn roll(&mut self, now: i64) {
        let (minute, day) = (now / MINUTE_MS, now / DAY_MS);
        if minute != self.minute {
            self.minute = minute;
            self.in_minute = 0;
        }
        if day != self.day {
            self.day = day;
            self.requests_today = 0;
            self.tokens_today = 0;
        }
    }
}

/// What the admin page shows of a user's current usage.
#[derive(Debug, Default, Clone, Copy)]
pub struct UsageView {
    pub in_flight: u32,
    pub requests_today: u64,
    pub tokens_today: u64,
    pub last_used_at: Option<i64>,
}

pub fn model_allowed(patterns: &[String], model: &str) -> bool {
    patterns.is_empty()
        || model.is_empty()
        || patterns.iter().any(|p| WildMatch::new(p).matches(model))
}

impl Limits {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Usage>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits one request of `user` for `model` at `now` (Unix ms), or says which limit
    /// it hit and when to retry.
    pub fn admit(
        self: &Arc<Self>,
        user: &UserRecord,
        model: &str,
        now: i64,
    ) -> Result<Permit, ApiError> {
        if !model_allowed(&user.models, model) {
            return Err(ApiError::ModelNotAllowed(model.to_owned()));
        }
        let mut map = self.lock();
        let u = map.entry(user.id.clone()).or_default();
        u.roll(now);
        let until = |t: i64| Duration::from_millis((t - now).max(0) as u64);
        if user.daily_tokens.is_some_and(|b| u.tokens_today >= b) {
            let next_day = (now / DAY_MS + 1) * DAY_MS;
            return Err(ApiError::UserLimit("daily token budget", until(next_day)));
        }
        if user.rpm.is_some_and(|r| u.in_minute >= r) {
            let next_minute = (now / MINUTE_MS + 1) * MINUTE_MS;
            return Err(ApiError::UserLimit(
                "requests per minute",
                until(next_minute),
            ));
        }
        if user.max_concurrent.is_some_and(|m| u.in_flight >= m) {
            return Err(ApiError::UserLimit(
                "concurrent requests",
                Duration::from_secs(1),
            ));
        }
        u.in_minute += 1;
        u.in_flight += 1;
        u.requests_today += 1;
        u.last_used_at = Some(now / 1000);
        Ok(Permit {
            limits: self.clone(),
            user: user.id.clone(),
        })
    }

    pub fn usage(&self, user_id: &str, now: i64) -> UsageView {
        let mut map = self.lock();
        let Some(u) = map.get_mut(user_id) else {
            return UsageView::default();
        };
        u.roll(now);
        UsageView {
            in_flight: u.in_flight,
            requests_today: u.requests_today,
            tokens_today: u.tokens_today,
            last_used_at: u.last_used_at,
        }
    }
}

/// A user's admitted request; releases its concurrency slot on drop.
pub struct Permit {
    limits: Arc<Limits>,
    user: String,
}

impl Permit {
    pub fn add_tokens(&self, n: u64) {
        if let Some(u) = self.limits.lock().get_mut(&self.user) {
            u.tokens_today += n;
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(u) = self.limits.lock().get_mut(&self.user) {
            u.in_flight = u.in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % MINUTE_MS;

    fn user() -> UserRecord {
        crate::users::record("u", &Secret::new("gb-x"), 0)
    }

    #[test]
    fn allow_list_is_globs() {
        let pats = vec!["gemini-2.5-*".to_owned(), "text-embedding-00?".to_owned()];
        assert!(model_allowed(&pats, "gemini-2.5-flash"));
        assert!(model_allowed(&pats, "text-embedding-004"));
        assert!(!model_allowed(&pats, "gemini-1.5-pro"));
        assert!(model_allowed(&[], "anything"));
    }

    #[test]
    fn rpm_resets_at_the_next_minute() {
        let limits = Arc::new(Limits::default());
        let mut u = user();
        u.rpm = Some(2);
        drop(limits.admit(&u, "m", T0).unwrap());
        drop(limits.admit(&u, "m", T0 + 1).unwrap());
        let Err(ApiError::UserLimit(_, wait)) = limits.admit(&u, "m", T0 + 20_000) else {
            panic!("third request in the minute must be refused");
        };
        assert_eq!(wait, Duration::from_secs(40));
        assert!(limits.admit(&u, "m", T0 + MINUTE_MS).is_ok());
    }

    #[test]
    fn concurrency_and_token_budget() {
        let limits = Arc::new(Limits::default());
        let mut u = user();
        u.max_concurrent = Some(1);
        u.daily_tokens = Some(100);
        let p = limits.admit(&u, "m", T0).unwrap();
        assert!(limits.admit(&u, "m", T0).is_err(), "one at a time");
        p.add_tokens(100);
        drop(p);
        assert!(matches!(
            limits.admit(&u, "m", T0),
            Err(ApiError::UserLimit("daily token budget", _))
        ));
        assert_eq!(limits.usage(&u.id, T0).tokens_today, 100);
        assert!(limits.admit(&u, "m", T0 + DAY_MS).is_ok(), "a new day");
    }
}
