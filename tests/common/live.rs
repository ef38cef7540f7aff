//! A fake Google for the Live API: an HTTP/1.1 server on `127.0.0.1:0` that takes
//! WebSocket upgrades at `/ws/google.ai.generativelanguage.{v}.GenerativeService.…` and
//! mints ephemeral tokens at `POST /v1alpha/auth_tokens`. It behaves as Google does where
//! the gateway cares:
//! - the key comes in `x-goog-api-key` (a token in `Authorization: Token`, and only on
//!   the Constrained method, for the key that minted it);
//! - the first message must be `setup`; a good one is answered `setupComplete`;
//! - a bad key is closed after setup with 1007 "API key not valid…", a cooling key with
//!   1011 "You exceeded your current quota…", a key listed as refusing the upgrade gets
//!   HTTP 400 with Google's `API_KEY_INVALID` body;
//! - a text turn (`clientContent`) is answered with `serverContent` parts (the text
//!   echoed), then `turnComplete` with `usageMetadata` (10 prompt + 5 response tokens);
//! - `realtimeInput` audio is answered with audio chunks (`inlineData`, one per 1 KiB of
//!   the base64 it came with: the same bytes back, as a loopback);
//! - the text `goaway` is answered with `goAway`, `close 1011 why` with that close.
//!
//! Google sends its messages as binary frames holding JSON; so does this fake.
//! It records each session (key, setup) and counts the sessions open.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

pub const INVALID_REASON: &str = "API key not valid. Please pass a valid API key.";
/// Google's quota message cut to the 123 bytes a close frame's reason can hold, as
/// Google sends it.
pub const QUOTA_REASON: &str = "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: h";

/// One session as the fake saw it.
#[derive(Clone, Debug)]
pub struct Session {
    pub path: String,
    pub query: Option<String>,
    /// The pool key it came with (`x-goog-api-key`), or the key of its token.
    pub key: Option<String>,
    /// The token it came with (`Authorization: Token …`).
    pub token: Option<String>,
    /// Its `Authorization` header as it came.
    pub authorization: Option<String>,
    pub setup: Option<Value>,
    /// Whether it was refused (after setup, or at the upgrade).
    pub refused: bool,
    /// The close the gateway sent it: (code, reason).
    pub closed_with: Option<(u16, String)>,
}

#[derive(Default)]
struct State {
    invalid: HashSet<String>,
    cooling: HashSet<String>,
    refuse_upgrade: HashSet<String>,
    tokens: HashMap<String, String>,
    sessions: Vec<Session>,
}

#[derive(Clone, Default)]
pub struct FakeLive {
    state: Arc<Mutex<State>>,
    open: Arc<AtomicUsize>,
    addr: Option<SocketAddr>,
}

impl FakeLive {
    pub async fn start() -> FakeLive {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = FakeLive {
            addr: Some(listener.local_addr().unwrap()),
            ..FakeLive::default()
        };
        let me = fake.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let me = me.clone();
                        async move { Ok::<_, Infallible>(me.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        fake
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr.unwrap())
    }

    /// Keys Google says are not valid (closed 1007 after setup).
    pub fn invalid(&self, key: &str) {
        self.lock().invalid.insert(key.to_owned());
    }

    /// Keys out of quota (closed 1011 after setup).
    pub fn cooling(&self, key: &str) {
        self.lock().cooling.insert(key.to_owned());
    }

    /// Keys whose upgrade is refused with HTTP 400 `API_KEY_INVALID`.
    pub fn refuse_upgrade(&self, key: &str) {
        self.lock().refuse_upgrade.insert(key.to_owned());
    }

    pub fn sessions(&self) -> Vec<Session> {
        self.lock().sessions.clone()
    }

    /// The key a token was minted with.
    pub fn token_key(&self, token: &str) -> Option<String> {
        self.lock().tokens.get(token).cloned()
    }

    /// Sessions open right now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    async fn answer(&self, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let key = header(&req, "x-goog-api-key");
        if path == "/v1alpha/auth_tokens" && req.method() == http::Method::POST {
            let _ = req.body_mut().collect().await;
            let name = format!("auth_tokens/fake{}", rand_suffix());
            if let Some(k) = key {
                self.lock().tokens.insert(name.clone(), k);
            }
            return json_response(StatusCode::OK, json!({ "name": name }));
        }
        if !path.starts_with("/ws/") {
            return json_response(
                StatusCode::NOT_FOUND,
                json!({"error": {"code": 404, "message": "no such method", "status": "NOT_FOUND"}}),
            );
        }
        let authorization = header(&req, "authorization");
        let token = authorization
            .as_deref()
            .and_then(|v| v.strip_prefix("Token ").map(str::to_owned));
        let key = match &token {
            Some(t) if path.ends_with("Constrained") => self.lock().tokens.get(t).cloned(),
            Some(_) => None,
            None => key,
        };
        let mut session = Session {
            path,
            query: req.uri().query().map(str::to_owned),
            key: key.clone(),
            token,
            authorization,
            setup: None,
            refused: false,
            closed_with: None,
        };
        let refuse = key
            .as_ref()
            .is_none_or(|k| self.lock().refuse_upgrade.contains(k));
        let ws_key = req.headers().get("sec-websocket-key").cloned();
        if refuse || ws_key.is_none() {
            session.refused = true;
            self.lock().sessions.push(session);
            let body = json!({"error": {"code": 400, "message": INVALID_REASON, "status": "INVALID_ARGUMENT",
                "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]}});
            return json_response(StatusCode::BAD_REQUEST, body);
        }
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(
            ws_key.unwrap().as_bytes(),
        );
        let upgrade = hyper::upgrade::on(&mut req);
        let me = self.clone();
        tokio::spawn(async move {
            if let Ok(io) = upgrade.await {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None).await;
                me.open.fetch_add(1, Ordering::SeqCst);
                me.session(ws, session).await;
                me.open.fetch_sub(1, Ordering::SeqCst);
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-accept", accept)
            .body(Full::default())
            .unwrap()
    }

    async fn session(
        &self,
        mut ws: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
        mut s: Session,
    ) {
        let Some(Ok(first)) = ws.next().await else {
            return;
        };
        let setup: Option<Value> = serde_json::from_slice(&first.into_data()).ok();
        s.setup = setup.clone();
        let key = s.key.clone().unwrap_or_default();
        let (invalid, cooling) = {
            let st = self.lock();
            (st.invalid.contains(&key), st.cooling.contains(&key))
        };
        let refusal = match () {
            _ if setup.as_ref().is_none_or(|v| v.get("setup").is_none()) => {
                Some((1007, "Request contains an invalid argument."))
            }
            _ if invalid => Some((1007, INVALID_REASON)),
            _ if cooling => Some((1011, QUOTA_REASON)),
            _ => None,
        };
        s.refused = refusal.is_some();
        let at = {
            let mut st = self.lock();
            st.sessions.push(s);
            st.sessions.len() - 1
        };
        if let Some((code, why)) = refusal {
            let _ = ws.close(Some(close(code, why))).await;
            while let Some(Ok(_)) = ws.next().await {}
            return;
        }
        let _ = ws.send(google(json!({"setupComplete": {}}))).await;
        while let Some(msg) = ws.next().await {
            let Ok(msg) = msg else { return };
            if let Message::Close(f) = msg {
                let f = f.map(|f| (u16::from(f.code), f.reason.to_string()));
                self.lock().sessions[at].closed_with = f;
                while let Some(Ok(_)) = ws.next().await {}
                return;
            }
            let data = msg.into_data();
            for reply in replies(&data) {
                if ws.send(reply).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Google's answers to one client message.
fn replies(data: &[u8]) -> Vec<Message> {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return Vec::new();
    };
    // Google reads protobuf JSON: either spelling of a field (google-genai sends
    // `client_content`, the JS SDK `clientContent`).
    let field = |camel: &str, snake: &str| v.get(camel).or_else(|| v.get(snake)).cloned();
    let content = field("clientContent", "client_content").unwrap_or_default();
    let realtime = field("realtimeInput", "realtime_input").unwrap_or_default();
    if let Some(text) = content
        .pointer("/turns/0/parts/0/text")
        .and_then(Value::as_str)
    {
        if text == "goaway" {
            return vec![google(json!({"goAway": {"timeLeft": "5s"}}))];
        }
        if let Some(rest) = text.strip_prefix("close ") {
            let (code, why) = rest.split_once(' ').unwrap_or((rest, ""));
            return vec![Message::Close(Some(close(
                code.parse().unwrap_or(1011),
                why,
            )))];
        }
        return vec![
            google(
                json!({"serverContent": {"modelTurn": {"parts": [{"text": format!("echo: {text}")}]}}}),
            ),
            google(json!({"serverContent": {"generationComplete": true}})),
            google(json!({"serverContent": {"turnComplete": true},
                "usageMetadata": {"promptTokenCount": 10, "responseTokenCount": 5, "totalTokenCount": 15,
                    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 10}]}})),
        ];
    }
    if let Some(audio) = realtime.pointer("/audio/data").and_then(Value::as_str) {
        return audio
            .as_bytes()
            .chunks(1024)
            .map(|c| {
                let data = String::from_utf8_lossy(c);
                google(json!({"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": data}}]}}}))
            })
            .collect();
    }
    Vec::new()
}

/// A message as Google sends it: JSON in a binary frame.
fn google(v: Value) -> Message {
    Message::Binary(Bytes::from(v.to_string()))
}

fn close(code: u16, why: &str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(code),
        reason: why.to_owned().into(),
    }
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers().get(name)?.to_str().ok().map(str::to_owned)
}

fn json_response(status: StatusCode, v: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=UTF-8")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

fn rand_suffix() -> String {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{n:08}{:x}", std::process::id())
}
