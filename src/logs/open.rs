//! The Live sessions open right now, for the admin API (`GET /api/live`) and page: who,
//! which model and key, since when, the tokens so far. A session is listed once Google
//! accepted it and unlisted when it ends (its record then takes over in the request
//! log). One short lock at each; the tokens are an atomic the session adds to per turn.

use super::Trace;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct OpenSessions {
    by_id: Mutex<BTreeMap<String, Arc<OpenSession>>>,
}

/// One open session as the admin API shows it.
#[derive(Debug, Serialize)]
pub struct OpenSession {
    pub request_id: String,
    /// When it was opened, Unix ms.
    pub time: i64,
    pub user: Option<String>,
    pub route: &'static str,
    pub model: String,
    pub key: String,
    pub tokens: AtomicU64,
}

/// A listed session; unlisted when dropped.
pub struct Listed {
    open: Arc<OpenSessions>,
    pub session: Arc<OpenSession>,
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.open.lock().remove(&self.session.request_id);
    }
}

impl OpenSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<OpenSession>>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists the session `trace` is of, on the key `key` (its brief).
    pub fn list(self: &Arc<Self>, trace: &Trace, key: &str) -> Listed {
        let session = Arc::new(OpenSession {
            request_id: trace.request_id.clone(),
            time: trace.time,
            user: trace.user.clone(),
            route: trace.route.unwrap_or(""),
            model: trace.model.clone(),
            key: key.to_owned(),
            tokens: AtomicU64::new(0),
        });
        self.lock()
            .insert(session.request_id.clone(), session.clone());
        Listed {
            open: self.clone(),
            session,
        }
    }

    /// The open sessions, oldest first, with how long each has been open at `now_ms`.
    pub fn view(&self, now_ms: i64) -> serde_json::Value {
        let list: Vec<serde_json::Value> = self
            .lock()
            .values()
            .map(|s| {
                serde_json::json!({
                    "request_id": s.request_id,
                    "time": s.time,
                    "user": s.user,
                    "route": s.route,
                    "model": s.model,
                    "key": s.key,
                    "tokens": s.tokens.load(Ordering::Relaxed),
                    "open_ms": (now_ms - s.time).max(0),
                })
            })
            .collect();
        serde_json::json!({ "sessions": list })
    }
}

impl OpenSession {
    pub fn set_tokens(&self, total: u64) {
        self.tokens.store(total, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_listed_while_they_are_open() {
        let open = Arc::new(OpenSessions::default());
        let mut trace = Trace::new("0190abcdef120123456789ab".into(), 1_000);
        trace.route = Some("live.bidiGenerateContent");
        trace.model = "m".into();
        let listed = open.list(&trace, "AIza…abcd");
        listed.session.set_tokens(15);
        let v = open.view(3_500);
        assert_eq!(v["sessions"][0]["tokens"], 15);
        assert_eq!(v["sessions"][0]["open_ms"], 2_500);
        assert_eq!(v["sessions"][0]["key"], "AIza…abcd");
        drop(listed);
        assert_eq!(open.view(4_000)["sessions"], serde_json::json!([]));
    }
}
