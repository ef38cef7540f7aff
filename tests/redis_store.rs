//! Black-box tests of the Redis store (SPEC 6): two daemon processes on one private
//! `redis-server` act as one pool — a key retired on one is skipped by the other, admin
//! changes and the admin session are shared, user limits hold across both, logs and
//! statistics cover both; losing Redis degrades `/healthz` without failing requests and
//! recovers by itself; an unreachable Redis at start is a clear error that never shows the
//! URL's password; `migrate` copies everything redb → Redis → redb.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::admin::{admin, admin_ok, brief, list_keys, long_key};
use common::redis::RedisServer;
use common::*;
use http::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const PASSWORD: &str = "redis-store-admin-pw-42";
const GEN: &str = ":generateContent";
/// How long another instance may take to see a change (a message, or the 15 s reconcile).
const SHARED_WITHIN: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- helpers

/// The config's top-level store settings for `redis` (and a prefix, if not the default).
fn store_top(redis: &RedisServer, prefix: Option<&str>) -> String {
    let mut t = format!("store = {:?}\n", redis.url());
    if let Some(p) = prefix {
        t += &format!("store_prefix = {p:?}\n");
    }
    t
}

/// Two daemons on the same config and the same Redis.
async fn pair(cfg: &Config, top: &str) -> (Daemon, Daemon) {
    let a = Daemon::start_with_top_level(cfg, top).await;
    let b = Daemon::start_with_top_level(cfg, top).await;
    (a, b)
}

/// The id the daemon gives an upstream key: hex of the first 8 bytes of its SHA-256.
fn key_id(k: &str) -> String {
    Sha256::digest(k.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn login(d: &Daemon) -> String {
    common::admin::login(d, PASSWORD).await
}

/// The listed entry of upstream key `k`, found by its brief.
fn find_key<'a>(list: &'a [Value], k: &str) -> Option<&'a Value> {
    let b = brief(k);
    let found: Vec<_> = list.iter().filter(|e| e["brief"] == b.as_str()).collect();
    assert!(found.len() <= 1, "two keys with brief {b}: {list:?}");
    found.first().copied()
}

async fn generate(d: &Daemon, user_key: &str) -> Response {
    client::post(
        &d.url(&model_path(FLASH, "generateContent")),
        &[("x-goog-api-key", user_key)],
        GENERATE_BODY,
    )
    .await
}

async fn healthz(d: &Daemon) -> Value {
    let r = client::get(&d.url("/healthz"), &[]).await;
    assert_eq!(r.status, 200, "/healthz: {}", r.text());
    r.json()
}

/// Waits until `d`'s key list shows `k` with `pred` true of its entry.
async fn wait_key(
    d: &Daemon,
    token: &str,
    k: &str,
    what: &str,
    pred: impl Fn(Option<&Value>) -> bool,
) {
    let pred = &pred;
    wait_for(what, SHARED_WITHIN, || async move {
        let list = list_keys(d, token).await;
        if pred(find_key(&list, k)) {
            Ok(())
        } else {
            Err(format!("{list:?}"))
        }
    })
    .await
}

fn request_id(r: &Response) -> String {
    r.header("x-request-id")
        .unwrap_or_else(|| panic!("no x-request-id on {} {}", r.status, r.text()))
}

// ---------------------------------------------------------------- one pool

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_retired_by_one_instance_is_skipped_by_the_other() {
    let redis = RedisServer::start();
    let bad = key(0);
    let b2 = bad.clone();
    let up = Upstream::start(move |r| {
        if r.key() == Some(b2.as_str()) {
            Reply::api_key_invalid()
        } else {
            Reply::generate_ok("hello")
        }
    })
    .await;
    let cfg = Config::new(&up).keys(keys(3)).admin_password(PASSWORD);
    let (a, b) = pair(&cfg, &store_top(&redis, None)).await;

    // Requests through A until the rotation reaches the bad key (each answer is still 200).
    for i in 0..3 {
        let r = generate(&a, USER_KEY).await;
        assert_eq!(r.status, 200, "A request {i}: {}", r.text());
        if up.keys_to(GEN).contains(&bad) {
            break;
        }
    }
    assert!(
        up.keys_to(GEN).contains(&bad),
        "A never tried {bad}: {:?}",
        up.keys_to(GEN)
    );
    let ta = login(&a).await;
    let list = list_keys(&a, &ta).await;
    assert_eq!(
        find_key(&list, &bad).map(|e| e["state"].clone()),
        Some(json!("invalid")),
        "A retired the key: {list:?}"
    );

    // B never tried it, yet learns it is invalid from the shared store.
    let tb = login(&b).await;
    wait_key(&b, &tb, &bad, "B shows the key invalid", |e| {
        e.is_some_and(|e| e["state"] == "invalid")
    })
    .await;
    up.clear();
    for i in 0..12 {
        let r = generate(&b, USER_KEY).await;
        assert_eq!(r.status, 200, "B request {i}: {}", r.text());
    }
    let used = up.keys_to(GEN);
    assert_eq!(used.len(), 12, "one upstream call per request: {used:?}");
    assert_eq!(count(&used, &bad), 0, "B sent the retired key: {used:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_and_the_session_are_shared_by_both_instances() {
    let redis = RedisServer::start();
    let up = Upstream::start(|_| Reply::generate_ok("hello")).await;
    let cfg = Config::new(&up).admin_password(PASSWORD);
    let (a, b) = pair(&cfg, &store_top(&redis, None)).await;

    // The JWT signing key is a shared setting: A's token works on B.
    let token = login(&a).await;
    let r = admin(&b, Method::GET, "/api/keys", &token, None).await;
    assert_eq!(r.status, 200, "A's token on B: {}", r.text());

    // Disable key a and give it a note, on A.
    let (k0, k1) = (key(0), key(1));
    let path = format!("/api/keys/{}", key_id(&k0));
    let v = admin_ok(
        &a,
        Method::PATCH,
        &path,
        &token,
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(v["state"], "disabled", "{v}");
    admin_ok(
        &a,
        Method::PATCH,
        &path,
        &token,
        Some(json!({"note": "paused on A", "project": "861042"})),
    )
    .await;
    wait_key(
        &b,
        &token,
        &k0,
        "B shows the key disabled, with A's note and project",
        |e| {
            e.is_some_and(|e| {
                e["state"] == "disabled" && e["note"] == "paused on A" && e["project"] == "861042"
            })
        },
    )
    .await;
    up.clear();
    for i in 0..6 {
        let r = generate(&b, USER_KEY).await;
        assert_eq!(r.status, 200, "B request {i}: {}", r.text());
    }
    assert_eq!(
        up.keys_to(GEN),
        vec![k1.clone(); 6],
        "B skips the disabled key"
    );

    // A key added on A serves on B.
    let new = long_key("SHARED", "nnnn");
    let v = admin_ok(
        &a,
        Method::POST,
        "/api/keys",
        &token,
        Some(json!({"keys": [new]})),
    )
    .await;
    assert_eq!(v["added"], 1, "{v}");
    wait_key(&b, &token, &new, "B lists the key added on A", |e| {
        e.is_some_and(|e| e["state"] == "active")
    })
    .await;
    up.clear();
    for i in 0..6 {
        let r = generate(&b, USER_KEY).await;
        assert_eq!(r.status, 200, "B request {i}: {}", r.text());
    }
    let used = up.keys_to(GEN);
    assert!(
        count(&used, &new) >= 2,
        "B serves with the new key: {used:?}"
    );
    assert_eq!(
        count(&used, &new) + count(&used, &k1),
        6,
        "never the disabled key: {used:?}"
    );

    // A key deleted on A is gone from B.
    admin_ok(
        &a,
        Method::DELETE,
        &format!("/api/keys/{}", key_id(&new)),
        &token,
        None,
    )
    .await;
    wait_key(&b, &token, &new, "B drops the key deleted on A", |e| {
        e.is_none()
    })
    .await;
    up.clear();
    for i in 0..4 {
        let r = generate(&b, USER_KEY).await;
        assert_eq!(r.status, 200, "B request {i}: {}", r.text());
    }
    assert_eq!(up.keys_to(GEN), vec![k1; 4], "only k1 is left on B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_rpm_limit_holds_across_instances() {
    let redis = RedisServer::start();
    let up = Upstream::start(|_| Reply::generate_ok("hello")).await;
    let cfg = Config::new(&up).admin_password(PASSWORD);
    let (a, b) = pair(&cfg, &store_top(&redis, None)).await;
    let token = login(&a).await;

    // RPM windows are calendar minutes: a run that straddles a minute boundary proves
    // nothing, so it is tried again with a fresh user.
    for attempt in 0..3 {
        let name = format!("bob{attempt}");
        let r = admin(
            &a,
            Method::POST,
            "/api/users",
            &token,
            Some(json!({"name": name, "rpm": 3})),
        )
        .await;
        assert_eq!(r.status, 201, "create user on A: {}", r.text());
        let secret = r.json()["key"].as_str().expect("key").to_string();
        up.clear();

        let minute = unix_ms() / 60_000;
        // B answers 403 until it knows the user; its first 200 is B's one request.
        let deadline = tokio::time::Instant::now() + SHARED_WITHIN;
        let on_b = loop {
            let r = generate(&b, &secret).await;
            if r.status != 403 || tokio::time::Instant::now() >= deadline {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            on_b.status,
            200,
            "B accepts the user created on A: {}",
            on_b.text()
        );
        let a1 = generate(&a, &secret).await;
        let a2 = generate(&a, &secret).await;
        let a3 = generate(&a, &secret).await;
        let b2 = generate(&b, &secret).await;
        if unix_ms() / 60_000 != minute {
            eprintln!("attempt {attempt} crossed a minute boundary; trying again");
            continue;
        }
        assert_eq!(a1.status, 200, "A request 1 (2nd of 3): {}", a1.text());
        assert_eq!(a2.status, 200, "A request 2 (3rd of 3): {}", a2.text());
        for (which, r) in [("A", &a3), ("B", &b2)] {
            assert_google_error(r, 429, "RESOURCE_EXHAUSTED");
            let ra: u64 = r
                .header("retry-after")
                .unwrap_or_else(|| panic!("Retry-After on {which}'s 429"))
                .trim()
                .parse()
                .expect("Retry-After in seconds");
            assert!((1..=60).contains(&ra), "{which}: Retry-After {ra}");
        }
        assert_eq!(
            up.requests_to(GEN).len(),
            3,
            "only the three admitted requests reach the upstream"
        );
        // Alice has no limits and is unaffected on either instance.
        assert_eq!(generate(&a, USER_KEY).await.status, 200);
        assert_eq!(generate(&b, USER_KEY).await.status, 200);
        return;
    }
    panic!("three attempts all crossed a minute boundary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_statistics_cover_both_instances() {
    let redis = RedisServer::start();
    let up = Upstream::start(|_| Reply::generate_ok("hello")).await;
    let cfg = Config::new(&up).admin_password(PASSWORD);
    let (a, b) = pair(&cfg, &store_top(&redis, None)).await;

    let mut ids = BTreeSet::new();
    for (d, n) in [(&b, 3), (&a, 2)] {
        for _ in 0..n {
            let r = generate(d, USER_KEY).await;
            assert_eq!(r.status, 200, "{}", r.text());
            ids.insert(request_id(&r));
        }
    }
    let token = login(&a).await;
    for (name, d) in [("A", &a), ("B", &b)] {
        let t = token.as_str();
        let today = wait_for(
            &format!("{name}'s summary counts the 5 requests of both instances"),
            SHARED_WITHIN,
            || async move {
                let v = admin_ok(d, Method::GET, "/api/stats/summary", t, None).await;
                if v["today"]["requests"] == 5 {
                    Ok(v["today"].clone())
                } else {
                    Err(v.to_string())
                }
            },
        )
        .await;
        assert_eq!(today["ok"], 5, "{name}: {today}");
        assert_eq!(today["tokens"], 60, "{name}: 5 × 12 tokens: {today}");
        let v = admin_ok(d, Method::GET, "/api/logs?limit=100", t, None).await;
        let listed: BTreeSet<String> = v["logs"]
            .as_array()
            .expect("logs")
            .iter()
            .map(|r| r["request_id"].as_str().expect("request_id").to_string())
            .collect();
        assert_eq!(listed, ids, "{name}'s log holds both instances' requests");
    }
}

// ---------------------------------------------------------------- Redis lost and found

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_degrades_then_recovers_and_writes_reach_it_again() {
    let mut redis = RedisServer::start();
    let up = Upstream::start(|_| Reply::generate_ok("hello")).await;
    let cfg = Config::new(&up).admin_password(PASSWORD);
    let (a, b) = pair(&cfg, &store_top(&redis, Some("gbtest"))).await;
    let ta = login(&a).await;

    let ok = json!({"status": "ok", "store": "redis"});
    assert_eq!(healthz(&a).await, ok);
    assert_eq!(healthz(&b).await, ok);
    // Everything lives under the configured prefix.
    let ids = redis.cli(&["HKEYS", "gbtest:keys"]);
    for k in [key(0), key(1)] {
        assert!(ids.contains(&key_id(&k)), "{k} in gbtest:keys: {ids:?}");
    }
    assert_eq!(
        redis.cli(&["KEYS", "gemini-balance:*"]).trim(),
        "",
        "nothing under the default prefix"
    );

    redis.kill();
    for i in 0..5 {
        let r = generate(&a, USER_KEY).await;
        assert_eq!(r.status, 200, "request {i} without Redis: {}", r.text());
    }
    for (name, d) in [("A", &a), ("B", &b)] {
        wait_for(
            &format!("{name}'s /healthz reports degraded"),
            SHARED_WITHIN,
            || async move {
                let v = healthz(d).await;
                if v["status"] == "degraded" {
                    Ok(())
                } else {
                    Err(v.to_string())
                }
            },
        )
        .await;
        let v = healthz(d).await;
        assert_eq!(v["store"], "redis", "{v}");
    }
    let r = generate(&a, USER_KEY).await;
    assert_eq!(r.status, 200, "still serving while degraded: {}", r.text());

    redis.restart();
    for (name, d) in [("A", &a), ("B", &b)] {
        let ok = &ok;
        wait_for(
            &format!("{name}'s /healthz is ok again"),
            Duration::from_secs(20),
            || async move {
                let v = healthz(d).await;
                if &v == ok { Ok(()) } else { Err(v.to_string()) }
            },
        )
        .await;
    }

    // The new Redis is empty (no persistence); an admin change on A is written to it and
    // reaches B.
    let new = long_key("AFTER", "zzzz");
    let v = admin_ok(
        &a,
        Method::POST,
        "/api/keys",
        &ta,
        Some(json!({"keys": [new]})),
    )
    .await;
    assert_eq!(v["added"], 1, "{v}");
    let ids = redis.cli(&["HKEYS", "gbtest:keys"]);
    assert!(
        ids.contains(&key_id(&new)),
        "the key added on A after the restart is in Redis: {ids:?}"
    );
    let tb = login(&b).await;
    wait_key(
        &b,
        &tb,
        &new,
        "B lists the key added on A after the restart",
        |e| e.is_some(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_at_start_is_a_clear_error_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    // A socket nobody listens on: the file does not exist.
    let nobody = dir.path().join("nobody.sock");
    let url = format!(
        "redis+unix://gb:s3cret-marker@localhost{}",
        nobody.display()
    );
    let cfg = Config::with_url("http://127.0.0.1:9").admin_password(PASSWORD);
    let text = format!("store = {url:?}\n\n{}", cfg.to_toml());
    let conf = dir.path().join("gb.toml");
    std::fs::write(&conf, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gemini-balance"))
        .arg("serve")
        .arg("--config")
        .arg(&conf)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("RUST_LOG")
        .env_remove("GEMINI_BALANCE_CONFIG")
        .env_remove("GEMINI_BALANCE_ADMIN_PASSWORD")
        .env_remove("GEMINI_BALANCE_STORE")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gemini-balance");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the daemon kept running without Redis:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!status.success(), "exit status {status}; output:\n{text}");
    assert!(text.contains("Redis"), "the message names Redis:\n{text}");
    assert!(
        !text.contains("s3cret-marker"),
        "the Redis password leaked:\n{text}"
    );
    assert!(!text.contains("listening on"), "{text}");
}

// ---------------------------------------------------------------- migrate

fn migrate(from: &str, to: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_gemini-balance"))
        .args(["migrate", "--from", from, "--to", to])
        .env_remove("RUST_LOG")
        .env_remove("GEMINI_BALANCE_CONFIG")
        .env_remove("GEMINI_BALANCE_STORE")
        .output()
        .expect("run migrate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "migrate {from} → {to}: {}\n{text}",
        out.status
    );
    text
}

/// What must survive a migration: each key's state and note, the log's request ids, and
/// the summary's counts.
async fn snapshot(d: &Daemon, token: &str) -> (Vec<Value>, BTreeSet<String>, Value) {
    let mut keys: Vec<Value> = list_keys(d, token)
        .await
        .iter()
        .map(
            |e| json!({"id": e["id"], "brief": e["brief"], "state": e["state"], "note": e["note"]}),
        )
        .collect();
    keys.sort_by_key(|e| e["id"].as_str().unwrap_or_default().to_string());
    let v = admin_ok(d, Method::GET, "/api/logs?limit=1000", token, None).await;
    let ids = v["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .map(|r| r["request_id"].as_str().expect("request_id").to_string())
        .collect();
    let v = admin_ok(d, Method::GET, "/api/stats/summary", token, None).await;
    let today = &v["today"];
    let counts = json!({
        "requests": today["requests"], "ok": today["ok"], "errors": today["errors"],
        "client_errors": today["client_errors"], "tokens": today["tokens"],
        "prompt_tokens": today["prompt_tokens"], "candidates_tokens": today["candidates_tokens"],
    });
    (keys, ids, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_copies_everything_from_redb_to_redis_and_back() {
    let redis = RedisServer::start();
    let bad = key(0);
    let b2 = bad.clone();
    let up = Upstream::start(move |r| {
        if r.key() == Some(b2.as_str()) {
            Reply::api_key_invalid()
        } else if serde_json::from_slice::<Value>(&r.body).is_err() {
            Reply::invalid_argument()
        } else {
            Reply::generate_ok("hello")
        }
    })
    .await;
    let cfg = Config::new(&up).keys(keys(3)).admin_password(PASSWORD);
    let mut d = Daemon::start(&cfg).await;
    let token = login(&d).await;
    admin_ok(
        &d,
        Method::PATCH,
        &format!("/api/keys/{}", key_id(&key(1))),
        &token,
        Some(json!({"note": "account 7"})),
    )
    .await;
    let r = admin(
        &d,
        Method::POST,
        "/api/users",
        &token,
        Some(json!({"name": "bob", "rpm": 100})),
    )
    .await;
    assert_eq!(r.status, 201, "create bob: {}", r.text());
    let bob = r.json()["key"].as_str().expect("key").to_string();

    let mut ids = BTreeSet::new();
    for (i, user) in [USER_KEY, bob.as_str(), USER_KEY, bob.as_str()]
        .into_iter()
        .enumerate()
    {
        let r = generate(&d, user).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        ids.insert(request_id(&r));
    }
    // A client error is logged too.
    let r = client::post(
        &d.url(&model_path(FLASH, "generateContent")),
        &user_auth(),
        "{not json",
    )
    .await;
    assert_eq!(r.status, 400, "client error relayed: {}", r.text());
    ids.insert(request_id(&r));
    assert!(up.keys_to(GEN).contains(&bad), "the bad key was tried");
    let n = ids.len();
    let (t, dr) = (token.as_str(), &d);
    wait_for("all requests logged", SHARED_WITHIN, || async move {
        let v = admin_ok(dr, Method::GET, "/api/logs?limit=1000", t, None).await;
        let got = v["logs"].as_array().map_or(0, Vec::len);
        if got == n { Ok(()) } else { Err(v.to_string()) }
    })
    .await;
    let before = snapshot(&d, &token).await;
    assert_eq!(before.1, ids, "the log before migrating");
    assert!(
        before
            .0
            .iter()
            .any(|e| e["id"] == key_id(&bad).as_str() && e["state"] == "invalid"),
        "{:?}",
        before.0
    );
    assert!(
        before.0.iter().any(|e| e["note"] == "account 7"),
        "{:?}",
        before.0
    );
    d.stop().await;

    // redb → Redis → a fresh redb (the daemon's own data dir, emptied).
    let dir = d.data_dir();
    let out = migrate(dir.to_str().unwrap(), &redis.url());
    assert!(out.contains("copied 3 keys"), "{out}");
    assert!(out.contains("from redb to redis"), "{out}");
    assert!(out.contains(&format!("{n} log records")), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
    let out = migrate(&redis.url(), dir.to_str().unwrap());
    assert!(out.contains("copied 3 keys"), "{out}");
    assert!(out.contains("from redis to redb"), "{out}");
    assert!(out.contains(&format!("{n} log records")), "{out}");

    d.restart().await;
    // The settings came along: the old session is still valid.
    let after = snapshot(&d, &token).await;
    assert_eq!(after.0, before.0, "keys, states and notes");
    assert_eq!(after.1, before.1, "the log's request ids");
    assert_eq!(after.2, before.2, "the summary's counts");
    let r = generate(&d, &bob).await;
    assert_eq!(r.status, 200, "bob's secret still works: {}", r.text());
}

// A per-key concurrency cap holds across instances: a stream held open through A takes
// the key's only slot, so B refuses (429, busy) until that stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_key_concurrency_cap_holds_across_instances() {
    let redis = RedisServer::start();
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let up = Upstream::start(move |r| {
        if r.path.contains("streamGenerateContent") {
            StreamReply::sse(vec![chunk("one"), chunk("two")])
                .gate_before(1, g.clone())
                .into()
        } else {
            Reply::generate_ok("hello")
        }
    })
    .await;
    let cfg = Config::new(&up)
        .keys(keys(1))
        .admin_password(PASSWORD)
        .pool("max_concurrent_per_key", "1");
    let (a, b) = pair(&cfg, &store_top(&redis, None)).await;

    let url = a.url(&format!(
        "{}?alt=sse",
        model_path(FLASH, "streamGenerateContent")
    ));
    let mut held = client::post_stream(&url, &user_auth(), GENERATE_BODY).await;
    assert_eq!(held.status, 200);
    held.read_until("the first event of the held stream", has_sse_event)
        .await;

    let r = generate(&b, USER_KEY).await;
    assert_eq!(
        r.status,
        429,
        "B must not exceed the shared cap: {}",
        r.text()
    );
    assert!(
        r.header("retry-after").is_some(),
        "Retry-After on a busy pool"
    );

    gate.notify_one();
    held.read_to_end().await;
    let r = wait_for("B serves once the slot is free", SHARED_WITHIN, || async {
        let r = generate(&b, USER_KEY).await;
        if r.status == 200 {
            Ok(r)
        } else {
            Err(format!("{} {}", r.status, r.text()))
        }
    })
    .await;
    assert_eq!(r.status, 200);
}
