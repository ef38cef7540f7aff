//! Black-box tests of the request log and statistics on the redb store: after a scripted
//! mix of requests (success, client error, 429 failover, SSE stream, a stream cut after
//! its first event) the log holds exactly one right record per request, its filters and
//! cursor paging return exactly the right records, and the CSV export, the summary, the
//! time series and `/metrics` agree with it.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use common::admin::{admin, admin_json, generate_as, log_page};
use common::upstream::{StreamReply, chunk_with_finish};
use common::*;
use http::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "logs-stats-admin-pw-9";

const BOB_KEY: &str = "gb-test-bob-0123456789abcdef";

/// A model the fake upstream refuses as the client's fault (400 INVALID_ARGUMENT).
const BAD_MODEL: &str = "gemini-bad-request";

/// A model whose stream the fake upstream cuts after the first event.
const CUT_MODEL: &str = "gemini-2.0-flash";

// ---------------------------------------------------------------- helpers

async fn login(d: &Daemon) -> String {
    common::admin::login(d, PASSWORD).await
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The final chunk of the scripted SSE answer, with its own usage (the one to record).
fn last_sse_chunk() -> Value {
    let mut c = chunk_with_finish(" there", Some("STOP"));
    c["usageMetadata"] = json!({
        "promptTokenCount": 5, "candidatesTokenCount": 9,
        "thoughtsTokenCount": 3, "totalTokenCount": 17
    });
    c
}

/// The fake upstream for the mix: `BAD_MODEL` → 400; the first `PRO` call → 429 (then
/// 200); `CUT_MODEL` streams → one event, then (once `gate` is notified) a cut
/// connection; other streams → two SSE events; everything else → 200.
async fn scripted_upstream(gate: Arc<Notify>) -> Upstream {
    let pro_calls = Arc::new(AtomicUsize::new(0));
    Upstream::start(move |r| match r.model() {
        Some(BAD_MODEL) => Reply::invalid_argument(),
        Some(PRO) if pro_calls.fetch_add(1, Ordering::SeqCst) == 0 => {
            Reply::resource_exhausted("30s")
        }
        Some(CUT_MODEL) if r.is_stream() => StreamReply::sse(vec![
            chunk("one"),
            chunk("two"),
            chunk_with_finish("three", Some("STOP")),
        ])
        .gate_before(1, gate.clone())
        .cut_after(1)
        .into(),
        _ if r.is_stream() => StreamReply::sse(vec![chunk("hi"), last_sse_chunk()]).into(),
        _ => Reply::generate_ok("hello"),
    })
    .await
}

fn config(up: &Upstream) -> Config {
    Config::new(up)
        .user("bob", BOB_KEY)
        .admin_password(PASSWORD)
}

async fn stream(d: &Daemon, model: &str) -> Response {
    client::post_stream(
        &d.url(&format!(
            "{}?alt=sse",
            model_path(model, "streamGenerateContent")
        )),
        &user_auth(),
        GENERATE_BODY,
    )
    .await
    .read_to_end()
    .await
}

// ---------------------------------------------------------------- the log

/// What each request of the mix must be logged as.
struct Expect {
    id: String,
    user: &'static str,
    route: &'static str,
    model: &'static str,
    stream: bool,
    status: u16,
    outcome: &'static str,
    attempts: u64,
    /// prompt, candidates, thoughts, total
    tokens: [u64; 4],
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_statistics_and_metrics_match_a_scripted_mix_exactly() {
    let gate = Arc::new(Notify::new());
    let up = scripted_upstream(gate.clone()).await;
    let d = Daemon::start(&config(&up)).await;
    let token = login(&d).await;
    let (t, dr) = (token.as_str(), &d);
    let gen_route = "generateContent";
    let stream_route = "streamGenerateContent";

    let mut mix: Vec<Expect> = Vec::new();
    let r = generate_as(&d, USER_KEY, FLASH).await;
    assert_eq!(r.status, 200, "ok: {}", r.text());
    mix.push(Expect {
        id: request_id(&r),
        user: USER_NAME,
        route: gen_route,
        model: FLASH,
        stream: false,
        status: 200,
        outcome: "ok",
        attempts: 1,
        tokens: [5, 7, 0, 12],
    });
    let r = generate_as(&d, USER_KEY, BAD_MODEL).await;
    assert_eq!(r.status, 400, "client error relayed: {}", r.text());
    mix.push(Expect {
        id: request_id(&r),
        user: USER_NAME,
        route: gen_route,
        model: BAD_MODEL,
        stream: false,
        status: 400,
        outcome: "client_error",
        attempts: 1,
        tokens: [0, 0, 0, 0],
    });
    let r = generate_as(&d, USER_KEY, PRO).await;
    assert_eq!(r.status, 200, "429 then failover: {}", r.text());
    let pro_keys = up.keys_to(&format!("{PRO}:generateContent"));
    assert_eq!(pro_keys.len(), 2, "two attempts upstream: {pro_keys:?}");
    assert_ne!(pro_keys[0], pro_keys[1], "the failover used another key");
    mix.push(Expect {
        id: request_id(&r),
        user: USER_NAME,
        route: gen_route,
        model: PRO,
        stream: false,
        status: 200,
        outcome: "ok",
        attempts: 2,
        tokens: [5, 7, 0, 12],
    });
    let r = stream(&d, FLASH).await;
    assert_eq!(r.status, 200, "stream: {}", r.text());
    assert_eq!(sse_json_events(&r.body).len(), 2, "{}", r.text());
    mix.push(Expect {
        id: request_id(&r),
        user: USER_NAME,
        route: stream_route,
        model: FLASH,
        stream: true,
        status: 200,
        outcome: "ok",
        attempts: 1,
        tokens: [5, 9, 3, 17],
    });
    // The cut comes once the first event has reached the client (no failover after it).
    let mut s = client::post_stream(
        &d.url(&format!(
            "{}?alt=sse",
            model_path(CUT_MODEL, "streamGenerateContent")
        )),
        &user_auth(),
        GENERATE_BODY,
    )
    .await;
    assert_eq!(s.status, 200, "cut stream");
    s.read_until("the first SSE event", has_sse_event).await;
    gate.notify_one();
    let r = s.read_to_end().await;
    let events = sse_json_events(&r.body);
    assert_eq!(chunk_text(&events[0]), Some("one"), "{}", r.text());
    assert!(
        events.iter().any(|e| e.get("error").is_some()),
        "the cut stream ends with an error event: {}",
        r.text()
    );
    mix.push(Expect {
        id: request_id(&r),
        user: USER_NAME,
        route: stream_route,
        model: CUT_MODEL,
        stream: true,
        status: 200,
        outcome: "truncated",
        attempts: 1,
        // The last usageMetadata that arrived: the first event's.
        tokens: [5, 7, 0, 12],
    });
    let r = generate_as(&d, BOB_KEY, FLASH).await;
    assert_eq!(r.status, 200, "bob: {}", r.text());
    mix.push(Expect {
        id: request_id(&r),
        user: "bob",
        route: gen_route,
        model: FLASH,
        stream: false,
        status: 200,
        outcome: "ok",
        attempts: 1,
        tokens: [5, 7, 0, 12],
    });
    let sent: BTreeSet<String> = mix.iter().map(|e| e.id.clone()).collect();
    assert_eq!(sent.len(), 6, "distinct request ids");

    // Every request appears, once (records are written within about a second).
    let logs: Vec<Value> = wait_for("six log records", Duration::from_secs(10), || async move {
        let v = admin_json(dr, t, "/api/logs").await;
        let logs = v["logs"].as_array().cloned().unwrap_or_default();
        if logs.len() >= 6 {
            Ok(logs)
        } else {
            Err(v.to_string())
        }
    })
    .await;
    assert_eq!(logs.len(), 6, "{logs:?}");
    let listed: BTreeSet<String> = logs
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, sent, "x-request-id is the record's request_id");

    // Newest first: by arrival time, ties by request id.
    let time_of = |id: &str| {
        logs.iter().find(|r| r["request_id"] == id).unwrap()["time"]
            .as_i64()
            .expect("time")
    };
    for w in mix.windows(2) {
        assert!(
            time_of(&w[0].id) <= time_of(&w[1].id),
            "arrival times in order"
        );
    }
    let mut newest: Vec<&Expect> = mix.iter().collect();
    newest.sort_by(|a, b| (time_of(&b.id), &b.id).cmp(&(time_of(&a.id), &a.id)));
    let order: Vec<String> = newest.iter().map(|e| e.id.clone()).collect();
    let got: Vec<String> = logs
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, order, "newest first");

    for e in &mix {
        let rec = logs
            .iter()
            .find(|r| r["request_id"] == e.id.as_str())
            .unwrap();
        let what = format!("{} {} {}: {rec}", e.route, e.model, e.outcome);
        assert_eq!(rec["user"], e.user, "{what}");
        assert_eq!(rec["route"], e.route, "{what}");
        assert_eq!(rec["model"], e.model, "{what}");
        assert_eq!(rec["stream"], e.stream, "{what}");
        assert_eq!(rec["status"], e.status, "{what}");
        assert_eq!(rec["outcome"], e.outcome, "{what}");
        assert_eq!(rec["attempts"], e.attempts, "{what}");
        let [p, c, th, total] = e.tokens;
        let tk = &rec["tokens"];
        assert_eq!(
            (
                &tk["prompt"],
                &tk["candidates"],
                &tk["thoughts"],
                &tk["total"]
            ),
            (&json!(p), &json!(c), &json!(th), &json!(total)),
            "tokens of {what}"
        );
        assert_eq!(
            rec["attempt_chain"].as_array().map(Vec::len),
            Some(e.attempts as usize),
            "{what}"
        );
    }

    // The failover's attempt chain: rate_limited on one key, then ok on another.
    let failover = &mix[2];
    let v = admin_json(&d, t, &format!("/api/logs/{}", failover.id)).await;
    assert_eq!(v["request_id"], failover.id.as_str(), "{v}");
    let chain = v["attempt_chain"].as_array().expect("attempt_chain");
    assert_eq!(chain.len(), 2, "{v}");
    assert_eq!(chain[0]["outcome"], "rate_limited", "{v}");
    assert_eq!(chain[0]["status"], 429, "{v}");
    assert_eq!(chain[1]["outcome"], "ok", "{v}");
    assert_eq!(chain[1]["status"], 200, "{v}");
    assert_ne!(chain[0]["key_id"], chain[1]["key_id"], "{v}");
    assert_eq!(
        v["key_id"], chain[1]["key_id"],
        "served by the second key: {v}"
    );
    let r = admin(&d, Method::GET, "/api/logs/no-such-request", t, None).await;
    assert_eq!(r.status, 404, "{}", r.text());

    // Filters: exactly the matching records, newest first.
    let pick = |pred: &dyn Fn(&Expect) -> bool| -> Vec<String> {
        newest
            .iter()
            .filter(|e| pred(e))
            .map(|e| e.id.clone())
            .collect()
    };
    let cases: Vec<(String, Vec<String>)> = vec![
        (format!("model={FLASH}"), pick(&|e| e.model == FLASH)),
        (format!("model={PRO}"), pick(&|e| e.model == PRO)),
        ("outcome=ok".into(), pick(&|e| e.outcome == "ok")),
        (
            "outcome=client_error".into(),
            pick(&|e| e.outcome == "client_error"),
        ),
        (
            "outcome=truncated".into(),
            pick(&|e| e.outcome == "truncated"),
        ),
        ("outcome=no_key".into(), Vec::new()),
        ("stream=true".into(), pick(&|e| e.stream)),
        ("stream=false".into(), pick(&|e| !e.stream)),
        ("user=bob".into(), pick(&|e| e.user == "bob")),
        ("user=alice".into(), pick(&|e| e.user == USER_NAME)),
        ("status=400".into(), pick(&|e| e.status == 400)),
        ("status=200".into(), pick(&|e| e.status == 200)),
        (
            format!("model={FLASH}&stream=true"),
            pick(&|e| e.model == FLASH && e.stream),
        ),
        (
            format!("user=alice&outcome=ok&model={}", enc(FLASH)),
            pick(&|e| e.user == USER_NAME && e.outcome == "ok" && e.model == FLASH),
        ),
    ];
    for (query, expect) in &cases {
        let (ids, next) = log_page(&d, t, query).await;
        assert_eq!(&ids, expect, "filter {query}");
        assert_eq!(next, None, "filter {query}: one page");
    }
    let r = admin(&d, Method::GET, "/api/logs?outcome=splendid", t, None).await;
    assert_eq!(r.status, 400, "unknown outcome: {}", r.text());

    // Paging: limit 2 and the cursor walk the whole log, each record once, in order.
    for (query, expect) in [("", order.clone()), ("stream=false&", pick(&|e| !e.stream))] {
        let mut walked = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10 {
            let q = match &cursor {
                Some(c) => format!("{query}limit=2&cursor={}", enc(c)),
                None => format!("{query}limit=2"),
            };
            let (ids, next) = log_page(&d, t, &q).await;
            assert!(ids.len() <= 2, "{q}: {ids:?}");
            walked.extend(ids);
            cursor = next;
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(cursor, None, "the cursor runs out");
        assert_eq!(walked, expect, "pages of 2 ({query})");
    }
    let (first, next) = log_page(&d, t, "limit=2").await;
    assert_eq!(first, order[..2].to_vec());
    assert!(next.is_some(), "a full first page has a cursor");

    // CSV export: a header and one row per record.
    let r = admin(&d, Method::GET, "/api/logs/export?format=csv", t, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/csv")),
        "{:?}",
        r.header("content-type")
    );
    let text = r.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7, "header + 6 rows:\n{text}");
    assert!(lines[0].starts_with("request_id,"), "{}", lines[0]);
    let header: Vec<&str> = lines[0].split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name} column: {}", lines[0]))
    };
    let (c_outcome, c_total) = (col("outcome"), col("total_tokens"));
    let rows: Vec<String> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect();
    assert_eq!(rows, order, "CSV rows, newest first");
    for (line, id) in lines[1..].iter().zip(&order) {
        let cells: Vec<&str> = line.split(',').collect();
        let e = mix.iter().find(|e| &e.id == id).unwrap();
        assert_eq!(cells[c_outcome], e.outcome, "{line}");
        assert_eq!(cells[c_total], e.tokens[3].to_string(), "{line}");
    }

    // Summary: today's numbers are the log's.
    let v = admin_json(&d, t, "/api/stats/summary").await;
    let today = &v["today"];
    let total_tokens: u64 = mix.iter().map(|e| e.tokens[3]).sum();
    assert_eq!(total_tokens, 65);
    assert_eq!(today["requests"], 6, "{v}");
    assert_eq!(today["ok"], 4, "{v}");
    assert_eq!(today["client_errors"], 1, "{v}");
    assert_eq!(today["errors"], 1, "the truncated stream: {v}");
    assert_eq!(today["tokens"], total_tokens, "{v}");
    assert_eq!(today["prompt_tokens"], 25, "{v}");
    assert_eq!(today["thoughts_tokens"], 3, "{v}");
    assert_eq!(v["last_24h"]["requests"], 6, "{v}");
    assert_eq!(v["keys"]["total"], 2, "{v}");

    // Time series in New York days sum to the log; an empty range has no rates.
    for (metric, sum) in [("requests", 6.0), ("tokens", total_tokens as f64)] {
        let v = admin_json(
            &d,
            t,
            &format!("/api/stats/timeseries?metric={metric}&bucket=day&tz=America/New_York"),
        )
        .await;
        assert_eq!(v["tz"], "America/New_York", "{v}");
        let series = v["series"].as_array().expect("series");
        assert_eq!(series.len(), 1, "{v}");
        assert_eq!(series[0]["name"], "all", "{v}");
        let points = series[0]["points"].as_array().expect("points");
        assert!(points.len() >= 30, "a point per day: {v}");
        let total: f64 = points
            .iter()
            .map(|p| p["value"].as_f64().unwrap_or(0.0))
            .sum();
        assert_eq!(total, sum, "{metric}: {v}");
    }
    let from = unix_ms() - 10 * 86_400_000;
    let v = admin_json(
        &d,
        t,
        &format!(
            "/api/stats/timeseries?metric=success_rate&bucket=hour&from={from}&to={}",
            from + 6 * 3_600_000
        ),
    )
    .await;
    let points = v["series"][0]["points"].as_array().expect("points");
    assert!(points.len() >= 6, "{v}");
    assert!(
        points.iter().all(|p| p["value"].is_null()),
        "no traffic is no data, not 100 %: {v}"
    );

    // Prometheus counters by route, model and outcome.
    let expect_lines = [
        format!(
            "gemini_balance_requests_total{{route=\"generateContent\",model=\"{FLASH}\",outcome=\"ok\"}} 2"
        ),
        format!(
            "gemini_balance_requests_total{{route=\"generateContent\",model=\"{PRO}\",outcome=\"ok\"}} 1"
        ),
        format!(
            "gemini_balance_requests_total{{route=\"generateContent\",model=\"{BAD_MODEL}\",outcome=\"client_error\"}} 1"
        ),
        format!(
            "gemini_balance_requests_total{{route=\"streamGenerateContent\",model=\"{FLASH}\",outcome=\"ok\"}} 1"
        ),
        format!(
            "gemini_balance_requests_total{{route=\"streamGenerateContent\",model=\"{CUT_MODEL}\",outcome=\"truncated\"}} 1"
        ),
    ];
    let expect_lines = &expect_lines;
    let text = wait_for(
        "the request counters",
        Duration::from_secs(10),
        || async move {
            let r = dr.metrics().await;
            let text = r.text();
            if r.status == 200 && expect_lines.iter().all(|l| text.lines().any(|x| x == l)) {
                Ok(text)
            } else {
                Err(format!("{} {text}", r.status))
            }
        },
    )
    .await;
    let counted: u64 = text
        .lines()
        .filter(|l| l.starts_with("gemini_balance_requests_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().expect("count"))
        .sum();
    assert_eq!(counted, 6, "no other requests counted:\n{text}");
}
