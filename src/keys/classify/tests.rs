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
            project: None,
            shared: true,
            limits: QuotaLimits {
                per_minute: Some(5),
                ..QuotaLimits::default()
            },
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
            project: None,
            shared: true,
            limits: QuotaLimits {
                per_minute: Some(10),
                per_day: Some(250),
                tokens_per_minute: Some(250_000),
            },
        }
    );
    let minute_only = body.replace("PerDayPerProject", "PerMinutePerProject");
    let Outcome::RateLimited { exhausted, .. } = classify(429, minute_only.as_bytes()) else {
        panic!("not rate limited");
    };
    assert_eq!(exhausted, Exhausted::Minute);
}

/// The project comes from the 429's `ErrorInfo` (Google's usual quota-error shape,
/// AIP-193; assumed for the Gemini API where no captured body had it).
#[test]
fn a_quota_429_names_the_project_that_shares_it() {
    let body = r#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED","details":[
      {"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"RATE_LIMIT_EXCEEDED","domain":"googleapis.com",
       "metadata":{"consumer":"projects/861042","service":"generativelanguage.googleapis.com"}},
      {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[
        {"quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier","quotaValue":"5"}]},
      {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"30s"}]}}"#;
    let Outcome::RateLimited {
        project, shared, ..
    } = classify(429, body.as_bytes())
    else {
        panic!("not rate limited");
    };
    assert_eq!(project.as_deref(), Some("861042"));
    assert!(shared);
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
            reason: "RESOURCE_EXHAUSTED".into(),
            project: None,
            shared: false,
            limits: QuotaLimits::default(),
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
