//! Fault profiles for the fake Gemini upstream ([`super::upstream`]): a script that answers
//! native (`generateContent`, `streamGenerateContent` as SSE or JSON array, `GET models`) and
//! OpenAI-compatible (`chat/completions`, streamed or not) requests, and misbehaves on purpose
//! according to a per-key [`Profile`]: latency, error statuses in Google's shape, connection
//! resets before headers, cuts mid-stream, stalls, slow trickle, malformed JSON, wrong
//! content type. Faults are drawn from a seeded generator, so a run is repeatable.
//!
//! It records which fault each answer got; the upstream counts open and abandoned answer
//! bodies and connections. The soak example includes this file and `upstream.rs` with
//! `#[path]`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::upstream::{RawStream, Recorded, Reply, Upstream};

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

struct Script {
    profiles: Mutex<HashMap<String, Profile>>,
    default: Profile,
    rng: Mutex<StdRng>,
    served: Mutex<Vec<Served>>,
}

/// The fake upstream scripted by fault profiles.
pub struct FaultUpstream {
    pub addr: std::net::SocketAddr,
    upstream: Upstream,
    script: Arc<Script>,
}

impl FaultUpstream {
    /// Starts on a free loopback port; keys without a profile use `default`.
    pub async fn start(seed: u64, default: Profile) -> FaultUpstream {
        let script = Arc::new(Script {
            profiles: Mutex::new(HashMap::new()),
            default,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            served: Mutex::new(Vec::new()),
        });
        let s = script.clone();
        let upstream = Upstream::start(move |r| s.answer(r)).await;
        FaultUpstream {
            addr: upstream.addr,
            upstream,
            script,
        }
    }

    pub fn url(&self) -> String {
        self.upstream.url()
    }

    pub fn set_profile(&self, key: &str, profile: Profile) {
        self.script
            .profiles
            .lock()
            .unwrap()
            .insert(key.to_string(), profile);
    }

    /// Everything answered so far, in order.
    pub fn served(&self) -> Vec<Served> {
        self.script.served.lock().unwrap().clone()
    }

    pub fn served_by(&self, key: &str) -> Vec<Served> {
        self.served().into_iter().filter(|s| s.key == key).collect()
    }

    /// Answer bodies the upstream is still sending.
    pub fn open_bodies(&self) -> u64 {
        self.upstream.open_bodies()
    }

    /// Answer bodies the daemon dropped before their end.
    pub fn abandoned(&self) -> u64 {
        self.upstream.abandoned()
    }

    /// TCP connections from the daemon currently open.
    pub fn connections(&self) -> u64 {
        self.upstream.connections()
    }
}

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

fn model_of(path: &str, body: &[u8]) -> String {
    if let Some(rest) = path.split("/models/").nth(1) {
        return rest.split(':').next().unwrap_or("").to_string();
    }
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    v["model"].as_str().unwrap_or("").to_string()
}

impl Script {
    /// Draws this request's fault from its key's profile, records it, and scripts the reply.
    fn answer(&self, r: &Recorded) -> Reply {
        let key = r.key().or(r.bearer()).unwrap_or("<none>").to_string();
        let kind = kind_of(&r.path, r.query.as_deref().unwrap_or(""), &r.body);
        let profile = {
            let p = self.profiles.lock().unwrap();
            p.get(&key).unwrap_or(&self.default).clone()
        };
        let fault = if kind == Kind::Models {
            // Key checks: a broken key stays broken, anything else is fine.
            match profile.always_status() {
                Some(st) => Fault::Status(st),
                None => Fault::Ok,
            }
        } else {
            profile.draw(&mut self.rng.lock().unwrap())
        };
        let stream = matches!(
            kind,
            Kind::NativeSse | Kind::NativeArray | Kind::ChatStream { .. }
        );
        self.served.lock().unwrap().push(Served {
            at: Instant::now(),
            key,
            model: model_of(&r.path, &r.body),
            path: r.path.clone(),
            stream,
            fault: fault.clone(),
        });
        reply(kind, &fault, &profile).after(profile.latency)
    }
}

fn reply(kind: Kind, fault: &Fault, profile: &Profile) -> Reply {
    let openai = matches!(kind, Kind::Chat | Kind::ChatStream { .. });
    match fault {
        Fault::Reset => Reply::Reset,
        Fault::Status(st) => Reply::raw(*st, google_error(*st, profile, openai)),
        Fault::InvalidArgument => Reply::raw(400, google_error(400, profile, openai)),
        Fault::WrongContentType => Reply::WithHeaders {
            status: 200,
            headers: vec![("content-type".into(), "text/html; charset=utf-8".into())],
            body: Bytes::from_static(b"<html><body>Service Temporarily Unavailable</body></html>"),
        },
        _ => body_reply(kind, fault),
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

/// A 200 answer in the request's format, with the fault applied to its pieces.
fn body_reply(kind: Kind, fault: &Fault) -> Reply {
    let (mut parts, ctype) = pieces(kind);
    let stream = parts.len() > 1;
    let mut gap = Duration::ZERO;
    let (mut cut, mut stall) = (false, false);
    match fault {
        Fault::Cut(n) if stream => {
            parts.truncate((*n).min(parts.len() - 1));
            cut = true;
        }
        Fault::Cut(_) => {
            let b = parts[0].clone();
            parts = vec![b.slice(..b.len() / 2)];
            cut = true;
        }
        Fault::Stall(n) if stream => {
            parts.truncate((*n).min(parts.len() - 1));
            stall = true;
        }
        Fault::Stall(_) => {
            parts.clear();
            stall = true;
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
    let n = parts.len();
    let mut raw = RawStream::new(ctype, parts).every(gap);
    if cut {
        raw = raw.cut_after(n);
    }
    if stall {
        raw = raw.stall_after(n);
    }
    raw.into()
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
