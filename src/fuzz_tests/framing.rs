//! The stream relay's framing: SSE and JSON-array streams split at every possible place
//! reach the client as whole events, and a stream cut anywhere ends with whole events and
//! one error. The relay is driven through its public face (`Relay` over a real hyper
//! `Incoming` fed from an in-memory pipe); `sse_boundary` and `JsonScan` are private to
//! `relay`.

use super::cases;
use crate::relay::{ErrorStyle, Format, Relay};
use bytes::Bytes;
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

// ------------------------------------------------------------------ stream relay framing

/// Feeds `pieces` as the chunked body of a 200 answer through a real hyper connection and
/// relays it; `clean` ends the body properly, otherwise the connection is cut. Answers the
/// frames the client would get and whether the relay ended in error.
fn relay(format: Format, ctype: &str, pieces: Vec<Vec<u8>>, clean: bool) -> (Vec<Bytes>, bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ctype = ctype.to_string();
    rt.block_on(async move {
        let (client_io, mut server_io) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            // Read the request head before answering.
            let _ = tokio::io::AsyncReadExt::read(&mut server_io, &mut buf).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ntransfer-encoding: chunked\r\n\r\n"
            );
            server_io.write_all(head.as_bytes()).await.unwrap();
            for p in pieces.iter().filter(|p| !p.is_empty()) {
                let chunk = [format!("{:x}\r\n", p.len()).as_bytes(), p, b"\r\n"].concat();
                if server_io.write_all(&chunk).await.is_err() {
                    return;
                }
                server_io.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            if clean {
                let _ = server_io.write_all(b"0\r\n\r\n").await;
            }
            let _ = server_io.shutdown().await;
        });
        let io = hyper_util::rt::TokioIo::new(client_io);
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let req = http::Request::builder()
            .uri("/")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let mut relay = Relay::new(
            resp.into_body().into(),
            format,
            ErrorStyle::Google,
            Duration::from_secs(10),
        );
        let primed = relay.prime().await;
        let mut frames = Vec::new();
        let mut errored = primed.is_err();
        if primed.is_ok() {
            let mut body = std::pin::pin!(relay);
            while let Some(f) = body.frame().await {
                match f {
                    Ok(f) => frames.extend(f.into_data().ok()),
                    Err(_) => {
                        errored = true;
                        break;
                    }
                }
            }
        }
        let _ = server.await;
        (frames, errored)
    })
}

/// Splits `bytes` at the given (sorted, deduplicated) cut points.
fn split(bytes: &[u8], mut at: Vec<usize>) -> Vec<Vec<u8>> {
    at.retain(|&i| i > 0 && i < bytes.len());
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::new();
    let mut prev = 0;
    for i in at {
        out.push(bytes[prev..i].to_vec());
        prev = i;
    }
    out.push(bytes[prev..].to_vec());
    out
}

/// Event payloads with the characters that trip hand-written scanners.
fn events() -> impl Strategy<Value = Vec<Value>> {
    let text = "[a-z\\]\\[{}\"\\\\,:\r\n é\u{1F600}]{0,24}";
    prop::collection::vec(text, 1..6).prop_map(|ts| {
        ts.into_iter()
            .map(|t| json!({"candidates": [{"content": {"parts": [{"text": t}]}}], "nested": [[{}], {"a": "]}"}]}))
            .collect()
    })
}

fn sse_bytes(events: &[Value], crlf: bool) -> Vec<u8> {
    let nl = if crlf { "\r\n" } else { "\n" };
    events
        .iter()
        .map(|e| format!("data: {e}{nl}{nl}"))
        .collect::<String>()
        .into_bytes()
}

fn array_bytes(events: &[Value]) -> Vec<u8> {
    let mut s = String::from("[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            s += "\r\n,";
        }
        s += &e.to_string();
    }
    s += "]";
    s.into_bytes()
}

/// The JSON payloads of the SSE events in `text`.
fn sse_payloads(text: &str) -> Vec<Value> {
    text.replace("\r\n", "\n")
        .split("\n\n")
        .filter(|b| !b.is_empty())
        .map(|b| serde_json::from_str(b.strip_prefix("data: ").unwrap_or(b)).expect("JSON event"))
        .collect()
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn sse_relay_passes_whole_events_however_the_bytes_arrive(
        evs in events(), crlf in any::<bool>(), cuts in prop::collection::vec(0usize..4000, 0..12),
    ) {
        let bytes = sse_bytes(&evs, crlf);
        let (frames, errored) = relay(Format::Sse, "text/event-stream", split(&bytes, cuts), true);
        prop_assert!(!errored);
        let nl: &[u8] = if crlf { b"\r\n\r\n" } else { b"\n\n" };
        for f in &frames {
            prop_assert!(f.ends_with(nl), "frame not on an event boundary: {:?}", f);
        }
        prop_assert_eq!(frames.concat(), bytes);
    }

    #[test]
    fn a_cut_sse_stream_ends_with_whole_events_and_one_error(
        evs in events(), crlf in any::<bool>(), cut_at in 1usize..4000,
        cuts in prop::collection::vec(0usize..4000, 0..6),
    ) {
        let bytes = sse_bytes(&evs, crlf);
        let cut_at = cut_at % bytes.len();
        prop_assume!(cut_at > 0);
        let sent = &bytes[..cut_at];
        let (frames, errored) = relay(Format::Sse, "text/event-stream", split(sent, cuts), false);
        let text = String::from_utf8(frames.concat()).expect("UTF-8 out");
        if errored {
            // The cut came before the first whole event: nothing went to the client.
            prop_assert!(frames.is_empty());
            return Ok(());
        }
        let got = sse_payloads(&text);
        let (last, before) = got.split_last().expect("some event");
        prop_assert!(last["error"].is_object(), "last event is not an error: {}", text);
        prop_assert!(before.len() <= evs.len());
        prop_assert_eq!(before, &evs[..before.len()], "events changed or spliced");
    }

    #[test]
    fn json_array_relay_passes_the_array_however_the_bytes_arrive(
        evs in events(), cuts in prop::collection::vec(0usize..4000, 0..12),
    ) {
        let bytes = array_bytes(&evs);
        let (frames, errored) = relay(Format::JsonArray, "application/json", split(&bytes, cuts), true);
        prop_assert!(!errored);
        prop_assert_eq!(frames.concat(), bytes);
    }

    #[test]
    fn a_cut_json_array_is_closed_with_an_error_element(
        evs in events(), cut_at in 1usize..4000, cuts in prop::collection::vec(0usize..4000, 0..6),
    ) {
        let bytes = array_bytes(&evs);
        let cut_at = cut_at % bytes.len();
        prop_assume!(cut_at > 0);
        let (frames, errored) =
            relay(Format::JsonArray, "application/json", split(&bytes[..cut_at], cuts), false);
        let text = String::from_utf8(frames.concat()).expect("UTF-8 out");
        if errored {
            prop_assert!(frames.is_empty());
            return Ok(());
        }
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {text:?}")))?;
        let items = v.as_array().expect("an array");
        let (last, before) = items.split_last().expect("some element");
        prop_assert!(last["error"].is_object(), "last element is not an error: {}", text);
        prop_assert_eq!(before, &evs[..before.len()], "elements changed or spliced");
    }
}
