//! Live sessions as an operator sees them: the live feed shows them open and closed, a
//! client that vanishes frees its key and
//! its user's slot at once, a session past the user's daily budget is closed with the
//! reason, open sessions cost little memory, `wss://` works on the `[tls]` listener,
//! idle sessions are closed, and SIGTERM closes sessions with 1001 "going away" after
//! the grace period.

mod common;

use common::admin::{admin_ok, login};
use common::live::FakeLive;
use common::live_client::{
    self as lc, LIVE_PATH, MODEL, alice, fake_brief, keys_in_flight, live_records, opened,
    text_turn,
};
use common::{Config, Daemon, USER_KEY, key, wait_for};
use futures_util::SinkExt;
use http::Method;
use serde_json::json;
use std::time::Duration;

const PASSWORD: &str = "live-ops-admin-pw-3";

fn config(fake: &FakeLive, keys: usize) -> Config {
    Config::with_url(&fake.url())
        .keys(common::keys(keys))
        .admin_password(PASSWORD)
}

#[tokio::test]
async fn a_client_that_vanishes_frees_the_key_and_its_user_slot_at_once() {
    let fake = FakeLive::start().await;
    let d = Daemon::start(&config(&fake, 1)).await;
    let token = login(&d, PASSWORD).await;
    let id = alice(&d, &token).await["id"].as_str().unwrap().to_owned();
    let limit = json!({ "max_concurrent": 1 });
    admin_ok(
        &d,
        Method::PATCH,
        &format!("/api/users/{id}"),
        &token,
        Some(limit),
    )
    .await;

    let mut ws = opened(&d).await;
    let (said, _) = text_turn(&mut ws, "one").await;
    assert_eq!(said, "echo: one");
    assert_eq!(alice(&d, &token).await["in_flight"], 1);
    assert_eq!(keys_in_flight(&d, &token).await, 1);
    // The admin API lists it among the open sessions, with its tokens so far.
    let open = admin_ok(&d, Method::GET, "/api/live", &token, None).await;
    let s = &open["sessions"][0];
    assert_eq!(s["user"], common::USER_NAME, "{open}");
    assert_eq!(s["model"], MODEL, "{open}");
    assert_eq!(s["tokens"], 15, "{open}");
    assert_eq!(s["route"], "live.bidiGenerateContent", "{open}");
    // A second session is over alice's limit.
    let over = lc::connect(d.addr, LIVE_PATH, &[("x-goog-api-key", USER_KEY)]).await;
    assert!(over.is_err(), "the second concurrent session is refused");

    drop(ws); // gone: no close frame, the socket just goes
    wait_for("the slots to be free", Duration::from_secs(1), || async {
        let (user, keys) = (
            alice(&d, &token).await["in_flight"].clone(),
            keys_in_flight(&d, &token).await,
        );
        let open = admin_ok(&d, Method::GET, "/api/live", &token, None).await;
        let listed = open["sessions"].as_array().unwrap().len();
        match (user.as_u64(), keys, fake.open(), listed) {
            (Some(0), 0, 0, 0) => Ok(()),
            other => Err(format!("user, keys, upstream, listed: {other:?}")),
        }
    })
    .await;
    let mut again = opened(&d).await;
    let (said, _) = text_turn(&mut again, "two").await;
    assert_eq!(said, "echo: two");
    let rec = wait_for(
        "the vanished session's record",
        Duration::from_secs(10),
        || async {
            let recs = live_records(&d, &token).await;
            recs.into_iter()
                .find(|r| r["outcome"] == "cancelled")
                .ok_or_else(|| "not yet".to_string())
        },
    )
    .await;
    assert_eq!(rec["close_code"], 1006, "{rec}");
    assert_eq!(rec["tokens"]["total"], 15, "{rec}");
}

#[tokio::test]
async fn a_session_past_the_daily_budget_is_closed_with_a_reason() {
    let fake = FakeLive::start().await;
    let d = Daemon::start(&config(&fake, 1)).await;
    let token = login(&d, PASSWORD).await;
    let id = alice(&d, &token).await["id"].as_str().unwrap().to_owned();
    let limit = json!({ "daily_tokens": 40 });
    admin_ok(
        &d,
        Method::PATCH,
        &format!("/api/users/{id}"),
        &token,
        Some(limit),
    )
    .await;

    let mut ws = opened(&d).await;
    text_turn(&mut ws, "one").await;
    text_turn(&mut ws, "two").await;
    // The third turn's usage reaches 45 of 40: the answer arrives, then the close.
    ws.send(lc::turn("three")).await.unwrap();
    let mut said = String::new();
    let close = loop {
        match lc::next_json(&mut ws).await {
            Ok((_, m)) => {
                if let Some(t) = m.pointer("/serverContent/modelTurn/parts/0/text") {
                    said.push_str(t.as_str().unwrap());
                }
            }
            Err(close) => break close,
        }
    };
    assert_eq!(said, "echo: three");
    assert!(
        close.contains("1008") && close.contains("budget"),
        "{close}"
    );
    wait_for(
        "the upstream session to end",
        Duration::from_secs(5),
        || async {
            if fake.open() == 0 {
                Ok(())
            } else {
                Err(format!("{} open", fake.open()))
            }
        },
    )
    .await;
    // The day is used up: the next session is refused before it opens.
    let next = lc::connect(d.addr, LIVE_PATH, &[("x-goog-api-key", USER_KEY)]).await;
    assert!(next.is_err(), "over budget");
    let rec = wait_for("the record", Duration::from_secs(10), || async {
        let recs = live_records(&d, &token).await;
        recs.into_iter()
            .find(|r| r["status"] == 101)
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    assert_eq!(rec["close_code"], 1008, "{rec}");
    assert_eq!(rec["tokens"]["total"], 45, "{rec}");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_open_sessions_cost_under_40_kib_each() {
    const SESSIONS: usize = 200;
    let fake = FakeLive::start().await;
    let d = Daemon::start(&config(&fake, 4)).await;
    // Warm up: the first sessions size the allocator's arenas and the thread caches.
    let mut warm = Vec::new();
    for _ in 0..8 {
        let mut ws = opened(&d).await;
        text_turn(&mut ws, "warm").await;
        warm.push(ws);
    }
    drop(warm);
    wait_for(
        "the warm-up sessions to end",
        Duration::from_secs(5),
        || async {
            if fake.open() == 0 {
                Ok(())
            } else {
                Err(format!("{} open", fake.open()))
            }
        },
    )
    .await;
    let before = rss_kib(d.pid());
    let mut held = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        let mut ws = opened(&d).await;
        text_turn(&mut ws, "hi").await;
        held.push(ws);
    }
    assert_eq!(fake.open(), SESSIONS);
    let after = rss_kib(d.pid());
    let each = after.saturating_sub(before) as f64 / SESSIONS as f64;
    eprintln!(
        "daemon RSS {before} KiB -> {after} KiB with {SESSIONS} sessions: {each:.1} KiB each"
    );
    assert!(each < 40.0, "{each:.1} KiB a session");
    // Every one is still live.
    for ws in held.iter_mut().take(3) {
        let (said, _) = text_turn(ws, "still there").await;
        assert_eq!(said, "echo: still there");
    }
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// A TLS connection to the daemon trusting only the test CA, with no ALPN (as Python's
/// `websockets` opens one).
async fn tls_to(d: &Daemon) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(fixture("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

#[tokio::test]
async fn a_wss_session_on_the_tls_listener() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let fake = FakeLive::start().await;
    let q = |p: std::path::PathBuf| serde_json::to_string(p.to_str().unwrap()).unwrap();
    let tls = format!(
        "[tls]\ncert_file = {}\nkey_file = {}\n",
        q(fixture("server.pem")),
        q(fixture("server.key"))
    );
    let d = Daemon::start(&config(&fake, 1).extra(&tls)).await;
    // google-genai turns an https base URL into wss:// and sends the key in a header.
    let url = format!("wss://localhost:{}{LIVE_PATH}", d.addr.port());
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("x-goog-api-key", USER_KEY.parse().unwrap());
    let io = tls_to(&d).await;
    let (mut ws, resp) = tokio_tungstenite::client_async(req, io).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(lc::setup(lc::MODEL)).await.unwrap();
    let (_, first) = lc::next_json(&mut ws).await.unwrap();
    assert!(first.get("setupComplete").is_some(), "{first}");
    let (said, usage) = text_turn(&mut ws, "over tls").await;
    assert_eq!(said, "echo: over tls");
    assert_eq!(usage["totalTokenCount"], 15);
    ws.close(None).await.unwrap();
    let _ = lc::closed(&mut ws).await;
}

#[tokio::test]
async fn an_idle_session_is_closed() {
    let fake = FakeLive::start().await;
    let cfg = config(&fake, 1).upstream("stream_idle_timeout = \"1s\"");
    let d = Daemon::start(&cfg).await;
    let mut ws = opened(&d).await;
    text_turn(&mut ws, "then silence").await;
    let started = tokio::time::Instant::now();
    let (code, reason) = lc::closed(&mut ws).await.expect("a close frame");
    assert_eq!(code, 1001, "{reason}");
    assert!(reason.contains("idle"), "{reason}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    wait_for(
        "the upstream session to end",
        Duration::from_secs(5),
        || async {
            if fake.open() == 0 {
                Ok(())
            } else {
                Err(format!("{} open", fake.open()))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn sigterm_closes_sessions_with_going_away_after_the_grace_period() {
    let fake = FakeLive::start().await;
    let cfg = config(&fake, 1).extra("[server]\nshutdown_grace = \"1s\"\n");
    let mut d = Daemon::start(&cfg).await;
    let mut ws = opened(&d).await;
    let asked = tokio::time::Instant::now();
    d.signal("TERM");
    // Within the grace period the session goes on.
    let (said, _) = text_turn(&mut ws, "during the grace").await;
    assert_eq!(said, "echo: during the grace");
    let (code, reason) = lc::closed(&mut ws).await.expect("a close frame");
    assert_eq!((code, reason.as_str()), (1001, "going away"));
    assert!(
        asked.elapsed() >= Duration::from_millis(900),
        "closed before the grace: {:?}",
        asked.elapsed()
    );
    let status = d.wait_exited(Duration::from_secs(10)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    wait_for(
        "the upstream session to end",
        Duration::from_secs(5),
        || async {
            if fake.open() == 0 {
                Ok(())
            } else {
                Err(format!("{} open", fake.open()))
            }
        },
    )
    .await;
    // The session's record was written before the daemon stopped.
    d.restart().await;
    let token = login(&d, PASSWORD).await;
    let recs = live_records(&d, &token).await;
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["close_code"], 1001, "{recs:?}");
    assert_eq!(recs[0]["outcome"], "cancelled", "{recs:?}");
}

#[tokio::test]
async fn the_feed_shows_a_session_when_it_opens_and_its_record_when_it_closes() {
    let fake = FakeLive::start().await;
    let d = Daemon::start(&config(&fake, 1)).await;
    let r = common::admin::login_resp(&d, PASSWORD).await;
    let set = r.header("set-cookie").expect("Set-Cookie");
    let cookie = set.split(';').next().unwrap().trim().to_string();
    let mut feed = common::client::send(
        Method::GET,
        &d.url("/api/events"),
        &[("cookie", cookie.as_str())],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(feed.status, 200);
    feed.read_until("the feed's first bytes", common::has_sse_event)
        .await;
    let events = |b: &[u8], kind: &str| -> Vec<serde_json::Value> {
        let text = common::lf(b);
        text.split("\n\n")
            .filter(|e| e.lines().any(|l| l == format!("event: {kind}")))
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    };
    let mut ws = opened(&d).await;
    let got = feed
        .read_until("an `event: session`", |b| !events(b, "session").is_empty())
        .await;
    let open = events(&got, "session").remove(0);
    assert_eq!(open["state"], "open", "{open}");
    assert_eq!(open["model"], MODEL, "{open}");
    assert_eq!(open["user"], common::USER_NAME, "{open}");
    assert_eq!(open["key"], fake_brief(&key(0)), "{open}");
    text_turn(&mut ws, "hi").await;
    ws.close(None).await.unwrap();
    let got = feed
        .read_until("the session's `event: request`", |b| {
            events(b, "request")
                .iter()
                .any(|r| r["request_id"] == open["request_id"])
        })
        .await;
    let rec = events(&got, "request").remove(0);
    assert_eq!(rec["route"], "live.bidiGenerateContent", "{rec}");
    assert_eq!(rec["tokens"]["total"], 15, "{rec}");
}

#[tokio::test]
async fn open_sessions_hold_their_connections_place_under_the_caps() {
    let fake = FakeLive::start().await;
    let cfg = config(&fake, 2).extra("[server]\nmax_connections_per_ip = 2\n");
    let d = Daemon::start(&cfg).await;
    // The start-up probe's connection may still be winding down on the daemon's side, so
    // the first two sessions retry until they hold the two places.
    let mut one = open_when_a_place_is_free(&d).await;
    let two = open_when_a_place_is_free(&d).await;
    // A third connection from the same address is closed at once, upgraded or not.
    let third = lc::connect(d.addr, LIVE_PATH, &[("x-goog-api-key", USER_KEY)]).await;
    assert!(third.is_err(), "over max_connections_per_ip");
    text_turn(&mut one, "still served").await;
    drop(two);
    open_when_a_place_is_free(&d).await;
}

/// Connects as alice, retrying while the per-address cap refuses, and has the session accepted.
async fn open_when_a_place_is_free(d: &Daemon) -> lc::Client {
    let mut ws = wait_for("a place to come free", Duration::from_secs(5), || async {
        match lc::connect(d.addr, LIVE_PATH, &[("x-goog-api-key", USER_KEY)]).await {
            Ok(ws) => Ok(ws),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    ws.send(lc::setup(MODEL)).await.unwrap();
    let (_, first) = lc::next_json(&mut ws).await.unwrap();
    assert!(first.get("setupComplete").is_some(), "{first}");
    ws
}
