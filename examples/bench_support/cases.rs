//! The requests the wrk scenarios send: for each, the request a client sends to the daemon
//! and the one the daemon forwards upstream (same path and body; the pool key instead of the
//! user key), which is what "direct" sends to the fake upstream.

use crate::load::Shot;
use crate::procs::{USER_KEY, pool_key};

pub const GENERATE_BODY: &str = r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#;
const CHAT_BODY: &str =
    r#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"hi"}]}"#;
const MODEL: &str = "/v1beta/models/gemini-2.5-flash";

/// One wrk scenario: the same request direct and through the daemon.
pub struct WrkCase {
    pub id: &'static str,
    pub title: &'static str,
    pub direct: Shot,
    pub proxied: Shot,
    pub connections: usize,
}

pub fn native(id: &'static str, title: &'static str, call: &str, connections: usize) -> WrkCase {
    WrkCase {
        id,
        title,
        direct: Shot {
            path: format!("{MODEL}:{call}"),
            body: GENERATE_BODY,
            header: format!("x-goog-api-key: {}", pool_key(0)),
        },
        proxied: Shot {
            path: format!("{MODEL}:{call}"),
            body: GENERATE_BODY,
            header: format!("x-goog-api-key: {USER_KEY}"),
        },
        connections,
    }
}

pub fn chat(connections: usize) -> WrkCase {
    WrkCase {
        id: "chat64",
        title: "OpenAI chat completions, 64 connections",
        direct: Shot {
            path: "/v1beta/openai/chat/completions".into(),
            body: CHAT_BODY,
            header: format!("authorization: Bearer {}", pool_key(0)),
        },
        proxied: Shot {
            path: "/v1/chat/completions".into(),
            body: CHAT_BODY,
            header: format!("authorization: Bearer {USER_KEY}"),
        },
        connections,
    }
}
