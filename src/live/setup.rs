//! What the first messages of a Live session say: the model the client's `setup` names,
//! whether Google's first answer is `setupComplete`, and what a close Google sends
//! during setup means for the key. Pure: bytes and close frames in, answers out.
//!
//! Google ends a session it refuses with a close frame, not an HTTP error: an invalid
//! key is a 1007 "API key not valid. Please pass a valid API key.", a used-up quota a
//! 1011 "You exceeded your current quota, please check your plan and billing
//! details. …", a model the method does not serve a 1008 "models/x is not found for API
//! version v1beta, or is not supported for bidiGenerateContent." The reason is read
//! with the same classifier as an HTTP error body (`keys::classify`), the close code
//! standing in for the status.

use crate::keys::classify::{Outcome, classify};

/// The model a `setup` message names, without its `models/` prefix (`""` when it names
/// none: a token's locked setup may carry it); `None` when the message is no `setup`.
pub fn setup_model(message: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(message).ok()?;
    let setup = v.get("setup")?.as_object()?;
    let model = match setup.get("model") {
        None => "",
        Some(m) => m.as_str()?,
    };
    Some(model.strip_prefix("models/").unwrap_or(model).to_owned())
}

/// A model id as it may be logged and used to select keys.
pub fn valid_model(model: &str) -> bool {
    model.len() <= 128
        && model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// Whether Google's message is its answer to a good `setup`.
pub fn is_setup_complete(message: &[u8]) -> bool {
    memchr::memmem::find(message, b"\"setupComplete\"").is_some()
}

/// What a close Google sent before `setupComplete` means for the key.
pub fn close_outcome(code: u16, reason: &str) -> Outcome {
    let lower = reason.to_ascii_lowercase();
    let quota = [
        "quota",
        "resource_exhausted",
        "rate limit",
        "resource has been exhausted",
    ];
    let status = if quota.iter().any(|q| lower.contains(q)) {
        429
    } else {
        match code {
            1007 | 1008 => 400,
            // Internal error, try again later, bad gateway: the server's trouble.
            _ => 503,
        }
    };
    let body = serde_json::json!({"error": {"code": status, "message": reason}});
    match classify(status, body.to_string().as_bytes()) {
        Outcome::Transient { .. } => Outcome::Transient {
            reason: format!("close {code}: {}", short(reason)),
        },
        other => other,
    }
}

/// At most 120 bytes of a reason, cut at a character boundary.
pub fn short(reason: &str) -> &str {
    let mut end = reason.len().min(120);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_of_a_setup() {
        let m = |s: &str| setup_model(s.as_bytes());
        let setup = r#"{"setup":{"model":"models/gemini-live-2.5-flash","generationConfig":{}}}"#;
        assert_eq!(m(setup).as_deref(), Some("gemini-live-2.5-flash"));
        assert_eq!(m(r#"{"setup":{"model":"x"}}"#).as_deref(), Some("x"));
        assert_eq!(m(r#"{"setup":{}}"#).as_deref(), Some(""));
        assert_eq!(m(r#"{"clientContent":{}}"#), None);
        assert_eq!(m(r#"{"setup":{"model":3}}"#), None);
        assert_eq!(m("not json"), None);
        assert!(valid_model("gemini-2.5-flash-native-audio-preview-09-2025"));
        assert!(!valid_model("a/b"));
        assert!(!valid_model(&"x".repeat(200)));
    }

    #[test]
    fn setup_complete_is_recognised() {
        assert!(is_setup_complete(br#"{"setupComplete":{}}"#));
        assert!(is_setup_complete(
            br#"{ "setupComplete": {"sessionId":"s"} }"#
        ));
        assert!(!is_setup_complete(br#"{"serverContent":{}}"#));
    }

    #[test]
    fn what_google_closes_a_setup_with() {
        let invalid = close_outcome(1007, "API key not valid. Please pass a valid API key.");
        assert!(matches!(invalid, Outcome::Invalid { .. }), "{invalid:?}");
        let leaked = close_outcome(
            1008,
            "Your API key was reported as leaked. Please use another API key.",
        );
        assert!(matches!(leaked, Outcome::Invalid { .. }), "{leaked:?}");
        let quota = close_outcome(
            1011,
            "You exceeded your current quota, please check your plan and billing details.",
        );
        assert!(matches!(quota, Outcome::RateLimited { .. }), "{quota:?}");
        let model = close_outcome(
            1008,
            "models/x is not found for API version v1beta, or is not supported for bidiGenerateContent.",
        );
        assert_eq!(model, Outcome::ClientError);
        let internal = close_outcome(1011, "Internal error encountered.");
        assert!(
            matches!(internal, Outcome::Transient { reason } if reason.starts_with("close 1011"))
        );
    }
}
