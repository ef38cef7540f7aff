//! Minimal HTTP client for tests (hyper-util's legacy client): whole responses, or a stream
//! that hands body chunks over as they arrive. Every wait is bounded by `TIMEOUT`.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Upper bound for any single wait on the daemon; a hang fails the test instead of blocking it.
pub const TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Set when the body did not end cleanly (connection cut, protocol error).
    pub body_error: Option<String>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        header(&self.headers, name)
    }
}

/// A response whose body is read incrementally.
pub struct Stream {
    pub status: u16,
    pub headers: HeaderMap,
    body: Incoming,
    /// Everything received so far.
    pub received: Vec<u8>,
    pub error: Option<String>,
    done: bool,
}

impl Stream {
    pub fn header(&self, name: &str) -> Option<String> {
        header(&self.headers, name)
    }

    /// Next data chunk; `None` at the end of the body or on error (kept in `self.error`).
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        while !self.done {
            match tokio::time::timeout(TIMEOUT, self.body.frame()).await {
                Err(_) => panic!(
                    "no body chunk within {TIMEOUT:?}; received so far: {:?}",
                    String::from_utf8_lossy(&self.received)
                ),
                Ok(None) => self.done = true,
                Ok(Some(Err(e))) => {
                    self.error = Some(e.to_string());
                    self.done = true;
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.received.extend_from_slice(&data);
                        return Some(data);
                    }
                }
            }
        }
        None
    }

    /// Reads until `pred(everything received so far)` holds; panics (with `what`) if the body
    /// ends or stalls first. Returns everything received so far.
    pub async fn read_until(&mut self, what: &str, pred: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while !pred(&self.received) {
            let next = tokio::time::timeout_at(deadline, self.next_chunk()).await;
            match next {
                Err(_) => panic!(
                    "timed out waiting for {what}; received so far: {:?}",
                    String::from_utf8_lossy(&self.received)
                ),
                Ok(None) => panic!(
                    "body ended (error: {:?}) before {what}; received: {:?}",
                    self.error,
                    String::from_utf8_lossy(&self.received)
                ),
                Ok(Some(_)) => {}
            }
        }
        self.received.clone()
    }

    /// Reads the rest; the returned body holds everything received, from the first byte.
    pub async fn read_to_end(mut self) -> Response {
        while self.next_chunk().await.is_some() {}
        Response {
            status: self.status,
            headers: self.headers,
            body: Bytes::from(self.received),
            body_error: self.error,
        }
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request and returns as soon as the response head arrives.
/// A non-empty body gets `content-type: application/json` unless `headers` set one.
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Stream {
    let body: Bytes = body.into();
    let mut req = Request::builder().method(method.clone()).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let has_ct = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    if !body.is_empty() && !has_ct {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Full::new(body)).expect("build request");
    let resp = tokio::time::timeout(TIMEOUT, client().request(req))
        .await
        .unwrap_or_else(|_| panic!("{method} {url}: no response head within {TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{method} {url}: {e:?}"));
    let (parts, body) = resp.into_parts();
    Stream {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
        received: Vec::new(),
        error: None,
        done: false,
    }
}

pub async fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response {
    send(method, url, headers, body).await.read_to_end().await
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Response {
    request(Method::GET, url, headers, Bytes::new()).await
}

pub async fn post(url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response {
    request(Method::POST, url, headers, body).await
}

pub async fn post_stream(url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Stream {
    send(Method::POST, url, headers, body).await
}
