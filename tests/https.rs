//! HTTPS for clients from certificate files (`[tls]`): google-genai-shaped and
//! OpenAI-shaped calls over HTTP/2 and HTTP/1.1, HSTS on every answer, a certificate
//! swapped on disk served to new connections without a restart while an open connection
//! goes on, bad files refused at start with the file and the reason, and the plain
//! listener (`redirect_listen`) answering 308 to HTTPS on the client's host.
//!
//! The certificates are the test-only ones of `tests/fixtures/tls` (two CAs, each with a
//! certificate for 127.0.0.1 and localhost).

mod common;

use bytes::Bytes;
use common::{Config, Daemon, Recorded, Reply, USER_KEY, Upstream, model_path, ok_or_stream};
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// A client trusting only `ca`, speaking only HTTP/2 or only HTTP/1.1.
fn client(ca: &str, h2: bool) -> HttpsClient {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(fixture(ca)).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only();
    let connector = if h2 {
        builder.enable_http2().build()
    } else {
        builder.enable_http1().build()
    };
    Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build(connector)
}

struct Answer {
    status: u16,
    version: Version,
    hsts: Option<String>,
    body: String,
}

async fn post(c: &HttpsClient, d: &Daemon, path: &str, auth: (&str, &str), body: &str) -> Answer {
    let url = d.url(path).replacen("http://", "https://", 1);
    let req = Request::post(url)
        .header(auth.0, auth.1)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let resp = tokio::time::timeout(common::client::TIMEOUT, c.request(req))
        .await
        .expect("an answer in time")
        .expect("an answer");
    let (status, version) = (resp.status().as_u16(), resp.version());
    let hsts = resp
        .headers()
        .get("strict-transport-security")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        version,
        hsts,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Polls `/healthz` over HTTPS (trusting `ca`) until it answers 200.
async fn wait_healthy(d: &Daemon, ca: &str) {
    let deadline = tokio::time::Instant::now() + common::client::TIMEOUT;
    let c = client(ca, false);
    let url = d.url("/healthz").replacen("http://", "https://", 1);
    loop {
        let req = Request::get(&url).body(Full::default()).unwrap();
        let probe = tokio::time::timeout(Duration::from_secs(2), c.request(req)).await;
        if matches!(probe, Ok(Ok(ref r)) if r.status() == 200) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/healthz over HTTPS never answered 200:\n{}",
            d.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn tls_table(dir: &Path) -> String {
    let q = |p: PathBuf| serde_json::to_string(p.to_str().unwrap()).unwrap();
    format!(
        "[tls]\ncert_file = {}\nkey_file = {}\nwatch_interval = \"100ms\"\n",
        q(dir.join("server.pem")),
        q(dir.join("server.key"))
    )
}

/// The first CA's pair, copied where the test may swap it.
fn cert_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["server.pem", "server.key"] {
        std::fs::copy(fixture(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn answer(r: &Recorded) -> Reply {
    if r.path.ends_with("/chat/completions") {
        Reply::openai_chat_ok()
    } else {
        ok_or_stream(r)
    }
}

#[tokio::test]
async fn native_and_openai_calls_over_https_on_http2_and_http11() {
    let up = Upstream::start(answer).await;
    let certs = cert_dir();
    let cfg = Config::new(&up)
        .admin_password("https-admin-pw")
        .extra(&tls_table(certs.path()));
    let d = Daemon::start(&cfg).await;
    wait_healthy(&d, "ca.pem").await;
    let native = model_path(common::FLASH, "generateContent");
    let stream = format!(
        "{}?alt=sse",
        model_path(common::FLASH, "streamGenerateContent")
    );
    let chat = r#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"Hi"}]}"#;
    for (h2, version) in [(true, Version::HTTP_2), (false, Version::HTTP_11)] {
        let c = client("ca.pem", h2);
        let g = post(
            &c,
            &d,
            &native,
            ("x-goog-api-key", USER_KEY),
            common::GENERATE_BODY,
        )
        .await;
        assert_eq!(g.status, 200, "{}", g.body);
        assert_eq!(g.version, version);
        assert!(g.body.contains("hello"), "{}", g.body);
        let hsts = g.hsts.expect("HSTS over HTTPS");
        assert!(hsts.starts_with("max-age="), "{hsts}");
        let s = post(
            &c,
            &d,
            &stream,
            ("x-goog-api-key", USER_KEY),
            common::GENERATE_BODY,
        )
        .await;
        assert_eq!(s.status, 200, "{}", s.body);
        assert!(s.body.contains("data: "), "SSE events: {}", s.body);
        let bearer = format!("Bearer {USER_KEY}");
        let o = post(
            &c,
            &d,
            "/v1/chat/completions",
            ("authorization", &bearer),
            chat,
        )
        .await;
        assert_eq!(o.status, 200, "{}", o.body);
        assert!(o.body.contains("choices"), "{}", o.body);
    }
    // The admin session cookie is Secure when it was set over HTTPS.
    let c = client("ca.pem", false);
    let url = d.url("/api/login").replacen("http://", "https://", 1);
    let req = Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(r#"{"password":"https-admin-pw"}"#)))
        .unwrap();
    let login = c.request(req).await.unwrap();
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("; Secure"), "{cookie}");
}

#[tokio::test]
async fn a_certificate_swapped_on_disk_serves_new_connections_without_a_restart() {
    let up = Upstream::start(answer).await;
    let certs = cert_dir();
    let d = Daemon::start(&Config::new(&up).extra(&tls_table(certs.path()))).await;
    wait_healthy(&d, "ca.pem").await;
    let native = model_path(common::FLASH, "generateContent");
    let auth = ("x-goog-api-key", USER_KEY);
    let open = client("ca.pem", true);
    let first = post(&open, &d, &native, auth, common::GENERATE_BODY).await;
    assert_eq!(first.status, 200, "{}", first.body);

    // The second CA's pair replaces the first, each file renamed into place whole.
    for f in ["server.key", "server.pem"] {
        let tmp = certs.path().join(format!("{f}.new"));
        std::fs::copy(fixture(&format!("second/{f}")), &tmp).unwrap();
        std::fs::rename(&tmp, certs.path().join(f)).unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        // A fresh client each time: a new connection, a new handshake.
        let fresh = client("second/ca.pem", false);
        let url = d.url("/healthz").replacen("http://", "https://", 1);
        let req = Request::get(url).body(Full::default()).unwrap();
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(5), fresh.request(req)).await {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served:\n{}",
            d.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection opened before the swap goes on with the certificate it has.
    let again = post(&open, &d, &native, auth, common::GENERATE_BODY).await;
    assert_eq!(again.status, 200, "{}", again.body);
    // A client that trusts only the old CA cannot connect any more.
    let old = client("ca.pem", false);
    let url = d.url("/healthz").replacen("http://", "https://", 1);
    let refused = old
        .request(Request::get(url).body(Full::default()).unwrap())
        .await;
    assert!(refused.is_err(), "the old certificate is no longer served");
}

/// Runs `serve` with `tls` and answers its exit code and output; it must not start.
fn refused_start(tls: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("gb.toml");
    let cfg = Config::with_url("http://127.0.0.1:9").extra(tls);
    std::fs::write(&conf, cfg.to_toml()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gemini-balance"))
        .arg("serve")
        .arg("--config")
        .arg(&conf)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("RUST_LOG")
        .env_remove("GEMINI_BALANCE_CONFIG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn bad_certificate_files_stop_the_start_with_the_file_and_the_reason() {
    let q = |p: PathBuf| serde_json::to_string(p.to_str().unwrap()).unwrap();
    let cases = [
        (
            fixture("server.pem"),
            fixture("other.key"),
            "does not belong",
        ),
        (fixture("server.pem"), fixture("missing.key"), "missing.key"),
        (fixture("README.md"), fixture("server.key"), "README.md"),
    ];
    for (cert, key, why) in cases {
        let tls = format!(
            "[tls]\ncert_file = {}\nkey_file = {}\n",
            q(cert),
            q(key.clone())
        );
        let (code, text) = refused_start(&tls);
        assert_ne!(code, Some(0), "{text}");
        assert!(text.contains(why), "{}: {text}", key.display());
        assert!(!text.contains("listening on"), "{text}");
    }
}

#[tokio::test]
async fn the_plain_listener_redirects_to_https_on_the_clients_host() {
    let up = Upstream::start(answer).await;
    let certs = cert_dir();
    let tls = tls_table(certs.path()).replacen(
        "[tls]\n",
        "[tls]\nredirect_listen = \"127.0.0.1:0\"\n",
        1,
    );
    let d = Daemon::start(&Config::new(&up).extra(&tls)).await;
    wait_healthy(&d, "ca.pem").await;
    let line = d.wait_log("redirecting to HTTPS on ").await;
    let plain: std::net::SocketAddr = line
        .rsplit("redirecting to HTTPS on ")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .expect("the plain listener's address");
    let req = "GET /v1beta/models?pageSize=2 HTTP/1.1\r\nHost: GW.example.com:80\r\n\r\n";
    let r = common::raw::raw(plain, req.as_bytes()).await;
    assert_eq!(r.status, 308, "{}", r.text());
    let to = format!(
        "https://gw.example.com:{}/v1beta/models?pageSize=2",
        d.addr.port()
    );
    assert_eq!(r.header("location"), Some(to.as_str()));
    // Nothing else is served there: not the proxy, not the admin page.
    let req = "GET /api/keys HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let r = common::raw::raw(plain, req.as_bytes()).await;
    assert_eq!(r.status, 308);
    assert!(r.body.is_empty());
}
