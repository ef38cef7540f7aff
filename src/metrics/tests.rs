use super::*;
use crate::events::Hub;
use crate::keys::Pool;
use crate::record::{LogOutcome, LogRecord};
use crate::store::Snapshot;
use crate::usage::Tokens;

fn rec(model: &str, total: u64) -> LogRecord {
    LogRecord {
        request_id: "r".into(),
        time: 0,
        user: None,
        route: "generateContent".into(),
        model: model.into(),
        stream: false,
        status: 200,
        outcome: LogOutcome::Ok,
        latency_ms: 12.0,
        ttfb_ms: None,
        tokens: Tokens {
            total,
            ..Tokens::default()
        },
        key_id: None,
        key: None,
        attempts: 2,
        attempt_chain: Vec::new(),
        resource: None,
        bytes_up: 0,
        bytes_down: 0,
        close_code: None,
        group: None,
    }
}

#[test]
fn each_outcome_is_counted_under_its_own_name() {
    let metrics = Metrics::default();
    for (i, outcome) in OUTCOMES.into_iter().enumerate() {
        let mut r = rec("gemini-2.5-flash", 0);
        r.outcome = outcome;
        for _ in 0..=i {
            metrics.observe(&(&r).into(), None);
        }
    }
    let (tx, _rx) = crate::keys::persist::channel();
    let hub = Hub::default();
    let pool = Pool::new(Default::default(), &Snapshot::default(), tx, hub.clone());
    let text = metrics.render(&pool, &hub, &[], 0);
    for (i, outcome) in OUTCOMES.into_iter().enumerate() {
        let series = format!(
            "gemini_balance_requests_total{{route=\"generateContent\",model=\"gemini-2.5-flash\",outcome=\"{}\"}} {}",
            outcome.as_str(),
            i + 1
        );
        assert!(text.lines().any(|l| l == series), "{series} in\n{text}");
    }
}

#[test]
fn counts_from_several_threads_add_up_and_share_the_label_limit() {
    let metrics = Metrics::default();
    std::thread::scope(|s| {
        for t in 0..6 {
            let metrics = &metrics;
            let lane = Some(t);
            s.spawn(move || {
                for _ in 0..=t {
                    metrics.observe(&(&rec("gemini-2.5-flash", 1)).into(), lane);
                }
                // Each thread brings its own client-chosen names, 20 each.
                for i in 0..20 {
                    metrics.observe(&(&rec(&format!("t{t}-m{i}"), 0)).into(), lane);
                }
            });
        }
    });
    let (tx, _rx) = crate::keys::persist::channel();
    let hub = Hub::default();
    let pool = Pool::new(Default::default(), &Snapshot::default(), tx, hub.clone());
    let text = metrics.render(&pool, &hub, &[], 0);
    let value = |prefix: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(prefix)).unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    // 1 + 2 + ... + 6 requests and tokens for flash, from six threads.
    let flash = "gemini_balance_requests_total{route=\"generateContent\",model=\"gemini-2.5-flash\",outcome=\"ok\"}";
    assert_eq!(value(flash), 21);
    assert_eq!(
        value("gemini_balance_tokens_total{model=\"gemini-2.5-flash\",kind=\"total\"}"),
        21
    );
    assert_eq!(
        value("gemini_balance_request_duration_seconds_count{route=\"generateContent\"}"),
        141
    );
    // 121 names in all; 64 labels, the rest counted as other.
    let labelled = text
        .lines()
        .filter(|l| l.starts_with("gemini_balance_requests_total{"))
        .count();
    assert_eq!(labelled, MAX_MODELS + 1);
    let other =
        "gemini_balance_requests_total{route=\"generateContent\",model=\"other\",outcome=\"ok\"}";
    assert_eq!(value(other), 121 - MAX_MODELS as u64);
}

#[test]
fn counts_by_model_and_folds_client_chosen_names_beyond_the_limit() {
    let metrics = Metrics::default();
    metrics.observe(&(&rec("gemini-2.5-flash", 7)).into(), None);
    metrics.observe(&(&rec("gemini-2.5-flash", 3)).into(), Some(0));
    for i in 0..MAX_MODELS + 5 {
        metrics.observe(&(&rec(&format!("m{i}"), 0)).into(), Some(i));
    }
    let (tx, _rx) = crate::keys::persist::channel();
    let hub = Hub::default();
    let pool = Pool::new(Default::default(), &Snapshot::default(), tx, hub.clone());
    let text = metrics.render(&pool, &hub, &[3, 4], 0);
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .to_owned()
    };
    assert!(line("gemini_balance_requests_total{route=\"generateContent\",model=\"gemini-2.5-flash\",outcome=\"ok\"}").ends_with(" 2"));
    assert!(
        line("gemini_balance_tokens_total{model=\"gemini-2.5-flash\",kind=\"total\"}")
            .ends_with(" 10")
    );
    // 64 labels in all: flash and 63 of the others; the last 6 are "other".
    assert!(line("gemini_balance_requests_total{route=\"generateContent\",model=\"other\",outcome=\"ok\"}").ends_with(" 6"));
    let labelled = text
        .lines()
        .filter(|l| l.starts_with("gemini_balance_requests_total{"))
        .count();
    assert_eq!(labelled, MAX_MODELS + 1);
    assert!(line("gemini_balance_retries_total ").ends_with(&format!(" {}", MAX_MODELS + 7)));
    assert!(line("gemini_balance_open_connections{thread=\"2\"}").ends_with(" 4"));
}
