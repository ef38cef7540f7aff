//! Token counts from an answer: Gemini's `usageMetadata` (the last one in a stream, or a
//! Live message's), or a `usage` object: OpenAI's (`prompt_tokens`, …) or the Interactions
//! API's (`total_input_tokens`, …). Only the usage object is parsed, found from the end of the bytes,
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
    let mut s = Scan { b: bytes, i: at };
    s.eat(b':')?;
    let mut t = Tokens::default();
    if gemini {
        s.object(|s, key| {
            let slot = match key {
                b"promptTokenCount" => &mut t.prompt,
                // The Live API names the answer's tokens `responseTokenCount`.
                b"candidatesTokenCount" | b"responseTokenCount" => &mut t.candidates,
                b"thoughtsTokenCount" => &mut t.thoughts,
                b"cachedContentTokenCount" => &mut t.cached,
                b"totalTokenCount" => &mut t.total,
                _ => return s.skip(),
            };
            *slot = s.count()?;
            Some(())
        })?;
    } else {
        s.object(|s, key| {
            let (slot, inner): (&mut u64, &[u8]) = match key {
                b"prompt_tokens" | b"total_input_tokens" => (&mut t.prompt, b""),
                b"completion_tokens" | b"total_output_tokens" => (&mut t.candidates, b""),
                b"total_tokens" => (&mut t.total, b""),
                b"total_thought_tokens" => (&mut t.thoughts, b""),
                b"total_cached_tokens" => (&mut t.cached, b""),
                b"completion_tokens_details" => (&mut t.thoughts, b"reasoning_tokens"),
                b"prompt_tokens_details" => (&mut t.cached, b"cached_tokens"),
                _ => return s.skip(),
            };
            *slot = if inner.is_empty() {
                s.count()?
            } else if s.peek()? == b'{' {
                let mut n = 0;
                s.object(|s, key| {
                    if key == inner {
                        n = s.count()?;
                        Some(())
                    } else {
                        s.skip()
                    }
                })?;
                n
            } else {
                s.skip()?;
                0
            };
            Some(())
        })?;
    }
    Some(t)
}

/// Reads JSON where it lies: just enough for a usage object (its members, counts, and
/// skipping everything else without building it). `None` is malformed input.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    /// The next byte that is not white space (the scan stays on it).
    fn peek(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// A string's bytes as written (escapes left as they are).
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            let at = self.i + memchr::memchr2(b'"', b'\\', self.b.get(self.i..)?)?;
            if self.b[at] == b'"' {
                self.i = at + 1;
                return Some(&self.b[start..at]);
            }
            self.i = at + 2;
        }
    }

    /// An object's members: `member` is given each key and reads its value.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &[u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            member(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A token count: a whole number that fits, else 0 (negative, fractional, too big,
    /// or not a number at all, which is skipped).
    fn count(&mut self) -> Option<u64> {
        if !self.peek()?.is_ascii_digit() {
            self.skip()?;
            return Some(0);
        }
        let mut n: Option<u64> = Some(0);
        while let Some(d) = self.b.get(self.i).filter(|d| d.is_ascii_digit()) {
            n = n
                .and_then(|n| n.checked_mul(10))
                .and_then(|n| n.checked_add(u64::from(d - b'0')));
            self.i += 1;
        }
        if matches!(self.b.get(self.i), Some(b'.' | b'e' | b'E')) {
            self.skip()?;
            return Some(0);
        }
        Some(n.unwrap_or(0))
    }

    /// Skips one value of any kind; nesting is counted, not recursed into.
    fn skip(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            match self.peek()? {
                b'"' => {
                    self.string()?;
                }
                b'{' | b'[' => {
                    self.i += 1;
                    depth += 1;
                    continue;
                }
                b'}' | b']' if depth > 0 => {
                    self.i += 1;
                    depth -= 1;
                }
                b',' | b':' if depth > 0 => {
                    self.i += 1;
                    continue;
                }
                b'}' | b']' | b',' | b':' => return None,
                _ => {
                    // A number or a literal: up to the next delimiter.
                    let len = self.b[self.i..]
                        .iter()
                        .position(|c| b" \t\r\n,:{}[]\"".contains(c))
                        .unwrap_or(self.b.len() - self.i);
                    if len == 0 {
                        return None;
                    }
                    self.i += len;
                }
            }
            if depth == 0 {
                return Some(());
            }
        }
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
    fn live_usage_names_the_answer_response_tokens() {
        let msg = br#"{"serverContent":{"turnComplete":true},"usageMetadata":{"promptTokenCount":143,"responseTokenCount":19,"totalTokenCount":162,"responseTokensDetails":[{"modality":"TEXT","tokenCount":19}]}}"#;
        let t = parse(msg).unwrap();
        assert_eq!((t.prompt, t.candidates, t.total), (143, 19, 162));
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

    /// An Interactions API answer (`POST /v1beta/interactions`), usage at the end.
    #[test]
    fn interactions_usage() {
        let body = br#"{"id":"v1_abc","status":"completed","outputs":[{"type":"text",
          "text":"\"usage\""}],"usage":{"total_tokens":29,"total_input_tokens":8,
          "total_output_tokens":12,"total_thought_tokens":9,"total_cached_tokens":2,
          "input_tokens_by_modality":[{"modality":"text","tokens":8}]}}"#;
        let t = parse(body).unwrap();
        assert_eq!(
            t,
            Tokens {
                prompt: 8,
                candidates: 12,
                thoughts: 9,
                cached: 2,
                total: 29
            }
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
