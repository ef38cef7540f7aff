//! Reliability, black-box: a short soak through the same code as `examples/soak.rs`;
//! `kill -9` under load, in a loop, checking what survives; a graceful stop, which keeps
//! the records of requests finished just before it; and a 429 whose `retryDelay` is
//! absurd, which must cool the key without taking the request down.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::admin::{admin_json, all_logs, generate_as, log_page};
use common::client;
use common::faults::{self, Fault, FaultUpstream, Profile};
use common::raw::raw_status;
use common::{
    Config, Daemon, FLASH, GENERATE_BODY, Reply, USER_KEY, Upstream, model_path, request_id,
    wait_for,
};
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

fn brief_of<'a>(keys: &'a [Value], key: &str) -> Option<&'a Value> {
    keys.iter().find(|v| {
        let b = v["brief"].as_str().unwrap_or("");
        b.starts_with(&key[..4]) && b.ends_with(&key[key.len() - 4..])
    })
}

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
            wait_for(
                "the broken key retired and the quota key cooled",
                Duration::from_secs(10),
                || async {
                    let v = admin_json(&d, &token, "/api/keys").await;
                    let ks = v["keys"].as_array().unwrap();
                    let broken_state = brief_of(ks, &broken).unwrap()["state"].clone();
                    let quota_state = brief_of(ks, &quota).unwrap()["state"].clone();
                    if broken_state == "invalid" && quota_state == "cooling" {
                        Ok(())
                    } else {
                        Err(format!(
                            "broken key {broken_state}, quota key {quota_state}"
                        ))
                    }
                },
            )
            .await;
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

// Records of requests that finished just before a graceful stop are kept: the serving
// threads hand over the records they were still collecting, and the writer commits them
// before the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_finished_just_before_sigterm_survive_the_restart() {
    let up = Upstream::start(|_| Reply::generate_ok("hi")).await;
    let mut d = Daemon::start(&Config::new(&up).admin_password(PASSWORD)).await;
    let mut ids = BTreeSet::new();
    for _ in 0..5 {
        let r = generate_as(&d, USER_KEY, FLASH).await;
        assert_eq!(r.status, 200, "{}", r.text());
        ids.insert(request_id(&r));
    }
    d.restart().await;
    let token = login(&d).await;
    let (logged, _) = log_page(&d, &token, "limit=100").await;
    let logged: BTreeSet<String> = logged.into_iter().collect();
    assert_eq!(logged, ids, "every request before SIGTERM is in the log");
}
