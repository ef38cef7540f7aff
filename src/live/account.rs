//! What a Live session counts for: the feed's event when it opens, the tokens of each
//! turn (Google's `usageMetadata`, one per turn, summed), the user's daily budget
//! checked as they come, and the one request-log record written when it closes.

use crate::app::AppState;
use crate::events::Event;
use crate::logs::Trace;
use crate::record::LogOutcome;
use crate::store::UserRecord;
use crate::usage::Tokens;
use tokio::time::Instant;

/// How a session ended, and with which close code (what the client was sent, or sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client closed.
    Client(u16),
    /// Google closed.
    Upstream(u16),
    /// The client's connection broke without a close.
    ClientGone,
    /// Google's connection broke without a close.
    UpstreamGone,
    /// Nothing either way for `stream_idle_timeout`.
    Idle,
    /// The user's daily token budget ran out.
    Budget,
    /// The daemon is stopping (after the grace period).
    Shutdown,
}

impl End {
    /// The close code of the session's end: the one relayed or sent, 1006 when the
    /// client's connection broke.
    pub fn close_code(self) -> u16 {
        match self {
            Self::Client(c) | Self::Upstream(c) => c,
            Self::ClientGone => 1006,
            Self::UpstreamGone => 1011,
            Self::Idle | Self::Shutdown => 1001,
            Self::Budget => 1008,
        }
    }

    pub fn outcome(self) -> LogOutcome {
        match self {
            Self::Client(_) | Self::Idle => LogOutcome::Ok,
            Self::Upstream(1000 | 1001 | 1005) => LogOutcome::Ok,
            Self::Upstream(1007 | 1008) | Self::Budget => LogOutcome::ClientError,
            Self::Upstream(_) => LogOutcome::UpstreamError,
            Self::ClientGone | Self::Shutdown => LogOutcome::Cancelled,
            Self::UpstreamGone => LogOutcome::Truncated,
        }
    }
}

/// What a session has used so far.
#[derive(Debug, Default)]
pub struct Tally {
    pub tokens: Tokens,
    /// When Google accepted the setup.
    pub accepted: Option<Instant>,
    /// Message bytes relayed to Google, and to the client.
    pub bytes_up: u64,
    pub bytes_down: u64,
}

impl Tally {
    /// A session Google has just accepted, its setup message `setup_bytes` long.
    pub fn accepted(setup_bytes: u64) -> Self {
        Self {
            accepted: Some(Instant::now()),
            bytes_up: setup_bytes,
            ..Self::default()
        }
    }

    /// Adds the usage a message of Google's reports, if it reports one.
    pub fn count(&mut self, message: &[u8]) -> Option<Tokens> {
        memchr::memmem::find(message, b"\"usageMetadata\"")?;
        let t = crate::usage::parse(message)?;
        let sum = &mut self.tokens;
        sum.prompt += t.prompt;
        sum.candidates += t.candidates;
        sum.thoughts += t.thoughts;
        sum.cached += t.cached;
        sum.total += t.total;
        Some(t)
    }
}

/// Whether the user's tokens today and the session's so far reach their daily budget.
/// (The session's own tokens join the day's count when it ends.)
pub fn over_budget(state: &AppState, user: &UserRecord, session: &Tally) -> bool {
    let Some(budget) = user.daily_tokens else {
        return false;
    };
    let today = state
        .limits
        .usage(&user.id, crate::keys::unix_ms())
        .tokens_today;
    today + session.tokens.total >= budget
}

/// Tells the live feed a session has opened (on `key`).
pub fn opened(state: &AppState, trace: &Trace, key: &str) {
    if !state.hub.has_subscribers() {
        return;
    }
    let json = serde_json::json!({
        "request_id": trace.request_id,
        "time": trace.time,
        "user": trace.user,
        "route": trace.route,
        "model": trace.model,
        "key": key,
        "state": "open",
    });
    state.hub.publish(Event::Session(json.to_string().into()));
}

/// Writes the session's record.
pub fn closed(state: &AppState, mut trace: Trace, end: End, tally: &Tally) {
    trace.close_code = Some(end.close_code());
    trace.bytes_up = tally.bytes_up;
    tracing::info!(
        target: "access",
        request_id = trace.request_id,
        route = trace.route.unwrap_or(""),
        model = trace.model,
        user = trace.user.as_deref().unwrap_or("-"),
        key = trace.attempts.last().map_or("-", |a| a.key.brief.as_str()),
        close_code = end.close_code(),
        duration_ms = trace.started.elapsed().as_secs_f64() * 1000.0,
        tokens = tally.tokens.total,
        "live session closed"
    );
    let finished = trace.finish_session(
        end.outcome(),
        tally.accepted,
        tally.tokens,
        tally.bytes_down,
    );
    state.logs.record(finished);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_are_summed() {
        let mut tally = Tally::default();
        let turn = |p: u64, r: u64| {
            format!(
                r#"{{"serverContent":{{"turnComplete":true}},"usageMetadata":{{"promptTokenCount":{p},"responseTokenCount":{r},"totalTokenCount":{}}}}}"#,
                p + r
            )
        };
        assert!(tally.count(turn(143, 19).as_bytes()).is_some());
        assert!(
            tally
                .count(br#"{"serverContent":{"modelTurn":{"parts":[{"text":"usage"}]}}}"#)
                .is_none()
        );
        assert!(tally.count(turn(181, 24).as_bytes()).is_some());
        assert_eq!(tally.tokens.prompt, 324);
        assert_eq!(tally.tokens.candidates, 43);
        assert_eq!(tally.tokens.total, 367);
    }

    #[test]
    fn ends_and_their_outcomes() {
        assert_eq!(End::Upstream(1000).outcome(), LogOutcome::Ok);
        assert_eq!(End::Upstream(1011).outcome(), LogOutcome::UpstreamError);
        assert_eq!(End::ClientGone.outcome(), LogOutcome::Cancelled);
        assert_eq!(End::ClientGone.close_code(), 1006);
        assert_eq!(End::Budget.close_code(), 1008);
        assert_eq!(End::Shutdown.close_code(), 1001);
    }
}
