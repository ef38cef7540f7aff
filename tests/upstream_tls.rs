//! Black-box tests of the way to Google (SPEC 1): TLS with rustls, HTTP/2 where the
//! upstream offers it and HTTP/1.1 where it does not, and no trust in certificates the
//! roots do not vouch for. The fake upstream serves TLS with a test certificate for
//! 127.0.0.1 (`tests/fixtures/tls`); `upstream.extra_ca_file` makes the daemon trust its CA.

mod common;

use common::upstream::{chunk_with_finish, test_ca_path};
use common::*;
use serde_json::Value;

async fn generate(d: &Daemon) -> Response {
    client::post(
        &d.url(&model_path(FLASH, "generateContent")),
        &user_auth(),
        GENERATE_BODY,
    )
    .await
}

fn ok_or_stream(r: &Recorded) -> Reply {
    if r.is_stream() {
        StreamReply::sse(vec![chunk("one"), chunk("two")]).into()
    } else {
        Reply::generate_ok("hello")
    }
}

fn trusting(up: &Upstream) -> Config {
    let ca = serde_json::to_string(test_ca_path().to_str().unwrap()).unwrap();
    Config::new(up).upstream(&format!("extra_ca_file = {ca}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_offering_http2_is_spoken_to_over_http2() {
    let up = Upstream::start_tls(ok_or_stream, &["h2", "http/1.1"]).await;
    let d = Daemon::start(&trusting(&up)).await;

    let r = generate(&d).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), chunk_with_finish("hello", Some("STOP")));
    let url = d.url(&format!(
        "{}?alt=sse",
        model_path(FLASH, "streamGenerateContent")
    ));
    let r = client::post(&url, &user_auth(), GENERATE_BODY).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let texts: Vec<String> = sse_json_events(&r.body)
        .iter()
        .filter_map(|e| chunk_text(e).map(str::to_owned))
        .collect();
    assert_eq!(texts, ["one", "two"]);

    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    for rec in &seen {
        assert_eq!(
            rec.version,
            http::Version::HTTP_2,
            "{} {}",
            rec.method,
            rec.path
        );
        assert!(rec.key().is_some_and(|k| k.starts_with("AIzaFAKE")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_offering_only_http1_gets_http1_with_its_host() {
    let up = Upstream::start_tls(ok_or_stream, &["http/1.1"]).await;
    let d = Daemon::start(&trusting(&up)).await;
    for _ in 0..2 {
        let r = generate(&d).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    for rec in &seen {
        assert_eq!(rec.version, http::Version::HTTP_11);
        let hosts: Vec<_> = rec.headers.get_all("host").iter().collect();
        assert_eq!(hosts, [up.addr.to_string().as_str()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_the_roots_do_not_vouch_for_is_refused() {
    let up = Upstream::start_tls(ok_or_stream, &["h2", "http/1.1"]).await;
    let d = Daemon::start(&Config::new(&up)).await;
    let r = generate(&d).await;
    assert!(
        r.status >= 500,
        "an untrusted upstream answered: {}",
        r.text()
    );
    let v: Value = r.json();
    assert_google_error_value(&v, None, None);
    assert!(
        up.requests().is_empty(),
        "no request crossed the failed handshake"
    );
}

#[test]
fn check_config_names_an_unusable_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("ca.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n").unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let missing = dir.path().join("missing.pem");
    for (file, why) in [
        (&garbage, "not a PEM certificate file"),
        (&empty, "no certificate in it"),
        (&missing, "upstream.extra_ca_file"),
    ] {
        let config = dir.path().join("gemini-balance.toml");
        let ca = serde_json::to_string(file.to_str().unwrap()).unwrap();
        std::fs::write(&config, format!("[upstream]\nextra_ca_file = {ca}\n")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gemini-balance"))
            .arg("check-config")
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .env_remove("GEMINI_BALANCE_ADMIN_PASSWORD")
            .output()
            .expect("run check-config");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_ne!(out.status.code(), Some(0), "{file:?} accepted: {text}");
        assert!(text.contains("upstream.extra_ca_file"), "{text}");
        assert!(text.contains(why), "{why:?} missing from: {text}");
    }
}
