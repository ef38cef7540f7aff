//! Fault-injecting fake Gemini upstream: a hyper server on `127.0.0.1:0` that answers native
//! (`generateContent`, `streamGenerateContent` as SSE or JSON array, `GET models`) and
//! OpenAI-compatible (`chat/completions`, streamed or not) requests, and misbehaves on
//! purpose according to a per-key [`Profile`]: latency, error statuses in Google's shape,
//! connection resets before headers, cuts mid-stream, stalls, slow trickle, malformed JSON,
//! wrong content type. Faults are drawn from a seeded generator, so a run is repeatable.
//!
//! It counts what it did per key and tracks every answer body it is still sending, so a test
//! can see that a cancelled client request closed the upstream connection too. Self-contained
//! (only crates, no `super::`): the soak example includes this file with `#[path]`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What one upstream answer does.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// A normal answer in the format the request asked for.
    Ok,
    /// An error in Google's shape: 400 → `API_KEY_INVALID`, 401, 403 → `CONSUMER_SUSPENDED`,
    /// 429 → `RESOURCE_EXHAUSTED` with the profile's `retry_delay`, 5xx → `INTERNAL` /
    /// `UNAVAILABLE`, 404 → `NOT_FOUND` (a client error).
    Status(u16),
    /// 400 `INVALID_ARGUMENT`: the client's own fault.
    InvalidArgument,
    /// The connection is dropped before any response header.
    Reset,
    /// Streams: `n` whole events, then the connection is cut (no clean end).
    /// Non-stream answers: half the body, then the cut.
    Cut(usize),
    /// Streams: `n` whole events, then silence until the daemon gives up.
    /// Non-stream answers: headers, then silence.
    Stall(usize),
    /// The answer in 7-byte pieces, `Duration` apart.
    Trickle(Duration),
    /// `200` with a body that is not JSON (non-stream) or an event that is not (stream).
    Malformed,
    /// `200` with `content-type: text/html` and an HTML body.
    WrongContentType,
}

/// How one upstream key behaves: a fixed latency before the answer, then one fault drawn
/// by weight. An empty list means always [`Fault::Ok`].
#[derive(Clone, Debug)]
pub struct Profile {
    pub latency: Duration,
    pub faults: Vec<(u32, Fault)>,
    /// `RetryInfo.retryDelay` on 429 answers, e.g. `"2s"`.
    pub retry_delay: String,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            latency: Duration::ZERO,
            faults: Vec::new(),
            retry_delay: "1s".into(),
        }
    }
}

impl Profile {
    pub fn healthy() -> Profile {
        Profile::default()
    }

    /// Always this fault.
    pub fn always(fault: Fault) -> Profile {
        Profile::default().with(1, fault)
    }

    pub fn with(mut self, weight: u32, fault: Fault) -> Profile {
        self.faults.push((weight, fault));
        self
    }

    pub fn latency(mut self, latency: Duration) -> Profile {
        self.latency = latency;
        self
    }

    pub fn retry_delay(mut self, delay: &str) -> Profile {
        self.retry_delay = delay.into();
        self
    }

    /// True when every answer is this one status (a key that is simply broken).
    fn always_status(&self) -> Option<u16> {
        match self.faults.as_slice() {
            [(_, Fault::Status(s))] => Some(*s),
            _ => None,
        }
    }

    fn draw(&self, rng: &mut StdRng) -> Fault {
        let total: u32 = self.faults.iter().map(|(w, _)| w).sum();
        if total == 0 {
            return Fault::Ok;
        }
        let mut pick = rng.random_range(0..total);
        for (w, f) in &self.faults {
            if pick < *w {
                return f.clone();
            }
            pick -= w;
        }
        Fault::Ok
    }
}

/// One answer the upstream gave.
#[derive(Clone, Debug)]
pub struct Served {
    pub at: Instant,
    pub key: String,
    pub model: String,
    pub path: String,
    pub stream: bool,
    pub fault: Fault,
}

struct Shared {
    profiles: Mutex<HashMap<String, Profile>>,
    default: Mutex<Profile>,
    rng: Mutex<StdRng>,
    served: Mutex<Vec<Served>>,
    /// Answer bodies still being sent (dropped bodies leave).
    open_bodies: AtomicU64,
    /// Bodies dropped before they were fully sent: the daemon closed the connection.
    abandoned: AtomicU64,
    connections: AtomicU64,
}

pub struct FaultUpstream {
    pub addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FaultUpstream {
    /// Starts on a free loopback port; keys without a profile use `default`.
    pub async fn start(seed: u64, default: Profile) -> FaultUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fault upstream");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            profiles: Mutex::new(HashMap::new()),
            default: Mutex::new(default),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            served: Mutex::new(Vec::new()),
            open_bodies: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let s = s.clone();
                tokio::spawn(async move {
                    s.connections.fetch_add(1, Ordering::Relaxed);
                    let svc = service_fn({
                        let s = s.clone();
                        move |req| handle(req, s.clone())
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                    s.connections.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        FaultUpstream { addr, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_profile(&self, key: &str, profile: Profile) {
        self.shared
            .profiles
            .lock()
            .unwrap()
            .insert(key.to_string(), profile);
    }

    /// Everything answered so far, in order.
    pub fn served(&self) -> Vec<Served> {
        self.shared.served.lock().unwrap().clone()
    }

    pub fn served_by(&self, key: &str) -> Vec<Served> {
        self.served().into_iter().filter(|s| s.key == key).collect()
    }

    /// Answer bodies the upstream is still sending.
    pub fn open_bodies(&self) -> u64 {
        self.shared.open_bodies.load(Ordering::SeqCst)
    }

    /// Answer bodies the daemon dropped before their end.
    pub fn abandoned(&self) -> u64 {
        self.shared.abandoned.load(Ordering::SeqCst)
    }

    /// TCP connections from the daemon currently open.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FaultUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type UpBody = BoxBody<Bytes, io::Error>;

/// What the request asked for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Generate,
    NativeSse,
    NativeArray,
    Models,
    Chat,
    ChatStream { usage: bool },
}

fn kind_of(path: &str, query: &str, body: &[u8]) -> Kind {
    if path.ends_with("/chat/completions") {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        if v["stream"] == json!(true) {
            let usage = v["stream_options"]["include_usage"] == json!(true);
            return Kind::ChatStream { usage };
        }
        return Kind::Chat;
    }
    if path.ends_with(":streamGenerateContent") {
        let sse = query.split('&').any(|p| p == "alt=sse" || p == "$alt=sse");
        return if sse {
            Kind::NativeSse
        } else {
            Kind::NativeArray
        };
    }
    if path.contains(':') {
        Kind::Generate
    } else {
        Kind::Models
    }
}

fn key_of(req: &Request<Incoming>) -> String {
    let h = req.headers();
    if let Some(k) = h.get("x-goog-api-key").and_then(|v| v.to_str().ok()) {
        return k.to_string();
    }
    h.get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("<none>")
        .to_string()
}

fn model_of(path: &str, body: &[u8]) -> String {
    if let Some(rest) = path.split("/models/").nth(1) {
        return rest.split(':').next().unwrap_or("").to_string();
    }
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    v["model"].as_str().unwrap_or("").to_string()
}

async fn handle(req: Request<Incoming>, s: Arc<Shared>) -> Result<Response<UpBody>, io::Error> {
    let key = key_of(&req);
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let body = req.into_body().collect().await.map_err(io::Error::other)?;
    let body = body.to_bytes();
    let kind = kind_of(&path, &query, &body);
    let profile = {
        let p = s.profiles.lock().unwrap();
        p.get(&key)
            .cloned()
            .unwrap_or_else(|| s.default.lock().unwrap().clone())
    };
    let fault = if kind == Kind::Models {
        // Key checks: a broken key stays broken, anything else is fine.
        match profile.always_status() {
            Some(st) => Fault::Status(st),
            None => Fault::Ok,
        }
    } else {
        profile.draw(&mut s.rng.lock().unwrap())
    };
    let stream = matches!(
        kind,
        Kind::NativeSse | Kind::NativeArray | Kind::ChatStream { .. }
    );
    s.served.lock().unwrap().push(Served {
        at: Instant::now(),
        key,
        model: model_of(&path, &body),
        path,
        stream,
        fault: fault.clone(),
    });
    if !profile.latency.is_zero() {
        tokio::time::sleep(profile.latency).await;
    }
    answer(kind, &fault, &profile, &s)
}

fn answer(
    kind: Kind,
    fault: &Fault,
    profile: &Profile,
    s: &Arc<Shared>,
) -> Result<Response<UpBody>, io::Error> {
    let openai = matches!(kind, Kind::Chat | Kind::ChatStream { .. });
    match fault {
        Fault::Reset => Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "scripted reset",
        )),
        Fault::Status(st) => Ok(whole(*st, JSON, google_error(*st, profile, openai))),
        Fault::InvalidArgument => Ok(whole(400, JSON, google_error(400, profile, openai))),
        Fault::WrongContentType => Ok(whole(
            200,
            "text/html; charset=utf-8",
            Bytes::from_static(b"<html><body>Service Temporarily Unavailable</body></html>"),
        )),
        _ => Ok(body_answer(kind, fault, s)),
    }
}

const JSON: &str = "application/json; charset=UTF-8";

/// A body that is not JSON, sent with a JSON content type.
pub const MALFORMED: &str = "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"oops";

/// The pieces of a normal answer, split where a stream has its events.
fn pieces(kind: Kind) -> (Vec<Bytes>, &'static str) {
    let events: Vec<Value> = (0..3)
        .map(|i| native_chunk(&format!("part {i} "), i == 2))
        .collect();
    match kind {
        Kind::Generate => (vec![Bytes::from(events[2].to_string())], JSON),
        Kind::Models => (
            vec![Bytes::from(
                json!({"models":[{"name":"models/gemini-2.5-flash"}]}).to_string(),
            )],
            JSON,
        ),
        Kind::NativeSse => (
            events
                .iter()
                .map(|e| Bytes::from(format!("data: {e}\r\n\r\n")))
                .collect(),
            "text/event-stream",
        ),
        Kind::NativeArray => {
            let mut out: Vec<Bytes> = events
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    Bytes::from(if i == 0 {
                        format!("[{e}")
                    } else {
                        format!("\r\n,{e}")
                    })
                })
                .collect();
            out.push(Bytes::from_static(b"]"));
            (out, JSON)
        }
        Kind::Chat => (vec![Bytes::from(openai_completion().to_string())], JSON),
        Kind::ChatStream { usage } => {
            let mut out: Vec<Bytes> = (0..3)
                .map(|i| {
                    let finish = if i == 2 { json!("stop") } else { Value::Null };
                    let c = json!({"id":"fake","object":"chat.completion.chunk","created":1,
                        "model":"gemini-2.5-flash","choices":[{"index":0,
                        "delta":{"role":"assistant","content":format!("part {i} ")},
                        "finish_reason":finish}]});
                    Bytes::from(format!("data: {c}\n\n"))
                })
                .collect();
            if usage {
                let u = json!({"id":"fake","object":"chat.completion.chunk","created":1,
                    "model":"gemini-2.5-flash","choices":[],
                    "usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}});
                out.push(Bytes::from(format!("data: {u}\n\n")));
            }
            out.push(Bytes::from_static(b"data: [DONE]\n\n"));
            (out, "text/event-stream")
        }
    }
}

fn body_answer(kind: Kind, fault: &Fault, s: &Arc<Shared>) -> Response<UpBody> {
    let (mut parts, ctype) = pieces(kind);
    let stream = parts.len() > 1;
    let mut end = End::Clean;
    let mut gap = Duration::ZERO;
    match fault {
        Fault::Cut(n) if stream => {
            parts.truncate((*n).min(parts.len() - 1));
            end = End::Cut;
        }
        Fault::Cut(_) => {
            let b = parts[0].clone();
            parts = vec![b.slice(..b.len() / 2)];
            end = End::Cut;
        }
        Fault::Stall(n) if stream => {
            parts.truncate((*n).min(parts.len() - 1));
            end = End::Stall;
        }
        Fault::Stall(_) => {
            parts.clear();
            end = End::Stall;
        }
        Fault::Trickle(d) => {
            let all: Vec<u8> = parts.concat();
            parts = all.chunks(7).map(Bytes::copy_from_slice).collect();
            gap = *d;
        }
        Fault::Malformed if stream => {
            let bad = match kind {
                Kind::NativeArray => format!("\r\n,{MALFORMED}}}"),
                Kind::ChatStream { .. } => format!("data: {MALFORMED}\n\n"),
                _ => format!("data: {MALFORMED}\r\n\r\n"),
            };
            parts.insert(1, Bytes::from(bad));
        }
        Fault::Malformed => parts = vec![Bytes::from_static(MALFORMED.as_bytes())],
        _ => {}
    }
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        for p in parts {
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            if tx.send(Ok(Frame::data(p))).await.is_err() {
                return;
            }
        }
        match end {
            End::Clean => {}
            End::Cut => {
                let _ = tx.send(Err(io::Error::other("scripted cut"))).await;
            }
            // Holds the channel open until the daemon drops the body.
            End::Stall => tx.closed().await,
        }
    });
    s.open_bodies.fetch_add(1, Ordering::SeqCst);
    let body = TrackedBody {
        rx,
        shared: s.clone(),
        finished: false,
    };
    Response::builder()
        .status(200)
        .header("content-type", ctype)
        .body(body.boxed())
        .unwrap()
}

enum End {
    Clean,
    Cut,
    Stall,
}

fn whole(status: u16, ctype: &str, body: Bytes) -> Response<UpBody> {
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(body).map_err(|e: Infallible| match e {}).boxed())
        .unwrap()
}

/// Google's error body for `status`; the OpenAI-compatible layer wraps it in a list.
fn google_error(status: u16, profile: &Profile, openai: bool) -> Bytes {
    let (code_status, message, details) = match status {
        400 => (
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            json!([{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID",
                "domain":"googleapis.com"}]),
        ),
        401 => (
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            Value::Null,
        ),
        403 => (
            "PERMISSION_DENIED",
            "Permission denied: Consumer 'projects/1' has been suspended.",
            json!([{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"CONSUMER_SUSPENDED",
                "domain":"googleapis.com"}]),
        ),
        404 => (
            "NOT_FOUND",
            "models/x is not found for API version v1beta.",
            Value::Null,
        ),
        429 => (
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota, please check your plan and billing details.",
            json!([{"@type":"type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": profile.retry_delay}]),
        ),
        503 => (
            "UNAVAILABLE",
            "The model is overloaded. Please try again later.",
            Value::Null,
        ),
        _ => ("INTERNAL", "An internal error has occurred.", Value::Null),
    };
    let mut error = json!({"code": status, "message": message, "status": code_status});
    if !details.is_null() {
        error["details"] = details;
    }
    if status == 400 && profile.always_status() != Some(400) {
        // A 400 drawn at random is the client's fault, not a dead key.
        error = json!({"code": 400, "message": "* contents is not specified", "status": "INVALID_ARGUMENT"});
    }
    let v = if openai {
        json!([{ "error": error }])
    } else {
        json!({ "error": error })
    };
    Bytes::from(serde_json::to_string_pretty(&v).unwrap() + "\n")
}

/// A `GenerateContentResponse` chunk with usage (5 prompt + 7 candidates = 12 tokens).
pub fn native_chunk(text: &str, last: bool) -> Value {
    let mut candidate = json!({"content":{"parts":[{"text":text}],"role":"model"},"index":0});
    if last {
        candidate["finishReason"] = json!("STOP");
    }
    json!({
        "candidates": [candidate],
        "usageMetadata": {"promptTokenCount":5,"candidatesTokenCount":7,"totalTokenCount":12},
        "modelVersion": "gemini-2.5-flash"
    })
}

fn openai_completion() -> Value {
    json!({"id":"fake","object":"chat.completion","created":1,"model":"gemini-2.5-flash",
        "choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],
        "usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}})
}

/// A body fed from a channel (an `Err` aborts the connection mid-body) that reports when
/// the daemon drops it before its end.
struct TrackedBody {
    rx: mpsc::Receiver<Result<Frame<Bytes>, io::Error>>,
    shared: Arc<Shared>,
    finished: bool,
}

impl Body for TrackedBody {
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

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.shared.open_bodies.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            self.shared.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}
