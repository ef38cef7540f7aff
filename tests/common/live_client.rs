//! The Live API from a test's side: a client opening sessions at the daemon as
//! google-genai does (Google's paths, `setup` first), the messages it sends, and what
//! the admin API shows of sessions.

use super::admin::admin_ok;
use super::daemon::{Daemon, USER_KEY};
use futures_util::{SinkExt, StreamExt};
use http::Method;
use serde_json::{Value, json};
use std::net::SocketAddr;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

pub const MODEL: &str = "gemini-live-2.5-flash-preview";

pub type Client = WebSocketStream<tokio::net::TcpStream>;

/// The v1beta Live path.
pub const LIVE_PATH: &str =
    "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent";
/// The ephemeral-token Live path.
pub const CONSTRAINED_PATH: &str =
    "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained";

/// Opens a WebSocket to the daemon at `addr` with `headers`, as google-genai does.
pub async fn connect(
    addr: SocketAddr,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}{path_and_query}").into_client_request()?;
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(req, tcp).await?;
    Ok(ws)
}

/// google-genai's first message for `model`.
pub fn setup(model: &str) -> Message {
    let v = json!({"setup": {"model": format!("models/{model}"), "generationConfig": {"responseModalities": ["TEXT"]}}});
    Message::Text(v.to_string().into())
}

/// A text turn, as `session.send_client_content` sends it.
pub fn turn(text: &str) -> Message {
    let v = json!({"clientContent": {"turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": true}});
    Message::Text(v.to_string().into())
}

/// Audio, as `session.send_realtime_input(audio=…)` sends it (`data` stands for base64).
pub fn audio(data: &str) -> Message {
    let v = json!({"realtimeInput": {"audio": {"data": data, "mimeType": "audio/pcm;rate=16000"}}});
    Message::Text(v.to_string().into())
}

/// The next text or binary message, parsed; `Err` with the close (code, reason) or the
/// error when the session ends instead. Pings are skipped (tungstenite answers them).
pub async fn next_json<S>(ws: &mut WebSocketStream<S>) -> Result<(bool, Value), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let m = tokio::time::timeout(super::client::TIMEOUT, ws.next())
            .await
            .map_err(|_| "no message in time".to_string())?;
        match m {
            None => return Err("the connection ended".into()),
            Some(Err(e)) => return Err(format!("error: {e}")),
            Some(Ok(Message::Close(f))) => {
                let f = f.map(|f| (u16::from(f.code), f.reason.to_string()));
                return Err(format!("close {f:?}"));
            }
            Some(Ok(Message::Binary(b))) => return Ok((true, serde_json::from_slice(&b).unwrap())),
            Some(Ok(Message::Text(t))) => return Ok((false, serde_json::from_str(&t).unwrap())),
            Some(Ok(_)) => {}
        }
    }
}

/// Reads until the session closes; answers Google's close (code, reason).
pub async fn closed<S>(ws: &mut WebSocketStream<S>) -> Option<(u16, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let m = tokio::time::timeout(super::client::TIMEOUT, ws.next())
            .await
            .ok()??;
        match m {
            Ok(Message::Close(f)) => return f.map(|f| (u16::from(f.code), f.reason.to_string())),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// The logged records of Live sessions, newest first.
pub async fn live_records(d: &Daemon, token: &str) -> Vec<Value> {
    let v = admin_ok(d, Method::GET, "/api/logs", token, None).await;
    v["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["route"].as_str().is_some_and(|r| r.starts_with("live.")))
        .cloned()
        .collect()
}

/// One text turn: the parts' text, and the turn's usage.
pub async fn text_turn<S>(ws: &mut WebSocketStream<S>, text: &str) -> (String, Value)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(turn(text)).await.unwrap();
    let mut said = String::new();
    loop {
        let (binary, m) = next_json(ws).await.unwrap();
        assert!(binary, "Google's messages come as binary frames: {m}");
        if let Some(t) = m.pointer("/serverContent/modelTurn/parts/0/text") {
            said.push_str(t.as_str().unwrap());
        }
        if m.pointer("/serverContent/turnComplete") == Some(&json!(true)) {
            return (said, m["usageMetadata"].clone());
        }
    }
}

/// How the admin API shows a pool key.
pub fn fake_brief(k: &str) -> String {
    format!("{}…{}", &k[..4], &k[k.len() - 4..])
}

/// Alice's entry in `/api/users`.
pub async fn alice(d: &Daemon, token: &str) -> Value {
    let v = admin_ok(d, Method::GET, "/api/users", token, None).await;
    v["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == super::daemon::USER_NAME)
        .unwrap()
        .clone()
}

/// Sessions open on each pool key, by brief.
pub async fn keys_in_flight(d: &Daemon, token: &str) -> u64 {
    let v = admin_ok(d, Method::GET, "/api/keys", token, None).await;
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["in_flight"].as_u64().unwrap())
        .sum()
}

/// Opens a session as alice and has it accepted.
pub async fn opened(d: &Daemon) -> Client {
    let mut ws = connect(d.addr, LIVE_PATH, &[("x-goog-api-key", USER_KEY)])
        .await
        .unwrap();
    ws.send(setup(MODEL)).await.unwrap();
    let (_, first) = next_json(&mut ws).await.unwrap();
    assert!(first.get("setupComplete").is_some(), "{first}");
    ws
}
