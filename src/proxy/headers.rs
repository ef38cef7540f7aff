//! The headers of an upstream answer a client gets. Answers are served on the admin
//! page's origin, so an upstream (hostile, or intercepted on the way) must not set a
//! cookie there or have a page run script: only an allow-list passes — the body's
//! framing and type, `Retry-After`, and Google's `x-goog-*` headers (the resumable upload
//! protocol's among them) except any carrying a key — and every proxied answer says
//! `nosniff` and is sandboxed by its Content-Security-Policy.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Upstream answer headers passed to the client, besides `x-goog-*`.
const ALLOWED: &[&str] = &[
    "content-type",
    "content-encoding",
    "content-length",
    "content-disposition",
    "retry-after",
];

/// Copies the headers a client may get; `reframed`: the body is sent in other pieces
/// than it came, so its `content-length` no longer holds.
pub fn copy(from: &HeaderMap, to: &mut HeaderMap, reframed: bool) {
    for (name, value) in from {
        let n = name.as_str();
        let allowed = if n == "content-length" {
            !reframed
        } else {
            ALLOWED.contains(&n) || is_google(n, value)
        };
        if allowed {
            to.append(name.clone(), value.clone());
        }
    }
    guard(to);
}

/// Adds the headers every proxied answer carries: no type sniffing, no script, no
/// loads, no same-origin rights if a browser ever renders one.
pub fn guard(to: &mut HeaderMap) {
    to.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    to.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
}

/// `x-goog-*`, unless it names or holds a key.
fn is_google(name: &str, value: &HeaderValue) -> bool {
    name.starts_with("x-goog-")
        && !name.ends_with("-key")
        && memchr::memmem::find(value.as_bytes(), b"key=").is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_the_allow_list_passes() {
        let from = map(&[
            ("content-type", "application/json; charset=UTF-8"),
            ("content-length", "12"),
            ("set-cookie", "gb_session=evil; Path=/api"),
            ("x-goog-upload-status", "active"),
            ("x-goog-api-key", "AIzaSECRET"),
            (
                "x-goog-upload-url",
                "https://x/upload?key=AIzaSECRET&upload_id=1",
            ),
            ("alt-svc", "h3=\":443\""),
            ("server", "scaffolding on HTTPServer2"),
            ("retry-after", "7"),
        ]);
        let mut to = HeaderMap::new();
        copy(&from, &mut to, false);
        let mut names: Vec<&str> = to.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "content-length",
                "content-security-policy",
                "content-type",
                "retry-after",
                "x-content-type-options",
                "x-goog-upload-status",
            ]
        );
        let mut to = HeaderMap::new();
        copy(&from, &mut to, true);
        assert!(!to.contains_key("content-length"));
        assert_eq!(to["content-security-policy"], "default-src 'none'; sandbox");
    }
}
