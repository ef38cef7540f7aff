//! Reliability (issue 10), black-box: a short soak through the same code as
//! `examples/soak.rs`; `kill -9` under load, in a loop, checking what survives; clients
//! that vanish mid-stream; non-stream answers the upstream breaks after its headers; and
//! hostile input (malformed JSON, wrong content types, invalid UTF-8, enormous headers,
//! thousands of query parameters, empty bodies) answered with a clear 4xx.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::client;
use common::faults::{self, Fault, FaultUpstream, Profile};
use common::{Config, Daemon, GENERATE_BODY, Reply, USER_KEY, Upstream, model_path, user_auth};
use http::Method;
use serde_json::{Value, json};

#[allow(dead_code)]
#[path = "../examples/soak_support"]
mod soak_support {
    pub mod http;
    pub mod proc;
    pub mod run;
}

const PASSWORD: &str = "reliability-admin-pw";
const FLASH: &str = "gemini-2.5-flash";

async fn login(d: &Daemon) -> String {
    common::admin::login(d, PASSWORD).await
}

async fn admin(
    d: &Daemon,
    token: &str,
    method: Method,
    path: &str,
    body: Value,
) -> client::Response {
    let auth = format!("Bearer {token}");
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    client::request(method, &d.url(path), &[("authorization", &auth)], body).await
}

async fn admin_json(d: &Daemon, token: &str, path: &str) -> Value {
    let r = admin(d, token, Method::GET, path, Value::Null).await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r.json()
}

async fn all_logs(d: &Daemon, token: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = if cursor.is_empty() {
            "/api/logs?limit=1000".to_string()
        } else {
            format!("/api/logs?limit=1000&cursor={cursor}")
        };
        let v = admin_json(d, token, &path).await;
        out.extend(v["logs"].as_array().cloned().unwrap_or_default());
        match v["next_cursor"].as_str() {
            Some(c) if !c.is_empty() => cursor = c.to_string(),
            _ => return out,
        }
    }
}

fn brief_of<'a>(keys: &'a [Value], key: &str) -> Option<&'a Value> {
    keys.iter().find(|v| {
        let b = v["brief"].as_str().unwrap_or("");
        b.starts_with(&key[..4]) && b.ends_with(&key[key.len() - 4..])
    })
}

/// Polls `cond` every 20 ms for up to `limit`.
async fn eventually<F: std::future::Future<Output = bool>>(
    limit: Duration,
    mut cond: impl FnMut() -> F,
) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- soak

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_ten_seconds_of_mixed_faulty_traffic_keeps_every_invariant() {
    let settings = soak_support::run::Settings {
        seconds: 10,
        clients: 8,
        seed: 10,
        daemon: env!("CARGO_BIN_EXE_gemini-balance").into(),
    };
    let report = soak_support::run::run(settings).await.expect("soak ran");
    println!("{}", report.render());
    assert!(
        report.passed(),
        "soak invariants failed:\n{}",
        report.render()
    );
}

// ---------------------------------------------------------------- crash loop

fn crash_key(tag: &str) -> String {
    format!("AIzaCRASH-0123456789abcdefgh-{tag:0>6}")
}

/// What the load recorded: request ids with the moment their answer was complete.
type Done = Arc<Mutex<Vec<(String, Instant)>>>;

fn start_load(d: &Daemon, users: Vec<String>, done: Done) -> Vec<tokio::task::JoinHandle<()>> {
    (0..6)
        .map(|i| {
            let (base, users, done) = (d.url(""), users.clone(), done.clone());
            tokio::spawn(async move {
                let mut n = i;
                loop {
                    n += 1;
                    let user = &users[n % users.len()];
                    let path = if n % 3 == 0 {
                        format!("{}?alt=sse", model_path(FLASH, "streamGenerateContent"))
                    } else {
                        model_path(FLASH, "generateContent")
                    };
                    let url = format!("{base}{path}");
                    let user = user.clone();
                    // A killed daemon makes the harness client panic inside `send`: run it
                    // in a task so this loop just stops.
                    let r = tokio::spawn(async move {
                        let headers = [("x-goog-api-key", user.as_str())];
                        client::send(Method::POST, &url, &headers, GENERATE_BODY)
                            .await
                            .read_to_end()
                            .await
                    })
                    .await;
                    let Ok(r) = r else { return };
                    if r.status == 200 && r.body_error.is_none() {
                        if let Some(id) = r.header("x-request-id") {
                            done.lock().unwrap().push((id, Instant::now()));
                        }
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_minus_nine_under_load_loses_only_the_log_batching_window() {
    const CYCLES: usize = 5;
    let healthy: Vec<String> = (0..4).map(|i| crash_key(&format!("ok{i}"))).collect();
    let broken = crash_key("broken");
    let quota = crash_key("quota");
    let up = FaultUpstream::start(7, Profile::healthy().latency(Duration::from_millis(15))).await;
    up.set_profile(&broken, Profile::always(Fault::Status(400)));
    up.set_profile(
        &quota,
        Profile::always(Fault::Status(429)).retry_delay("600s"),
    );
    let mut all_keys = healthy.clone();
    all_keys.extend([broken.clone(), quota.clone()]);
    let cfg = Config::with_url(&up.url())
        .keys(all_keys.clone())
        .admin_password(PASSWORD);
    let mut d = Daemon::start(&cfg).await;

    let mut added_keys: Vec<(String, String)> = Vec::new(); // (key, note)
    let mut users: Vec<(String, String)> = Vec::new(); // (name, secret)
    let mut completed_total = 0usize;
    let mut lost_total = 0usize;
    let mut lost_outside_window = Vec::new();
    let mut worst_loss_age = Duration::ZERO;
    for cycle in 0..CYCLES {
        let token = login(&d).await;
        // Admin changes: a key (with a note set in a second call), a user.
        let k = crash_key(&format!("add{cycle}"));
        let r = admin(
            &d,
            &token,
            Method::POST,
            "/api/keys",
            json!({ "keys": [k] }),
        )
        .await;
        assert_eq!(r.status, 200, "add key: {}", r.text());
        assert_eq!(r.json()["added"], 1, "add key: {}", r.text());
        let keys = admin_json(&d, &token, "/api/keys").await;
        let id = brief_of(keys["keys"].as_array().unwrap(), &k).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let note = format!("note of cycle {cycle}");
        let r = admin(
            &d,
            &token,
            Method::PATCH,
            &format!("/api/keys/{id}"),
            json!({ "note": note }),
        )
        .await;
        assert_eq!(r.status, 200, "patch key: {}", r.text());
        added_keys.push((k, note));
        let name = format!("crash-user-{cycle}");
        let r = admin(
            &d,
            &token,
            Method::POST,
            "/api/users",
            json!({ "name": name }),
        )
        .await;
        assert!(
            r.status == 200 || r.status == 201,
            "create user: {}",
            r.text()
        );
        users.push((name, r.json()["key"].as_str().unwrap().to_string()));

        let mut secrets: Vec<String> = users.iter().map(|(_, s)| s.clone()).collect();
        secrets.push(USER_KEY.to_string());
        let done: Done = Arc::default();
        let load = start_load(&d, secrets, done.clone());
        if cycle == 0 {
            // Traffic retires the broken key and cools the quota key.
            let ok = eventually(Duration::from_secs(10), || async {
                let v = admin_json(&d, &token, "/api/keys").await;
                let ks = v["keys"].as_array().unwrap();
                brief_of(ks, &broken).unwrap()["state"] == "invalid"
                    && brief_of(ks, &quota).unwrap()["state"] == "cooling"
            })
            .await;
            assert!(
                ok,
                "the broken key was not retired or the quota key not cooled"
            );
        }
        // Key-state changes get the same window as the log: they must be a second old.
        tokio::time::sleep(Duration::from_millis(1200 + 150 * cycle as u64)).await;
        let killed_at = Instant::now();
        d.crash_restart().await;
        for t in load {
            let _ = t.await;
        }

        // The store opened (the restart waited for /healthz); check what survived.
        let token = login(&d).await;
        let keys = admin_json(&d, &token, "/api/keys").await;
        let ks = keys["keys"].as_array().unwrap().clone();
        for h in &healthy {
            let v = brief_of(&ks, h).unwrap_or_else(|| panic!("cycle {cycle}: lost key {h}"));
            assert_ne!(
                v["state"], "invalid",
                "cycle {cycle}: healthy key retired: {v}"
            );
        }
        assert_eq!(
            brief_of(&ks, &broken).unwrap()["state"],
            "invalid",
            "cycle {cycle}"
        );
        let q = brief_of(&ks, &quota).unwrap();
        assert_eq!(q["state"], "cooling", "cycle {cycle}: quota key {q}");
        for (k, note) in &added_keys {
            let v = brief_of(&ks, k).unwrap_or_else(|| panic!("cycle {cycle}: lost added key {k}"));
            assert_eq!(v["note"], json!(note), "cycle {cycle}: note of {k}");
        }
        let us = admin_json(&d, &token, "/api/users").await;
        let names: HashSet<&str> = us["users"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|u| u["name"].as_str())
            .collect();
        for (name, secret) in &users {
            assert!(
                names.contains(name.as_str()),
                "cycle {cycle}: lost user {name}"
            );
            let r = client::post(
                &d.url(&model_path(FLASH, "generateContent")),
                &[("x-goog-api-key", secret)],
                GENERATE_BODY,
            )
            .await;
            assert_eq!(r.status, 200, "cycle {cycle}: {name}'s key: {}", r.text());
        }
        // Logs: everything finished more than the batching window before the kill is there.
        let logs = all_logs(&d, &token).await;
        let mut seen_ids: HashMap<String, usize> = HashMap::new();
        for l in &logs {
            *seen_ids
                .entry(l["request_id"].as_str().unwrap_or("").to_string())
                .or_default() += 1;
        }
        assert!(
            seen_ids.values().all(|n| *n == 1),
            "cycle {cycle}: duplicated log records"
        );
        let done = done.lock().unwrap().clone();
        completed_total += done.len();
        for (id, at) in &done {
            if seen_ids.contains_key(id) {
                continue;
            }
            lost_total += 1;
            let age = killed_at.saturating_duration_since(*at);
            worst_loss_age = worst_loss_age.max(age);
            if age > Duration::from_secs(1) {
                lost_outside_window.push(format!(
                    "cycle {cycle}: {id} finished {age:?} before the kill"
                ));
            }
        }
    }
    println!(
        "crash loop: {CYCLES} kill -9 cycles, {completed_total} answered requests, \
         {lost_total} log records lost, oldest lost {worst_loss_age:?} before the kill; \
         {} keys + {} users + {} notes added, none lost",
        added_keys.len(),
        users.len(),
        added_keys.len()
    );
    assert!(
        lost_outside_window.is_empty(),
        "log records lost beyond the 1 s batching window:\n{}",
        lost_outside_window.join("\n")
    );
    assert!(completed_total > 50, "too little load: {completed_total}");
}

// ---------------------------------------------------------------- clients that vanish

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_stream_releases_its_slots_and_the_upstream_at_once() {
    // Every stream sends one event, then holds the connection open.
    let up = FaultUpstream::start(1, Profile::always(Fault::Stall(1))).await;
    let cfg = Config::with_url(&up.url())
        .keys(common::keys(3))
        .admin_password(PASSWORD);
    let d = Daemon::start(&cfg).await;
    let token = login(&d).await;
    let sse = format!("{}?alt=sse", model_path(FLASH, "streamGenerateContent"));
    let array = model_path(FLASH, "streamGenerateContent");
    let chat =
        r#"{"model":"gemini-2.5-flash","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let bearer = format!("Bearer {USER_KEY}");
    let mut streams = vec![
        client::post_stream(&d.url(&sse), &user_auth(), GENERATE_BODY).await,
        client::post_stream(&d.url(&array), &user_auth(), GENERATE_BODY).await,
        client::post_stream(
            &d.url("/v1/chat/completions"),
            &[("authorization", &bearer)],
            chat,
        )
        .await,
    ];
    let mut ids = Vec::new();
    for s in &mut streams {
        assert_eq!(s.status, 200);
        s.read_until("the first event", |b| !b.is_empty()).await;
        ids.push(s.header("x-request-id").unwrap());
    }
    let in_flight = |v: &Value, field: &str| -> u64 {
        v[field]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x["in_flight"].as_u64())
            .sum()
    };
    let keys = admin_json(&d, &token, "/api/keys").await;
    let users = admin_json(&d, &token, "/api/users").await;
    assert_eq!(
        in_flight(&keys, "keys"),
        3,
        "key slots while streaming: {keys}"
    );
    assert_eq!(
        in_flight(&users, "users"),
        3,
        "user slots while streaming: {users}"
    );
    assert_eq!(up.open_bodies(), 3, "upstream streams open");

    let left = Instant::now();
    drop(streams);
    // The stream idle timeout is 300 s: only the cancellation can free them this soon.
    let freed = eventually(Duration::from_secs(2), || async {
        let k = admin_json(&d, &token, "/api/keys").await;
        let u = admin_json(&d, &token, "/api/users").await;
        in_flight(&k, "keys") == 0 && in_flight(&u, "users") == 0 && up.open_bodies() == 0
    })
    .await;
    let keys = admin_json(&d, &token, "/api/keys").await;
    let users = admin_json(&d, &token, "/api/users").await;
    assert!(
        freed,
        "2 s after the clients left: key in_flight {}, user in_flight {}, upstream bodies open {}",
        in_flight(&keys, "keys"),
        in_flight(&users, "users"),
        up.open_bodies()
    );
    println!("slots released {:?} after the clients left", left.elapsed());
    assert_eq!(
        up.abandoned(),
        3,
        "the upstream saw its three streams closed"
    );
    // One `cancelled` record each.
    let found = eventually(Duration::from_secs(3), || async {
        let logs = all_logs(&d, &token).await;
        ids.iter()
            .all(|id| logs.iter().filter(|l| l["request_id"] == json!(id)).count() == 1)
    })
    .await;
    let logs = all_logs(&d, &token).await;
    assert!(found, "no log record per request: {logs:?}");
    for id in &ids {
        let l = logs.iter().find(|l| l["request_id"] == json!(id)).unwrap();
        assert_eq!(l["outcome"], "cancelled", "{l}");
    }
}

/// A daemon on `up` with `keys` pool keys and a stream idle timeout of 1 s.
async fn daemon_with_idle_timeout_1s(up: &FaultUpstream, keys: usize) -> Daemon {
    let cfg = Config::with_url(&up.url())
        .keys(common::keys(keys))
        .admin_password(PASSWORD);
    // stream_idle_timeout lives in [upstream], which the harness writes itself.
    let text = cfg.to_toml().replace(
        "allow_plain_http = true\n",
        "allow_plain_http = true\nstream_idle_timeout = \"1s\"\n",
    );
    daemon_with_toml(&text).await
}

/// The stream idle timeout counts from the upstream's last byte, not from the start: an
/// answer trickling in 7-byte pieces 25 ms apart (seconds in all) arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_slower_than_the_idle_timeout_in_total_but_never_silent_arrives_whole() {
    let up = FaultUpstream::start(
        1,
        Profile::always(Fault::Trickle(Duration::from_millis(25))),
    )
    .await;
    let d = daemon_with_idle_timeout_1s(&up, 1).await;
    let url = d.url(&format!(
        "{}?alt=sse",
        model_path(FLASH, "streamGenerateContent")
    ));
    let started = Instant::now();
    let r = client::post_stream(&url, &user_auth(), GENERATE_BODY)
        .await
        .read_to_end()
        .await;
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "the trickle must outlast the idle timeout for this test to mean anything"
    );
    assert_eq!(r.status, 200);
    let events = common::sse_json_events(&r.body);
    assert_eq!(events.len(), 3, "{}", r.text());
    assert!(
        events.iter().all(|e| e.get("error").is_none()),
        "{}",
        r.text()
    );
}

/// A stream that sends one event and then falls silent is ended after the idle timeout,
/// with that event and then an error event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_falls_silent_mid_answer_ends_with_an_error_event() {
    let up = FaultUpstream::start(1, Profile::always(Fault::Stall(1))).await;
    let d = daemon_with_idle_timeout_1s(&up, 1).await;
    let url = d.url(&format!(
        "{}?alt=sse",
        model_path(FLASH, "streamGenerateContent")
    ));
    let r = client::post_stream(&url, &user_auth(), GENERATE_BODY)
        .await
        .read_to_end()
        .await;
    assert_eq!(r.status, 200);
    let events = common::sse_json_events(&r.body);
    assert_eq!(events.len(), 2, "{}", r.text());
    assert!(events[0].get("candidates").is_some(), "{}", r.text());
    assert_eq!(events[1]["error"]["status"], "UNAVAILABLE", "{}", r.text());
}

// ---------------------------------------------------------------- broken non-stream answers

/// The upstream sends a 200 head for a `generateContent`, then falls silent. The client
/// must not get a clean, empty 200 that looks like a whole answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_stream_answer_that_stalls_after_its_headers_is_not_a_clean_empty_200() {
    let up = FaultUpstream::start(2, Profile::always(Fault::Stall(0))).await;
    let d = daemon_with_idle_timeout_1s(&up, 2).await;
    let r = client::post(
        &d.url(&model_path(FLASH, "generateContent")),
        &user_auth(),
        GENERATE_BODY,
    )
    .await;
    let clean_empty_200 = r.status == 200 && r.body_error.is_none() && r.body.is_empty();
    assert!(
        !clean_empty_200,
        "the client got a clean empty 200 (indistinguishable from a whole answer) for an \
         upstream that went silent after its headers"
    );
}

/// The upstream sends a 200 head and half a `generateContent` body, then cuts the
/// connection. The client must get an answer: an error status, or at least the 200 head
/// with a body that visibly breaks off — not a connection closed before any response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_stream_answer_cut_mid_body_still_reaches_the_client() {
    let up = FaultUpstream::start(3, Profile::always(Fault::Cut(0))).await;
    let cfg = Config::with_url(&up.url())
        .keys(common::keys(2))
        .admin_password(PASSWORD);
    let d = Daemon::start(&cfg).await;
    let url = d.url(&model_path(FLASH, "generateContent"));
    let mut no_head = 0;
    for _ in 0..10 {
        let h = [
            ("x-goog-api-key", USER_KEY),
            ("content-type", "application/json"),
        ];
        if raw_status(&url, &h, GENERATE_BODY).await.is_none() {
            no_head += 1;
        }
    }
    assert_eq!(
        no_head, 0,
        "{no_head} of 10 clients got the connection closed before any response head"
    );
}

/// Sends one request on a fresh connection; the status, or `None` when the connection
/// closed before a response head arrived.
async fn raw_status(url: &str, headers: &[(&str, &str)], body: &str) -> Option<u16> {
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

async fn daemon_with_toml(text: &str) -> Daemon {
    // Start with any config, then restart on the hand-written one (same data dir).
    let placeholder = Config::with_url("http://127.0.0.1:9").admin_password(PASSWORD);
    let mut d = Daemon::start(&placeholder).await;
    d.stop().await;
    std::fs::write(d.config_path(), text).unwrap();
    d.restart().await;
    d
}

// ---------------------------------------------------------------- hostile input

/// A Google-like upstream: rejects what Google rejects (bodies that are not JSON) with
/// 400 INVALID_ARGUMENT, answers the rest.
async fn strict_upstream() -> Upstream {
    Upstream::start(|r| {
        if r.path.ends_with("/models") || r.method == "GET" {
            return Reply::json(200, &json!({ "models": [] }));
        }
        if r.model()
            .is_some_and(|m| !m.starts_with("gemini-") || m.contains('%'))
        {
            let body = json!({"error": {"code": 404, "status": "NOT_FOUND",
                "message": "models/x is not found for API version v1beta"}});
            return Reply::json(404, &body);
        }
        match serde_json::from_slice::<Value>(&r.body) {
            Ok(_) if r.path.contains("chat/completions") => Reply::openai_chat_ok(),
            Ok(_) => Reply::generate_ok("hi"),
            Err(_) => Reply::invalid_argument(),
        }
    })
    .await
}

/// Writes raw bytes on a fresh connection and reads until the server closes it (10 s).
async fn raw_exchange(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let addr = addr.to_string();
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
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

fn parse_status(raw: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(raw);
    let line = text.lines().next()?;
    line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn body_of(raw: &[u8]) -> &[u8] {
    match raw.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &raw[i + 4..],
        None => &[],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_answered_with_a_clear_4xx() {
    let up = strict_upstream().await;
    let cfg = Config::new(&up).admin_password(PASSWORD);
    let d = Daemon::start(&cfg).await;
    let addr = d.addr.to_string();
    let generate = model_path(FLASH, "generateContent");
    let key = USER_KEY;
    let big = "x".repeat(70 * 1024);
    let many_params: String = (0..5000).map(|i| format!("p{i}=v{i}&")).collect();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "malformed JSON (native)",
            req(
                "POST",
                &generate,
                &[
                    ("x-goog-api-key", key),
                    ("content-type", "application/json"),
                ],
                b"{\"contents\": [ {",
            ),
        ),
        (
            "malformed JSON (OpenAI)",
            req(
                "POST",
                "/v1/chat/completions",
                &[
                    ("authorization", &format!("Bearer {key}")),
                    ("content-type", "application/json"),
                ],
                b"{\"model\": \"gemini",
            ),
        ),
        (
            "malformed JSON (admin login)",
            req(
                "POST",
                "/api/login",
                &[("content-type", "application/json")],
                b"{\"password\":",
            ),
        ),
        (
            "wrong content type (native, form body)",
            req(
                "POST",
                &generate,
                &[
                    ("x-goog-api-key", key),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                b"a=1&b=2",
            ),
        ),
        (
            "wrong content type (OpenAI, XML)",
            req(
                "POST",
                "/v1/chat/completions",
                &[
                    ("authorization", &format!("Bearer {key}")),
                    ("content-type", "application/xml"),
                ],
                b"<chat/>",
            ),
        ),
        (
            "invalid UTF-8 body (native)",
            req(
                "POST",
                &generate,
                &[
                    ("x-goog-api-key", key),
                    ("content-type", "application/json"),
                ],
                b"{\"contents\":\"\xff\xfe\xc0\"}",
            ),
        ),
        (
            "invalid UTF-8 body (OpenAI)",
            req(
                "POST",
                "/v1/chat/completions",
                &[
                    ("authorization", &format!("Bearer {key}")),
                    ("content-type", "application/json"),
                ],
                b"{\"model\":\"\xff\xfe\"}",
            ),
        ),
        (
            "invalid UTF-8 body (admin login)",
            req(
                "POST",
                "/api/login",
                &[("content-type", "application/json")],
                b"{\"password\":\"\xff\"}",
            ),
        ),
        (
            "invalid UTF-8 in the user key header",
            req(
                "POST",
                &generate,
                &[("content-type", "application/json")],
                GENERATE_BODY.as_bytes(),
            )
            .into_iter()
            .collect::<Vec<u8>>(),
        ),
        (
            "invalid UTF-8 in the path (percent-encoded)",
            req(
                "POST",
                "/v1beta/models/gemini-%FF%FE:generateContent",
                &[
                    ("x-goog-api-key", key),
                    ("content-type", "application/json"),
                ],
                GENERATE_BODY.as_bytes(),
            ),
        ),
        (
            "invalid UTF-8 in ?key=",
            req(
                "POST",
                &format!("{generate}?key=%FF%FE"),
                &[("content-type", "application/json")],
                GENERATE_BODY.as_bytes(),
            ),
        ),
        (
            "raw invalid UTF-8 bytes in the request target",
            raw_ff(req(
                "POST",
                "/v1beta/models/gemini-RAWFF:generateContent",
                &[
                    ("x-goog-api-key", key),
                    ("content-type", "application/json"),
                ],
                GENERATE_BODY.as_bytes(),
            )),
        ),
        (
            "enormous header (70 KiB)",
            req(
                "POST",
                &generate,
                &[("x-goog-api-key", key), ("x-big", &big)],
                GENERATE_BODY.as_bytes(),
            ),
        ),
        (
            "thousands of query parameters, no key",
            req(
                "POST",
                &format!("{generate}?{many_params}"),
                &[("content-type", "application/json")],
                GENERATE_BODY.as_bytes(),
            ),
        ),
        (
            "thousands of query parameters and a bad ?key=",
            req(
                "POST",
                &format!("{generate}?{many_params}key=gb-nope"),
                &[("content-type", "application/json")],
                GENERATE_BODY.as_bytes(),
            ),
        ),
        (
            "0-byte body (native)",
            req(
                "POST",
                &generate,
                &[
                    ("x-goog-api-key", key),
                    ("content-type", "application/json"),
                ],
                b"",
            ),
        ),
        (
            "0-byte body (OpenAI)",
            req(
                "POST",
                "/v1/chat/completions",
                &[
                    ("authorization", &format!("Bearer {key}")),
                    ("content-type", "application/json"),
                ],
                b"",
            ),
        ),
        (
            "0-byte body (admin login)",
            req(
                "POST",
                "/api/login",
                &[("content-type", "application/json")],
                b"",
            ),
        ),
    ];
    // The raw header bytes 0xFF 0xFE in x-goog-api-key.
    let mut bad_header = b"POST ".to_vec();
    bad_header.extend_from_slice(generate.as_bytes());
    bad_header.extend_from_slice(b" HTTP/1.1\r\nhost: x\r\nx-goog-api-key: gb-\xff\xfe\r\ncontent-type: application/json\r\n");
    bad_header.extend_from_slice(
        format!(
            "content-length: {}\r\n\r\n{GENERATE_BODY}",
            GENERATE_BODY.len()
        )
        .as_bytes(),
    );
    cases[8].1 = bad_header;

    let mut failures = Vec::new();
    for (name, bytes) in &cases {
        let out = raw_exchange(&addr, bytes).await;
        let status = parse_status(&out);
        let body = body_of(&out);
        let json_error = serde_json::from_slice::<Value>(body)
            .map(|v| v["error"].is_object() || v["error"].is_string() || v[0]["error"].is_object())
            .unwrap_or(false);
        println!("{name}: {status:?}");
        match status {
            Some(s) if (400..500).contains(&s) => {
                // hyper's parser answers a request it cannot read (431 for a huge head,
                // 400 for bytes no URI may hold) before any route runs, with no body;
                // every 4xx from the daemon itself names its error.
                let parser_level = s == 431 || name.starts_with("raw invalid");
                if !parser_level && !json_error {
                    failures.push(format!(
                        "{name}: {s} without a JSON error body: {:?}",
                        String::from_utf8_lossy(body)
                    ));
                }
            }
            other => failures.push(format!(
                "{name}: expected a 4xx, got {other:?}: {:?}",
                String::from_utf8_lossy(&out[..out.len().min(300)])
            )),
        }
    }
    let h = client::get(&d.url("/healthz"), &[]).await;
    assert_eq!(h.status, 200, "daemon unhealthy after hostile input");
    let panics: Vec<String> = d
        .logs()
        .into_iter()
        .filter(|l| l.contains("panicked"))
        .collect();
    assert!(panics.is_empty(), "the daemon panicked: {panics:?}");
    assert!(
        failures.is_empty(),
        "hostile input not answered with a clear 4xx:\n{}",
        failures.join("\n")
    );
}

/// Replaces the marker `RAWFF` with the single byte 0xFF (not UTF-8).
fn raw_ff(bytes: Vec<u8>) -> Vec<u8> {
    let at = bytes
        .windows(5)
        .position(|w| w == b"RAWFF")
        .expect("marker");
    let mut out = bytes[..at].to_vec();
    out.push(0xFF);
    out.extend_from_slice(&bytes[at + 5..]);
    out
}

fn req(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nhost: gateway\r\n").into_bytes();
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

/// Keeps `faults` items referenced from this file (the soak uses the rest).
#[test]
fn fault_profiles_draw_only_their_faults() {
    let p = Profile::always(Fault::Status(403));
    assert_eq!(p.faults.len(), 1);
    assert!(faults::MALFORMED.starts_with('{'));
}

/// Google's `retryDelay` is a protobuf Duration string; an absurd one ("1e300s") must not
/// take the request down: the key cools (for as long as the daemon allows) and the next
/// key answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_an_absurd_retry_delay_fails_over_to_the_next_key() {
    let keys = common::keys(2);
    let up = FaultUpstream::start(4, Profile::healthy()).await;
    up.set_profile(
        &keys[0],
        Profile::always(Fault::Status(429)).retry_delay("1e300s"),
    );
    let cfg = Config::with_url(&up.url())
        .keys(keys.clone())
        .admin_password(PASSWORD);
    let d = Daemon::start(&cfg).await;
    let url = d.url(&model_path(FLASH, "generateContent"));
    let h = [
        ("x-goog-api-key", USER_KEY),
        ("content-type", "application/json"),
    ];
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(raw_status(&url, &h, GENERATE_BODY).await);
    }
    let panics: Vec<String> = d
        .logs()
        .into_iter()
        .filter(|l| l.contains("panicked"))
        .collect();
    assert!(panics.is_empty(), "the daemon panicked: {panics:?}");
    assert_eq!(statuses, vec![Some(200), Some(200)]);
}
