//! The quota ledger, black-box: limits learned from Google's 429s (input tokens per
//! minute, from the `quotaValue` of a `GenerateContentInputTokensPerModelPerMinute…`
//! violation) and limits the admin sets (config and `PATCH /api/keys/{id}`) keep a key
//! from being sent more than its limit; the fake upstream counts which key it got.

mod common;

use common::admin::{admin_ok, login};
use common::*;
use http::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const PASSWORD: &str = "quota-ledger-admin-pw-9";
/// A user declared in the file, limited to a key group.
const DAVE: &str = "gb-test-dave-0123456789abcdef";

/// `n` requests for `model`, each answered 200.
async fn serve(d: &Daemon, model: &str, n: usize) {
    for _ in 0..n {
        let r = generate(d, model).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

async fn list_keys(d: &Daemon, token: &str) -> Vec<Value> {
    let v = admin_ok(d, Method::GET, "/api/keys", token, None).await;
    v["keys"].as_array().expect("keys array").clone()
}

fn key_view<'a>(list: &'a [Value], id: &str) -> &'a Value {
    list.iter()
        .find(|k| k["id"] == id)
        .unwrap_or_else(|| panic!("{id} in {list:?}"))
}

fn model_view(k: &Value, model: &str) -> Option<Value> {
    k["models"]
        .as_array()?
        .iter()
        .find(|m| m["model"] == model)
        .cloned()
}

/// The id the daemon gives a key: the first 8 bytes of its SHA-256, in hex.
fn id_of(key: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(key.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_limit_learned_from_a_429_skips_the_key_once_its_prompts_reach_it() {
    let (a, b) = (key(0), key(1));
    let ka = a.clone();
    let taught = Arc::new(AtomicBool::new(false));
    let t = taught.clone();
    // A's first FLASH request is refused for input tokens (10 a minute); each answer
    // after it reports 5 prompt tokens (`usageMetadata.promptTokenCount`).
    let up = Upstream::start(move |r| match (r.key(), r.model()) {
        (Some(k), Some(FLASH)) if k == ka && !t.swap(true, Ordering::SeqCst) => google::quota_429(
            &[google::Violation::new(google::TOKENS_PER_MINUTE, FLASH).limit(10)],
            Some("0s"),
            None,
        ),
        _ => Reply::generate_ok("hello"),
    })
    .await;
    let d = Daemon::start(&Config::new(&up).keys([&a, &b]).admin_password(PASSWORD)).await;
    let token = login(&d, PASSWORD).await;
    serve(&d, FLASH, 2).await;
    assert!(taught.load(Ordering::SeqCst), "A was refused once");
    let id = id_of(&a);
    wait_for("A's cool-down over", Duration::from_secs(10), || async {
        let m = model_view(key_view(&list_keys(&d, &token).await, &id), FLASH)
            .ok_or("no FLASH state")?;
        match m["cooling"] == false {
            true => Ok(m),
            false => Err(m.to_string()),
        }
    })
    .await;

    up.clear();
    serve(&d, FLASH, 8).await;
    let sent = up.keys_to(GEN);
    assert_eq!(count(&sent, &a), 2, "two prompts of 5 reach 10: {sent:?}");
    assert_eq!(count(&sent, &b), 6, "B serves the rest");
    let m = model_view(key_view(&list_keys(&d, &token).await, &id), FLASH).unwrap();
    assert_eq!(m["limit_tokens_per_minute"], 10, "{m}");
    assert_eq!(m["tokens_last_minute"], 10, "{m}");
    assert_eq!(m["state"], "cooling", "out until the tokens age: {m}");
    assert_eq!(m["reason"], "local limit", "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_set_limit_skips_the_key_on_the_request_past_it() {
    let (a, b, c) = (key(0), key(1), key(2));
    let up = Upstream::start(ok_or_stream).await;
    // C has 1 request a day for every gemini-2.5 model, from the file.
    let cfg = Config::new(&up)
        .keys([&a, &b])
        .admin_password(PASSWORD)
        .extra(&format!(
            "\n[[upstream_keys]]\nkey = \"{c}\"\nlimits = {{ \"gemini-2.5-*\" = {{ rpd = 1 }} }}\n"
        ));
    let d = Daemon::start(&cfg).await;
    let token = login(&d, PASSWORD).await;
    let path = format!("/api/keys/{}", id_of(&a));
    let set = admin_ok(
        &d,
        Method::PATCH,
        &path,
        &token,
        Some(json!({"limits": {FLASH: {"rpm": 2}}})),
    )
    .await;
    assert_eq!(set["limits"], json!({FLASH: {"rpm": 2}}), "{set}");
    let m = model_view(&set, FLASH).expect("a limit set by name is shown before use");
    assert_eq!(
        (m["limit_per_minute"].clone(), m["used_last_minute"].clone()),
        (json!(2), json!(0))
    );

    serve(&d, FLASH, 9).await;
    let sent = up.keys_to(GEN);
    assert_eq!(count(&sent, &a), 2, "A at its 2 a minute: {sent:?}");
    assert_eq!(count(&sent, &c), 1, "C at its 1 a day");
    assert_eq!(count(&sent, &b), 6, "B serves the rest");
    up.clear();
    serve(&d, PRO, 3).await;
    let sent = up.keys_to(GEN);
    assert_eq!(count(&sent, &a), 1, "A's limit is for FLASH only: {sent:?}");
    assert_eq!(
        count(&sent, &c),
        1,
        "C's glob holds for PRO on its own count"
    );

    let list = list_keys(&d, &token).await;
    let m = model_view(key_view(&list, &id_of(&a)), FLASH).unwrap();
    assert_eq!(m["used_last_minute"], 2, "{m}");
    assert_eq!(m["state"], "cooling", "at its limit: {m}");
    let m = model_view(key_view(&list, &id_of(&c)), FLASH).unwrap();
    assert_eq!(
        (m["used_today"].clone(), m["limit_per_day"].clone()),
        (json!(1), json!(1)),
        "{m}"
    );

    // Refused with a 400 that says why; nothing changes.
    let auth = format!("Bearer {token}");
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    for (body, says) in [
        (json!({"limits": {FLASH: {"rpx": 2}}}), "rpx"),
        (json!({"limits": {FLASH: {"rpm": 0}}}), "at least 1"),
        (json!({"limits": {"a b": {"rpm": 1}}}), "model"),
        (json!({"limits": {FLASH: {"rpm": -1}}}), "wrong type"),
    ] {
        let r = client::request(Method::PATCH, &d.url(&path), &h, body.to_string()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains(says), "{body}: {}", r.text());
    }
    let cleared = admin_ok(
        &d,
        Method::PATCH,
        &path,
        &token,
        Some(json!({"limits": null})),
    )
    .await;
    assert_eq!(cleared["limits"], json!({}), "{cleared}");
}

/// A key A limited to `rpm` FLASH requests a minute in the file, and a key B without.
fn limited_pair(up: &Upstream, rpm: u32) -> (Config, String, String) {
    let (a, b) = (key(0), key(1));
    let cfg = Config::new(up)
        .keys([&b])
        .admin_password(PASSWORD)
        .extra(&format!(
            "\n[[upstream_keys]]\nkey = \"{a}\"\nlimits = {{ \"{FLASH}\" = {{ rpm = {rpm} }} }}\n"
        ));
    (cfg, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counts_survive_a_restart_on_redb() {
    let up = Upstream::start(ok_or_stream).await;
    let (cfg, a, b) = limited_pair(&up, 2);
    let mut d = Daemon::start(&cfg).await;
    serve(&d, FLASH, 4).await;
    assert_eq!(count(&up.keys_to(GEN), &a), 2, "A at its limit");

    d.restart().await;
    up.clear();
    serve(&d, FLASH, 3).await;
    assert_eq!(
        up.keys_to(GEN),
        vec![b.clone(); 3],
        "A's two requests of this minute are still counted"
    );
    let token = login(&d, PASSWORD).await;
    let m = model_view(key_view(&list_keys(&d, &token).await, &id_of(&a)), FLASH).unwrap();
    assert_eq!(
        (m["used_last_minute"].clone(), m["used_today"].clone()),
        (json!(2), json!(2)),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_one_redis_share_the_counts() {
    let redis = common::redis::RedisServer::start();
    let up = Upstream::start(ok_or_stream).await;
    let (cfg, a, b) = limited_pair(&up, 3);
    let top = format!("store = {:?}\n", redis.url());
    let one = Daemon::start_with_top_level(&cfg, &top).await;
    let two = Daemon::start_with_top_level(&cfg, &top).await;
    serve(&one, FLASH, 2).await;
    serve(&two, FLASH, 2).await;
    serve(&one, FLASH, 4).await;
    serve(&two, FLASH, 4).await;
    let sent = up.keys_to(GEN);
    assert_eq!(
        count(&sent, &a),
        3,
        "3 a minute over both daemons: {sent:?}"
    );
    assert_eq!(count(&sent, &b), 9);

    // Each daemon shows the counts of both (as the shared ledger last told it).
    let token = login(&two, PASSWORD).await;
    let m = model_view(key_view(&list_keys(&two, &token).await, &id_of(&a)), FLASH).unwrap();
    assert_eq!(m["used_last_minute"], 3, "{m}");
    assert_eq!(m["state"], "cooling", "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_on_one_daemon_clears_the_shared_counts_for_both() {
    let redis = common::redis::RedisServer::start();
    let up = Upstream::start(ok_or_stream).await;
    let (cfg, a, _b) = limited_pair(&up, 3);
    let top = format!("store = {:?}\n", redis.url());
    let one = Daemon::start_with_top_level(&cfg, &top).await;
    let two = Daemon::start_with_top_level(&cfg, &top).await;
    // A's 3 a minute spent over both daemons: one on two, two on one.
    serve(&two, FLASH, 2).await;
    serve(&one, FLASH, 6).await;
    assert_eq!(count(&up.keys_to(GEN), &a), 3, "A at its limit");

    let token = login(&one, PASSWORD).await;
    let path = format!("/api/keys/{}/reset", id_of(&a));
    admin_ok(&one, Method::POST, &path, &token, None).await;
    let token = login(&two, PASSWORD).await;
    wait_for(
        "the reset seen by daemon two",
        Duration::from_secs(10),
        || async {
            let m = model_view(key_view(&list_keys(&two, &token).await, &id_of(&a)), FLASH)
                .ok_or("no FLASH view")?;
            match m["used_last_minute"] == 0 && m["state"] == "active" {
                true => Ok(()),
                false => Err(m.to_string()),
            }
        },
    )
    .await;
    up.clear();
    serve(&two, FLASH, 4).await;
    assert_eq!(
        count(&up.keys_to(GEN), &a),
        2,
        "A serves again, its shared counts gone: {:?}",
        up.keys_to(GEN)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_pinned_to_a_key_by_a_cache_count_in_its_shared_ledger() {
    let google = common::resources::Google::new();
    let g = google.clone();
    let up = Upstream::start(move |r| g.handle(r).unwrap_or_else(|| ok_or_stream(r))).await;
    let redis = common::redis::RedisServer::start();
    let mut toml = String::new();
    for k in [key(0), key(1)] {
        toml += &format!(
            "\n[[upstream_keys]]\nkey = \"{k}\"\nlimits = {{ \"{FLASH}\" = {{ rpm = 2 }} }}\n"
        );
    }
    let cfg = Config::new(&up).admin_password(PASSWORD).extra(&toml);
    let top = format!("store = {:?}\n", redis.url());
    let one = Daemon::start_with_top_level(&cfg, &top).await;
    let two = Daemon::start_with_top_level(&cfg, &top).await;
    let cache = json!({"model": format!("models/{FLASH}"),
        "contents": [{"role": "user", "parts": [{"text": "context"}]}], "ttl": "600s"});
    let made = client::post(
        &one.url("/v1beta/cachedContents"),
        &user_auth(),
        cache.to_string(),
    )
    .await;
    assert_eq!(made.status, 200, "{}", made.text());
    let name = made.json()["name"].as_str().unwrap().to_owned();
    let owner = google.owner(&name).expect("Google holds the cache");

    // Only the owner can serve these: past its 2 a minute they still go, and count.
    up.clear();
    let with_cache = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "cachedContent": name});
    for _ in 0..3 {
        let path = model_path(FLASH, "generateContent");
        let r = client::post(&one.url(&path), &user_auth(), with_cache.to_string()).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(up.keys_to(GEN), vec![owner.clone(); 3]);
    let token = login(&one, PASSWORD).await;
    let m = model_view(
        key_view(&list_keys(&one, &token).await, &id_of(&owner)),
        FLASH,
    )
    .unwrap();
    assert_eq!(m["used_last_minute"], 3, "{m}");

    // The other daemon sees them in the shared ledger: free requests go to the other key.
    up.clear();
    serve(&two, FLASH, 2).await;
    let sent = up.keys_to(GEN);
    assert_eq!(count(&sent, &owner), 0, "the owner is full: {sent:?}");
    let token = login(&two, PASSWORD).await;
    let m = model_view(
        key_view(&list_keys(&two, &token).await, &id_of(&owner)),
        FLASH,
    )
    .unwrap();
    assert_eq!(m["used_last_minute"], 3, "{m}");
    assert_eq!(m["state"], "cooling", "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_keys_serve_first_and_paid_ones_only_when_every_free_key_cools() {
    let (a, b, c) = (key(0), key(1), key(2));
    let up = Upstream::start(ok_or_stream).await;
    let mut toml = String::from(
        "\n[[groups]]\nname = \"paid\"\norder = 1\n\n[[groups]]\nname = \"free\"\norder = 0\n",
    );
    for (k, g) in [(&a, "free"), (&b, "free"), (&c, "paid")] {
        toml += &format!("\n[[upstream_keys]]\nkey = \"{k}\"\ngroup = \"{g}\"\n");
    }
    let d = Daemon::start(&Config::new(&up).admin_password(PASSWORD).extra(&toml)).await;
    let token = login(&d, PASSWORD).await;
    serve(&d, FLASH, 6).await;
    let sent = up.keys_to(GEN);
    assert_eq!(
        (count(&sent, &a), count(&sent, &b), count(&sent, &c)),
        (3, 3, 0),
        "{sent:?}"
    );

    // Both free keys hit their per-minute quota: the paid key serves, at once.
    let (fa, fb) = (a.clone(), b.clone());
    up.set_handler(move |r| match r.key() {
        Some(k) if k == fa || k == fb => google::per_minute(FLASH, 10, "60s"),
        _ => Reply::generate_ok("hello"),
    });
    up.clear();
    serve(&d, FLASH, 4).await;
    let sent = up.keys_to(GEN);
    assert_eq!(count(&sent, &c), 4, "{sent:?}");
    assert_eq!(
        sent.len(),
        6,
        "each free key asked once, then skipped: {sent:?}"
    );

    // The request log says which group served: the first six and the last four.
    let logs = common::wait_for("ten log records", Duration::from_secs(10), || {
        let (d, token) = (&d, token.as_str());
        async move {
            let v = admin_ok(d, Method::GET, "/api/logs?limit=10", token, None).await;
            let logs = v["logs"].as_array().cloned().unwrap_or_default();
            if logs.len() >= 10 {
                Ok(logs)
            } else {
                Err(v.to_string())
            }
        }
    })
    .await;
    let groups: Vec<&str> = logs
        .iter()
        .map(|r| r["group"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(groups[..4], ["paid"; 4], "newest first: {groups:?}");
    assert_eq!(groups[4..], ["free"; 6], "{groups:?}");

    let v = admin_ok(&d, Method::GET, "/api/keys", &token, None).await;
    assert_eq!(
        v["groups"],
        json!([{"name": "free", "keys": 2}, {"name": "paid", "keys": 1}]),
        "{v}"
    );
    let list = v["keys"].as_array().unwrap();
    assert_eq!(key_view(list, &id_of(&c))["group"], "paid");

    let path = format!("/api/keys/{}", id_of(&c));
    let auth = format!("Bearer {token}");
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let r = client::request(Method::PATCH, &d.url(&path), &h, r#"{"group":"nope"}"#).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let moved = admin_ok(
        &d,
        Method::PATCH,
        &path,
        &token,
        Some(json!({"group": null})),
    )
    .await;
    assert_eq!(moved["group"], "default", "{moved}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_limited_to_a_group_is_served_by_its_keys_only() {
    let (free, paid) = (key(0), key(1));
    let up = Upstream::start(ok_or_stream).await;
    let toml = format!(
        "\n[[groups]]\nname = \"paid\"\norder = 1\n\
         \n[[upstream_keys]]\nkey = \"{free}\"\n\
         \n[[upstream_keys]]\nkey = \"{paid}\"\ngroup = \"paid\"\n\
         \n[[users]]\nname = \"dave\"\nkey = \"{DAVE}\"\ngroups = [\"paid\"]\n"
    );
    let d = Daemon::start(&Config::new(&up).admin_password(PASSWORD).extra(&toml)).await;
    let token = login(&d, PASSWORD).await;
    let auth = format!("Bearer {token}");
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let bad = json!({"name": "carol", "groups": ["nope"]}).to_string();
    let r = client::post(&d.url("/api/users"), &h, bad).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let v = admin_ok(
        &d,
        Method::POST,
        "/api/users",
        &token,
        Some(json!({"name": "carol", "groups": ["paid"]})),
    )
    .await;
    assert_eq!(v["groups"], json!(["paid"]), "{v}");
    let secret = v["key"].as_str().expect("the new user's key").to_owned();
    for _ in 0..3 {
        let r = client::post(
            &d.url(&model_path(FLASH, "generateContent")),
            &[("x-goog-api-key", secret.as_str())],
            GENERATE_BODY,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(
        up.keys_to(GEN),
        vec![paid.clone(); 3],
        "only the paid group's key"
    );
    up.clear();
    let r = client::post(
        &d.url(&model_path(FLASH, "generateContent")),
        &[("x-goog-api-key", DAVE)],
        GENERATE_BODY,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        up.keys_to(GEN),
        vec![paid.clone()],
        "limited in the file too"
    );
    up.clear();
    serve(&d, FLASH, 2).await;
    assert_eq!(
        up.keys_to(GEN),
        vec![free.clone(); 2],
        "others: the first group"
    );
}
