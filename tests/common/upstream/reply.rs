//! What a script answers: a complete JSON body, a stream of Gemini events (SSE or JSON
//! array), raw chunks (OpenAI-style SSE), a trickle, a reset before headers, a delay; and
//! the canned bodies Google and its OpenAI-compatible layer send (errors, successes,
//! stream chunks).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::Notify;

pub enum Reply {
    /// A complete body with `content-type: application/json; charset=UTF-8`.
    Json {
        status: u16,
        body: Bytes,
    },
    Stream(StreamReply),
    /// Drop the connection before any response header is written.
    Reset,
    /// A complete body with the given status and headers (and no others).
    WithHeaders {
        status: u16,
        headers: Vec<(String, String)>,
        body: Bytes,
    },
    /// A 200 JSON answer whose `head` comes at once and then one byte per `every`, never
    /// ending (a slow or hostile upstream holding the answer open).
    Trickle {
        head: Bytes,
        every: Duration,
    },
    /// A 200 answer streamed as the given raw chunks (e.g. OpenAI-style SSE ending with
    /// `data: [DONE]`), with the same gate / cut controls as [`StreamReply`].
    Raw(RawStream),
    /// The reply, after a pause (an upstream's latency).
    Delayed(Duration, Box<Reply>),
}

/// A streamed 200 answer made of raw byte chunks. `gate_before(i, n)` waits on `n` before
/// sending chunk `i`; `cut_after(i)` aborts the connection after `i` chunks; `stall_after(i)`
/// falls silent after `i` chunks and holds the answer open until the daemon drops it;
/// `every(d)` sends each chunk `d` after the one before.
#[derive(Clone)]
pub struct RawStream {
    pub content_type: String,
    pub chunks: Vec<Bytes>,
    pub gate: Option<(usize, Arc<Notify>)>,
    pub cut_after: Option<usize>,
    pub stall_after: Option<usize>,
    pub every: Duration,
}

impl RawStream {
    pub fn new(content_type: &str, chunks: Vec<Bytes>) -> Self {
        Self {
            content_type: content_type.into(),
            chunks,
            gate: None,
            cut_after: None,
            stall_after: None,
            every: Duration::ZERO,
        }
    }

    /// OpenAI-compatible SSE as Google's compat layer sends it: one `data: {json}\n\n`
    /// chunk per event, then `data: [DONE]\n\n`.
    pub fn openai_sse(events: Vec<Value>) -> Self {
        let mut chunks: Vec<Bytes> = events
            .iter()
            .map(|e| Bytes::from(format!("data: {e}\n\n")))
            .collect();
        chunks.push(Bytes::from_static(b"data: [DONE]\n\n"));
        Self::new("text/event-stream", chunks)
    }

    pub fn gate_before(mut self, index: usize, gate: Arc<Notify>) -> Self {
        self.gate = Some((index, gate));
        self
    }

    pub fn cut_after(mut self, chunks: usize) -> Self {
        self.cut_after = Some(chunks);
        self
    }

    pub fn stall_after(mut self, chunks: usize) -> Self {
        self.stall_after = Some(chunks);
        self
    }

    pub fn every(mut self, gap: Duration) -> Self {
        self.every = gap;
        self
    }
}

impl From<RawStream> for Reply {
    fn from(s: RawStream) -> Self {
        Reply::Raw(s)
    }
}

/// A streamed OpenAI `chat.completion.chunk` carrying `text` (no usage).
pub fn openai_chunk(text: &str, finish: Option<&str>) -> Value {
    json!({
        "id": "fake-chatcmpl",
        "object": "chat.completion.chunk",
        "created": 1_750_000_000,
        "model": "gemini-2.5-flash",
        "choices": [{
            "index": 0,
            "delta": { "role": "assistant", "content": text },
            "finish_reason": finish
        }]
    })
}

/// The usage-only chunk sent at the end of a stream asked with `include_usage`.
pub fn openai_usage_chunk() -> Value {
    json!({
        "id": "fake-chatcmpl",
        "object": "chat.completion.chunk",
        "created": 1_750_000_000,
        "model": "gemini-2.5-flash",
        "choices": [],
        "usage": { "prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12 }
    })
}

/// Exact bytes of a successful non-streamed OpenAI chat completion (compact, odd spacing
/// kept so a re-serialisation would show).
pub const OPENAI_CHAT_OK_BODY: &str = "{\"id\":\"fake-chatcmpl\",  \"object\":\"chat.completion\",\"created\":1750000000,\"model\":\"gemini-2.5-flash\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"h\\u00e9llo\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFormat {
    /// `text/event-stream`, one `data: {json}\r\n\r\n` chunk per event.
    Sse,
    /// `application/json`: `[{…}`, `\r\n,{…}`, …, `]`, as Google streams without `alt=sse`.
    JsonArray,
}

/// A streamed 200 answer. `gate_before(i, n)` waits on `n` before sending event `i`;
/// `cut_after(i)` aborts the connection after `i` events (no clean end, no closing `]`).
#[derive(Clone)]
pub struct StreamReply {
    pub format: StreamFormat,
    pub events: Vec<Value>,
    pub gate: Option<(usize, Arc<Notify>)>,
    pub cut_after: Option<usize>,
}

impl StreamReply {
    pub fn sse(events: Vec<Value>) -> Self {
        Self {
            format: StreamFormat::Sse,
            events,
            gate: None,
            cut_after: None,
        }
    }

    pub fn json_array(events: Vec<Value>) -> Self {
        Self {
            format: StreamFormat::JsonArray,
            events,
            gate: None,
            cut_after: None,
        }
    }

    pub fn gate_before(mut self, index: usize, gate: Arc<Notify>) -> Self {
        self.gate = Some((index, gate));
        self
    }

    pub fn cut_after(mut self, events: usize) -> Self {
        self.cut_after = Some(events);
        self
    }
}

impl From<StreamReply> for Reply {
    fn from(s: StreamReply) -> Self {
        Reply::Stream(s)
    }
}

/// Google's exact bytes for a plain client error (pretty-printed, trailing newline).
pub const INVALID_ARGUMENT_BODY: &str = "{\n  \"error\": {\n    \"code\": 400,\n    \"message\": \"* GenerateContentRequest.contents: contents is not specified\\n\",\n    \"status\": \"INVALID_ARGUMENT\"\n  }\n}\n";

impl Reply {
    pub fn json(status: u16, body: &Value) -> Reply {
        let text = serde_json::to_string_pretty(body).expect("serialise") + "\n";
        Reply::Json {
            status,
            body: Bytes::from(text),
        }
    }

    pub fn raw(status: u16, body: impl Into<Bytes>) -> Reply {
        Reply::Json {
            status,
            body: body.into(),
        }
    }

    pub fn google_error(code: u16, status: &str, message: &str, details: Value) -> Reply {
        let mut error = json!({ "code": code, "message": message, "status": status });
        if !details.is_null() {
            error["details"] = details;
        }
        Reply::json(code, &json!({ "error": error }))
    }

    /// A successful `generateContent` answer.
    pub fn generate_ok(text: &str) -> Reply {
        Reply::json(200, &chunk_with_finish(text, Some("STOP")))
    }

    /// 400 `API_KEY_INVALID`, as Google answers a revoked or mistyped key.
    pub fn api_key_invalid() -> Reply {
        let msg = "API key not valid. Please pass a valid API key.";
        Reply::google_error(
            400,
            "INVALID_ARGUMENT",
            msg,
            json!([
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": { "service": "generativelanguage.googleapis.com" }
                },
                {
                    "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                    "locale": "en-US",
                    "message": msg
                }
            ]),
        )
    }

    /// 403 `PERMISSION_DENIED` with reason `CONSUMER_SUSPENDED`.
    pub fn consumer_suspended() -> Reply {
        let msg = "Permission denied: Consumer 'projects/123456789012' has been suspended.";
        Reply::google_error(
            403,
            "PERMISSION_DENIED",
            msg,
            json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "CONSUMER_SUSPENDED",
                "domain": "googleapis.com",
                "metadata": {
                    "consumer": "projects/123456789012",
                    "service": "generativelanguage.googleapis.com"
                }
            }]),
        )
    }

    /// 429 `RESOURCE_EXHAUSTED` for a per-minute free-tier quota, with `RetryInfo`.
    pub fn resource_exhausted(retry_delay: &str) -> Reply {
        let msg = "You exceeded your current quota, please check your plan and billing details. \
                   For more information on this error, head to: \
                   https://ai.google.dev/gemini-api/docs/rate-limits.";
        Reply::google_error(
            429,
            "RESOURCE_EXHAUSTED",
            msg,
            json!([
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{
                        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        "quotaDimensions": { "location": "global", "model": "gemini-2.5-flash" },
                        "quotaValue": "10"
                    }]
                },
                {
                    "@type": "type.googleapis.com/google.rpc.Help",
                    "links": [{
                        "description": "Learn more about Gemini API quotas",
                        "url": "https://ai.google.dev/gemini-api/docs/rate-limits"
                    }]
                },
                { "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay }
            ]),
        )
    }

    pub fn internal() -> Reply {
        let msg = "An internal error has occurred. Please retry or report in \
                   https://developers.generativeai.google/guide/troubleshooting";
        Reply::google_error(500, "INTERNAL", msg, Value::Null)
    }

    pub fn unavailable() -> Reply {
        let msg = "The model is overloaded. Please try again later.";
        Reply::google_error(503, "UNAVAILABLE", msg, Value::Null)
    }

    /// A Google error as the OpenAI-compatible layer sends it: wrapped in a one-element list.
    pub fn google_list_error(code: u16, status: &str, message: &str, details: Value) -> Reply {
        let mut error = json!({ "code": code, "message": message, "status": status });
        if !details.is_null() {
            error["details"] = details;
        }
        Reply::json(code, &json!([{ "error": error }]))
    }

    /// 400 `API_KEY_INVALID` from the OpenAI-compatible layer (list-wrapped).
    pub fn openai_api_key_invalid() -> Reply {
        Reply::google_list_error(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": { "service": "generativelanguage.googleapis.com" }
            }]),
        )
    }

    /// 429 `RESOURCE_EXHAUSTED` with `RetryInfo`, from the OpenAI-compatible layer.
    pub fn openai_resource_exhausted(retry_delay: &str) -> Reply {
        Reply::google_list_error(
            429,
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota, please check your plan and billing details.",
            json!([{ "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay }]),
        )
    }

    /// A successful non-streamed OpenAI chat completion ([`OPENAI_CHAT_OK_BODY`]).
    pub fn openai_chat_ok() -> Reply {
        Reply::raw(200, OPENAI_CHAT_OK_BODY)
    }

    /// 400 `INVALID_ARGUMENT`: the client's fault, to be relayed byte for byte.
    pub fn invalid_argument() -> Reply {
        Reply::raw(400, INVALID_ARGUMENT_BODY)
    }

    /// This reply, `delay` after the request arrived.
    pub fn after(self, delay: Duration) -> Reply {
        if delay.is_zero() {
            self
        } else {
            Reply::Delayed(delay, Box::new(self))
        }
    }
}

/// One streamed `GenerateContentResponse` chunk carrying `text`.
pub fn chunk(text: &str) -> Value {
    chunk_with_finish(text, None)
}

pub fn chunk_with_finish(text: &str, finish: Option<&str>) -> Value {
    let mut candidate = json!({
        "content": { "parts": [{ "text": text }], "role": "model" },
        "index": 0
    });
    if let Some(f) = finish {
        candidate["finishReason"] = json!(f);
    }
    json!({
        "candidates": [candidate],
        "usageMetadata": { "promptTokenCount": 5, "candidatesTokenCount": 7, "totalTokenCount": 12 },
        "modelVersion": "gemini-2.5-flash",
        "responseId": "fake-response-id"
    })
}
