//! Black-box tests of the daemon's HTTP/2 connections to the upstream, against a fake
//! that behaves like Google's front end (`common::h2up`: TLS with ALPN `h2`, a stream
//! limit per connection, GOAWAY by graceful shutdown, REFUSED_STREAM, dead peers): streams
//! past one connection's limit open more connections instead of waiting, the cap per host
//! makes requests wait for a free stream, GOAWAY (graceful, or abrupt before the request
//! was processed) and refused streams lose no request,
//! a connection whose pings go unanswered is closed and replaced, and one past its
//! maximum age is retired.
//! One serving thread (`workers = 1`), so all requests share one set of connections.

mod common;

use common::h2up::H2Upstream;
use common::upstream::test_ca_path;
use common::*;
use std::sync::atomic::Ordering;
use std::time::Duration;

const WITHIN: Duration = Duration::from_secs(10);

fn config(up: &H2Upstream) -> Config {
    let ca = serde_json::to_string(test_ca_path().to_str().unwrap()).unwrap();
    Config::with_url(&up.url())
        .upstream(&format!("extra_ca_file = {ca}"))
        .extra("[server]\nworkers = 1")
}

/// Opens `n` streamed calls at once and returns them once each has its first event.
async fn open_streams(d: &Daemon, n: usize) -> Vec<Stream> {
    let url = d.url(&format!(
        "{}?alt=sse",
        model_path(FLASH, "streamGenerateContent")
    ));
    let calls = (0..n).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let mut s = client::post_stream(&url, &user_auth(), GENERATE_BODY).await;
            assert_eq!(s.status, 200);
            s.read_until("the first event", has_sse_event).await;
            s
        })
    });
    let mut streams = Vec::new();
    for call in calls {
        streams.push(call.await.expect("stream task"));
    }
    streams
}

/// Reads each stream to its end and checks it carried both events.
async fn finish(streams: Vec<Stream>) {
    for s in streams {
        let r = s.read_to_end().await;
        assert!(r.body_error.is_none(), "{:?}", r.body_error);
        let texts: Vec<String> = sse_json_events(&r.body)
            .iter()
            .filter_map(|e| chunk_text(e).map(str::to_owned))
            .collect();
        assert_eq!(texts, ["one", "two"]);
    }
}

async fn wait_open(up: &H2Upstream, n: usize) {
    wait_for("streams open at the upstream", WITHIN, || async {
        match up.open_streams() {
            open if open == n => Ok(()),
            open => Err(format!("{open} open")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_one_connections_limit_all_get_their_first_byte_at_once() {
    let up = H2Upstream::start(4).await;
    let d = Daemon::start(&config(&up)).await;
    // Ten streams held open at once: each got its first event before any was released,
    // so none waited for a stream.
    let streams = open_streams(&d, 10).await;
    wait_open(&up, 10).await;
    assert_eq!(up.most_on_one_connection(), 4, "the limit is followed");
    let conns = up.connections().len();
    assert!(
        (3..=4).contains(&conns),
        "{conns} connections for 10 streams"
    );
    up.release();
    finish(streams).await;
    // Later calls reuse what is open.
    let r = client::post(
        &d.url(&model_path(FLASH, "generateContent")),
        &user_auth(),
        GENERATE_BODY,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.connections().len(), conns);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_a_request_waits_for_a_free_stream() {
    let up = H2Upstream::start(2).await;
    let d = Daemon::start(&config(&up).upstream("max_connections_per_host = 1")).await;
    let held = open_streams(&d, 2).await;
    wait_open(&up, 2).await;
    let url = d.url(&format!(
        "{}?alt=sse",
        model_path(FLASH, "streamGenerateContent")
    ));
    let third = tokio::spawn(async move {
        client::post_stream(&url, &user_auth(), GENERATE_BODY)
            .await
            .read_to_end()
            .await
    });
    // The third waits in the daemon: the upstream sees two streams on one connection
    // until the held ones end; then the third gets a stream and finishes.
    assert_eq!(up.requests(), 2);
    up.release();
    finish(held).await;
    let r = third.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(sse_json_events(&r.body).len(), 2);
    assert_eq!(up.connections().len(), 1);
    assert_eq!(up.most_on_one_connection(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_loses_no_request_and_new_ones_go_to_new_connections() {
    let up = H2Upstream::start(4).await;
    let d = Daemon::start(&config(&up)).await;
    let before = open_streams(&d, 6).await;
    wait_open(&up, 6).await;
    let old = up.connections().len();
    up.goaway_all();
    // Streams that arrive after GOAWAY open connections of their own; the old ones keep
    // their streams until these end.
    let after = open_streams(&d, 6).await;
    wait_open(&up, 12).await;
    assert!(
        up.connections().len() >= old + 2,
        "{} connections",
        up.connections().len()
    );
    up.release();
    finish(before).await;
    finish(after).await;
    wait_for("the old connections to close", WITHIN, || async {
        let conns = up.connections();
        let open = conns[..old]
            .iter()
            .filter(|c| !c.closed.load(Ordering::SeqCst))
            .count();
        if open == 0 {
            Ok(())
        } else {
            Err(format!("{open} still open"))
        }
    })
    .await;
    // And plain calls go on working on the new connections.
    for _ in 0..4 {
        let r = client::post(
            &d.url(&model_path(FLASH, "generateContent")),
            &user_auth(),
            GENERATE_BODY,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abrupt_goaway_before_processing_loses_no_request() {
    let up = H2Upstream::start(4).await;
    up.end_abruptly(1);
    let d = Daemon::start(&config(&up).admin_password("abrupt-test-password")).await;
    let url = d.url(&model_path(FLASH, "generateContent"));
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { client::post(&url, &user_auth(), GENERATE_BODY).await })
        })
        .collect();
    let streamed = open_streams(&d, 1).await;
    for call in calls {
        let r = call.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    up.release();
    finish(streamed).await;
    assert_eq!(up.ended_abruptly(), 1, "the first connection went down");
    assert_eq!(
        up.requests(),
        4,
        "each call answered once, on another connection"
    );
    // The connection pool sent each again itself: the log shows one attempt per call, no
    // retry on another key.
    let token = common::admin::login(&d, "abrupt-test-password").await;
    let auth = format!("Bearer {token}");
    let logs = wait_for("four log records", WITHIN, || async {
        let r = client::get(&d.url("/api/logs"), &[("authorization", auth.as_str())]).await;
        let v: serde_json::Value = r.json();
        match v["logs"].as_array() {
            Some(logs) if logs.len() == 4 => Ok(logs.clone()),
            _ => Err(v.to_string()),
        }
    })
    .await;
    for rec in logs {
        assert_eq!(
            (&rec["status"], &rec["attempts"]),
            (&200.into(), &1.into()),
            "{rec}"
        );
        assert_eq!(rec["outcome"], "ok", "{rec}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_streams_are_sent_again() {
    let up = H2Upstream::start(4).await;
    let d = Daemon::start(&config(&up)).await;
    up.refuse_next(3);
    let url = d.url(&model_path(FLASH, "generateContent"));
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { client::post(&url, &user_auth(), GENERATE_BODY).await })
        })
        .collect();
    for call in calls {
        let r = call.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(up.refused(), 3);
    assert_eq!(up.requests(), 4, "each call answered once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_pings_go_unanswered_is_closed_and_replaced() {
    let up = H2Upstream::start(4).await;
    let cfg = config(&up)
        .upstream("keepalive_interval = \"1s\"")
        .upstream("keepalive_timeout = \"1s\"");
    let d = Daemon::start(&cfg).await;
    let url = d.url(&model_path(FLASH, "generateContent"));
    let r = client::post(&url, &user_auth(), GENERATE_BODY).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.connections().len(), 1);
    up.freeze_all();
    wait_for(
        "the daemon to close the silent connection",
        WITHIN,
        || async {
            match up.connections()[0].closed.load(Ordering::SeqCst) {
                true => Ok(()),
                false => Err("still open".to_owned()),
            }
        },
    )
    .await;
    let r = client::post(&url, &user_auth(), GENERATE_BODY).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.connections().len(), 2, "a new connection replaced it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_its_maximum_age_takes_no_new_request_and_closes() {
    let up = H2Upstream::start(4).await;
    let d = Daemon::start(&config(&up).upstream("max_connection_age = \"1s\"")).await;
    let url = d.url(&model_path(FLASH, "generateContent"));
    let r = client::post(&url, &user_auth(), GENERATE_BODY).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Calls go on succeeding; once the first connection is a second old they go to a new
    // one, and the old one, idle, is closed.
    wait_for("a second connection", WITHIN, || async {
        let r = client::post(&url, &user_auth(), GENERATE_BODY).await;
        assert_eq!(r.status, 200, "{}", r.text());
        match up.connections().len() {
            1 => Err("one connection".to_owned()),
            _ => Ok(()),
        }
    })
    .await;
    wait_for("the old connection to close", WITHIN, || async {
        match up.connections()[0].closed.load(Ordering::SeqCst) {
            true => Ok(()),
            false => Err("still open".to_owned()),
        }
    })
    .await;
}
