//! Black-box tests of the admin API's upstream key pool: the list shows state but never the
//! key, bulk add counts exactly and survives a restart, disabling and deleting are durable,
//! the key check classifies each key with a models call, and a quota 429 shows the key
//! cooling for that model.

mod common;

use common::admin::*;
use common::*;
use http::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "correct-horse-battery-staple-7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_list_shows_state_but_never_the_key() {
    let ks = [long_key("LISTA", "aaaa"), long_key("LISTB", "bbbb")];
    let up = Upstream::start(ok_upstream()).await;
    let d = Daemon::start(&Config::new(&up).keys(ks.clone()).admin_password(PASSWORD)).await;
    let token = login(&d, PASSWORD).await;
    let r = admin(&d, Method::GET, "/api/keys", &token, None).await;
    assert_eq!(r.status, 200);
    for k in &ks {
        assert!(!r.text().contains(k.as_str()), "full key in GET /api/keys");
        assert!(
            !r.text().contains(&k[4..k.len() - 4]),
            "key middle in GET /api/keys"
        );
    }
    let list = r.json()["keys"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    for k in &ks {
        let e = entry_of(&list, k);
        assert_eq!(e["state"], "active", "{e}");
        assert!(e["id"].as_str().is_some_and(|s| !s.is_empty()), "{e}");
        assert!(e["models"].is_array(), "{e}");
        for f in [
            "note",
            "invalid_reason",
            "failure_streak",
            "last_error",
            "in_flight",
            "requests_total",
            "usage_today",
            "created_at",
        ] {
            assert!(e.get(f).is_some(), "field {f} missing in {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_add_counts_exactly_and_survives_restart() {
    let existing = long_key("HAVE", "have");
    let up = Upstream::start(ok_upstream()).await;
    let mut d = Daemon::start(
        &Config::new(&up)
            .keys([existing.clone()])
            .admin_password(PASSWORD),
    )
    .await;
    let token = login(&d, PASSWORD).await;
    let (n1, n2, n3) = (
        long_key("NEW1", "n1n1"),
        long_key("NEW2", "n2n2"),
        long_key("NEW3", "n3n3"),
    );
    let text = format!("{n1},{n2}\n\n\n   {n1}   \r\nAIzaShort\n{existing}; {n3}\n\n");
    let auth = format!("Bearer {token}");
    let r = client::post(
        &d.url("/api/keys"),
        &[
            ("authorization", auth.as_str()),
            ("content-type", "text/plain"),
        ],
        text,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["added"], 3, "{v}");
    assert_eq!(
        v["present"], 1,
        "the existing key; a duplicate inside the paste is counted once, as added: {v}"
    );
    assert_eq!(v["rejected"], 1, "the too-short token: {v}");
    let ids: Vec<String> = v["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("ids: {v}"))
        .iter()
        .map(|i| i.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3, "{v}");

    let (n4, n5) = (long_key("NEW4", "n4n4"), long_key("NEW5", "n5n5"));
    let v = admin_ok(
        &d,
        Method::POST,
        "/api/keys",
        &token,
        Some(json!({"keys": [n4, format!("  {n5}  "), n2, "AIza-too-short"]})),
    )
    .await;
    assert_eq!(
        (
            v["added"].as_u64(),
            v["present"].as_u64(),
            v["rejected"].as_u64()
        ),
        (Some(2), Some(1), Some(1)),
        "{v}"
    );

    let all = [&existing, &n1, &n2, &n3, &n4, &n5];
    let list = list_keys(&d, &token).await;
    assert_eq!(list.len(), 6, "{list:?}");
    for id in &ids {
        assert!(
            list.iter().any(|e| e["id"] == id.as_str()),
            "id {id} listed"
        );
    }
    let export = |d: &Daemon, token: String| {
        let url = d.url("/api/keys/export");
        async move {
            let auth = format!("Bearer {token}");
            client::get(&url, &[("authorization", auth.as_str())]).await
        }
    };
    let r = export(&d, token.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/plain"), "export content-type {ct:?}");
    let mut lines: Vec<String> = r
        .text()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    let mut want: Vec<String> = all.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(lines, want, "export lists every full key once");

    d.restart().await;
    let token = login(&d, PASSWORD).await;
    let list = list_keys(&d, &token).await;
    assert_eq!(list.len(), 6, "added keys survive a restart: {list:?}");
    let mut lines: Vec<String> = export(&d, token)
        .await
        .text()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    assert_eq!(lines, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_key_takes_it_out_of_rotation_durably() {
    let (a, b) = (long_key("DISA", "aaaa"), long_key("DISB", "bbbb"));
    let up = Upstream::start(ok_upstream()).await;
    let mut d = Daemon::start(
        &Config::new(&up)
            .keys([a.clone(), b.clone()])
            .admin_password(PASSWORD),
    )
    .await;
    let token = login(&d, PASSWORD).await;
    let id = key_id(&d, &token, &a).await;
    let v = admin_ok(
        &d,
        Method::PATCH,
        &format!("/api/keys/{id}"),
        &token,
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(v["state"], "disabled", "PATCH answers the new view: {v}");
    let v = admin_ok(
        &d,
        Method::PATCH,
        &format!("/api/keys/{id}"),
        &token,
        Some(json!({"note": "account 3, paused"})),
    )
    .await;
    assert_eq!(v["note"], "account 3, paused", "{v}");
    for i in 0..4 {
        assert_eq!(
            generate_as(&d, USER_KEY, FLASH).await.status,
            200,
            "request {i}"
        );
    }
    assert_eq!(
        up.keys_to(GEN),
        vec![b.clone(); 4],
        "a disabled key is never used"
    );

    d.restart().await;
    up.clear();
    let token = login(&d, PASSWORD).await;
    let list = list_keys(&d, &token).await;
    let e = entry_of(&list, &a);
    assert_eq!(e["state"], "disabled", "after restart: {e}");
    assert_eq!(e["note"], "account 3, paused", "after restart: {e}");
    for i in 0..4 {
        assert_eq!(
            generate_as(&d, USER_KEY, FLASH).await.status,
            200,
            "request {i}"
        );
    }
    assert_eq!(
        up.keys_to(GEN),
        vec![b.clone(); 4],
        "still disabled after restart"
    );

    up.clear();
    admin_ok(
        &d,
        Method::PATCH,
        &format!("/api/keys/{id}"),
        &token,
        Some(json!({"enabled": true})),
    )
    .await;
    for _ in 0..4 {
        assert_eq!(generate_as(&d, USER_KEY, FLASH).await.status, 200);
    }
    assert_eq!(
        count(&up.keys_to(GEN), &a),
        2,
        "re-enabled key serves again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_key_is_durable_and_unknown_ids_are_404() {
    let up = Upstream::start(ok_upstream()).await;
    let mut d = Daemon::start(
        &Config::new(&up)
            .keys(Vec::<String>::new())
            .admin_password(PASSWORD),
    )
    .await;
    let token = login(&d, PASSWORD).await;
    let (a, b) = (long_key("DELA", "aaaa"), long_key("DELB", "bbbb"));
    let v = admin_ok(
        &d,
        Method::POST,
        "/api/keys",
        &token,
        Some(json!({"keys": [a, b]})),
    )
    .await;
    assert_eq!(v["added"], 2, "{v}");
    let id = key_id(&d, &token, &a).await;

    for (m, path) in [
        (Method::DELETE, "/api/keys/0000000000000000"),
        (Method::PATCH, "/api/keys/0000000000000000"),
        (Method::POST, "/api/keys/0000000000000000/reset"),
        (Method::PATCH, "/api/users/no-such-user"),
        (Method::DELETE, "/api/users/no-such-user"),
        (Method::POST, "/api/users/no-such-user/rotate"),
    ] {
        let body = (m == Method::PATCH).then(|| json!({"enabled": true}));
        let r = admin(&d, m.clone(), path, &token, body).await;
        assert_eq!(r.status, 404, "{m} {path}: {}", r.text());
        assert_admin_error(&r, 404);
    }

    admin_ok(&d, Method::DELETE, &format!("/api/keys/{id}"), &token, None).await;
    let r = admin(&d, Method::DELETE, &format!("/api/keys/{id}"), &token, None).await;
    assert_admin_error(&r, 404);
    let list = list_keys(&d, &token).await;
    assert_eq!(list.len(), 1, "{list:?}");
    for _ in 0..3 {
        assert_eq!(generate_as(&d, USER_KEY, FLASH).await.status, 200);
    }
    assert_eq!(up.keys_to(GEN), vec![b.clone(); 3]);

    d.restart().await;
    up.clear();
    let token = login(&d, PASSWORD).await;
    let list = list_keys(&d, &token).await;
    assert_eq!(list.len(), 1, "deleted key stays deleted: {list:?}");
    entry_of(&list, &b);
    for _ in 0..3 {
        assert_eq!(generate_as(&d, USER_KEY, FLASH).await.status, 200);
    }
    assert_eq!(up.keys_to(GEN), vec![b.clone(); 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_check_classifies_each_key_with_a_models_call() {
    let a = long_key("CHKA", "aaaa"); // invalid
    let b = long_key("CHKB", "bbbb"); // valid
    let c = long_key("CHKC", "cccc"); // rate limited
    let s = long_key("CHKS", "ssss"); // suspended
    let (ka, kc, ks) = (a.clone(), c.clone(), s.clone());
    let up = Upstream::start(move |r| match r.key() {
        Some(k) if k == ka => Reply::api_key_invalid(),
        Some(k) if k == kc && r.path.ends_with("/models") => Reply::resource_exhausted("30s"),
        Some(k) if k == ks => Reply::consumer_suspended(),
        _ if r.path.ends_with("/models") => Reply::json(200, &json!({"models": []})),
        _ => Reply::generate_ok("hello"),
    })
    .await;
    let all = [a.clone(), b.clone(), c.clone(), s.clone()];
    let mut d = Daemon::start(&Config::new(&up).keys(all.clone()).admin_password(PASSWORD)).await;
    let token = login(&d, PASSWORD).await;

    let r = admin(&d, Method::POST, "/api/keys/check", &token, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    for k in &all {
        assert!(
            !r.text().contains(k.as_str()),
            "full key in the check answer"
        );
    }
    let v = r.json();
    let results = v["results"]
        .as_array()
        .unwrap_or_else(|| panic!("results: {v}"));
    assert_eq!(results.len(), 4, "{v}");
    let list = list_keys(&d, &token).await;
    for (k, want) in [
        (&a, "invalid"),
        (&b, "valid"),
        (&c, "rate_limited"),
        (&s, "suspended"),
    ] {
        let id = entry_of(&list, k)["id"].clone();
        let res: Vec<_> = results.iter().filter(|x| x["id"] == id).collect();
        assert_eq!(res.len(), 1, "one result for {}: {v}", brief(k));
        assert_eq!(res[0]["verdict"], want, "{}: {v}", brief(k));
        assert_eq!(res[0]["brief"], brief(k).as_str(), "{v}");
    }

    let models = up.requests_to("/v1beta/models");
    assert_eq!(models.len(), 4, "one models call per key");
    let mut used: Vec<String> = models
        .iter()
        .map(|r| r.key().unwrap_or("").to_string())
        .collect();
    used.sort();
    let mut want = all.to_vec();
    want.sort();
    assert_eq!(used, want, "each key checked with its own x-goog-api-key");
    for m in &models {
        assert_eq!(m.method, "GET");
        assert_eq!(
            m.query_pairs(),
            [("pageSize".to_string(), "1".to_string())],
            "{}",
            m.target()
        );
    }
    assert!(
        up.requests_to(GEN).is_empty(),
        "a check spends no generation quota"
    );

    let list = list_keys(&d, &token).await;
    let ea = entry_of(&list, &a);
    assert_eq!(ea["state"], "invalid", "{ea}");
    assert!(
        ea["invalid_reason"].as_str().is_some_and(|s| !s.is_empty()),
        "{ea}"
    );
    assert_eq!(
        entry_of(&list, &s)["state"],
        "invalid",
        "suspended keys are retired"
    );
    assert_eq!(entry_of(&list, &b)["state"], "active");

    for i in 0..4 {
        assert_eq!(
            generate_as(&d, USER_KEY, FLASH).await.status,
            200,
            "request {i}"
        );
    }
    let used = up.keys_to(GEN);
    assert_eq!(
        count(&used, &a) + count(&used, &s),
        0,
        "retired keys unused: {used:?}"
    );

    d.restart().await;
    let token = login(&d, PASSWORD).await;
    let list = list_keys(&d, &token).await;
    assert_eq!(
        entry_of(&list, &a)["state"],
        "invalid",
        "retirement survives a restart"
    );

    // Resetting a key brings it back.
    let id = entry_of(&list, &s)["id"].as_str().unwrap().to_string();
    let v = admin_ok(
        &d,
        Method::POST,
        &format!("/api/keys/{id}/reset"),
        &token,
        None,
    )
    .await;
    assert_eq!(v["state"], "active", "{v}");
    admin_ok(&d, Method::POST, "/api/keys/reset", &token, None).await;
    let list = list_keys(&d, &token).await;
    assert!(
        list.iter().all(|e| e["state"] == "active"),
        "reset all: {list:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_429_shows_the_key_cooling_for_that_model() {
    let (a, b) = (long_key("COOLA", "aaaa"), long_key("COOLB", "bbbb"));
    let ka = a.clone();
    let up = Upstream::start(move |r| {
        if r.key() == Some(ka.as_str()) && r.model() == Some(FLASH) {
            Reply::resource_exhausted("120s")
        } else {
            Reply::generate_ok("hello")
        }
    })
    .await;
    let mut d = Daemon::start(
        &Config::new(&up)
            .keys([a.clone(), b.clone()])
            .admin_password(PASSWORD),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(generate_as(&d, USER_KEY, FLASH).await.status, 200);
        if up.keys_to(GEN).contains(&a) {
            break;
        }
    }
    assert!(up.keys_to(GEN).contains(&a), "key a answered 429");
    let token = login(&d, PASSWORD).await;
    let check = |list: &[Value]| {
        let e = entry_of(list, &a).clone();
        assert_eq!(e["state"], "cooling", "{e}");
        let m: Vec<_> = e["models"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["model"] == FLASH)
            .cloned()
            .collect();
        assert_eq!(m.len(), 1, "a cool-down entry for {FLASH}: {e}");
        assert_eq!(m[0]["cooling"], true, "{e}");
        let secs = m[0]["cooling_seconds"]
            .as_u64()
            .unwrap_or_else(|| panic!("cooling_seconds: {e}"));
        assert!(
            (60..=200).contains(&secs),
            "about 120 s remaining, got {secs}: {e}"
        );
        assert!(
            e["models"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m["model"] == FLASH || m["cooling"] != true),
            "only {FLASH} cools: {e}"
        );
        assert_eq!(entry_of(list, &b)["state"], "active");
    };
    check(&list_keys(&d, &token).await);

    d.restart().await;
    let token = login(&d, PASSWORD).await;
    check(&list_keys(&d, &token).await);

    let id = key_id(&d, &token, &a).await;
    let v = admin_ok(
        &d,
        Method::POST,
        &format!("/api/keys/{id}/reset"),
        &token,
        None,
    )
    .await;
    assert_eq!(v["state"], "active", "reset ends the cool-down: {v}");
}
