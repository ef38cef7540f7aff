//! Token counts from an answer: Gemini's `usageMetadata` (the last one in a stream) or
//! OpenAI's `usage`. Only the usage object is parsed, found from the end of the bytes,
//! so the cost does not depend on the size of the answer; no text is ever kept.

use memchr::memmem::FinderRev;
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;

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
    let (at, gemini) = match GEMINI_KEY.rfind(bytes) {
        Some(at) => (at + GEMINI_KEY.needle().len(), true),
        None => (OPENAI_KEY.rfind(bytes)? + OPENAI_KEY.needle().len(), false),
    };
    let rest = &bytes[at..];
    let colon = rest.iter().position(|&b| b == b':')?;
    let mut de = serde_json::Deserializer::from_slice(&rest[colon + 1..]);
    if gemini {
        let u = GeminiUsage::deserialize(&mut de).ok()?;
        Some(Tokens {
            prompt: u.prompt_token_count.0,
            candidates: u.candidates_token_count.0,
            thoughts: u.thoughts_token_count.0,
            cached: u.cached_content_token_count.0,
            total: u.total_token_count.0,
        })
    } else {
        let u = OpenAiUsage::deserialize(&mut de).ok()?;
        Some(Tokens {
            prompt: u.prompt_tokens.0,
            candidates: u.completion_tokens.0,
            thoughts: u
                .completion_tokens_details
                .map_or(0, |d| d.reasoning_tokens.0),
            cached: u.prompt_tokens_details.map_or(0, |d| d.cached_tokens.0),
            total: u.total_tokens.0,
        })
    }
}

/// Only the counts are read; every other field is skipped without being built.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct GeminiUsage {
    prompt_token_count: Count,
    candidates_token_count: Count,
    thoughts_token_count: Count,
    cached_content_token_count: Count,
    total_token_count: Count,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OpenAiUsage {
    prompt_tokens: Count,
    completion_tokens: Count,
    total_tokens: Count,
    completion_tokens_details: Option<ReasoningDetails>,
    prompt_tokens_details: Option<CachedDetails>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ReasoningDetails {
    reasoning_tokens: Count,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CachedDetails {
    cached_tokens: Count,
}

/// A token count; anything that is not a whole number counts as 0.
#[derive(Default)]
struct Count(u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CountVisitor)
    }
}

/// Reads the number where it stands; anything else is skipped (never built) as 0.
struct CountVisitor;

impl<'de> serde::de::Visitor<'de> for CountVisitor {
    type Value = Count;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a token count")
    }

    fn visit_u64<E>(self, n: u64) -> Result<Count, E> {
        Ok(Count(n))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Count, E> {
        Ok(Count(u64::try_from(n).unwrap_or(0)))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Count, E> {
        Ok(Count(0))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Count, E> {
        Ok(Count(0))
    }

    fn visit_str<E>(self, _: &str) -> Result<Count, E> {
        Ok(Count(0))
    }

    fn visit_unit<E>(self) -> Result<Count, E> {
        Ok(Count(0))
    }

    fn visit_none<E>(self) -> Result<Count, E> {
        Ok(Count(0))
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Count, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Count(0))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Count, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(Count(0))
    }
}

/// The two keys searched for, with their finders built once.
static GEMINI_KEY: LazyLock<FinderRev<'static>> =
    LazyLock::new(|| FinderRev::new(b"\"usageMetadata\""));
static OPENAI_KEY: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(b"\"usage\""));

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
    fn odd_counts_are_zero_and_other_fields_are_skipped() {
        let body = br#"{"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":null,
          "promptTokensDetails":[{"modality":"TEXT","tokenCount":3}],"totalTokenCount":4.5,
          "thoughtsTokenCount":-2,"cachedContentTokenCount":{"n":[1,{"m":2}]}}}"#;
        assert_eq!(
            parse(body),
            Some(Tokens {
                prompt: 3,
                ..Tokens::default()
            })
        );
        let chunk = br#"{"usage":{"prompt_tokens":1,"completion_tokens_details":null}}"#;
        assert_eq!(
            parse(chunk),
            Some(Tokens {
                prompt: 1,
                ..Tokens::default()
            })
        );
    }

    #[test]
    fn no_usage_is_none() {
        assert_eq!(parse(b"{\"candidates\":[]}"), None);
        assert_eq!(parse(b"\"usage\": [1"), None);
    }
}

/// A benchmark, not a test: one parse of a typical `generateContent` answer.
/// Run: `cargo test --profile harness --bin gemini-balance usage_parse_cost -- --ignored --nocapture`
#[cfg(test)]
mod bench {
    #[test]
    #[ignore = "benchmark: run explicitly"]
    fn usage_parse_cost() {
        let body = br#"{"candidates":[{"content":{"parts":[{"text":"hello"}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":1,"totalTokenCount":4,"promptTokensDetails":[{"modality":"TEXT","tokenCount":3}]},"modelVersion":"gemini-2.5-flash","responseId":"abc"}"#;
        let rounds = 1_000_000;
        let started = std::time::Instant::now();
        let mut total = 0;
        for _ in 0..rounds {
            total += super::parse(std::hint::black_box(body))
                .expect("usage")
                .total;
        }
        assert_eq!(total, 4 * rounds);
        println!("{:?} per parse", started.elapsed() / rounds as u32);
    }
}
