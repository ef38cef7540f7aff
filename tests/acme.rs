//! HTTPS with a certificate the daemon gets itself (`[tls.acme]`), against Debian's
//! `pebble`: the daemon orders a certificate for `localhost` (TLS-ALPN-01 on its HTTPS
//! port, or HTTP-01 on its plain listener), serves it to a client that trusts pebble's
//! root over HTTP/2 and HTTP/1.1, shows its days left in `/healthz` and `/metrics`, and
//! after a restart serves the same certificate from the store without a second order; a
//! due one is renewed, a failed renewal keeps it and backs off, and two instances on one
//! Redis store serve one certificate, and behind one address answer each other's HTTP-01
//! checks.
//! The plain listener answers 308 to HTTPS, and 400 to a Host that is no host name.

mod common;

#[path = "acme_support/pebble.rs"]
mod pebble;

use bytes::Bytes;
use common::{Config, Daemon, Upstream, ok_or_stream};
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pebble::{Pebble, Relay, fixture};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The client side: trusting only pebble's root.
fn tls_client(root_pem: &str, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tls
}

/// `GET https://localhost:{port}{path}` over HTTP/2 or HTTP/1.1: status, version, body.
async fn get(root: &str, port: u16, path: &str, h2: bool) -> Option<(u16, Version, String)> {
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(tls_client(root, &[]))
        .https_only();
    let https = if h2 {
        builder.enable_http2().build()
    } else {
        builder.enable_http1().build()
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build(https);
    let req = Request::get(format!("https://localhost:{port}{path}"))
        .header("authorization", format!("Bearer {}", common::METRICS_TOKEN))
        .body(Full::default())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .ok()?
        .ok()?;
    let (status, version) = (resp.status().as_u16(), resp.version());
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, version, String::from_utf8_lossy(&body).into_owned()))
}

/// The leaf certificate the daemon serves to a handshake for `localhost`.
async fn served_leaf(root: &str, addr: SocketAddr) -> Option<Vec<u8>> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_client(root, &[b"h2"])));
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.ok()?;
    let leaf = tls.get_ref().1.peer_certificates()?.first()?;
    Some(leaf.to_vec())
}

/// Polls until the daemon serves a certificate pebble issued; answers its leaf.
async fn wait_for_certificate(d: &Daemon, p: &Pebble, root: &str) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(leaf) = served_leaf(root, d.addr).await {
            return leaf;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no certificate from pebble was served:\n{}\n---- pebble ----\n{}",
            d.logs().join("\n"),
            p.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The daemon's plain listener, from its `redirecting to HTTPS on ADDR` line (the last,
/// after a restart).
fn redirect_addr(d: &Daemon) -> SocketAddr {
    let line = d
        .logs()
        .into_iter()
        .rev()
        .find(|l| l.contains("redirecting to HTTPS on "))
        .expect("the redirect listener's address in the log");
    let at = line.find("redirecting to HTTPS on ").unwrap() + "redirecting to HTTPS on ".len();
    line[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// `[tls.acme]` for `localhost` from pebble, with `extra` lines in the table.
fn acme_config(up: &Upstream, p: &Pebble, challenge: &str, extra: &str) -> Config {
    let q = |s: &str| serde_json::to_string(s).unwrap();
    Config::new(up).extra(&format!(
        "[tls]\nredirect_listen = \"127.0.0.1:0\"\n\n[tls.acme]\ndomains = [\"localhost\"]\n\
         contact = \"mailto:admin@example.org\"\ndirectory_url = {}\nca_file = {}\n\
         challenge = {}\n{extra}\n",
        q(&p.directory_url()),
        q(fixture("ca.pem").to_str().unwrap()),
        q(challenge),
    ))
}

struct Setup {
    up: Upstream,
    pebble: Pebble,
    https: Relay,
    plain: Relay,
    daemon: Daemon,
    root: String,
}

impl Setup {
    /// Points the relays at the daemon's listeners (again, after a restart).
    fn point(&self) {
        self.https.point(self.daemon.addr);
        self.plain.point(redirect_addr(&self.daemon));
    }
}

/// Pebble (validating through the relays), then the daemon (with `top`, top-level TOML
/// such as `store = …`), the relays pointed at it.
async fn setup(challenge: &str, top: &str) -> Setup {
    let up = Upstream::start(ok_or_stream).await;
    let (https, plain) = (Relay::start().await, Relay::start().await);
    let pebble = Pebble::start(plain.port, https.port).await;
    let root = pebble.root().await;
    let cfg = acme_config(&up, &pebble, challenge, "");
    let daemon = Daemon::start_with_top_level(&cfg, top).await;
    let s = Setup {
        up,
        pebble,
        https,
        plain,
        daemon,
        root,
    };
    s.point();
    s
}

/// Polls the log until `needle` is in `n` lines; answers the last of them.
async fn wait_lines(d: &Daemon, needle: &str, n: usize) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let found: Vec<String> = d
            .logs()
            .into_iter()
            .filter(|l| l.contains(needle))
            .collect();
        if found.len() >= n {
            return found.last().unwrap().clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not {n} lines with {needle:?}:\n{}",
            d.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_certificate_ordered_by_tls_alpn_01_is_served_and_kept_across_a_restart() {
    let mut s = setup("tls-alpn-01", "").await;
    let root = s.root.clone();
    let leaf = wait_for_certificate(&s.daemon, &s.pebble, &root).await;
    let port = s.daemon.addr.port();
    for (h2, version) in [(true, Version::HTTP_2), (false, Version::HTTP_11)] {
        let (status, v, body) = get(&root, port, "/healthz", h2)
            .await
            .expect("an answer over HTTPS");
        assert_eq!((status, v), (200, version), "{body}");
        let health: serde_json::Value = serde_json::from_str(&body).unwrap();
        let days = health["tls_days_left"].as_i64().expect("tls_days_left");
        assert!(days > 30, "pebble issues for years: {body}");
    }
    let (status, _, metrics) = get(&root, port, "/metrics", false).await.unwrap();
    assert_eq!(status, 200, "{metrics}");
    let gauge = metrics
        .lines()
        .find(|l| l.starts_with("gemini_balance_tls_cert_expiry_days "))
        .expect("the expiry gauge");
    let days: f64 = gauge.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(days > 30.0, "{gauge}");
    assert_eq!(s.pebble.orders(), 1, "{}", s.pebble.logs().join("\n"));

    s.daemon.restart().await;
    s.point();
    // Served from the first handshake on: the kept certificate is loaded before listening.
    let again = served_leaf(&root, s.daemon.addr).await;
    assert_eq!(again, Some(leaf), "the kept certificate after the restart");
    s.daemon
        .wait_log("ACME: serving the certificate kept in the store")
        .await;
    assert_eq!(s.pebble.orders(), 1, "no second order after the restart");
    let ordering = s
        .daemon
        .logs()
        .iter()
        .filter(|l| l.contains("ACME: ordering a certificate"))
        .count();
    assert_eq!(ordering, 1, "{}", s.daemon.logs().join("\n"));
}

#[tokio::test]
async fn a_due_certificate_is_renewed_and_a_failed_renewal_keeps_it_and_backs_off() {
    let mut s = setup("tls-alpn-01", "").await;
    let root = s.root.clone();
    let first = wait_for_certificate(&s.daemon, &s.pebble, &root).await;
    // Pebble's certificates last five years: with ten to go, the kept one is due.
    let due = acme_config(&s.up, &s.pebble, "tls-alpn-01", "renew_before = \"3650d\"");
    s.daemon.restart_with(&due).await;
    s.point();
    let line = wait_lines(&s.daemon, "ACME: ordering a certificate", 2).await;
    assert!(line.contains("days left"), "{line}");
    wait_lines(&s.daemon, "ACME: new certificate served", 2).await;
    let second = served_leaf(&root, s.daemon.addr).await.expect("served");
    assert_ne!(
        second, first,
        "the renewed certificate serves new connections"
    );
    assert_eq!(s.pebble.orders(), 2);
    s.daemon.wait_log("renew_before is longer").await;

    // Without the CA, the renewal fails, is retried later, and the kept one goes on.
    let Setup {
        pebble, mut daemon, ..
    } = s;
    drop(pebble);
    daemon.restart().await;
    let failed = wait_lines(&daemon, "ACME: no certificate this time", 1).await;
    assert!(failed.contains("retry_in=1m"), "{failed}");
    assert_eq!(served_leaf(&root, daemon.addr).await, Some(second));
    // SIGHUP retries at once, not a minute later; the next wait is twice as long.
    let hup = tokio::time::Instant::now();
    daemon.signal("HUP");
    let again = wait_lines(&daemon, "ACME: no certificate this time", 2).await;
    assert!(again.contains("retry_in=2m"), "{again}");
    assert!(
        hup.elapsed() < Duration::from_secs(30),
        "{:?}",
        hup.elapsed()
    );
}

#[tokio::test]
async fn instances_sharing_redis_serve_one_certificate() {
    let redis = common::redis::RedisServer::start();
    let top = format!("store = {:?}\n", redis.url());
    let s = setup("tls-alpn-01", &top).await;
    let leaf = wait_for_certificate(&s.daemon, &s.pebble, &s.root).await;
    let cfg = acme_config(&s.up, &s.pebble, "tls-alpn-01", "");
    let other = Daemon::start_with_top_level(&cfg, &top).await;
    assert_eq!(served_leaf(&s.root, other.addr).await, Some(leaf));
    other
        .wait_log("ACME: serving the certificate kept in the store")
        .await;
    assert_eq!(s.pebble.orders(), 1, "one order for both instances");
}

#[tokio::test]
async fn a_certificate_ordered_by_http_01_on_the_plain_listener_which_otherwise_redirects() {
    let s = setup("http-01", "").await;
    let (daemon, root) = (&s.daemon, &s.root);
    let leaf = wait_for_certificate(daemon, &s.pebble, root).await;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let names = format!(
        "{:?}",
        cert.subject_alternative_name().unwrap().unwrap().value
    );
    assert!(names.contains("localhost"), "{names}");

    let plain = redirect_addr(daemon);
    let https_port = daemon.addr.port();
    let req = "GET /v1beta/models?pageSize=5 HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let r = common::raw::raw(plain, req.as_bytes()).await;
    assert_eq!(r.status, 308, "{}", r.text());
    let to = format!("https://localhost:{https_port}/v1beta/models?pageSize=5");
    assert_eq!(r.header("location"), Some(to.as_str()));
    assert!(r.body.is_empty());
    // A host outside the certificate's names is sent to its first name.
    let req = "GET /x HTTP/1.1\r\nHost: evil.example:80\r\n\r\n";
    let r = common::raw::raw(plain, req.as_bytes()).await;
    let to = format!("https://localhost:{https_port}/x");
    assert_eq!((r.status, r.header("location")), (308, Some(to.as_str())));
    // A Host that is no host name is refused, and never echoed.
    let req = "GET / HTTP/1.1\r\nHost: <script>alert(1)</script>\r\n\r\n";
    let r = common::raw::raw(plain, req.as_bytes()).await;
    assert_eq!(r.status, 400);
    assert!(!r.text().contains("script"), "{}", r.text());
    // The challenge path answers only for pending tokens.
    let r = common::raw::raw_get(plain, "/.well-known/acme-challenge/unknown").await;
    assert_eq!(r.status, 404);
}

#[test]
fn certificate_files_and_acme_together_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let q = |p: std::path::PathBuf| serde_json::to_string(p.to_str().unwrap()).unwrap();
    let both = format!(
        "[tls]\ncert_file = {}\nkey_file = {}\n\n[tls.acme]\ndomains = [\"gw.example.com\"]\n",
        q(fixture("server.pem")),
        q(fixture("server.key"))
    );
    let cases = [
        (both.as_str(), "both cert_file/key_file and [tls.acme]"),
        ("[tls]\nhsts_max_age = \"1d\"\n", "or a [tls.acme] table"),
        (
            "[tls.acme]\ndomains = [\"gw.example.com\"]\nchallenge = \"http-01\"\n",
            "needs tls.redirect_listen",
        ),
    ];
    for (toml, why) in cases {
        let path = dir.path().join("gb.toml");
        std::fs::write(&path, toml).unwrap();
        let (code, text) = common::check_config(&path);
        assert_ne!(code, Some(0), "{toml}: {text}");
        assert!(text.contains(why), "{toml}: {text}");
    }
}

#[tokio::test]
async fn instances_behind_one_address_answer_each_others_http_01_checks() {
    let redis = common::redis::RedisServer::start();
    let top = format!("store = {:?}\n", redis.url());
    let up = Upstream::start(ok_or_stream).await;
    let (https, plain) = (Relay::start().await, Relay::start().await);
    let pebble = Pebble::start(plain.port, https.port).await;
    let root = pebble.root().await;
    let cfg = acme_config(&up, &pebble, "http-01", "");
    let first = Daemon::start_with_top_level(&cfg, &top).await;
    first.wait_log("ACME: ordering a certificate").await;
    // The address leads only to the second instance: it answers the first one's check
    // from the shared store (the relay holds pebble's connection until pointed).
    let second = Daemon::start_with_top_level(&cfg, &top).await;
    plain.point(redirect_addr(&second));
    https.point(second.addr);
    wait_for_certificate(&first, &pebble, &root).await;
    wait_for_certificate(&second, &pebble, &root).await;
    let left = redis.cli(&["HKEYS", "gemini-balance:meta"]);
    assert!(!left.contains("acme.http-01."), "answers removed: {left}");
}
