//! Writing an answer head: status line, the handler's headers, `date`, the framing header.

use http::{HeaderMap, StatusCode, header};
use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// How the body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (204, 304).
    None,
    Length(u64),
    Chunked,
}

/// Appends the head to `out`. The handler's own `content-length` and `transfer-encoding`
/// are replaced by `framing`; `close` adds `connection: close` unless the handler set a
/// `connection` header.
pub fn head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    framing: Framing,
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !headers.contains_key(header::DATE) {
        DATE.with_borrow_mut(|d| field(out, b"date", d.now()));
    }
    if close && !headers.contains_key(header::CONNECTION) {
        field(out, b"connection", b"close");
    }
    match framing {
        Framing::None => {}
        Framing::Length(n) => {
            let mut digits = [0u8; 20];
            field(out, b"content-length", decimal(n, &mut digits));
        }
        Framing::Chunked => field(out, b"transfer-encoding", b"chunked"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Whether the handler asked to close the connection after this answer.
pub fn asks_close(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

/// The size line of a chunk of `len` bytes.
pub fn chunk_size(out: &mut Vec<u8>, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out.push(HEX[(len >> (i * 4)) & 0xf]);
    }
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &digits[at..];
        }
    }
}

/// The `date` value, formatted once a second per thread.
struct Date {
    second: u64,
    text: Vec<u8>,
}

impl Date {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = httpdate::fmt_http_date(now).into_bytes();
        }
        &self.text
    }
}

thread_local! {
    static DATE: RefCell<Date> = const { RefCell::new(Date { second: 0, text: Vec::new() }) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn text(status: StatusCode, headers: &HeaderMap, framing: Framing, close: bool) -> String {
        let mut out = Vec::new();
        head(&mut out, status, headers, framing, close);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn heads_carry_status_headers_date_and_framing() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        let t = text(StatusCode::OK, &h, Framing::Length(1234), false);
        let mut lines = t.split("\r\n");
        assert_eq!(lines.next(), Some("HTTP/1.1 200 OK"));
        let rest: Vec<&str> = lines.collect();
        assert!(rest.contains(&"content-type: application/json"));
        assert!(rest.contains(&"x-a: 1") && rest.contains(&"x-a: 2"));
        assert!(rest.contains(&"content-length: 1234"));
        assert!(!t.contains("999") && !t.contains("connection"));
        let date = rest.iter().find_map(|l| l.strip_prefix("date: ")).unwrap();
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
        assert!(t.ends_with("\r\n\r\n"));

        let t = text(
            StatusCode::TOO_MANY_REQUESTS,
            &HeaderMap::new(),
            Framing::Chunked,
            true,
        );
        assert!(t.starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
        assert!(t.contains("\r\nconnection: close\r\n"));
        assert!(t.contains("\r\ntransfer-encoding: chunked\r\n"));
        let t = text(
            StatusCode::NO_CONTENT,
            &HeaderMap::new(),
            Framing::None,
            false,
        );
        assert!(!t.contains("content-length") && !t.contains("transfer-encoding"));
        let t = text(StatusCode::OK, &HeaderMap::new(), Framing::Length(0), false);
        assert!(t.contains("\r\ncontent-length: 0\r\n"));
    }

    #[test]
    fn chunk_sizes_are_lowercase_hex() {
        for (len, want) in [(0, "0"), (9, "9"), (10, "a"), (255, "ff"), (4096, "1000")] {
            let mut out = Vec::new();
            chunk_size(&mut out, len);
            assert_eq!(out, format!("{want}\r\n").into_bytes());
        }
    }

    #[test]
    fn close_is_read_from_any_connection_token() {
        let mut h = HeaderMap::new();
        assert!(!asks_close(&h));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Close"),
        );
        assert!(asks_close(&h));
    }
}
