//! The plain-HTTP listener of `[tls] redirect_listen`: every request is answered `308`
//! to the same host, path and query over HTTPS, with no body, and HTTP-01 challenges at
//! `/.well-known/acme-challenge/{token}` are answered while an order waits for them. It
//! serves nothing else: no proxy, no admin, no page, and one request per connection.
//!
//! A `Host` that is not a plain host name or address (with an optional port) gets a 400;
//! with `[tls.acme]` a host outside its domains is sent to the first of them.

use super::Tls;
use crate::gate::Gate;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Connections served at once (more wait in the kernel's backlog), and from one address
/// (more are closed at once), so no client can keep a CA's check from getting through.
const MAX_CONNECTIONS: usize = 256;
const MAX_PER_IP: usize = 16;
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// What an answer needs: the HTTPS port, the ACME domains, the pending challenges.
struct Site {
    https_port: u16,
    domains: Vec<String>,
    tls: Tls,
}

/// Answers on `listener` until `stop`.
pub async fn serve(listener: TcpListener, tls: Tls, https_port: u16, stop: CancellationToken) {
    let domains = match &tls.source {
        super::Source::Acme(acme) => acme.domains().to_vec(),
        super::Source::Files(_) => Vec::new(),
    };
    let site = Arc::new(Site {
        https_port,
        domains,
        tls,
    });
    let gate = Gate::new(MAX_CONNECTIONS, MAX_PER_IP);
    let tracker = TaskTracker::new();
    loop {
        let place = tokio::select! {
            _ = stop.cancelled() => break,
            place = gate.place() => place,
        };
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "redirect listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = gate.admit(place, peer.ip()) else {
            continue;
        };
        let site = site.clone();
        tracker.spawn(async move {
            let _slot = slot;
            let svc = hyper::service::service_fn(move |req| {
                let site = site.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&site, &req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(tcp), svc);
            let _ = tokio::time::timeout(HEADER_TIMEOUT * 2, conn).await;
        });
    }
    tracker.close();
    tracker.wait().await;
}

async fn answer(site: &Site, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if let Some(token) = req.uri().path().strip_prefix(CHALLENGE_PREFIX) {
        return match site.tls.http01_answer(token).await {
            Some(answer) => plain(StatusCode::OK, answer),
            None => plain(StatusCode::NOT_FOUND, String::new()),
        };
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .and_then(host_of);
    let Some(host) = host else {
        return plain(StatusCode::BAD_REQUEST, String::new());
    };
    let path = req.uri().path_and_query().map(|p| p.as_str());
    let to = location(site.https_port, &site.domains, host, path);
    match HeaderValue::from_str(&to) {
        Ok(v) => {
            let mut resp = plain(StatusCode::PERMANENT_REDIRECT, String::new());
            resp.headers_mut().insert(header::LOCATION, v);
            resp
        }
        Err(_) => plain(StatusCode::BAD_REQUEST, String::new()),
    }
}

/// `https://` on `host` (the first ACME domain when it is none of them), the HTTPS port
/// unless it is 443, and the request's path and query (`/` for `*`).
fn location(https_port: u16, domains: &[String], host: String, path: Option<&str>) -> String {
    let host = match domains.first() {
        Some(first) if !domains.contains(&host) => first.clone(),
        _ => host,
    };
    let path = path.filter(|p| p.starts_with('/')).unwrap_or("/");
    match https_port {
        443 => format!("https://{host}{path}"),
        port => format!("https://{host}:{port}{path}"),
    }
}

fn plain(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The host of a `Host` value (`name`, `name:port`, `1.2.3.4:80`, `[::1]:80`), lower-case,
/// without the port; None for anything else (user info, paths, stray characters).
fn host_of(value: &str) -> Option<String> {
    let (host, port) = match value.strip_prefix('[') {
        Some(rest) => {
            let (ip, after) = rest.split_once(']')?;
            ip.parse::<std::net::Ipv6Addr>().ok()?;
            (&value[..ip.len() + 2], after)
        }
        None => match value.split_once(':') {
            Some((h, _)) => (h, &value[h.len()..]),
            None => (value, ""),
        },
    };
    let port_ok = port.is_empty()
        || port.strip_prefix(':').is_some_and(|p| {
            !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
        });
    let name_ok = host.starts_with('[')
        || (!host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    (port_ok && name_ok).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::{host_of, location};

    #[test]
    fn the_location_keeps_host_path_and_query_and_names_a_port_other_than_443() {
        let none: &[String] = &[];
        let to = |port, domains, host: &str, path| location(port, domains, host.into(), path);
        assert_eq!(
            to(443, none, "gw.example.com", Some("/v1/models?x=1")),
            "https://gw.example.com/v1/models?x=1"
        );
        assert_eq!(to(8443, none, "[::1]", Some("/")), "https://[::1]:8443/");
        assert_eq!(
            to(443, none, "gw.example.com", Some("*")),
            "https://gw.example.com/"
        );
        assert_eq!(
            to(443, none, "gw.example.com", None),
            "https://gw.example.com/"
        );
        let domains = ["a.example.com".to_owned(), "b.example.com".to_owned()];
        assert_eq!(
            to(443, &domains, "b.example.com", None),
            "https://b.example.com/"
        );
        assert_eq!(
            to(443, &domains, "evil.example", None),
            "https://a.example.com/"
        );
    }

    #[test]
    fn only_plain_hosts_are_taken_from_the_host_header() {
        let good = [
            ("gb.example.org", "gb.example.org"),
            ("GB.Example.org:80", "gb.example.org"),
            ("127.0.0.1:8080", "127.0.0.1"),
            ("[::1]:80", "[::1]"),
            ("[2001:db8::1]", "[2001:db8::1]"),
        ];
        for (value, host) in good {
            assert_eq!(host_of(value).as_deref(), Some(host), "{value}");
        }
        let bad = [
            "",
            "evil.org/path",
            "user@evil.org",
            "a.org:80:80",
            "a.org:",
            "a.org:http",
            "<script>",
            "[not-ip]:80",
            "[::1]x",
            "a b.org",
        ];
        for value in bad {
            assert_eq!(host_of(value), None, "{value}");
        }
    }
}
