//! Fake Gemini upstream: a hyper server on `127.0.0.1:0` that records every request it receives
//! and answers from a per-test script, in Google's wire format (error bodies, JSON, SSE and
//! JSON-array streams, gated, paced or stalled chunks, cut connections, resets before
//! headers, answers after a delay). It counts the connections the daemon holds open and the
//! streamed answers still being sent or dropped before their end, so a test can see that a
//! cancelled client request closed the upstream connection too; the fault profiles of
//! `faults.rs` script it. It knows nothing about the daemon; tests assert on what it
//! recorded. Self-contained (only crates, no `super::`): the soak example includes it.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

/// One request as the fake upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// HTTP/1.1 or HTTP/2.0, as the connection spoke it.
    pub version: http::Version,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    /// The pool key the daemon sent (`x-goog-api-key`).
    pub fn key(&self) -> Option<&str> {
        self.headers
            .get("x-goog-api-key")
            .and_then(|v| v.to_str().ok())
    }

    /// The pool key the daemon sent as `Authorization: Bearer` (OpenAI-compatible routes).
    pub fn bearer(&self) -> Option<&str> {
        self.headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
    }

    /// The body parsed as JSON (panics if it is not JSON).
    pub fn body_json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("upstream body is not JSON ({e}): {:?}", self.body_text()))
    }

    /// The body's top-level `model` (OpenAI-compatible requests), if the body is JSON.
    pub fn body_model(&self) -> Option<String> {
        let v: Value = serde_json::from_slice(&self.body).ok()?;
        v.get("model")?.as_str().map(str::to_string)
    }

    /// `gemini-2.5-flash` for `/v1beta/models/gemini-2.5-flash:generateContent`.
    pub fn model(&self) -> Option<&str> {
        let rest = self.path.split("/models/").nth(1)?;
        rest.split(':').next()
    }

    pub fn is_stream(&self) -> bool {
        self.path.ends_with(":streamGenerateContent")
    }

    /// Query pairs in order, not percent-decoded.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        let Some(q) = self.query.as_deref() else {
            return Vec::new();
        };
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (p.to_string(), String::new()),
            })
            .collect()
    }

    /// Path plus `?query` as it arrived.
    pub fn target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

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

type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// The test CA that issued the fake upstream's TLS certificate.
pub fn test_ca_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.pem")
}

pub fn tls_acceptor(alpn: &[&str]) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let certs = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("server.pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("server.pem certificates");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("server.key");
    let mut config = rustls::ServerConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server certificate");
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}
type UpBody = BoxBody<Bytes, io::Error>;

struct Shared {
    recorded: Mutex<Vec<Recorded>>,
    handler: RwLock<Handler>,
    /// Streamed answer bodies still being sent (dropped bodies leave).
    open_bodies: AtomicU64,
    /// Streamed bodies dropped before they were fully sent: the daemon closed the connection.
    abandoned: AtomicU64,
    connections: AtomicU64,
}

pub struct Upstream {
    pub addr: SocketAddr,
    scheme: &'static str,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Upstream {
    pub async fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Upstream {
        Self::serve(handler, None).await
    }

    /// The same over TLS with the test certificate for 127.0.0.1 (`tests/fixtures/tls`,
    /// issued by `ca.pem`), offering the ALPN protocols in `alpn` (e.g. `h2`, `http/1.1`).
    pub async fn start_tls(
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
        alpn: &[&str],
    ) -> Upstream {
        Self::serve(handler, Some(tls_acceptor(alpn))).await
    }

    async fn serve(
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake upstream");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            recorded: Mutex::new(Vec::new()),
            handler: RwLock::new(Arc::new(handler)),
            open_bodies: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        });
        let s = shared.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let s = s.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    s.connections.fetch_add(1, Ordering::SeqCst);
                    let svc = service_fn({
                        let s = s.clone();
                        move |req| handle(req, s.clone())
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                    }
                    s.connections.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Upstream {
            addr,
            scheme,
            shared,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    pub fn set_handler(&self, handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) {
        *self.shared.handler.write().unwrap() = Arc::new(handler);
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.recorded.lock().unwrap().clone()
    }

    /// Requests whose path ends with `suffix` (e.g. `:generateContent`, `/models`).
    pub fn requests_to(&self, suffix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with(suffix))
            .collect()
    }

    /// Pool keys of the requests whose path ends with `suffix`, in order.
    pub fn keys_to(&self, suffix: &str) -> Vec<String> {
        self.requests_to(suffix)
            .iter()
            .map(|r| r.key().unwrap_or("<none>").to_string())
            .collect()
    }

    /// `Authorization: Bearer` pool keys of the requests whose path ends with `suffix`.
    pub fn bearers_to(&self, suffix: &str) -> Vec<String> {
        self.requests_to(suffix)
            .iter()
            .map(|r| r.bearer().unwrap_or("<none>").to_string())
            .collect()
    }

    pub fn clear(&self) {
        self.shared.recorded.lock().unwrap().clear();
    }

    /// Streamed answer bodies the upstream is still sending.
    pub fn open_bodies(&self) -> u64 {
        self.shared.open_bodies.load(Ordering::SeqCst)
    }

    /// Streamed answer bodies the daemon dropped before their end.
    pub fn abandoned(&self) -> u64 {
        self.shared.abandoned.load(Ordering::SeqCst)
    }

    /// TCP connections from the daemon currently open.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(req: Request<Incoming>, s: Arc<Shared>) -> Result<Response<UpBody>, io::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
    let rec = Recorded {
        version: parts.version,
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
    };
    s.recorded.lock().unwrap().push(rec.clone());
    let handler = s.handler.read().unwrap().clone();
    let mut reply = handler(&rec);
    while let Reply::Delayed(delay, inner) = reply {
        tokio::time::sleep(delay).await;
        reply = *inner;
    }
    match reply {
        Reply::Json { status, body } => Ok(Response::builder()
            .status(status)
            .header("content-type", "application/json; charset=UTF-8")
            .body(Full::new(body).map_err(|e: Infallible| match e {}).boxed())
            .unwrap()),
        Reply::WithHeaders {
            status,
            headers,
            body,
        } => {
            let mut resp = Response::builder().status(status);
            for (name, value) in headers {
                resp = resp.header(name, value);
            }
            Ok(resp
                .body(Full::new(body).map_err(|e: Infallible| match e {}).boxed())
                .unwrap())
        }
        Reply::Stream(st) => Ok(stream_response(st, &s)),
        Reply::Raw(raw) => Ok(raw_stream_response(raw, &s)),
        Reply::Trickle { head, every } => Ok(trickle_response(head, every, &s)),
        Reply::Reset => Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "scripted reset",
        )),
        Reply::Delayed(..) => unreachable!("unwrapped above"),
    }
}

fn stream_response(s: StreamReply, shared: &Arc<Shared>) -> Response<UpBody> {
    let (tx, rx) = mpsc::channel(16);
    let content_type = match s.format {
        StreamFormat::Sse => "text/event-stream",
        StreamFormat::JsonArray => "application/json; charset=UTF-8",
    };
    tokio::spawn(async move {
        let n = s.events.len();
        for i in 0..=n {
            if let Some((at, gate)) = &s.gate {
                if *at == i {
                    gate.notified().await;
                }
            }
            if s.cut_after == Some(i) {
                let _ = tx.send(Err(io::Error::other("scripted cut"))).await;
                return;
            }
            let text = match s.format {
                StreamFormat::Sse if i < n => format!("data: {}\r\n\r\n", s.events[i]),
                StreamFormat::Sse => return,
                StreamFormat::JsonArray if i == 0 && n > 0 => format!("[{}", s.events[0]),
                StreamFormat::JsonArray if i < n => format!("\r\n,{}", s.events[i]),
                StreamFormat::JsonArray if n == 0 => "[]".to_string(),
                StreamFormat::JsonArray => "]".to_string(),
            };
            if tx.send(Ok(Frame::data(Bytes::from(text)))).await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .status(200)
        .header("content-type", content_type)
        .body(ChannelBody::new(rx, shared).boxed())
        .unwrap()
}

fn raw_stream_response(s: RawStream, shared: &Arc<Shared>) -> Response<UpBody> {
    let (tx, rx) = mpsc::channel(16);
    let content_type = s.content_type.clone();
    tokio::spawn(async move {
        for i in 0..=s.chunks.len() {
            if let Some((at, gate)) = &s.gate {
                if *at == i {
                    gate.notified().await;
                }
            }
            if s.cut_after == Some(i) {
                let _ = tx.send(Err(io::Error::other("scripted cut"))).await;
                return;
            }
            if s.stall_after == Some(i) {
                // Holds the channel open until the daemon drops the body.
                tx.closed().await;
                return;
            }
            let Some(chunk) = s.chunks.get(i) else {
                return;
            };
            if !s.every.is_zero() {
                tokio::time::sleep(s.every).await;
            }
            if tx.send(Ok(Frame::data(chunk.clone()))).await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .status(200)
        .header("content-type", content_type)
        .body(ChannelBody::new(rx, shared).boxed())
        .unwrap()
}

fn trickle_response(head: Bytes, every: Duration, shared: &Arc<Shared>) -> Response<UpBody> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut next = head;
        while tx.send(Ok(Frame::data(next))).await.is_ok() {
            tokio::time::sleep(every).await;
            next = Bytes::from_static(b" ");
        }
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json; charset=UTF-8")
        .body(ChannelBody::new(rx, shared).boxed())
        .unwrap()
}

/// A body fed from a channel (an `Err` aborts the connection mid-body) that counts as open
/// while it lives and as abandoned when the daemon drops it before its end.
struct ChannelBody {
    rx: mpsc::Receiver<Result<Frame<Bytes>, io::Error>>,
    shared: Arc<Shared>,
    finished: bool,
}

impl ChannelBody {
    fn new(rx: mpsc::Receiver<Result<Frame<Bytes>, io::Error>>, shared: &Arc<Shared>) -> Self {
        shared.open_bodies.fetch_add(1, Ordering::SeqCst);
        Self {
            rx,
            shared: shared.clone(),
            finished: false,
        }
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let p = self.rx.poll_recv(cx);
        if matches!(p, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.finished = true;
        }
        p
    }
}

impl Drop for ChannelBody {
    fn drop(&mut self) {
        self.shared.open_bodies.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            self.shared.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}
