//! What an upstream answer means for the key that got it: a pure function of the status
//! and Google's error body (`error.status`, `error.details[].reason`, `QuotaFailure`,
//! `RetryInfo.retryDelay`). Google's OpenAI-compatible layer wraps the same error in a
//! list (`[{"error":…}]`); both shapes are read.
//!
//! No I/O, no clock: the pool decides what a classification does to the key.

use serde_json::Value;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success,
    /// The key itself is bad (invalid, expired, suspended, denied): retire it.
    Invalid {
        reason: String,
    },
    /// Quota hit for this (key, model).
    RateLimited {
        retry_after: Option<Duration>,
        daily: bool,
        reason: String,
    },
    /// Server-side or network trouble: count towards the failure streak, try another key.
    Transient {
        reason: String,
    },
    /// The client's own mistake: relay it, charge no key, do not retry.
    ClientError,
}

impl Outcome {
    /// Whether another key might succeed where this one failed.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Self::Invalid { .. } | Self::RateLimited { .. } | Self::Transient { .. }
        )
    }
}

/// Reasons in `ErrorInfo.reason` (or phrases in the message) that mean the key is unusable.
const KEY_REASONS: &[&str] = &[
    "API_KEY_INVALID",
    "API_KEY_EXPIRED",
    "API_KEY_SERVICE_BLOCKED",
    "CONSUMER_SUSPENDED",
    "SERVICE_DISABLED",
    "ACCESS_TOKEN_EXPIRED",
];

pub fn classify(status: u16, body: &[u8]) -> Outcome {
    if (200..300).contains(&status) {
        return Outcome::Success;
    }
    let err = ErrorBody::parse(body);
    let key_reason = err
        .reasons
        .iter()
        .find(|r| KEY_REASONS.contains(&r.as_str()))
        .cloned()
        .or_else(|| key_problem_in_message(&err.message));
    match status {
        429 => {
            let daily = err.quota_ids.iter().any(|q| q.contains("PerDay"));
            let reason = err
                .quota_ids
                .first()
                .cloned()
                .unwrap_or_else(|| or_status(&err.status, "RESOURCE_EXHAUSTED"));
            Outcome::RateLimited {
                retry_after: err.retry_delay,
                daily,
                reason,
            }
        }
        401 => Outcome::Invalid {
            reason: key_reason.unwrap_or_else(|| or_status(&err.status, "UNAUTHENTICATED")),
        },
        403 => Outcome::Invalid {
            reason: key_reason.unwrap_or_else(|| or_status(&err.status, "PERMISSION_DENIED")),
        },
        400 => match key_reason {
            Some(reason) => Outcome::Invalid { reason },
            None => Outcome::ClientError,
        },
        408 | 500 | 502 | 503 | 504 => Outcome::Transient {
            reason: format!("{status} {}", or_status(&err.status, ""))
                .trim()
                .to_owned(),
        },
        _ => Outcome::ClientError,
    }
}

fn or_status(status: &str, fallback: &str) -> String {
    if status.is_empty() {
        fallback.to_owned()
    } else {
        status.to_owned()
    }
}

/// Google sometimes sends only a message: "API key not valid. Please pass a valid API key."
/// or "API key expired. Please renew the API key."
fn key_problem_in_message(message: &str) -> Option<String> {
    let m = message.to_ascii_lowercase();
    if m.contains("api key not valid") || m.contains("api key expired") {
        Some("API_KEY_INVALID".to_owned())
    } else if m.contains("leaked") {
        Some("API_KEY_LEAKED".to_owned())
    } else {
        None
    }
}

#[derive(Debug, Default)]
struct ErrorBody {
    status: String,
    message: String,
    reasons: Vec<String>,
    quota_ids: Vec<String>,
    retry_delay: Option<Duration>,
}

impl ErrorBody {
    fn parse(body: &[u8]) -> Self {
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return Self::default();
        };
        // Native: {"error":{…}}; OpenAI-compatible: [{"error":{…}}].
        let error = match &value {
            Value::Array(items) => items.first().and_then(|v| v.get("error")),
            other => other.get("error"),
        };
        let Some(error) = error else {
            return Self::default();
        };
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_owned();
        let mut out = Self {
            status: text(error.get("status")),
            message: text(error.get("message")),
            ..Self::default()
        };
        let details = error.get("details").and_then(Value::as_array);
        for d in details.into_iter().flatten() {
            if let Some(r) = d.get("reason").and_then(Value::as_str) {
                out.reasons.push(r.to_owned());
            }
            if let Some(delay) = d.get("retryDelay").and_then(Value::as_str) {
                out.retry_delay = parse_google_duration(delay);
            }
            let violations = d.get("violations").and_then(Value::as_array);
            for v in violations.into_iter().flatten() {
                if let Some(q) = v.get("quotaId").and_then(Value::as_str) {
                    out.quota_ids.push(q.to_owned());
                }
            }
        }
        out
    }
}

/// Google's protobuf `Duration` in JSON: `"30s"`, `"1.5s"`, `"0.250s"`.
fn parse_google_duration(s: &str) -> Option<Duration> {
    let secs: f64 = s.strip_suffix('s')?.parse().ok()?;
    // Absurd values (`1e300s`) do not fit a Duration: treat them as absent.
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const API_KEY_INVALID: &str = r#"{
  "error": {
    "code": 400,
    "message": "API key not valid. Please pass a valid API key.",
    "status": "INVALID_ARGUMENT",
    "details": [
      {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
        "metadata": { "service": "generativelanguage.googleapis.com" }
      },
      {
        "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
        "locale": "en-US",
        "message": "API key not valid. Please pass a valid API key."
      }
    ]
  }
}"#;

    const SUSPENDED: &str = r#"{
  "error": {
    "code": 403,
    "message": "Permission denied: Consumer 'api_key:AIzaxxxx' has been suspended.",
    "status": "PERMISSION_DENIED",
    "details": [
      {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "CONSUMER_SUSPENDED",
        "domain": "googleapis.com",
        "metadata": { "consumer": "projects/123", "service": "generativelanguage.googleapis.com" }
      }
    ]
  }
}"#;

    const PER_MINUTE: &str = r#"{
  "error": {
    "code": 429,
    "message": "You exceeded your current quota, please check your plan and billing details.",
    "status": "RESOURCE_EXHAUSTED",
    "details": [
      {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
          {
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            "quotaDimensions": { "location": "global", "model": "gemini-2.5-pro" },
            "quotaValue": "5"
          }
        ]
      },
      { "@type": "type.googleapis.com/google.rpc.Help", "links": [] },
      { "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s" }
    ]
  }
}"#;

    const PER_DAY: &str = r#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED",
      "details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[
        {"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},
        {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"12s"}]}}"#;

    #[test]
    fn api_key_invalid_is_a_400_that_retires_the_key() {
        assert_eq!(
            classify(400, API_KEY_INVALID.as_bytes()),
            Outcome::Invalid {
                reason: "API_KEY_INVALID".into()
            }
        );
    }

    #[test]
    fn consumer_suspended_is_a_403_that_retires_the_key() {
        assert_eq!(
            classify(403, SUSPENDED.as_bytes()),
            Outcome::Invalid {
                reason: "CONSUMER_SUSPENDED".into()
            }
        );
    }

    #[test]
    fn plain_401_and_403_retire_the_key() {
        assert!(matches!(classify(401, b""), Outcome::Invalid { .. }));
        assert!(matches!(classify(403, b"<html>"), Outcome::Invalid { .. }));
    }

    #[test]
    fn per_minute_quota_uses_retry_delay() {
        assert_eq!(
            classify(429, PER_MINUTE.as_bytes()),
            Outcome::RateLimited {
                retry_after: Some(Duration::from_secs(37)),
                daily: false,
                reason: "GenerateRequestsPerMinutePerProjectPerModel-FreeTier".into(),
            }
        );
    }

    #[test]
    fn per_day_quota_is_daily() {
        let Outcome::RateLimited { daily, .. } = classify(429, PER_DAY.as_bytes()) else {
            panic!("not rate limited");
        };
        assert!(daily);
    }

    #[test]
    fn bare_429_has_no_delay() {
        assert_eq!(
            classify(429, b"Too Many Requests"),
            Outcome::RateLimited {
                retry_after: None,
                daily: false,
                reason: "RESOURCE_EXHAUSTED".into()
            }
        );
    }

    #[test]
    fn client_mistakes_charge_no_key() {
        let bad_arg = br#"{"error":{"code":400,"message":"Invalid JSON payload received.","status":"INVALID_ARGUMENT"}}"#;
        assert_eq!(classify(400, bad_arg), Outcome::ClientError);
        let not_found =
            br#"{"error":{"code":404,"message":"models/nope is not found","status":"NOT_FOUND"}}"#;
        assert_eq!(classify(404, not_found), Outcome::ClientError);
        assert_eq!(classify(413, b""), Outcome::ClientError);
    }

    #[test]
    fn server_errors_are_transient() {
        let unavailable =
            br#"{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}"#;
        assert_eq!(
            classify(503, unavailable),
            Outcome::Transient {
                reason: "503 UNAVAILABLE".into()
            }
        );
        assert!(classify(500, b"").retryable());
    }

    #[test]
    fn openai_compat_list_wrapper_is_read() {
        let wrapped = format!("[{API_KEY_INVALID}]");
        assert!(matches!(
            classify(400, wrapped.as_bytes()),
            Outcome::Invalid { .. }
        ));
    }

    #[test]
    fn google_durations() {
        assert_eq!(
            parse_google_duration("1.5s"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_google_duration("x"), None);
        assert_eq!(parse_google_duration("-1s"), None);
        assert_eq!(parse_google_duration("1e300s"), None);
    }
}
