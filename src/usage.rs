//! Token counts from an answer: Gemini's `usageMetadata` (the last one in a stream) or
//! OpenAI's `usage`. Only the usage object is parsed, found from the end of the bytes,
//! so the cost does not depend on the size of the answer; no text is ever kept.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub prompt: u64,
    pub candidates: u64,
    pub thoughts: u64,
    pub cached: u64,
    pub total: u64,
}

/// The last usage block in `bytes`, if there is one.
pub fn parse(bytes: &[u8]) -> Option<Tokens> {
    let (at, gemini) = match rfind(bytes, b"\"usageMetadata\"") {
        Some(at) => (at + 15, true),
        None => (rfind(bytes, b"\"usage\"")? + 7, false),
    };
    let rest = &bytes[at..];
    let colon = rest.iter().position(|&b| b == b':')?;
    let value: Value = serde_json::Deserializer::from_slice(&rest[colon + 1..])
        .into_iter::<Value>()
        .next()?
        .ok()?;
    let n = |v: &Value, path: &[&str]| {
        path.iter()
            .try_fold(v, |v, k| v.get(*k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let t = if gemini {
        Tokens {
            prompt: n(&value, &["promptTokenCount"]),
            candidates: n(&value, &["candidatesTokenCount"]),
            thoughts: n(&value, &["thoughtsTokenCount"]),
            cached: n(&value, &["cachedContentTokenCount"]),
            total: n(&value, &["totalTokenCount"]),
        }
    } else {
        Tokens {
            prompt: n(&value, &["prompt_tokens"]),
            candidates: n(&value, &["completion_tokens"]),
            thoughts: n(&value, &["completion_tokens_details", "reasoning_tokens"]),
            cached: n(&value, &["prompt_tokens_details", "cached_tokens"]),
            total: n(&value, &["total_tokens"]),
        }
    };
    value.is_object().then_some(t)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemini_usage_metadata_with_thoughts_and_cache() {
        let body = br#"{"candidates":[{"content":{"parts":[{"text":"usage \"usage\""}]}}],
          "usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":5,"thoughtsTokenCount":7,
          "cachedContentTokenCount":3,"totalTokenCount":22},"modelVersion":"gemini-2.5-pro"}"#;
        assert_eq!(
            parse(body),
            Some(Tokens {
                prompt: 10,
                candidates: 5,
                thoughts: 7,
                cached: 3,
                total: 22
            })
        );
    }

    #[test]
    fn openai_usage_in_a_stream_chunk() {
        let chunk = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":6,\"total_tokens\":10,\"completion_tokens_details\":{\"reasoning_tokens\":2}}}\n\n";
        assert_eq!(
            parse(chunk),
            Some(Tokens {
                prompt: 4,
                candidates: 6,
                thoughts: 2,
                cached: 0,
                total: 10
            })
        );
    }

    #[test]
    fn no_usage_is_none() {
        assert_eq!(parse(b"{\"candidates\":[]}"), None);
        assert_eq!(parse(b"\"usage\": [1"), None);
    }
}
