use super::*;
use crate::record::{LogOutcome, LogRecord};
use crate::usage::Tokens;

fn ms(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

fn rec(time: i64, model: &str, outcome: LogOutcome, total: u64, latency: f64) -> LogRecord {
    LogRecord {
        request_id: "r".into(),
        time,
        user: Some("alice".into()),
        route: "generateContent".into(),
        model: model.into(),
        stream: false,
        status: 200,
        outcome,
        latency_ms: latency,
        ttfb_ms: None,
        tokens: Tokens {
            total,
            ..Tokens::default()
        },
        key_id: Some("k1".into()),
        key: None,
        attempts: 1,
        attempt_chain: vec![],
        resource: None,
        bytes_up: 0,
        bytes_down: 0,
        close_code: None,
        group: None,
    }
}

fn buckets(records: &[LogRecord]) -> Vec<(BucketKey, Bucket)> {
    let mut map: BTreeMap<BucketKey, Bucket> = BTreeMap::new();
    for r in records {
        map.entry(BucketKey::of(r)).or_default().add(r);
    }
    map.into_iter().collect()
}

#[test]
fn new_york_days_across_the_november_change() {
    // 2026-11-01 is the day US clocks fall back: that local day has 25 hours.
    let start = ms("2026-10-31T04:00:00Z"); // Oct 31 00:00 EDT
    let end = ms("2026-11-02T05:00:00Z"); // Nov 2 00:00 EST
    let records: Vec<_> = (0..)
        .map(|h| start + h * HOUR_MS)
        .take_while(|t| *t < end)
        .map(|t| rec(t, "m", LogOutcome::Ok, 10, 100.0))
        .collect();
    let tz = TimeZone::get("America/New_York").unwrap();
    let series = timeseries(
        &buckets(&records),
        Metric::Requests,
        Period::Day,
        &tz,
        start,
        end,
        None,
    );
    let points: Vec<(&str, Option<f64>)> = series[0]
        .points
        .iter()
        .map(|p| (p.label.as_str(), p.value))
        .collect();
    assert_eq!(
        points,
        [("2026-10-31", Some(24.0)), ("2026-11-01", Some(25.0))]
    );
    assert_eq!(series[0].points[1].ts, ms("2026-11-01T04:00:00Z"));
}

#[test]
fn hours_without_traffic_are_no_data_for_rates() {
    let t0 = ms("2026-11-26T10:00:00Z");
    let records = vec![
        rec(t0, "m", LogOutcome::Ok, 0, 100.0),
        rec(t0 + 1, "m", LogOutcome::UpstreamError, 0, 300.0),
        rec(t0 + 2, "m", LogOutcome::ClientError, 0, 20.0),
    ];
    let b = buckets(&records);
    let s = timeseries(
        &b,
        Metric::SuccessRate,
        Period::Hour,
        &TimeZone::UTC,
        t0,
        t0 + 2 * HOUR_MS,
        None,
    );
    assert_eq!(
        s[0].points[0].value,
        Some(50.0),
        "client errors count neither way"
    );
    assert_eq!(s[0].points[1].value, None, "no traffic is no data");
    let l = timeseries(
        &b,
        Metric::Latency,
        Period::Hour,
        &TimeZone::UTC,
        t0,
        t0 + HOUR_MS,
        None,
    );
    assert_eq!(l[0].points[0].value, Some(140.0));
    let r = timeseries(
        &b,
        Metric::Requests,
        Period::Hour,
        &TimeZone::UTC,
        t0,
        t0 + 2 * HOUR_MS,
        None,
    );
    assert_eq!(r[0].points[1].value, Some(0.0));
}

#[test]
fn grouped_by_model_and_weeks_start_monday() {
    let mon = ms("2026-11-23T12:00:00Z");
    let records = vec![
        rec(mon, "flash", LogOutcome::Ok, 5, 1.0),
        rec(mon + 24 * HOUR_MS, "pro", LogOutcome::Ok, 7, 1.0),
        rec(mon - 24 * HOUR_MS, "flash", LogOutcome::Ok, 11, 1.0),
    ];
    let from = ms("2026-11-16T00:00:00Z");
    let to = ms("2026-11-30T00:00:00Z");
    let s = timeseries(
        &buckets(&records),
        Metric::Tokens,
        Period::Week,
        &TimeZone::UTC,
        from,
        to,
        Some(GroupBy::Model),
    );
    let flash = s.iter().find(|s| s.name == "flash").unwrap();
    let pro = s.iter().find(|s| s.name == "pro").unwrap();
    assert_eq!(
        flash.points.iter().map(|p| p.value).collect::<Vec<_>>(),
        [Some(11.0), Some(5.0)]
    );
    assert_eq!(
        pro.points.iter().map(|p| p.value).collect::<Vec<_>>(),
        [Some(0.0), Some(7.0)]
    );
}

#[test]
fn daily_heatmap_omits_empty_days_and_uses_local_dates() {
    let tz = TimeZone::get("Asia/Shanghai").unwrap();
    let records = vec![
        rec(ms("2026-11-25T17:00:00Z"), "m", LogOutcome::Ok, 3, 1.0), // Nov 26 01:00 local
        rec(ms("2026-11-25T15:00:00Z"), "m", LogOutcome::Ok, 4, 1.0), // Nov 25 23:00 local
    ];
    let days = daily(&buckets(&records), Metric::Tokens, &tz);
    assert_eq!(
        days,
        [
            ("2026-11-25".to_owned(), 4.0),
            ("2026-11-26".to_owned(), 3.0)
        ]
    );
}

#[test]
fn histogram_places_latencies() {
    let mut b = Bucket::default();
    b.add(&rec(0, "m", LogOutcome::Ok, 0, 49.0));
    b.add(&rec(0, "m", LogOutcome::Ok, 0, 999_999.0));
    assert_eq!(b.latency_hist[0], 1);
    assert_eq!(b.latency_hist[11], 1);
}
