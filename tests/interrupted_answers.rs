//! Answers broken off midway, black-box: a client that leaves mid-stream frees its key and
//! user slots and the upstream stream at once and is logged `cancelled`; the stream idle
//! timeout counts from the upstream's last byte, so a slow but steady stream arrives whole
//! and one that falls silent ends with an error event; a non-stream answer the upstream
//! stalls or cuts after its headers never reaches the client as a clean, whole answer.

mod common;

use std::time::{Duration, Instant};

use common::admin::{admin_json, all_logs};
use common::client;
use common::faults::{Fault, FaultUpstream, Profile};
use common::raw::raw_status;
use common::{Config, Daemon, FLASH, GENERATE_BODY, USER_KEY, model_path, user_auth, wait_for};
use serde_json::{Value, json};

const PASSWORD: &str = "interrupted-answers-admin-pw";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_stream_releases_its_slots_and_the_upstream_at_once() {
    // Every stream sends one event, then holds the connection open.
    let up = FaultUpstream::start(1, Profile::always(Fault::Stall(1))).await;
    let cfg = Config::with_url(&up.url())
        .keys(common::keys(3))
        .admin_password(PASSWORD);
    let d = Daemon::start(&cfg).await;
    let token = common::admin::login(&d, PASSWORD).await;
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
    wait_for(
        "key and user slots and upstream bodies freed after the clients left",
        Duration::from_secs(2),
        || async {
            let k = in_flight(&admin_json(&d, &token, "/api/keys").await, "keys");
            let u = in_flight(&admin_json(&d, &token, "/api/users").await, "users");
            let open = up.open_bodies();
            if k == 0 && u == 0 && open == 0 {
                Ok(())
            } else {
                Err(format!(
                    "key in_flight {k}, user in_flight {u}, upstream bodies open {open}"
                ))
            }
        },
    )
    .await;
    println!("slots released {:?} after the clients left", left.elapsed());
    assert_eq!(
        up.abandoned(),
        3,
        "the upstream saw its three streams closed"
    );
    // One `cancelled` record each.
    let logs = wait_for(
        "one log record per request",
        Duration::from_secs(3),
        || async {
            let logs = all_logs(&d, &token).await;
            let each_once = ids
                .iter()
                .all(|id| logs.iter().filter(|l| l["request_id"] == json!(id)).count() == 1);
            if each_once {
                Ok(logs)
            } else {
                Err(format!("{logs:?}"))
            }
        },
    )
    .await;
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

async fn daemon_with_toml(text: &str) -> Daemon {
    // Start with any config, then restart on the hand-written one (same data dir).
    let placeholder = Config::with_url("http://127.0.0.1:9").admin_password(PASSWORD);
    let mut d = Daemon::start(&placeholder).await;
    d.stop().await;
    std::fs::write(d.config_path(), text).unwrap();
    d.restart().await;
    d
}
