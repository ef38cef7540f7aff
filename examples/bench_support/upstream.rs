//! The fast fake Gemini upstream the benchmark proxies to: hyper 1 on a multi-thread tokio
//! runtime, answering every route the scenarios use with small, realistic, fixed bodies.
//! It ignores keys and never fails, so what is measured is the daemon, not the upstream.
//! It runs as its own process (`bench upstream`) so its CPU is accounted apart from the
//! harness. It must not do anything per request beyond reading the body and writing the answer.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// A `generateContent` answer as Google sends it (about 600 bytes).
const GENERATE: &str = r#"{
  "candidates": [
    {
      "content": {
        "parts": [
          {
            "text": "Hello! How can I help you today? I can answer questions, write and edit text, summarise documents, translate between languages, or help you think a problem through."
          }
        ],
        "role": "model"
      },
      "finishReason": "STOP",
      "index": 0
    }
  ],
  "usageMetadata": {
    "promptTokenCount": 2,
    "candidatesTokenCount": 37,
    "totalTokenCount": 39,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 2}]
  },
  "modelVersion": "gemini-2.5-flash",
  "responseId": "bench-0123456789abcdef"
}"#;

/// One chunk of a `streamGenerateContent` answer; the last one carries `finishReason`.
fn stream_chunk(i: usize, last: bool) -> String {
    let finish = if last {
        r#","finishReason":"STOP""#
    } else {
        ""
    };
    format!(
        r#"{{"candidates":[{{"content":{{"parts":[{{"text":"chunk {i} of the answer, a few words long. "}}],"role":"model"}}{finish},"index":0}}],"usageMetadata":{{"promptTokenCount":2,"candidatesTokenCount":{},"totalTokenCount":{}}},"modelVersion":"gemini-2.5-flash","responseId":"bench-stream"}}"#,
        (i + 1) * 9,
        (i + 1) * 9 + 2
    )
}

const CHAT: &str = r#"{"id":"bench-chat","object":"chat.completion","created":1750000000,"model":"gemini-2.5-flash","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today? I can answer questions, write and edit text, or summarise documents."},"finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":25,"total_tokens":27}}"#;

fn chat_chunk(i: usize) -> String {
    format!(
        r#"{{"id":"bench-chat","object":"chat.completion.chunk","created":1750000000,"model":"gemini-2.5-flash","choices":[{{"index":0,"delta":{{"role":"assistant","content":"chunk {i} of the answer. "}}}}]}}"#
    )
}

const CHAT_USAGE: &str = r#"{"id":"bench-chat","object":"chat.completion.chunk","created":1750000000,"model":"gemini-2.5-flash","choices":[],"usage":{"prompt_tokens":2,"completion_tokens":50,"total_tokens":52}}"#;

/// Chunks of a streamed answer: each one a separate body frame, so the daemon relays chunks.
pub struct Chunks {
    frames: std::vec::IntoIter<Bytes>,
    /// After the frames, stay open forever (the slow-stream scenario).
    hold: bool,
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.frames.next() {
            Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
            // Never woken: the connection stays open until the peer closes it.
            None if self.hold => Poll::Pending,
            None => Poll::Ready(None),
        }
    }
}

fn answer(content_type: &'static str, frames: Vec<Bytes>, hold: bool) -> Response<Chunks> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(Chunks {
            frames: frames.into_iter(),
            hold,
        })
        .expect("static response")
}

fn sse(events: impl Iterator<Item = String>) -> Vec<Bytes> {
    events
        .map(|e| Bytes::from(format!("data: {e}\r\n\r\n")))
        .collect()
}

async fn handle(req: Request<Incoming>) -> Result<Response<Chunks>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let json = "application/json; charset=UTF-8";
    let event_stream = "text/event-stream";
    let resp = if path.ends_with(":generateContent") {
        answer(json, vec![Bytes::from_static(GENERATE.as_bytes())], false)
    } else if path.ends_with(":streamGenerateContent") {
        let slow = path.contains("slow");
        let n = if slow { 1 } else { 10 };
        if query.split('&').any(|p| p == "alt=sse") {
            let chunks = (0..n).map(|i| stream_chunk(i, !slow && i == n - 1));
            answer(event_stream, sse(chunks), slow)
        } else {
            let mut frames: Vec<Bytes> = (0..n)
                .map(|i| {
                    let sep = if i == 0 { "[" } else { ",\r\n" };
                    Bytes::from(format!("{sep}{}", stream_chunk(i, i == n - 1)))
                })
                .collect();
            if !slow {
                frames.push(Bytes::from_static(b"]"));
            }
            answer(json, frames, slow)
        }
    } else if path.ends_with("/chat/completions") {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if v.get("stream").and_then(|s| s.as_bool()) == Some(true) {
            let mut events: Vec<String> = (0..10).map(chat_chunk).collect();
            let usage = v.pointer("/stream_options/include_usage");
            if usage.and_then(|u| u.as_bool()) == Some(true) {
                events.push(CHAT_USAGE.to_owned());
            }
            events.push("[DONE]".to_owned());
            answer(event_stream, sse(events.into_iter()), false)
        } else {
            answer(json, vec![Bytes::from_static(CHAT.as_bytes())], false)
        }
    } else if path.ends_with("/models") {
        let list = r#"{"models":[{"name":"models/gemini-2.5-flash"}]}"#;
        answer(json, vec![Bytes::from_static(list.as_bytes())], false)
    } else {
        let mut r = answer(json, vec![Bytes::from_static(b"{}")], false);
        *r.status_mut() = StatusCode::NOT_FOUND;
        r
    };
    Ok(resp)
}

/// Serves until the process is killed; prints `listening on ADDR` on stdout once bound.
pub fn run(listen: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let conn = auto::Builder::new(TokioExecutor::new());
                let _ = conn
                    .serve_connection(TokioIo::new(stream), service_fn(handle))
                    .await;
            });
        }
    })
}
