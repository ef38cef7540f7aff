//! Fake Gemini upstream: a hyper server on `127.0.0.1:0` that records every request it receives
//! and answers from a per-test script, in Google's wire format (error bodies, JSON, SSE and
//! JSON-array streams, gated, paced or stalled chunks, cut connections, resets before
//! headers, answers after a delay). It counts the connections the daemon holds open and the
//! streamed answers still being sent or dropped before their end, so a test can see that a
//! cancelled client request closed the upstream connection too; the fault profiles of
//! `faults.rs` script it. It knows nothing about the daemon; tests assert on what it
//! recorded. Self-contained (only crates and its own files): the soak example includes it.
//!
//! `reply` holds the scripts' vocabulary (answers, streams, Google's and OpenAI's canned
//! bodies), `bodies` the streamed answer bodies it sends, this file the server and what it
//! recorded.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

mod bodies;
mod reply;

pub use reply::*;

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
        Reply::Stream(st) => Ok(bodies::stream_response(st, &s)),
        Reply::Raw(raw) => Ok(bodies::raw_stream_response(raw, &s)),
        Reply::Trickle { head, every } => Ok(bodies::trickle_response(head, every, &s)),
        Reply::Reset => Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "scripted reset",
        )),
        Reply::Delayed(..) => unreachable!("unwrapped above"),
    }
}
