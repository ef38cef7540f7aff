//! The Redis store, black-box: two daemon processes on one private `redis-server` act as
//! one pool — a key retired on one is skipped by the other, admin changes and the admin
//! session are shared, a user's rate limit and a key's concurrency cap hold across both,
//! logs and statistics cover both.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::admin::{admin, admin_ok, generate_as, list_keys, long_key};
use common::redis::RedisServer;
use common::redis_pair::{
    PASSWORD, SHARED_WITHIN, find_key, key_id, login, pair, store_top, wait_key,
};
use common::*;
use http::Method;
use serde_json::json;

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
        let r = generate_as(&a, USER_KEY, FLASH).await;
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
        let r = generate_as(&b, USER_KEY, FLASH).await;
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
        let r = generate_as(&b, USER_KEY, FLASH).await;
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
        let r = generate_as(&b, USER_KEY, FLASH).await;
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
        let r = generate_as(&b, USER_KEY, FLASH).await;
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
            let r = generate_as(&b, &secret, FLASH).await;
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
        let a1 = generate_as(&a, &secret, FLASH).await;
        let a2 = generate_as(&a, &secret, FLASH).await;
        let a3 = generate_as(&a, &secret, FLASH).await;
        let b2 = generate_as(&b, &secret, FLASH).await;
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
        assert_eq!(generate_as(&a, USER_KEY, FLASH).await.status, 200);
        assert_eq!(generate_as(&b, USER_KEY, FLASH).await.status, 200);
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
            let r = generate_as(d, USER_KEY, FLASH).await;
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

    let r = generate_as(&b, USER_KEY, FLASH).await;
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
        let r = generate_as(&b, USER_KEY, FLASH).await;
        if r.status == 200 {
            Ok(r)
        } else {
            Err(format!("{} {}", r.status, r.text()))
        }
    })
    .await;
    assert_eq!(r.status, 200);
}
