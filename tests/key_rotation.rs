//! Key selection on the Gemini-native routes: requests rotate over the pool, a key Google
//! calls invalid or suspended is retired after one try, a 429 cools only that key for
//! only that model, a client error is relayed without a retry or a penalty, a 5xx or a
//! reset fails over to another key within `max_attempts`, the no-key answers (429 with
//! `Retry-After` while keys cool, 503 when none is usable), and key state survives a
//! restart.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_spreads_requests_over_keys() {
    let up = Upstream::start(|_| Reply::generate_ok("hello")).await;
    let d = Daemon::start(&Config::new(&up).keys(keys(3))).await;
    for i in 0..6 {
        let r = generate(&d, FLASH).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(
            r.json(),
            up_body_ok(),
            "request {i}: body relayed unchanged"
        );
    }
    let used = up.keys_to(GEN);
    assert_eq!(used.len(), 6, "one upstream call per request: {used:?}");
    for k in keys(3) {
        assert_eq!(
            count(&used, &k),
            2,
            "round-robin: {k} should serve 2 of 6; order {used:?}"
        );
    }
}

async fn retired_key_is_never_sent_again(bad: fn() -> Reply) {
    let bad_key = key(0);
    let bk = bad_key.clone();
    let up = Upstream::start(move |r| {
        if r.key() == Some(&bk) {
            bad()
        } else {
            Reply::generate_ok("hello")
        }
    })
    .await;
    let d = Daemon::start(&Config::new(&up).keys(keys(3))).await;
    for i in 0..8 {
        let r = generate(&d, FLASH).await;
        assert_eq!(
            r.status,
            200,
            "request {i} must succeed on another key: {}",
            r.text()
        );
    }
    let used = up.keys_to(GEN);
    assert_eq!(
        count(&used, &bad_key),
        1,
        "the bad key is tried once, then retired; order {used:?}"
    );
    assert_eq!(used.len(), 9, "8 successes + 1 failed attempt: {used:?}");
    let last = used.iter().rposition(|k| *k == bad_key).unwrap();
    assert_ne!(
        last,
        used.len() - 1,
        "the failed attempt was retried on another key: {used:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_invalid_retires_the_key() {
    retired_key_is_never_sent_again(Reply::api_key_invalid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_suspended_retires_the_key() {
    retired_key_is_never_sent_again(Reply::consumer_suspended).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_429_cools_only_that_key_and_model() {
    let a = key(0);
    let ka = a.clone();
    let up = Upstream::start(move |r| {
        if r.key() == Some(&ka) && r.model() == Some(FLASH) {
            Reply::resource_exhausted("30s")
        } else {
            Reply::generate_ok("hello")
        }
    })
    .await;
    let d = Daemon::start(&Config::new(&up).keys(keys(2))).await;
    let flash_a = || {
        up.requests_to(GEN)
            .iter()
            .filter(|r| r.model() == Some(FLASH) && r.key() == Some(&a))
            .count()
    };

    for i in 0..4 {
        let t = Instant::now();
        let r = generate(&d, FLASH).await;
        assert_eq!(
            r.status,
            200,
            "flash request {i} must succeed on key b: {}",
            r.text()
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "retry after a 429 must be immediate, took {:?}",
            t.elapsed()
        );
        if flash_a() > 0 {
            break;
        }
    }
    assert_eq!(
        flash_a(),
        1,
        "key a got the flash request once: {:?}",
        up.keys_to(GEN)
    );

    for i in 0..4 {
        let r = generate(&d, FLASH).await;
        assert_eq!(
            r.status,
            200,
            "flash request {i} after cool-down: {}",
            r.text()
        );
    }
    assert_eq!(
        flash_a(),
        1,
        "(key a, flash) is cooling, must be skipped: {:?}",
        up.keys_to(GEN)
    );

    for i in 0..4 {
        let r = generate(&d, PRO).await;
        assert_eq!(r.status, 200, "pro request {i}: {}", r.text());
    }
    let pro: Vec<String> = up
        .requests_to(GEN)
        .iter()
        .filter(|r| r.model() == Some(PRO))
        .map(|r| r.key().unwrap_or_default().to_string())
        .collect();
    assert_eq!(pro.len(), 4, "one upstream call per pro request: {pro:?}");
    assert!(
        count(&pro, &a) >= 1,
        "key a must still serve gemini-2.5-pro: {pro:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_error_is_relayed_unchanged_without_retry_or_penalty() {
    let up = Upstream::start(|r| {
        if r.body_text().contains("please-fail") {
            Reply::invalid_argument()
        } else {
            Reply::generate_ok("hello")
        }
    })
    .await;
    let d = Daemon::start(
        &Config::new(&up)
            .keys(keys(2))
            .pool("failure_threshold", "2"),
    )
    .await;
    let url = d.url(&model_path(FLASH, "generateContent"));
    for i in 0..4 {
        let r = client::post(&url, &user_auth(), r#"{"contents":[],"please-fail":true}"#).await;
        assert_eq!(r.status, 400, "request {i}");
        assert_eq!(
            r.text(),
            upstream::INVALID_ARGUMENT_BODY,
            "request {i}: body relayed byte for byte"
        );
        assert!(
            r.header("x-request-id").is_some(),
            "request {i}: x-request-id on a relayed error"
        );
        assert_eq!(
            up.requests_to(GEN).len(),
            i + 1,
            "request {i}: exactly one upstream call, no retry"
        );
    }
    up.clear();
    for i in 0..4 {
        let r = generate(&d, FLASH).await;
        assert_eq!(
            r.status,
            200,
            "request {i} after client errors: {}",
            r.text()
        );
    }
    let used = up.keys_to(GEN);
    for k in keys(2) {
        assert_eq!(
            count(&used, &k),
            2,
            "no penalty: {k} keeps serving; order {used:?}"
        );
    }
}

async fn fails_over_when_first_key(bad: fn() -> Reply) {
    let a = key(0);
    let ka = a.clone();
    let up = Upstream::start(move |r| {
        if r.key() == Some(&ka) {
            bad()
        } else {
            ok_or_stream(r)
        }
    })
    .await;
    let d = Daemon::start(&Config::new(&up).keys(keys(2))).await;
    for i in 0..2 {
        let r = generate(&d, FLASH).await;
        assert_eq!(
            r.status,
            200,
            "request {i} fails over to key b: {}",
            r.text()
        );
    }
    let used = up.keys_to(GEN);
    assert!(count(&used, &a) >= 1, "key a was tried: {used:?}");
    assert_eq!(count(&used, &key(1)), 2, "key b served both: {used:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_503_fails_over_to_another_key() {
    fails_over_when_first_key(Reply::unavailable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_reset_before_headers_fails_over() {
    fails_over_when_first_key(|| Reply::Reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_attempts_bounds_retries() {
    let up = Upstream::start(|_| Reply::internal()).await;
    let d = Daemon::start(&Config::new(&up).keys(keys(5)).pool("max_attempts", "2")).await;
    let r = generate(&d, FLASH).await;
    assert!(
        (500..600).contains(&r.status),
        "5xx expected, got {}: {}",
        r.status,
        r.text()
    );
    assert_google_error_value(&r.json(), Some(r.status), None);
    assert!(r.header("x-request-id").is_some());
    let used = up.keys_to(GEN);
    assert_eq!(used.len(), 2, "max_attempts = 2: {used:?}");
    assert_ne!(used[0], used[1], "the retry uses another key: {used:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_keys_cooling_answers_429_with_retry_after() {
    let up = Upstream::start(|_| Reply::resource_exhausted("30s")).await;
    let d = Daemon::start(&Config::new(&up).keys(keys(2))).await;
    let r = generate(&d, FLASH).await;
    assert_eq!(r.status, 429, "both keys answered 429: {}", r.text());
    assert_eq!(up.requests_to(GEN).len(), 2, "each key tried once");

    let r = generate(&d, FLASH).await;
    assert_google_error(&r, 429, "RESOURCE_EXHAUSTED");
    let ra = r.header("retry-after").expect("Retry-After header");
    let secs: u64 = ra
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is not integer seconds: {ra:?}"));
    assert!(
        (1..=60).contains(&secs),
        "Retry-After {secs}s should be about the 30s retryDelay"
    );
    assert!(r.header("x-request-id").is_some());
    assert_eq!(
        up.requests_to(GEN).len(),
        2,
        "no upstream call while every key cools"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_keys_configured_answers_503() {
    let up = Upstream::start(|_| Reply::generate_ok("hello")).await;
    let d = Daemon::start(&Config::new(&up).keys(Vec::<String>::new())).await;
    let r = generate(&d, FLASH).await;
    assert_google_error(&r, 503, "UNAVAILABLE");
    assert!(r.header("x-request-id").is_some());
    assert!(up.requests().is_empty(), "{:?}", up.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_keys_invalid_answers_503() {
    let up = Upstream::start(|_| Reply::api_key_invalid()).await;
    let d = Daemon::start(&Config::new(&up).keys(keys(2))).await;
    let r = generate(&d, FLASH).await;
    assert_google_error(&r, 503, "UNAVAILABLE");
    assert_eq!(up.requests_to(GEN).len(), 2, "each key tried once");
    let r = generate(&d, FLASH).await;
    assert_google_error(&r, 503, "UNAVAILABLE");
    assert_eq!(
        up.requests_to(GEN).len(),
        2,
        "retired keys are not tried again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_state_survives_restart() {
    let (a, b, c) = (key(0), key(1), key(2));
    let (ka, kb) = (a.clone(), b.clone());
    let up = Upstream::start(move |r| {
        if r.key() == Some(&ka) {
            Reply::api_key_invalid()
        } else if r.key() == Some(&kb) && r.model() == Some(FLASH) {
            Reply::resource_exhausted("3600s")
        } else {
            Reply::generate_ok("hello")
        }
    })
    .await;
    let mut d = Daemon::start(&Config::new(&up).keys(keys(3))).await;
    for i in 0..6 {
        let r = generate(&d, FLASH).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        let used = up.keys_to(GEN);
        if used.contains(&a) && used.contains(&b) {
            break;
        }
    }
    let used = up.keys_to(GEN);
    assert!(
        used.contains(&a) && used.contains(&b),
        "a retired and b cooled before restart: {used:?}"
    );

    d.restart().await;
    up.clear();
    for i in 0..4 {
        let r = generate(&d, FLASH).await;
        assert_eq!(
            r.status,
            200,
            "flash request {i} after restart: {}",
            r.text()
        );
    }
    let used = up.keys_to(GEN);
    assert_eq!(
        used,
        vec![c.clone(); 4],
        "after restart only key c may serve flash"
    );

    up.clear();
    for i in 0..4 {
        let r = generate(&d, PRO).await;
        assert_eq!(r.status, 200, "pro request {i} after restart: {}", r.text());
    }
    let used = up.keys_to(GEN);
    assert_eq!(
        count(&used, &a),
        0,
        "retired key a must stay retired: {used:?}"
    );
    assert!(
        count(&used, &b) >= 1,
        "b cools for flash only, still serves pro: {used:?}"
    );
    assert_eq!(used.len(), 4, "{used:?}");
}
