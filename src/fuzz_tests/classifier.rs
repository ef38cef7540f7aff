//! The upstream error classifier never panics on any status and body, and reads what
//! Google's error bodies say: reasons, quota ids and `RetryInfo.retryDelay`.

use super::cases;
use crate::keys::classify::{Outcome, classify};
use proptest::prelude::*;
use serde_json::json;
use std::time::Duration;

// ------------------------------------------------------------------ classifier

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(200u16),
        Just(400),
        Just(401),
        Just(403),
        Just(404),
        Just(408),
        Just(413),
        Just(429),
        Just(500),
        Just(502),
        Just(503),
        Just(504),
        100u16..600,
    ]
}

/// Google-shaped error bodies with random reasons, delays and quota ids.
fn error_body() -> impl Strategy<Value = Vec<u8>> {
    let reason = prop_oneof![
        Just("API_KEY_INVALID".to_string()),
        Just("CONSUMER_SUSPENDED".to_string()),
        Just("RATE_LIMIT_EXCEEDED".to_string()),
        "\\PC{0,20}",
    ];
    let delay = prop_oneof![
        (0u64..100_000).prop_map(|s| format!("{s}s")),
        (0u64..100_000, 0u32..1000).prop_map(|(s, f)| format!("{s}.{f:03}s")),
        "\\PC{0,12}",
        Just("-5s".to_string()),
        Just("1e400s".to_string()),
        Just("99999999999999999999999s".to_string()),
    ];
    let quota = prop_oneof![
        Just("GenerateRequestsPerDayPerProjectPerModel-FreeTier".to_string()),
        Just("GenerateRequestsPerMinutePerProjectPerModel".to_string()),
        "\\PC{0,16}",
    ];
    (reason, delay, quota, "\\PC{0,40}", any::<bool>()).prop_map(
        |(reason, delay, quota, message, list)| {
            let error = json!({
                "code": 429, "message": message, "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason},
                    {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                     "violations": [{"quotaId": quota}]},
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay},
                ]
            });
            let v = if list {
                json!([{ "error": error }])
            } else {
                json!({ "error": error })
            };
            serde_json::to_vec(&v).expect("serialise")
        },
    )
}

fn check_classification(st: u16, body: &[u8]) -> Result<(), TestCaseError> {
    let out = classify(st, body);
    match st {
        200..=299 => prop_assert_eq!(out, Outcome::Success),
        429 => prop_assert!(
            matches!(out, Outcome::RateLimited { .. }),
            "{} → {:?}",
            st,
            out
        ),
        401 => prop_assert!(matches!(out, Outcome::Invalid { .. }), "{} → {:?}", st, out),
        // A 403 retires the key only for a key reason; otherwise it charges nothing or
        // counts as a transient failure.
        403 => {
            let text = String::from_utf8_lossy(body);
            let key_reason = ["API_KEY_INVALID", "CONSUMER_SUSPENDED"]
                .iter()
                .any(|r| text.contains(&format!("\"reason\":\"{r}\"")));
            prop_assert_eq!(
                matches!(out, Outcome::Invalid { .. }),
                key_reason,
                "{} {} → {:?}",
                st,
                text,
                out
            )
        }
        408 | 500 | 502 | 503 | 504 => {
            prop_assert!(
                matches!(out, Outcome::Transient { .. }),
                "{} → {:?}",
                st,
                out
            )
        }
        400 => prop_assert!(
            matches!(out, Outcome::Invalid { .. } | Outcome::ClientError),
            "{} → {:?}",
            st,
            out
        ),
        _ => prop_assert_eq!(out, Outcome::ClientError),
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn classify_never_panics_on_bytes(st in status(), body in prop::collection::vec(any::<u8>(), 0..300)) {
        check_classification(st, &body)?;
    }

    #[test]
    fn classify_never_panics_on_google_shaped_bodies(st in status(), body in error_body()) {
        check_classification(st, &body)?;
    }

    #[test]
    fn a_whole_second_retry_delay_is_read_exactly(secs in 0u64..1_000_000, list in any::<bool>()) {
        let error = json!({"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                         "retryDelay": format!("{secs}s")}]});
        let v = if list { json!([{ "error": error }]) } else { json!({ "error": error }) };
        let out = classify(429, v.to_string().as_bytes());
        match out {
            Outcome::RateLimited { retry_after, .. } => {
                prop_assert_eq!(retry_after, Some(Duration::from_secs(secs)))
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }
}
