//! Raw HTTP/1.1 over TCP, for tests that must control the bytes: the request exactly as
//! written, and the answers read one by one (pipelining, keep-alive, framing) or, for
//! answers that may never come whole, the bytes that arrived before the server closed.

use super::client;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response read off a raw TCP connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one HTTP/1.1 response (Content-Length, chunked, or until EOF) within `client::TIMEOUT`.
pub async fn read_response(s: &mut TcpStream) -> RawResponse {
    read_next(s, &mut Vec::new()).await
}

/// Reads the next response on a connection that may carry more: bytes read past its end
/// stay in `pending` for the next call.
pub async fn read_next(s: &mut TcpStream, pending: &mut Vec<u8>) -> RawResponse {
    tokio::time::timeout(client::TIMEOUT, read_response_inner(s, pending))
        .await
        .unwrap_or_else(|_| panic!("no complete response within {:?}", client::TIMEOUT))
}

async fn read_response_inner(s: &mut TcpStream, pending: &mut Vec<u8>) -> RawResponse {
    let mut buf = std::mem::take(pending);
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut tmp).await.unwrap_or(0);
        assert!(
            n > 0,
            "connection ended before a response head; got {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut rest = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let body = if status == 304 || status == 204 {
        Vec::new()
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().expect("content-length");
        while rest.len() < len {
            let n = s.read(&mut tmp).await.unwrap_or(0);
            assert!(
                n > 0,
                "body cut short: {:?}",
                String::from_utf8_lossy(&rest)
            );
            rest.extend_from_slice(&tmp[..n]);
        }
        *pending = rest.split_off(len);
        rest
    } else if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        let mut out = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                let n = s.read(&mut tmp).await.unwrap_or(0);
                assert!(n > 0, "chunked body cut short");
                rest.extend_from_slice(&tmp[..n]);
            };
            let size_text = String::from_utf8_lossy(&rest[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                .expect("chunk size");
            while rest.len() < line_end + 2 + size + 2 {
                let n = s.read(&mut tmp).await.unwrap_or(0);
                if n == 0 && size == 0 {
                    break;
                }
                assert!(n > 0, "chunked body cut short");
                rest.extend_from_slice(&tmp[..n]);
            }
            if size == 0 {
                rest.drain(..(line_end + 4).min(rest.len()));
                break;
            }
            out.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest.drain(..line_end + 2 + size + 2);
        }
        *pending = rest;
        out
    } else {
        loop {
            let n = s.read(&mut tmp).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&tmp[..n]);
        }
        rest
    };
    RawResponse {
        status,
        headers,
        body,
    }
}

/// Sends `request` verbatim on a fresh connection and reads the answer.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write request");
    read_response(&mut s).await
}

/// `GET path` with the request line exactly as written (no client-side normalisation).
pub async fn raw_get(addr: SocketAddr, path: &str) -> RawResponse {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    raw(addr, req.as_bytes()).await
}

/// Writes raw bytes on a fresh connection and reads until the server closes it (10 s).
pub async fn raw_exchange(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let addr = addr.to_string();
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let _ = s.write_all(&bytes);
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
            // One response is enough (the server may keep the connection open).
            if let Some(head_end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&out[..head_end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if len.is_some_and(|n| out.len() >= head_end + 4 + n) {
                    break;
                }
            }
        }
        out
    })
    .await
    .unwrap()
}

/// The status of the HTTP/1.1 response at the start of `raw`, if there is one.
pub fn parse_status(raw: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(raw);
    let line = text.lines().next()?;
    line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Sends one request on a fresh connection; the status, or `None` when the connection
/// closed before a response head arrived.
pub async fn raw_status(url: &str, headers: &[(&str, &str)], body: &str) -> Option<u16> {
    let uri: http::Uri = url.parse().unwrap();
    let addr = format!("{}:{}", uri.host().unwrap(), uri.port_u16().unwrap());
    let mut req = format!(
        "POST {} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n",
        uri.path_and_query().unwrap(),
        body.len()
    );
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    req += body;
    let out = raw_exchange(&addr, req.as_bytes()).await;
    parse_status(&out)
}
