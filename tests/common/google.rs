//! Google's quota and permission answers, as the Gemini API sends them, for the key-pool
//! tests: 429 `RESOURCE_EXHAUSTED` bodies naming what was exhausted (`QuotaFailure`
//! violations with `quotaId`, `quotaMetric`, `quotaValue`), `RetryInfo`, an `ErrorInfo`
//! naming the consumer project, and 403s that are about a resource, billing or the key.
//!
//! Shapes follow bodies Google's clients report (python-genai, gemini-cli issues): several
//! violations in one 429, `retryDelay: "0s"` on some daily limits, `limit: 0` for a model
//! the key's tier does not include. Assumed where no captured body was found: the 429's
//! `ErrorInfo` (reason `RATE_LIMIT_EXCEEDED`, `metadata.consumer = projects/NNN`), which is
//! Google's usual quota-error shape (AIP-193), and the billing 403 (`BILLING_DISABLED`).

use super::upstream::Reply;
use serde_json::{Value, json};

pub const PER_MINUTE: &str = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier";
pub const PER_DAY: &str = "GenerateRequestsPerDayPerProjectPerModel-FreeTier";
pub const TOKENS_PER_MINUTE: &str = "GenerateContentInputTokensPerModelPerMinute-FreeTier";
pub const TOKENS_PER_DAY: &str = "GenerateContentInputTokensPerModelPerDay-FreeTier";

/// One exhausted quota in a `QuotaFailure`.
#[derive(Clone, Debug)]
pub struct Violation {
    pub quota_id: &'static str,
    pub model: String,
    /// `quotaValue`: the limit; `Some("0")` when the tier does not include the model.
    pub value: Option<String>,
}

impl Violation {
    pub fn new(quota_id: &'static str, model: &str) -> Self {
        Self {
            quota_id,
            model: model.to_owned(),
            value: None,
        }
    }

    pub fn limit(mut self, value: u64) -> Self {
        self.value = Some(value.to_string());
        self
    }

    fn metric(&self) -> &'static str {
        if self.quota_id.contains("InputTokens") {
            "generativelanguage.googleapis.com/generate_content_free_tier_input_token_count"
        } else {
            "generativelanguage.googleapis.com/generate_content_free_tier_requests"
        }
    }

    fn json(&self) -> Value {
        let mut v = json!({
            "quotaMetric": self.metric(),
            "quotaId": self.quota_id,
            "quotaDimensions": { "location": "global", "model": self.model },
        });
        if let Some(value) = &self.value {
            v["quotaValue"] = json!(value);
        }
        v
    }

    fn line(&self) -> String {
        format!(
            "* Quota exceeded for metric: {}, limit: {}, model: {}",
            self.metric(),
            self.value.as_deref().unwrap_or("unknown"),
            self.model
        )
    }
}

/// A 429 `RESOURCE_EXHAUSTED` naming `violations`, with `RetryInfo` when `retry_delay`
/// is given and an `ErrorInfo` naming the consumer project when `project` is.
pub fn quota_429(
    violations: &[Violation],
    retry_delay: Option<&str>,
    project: Option<&str>,
) -> Reply {
    let mut message = String::from(
        "You exceeded your current quota, please check your plan and billing details. \
         For more information on this error, head to: \
         https://ai.google.dev/gemini-api/docs/rate-limits.",
    );
    for v in violations {
        message.push('\n');
        message.push_str(&v.line());
    }
    let mut details = Vec::new();
    if let Some(p) = project {
        details.push(json!({
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "RATE_LIMIT_EXCEEDED",
            "domain": "googleapis.com",
            "metadata": {
                "consumer": format!("projects/{p}"),
                "service": "generativelanguage.googleapis.com",
            }
        }));
    }
    details.push(json!({
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": violations.iter().map(Violation::json).collect::<Vec<_>>(),
    }));
    details.push(json!({
        "@type": "type.googleapis.com/google.rpc.Help",
        "links": [{
            "description": "Learn more about Gemini API quotas",
            "url": "https://ai.google.dev/gemini-api/docs/rate-limits"
        }]
    }));
    if let Some(d) = retry_delay {
        details
            .push(json!({ "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": d }));
    }
    Reply::google_error(429, "RESOURCE_EXHAUSTED", &message, Value::Array(details))
}

/// The per-minute request limit of `model` (limit `limit`), retry in `retry_delay`.
pub fn per_minute(model: &str, limit: u64, retry_delay: &str) -> Reply {
    quota_429(
        &[Violation::new(PER_MINUTE, model).limit(limit)],
        Some(retry_delay),
        None,
    )
}

/// The per-day request limit of `model`, with the `retryDelay: "0s"` Google sends on some.
pub fn per_day(model: &str) -> Reply {
    quota_429(
        &[Violation::new(PER_DAY, model).limit(20)],
        Some("0s"),
        None,
    )
}

/// `model` is not in the key's tier at all: every limit is `0`.
pub fn zero_quota(model: &str) -> Reply {
    quota_429(
        &[
            Violation::new(PER_MINUTE, model).limit(0),
            Violation::new(PER_DAY, model).limit(0),
            Violation::new(TOKENS_PER_MINUTE, model).limit(0),
        ],
        Some("25s"),
        None,
    )
}

/// 403 about a file uploaded with a key of another project.
pub fn file_denied(file: &str) -> Reply {
    Reply::google_error(
        403,
        "PERMISSION_DENIED",
        &format!("You do not have permission to access the File {file} or it may not exist."),
        Value::Null,
    )
}

/// 403 about a cached content of another project.
pub fn cache_denied(cache: &str) -> Reply {
    Reply::google_error(
        403,
        "PERMISSION_DENIED",
        &format!(
            "You do not have permission to access the CachedContent {cache} or it may not exist."
        ),
        Value::Null,
    )
}

/// 403: the model needs a project with billing enabled.
pub fn billing_required(project: &str) -> Reply {
    Reply::google_error(
        403,
        "PERMISSION_DENIED",
        &format!(
            "This API method requires billing to be enabled. Please enable billing on project \
             #{project} by visiting https://console.developers.google.com/billing/enable?project={project} \
             then retry."
        ),
        json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "BILLING_DISABLED",
            "domain": "googleapis.com",
            "metadata": {
                "consumer": format!("projects/{project}"),
                "service": "generativelanguage.googleapis.com"
            }
        }]),
    )
}

/// 400 `FAILED_PRECONDITION`: Google refuses the caller's location.
pub fn location_refused() -> Reply {
    Reply::google_error(
        400,
        "FAILED_PRECONDITION",
        "User location is not supported for the API use.",
        Value::Null,
    )
}

/// 403: the key was found published; Google blocks it for good.
pub fn leaked_key() -> Reply {
    Reply::google_error(
        403,
        "PERMISSION_DENIED",
        "Your API key was reported as leaked. Please use another API key.",
        Value::Null,
    )
}

/// 403 `SERVICE_DISABLED`: the key's project has not enabled the Generative Language API.
pub fn service_disabled(project: &str) -> Reply {
    Reply::google_error(
        403,
        "PERMISSION_DENIED",
        &format!(
            "Generative Language API has not been used in project {project} before or it is \
             disabled. Enable it by visiting https://console.developers.google.com/apis/api/\
             generativelanguage.googleapis.com/overview?project={project} then retry."
        ),
        json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "SERVICE_DISABLED",
            "domain": "googleapis.com",
            "metadata": {
                "consumer": format!("projects/{project}"),
                "service": "generativelanguage.googleapis.com"
            }
        }]),
    )
}

/// A 403 that names neither the key nor a resource.
pub fn caller_denied() -> Reply {
    Reply::google_error(
        403,
        "PERMISSION_DENIED",
        "The caller does not have permission",
        Value::Null,
    )
}
