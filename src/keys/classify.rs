//! What an upstream answer means for the key that got it: a pure function of the status
//! and Google's error body ([`ErrorBody`]). No I/O, no clock: the pool decides what a
//! classification does to the key.
//!
//! Only an answer about the key retires it: a 401, or an `ErrorInfo.reason` (or message)
//! saying the key is invalid, expired, suspended, blocked, leaked or its project lacks the
//! API. A 403 about what the request asks for — another project's file, cache or tuned
//! model, a model that needs billing, a location Google refuses — is the client's
//! business: relayed as Google sent it, charging no key. A 403 that says neither counts
//! as a transient failure of that (key, model), so a client cannot empty the pool by
//! sending requests Google refuses.

use super::google_error::ErrorBody;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success,
    /// The key itself is bad (invalid, expired, suspended, blocked): retire it.
    Invalid {
        reason: String,
    },
    /// Quota hit for this (key, model).
    RateLimited {
        retry_after: Option<Duration>,
        exhausted: Exhausted,
        reason: String,
    },
    /// Server-side or network trouble, or a refusal nobody can place: count towards the
    /// failure streak, try another key.
    Transient {
        reason: String,
    },
    /// The client's own mistake, or a refusal about what it asked for: relay it, charge
    /// no key, do not retry.
    ClientError,
}

/// What a 429 says ran out (`QuotaFailure.violations[]`), which decides how long the
/// (key, model) is out. With several violations in one body the longest wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// A per-minute limit, or one Google does not name: back after `retryDelay`.
    Minute,
    /// A per-day limit: back at the next midnight Pacific time, whatever `retryDelay`
    /// says (Google sends `0s` on some daily 429s).
    Day,
    /// A limit of zero (`quotaValue: "0"`): the key's tier does not include the model.
    Tier,
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

/// Reasons in `ErrorInfo.reason` that mean the key cannot serve through this gateway.
/// The `…_BLOCKED` restrictions (referrer, IP, app) are the key's own settings: they
/// refuse every request the gateway sends with it.
const KEY_REASONS: &[&str] = &[
    "API_KEY_INVALID",
    "API_KEY_EXPIRED",
    "API_KEY_SERVICE_BLOCKED",
    "API_KEY_HTTP_REFERRER_BLOCKED",
    "API_KEY_IP_ADDRESS_BLOCKED",
    "API_KEY_ANDROID_APP_BLOCKED",
    "API_KEY_IOS_APP_BLOCKED",
    "CONSUMER_SUSPENDED",
    "SERVICE_DISABLED",
    "ACCESS_TOKEN_EXPIRED",
];

/// Reasons that are about the request, not the key (the project needs billing for it).
const REQUEST_REASONS: &[&str] = &["BILLING_DISABLED"];

/// Phrases of messages about what the request names or where it comes from, for bodies
/// that carry no `ErrorInfo` (Google sends file and cache refusals with a message only).
const REQUEST_PHRASES: &[&str] = &[
    "permission to access", // "You do not have permission to access the File x …"
    "or permission denied", // "CachedContent not found (or permission denied)"
    "or it may not exist",  // tuned models, files
    "requires billing",     // "This API method requires billing to be enabled."
    "enable billing",       // "… not available in your country. Please enable billing"
    "location is not supported", // "User location is not supported for the API use."
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
        429 => rate_limited(&err),
        401 => Outcome::Invalid {
            reason: key_reason.unwrap_or_else(|| or_status(&err.status, "UNAUTHENTICATED")),
        },
        403 => match key_reason {
            Some(reason) => Outcome::Invalid { reason },
            None if about_the_request(&err) => Outcome::ClientError,
            None => Outcome::Transient {
                reason: format!("403 {}", or_status(&err.status, "PERMISSION_DENIED")),
            },
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

fn rate_limited(err: &ErrorBody) -> Outcome {
    let v = &err.violations;
    let zero = v.iter().find(|v| v.quota_value == Some(0));
    let day = v.iter().find(|v| v.quota_id.contains("PerDay"));
    let (exhausted, named) = if zero.is_some()
        || (v.iter().all(|v| v.quota_value.is_none()) && zero_in_message(&err.message))
    {
        (Exhausted::Tier, zero)
    } else if day.is_some() {
        (Exhausted::Day, day)
    } else {
        (Exhausted::Minute, None)
    };
    let reason = named
        .or(v.first())
        .map(|v| v.quota_id.clone())
        .unwrap_or_else(|| or_status(&err.status, "RESOURCE_EXHAUSTED"));
    Outcome::RateLimited {
        retry_after: err.retry_delay,
        exhausted,
        reason,
    }
}

/// Bodies without `quotaValue` still say a zero limit in the message: "* Quota exceeded
/// for metric: …, limit: 0, model: gemini-2.5-pro", or "… doesn't have a free quota tier".
fn zero_in_message(message: &str) -> bool {
    message.contains("limit: 0,") || message.contains("doesn't have a free quota tier")
}

/// A refusal about what the request names (a resource, a billed model, a location).
fn about_the_request(err: &ErrorBody) -> bool {
    if err
        .reasons
        .iter()
        .any(|r| REQUEST_REASONS.contains(&r.as_str()))
    {
        return true;
    }
    let m = err.message.to_ascii_lowercase();
    REQUEST_PHRASES.iter().any(|p| m.contains(p))
}

fn or_status(status: &str, fallback: &str) -> String {
    if status.is_empty() {
        fallback.to_owned()
    } else {
        status.to_owned()
    }
}

/// Google sometimes sends only a message: "API key not valid. Please pass a valid API key.",
/// "API key expired. Please renew the API key.", "Your API key was reported as leaked.",
/// "Permission denied: Consumer 'api_key:…' has been suspended."
fn key_problem_in_message(message: &str) -> Option<String> {
    let m = message.to_ascii_lowercase();
    if m.contains("api key not valid") || m.contains("api key expired") {
        Some("API_KEY_INVALID".to_owned())
    } else if m.contains("leaked") {
        Some("API_KEY_LEAKED".to_owned())
    } else if m.contains("consumer") && m.contains("has been suspended") {
        Some("CONSUMER_SUSPENDED".to_owned())
    } else {
        None
    }
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
    fn a_plain_401_retires_the_key_a_plain_403_is_transient() {
        assert!(matches!(classify(401, b""), Outcome::Invalid { .. }));
        let caller = br#"{"error":{"code":403,"message":"The caller does not have permission","status":"PERMISSION_DENIED"}}"#;
        for body in [&b"<html>"[..], caller] {
            assert_eq!(
                classify(403, body),
                Outcome::Transient {
                    reason: "403 PERMISSION_DENIED".into()
                },
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn key_reasons_in_a_403_retire_the_key() {
        let blocked = r#"{"error":{"code":403,"message":"Requests to this API generativelanguage.googleapis.com method google.ai.generativelanguage.v1beta.GenerativeService.StreamGenerateContent are blocked.","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_SERVICE_BLOCKED","domain":"googleapis.com","metadata":{"consumer":"projects/177838813423","service":"generativelanguage.googleapis.com"}}]}}"#;
        let disabled = r#"{"error":{"code":403,"message":"Generative Language API has not been used in project 9 before or it is disabled.","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"SERVICE_DISABLED","metadata":{"consumer":"projects/9"}}]}}"#;
        let leaked = r#"{"error":{"code":403,"message":"Your API key was reported as leaked. Please use another API key.","status":"PERMISSION_DENIED"}}"#;
        let suspended = r#"{"error":{"code":403,"message":"Permission denied: Consumer 'api_key:AIzaxxxx' has been suspended.","status":"PERMISSION_DENIED"}}"#;
        let cases = [
            (blocked, "API_KEY_SERVICE_BLOCKED"),
            (disabled, "SERVICE_DISABLED"),
            (leaked, "API_KEY_LEAKED"),
            (suspended, "CONSUMER_SUSPENDED"),
        ];
        for (body, reason) in cases {
            assert_eq!(
                classify(403, body.as_bytes()),
                Outcome::Invalid {
                    reason: reason.into()
                },
                "{body}"
            );
        }
    }

    #[test]
    fn a_403_about_the_request_is_relayed_and_charges_nothing() {
        let file = r#"{"error":{"code":403,"message":"You do not have permission to access the File abc123 or it may not exist.","status":"PERMISSION_DENIED"}}"#;
        let cache = r#"{"error":{"code":403,"message":"CachedContent not found (or permission denied)","status":"PERMISSION_DENIED"}}"#;
        let tuned = r#"{"error":{"code":403,"message":"You do not have permission to access tuned model tunedModels/t-1 or it may not exist.","status":"PERMISSION_DENIED"}}"#;
        let billing = r#"{"error":{"code":403,"message":"This API method requires billing to be enabled. Please enable billing on project #42 then retry.","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"BILLING_DISABLED","domain":"googleapis.com","metadata":{"consumer":"projects/42"}}]}}"#;
        let location = r#"{"error":{"code":403,"message":"User location is not supported for the API use.","status":"PERMISSION_DENIED"}}"#;
        for body in [file, cache, tuned, billing, location] {
            assert_eq!(
                classify(403, body.as_bytes()),
                Outcome::ClientError,
                "{body}"
            );
            let listed = format!("[{body}]");
            assert_eq!(
                classify(403, listed.as_bytes()),
                Outcome::ClientError,
                "{listed}"
            );
        }
    }

    #[test]
    fn per_minute_quota_uses_retry_delay() {
        assert_eq!(
            classify(429, PER_MINUTE.as_bytes()),
            Outcome::RateLimited {
                retry_after: Some(Duration::from_secs(37)),
                exhausted: Exhausted::Minute,
                reason: "GenerateRequestsPerMinutePerProjectPerModel-FreeTier".into(),
            }
        );
    }

    #[test]
    fn per_day_quota_is_daily() {
        let Outcome::RateLimited { exhausted, .. } = classify(429, PER_DAY.as_bytes()) else {
            panic!("not rate limited");
        };
        assert_eq!(exhausted, Exhausted::Day);
    }

    /// Per-minute request and token limits and the daily one in one body (as gemini-cli
    /// #8437 shows them), `retryDelay` "0s": the day decides.
    #[test]
    fn several_violations_the_daily_one_decides() {
        let body = r#"{"error":{"code":429,"message":"You exceeded your current quota","status":"RESOURCE_EXHAUSTED","details":[
          {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[
            {"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_input_token_count","quotaId":"GenerateContentInputTokensPerModelPerMinute-FreeTier","quotaDimensions":{"location":"global","model":"gemini-2.5-flash"},"quotaValue":"250000"},
            {"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier","quotaDimensions":{"location":"global","model":"gemini-2.5-flash"},"quotaValue":"10"},
            {"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier","quotaDimensions":{"location":"global","model":"gemini-2.5-flash"},"quotaValue":"250"}]},
          {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"0s"}]}}"#;
        assert_eq!(
            classify(429, body.as_bytes()),
            Outcome::RateLimited {
                retry_after: Some(Duration::ZERO),
                exhausted: Exhausted::Day,
                reason: "GenerateRequestsPerDayPerProjectPerModel-FreeTier".into(),
            }
        );
        let minute_only = body.replace("PerDayPerProject", "PerMinutePerProject");
        let Outcome::RateLimited { exhausted, .. } = classify(429, minute_only.as_bytes()) else {
            panic!("not rate limited");
        };
        assert_eq!(exhausted, Exhausted::Minute);
    }

    /// A zero limit: the tier has no such model; said by `quotaValue` or, without one,
    /// by the message (continue #10062, RA.Aid #182).
    #[test]
    fn a_zero_limit_means_the_tier_lacks_the_model() {
        let valued = r#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED","details":[
          {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[
            {"quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier","quotaValue":"0"},
            {"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier","quotaValue":"0"}]},
          {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"25s"}]}}"#;
        let Outcome::RateLimited {
            exhausted, reason, ..
        } = classify(429, valued.as_bytes())
        else {
            panic!("not rate limited");
        };
        assert_eq!(exhausted, Exhausted::Tier);
        assert_eq!(
            reason,
            "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
        );
        let said = r#"{"error":{"code":429,"message":"You exceeded your current quota.\n* Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 0, model: gemini-2.5-pro\nPlease retry in 20.04466179s.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"20s"}]}}"#;
        let no_tier = r#"{"error":{"code":429,"message":"Gemini 2.5 Pro Preview doesn't have a free quota tier.","status":"RESOURCE_EXHAUSTED"}}"#;
        for body in [said, no_tier] {
            let Outcome::RateLimited { exhausted, .. } = classify(429, body.as_bytes()) else {
                panic!("not rate limited");
            };
            assert_eq!(exhausted, Exhausted::Tier, "{body}");
        }
        // A limit of ten in the message is not a limit of zero.
        let ten = said.replace("limit: 0,", "limit: 10,");
        let Outcome::RateLimited { exhausted, .. } = classify(429, ten.as_bytes()) else {
            panic!("not rate limited");
        };
        assert_eq!(exhausted, Exhausted::Minute);
    }

    #[test]
    fn bare_429_has_no_delay() {
        assert_eq!(
            classify(429, b"Too Many Requests"),
            Outcome::RateLimited {
                retry_after: None,
                exhausted: Exhausted::Minute,
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
}
