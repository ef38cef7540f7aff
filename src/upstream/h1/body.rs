//! An answer's body: framing, and decoding it from the connection's buffer.

use super::{BoxError, Conn};
use crate::upstream::pool::Home;
use bytes::{Buf, Bytes};
use http::{HeaderMap, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// The longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// How the answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    Close,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data: this much left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailers,
}

/// The framing of an answer, and whether its connection may be reused after it.
pub(super) fn framing(
    status: StatusCode,
    headers: &HeaderMap,
    no_body: bool,
) -> Result<(Framing, bool), BoxError> {
    if no_body || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Done, true));
    }
    let has_length = headers.contains_key(http::header::CONTENT_LENGTH);
    if let Some(last) = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .next_back()
    {
        let last = last.to_str().unwrap_or("");
        let chunked = last
            .rsplit(',')
            .next()
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        // With a length as well, the sender is confused or lying: read the chunks, and
        // do not trust what may follow on this connection.
        return Ok(if chunked {
            (Framing::Chunked(Chunk::Size), !has_length)
        } else {
            (Framing::Close, false)
        });
    }
    let mut length: Option<u64> = None;
    for v in headers.get_all(http::header::CONTENT_LENGTH) {
        for part in v.to_str().unwrap_or("x").split(',') {
            let n: u64 = part
                .trim()
                .parse()
                .map_err(|_| "the upstream sent an invalid Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("the upstream sent conflicting Content-Length values".into());
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => (Framing::Done, true),
        Some(n) => (Framing::Length(n), true),
        None => (Framing::Close, false),
    })
}

/// An answer's body, read from its connection as it is polled.
pub struct Body {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    home: Option<Home>,
}

impl Body {
    pub(super) fn new(conn: Conn, framing: Framing, keep_alive: bool, home: Home) -> Self {
        let mut body = Self {
            conn: Some(conn),
            framing,
            keep_alive,
            home: Some(home),
        };
        body.release_if_done();
        body
    }

    /// Once the body is complete, the connection goes home (when it may be reused).
    fn release_if_done(&mut self) {
        if self.framing != Framing::Done {
            return;
        }
        if let (Some(conn), Some(home)) = (self.conn.take(), self.home.take()) {
            if self.keep_alive && conn.buf.is_empty() {
                home.put_back(conn);
            }
        }
    }

    /// The next piece of body already in the buffer, if any.
    fn decode(&mut self) -> Result<Option<Bytes>, BoxError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        let buf = &mut conn.buf;
        loop {
            match self.framing {
                Framing::Done => return Ok(None),
                Framing::Close => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(buf.split().freeze()));
                }
                Framing::Length(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    let data = buf.split_to(n).freeze();
                    self.framing = match left - n as u64 {
                        0 => Framing::Done,
                        rest => Framing::Length(rest),
                    };
                    return Ok(Some(data));
                }
                Framing::Chunked(Chunk::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    let data = buf.split_to(n).freeze();
                    self.framing = Framing::Chunked(match left - n as u64 {
                        0 => Chunk::DataEnd,
                        rest => Chunk::Data(rest),
                    });
                    return Ok(Some(data));
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("the upstream sent a malformed chunk".into());
                    }
                    buf.advance(2);
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Size) => {
                    let Some(end) = line_end(buf)? else {
                        return Ok(None);
                    };
                    let line = &buf[..end];
                    let digits = line
                        .iter()
                        .position(|b| matches!(b, b';' | b' ' | b'\t'))
                        .map_or(line, |at| &line[..at]);
                    let size = parse_hex(digits)?;
                    buf.advance(end + 2);
                    self.framing = Framing::Chunked(if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    });
                }
                Framing::Chunked(Chunk::Trailers) => {
                    let Some(end) = line_end(buf)? else {
                        return Ok(None);
                    };
                    buf.advance(end + 2);
                    if end == 0 {
                        self.framing = Framing::Done;
                    }
                }
            }
        }
    }
}

/// Where the CRLF ending the line at the front of `buf` is.
fn line_end(buf: &[u8]) -> Result<Option<usize>, BoxError> {
    match memchr::memmem::find(buf, b"\r\n") {
        Some(at) if at <= MAX_CHUNK_LINE => Ok(Some(at)),
        Some(_) => Err("the upstream sent an overlong chunk line".into()),
        None if buf.len() > MAX_CHUNK_LINE => {
            Err("the upstream sent an overlong chunk line".into())
        }
        None => Ok(None),
    }
}

fn parse_hex(digits: &[u8]) -> Result<u64, BoxError> {
    if digits.is_empty() || digits.len() > 15 {
        return Err("the upstream sent an invalid chunk size".into());
    }
    let mut n: u64 = 0;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err("the upstream sent an invalid chunk size".into()),
        };
        n = n * 16 + u64::from(v);
    }
    Ok(n)
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            match this.decode() {
                Ok(Some(data)) => {
                    this.release_if_done();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(None) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            this.release_if_done();
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(conn.poll_read_more(cx)) {
                Ok(0) if this.framing == Framing::Close => {
                    this.framing = Framing::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(
                        "the upstream closed the connection in the middle of its answer".into(),
                    )));
                }
                Ok(_) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
