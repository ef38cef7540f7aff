//! The soak's HTTP client: one pooled hyper-util client, whole answers for the admin API,
//! and `exchange` for proxy calls, which reads the answer frame by frame and can leave
//! after the first chunk (a client that vanishes mid-stream).

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type Client = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http()
}

pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

fn build(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> anyhow::Result<Request<Full<Bytes>>> {
    let body: Bytes = body.into();
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    Ok(req.body(Full::new(body))?)
}

/// A whole answer (admin API).
pub async fn call(
    client: &Client,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> anyhow::Result<Answer> {
    let resp = client.request(build(method, url, headers, body)?).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Answer { status, body })
}

/// A proxy call: (status, x-request-id, body so far, body aborted, left early).
/// With `leave`, a 200 answer is dropped after its first chunk.
pub async fn exchange(
    client: &Client,
    url: &str,
    headers: &[(&str, &str)],
    body: String,
    leave: bool,
) -> anyhow::Result<(u16, Option<String>, Vec<u8>, bool, bool)> {
    let resp = client.request(build("POST", url, headers, body)?).await?;
    let status = resp.status().as_u16();
    let id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = resp.into_body();
    let mut got = Vec::new();
    loop {
        match body.frame().await {
            None => return Ok((status, id, got, false, false)),
            Some(Err(_)) => return Ok((status, id, got, true, false)),
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    got.extend_from_slice(&d);
                    if leave && status == 200 && !d.is_empty() {
                        return Ok((status, id, got, false, true));
                    }
                }
            }
        }
    }
}
