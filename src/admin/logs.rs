//! `/api/logs…` and `/api/stats/…`: reading the request log (filters, cursor paging, CSV)
//! and the statistics built from its hourly buckets, in the caller's time zone.

use super::json;
use crate::app::AppState;
use crate::body::Body;
use crate::error::ApiError;
use crate::keys::{KeyStatus, unix_ms};
use crate::record::{LogOutcome, LogRecord};
use crate::stats::{self, Bucket, GroupBy, HOUR_MS, Metric, Period};
use crate::store::LogQuery;
use http::{HeaderValue, Response, StatusCode, Uri, header};
use jiff::tz::TimeZone;
use std::collections::HashMap;

const DAY_MS: i64 = 24 * HOUR_MS;

fn params(uri: &Uri) -> HashMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn bad(what: &str) -> ApiError {
    ApiError::BadRequest(format!("Invalid query parameter: {what}."))
}

fn int<T: std::str::FromStr>(
    p: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>, ApiError> {
    p.get(name)
        .filter(|v| !v.is_empty())
        .map(|v| v.parse::<T>().map_err(|_| bad(name)))
        .transpose()
}

/// The latest time a query may name: the end of year 9999, in Unix ms.
const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// A time bound (Unix ms), clamped to 1970 ..= 9999 so range arithmetic cannot overflow.
fn time(p: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    Ok(int::<i64>(p, name)?.map(|t| t.clamp(0, MAX_TIME_MS)))
}

fn text(p: &HashMap<String, String>, name: &str) -> Option<String> {
    p.get(name).filter(|v| !v.is_empty()).cloned()
}

fn query(
    p: &HashMap<String, String>,
    default_limit: usize,
    max: usize,
) -> Result<LogQuery, ApiError> {
    Ok(LogQuery {
        from: time(p, "from")?,
        to: time(p, "to")?,
        user: text(p, "user"),
        key_id: text(p, "key"),
        model: text(p, "model"),
        outcome: match text(p, "outcome") {
            Some(o) => Some(LogOutcome::parse(&o).ok_or_else(|| bad("outcome"))?),
            None => None,
        },
        status: int(p, "status")?,
        stream: int(p, "stream")?,
        limit: int::<usize>(p, "limit")?
            .unwrap_or(default_limit)
            .clamp(1, max),
        cursor: text(p, "cursor"),
    })
}

fn store_err(e: crate::store::StoreError) -> ApiError {
    ApiError::Store(e.to_string())
}

pub async fn list(state: &AppState, uri: &Uri) -> Result<Response<Body>, ApiError> {
    let q = query(&params(uri), 50, 1000)?;
    let (logs, next) = state.store.query_logs(q).await.map_err(store_err)?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "logs": logs, "next_cursor": next }),
    ))
}

pub async fn one(state: &AppState, id: &str) -> Result<Response<Body>, ApiError> {
    match state.store.get_log(id).await.map_err(store_err)? {
        Some(rec) => Ok(json(StatusCode::OK, &rec)),
        None => Err(ApiError::NoSuch("Request")),
    }
}

/// The log as CSV (at most 100,000 rows), with the same filters as the list.
pub async fn export(state: &AppState, uri: &Uri) -> Result<Response<Body>, ApiError> {
    let p = params(uri);
    if text(&p, "format").is_some_and(|f| f != "csv") {
        return Err(bad("format (only csv)"));
    }
    let mut q = query(&p, 1000, 1000)?;
    let mut out = String::from(
        "request_id,time,user,route,model,stream,status,outcome,latency_ms,ttfb_ms,prompt_tokens,candidates_tokens,thoughts_tokens,cached_tokens,total_tokens,key,attempts,resource,bytes_up,bytes_down,close_code,group\n",
    );
    let mut rows = 0;
    loop {
        let (page, next) = state.store.query_logs(q.clone()).await.map_err(store_err)?;
        for r in &page {
            csv_row(&mut out, r);
        }
        rows += page.len();
        match next {
            Some(c) if rows < 100_000 => q.cursor = Some(c),
            _ => break,
        }
    }
    let mut resp = Response::new(Body::full(out));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"gemini-balance-log.csv\""),
    );
    Ok(resp)
}

/// What a spreadsheet may read as the start of a formula, after any leading whitespace:
/// the ASCII signs and their fullwidth forms.
const FORMULA_START: [char; 8] = ['=', '+', '-', '@', '＝', '＋', '－', '＠'];

/// One CSV field: quoted when needed, and defused against spreadsheet formulas.
fn field(out: &mut String, v: &str) {
    let risky = v.starts_with(['\t', '\r']) || v.trim_start().starts_with(FORMULA_START);
    let v = if risky { format!("'{v}") } else { v.to_owned() };
    if v.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(&v);
    }
}

fn csv_row(out: &mut String, r: &LogRecord) {
    let time = jiff::Timestamp::from_millisecond(r.time)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let t = &r.tokens;
    let cells: [String; 22] = [
        r.request_id.clone(),
        time,
        r.user.clone().unwrap_or_default(),
        r.route.clone(),
        r.model.clone(),
        r.stream.to_string(),
        r.status.to_string(),
        r.outcome.as_str().to_owned(),
        format!("{:.1}", r.latency_ms),
        r.ttfb_ms.map(|v| format!("{v:.1}")).unwrap_or_default(),
        t.prompt.to_string(),
        t.candidates.to_string(),
        t.thoughts.to_string(),
        t.cached.to_string(),
        t.total.to_string(),
        r.key.clone().unwrap_or_default(),
        r.attempts.to_string(),
        r.resource.clone().unwrap_or_default(),
        r.bytes_up.to_string(),
        r.bytes_down.to_string(),
        r.close_code.map(|c| c.to_string()).unwrap_or_default(),
        r.group.clone().unwrap_or_default(),
    ];
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        field(out, c);
    }
    out.push('\n');
}

fn tz(p: &HashMap<String, String>) -> Result<TimeZone, ApiError> {
    match text(p, "tz") {
        None => Ok(TimeZone::UTC),
        Some(name) => TimeZone::get(&name).map_err(|_| {
            ApiError::BadRequest("Unknown time zone: use an IANA name like Asia/Shanghai.".into())
        }),
    }
}

fn part(b: &Bucket) -> serde_json::Value {
    serde_json::json!({
        "requests": b.requests,
        "ok": b.ok,
        "errors": b.upstream_error + b.no_key + b.truncated,
        "client_errors": b.client_error,
        "cancelled": b.cancelled,
        "success_rate": b.success_rate(),
        "mean_latency_ms": b.mean_latency(),
        "tokens": b.total_tokens,
        "prompt_tokens": b.prompt_tokens,
        "candidates_tokens": b.candidates_tokens,
        "thoughts_tokens": b.thoughts_tokens,
        "cached_tokens": b.cached_tokens,
    })
}

pub async fn summary(state: &AppState, uri: &Uri) -> Result<Response<Body>, ApiError> {
    let tz = tz(&params(uri))?;
    let now = unix_ms();
    let today = jiff::Timestamp::from_millisecond(now)
        .ok()
        .and_then(|t| t.to_zoned(tz).start_of_day().ok())
        .map_or(now - now.rem_euclid(DAY_MS), |z| {
            z.timestamp().as_millisecond()
        });
    let day_ago = now - now.rem_euclid(HOUR_MS) - 23 * HOUR_MS;
    let from = today.min(day_ago) - HOUR_MS;
    let buckets = state
        .store
        .stats_range(from, now + HOUR_MS)
        .await
        .map_err(store_err)?;
    let mut keys: HashMap<&str, u64> = HashMap::new();
    for e in state.pool.entries() {
        let s = match e.view(now).state {
            KeyStatus::Active | KeyStatus::Unavailable => "active",
            KeyStatus::Cooling => "cooling",
            KeyStatus::Invalid => "invalid",
            KeyStatus::Disabled => "disabled",
        };
        *keys.entry(s).or_default() += 1;
    }
    let n = |s: &str| keys.get(s).copied().unwrap_or(0);
    // An hour bucket counts towards today when it starts on or after local midnight; in
    // whole-hour zones that is exact.
    let today_total = stats::total(&buckets, today - today.rem_euclid(HOUR_MS), i64::MAX);
    let body = serde_json::json!({
        "today": part(&today_total),
        "last_24h": part(&stats::total(&buckets, day_ago, i64::MAX)),
        "keys": {
            "total": state.pool.len(),
            "active": n("active"),
            "cooling": n("cooling"),
            "invalid": n("invalid"),
            "disabled": n("disabled"),
        },
    });
    Ok(json(StatusCode::OK, &body))
}

pub async fn timeseries(state: &AppState, uri: &Uri) -> Result<Response<Body>, ApiError> {
    let p = params(uri);
    let metric_name = text(&p, "metric").unwrap_or_else(|| "requests".into());
    let metric = Metric::parse(&metric_name).ok_or_else(|| bad("metric"))?;
    let bucket_name = text(&p, "bucket").unwrap_or_else(|| "hour".into());
    let period = Period::parse(&bucket_name).ok_or_else(|| bad("bucket"))?;
    let group = match text(&p, "group_by") {
        Some(g) => Some(GroupBy::parse(&g).ok_or_else(|| bad("group_by"))?),
        None => None,
    };
    let tz = tz(&p)?;
    let now = unix_ms();
    let to = time(&p, "to")?.unwrap_or(now + 1);
    let span = match period {
        Period::Hour => DAY_MS,
        Period::Day => 30 * DAY_MS,
        Period::Week => 12 * 7 * DAY_MS,
        Period::Month => 365 * DAY_MS,
    };
    let from = time(&p, "from")?.unwrap_or(to - span);
    if from >= to || to - from > 800 * DAY_MS {
        return Err(bad(
            "from/to (from must be before to, at most 800 days apart)",
        ));
    }
    let buckets = state
        .store
        .stats_range(from - from.rem_euclid(HOUR_MS), to)
        .await
        .map_err(store_err)?;
    let series = stats::timeseries(&buckets, metric, period, &tz, from, to, group);
    let body = serde_json::json!({
        "metric": metric_name,
        "bucket": bucket_name,
        "tz": tz.iana_name().unwrap_or("UTC"),
        "series": series,
    });
    Ok(json(StatusCode::OK, &body))
}

pub async fn heatmap(state: &AppState, uri: &Uri) -> Result<Response<Body>, ApiError> {
    let p = params(uri);
    let metric_name = text(&p, "metric").unwrap_or_else(|| "requests".into());
    let metric = match Metric::parse(&metric_name) {
        Some(m @ (Metric::Requests | Metric::Tokens)) => m,
        _ => return Err(bad("metric (requests or tokens)")),
    };
    let tz = tz(&p)?;
    let now = unix_ms();
    let buckets = state
        .store
        .stats_range(now - 366 * DAY_MS, now + HOUR_MS)
        .await
        .map_err(store_err)?;
    let days: Vec<_> = stats::daily(&buckets, metric, &tz)
        .into_iter()
        .map(|(date, value)| serde_json::json!({"date": date, "value": value}))
        .collect();
    let body = serde_json::json!({
        "metric": metric_name,
        "tz": tz.iana_name().unwrap_or("UTC"),
        "days": days,
    });
    Ok(json(StatusCode::OK, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        let mut s = String::new();
        field(&mut s, "a,\"b\"");
        s.push('|');
        field(&mut s, "=HYPERLINK(\"x\")");
        assert_eq!(s, "\"a,\"\"b\"\"\"|\"'=HYPERLINK(\"\"x\"\")\"");
        for v in [" =1", "\u{3000}+1", "＝1", "＋1", "－1", "＠x", "\t1", "-1"] {
            let mut s = String::new();
            field(&mut s, v);
            assert!(
                s.trim_start_matches('"').starts_with('\''),
                "{v:?} -> {s:?}"
            );
        }
        let mut s = String::new();
        field(&mut s, "gemini-2.5-flash");
        assert_eq!(s, "gemini-2.5-flash");
    }
}
