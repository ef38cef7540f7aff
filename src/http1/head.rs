//! Reading a request head for the fast path, and deciding whether the fast path may take it.
//!
//! The fast path takes only the plain case: HTTP/1.1, a method from [`FAST_METHODS`], an
//! origin-form target, no `Transfer-Encoding`, at most one `Content-Length` of plain
//! digits, no `Expect`, no `Upgrade`. Everything else — and any head httparse refuses —
//! goes to hyper with the bytes read so far, so the framing rules that guard against
//! request smuggling are hyper's, not a second copy of them.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri, Version};
use std::mem::MaybeUninit;

/// Headers the fast path reads; a request with more goes to hyper (which allows 100).
const MAX_HEADERS: usize = 64;

/// Methods the fast path serves. `HEAD` (an answer without its body), `OPTIONS`,
/// `CONNECT` and the rest go to hyper.
const FAST_METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// Where a parsed head's parts lie in the read buffer.
#[derive(Debug, Default)]
pub struct Head {
    /// Bytes of the head, the blank line included.
    pub len: usize,
    /// Declared body length (0 without `Content-Length`).
    pub body: usize,
    /// The client asked to close after this answer (`Connection: close`).
    pub close: bool,
    method: usize,
    target: (usize, usize),
    /// Name and value ranges of each header, in order.
    fields: Vec<[usize; 4]>,
}

/// What the buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// A whole head the fast path takes; its parts are in the [`Head`].
    Ready,
    /// Not a whole head yet.
    Partial,
    /// A head (or bytes) for hyper: anything outside the plain case, or malformed.
    Hyper,
}

impl Head {
    pub fn new() -> Self {
        Self {
            fields: Vec::with_capacity(16),
            ..Self::default()
        }
    }

    /// Parses the start of `buf`, filling `self` when it is [`Parse::Ready`].
    pub fn parse(&mut self, buf: &[u8]) -> Parse {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let len = match req.parse_with_uninit_headers(buf, &mut slots) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Parse::Partial,
            Err(_) => return Parse::Hyper,
        };
        let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
            return Parse::Hyper;
        };
        let Some(method) = FAST_METHODS.iter().position(|m| m.as_str() == method) else {
            return Parse::Hyper;
        };
        if !path.starts_with('/') {
            return Parse::Hyper;
        }
        let at = |s: &[u8]| s.as_ptr() as usize - buf.as_ptr() as usize;
        self.fields.clear();
        let (mut body, mut close, mut lengths) = (0usize, false, 0);
        for h in req.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                lengths += 1;
                match plain_number(h.value) {
                    Some(n) if lengths == 1 => body = n,
                    _ => return Parse::Hyper,
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding")
                || name.eq_ignore_ascii_case(b"expect")
                || name.eq_ignore_ascii_case(b"upgrade")
            {
                return Parse::Hyper;
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"upgrade") {
                        return Parse::Hyper;
                    }
                    close |= token.eq_ignore_ascii_case(b"close");
                }
            }
            let (n, v) = (at(name), at(h.value));
            self.fields.push([n, n + name.len(), v, v + h.value.len()]);
        }
        let target = at(path.as_bytes());
        self.len = len;
        self.body = body;
        self.close = close;
        self.method = method;
        self.target = (target, target + path.len());
        Parse::Ready
    }

    /// The request whose head (and `self.body` bytes of body after it) `raw` holds.
    /// `None` if a part does not make a valid `http` value (httparse and `http` agree on
    /// what a token and a header value are, so this is for the odd target).
    pub fn request<B>(&self, raw: &Bytes, body: impl FnOnce(Bytes) -> B) -> Option<Request<B>> {
        let uri = Uri::from_maybe_shared(raw.slice(self.target.0..self.target.1)).ok()?;
        let mut req = Request::new(body(raw.slice(self.len..self.len + self.body)));
        *req.method_mut() = FAST_METHODS[self.method].clone();
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        let headers = req.headers_mut();
        headers.reserve(self.fields.len());
        for &[ns, ne, vs, ve] in &self.fields {
            let name = HeaderName::from_bytes(&raw[ns..ne]).ok()?;
            let value = HeaderValue::from_maybe_shared(raw.slice(vs..ve)).ok()?;
            headers.append(name, value);
        }
        Some(req)
    }
}

/// A `Content-Length` value the fast path takes: 1–15 ASCII digits, nothing else.
fn plain_number(v: &[u8]) -> Option<usize> {
    if v.is_empty() || v.len() > 15 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0, |n, d| n * 10 + usize::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Parse, Head) {
        let mut head = Head::new();
        (head.parse(text.as_bytes()), head)
    }

    #[test]
    fn a_plain_post_is_taken_with_its_parts() {
        let text = "POST /v1beta/models/m:generateContent?alt=sse HTTP/1.1\r\nHost: x\r\n\
                    Content-Length: 2\r\nX-Goog-Api-Key: k\r\n\r\n{}";
        let (p, head) = parse(text);
        assert_eq!(p, Parse::Ready);
        assert_eq!(
            (head.len, head.body, head.close),
            (text.len() - 2, 2, false)
        );
        let raw = Bytes::from(text);
        let req = head.request(&raw, |b| b).unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri().path(), "/v1beta/models/m:generateContent");
        assert_eq!(req.uri().query(), Some("alt=sse"));
        assert_eq!(req.headers()["x-goog-api-key"], "k");
        assert_eq!(req.headers().len(), 3);
        assert_eq!(req.body().as_ref(), b"{}");
    }

    #[test]
    fn a_head_in_pieces_is_partial_until_the_blank_line() {
        let text = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n";
        for cut in 1..text.len() {
            assert_eq!(parse(&text[..cut]).0, Parse::Partial, "cut at {cut}");
        }
        let (p, head) = parse(text);
        assert_eq!(p, Parse::Ready);
        assert!(head.close);
        assert_eq!(head.body, 0);
    }

    #[test]
    fn anything_outside_the_plain_case_goes_to_hyper() {
        let cases = [
            "GET / HTTP/1.0\r\n\r\n",
            "HEAD / HTTP/1.1\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1,1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
            "G\x01T / HTTP/1.1\r\n\r\n",
        ];
        for text in cases {
            assert_eq!(parse(text).0, Parse::Hyper, "{text:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            parse(&format!("GET / HTTP/1.1\r\n{many}\r\n")).0,
            Parse::Hyper
        );
    }
}
