//! The fast fake Gemini upstream the benchmark proxies to: hyper 1 on a multi-thread tokio
//! runtime, answering every route the scenarios use with small, realistic, fixed bodies.
//! It ignores keys and never fails, so what is measured is the daemon, not the upstream.
//! It runs as its own process (`bench upstream`) so its CPU is accounted apart from the
//! harness. It must not do anything per request beyond reading the body and writing the answer.
//!
//! With `--tls` it is the production path's upstream instead: TLS (the test certificate
//! for 127.0.0.1 in `tests/fixtures/tls`) with ALPN `h2` and `http/1.1`, 100 concurrent
//! streams per HTTP/2 connection as Google's front ends allow, and on SIGUSR1 a graceful
//! GOAWAY on every open connection (as a front end does when it drains).

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
    /// Frames that come later, from a task (the ten-second stream).
    later: Option<tokio::sync::mpsc::Receiver<Bytes>>,
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(rx) = self.later.as_mut() {
            return rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))));
        }
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
            later: None,
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
    } else if path.ends_with(":streamGenerateContent") && path.contains("held10s") {
        // A ten-second stream: one event at once, the last after ten seconds.
        return Ok(ten_seconds());
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

/// The first event now, the second after ten seconds (the held-streams scenario).
fn ten_seconds() -> Response<Chunks> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let _ = tx
            .send(Bytes::from(format!(
                "data: {}\r\n\r\n",
                stream_chunk(0, false)
            )))
            .await;
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        let _ = tx
            .send(Bytes::from(format!(
                "data: {}\r\n\r\n",
                stream_chunk(1, true)
            )))
            .await;
    });
    let mut r = answer("text/event-stream", Vec::new(), false);
    r.body_mut().later = Some(rx);
    r
}

/// Serves until the process is killed; prints `listening on ADDR` on stdout once bound.
pub fn run(listen: &str, tls: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let acceptor = if tls { Some(acceptor()?) } else { None };
        let (goaway, drains) = tokio::sync::watch::channel(0u64);
        tokio::spawn(async move {
            let Ok(mut usr1) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
            else {
                return;
            };
            while usr1.recv().await.is_some() {
                goaway.send_modify(|n| *n += 1);
            }
        });
        println!("listening on {}", listener.local_addr()?);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, drains) = (acceptor.clone(), drains.clone());
            tokio::spawn(async move {
                match acceptor {
                    None => serve(TokioIo::new(stream), drains).await,
                    Some(a) => {
                        if let Ok(tls) = a.accept(stream).await {
                            serve(TokioIo::new(tls), drains).await;
                        }
                    }
                }
            });
        }
    })
}

/// One connection, shut down gracefully (GOAWAY on HTTP/2) when `drains` moves on.
async fn serve<I>(io: TokioIo<I>, mut drains: tokio::sync::watch::Receiver<u64>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(100);
    let conn = builder.serve_connection(io, service_fn(handle));
    tokio::pin!(conn);
    drains.mark_unchanged();
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = drains.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

fn acceptor() -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    const CERT: &[u8] = include_bytes!("../../tests/fixtures/tls/server.pem");
    const KEY: &[u8] = include_bytes!("../../tests/fixtures/tls/server.key");
    let certs = CertificateDer::pem_slice_iter(CERT).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(KEY)?;
    let mut config = rustls::ServerConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}
