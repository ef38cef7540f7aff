//! The key pool as Google's keys and quotas are: every key format (`AIza…`, `AQ.…`,
//! `IQ.…`) through the admin API, `keys import` and the config; distinct counts on bulk
//! add. Black-box: the real binary against the fake upstream.

mod common;

use common::admin::{admin_ok, brief, list_keys, login, long_key};
use common::*;
use http::Method;
use serde_json::{Value, json};
use std::collections::HashSet;

const PASSWORD: &str = "correct-horse-battery-staple-7";

/// A key in the newer dotted form, ending in `tail` (four characters).
fn dotted(prefix: &str, tag: &str, tail: &str) -> String {
    let mut k = format!("{prefix}.Ab8RN6L{tag}_x-");
    while k.len() < 49 {
        k.push('q');
    }
    k + tail
}

async fn paste(d: &Daemon, token: &str, text: String) -> Value {
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
    r.json()
}

fn counts(v: &Value) -> (u64, u64, u64) {
    let n = |f: &str| v[f].as_u64().unwrap_or_else(|| panic!("{f} in {v}"));
    (n("added"), n("present"), n("rejected"))
}

fn daemon_config(up: &Upstream, keys: Vec<String>) -> Config {
    Config::new(up).keys(keys).admin_password(PASSWORD)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pasted_dotted_keys_are_added_once_each_shown_briefly_and_used_upstream() {
    let up = Upstream::start(ok_or_stream).await;
    let from_config = dotted("IQ", "CONF", "conf");
    let d = Daemon::start(&daemon_config(&up, vec![from_config.clone()])).await;
    let token = login(&d, PASSWORD).await;
    let (aq, iq) = (dotted("AQ", "NEW1", "wxyz"), dotted("IQ", "NEW2", "n2n2"));

    // A dot closing a sentence is not part of the key; a key twice is one key.
    let text = format!("Keys: {aq}.\n{iq}, {aq}\n{from_config}.\nAIzaShort\n");
    let v = paste(&d, &token, text).await;
    assert_eq!(
        counts(&v),
        (2, 1, 2),
        "added AQ+IQ, present the config key, rejected `Keys` and the short one: {v}"
    );

    let v = admin_ok(
        &d,
        Method::POST,
        "/api/keys",
        &token,
        Some(json!({"keys": [long_key("JS1", "js1a"), from_config, long_key("JS1", "js1a")]})),
    )
    .await;
    assert_eq!(counts(&v), (1, 1, 0), "[new, existing, new]: {v}");

    let list = list_keys(&d, &token).await;
    let briefs: HashSet<&str> = list.iter().filter_map(|e| e["brief"].as_str()).collect();
    assert!(briefs.contains("AQ.A…wxyz"), "{briefs:?}");
    assert!(briefs.contains(brief(&iq).as_str()), "{briefs:?}");
    assert_eq!(list.len(), 4, "{list:?}");

    for _ in 0..8 {
        let r = generate(&d, FLASH).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let sent: HashSet<String> = up.keys_to(GEN).into_iter().collect();
    for k in [&aq, &iq, &dotted("IQ", "CONF", "conf")] {
        assert!(
            sent.contains(k.as_str()),
            "{k} sent upstream whole: {sent:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_import_reads_every_key_form_and_counts_distinct_keys() {
    let up = Upstream::start(ok_or_stream).await;
    let have = long_key("HAVE", "have");
    let mut d = Daemon::start(&daemon_config(&up, vec![have.clone()])).await;
    d.stop().await;
    let (aq, iq) = (dotted("AQ", "IMP1", "i1i1"), dotted("IQ", "IMP2", "i2i2"));
    let file = d.config_path().with_file_name("import.txt");
    std::fs::write(
        &file,
        format!("{aq}.\n{iq}\n{aq}\n{have}\n{have}\nnot-a-key\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gemini-balance"))
        .arg("--config")
        .arg(d.config_path())
        .arg("--data-dir")
        .arg(d.data_dir())
        .args(["keys", "import"])
        .arg(&file)
        .env_remove("RUST_LOG")
        .env_remove("GEMINI_BALANCE_CONFIG")
        .output()
        .expect("run keys import");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("added 2, present 1, rejected 1"),
        "{stdout}"
    );

    d.restart().await;
    let token = login(&d, PASSWORD).await;
    let list = list_keys(&d, &token).await;
    let briefs: HashSet<&str> = list.iter().filter_map(|e| e["brief"].as_str()).collect();
    assert_eq!(list.len(), 3, "{list:?}");
    assert!(
        briefs.contains(brief(&aq).as_str()) && briefs.contains(brief(&iq).as_str()),
        "{briefs:?}"
    );
}

/// The body bytes a scripted reply sends.
fn reply_bytes(reply: Reply) -> Vec<u8> {
    match reply {
        Reply::Json { body, .. } => body.to_vec(),
        _ => panic!("not a complete JSON reply"),
    }
}

/// A key that is not retired: serving, no invalid reason.
fn assert_none_retired(list: &[Value]) {
    for k in list {
        assert!(
            k["invalid_reason"].is_null() && k["state"] != "invalid",
            "a key was retired: {k}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_about_the_request_retires_no_key_and_reaches_the_client_as_sent() {
    // FLASH needs billing on this tier; PRO answers a 403 that names nothing; the
    // OpenAI-compatible layer refuses a cache of another project (list-wrapped).
    let up = Upstream::start(|r| {
        if r.path.ends_with("/chat/completions") {
            return Reply::google_list_error(
                403,
                "PERMISSION_DENIED",
                "CachedContent not found (or permission denied)",
                Value::Null,
            );
        }
        match r.model() {
            Some(FLASH) => google::billing_required("42"),
            Some(PRO) => google::caller_denied(),
            _ => Reply::generate_ok("hello"),
        }
    })
    .await;
    let d = Daemon::start(&daemon_config(&up, keys(3))).await;
    let token = login(&d, PASSWORD).await;

    let r = generate(&d, FLASH).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(
        r.body.to_vec(),
        reply_bytes(google::billing_required("42")),
        "Google's 403 as it sent it"
    );
    assert_eq!(up.requests().len(), 1, "a billing 403 is not retried");

    // Unplaceable: each key tried once (a transient failure), then Google's answer.
    up.clear();
    let r = generate(&d, PRO).await;
    assert_google_error(&r, 403, "PERMISSION_DENIED");
    assert_eq!(up.requests().len(), 3, "tried on every key");

    up.clear();
    let chat = json!({"model": FLASH, "messages": [{"role": "user", "content": "hi"}],
        "extra_body": {"google": {"cached_content": "cachedContents/of-another-project"}}});
    let auth = format!("Bearer {USER_KEY}");
    let r = client::post(
        &d.url("/v1beta/openai/chat/completions"),
        &[("authorization", auth.as_str())],
        chat.to_string(),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("CachedContent not found"), "{}", r.text());
    assert_eq!(up.requests().len(), 1, "a cache 403 is not retried");

    let list = list_keys(&d, &token).await;
    assert_eq!(list.len(), 3);
    assert_none_retired(&list);
    up.clear();
    for _ in 0..3 {
        let r = generate(&d, "gemini-2.5-flash-lite").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let used: HashSet<String> = up.keys_to(GEN).into_iter().collect();
    assert_eq!(used.len(), 3, "every key still serves: {used:?}");
}

/// The admin API's view of `model` on the key `k` (a `/api/keys` entry), if it has one.
fn model_view<'a>(k: &'a Value, model: &str) -> Option<&'a Value> {
    k["models"]
        .as_array()?
        .iter()
        .find(|m| m["model"].as_str() == Some(model))
}

fn entry_of<'a>(list: &'a [Value], secret: &str) -> &'a Value {
    let b = brief(secret);
    list.iter()
        .find(|k| k["brief"].as_str() == Some(b.as_str()))
        .unwrap_or_else(|| panic!("{b} in {list:?}"))
}

/// Seconds from now until the next midnight in Los Angeles, when Google's daily quotas
/// reset.
fn seconds_to_pacific_midnight() -> i64 {
    let tz = jiff::tz::TimeZone::get("America/Los_Angeles").unwrap();
    let now = jiff::Timestamp::now().to_zoned(tz.clone());
    let midnight = now.date().tomorrow().unwrap().to_zoned(tz).unwrap();
    (midnight.timestamp().as_second()) - now.timestamp().as_second()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_429_cools_until_pacific_midnight_whatever_retry_delay_says() {
    let spent = key(0);
    let s = spent.clone();
    let up = Upstream::start(move |r| match (r.key(), r.model()) {
        (Some(k), Some(FLASH)) if k == s => google::per_day(FLASH), // retryDelay "0s"
        _ => Reply::generate_ok("hello"),
    })
    .await;
    let d = Daemon::start(&daemon_config(&up, keys(2))).await;
    let token = login(&d, PASSWORD).await;
    for _ in 0..6 {
        let r = generate(&d, FLASH).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(
        count(&up.keys_to(GEN), &spent),
        1,
        "asked once, then skipped"
    );

    let list = list_keys(&d, &token).await;
    let k = entry_of(&list, &spent);
    let m = model_view(k, FLASH).unwrap_or_else(|| panic!("{FLASH} state in {k}"));
    assert_eq!(m["state"], "cooling", "{m}");
    assert_eq!(m["reason"], google::PER_DAY, "{m}");
    let left = m["cooling_seconds"].as_i64().unwrap();
    let expected = seconds_to_pacific_midnight();
    assert!(
        (left - expected).abs() <= 5,
        "cooling {left} s, midnight in Los Angeles is {expected} s away: {m}"
    );
    assert_eq!(k["state"], "cooling");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_limit_makes_the_model_unavailable_and_the_key_serves_other_models() {
    let free = key(0);
    let f = free.clone();
    let up = Upstream::start(move |r| match (r.key(), r.model()) {
        (Some(k), Some(PRO)) if k == f => google::zero_quota(PRO),
        _ => Reply::generate_ok("hello"),
    })
    .await;
    let d = Daemon::start(&daemon_config(&up, keys(2))).await;
    let token = login(&d, PASSWORD).await;
    let r = generate(&d, PRO).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = generate(&d, PRO).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(count(&up.keys_to(GEN), &free), 1, "the free key asked once");

    // From now on the free key is skipped for PRO without spending an attempt: one
    // upstream request per client request.
    up.clear();
    for _ in 0..4 {
        let r = generate(&d, PRO).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(up.keys_to(GEN), vec![key(1); 4]);
    up.clear();
    for _ in 0..4 {
        let r = generate(&d, FLASH).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(
        count(&up.keys_to(GEN), &free),
        2,
        "the free key serves FLASH"
    );

    let list = list_keys(&d, &token).await;
    let k = entry_of(&list, &free);
    assert_eq!(k["state"], "active", "{k}");
    let m = model_view(k, PRO).unwrap_or_else(|| panic!("{PRO} state in {k}"));
    assert_eq!(m["state"], "unavailable", "{m}");
    let recheck = m["unavailable_until_ms"].as_i64().unwrap();
    let in_a_day = jiff::Timestamp::now().as_millisecond() + 24 * 3600 * 1000;
    assert!(
        (recheck - in_a_day).abs() < 60_000,
        "looked at again in a day: {m}"
    );

    let id = k["id"].as_str().unwrap();
    admin_ok(
        &d,
        Method::POST,
        &format!("/api/keys/{id}/reset"),
        &token,
        None,
    )
    .await;
    let list = list_keys(&d, &token).await;
    assert!(
        model_view(entry_of(&list, &free), PRO).is_none(),
        "a reset clears it: {list:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_quota_hit_cools_every_key_of_the_project() {
    let (a, b, c) = (key(0), key(1), key(2));
    let ka = a.clone();
    // A is of project 861042 and does not know it; Google says so in its 429.
    let up = Upstream::start(move |r| match (r.key(), r.model()) {
        (Some(k), Some(PRO)) if k == ka => google::quota_429(
            &[google::Violation::new(google::PER_MINUTE, PRO).limit(5)],
            Some("30s"),
            Some("861042"),
        ),
        _ => Reply::generate_ok("hello"),
    })
    .await;
    let cfg = daemon_config(&up, vec![a.clone(), c.clone()]).extra(&format!(
        "\n[[upstream_keys]]\nkey = \"{b}\"\nproject = \"861042\"\n"
    ));
    let d = Daemon::start(&cfg).await;
    let token = login(&d, PASSWORD).await;
    let v = admin_ok(&d, Method::GET, "/api/keys", &token, None).await;
    assert_eq!(v["quotas"], 3, "three keys, one known project: {v}");

    for _ in 0..3 {
        let r = generate(&d, PRO).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(count(&up.keys_to(GEN), &a), 1, "A hit its quota once");
    up.clear();
    for _ in 0..4 {
        let r = generate(&d, PRO).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(up.keys_to(GEN), vec![c.clone(); 4], "B is out with A");
    up.clear();
    for _ in 0..6 {
        let r = generate(&d, FLASH).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(count(&up.keys_to(GEN), &b), 2, "B still serves FLASH");

    let v = admin_ok(&d, Method::GET, "/api/keys", &token, None).await;
    let list = v["keys"].as_array().unwrap();
    assert_eq!(entry_of(list, &a)["project"], "861042", "learned: {v}");
    assert_eq!(entry_of(list, &b)["project"], "861042");
    let pro_b = model_view(entry_of(list, &b), PRO).expect("B's PRO state");
    assert_eq!(pro_b["state"], "cooling", "{pro_b}");
    assert!(entry_of(list, &c)["project"].is_null());
    assert_eq!(v["quotas"], 2, "project 861042 and C: {v}");

    let id = entry_of(list, &c)["id"].as_str().unwrap().to_owned();
    let path = format!("/api/keys/{id}");
    let auth = format!("Bearer {token}");
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let bad = client::request(Method::PATCH, &d.url(&path), &h, r#"{"project":"a b"}"#).await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    let set = admin_ok(
        &d,
        Method::PATCH,
        &path,
        &token,
        Some(json!({"project": "861042"})),
    )
    .await;
    assert_eq!(set["project"], "861042", "{set}");
    let v = admin_ok(&d, Method::GET, "/api/keys", &token, None).await;
    assert_eq!(v["quotas"], 1, "every key in one project: {v}");
    admin_ok(
        &d,
        Method::PATCH,
        &path,
        &token,
        Some(json!({"project": null})),
    )
    .await;
    let v = admin_ok(&d, Method::GET, "/api/keys", &token, None).await;
    assert_eq!(v["quotas"], 2, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_learning_a_per_minute_limit_the_key_gets_at_most_that_many_a_minute() {
    let (a, b) = (key(0), key(1));
    let ka = a.clone();
    let taught = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t = taught.clone();
    // A's first FLASH request is refused with its limit (3 a minute); later ones pass,
    // as Google would let them through while A stays under it.
    let up = Upstream::start(move |r| match (r.key(), r.model()) {
        (Some(k), Some(FLASH)) if k == ka && !t.swap(true, std::sync::atomic::Ordering::SeqCst) => {
            google::per_minute(FLASH, 3, "0s")
        }
        _ => Reply::generate_ok("hello"),
    })
    .await;
    let mut d = Daemon::start(&daemon_config(&up, vec![a.clone(), b.clone()])).await;
    let token = login(&d, PASSWORD).await;
    for _ in 0..2 {
        let r = generate(&d, FLASH).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(
        taught.load(std::sync::atomic::Ordering::SeqCst),
        "A was refused once"
    );
    // Wait out the cool-down (retryDelay 0s + margin), polling the admin API.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let list = list_keys(&d, &token).await;
        let m = model_view(entry_of(&list, &a), FLASH)
            .cloned()
            .expect("A's FLASH state");
        assert_eq!(m["limit_per_minute"], 3, "{m}");
        if m["cooling"] == false {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "A still cooling: {m}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    up.clear();
    for _ in 0..12 {
        let r = generate(&d, FLASH).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let sent = up.keys_to(GEN);
    assert_eq!(count(&sent, &a), 3, "A at its limit, no more: {sent:?}");
    assert_eq!(count(&sent, &b), 9, "B serves the rest");
    let list = list_keys(&d, &token).await;
    let m = model_view(entry_of(&list, &a), FLASH).cloned().unwrap();
    assert_eq!(m["used_last_minute"], 3, "{m}");

    // The limit is kept in the store.
    d.restart().await;
    let token = login(&d, PASSWORD).await;
    let list = list_keys(&d, &token).await;
    let m = model_view(entry_of(&list, &a), FLASH)
        .cloned()
        .expect("kept");
    assert_eq!(m["limit_per_minute"], 3, "{m}");
}
