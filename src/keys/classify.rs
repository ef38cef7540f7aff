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

use super::google_error::{ErrorBody, Violation};
use crate::store::QuotaLimits;
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
        /// The key's Cloud project, when Google names it (`ErrorInfo.metadata.consumer`).
        project: Option<String>,
        /// The body names quotas (`QuotaFailure`): Google counts those per project, so
        /// every key of the project is out with this one. A bare 429 is the key's alone.
        shared: bool,
        /// Request limits the body revealed (`quotaValue` above 0), for the ledger.
        limits: QuotaLimits,
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
        project: err.project.clone(),
        shared: !v.is_empty(),
        limits: revealed_limits(v),
    }
}

/// The limits that violations name with their value: requests per minute and per day
/// (`GenerateRequestsPer…`) and input tokens per minute
/// (`GenerateContentInputTokensPerModelPerMinute…`); the tightest of each when several.
fn revealed_limits(violations: &[Violation]) -> QuotaLimits {
    let limit = |what: &str, window: &str| {
        violations
            .iter()
            .filter(|v| v.quota_id.contains(what) && v.quota_id.contains(window))
            .filter_map(|v| v.quota_value.filter(|&n| n > 0))
            .min()
    };
    let small = |n: Option<u64>| n.map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    QuotaLimits {
        per_minute: small(limit("Requests", "PerMinute")),
        per_day: small(limit("Requests", "PerDay")),
        tokens_per_minute: small(limit("InputTokens", "PerMinute")),
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
mod tests;
