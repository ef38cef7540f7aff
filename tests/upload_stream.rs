//! A 1 GiB file through the Files API's resumable upload: the bytes stream from the client
//! through the gateway to Google as they arrive, so the daemon's memory stays flat.
//!
//! The upstream here is a small hyper server of the test's own rather than the scripted
//! fake (which records whole bodies): it answers `start` with an absolute upload URL, as
//! Google does, and counts the bytes of the `upload, finalize` request without keeping them.

mod common;

use bytes::Bytes;
use common::{Config, Daemon, USER_KEY, keys};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;

const CHUNK: usize = 1 << 20;
const CHUNKS: u64 = 1024;
const TOTAL: u64 = CHUNK as u64 * CHUNKS;

/// Answers the upload protocol; `received` counts the bytes of the finalizing request.
async fn google(received: Arc<AtomicU64>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let received = received.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| answer(req, received.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

async fn answer(
    req: Request<Incoming>,
    received: Arc<AtomicU64>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let host = req.headers()["host"].to_str().unwrap().to_owned();
    let command = req
        .headers()
        .get("x-goog-upload-command")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut body = req.into_body();
    if command == "start" {
        while body.frame().await.is_some() {}
        let url =
            format!("http://{host}/upload/v1beta/files?upload_id=BIG&upload_protocol=resumable");
        return Ok(Response::builder()
            .header("x-goog-upload-url", url)
            .header("x-goog-upload-status", "active")
            .body(Full::default())
            .unwrap());
    }
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            received.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
    }
    let n = received.load(Ordering::Relaxed);
    let file = format!(
        r#"{{"file":{{"name":"files/big","sizeBytes":"{n}","state":"ACTIVE","mimeType":"video/mp4"}}}}"#
    );
    Ok(Response::builder()
        .header("x-goog-upload-status", "final")
        .header("content-type", "application/json; charset=UTF-8")
        .body(Full::new(Bytes::from(file)))
        .unwrap())
}

/// `CHUNKS` chunks of `CHUNK` bytes, made as they are sent.
struct Repeat {
    chunk: Bytes,
    left: u64,
}

impl http_body::Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gib_upload_streams_through_with_flat_memory() {
    let received = Arc::new(AtomicU64::new(0));
    let url = google(received.clone()).await;
    let d = Daemon::start(&Config::with_url(&url).keys(keys(2))).await;

    let len = TOTAL.to_string();
    let start = common::client::post(
        &d.url("/upload/v1beta/files"),
        &[
            ("x-goog-api-key", USER_KEY),
            ("x-goog-upload-protocol", "resumable"),
            ("x-goog-upload-command", "start"),
            ("x-goog-upload-header-content-length", len.as_str()),
            ("x-goog-upload-header-content-type", "video/mp4"),
        ],
        r#"{"file":{"display_name":"big"}}"#,
    )
    .await;
    assert_eq!(start.status, 200, "{}", start.text());
    let upload_url = start.header("x-goog-upload-url").expect("an upload URL");
    assert!(upload_url.starts_with(&d.url("/upload/")), "{upload_url}");

    let idle = rss_kib(d.pid());
    let (pid, peak) = (d.pid(), Arc::new(AtomicU64::new(idle)));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let chunks = Repeat {
        chunk: Bytes::from(vec![b'v'; CHUNK]),
        left: CHUNKS,
    };
    let req = Request::post(&upload_url)
        .header("x-goog-upload-command", "upload, finalize")
        .header("x-goog-upload-offset", "0")
        .header("content-length", len.as_str())
        .body(chunks)
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http();
    let resp = tokio::time::timeout(Duration::from_secs(300), client.request(req))
        .await
        .expect("the upload finishes")
        .expect("an answer");
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    sampler.abort();

    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        received.load(Ordering::Relaxed),
        TOTAL,
        "every byte reached Google"
    );
    let file: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(file["file"]["sizeBytes"], TOTAL.to_string());
    let grown_mib = peak.load(Ordering::Relaxed).saturating_sub(idle) / 1024;
    assert!(
        grown_mib < 64,
        "the daemon grew by {grown_mib} MiB while 1 GiB passed through"
    );
}
