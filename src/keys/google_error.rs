//! Reading Google's error body (`google.rpc.Status` in JSON): `error.status`,
//! `error.message` and the `details` the classifier needs — `ErrorInfo.reason` and
//! `metadata.consumer`, `QuotaFailure.violations[]` (`quotaId`, `quotaMetric`,
//! `quotaValue`) and `RetryInfo.retryDelay`. Google's OpenAI-compatible layer wraps the
//! same error in a list (`[{"error":…}]`); both shapes are read. Anything else (HTML, an
//! empty body) reads as an empty error. Pure: no I/O, no decisions.

use serde_json::Value;
use std::time::Duration;

#[derive(Debug, Default, PartialEq)]
pub struct ErrorBody {
    pub status: String,
    pub message: String,
    /// Every `ErrorInfo.reason`, in order.
    pub reasons: Vec<String>,
    /// `ErrorInfo.metadata.consumer` (`projects/123`) as the project's number (`123`).
    pub project: Option<String>,
    pub violations: Vec<Violation>,
    pub retry_delay: Option<Duration>,
}

/// One exhausted quota in a `QuotaFailure`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Violation {
    /// `GenerateRequestsPerDayPerProjectPerModel-FreeTier`
    pub quota_id: String,
    /// `generativelanguage.googleapis.com/generate_content_free_tier_requests`
    pub quota_metric: String,
    /// The limit that was hit, when Google says it (`"0"`: the tier has none).
    pub quota_value: Option<u64>,
}

impl ErrorBody {
    pub fn parse(body: &[u8]) -> Self {
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
        let mut out = Self {
            status: text(error.get("status")),
            message: text(error.get("message")),
            ..Self::default()
        };
        let details = error.get("details").and_then(Value::as_array);
        for d in details.into_iter().flatten() {
            out.read_detail(d);
        }
        out
    }

    fn read_detail(&mut self, d: &Value) {
        if let Some(r) = d.get("reason").and_then(Value::as_str) {
            self.reasons.push(r.to_owned());
        }
        let consumer = d.pointer("/metadata/consumer").and_then(Value::as_str);
        if let Some(p) = consumer.and_then(|c| c.strip_prefix("projects/")) {
            if !p.is_empty() && self.project.is_none() {
                self.project = Some(p.to_owned());
            }
        }
        if let Some(delay) = d.get("retryDelay").and_then(Value::as_str) {
            self.retry_delay = parse_google_duration(delay);
        }
        let violations = d.get("violations").and_then(Value::as_array);
        for v in violations.into_iter().flatten() {
            let quota_id = text(v.get("quotaId"));
            if quota_id.is_empty() {
                continue;
            }
            self.violations.push(Violation {
                quota_id,
                quota_metric: text(v.get("quotaMetric")),
                quota_value: quota_value(v.get("quotaValue")),
            });
        }
    }
}

fn text(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or("").to_owned()
}

/// `quotaValue` is an int64 in protobuf JSON: a string (`"20"`), or a number from some
/// encoders.
fn quota_value(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// Google's protobuf `Duration` in JSON: `"30s"`, `"1.5s"`, `"0.250s"`.
pub fn parse_google_duration(s: &str) -> Option<Duration> {
    let secs: f64 = s.strip_suffix('s')?.parse().ok()?;
    // Absurd values (`1e300s`) do not fit a Duration: treat them as absent.
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_durations() {
        assert_eq!(
            parse_google_duration("1.5s"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_google_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_google_duration("x"), None);
        assert_eq!(parse_google_duration("-1s"), None);
        assert_eq!(parse_google_duration("1e300s"), None);
    }

    #[test]
    fn reads_reasons_project_violations_and_delay() {
        let body = br#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED",
          "details":[
            {"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"RATE_LIMIT_EXCEEDED",
             "metadata":{"consumer":"projects/177838813423","service":"generativelanguage.googleapis.com"}},
            {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[
              {"quotaMetric":"m/requests","quotaId":"A-FreeTier","quotaValue":"20"},
              {"quotaId":"B","quotaValue":0},
              {"quotaMetric":"no id"}]},
            {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"7.5s"}]}}"#;
        let e = ErrorBody::parse(body);
        assert_eq!(e.status, "RESOURCE_EXHAUSTED");
        assert_eq!(e.reasons, ["RATE_LIMIT_EXCEEDED"]);
        assert_eq!(e.project.as_deref(), Some("177838813423"));
        assert_eq!(e.retry_delay, Some(Duration::from_millis(7500)));
        let ids: Vec<(&str, Option<u64>)> = e
            .violations
            .iter()
            .map(|v| (v.quota_id.as_str(), v.quota_value))
            .collect();
        assert_eq!(ids, [("A-FreeTier", Some(20)), ("B", Some(0))]);
        assert_eq!(e.violations[0].quota_metric, "m/requests");
    }

    #[test]
    fn anything_but_a_google_error_reads_as_empty() {
        for body in [&b""[..], b"<html>", b"[]", b"{\"error\":3}", b"null"] {
            assert_eq!(ErrorBody::parse(body), ErrorBody::default(), "{body:?}");
        }
    }
}
