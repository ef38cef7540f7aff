//! The quota ledger shared by every instance on one Redis: for a (key, model) with a
//! known limit, `P:ledger:{ID}:MODEL:m` (a sorted set of the requests of the last
//! minute, scored by their time), `…:t` (the answers' prompt tokens of the last minute,
//! members `"{tokens}:{unique}"`) and `…:d:{day end}` (the requests of the Pacific day),
//! and `P:ledger:{ID}:models` (a sorted set of the models counted, for a reset). One Lua call checks the
//! limits and counts the request, atomically. The key id in braces is a Redis Cluster
//! hash tag: every key of one key's ledger is in one slot, as a script's keys must be.

use super::redis::err;
use super::{QuotaLimits, RedisStore, StoreError};
use fred::prelude::*;

/// Checks the three windows against the limits (0: none) and counts the request when
/// none is reached. Answers {counted (0/1), out until (ms, 0: not out), requests this
/// minute, requests today, prompt tokens this minute}.
const TAKE: &str = r#"
local now, rpm, rpd, tpm = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local day_end, member = tonumber(ARGV[5]), ARGV[6]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
local n = redis.call('ZCARD', KEYS[1])
local d = tonumber(redis.call('GET', KEYS[3]) or '0')
local toks = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
local sum = 0
for i = 1, #toks, 2 do sum = sum + tonumber(string.match(toks[i], '^(%d+)')) end
local out = 0
if rpd > 0 and d >= rpd then out = day_end end
if rpm > 0 and n >= rpm then
  local r = redis.call('ZRANGE', KEYS[1], n - rpm, n - rpm, 'WITHSCORES')
  out = math.max(out, tonumber(r[2]) + 60000)
end
if tpm > 0 and sum >= tpm then
  local left = sum
  for i = 1, #toks, 2 do
    left = left - tonumber(string.match(toks[i], '^(%d+)'))
    if left < tpm then out = math.max(out, tonumber(toks[i + 1]) + 60000) break end
  end
end
if out > 0 then return {0, out, n, d, sum} end
redis.call('ZADD', KEYS[1], now, member)
redis.call('PEXPIRE', KEYS[1], 61000)
redis.call('INCR', KEYS[3])
redis.call('PEXPIREAT', KEYS[3], day_end + 60000)
redis.call('ZADD', KEYS[4], 0, ARGV[7])
redis.call('PEXPIREAT', KEYS[4], day_end + 60000)
return {1, 0, n + 1, d + 1, sum}
"#;

/// Adds an answer's prompt tokens, and notes the model for a reset.
const TOKENS: &str = r#"
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], 61000)
redis.call('ZADD', KEYS[2], 0, ARGV[3])
if redis.call('PTTL', KEYS[2]) < 61000 then redis.call('PEXPIRE', KEYS[2], 61000) end
return 1
"#;

/// What the shared ledger said of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// The request was counted: it may go.
    pub counted: bool,
    /// When it was not: until when the (key, model) is out.
    pub out_until_ms: i64,
    /// Requests this minute and today, prompt tokens this minute, on every instance.
    pub minute: u64,
    pub today: u64,
    pub tokens_minute: u64,
}

impl RedisStore {
    fn ledger_key(&self, key_id: &str, model: &str, window: &str) -> String {
        self.k(&format!("ledger:{{{key_id}}}:{model}:{window}"))
    }

    fn ledger_models(&self, key_id: &str) -> String {
        self.k(&format!("ledger:{{{key_id}}}:models"))
    }

    /// Counts a request of (key, model) unless a limit is reached (one round trip).
    /// `unique` tells this request apart from every other instance's.
    pub async fn ledger_take(
        &self,
        key_id: &str,
        model: &str,
        limits: &QuotaLimits,
        now_ms: i64,
        day_end_ms: i64,
        unique: &str,
    ) -> Result<Taken, StoreError> {
        let keys = vec![
            self.ledger_key(key_id, model, "m"),
            self.ledger_key(key_id, model, "t"),
            self.ledger_key(key_id, model, &format!("d:{day_end_ms}")),
            self.ledger_models(key_id),
        ];
        let n = |l: Option<u32>| l.unwrap_or(0).to_string();
        let args = vec![
            now_ms.to_string(),
            n(limits.per_minute),
            n(limits.per_day),
            n(limits.tokens_per_minute),
            day_end_ms.to_string(),
            unique.to_owned(),
            model.to_owned(),
        ];
        let r: Vec<i64> = self.client().eval(TAKE, keys, args).await.map_err(err)?;
        let at = |i: usize| r.get(i).copied().unwrap_or(0);
        Ok(Taken {
            counted: at(0) == 1,
            out_until_ms: at(1),
            minute: at(2).max(0) as u64,
            today: at(3).max(0) as u64,
            tokens_minute: at(4).max(0) as u64,
        })
    }

    /// Adds the prompt tokens of an answer of (key, model) that ended at `now_ms`.
    pub async fn ledger_tokens(
        &self,
        key_id: &str,
        model: &str,
        tokens: u64,
        now_ms: i64,
        unique: &str,
    ) -> Result<(), StoreError> {
        let keys = vec![
            self.ledger_key(key_id, model, "t"),
            self.ledger_models(key_id),
        ];
        let args = vec![
            now_ms.to_string(),
            format!("{tokens}:{unique}"),
            model.to_owned(),
        ];
        let _: i64 = self.client().eval(TOKENS, keys, args).await.map_err(err)?;
        Ok(())
    }

    /// Forgets every count of a key (the admin reset it), and tells the other instances
    /// to forget theirs. `day_end_ms` names the current day's counter; earlier days'
    /// are never read again.
    pub async fn ledger_reset(&self, key_id: &str, day_end_ms: i64) -> Result<(), StoreError> {
        let set = self.ledger_models(key_id);
        let models: Vec<String> = self
            .client()
            .zrange(&set, 0, -1, None, false, None, false)
            .await
            .map_err(err)?;
        let mut keys = vec![set];
        for m in &models {
            keys.push(self.ledger_key(key_id, m, "m"));
            keys.push(self.ledger_key(key_id, m, "t"));
            keys.push(self.ledger_key(key_id, m, &format!("d:{day_end_ms}")));
        }
        let _: i64 = self.client().del(keys).await.map_err(err)?;
        self.announce_reset(key_id).await
    }
}
