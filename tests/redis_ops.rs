//! Operating with Redis, black-box: losing Redis degrades `/healthz` without failing
//! requests and recovers by itself, with later writes reaching Redis again; an unreachable
//! Redis at start is a clear error that never shows the URL's password; `migrate` copies
//! everything redb → Redis → redb.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::admin::{admin, admin_ok, generate_as, list_keys, long_key};
use common::redis::RedisServer;
use common::redis_pair::{PASSWORD, SHARED_WITHIN, key_id, login, pair, store_top, wait_key};
use common::*;
use http::Method;
use serde_json::{Value, json};

async fn healthz(d: &Daemon) -> Value {
    let r = client::get(&d.url("/healthz"), &[]).await;
    assert_eq!(r.status, 200, "/healthz: {}", r.text());
    r.json()
}

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
        let r = generate_as(&a, USER_KEY, FLASH).await;
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
    let r = generate_as(&a, USER_KEY, FLASH).await;
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
        let r = generate_as(&d, user, FLASH).await;
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
    let r = generate_as(&d, &bob, FLASH).await;
    assert_eq!(r.status, 200, "bob's secret still works: {}", r.text());
}
