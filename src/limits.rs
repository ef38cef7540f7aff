//! Per-user governance on the proxy routes: model allow-list (globs),
//! requests per minute, daily token budget, and concurrent requests. Counters live in
//! memory, one short lock per check; a [`Permit`] holds the user's concurrency slot until
//! the answer's last byte and collects the tokens it used.
//!
//! Days are UTC days. With a private store the counters live in this process (and start
//! empty after a restart). With Redis, a user that has any limit is admitted by one Lua
//! script on the shared counters, so limits hold across instances; users without limits
//! cost no round trip.

use crate::error::ApiError;
use crate::store::RedisStore;
use crate::store::UserRecord;
use fred::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wildmatch::WildMatch;

const DAY_MS: i64 = 24 * 3600 * 1000;
const MINUTE_MS: i64 = 60 * 1000;

#[derive(Default)]
pub struct Limits {
    users: Mutex<HashMap<String, Usage>>,
    shared: Option<Shared>,
}

/// Counters in a shared Redis: `P:u:{USER}:rpm:{minute}`, `…:tok:{day}`, `…:inflight`; the
/// user id in braces is a Redis Cluster hash tag, so one script's keys share a slot.
struct Shared {
    store: RedisStore,
}

const ADMIT: &str = r#"
local budget, rpm, maxc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if budget > 0 and tonumber(redis.call('GET', KEYS[1]) or '0') >= budget then return 1 end
if rpm > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= rpm then return 2 end
if maxc > 0 and tonumber(redis.call('GET', KEYS[3]) or '0') >= maxc then return 3 end
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], 61000)
if maxc > 0 then
  redis.call('INCR', KEYS[3])
  redis.call('PEXPIRE', KEYS[3], 600000)
end
return 0
"#;

impl Shared {
    fn key(&self, user: &str, what: &str) -> String {
        self.store.key_name(&format!("u:{{{user}}}:{what}"))
    }

    async fn admit(&self, user: &UserRecord, now: i64) -> Result<i64, ApiError> {
        let keys = vec![
            self.key(&user.id, &format!("tok:{}", now / DAY_MS)),
            self.key(&user.id, &format!("rpm:{}", now / MINUTE_MS)),
            self.key(&user.id, "inflight"),
        ];
        let args = vec![
            user.daily_tokens.unwrap_or(0).to_string(),
            user.rpm.unwrap_or(0).to_string(),
            user.max_concurrent.unwrap_or(0).to_string(),
        ];
        self.store
            .client()
            .eval::<i64, _, _, _>(ADMIT, keys, args)
            .await
            .map_err(|e| ApiError::Store(format!("shared limits unavailable: {}", e.details())))
    }
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
    /// Limits kept in a shared Redis, so they hold across instances.
    pub fn shared(store: RedisStore) -> Self {
        Self {
            users: Mutex::default(),
            shared: Some(Shared { store }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Usage>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits one request of `user` for `model` at `now` (Unix ms), or says which limit
    /// it hit and when to retry.
    pub async fn admit(
        self: &Arc<Self>,
        user: &UserRecord,
        model: &str,
        now: i64,
    ) -> Result<Permit, ApiError> {
        if !model_allowed(&user.models, model) {
            return Err(ApiError::ModelNotAllowed(model.to_owned()));
        }
        let limited =
            user.rpm.is_some() || user.daily_tokens.is_some() || user.max_concurrent.is_some();
        if let (Some(shared), true) = (&self.shared, limited) {
            match shared.admit(user, now).await? {
                0 => {}
                1 => return Err(refusal("daily token budget", now)),
                2 => return Err(refusal("requests per minute", now)),
                _ => return Err(refusal("concurrent requests", now)),
            }
            let mut map = self.lock();
            let u = usage_of(&mut map, &user.id);
            u.roll(now);
            u.in_flight += 1;
            u.requests_today += 1;
            u.last_used_at = Some(now / 1000);
            return Ok(Permit {
                limits: self.clone(),
                user: user.id.clone(),
                groups: user.groups.clone(),
                shared_slot: user.max_concurrent.is_some(),
                tokens: AtomicU64::new(0),
            });
        }
        self.admit_local(user, now)
    }

    fn admit_local(self: &Arc<Self>, user: &UserRecord, now: i64) -> Result<Permit, ApiError> {
        let mut map = self.lock();
        let u = usage_of(&mut map, &user.id);
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
            groups: user.groups.clone(),
            shared_slot: false,
            tokens: AtomicU64::new(0),
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

/// When a refused request may try again.
fn refusal(what: &'static str, now: i64) -> ApiError {
    let until = match what {
        "daily token budget" => (now / DAY_MS + 1) * DAY_MS,
        "requests per minute" => (now / MINUTE_MS + 1) * MINUTE_MS,
        _ => now + 1000,
    };
    ApiError::UserLimit(what, Duration::from_millis((until - now).max(0) as u64))
}

/// A user's admitted request; releases its concurrency slot on drop.
/// The user's counters, made on first use (the id is copied only then, not per request).
fn usage_of<'a>(map: &'a mut HashMap<String, Usage>, id: &str) -> &'a mut Usage {
    if !map.contains_key(id) {
        map.insert(id.to_owned(), Usage::default());
    }
    map.get_mut(id).expect("inserted above")
}

pub struct Permit {
    limits: Arc<Limits>,
    user: String,
    /// The key groups that may serve the user; empty: every group.
    groups: Vec<String>,
    /// Holds a slot in the shared in-flight counter.
    shared_slot: bool,
    /// Tokens the request used, counted into the user's day when the permit goes (with
    /// the slot's release, under the same lock: the answer's end drops the permit).
    tokens: AtomicU64,
}

impl Permit {
    pub fn groups(&self) -> &[String] {
        &self.groups
    }

    pub fn add_tokens(&self, n: u64) {
        self.tokens.fetch_add(n, Ordering::Relaxed);
        if let (Some(shared), true) = (&self.limits.shared, n > 0) {
            let key = shared.key(
                &self.user,
                &format!("tok:{}", crate::keys::unix_ms() / DAY_MS),
            );
            let client = shared.store.client().clone();
            // Off the request path: a lost increment under-counts, never blocks.
            tokio::spawn(async move {
                let _: Result<(), _> = client.incr_by(&key, n as i64).await;
                let _: Result<(), _> = client.expire(&key, 2 * 86_400, None).await;
            });
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(u) = self.limits.lock().get_mut(&self.user) {
            u.in_flight = u.in_flight.saturating_sub(1);
            u.tokens_today += *self.tokens.get_mut();
        }
        if let (Some(shared), true) = (&self.limits.shared, self.shared_slot) {
            let key = shared.key(&self.user, "inflight");
            let client = shared.store.client().clone();
            tokio::spawn(async move {
                let _: Result<(), _> = client.decr(&key).await;
            });
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

    #[tokio::test]
    async fn rpm_resets_at_the_next_minute() {
        let limits = Arc::new(Limits::default());
        let mut u = user();
        u.rpm = Some(2);
        drop(limits.admit(&u, "m", T0).await.unwrap());
        drop(limits.admit(&u, "m", T0 + 1).await.unwrap());
        let Err(ApiError::UserLimit(_, wait)) = limits.admit(&u, "m", T0 + 20_000).await else {
            panic!("third request in the minute must be refused");
        };
        assert_eq!(wait, Duration::from_secs(40));
        assert!(limits.admit(&u, "m", T0 + MINUTE_MS).await.is_ok());
    }

    #[tokio::test]
    async fn concurrency_and_token_budget() {
        let limits = Arc::new(Limits::default());
        let mut u = user();
        u.max_concurrent = Some(1);
        u.daily_tokens = Some(100);
        let p = limits.admit(&u, "m", T0).await.unwrap();
        assert!(limits.admit(&u, "m", T0).await.is_err(), "one at a time");
        p.add_tokens(100);
        drop(p);
        assert!(matches!(
            limits.admit(&u, "m", T0).await,
            Err(ApiError::UserLimit("daily token budget", _))
        ));
        assert_eq!(limits.usage(&u.id, T0).tokens_today, 100);
        assert!(
            limits.admit(&u, "m", T0 + DAY_MS).await.is_ok(),
            "a new day"
        );
    }
}
