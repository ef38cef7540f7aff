//! Statistics from pre-aggregated buckets (hour × user × key × model), so a dashboard
//! query costs the same with ten or ten million logged requests. This module defines the
//! bucket, how a log record adds to it, and the pure aggregations behind
//! `/api/stats/*` (summary, time series in any IANA zone, daily heatmap). Buckets with no
//! traffic are no data: rates and latencies are `null` there, never 100 %.
//!
//! Buckets are UTC hours: local days, weeks and months are exact in every zone whose
//! offset is a whole number of hours (DST included); in half-hour zones a local bucket's
//! edge is off by that half hour.

pub use crate::store::{Bucket, BucketKey, HOUR_MS};
use jiff::{ToSpan, Zoned, civil, tz::TimeZone};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Requests,
    Tokens,
    SuccessRate,
    Latency,
}

impl Metric {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "requests" => Self::Requests,
            "tokens" => Self::Tokens,
            "success_rate" => Self::SuccessRate,
            "latency" => Self::Latency,
            _ => return None,
        })
    }

    fn value(self, b: Option<&Bucket>) -> Option<f64> {
        match self {
            Self::Requests => Some(b.map_or(0.0, |b| b.requests as f64)),
            Self::Tokens => Some(b.map_or(0.0, |b| b.total_tokens as f64)),
            Self::SuccessRate => b.and_then(Bucket::success_rate),
            Self::Latency => b.and_then(Bucket::mean_latency),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Hour,
    Day,
    Week,
    Month,
}

impl Period {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "hour" => Self::Hour,
            "day" => Self::Day,
            "week" => Self::Week,
            "month" => Self::Month,
            _ => return None,
        })
    }

    /// The start of the local period containing `z` (weeks start on Monday).
    fn start(self, z: &Zoned) -> Option<Zoned> {
        let tz = z.time_zone().clone();
        let d = z.date();
        let day_start = |d: civil::Date| d.to_zoned(tz.clone()).ok();
        match self {
            Period::Hour => z.start_of_day().ok().and_then(|s| {
                let hours = (z.timestamp().as_second() - s.timestamp().as_second()) / 3600;
                s.checked_add(hours.hours()).ok()
            }),
            Period::Day => day_start(d),
            Period::Week => {
                let back = i64::from(d.weekday().to_monday_zero_offset());
                day_start(d.checked_sub(back.days()).ok()?)
            }
            Period::Month => day_start(d.first_of_month()),
        }
    }

    fn next(self, start: &Zoned) -> Option<Zoned> {
        let step = match self {
            Period::Hour => 1.hour(),
            Period::Day => 1.day(),
            Period::Week => 1.week(),
            Period::Month => 1.month(),
        };
        start.checked_add(step).ok()
    }

    fn label(self, start: &Zoned) -> String {
        match self {
            Period::Hour => start.strftime("%Y-%m-%d %H:00").to_string(),
            Period::Month => start.strftime("%Y-%m").to_string(),
            _ => start.strftime("%Y-%m-%d").to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Model,
    Key,
    User,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "model" => Self::Model,
            "key" => Self::Key,
            "user" => Self::User,
            _ => return None,
        })
    }

    fn name(self, k: &BucketKey) -> String {
        let s = match self {
            GroupBy::Model => &k.model,
            GroupBy::Key => &k.key_id,
            GroupBy::User => &k.user,
        };
        if s.is_empty() {
            "(none)".to_owned()
        } else {
            s.clone()
        }
    }
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Point {
    pub ts: i64,
    pub label: String,
    pub value: Option<f64>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<Point>,
}

/// Sums buckets into local periods of `tz` between `from` and `to` (Unix ms), one series
/// per group (or one named `all`). Every period in range gets a point.
pub fn timeseries(
    buckets: &[(BucketKey, Bucket)],
    metric: Metric,
    period: Period,
    tz: &TimeZone,
    from: i64,
    to: i64,
    group: Option<GroupBy>,
) -> Vec<Series> {
    let zoned = |ms: i64| {
        jiff::Timestamp::from_millisecond(ms)
            .ok()
            .map(|t| t.to_zoned(tz.clone()))
    };
    // The periods in range, as (start ms, label).
    let mut periods: Vec<(i64, String)> = Vec::new();
    let mut cur = zoned(from).and_then(|z| period.start(&z));
    while let Some(z) = cur {
        let ms = z.timestamp().as_millisecond();
        if ms >= to || periods.len() > 10_000 {
            break;
        }
        periods.push((ms, period.label(&z)));
        cur = period.next(&z);
    }
    let mut sums: BTreeMap<String, BTreeMap<i64, Bucket>> = BTreeMap::new();
    for (k, b) in buckets {
        if k.hour_ms < from || k.hour_ms >= to {
            continue;
        }
        let idx = periods.partition_point(|(start, _)| *start <= k.hour_ms);
        let Some((start, _)) = idx.checked_sub(1).map(|i| &periods[i]) else {
            continue;
        };
        let name = group.map_or_else(|| "all".to_owned(), |g| g.name(k));
        sums.entry(name)
            .or_default()
            .entry(*start)
            .or_default()
            .merge(b);
    }
    if sums.is_empty() && group.is_none() {
        sums.insert("all".to_owned(), BTreeMap::new());
    }
    sums.into_iter()
        .map(|(name, by_start)| Series {
            name,
            points: periods
                .iter()
                .map(|(start, label)| Point {
                    ts: *start,
                    label: label.clone(),
                    value: metric.value(by_start.get(start)),
                })
                .collect(),
        })
        .collect()
}

/// One number per local date of `tz` (requests or tokens); dates without data are omitted.
pub fn daily(buckets: &[(BucketKey, Bucket)], metric: Metric, tz: &TimeZone) -> Vec<(String, f64)> {
    let mut days: BTreeMap<civil::Date, f64> = BTreeMap::new();
    for (k, b) in buckets {
        let Ok(ts) = jiff::Timestamp::from_millisecond(k.hour_ms) else {
            continue;
        };
        let v = match metric {
            Metric::Tokens => b.total_tokens as f64,
            _ => b.requests as f64,
        };
        *days.entry(ts.to_zoned(tz.clone()).date()).or_default() += v;
    }
    days.into_iter()
        .filter(|(_, v)| *v > 0.0)
        .map(|(d, v)| (d.to_string(), v))
        .collect()
}

/// Sums every bucket in `[from, to)`.
pub fn total(buckets: &[(BucketKey, Bucket)], from: i64, to: i64) -> Bucket {
    let mut sum = Bucket::default();
    for (k, b) in buckets {
        if k.hour_ms >= from && k.hour_ms < to {
            sum.merge(b);
        }
    }
    sum
}

#[cfg(test)]
mod bench;
#[cfg(test)]
mod tests;
