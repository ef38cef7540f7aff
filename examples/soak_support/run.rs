//! The soak run shared by `examples/soak.rs` and the short CI soak in
//! `tests/reliability.rs`: starts the fault upstream ([`crate::faults`]) and the daemon on
//! loopback, drives mixed traffic (native and OpenAI, streamed and not, several users, some
//! clients leaving mid-stream) for a bounded time, then checks the invariants and returns
//! them with the figures. It prints nothing itself; [`Report::render`] does.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::http::{self, Client};
use super::proc::DaemonProc;
use crate::faults::{Fault, FaultUpstream, MALFORMED, Profile};

pub const PASSWORD: &str = "soak-admin-password";
pub const USERS: [(&str, &str); 3] = [
    ("u-alpha", "gb-soak-alpha-0123456789abcdef"),
    ("u-beta", "gb-soak-beta-0123456789abcdef0"),
    ("u-gamma", "gb-soak-gamma-0123456789abcdef"),
];
const MODELS: [&str; 2] = ["gemini-2.5-flash", "gemini-2.5-pro"];
/// A client request that takes longer than this is a hang.
const HANG: Duration = Duration::from_secs(20);
/// `RetryInfo.retryDelay` of the quota-limited key, plus the daemon's 1 s margin.
const COOL: Duration = Duration::from_secs(2);
const HTML: &str = "<html><body>Service Temporarily Unavailable</body></html>";

pub struct Settings {
    pub seconds: u64,
    pub clients: usize,
    pub seed: u64,
    pub daemon: PathBuf,
}

/// The pool: three flaky keys, one slow, one quota-limited, three broken.
pub fn pool() -> Vec<(String, Profile, Role)> {
    let flaky = || {
        Profile::healthy()
            .latency(Duration::from_millis(3))
            .with(80, Fault::Ok)
            .with(4, Fault::Status(500))
            .with(3, Fault::Status(503))
            .with(3, Fault::Reset)
            .with(3, Fault::Cut(1))
            .with(1, Fault::Stall(1))
            .with(2, Fault::Trickle(Duration::from_millis(8)))
            .with(1, Fault::Malformed)
            .with(1, Fault::WrongContentType)
            .with(2, Fault::InvalidArgument)
    };
    let key = |i: usize| format!("AIzaSOAK-0123456789abcdef-k{i:03}");
    vec![
        (key(0), flaky(), Role::Healthy),
        (key(1), flaky(), Role::Healthy),
        (key(2), flaky(), Role::Healthy),
        (
            key(3),
            Profile::healthy().latency(Duration::from_millis(300)),
            Role::Healthy,
        ),
        (
            key(4),
            Profile::healthy()
                .with(70, Fault::Ok)
                .with(30, Fault::Status(429))
                .retry_delay("1s"),
            Role::Quota,
        ),
        (key(5), Profile::always(Fault::Status(400)), Role::Broken),
        (key(6), Profile::always(Fault::Status(403)), Role::Broken),
        (key(7), Profile::always(Fault::Status(401)), Role::Broken),
    ]
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    Healthy,
    Quota,
    Broken,
}

fn config(upstream: &str, keys: &[(String, Profile, Role)]) -> String {
    let mut t = format!(
        "[admin]\npassword = \"{PASSWORD}\"\n\n[upstream]\nbase_url = \"{upstream}\"\n\
         allow_plain_http = true\nconnect_timeout = \"1s\"\nrequest_timeout = \"3s\"\n\
         stream_idle_timeout = \"2s\"\n\n[pool]\nmax_attempts = 4\nqueue_wait = \"500ms\"\n\
         failure_threshold = 3\nfailure_cooldown = \"2s\"\ncooldown_base = \"2s\"\n\
         revalidate_interval = \"0s\"\n\n[server]\nshutdown_grace = \"2s\"\n"
    );
    for (k, _, _) in keys {
        t += &format!("\n[[upstream_keys]]\nkey = \"{k}\"\n");
    }
    for (name, k) in USERS {
        t += &format!("\n[[users]]\nname = \"{name}\"\nkey = \"{k}\"\n");
    }
    t
}

/// What one client request was and what its client saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub kind: Kind,
    pub request_id: Option<String>,
    pub status: u16,
    pub verdict: Verdict,
    pub vanished: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Generate,
    NativeSse,
    NativeArray,
    Chat,
    ChatStream,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A whole answer (possibly the upstream's own malformed or HTML body, relayed intact).
    Ok,
    /// An error status with an error body.
    Error,
    /// A stream that ended with one well-formed error event / closed array.
    Truncated,
    /// A non-stream body cut by the upstream after its first byte (connection aborted).
    Aborted,
    /// The client left mid-stream on purpose.
    Left,
    /// No answer within [`HANG`].
    Hung,
    /// Not a well-formed answer: the reason.
    Bad(String),
}

pub struct Report {
    pub checks: Vec<(String, bool, String)>,
    pub figures: Vec<(String, String)>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|(_, ok, _)| *ok)
    }

    pub fn render(&self) -> String {
        let mut s = String::from("figures:\n");
        for (k, v) in &self.figures {
            s += &format!("  {k:<34} {v}\n");
        }
        s += "invariants:\n";
        for (name, ok, detail) in &self.checks {
            let mark = if *ok { "PASS" } else { "FAIL" };
            s += &format!("  [{mark}] {name}: {detail}\n");
        }
        s
    }

    fn check(&mut self, name: &str, ok: bool, detail: String) {
        self.checks.push((name.to_string(), ok, detail));
    }

    fn figure(&mut self, name: &str, value: impl ToString) {
        self.figures.push((name.to_string(), value.to_string()));
    }
}

pub async fn run(s: Settings) -> anyhow::Result<Report> {
    let keys = pool();
    let up = FaultUpstream::start(s.seed, Profile::healthy()).await;
    for (k, p, _) in &keys {
        up.set_profile(k, p.clone());
    }
    let daemon = DaemonProc::start(&s.daemon, &config(&up.url(), &keys))?;
    let base = format!("http://{}", daemon.addr);
    let client = http::client();
    let token = login(&client, &base).await?;

    let started = Instant::now();
    let end = started + Duration::from_secs(s.seconds);
    let warm_at = started + Duration::from_secs(s.seconds.div_ceil(4).max(2));
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let mut tasks = Vec::new();
    for c in 0..s.clients {
        let (client, base, seen) = (client.clone(), base.clone(), seen.clone());
        let seed = s.seed.wrapping_mul(1000).wrapping_add(c as u64);
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            while Instant::now() < end {
                let one = one_request(&client, &base, &mut rng).await;
                seen.lock().unwrap().push(one);
            }
        }));
    }
    tokio::time::sleep_until(warm_at.into()).await;
    let rss_warm = daemon.rss();
    let mut rss_peak = rss_warm;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
        rss_peak = rss_peak.max(daemon.rss());
    }
    let traffic_end = Instant::now();
    for t in tasks {
        t.await?;
    }
    let drained = Instant::now();
    // The log's batching window, then a margin.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rss_end = daemon.rss();

    let seen = seen.lock().unwrap().clone();
    let mut r = Report {
        checks: Vec::new(),
        figures: Vec::new(),
    };
    r.figure("duration (s)", s.seconds);
    r.figure("concurrent clients", s.clients);
    r.figure("client requests", seen.len());
    r.figure(
        "requests/s",
        format!("{:.1}", seen.len() as f64 / s.seconds.max(1) as f64),
    );
    r.figure(
        "drain after deadline (ms)",
        drained.duration_since(traffic_end).as_millis(),
    );
    let mut by_verdict: HashMap<String, usize> = HashMap::new();
    for x in &seen {
        let name = match &x.verdict {
            Verdict::Bad(_) => "bad".to_string(),
            v => format!("{v:?}").to_lowercase(),
        };
        *by_verdict.entry(name).or_default() += 1;
    }
    let mut v: Vec<_> = by_verdict.into_iter().collect();
    v.sort();
    r.figure("client verdicts", format!("{v:?}"));
    let served = up.served();
    r.figure("upstream attempts", served.len());
    r.figure("upstream bodies abandoned", up.abandoned());

    check_answers(&mut r, &seen);
    let logs = fetch_logs(&client, &base, &token).await?;
    check_logs(&mut r, &seen, &logs);
    check_stats(&mut r, &client, &base, &token, &logs).await?;
    check_keys(&mut r, &client, &base, &token, &keys).await?;
    check_cooling(&mut r, &up.served_by(&keys[4].0), traffic_end);
    check_slots(&mut r, &client, &base, &token, &up).await?;

    let (w, e, p) = (rss_warm / 1024, rss_end / 1024, rss_peak / 1024);
    r.figure("RSS after warm-up (KiB)", w);
    r.figure("RSS peak (KiB)", p);
    r.figure("RSS at end (KiB)", e);
    // Flat: the end within 10 % (at least 4 MiB) of the warmed-up size.
    let margin = (w / 10).max(4096);
    r.check(
        "memory stayed flat",
        e <= w + margin,
        format!("warm {w} KiB, end {e} KiB, allowed +{margin} KiB"),
    );
    drop(daemon);
    Ok(r)
}

async fn login(client: &Client, base: &str) -> anyhow::Result<String> {
    let body = format!("{{\"password\":\"{PASSWORD}\"}}");
    let r = http::call(client, "POST", &format!("{base}/api/login"), &[], body).await?;
    let v: Value = serde_json::from_slice(&r.body)?;
    v["access_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("login answered {}", r.status))
}

async fn one_request(client: &Client, base: &str, rng: &mut StdRng) -> Seen {
    let kind = match rng.random_range(0..10) {
        0..=2 => Kind::Generate,
        3..=4 => Kind::NativeSse,
        5 => Kind::NativeArray,
        6..=7 => Kind::Chat,
        _ => Kind::ChatStream,
    };
    let (_, user_key) = USERS[rng.random_range(0..USERS.len())];
    let model = MODELS[rng.random_range(0..MODELS.len())];
    let stream = matches!(kind, Kind::NativeSse | Kind::NativeArray | Kind::ChatStream);
    let leave = stream && rng.random_range(0..20) == 0;
    let native_body = r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#;
    let (url, auth, body) = match kind {
        Kind::Generate => (
            format!("{base}/v1beta/models/{model}:generateContent"),
            ("x-goog-api-key", user_key.to_string()),
            native_body.to_string(),
        ),
        Kind::NativeSse => (
            format!("{base}/v1beta/models/{model}:streamGenerateContent?alt=sse"),
            ("x-goog-api-key", user_key.to_string()),
            native_body.to_string(),
        ),
        Kind::NativeArray => (
            format!("{base}/v1beta/models/{model}:streamGenerateContent"),
            ("x-goog-api-key", user_key.to_string()),
            native_body.to_string(),
        ),
        Kind::Chat | Kind::ChatStream => (
            format!("{base}/v1/chat/completions"),
            ("authorization", format!("Bearer {user_key}")),
            format!(
                r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
            ),
        ),
    };
    let headers = [(auth.0, auth.1.as_str())];
    let fut = http::exchange(client, &url, &headers, body, leave);
    let (status, request_id, body, aborted, left) = match tokio::time::timeout(HANG, fut).await {
        Err(_) => {
            return Seen {
                kind,
                request_id: None,
                status: 0,
                verdict: Verdict::Hung,
                vanished: false,
            };
        }
        Ok(Err(e)) => {
            return Seen {
                kind,
                request_id: None,
                status: 0,
                verdict: Verdict::Bad(format!("no answer: {e:#}")),
                vanished: false,
            };
        }
        Ok(Ok(x)) => x,
    };
    let verdict = if left {
        Verdict::Left
    } else {
        judge(kind, status, &body, aborted)
    };
    Seen {
        kind,
        request_id,
        status,
        verdict,
        vanished: left,
    }
}

/// Whether what the client got is one well-formed answer, and which.
pub fn judge(kind: Kind, status: u16, body: &[u8], aborted: bool) -> Verdict {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    if status != 200 {
        let v: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => return Verdict::Bad(format!("{status} with a non-JSON body: {text:?}")),
        };
        let has_error = v["error"].is_object() || v[0]["error"].is_object();
        return if has_error && !aborted {
            Verdict::Error
        } else {
            Verdict::Bad(format!("{status} without an error object: {text:?}"))
        };
    }
    match kind {
        Kind::Generate | Kind::Chat => {
            if aborted {
                return Verdict::Aborted;
            }
            if text == MALFORMED || text == HTML {
                return Verdict::Ok;
            }
            match serde_json::from_str::<Value>(&text) {
                Ok(v) if v["candidates"].is_array() || v["choices"].is_array() => Verdict::Ok,
                _ => Verdict::Bad(format!("200 with an unexpected body: {text:?}")),
            }
        }
        Kind::NativeSse | Kind::ChatStream => judge_sse(kind, &text, aborted),
        Kind::NativeArray => judge_array(&text, aborted),
    }
}

/// Texts must be "part 0 ", "part 1 ", "part 2 " in order (a prefix when cut): anything
/// else is a spliced or repeated answer.
fn parts_ok(texts: &[String]) -> bool {
    texts
        .iter()
        .enumerate()
        .all(|(i, t)| *t == format!("part {i} "))
}

fn judge_sse(kind: Kind, text: &str, aborted: bool) -> Verdict {
    if text == HTML {
        return Verdict::Ok;
    }
    if aborted {
        return Verdict::Bad(format!("stream aborted without an error event: {text:?}"));
    }
    if !text.is_empty() && !text.ends_with("\n\n") {
        return Verdict::Bad(format!("stream ends inside an event: {text:?}"));
    }
    let mut texts = Vec::new();
    let mut error = false;
    let mut done = false;
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        if error || done {
            return Verdict::Bad(format!("an event after the end: {text:?}"));
        }
        let data = block.strip_prefix("data: ").unwrap_or(block);
        if data == "[DONE]" && kind == Kind::ChatStream {
            done = true;
            continue;
        }
        if data == MALFORMED {
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return Verdict::Bad(format!("event is not JSON: {data:?}"));
        };
        if v["error"].is_object() {
            error = true;
        } else if kind == Kind::ChatStream {
            if v["usage"].is_object() {
                return Verdict::Bad("usage chunk shown to a client that did not ask".into());
            }
            texts.push(
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap_or("?")
                    .into(),
            );
        } else {
            texts.push(
                v["candidates"][0]["content"]["parts"][0]["text"]
                    .as_str()
                    .unwrap_or("?")
                    .into(),
            );
        }
    }
    if !parts_ok(&texts) {
        return Verdict::Bad(format!("spliced or reordered events: {texts:?}"));
    }
    match (error, texts.len(), done || kind != Kind::ChatStream) {
        (true, _, _) => Verdict::Truncated,
        (false, 3, true) => Verdict::Ok,
        _ => Verdict::Bad(format!("stream ended early without an error: {text:?}")),
    }
}

fn judge_array(text: &str, aborted: bool) -> Verdict {
    if text == HTML {
        return Verdict::Ok;
    }
    let v: Value = match serde_json::from_str(text) {
        Ok(v) if !aborted => v,
        _ => return Verdict::Bad(format!("not one closed JSON array: {text:?}")),
    };
    let Some(items) = v.as_array() else {
        return Verdict::Bad(format!("not an array: {text:?}"));
    };
    let error = items.last().is_some_and(|i| i["error"].is_object());
    let texts: Vec<String> = items
        .iter()
        .filter(|i| !i["error"].is_object())
        .map(|i| {
            i["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        })
        .collect();
    if !parts_ok(&texts) {
        return Verdict::Bad(format!("spliced or reordered elements: {texts:?}"));
    }
    match (error, texts.len()) {
        (true, _) => Verdict::Truncated,
        (false, 3) => Verdict::Ok,
        _ => Verdict::Bad(format!("array closed early without an error: {text:?}")),
    }
}

fn check_answers(r: &mut Report, seen: &[Seen]) {
    let hung = seen.iter().filter(|s| s.verdict == Verdict::Hung).count();
    r.check(
        "no client waited past the deadline",
        hung == 0,
        format!("{hung} of {} hung > {HANG:?}", seen.len()),
    );
    let bad: Vec<String> = seen
        .iter()
        .filter_map(|s| match &s.verdict {
            Verdict::Bad(why) => Some(format!("{:?} {}: {why}", s.kind, s.status)),
            _ => None,
        })
        .collect();
    r.check(
        "every answer well-formed (no spliced streams)",
        bad.is_empty(),
        format!("{} malformed{}", bad.len(), first3(&bad)),
    );
    let no_id = seen.iter().filter(|s| s.request_id.is_none()).count();
    r.check(
        "every answer carries x-request-id",
        no_id == 0,
        format!("{no_id} without"),
    );
}

async fn fetch_logs(client: &Client, base: &str, token: &str) -> anyhow::Result<Vec<Value>> {
    let auth = format!("Bearer {token}");
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/api/logs?limit=1000");
        if let Some(c) = &cursor {
            url += &format!("&cursor={c}");
        }
        let r = http::call(client, "GET", &url, &[("authorization", &auth)], "").await?;
        let v: Value = serde_json::from_slice(&r.body)?;
        out.extend(v["logs"].as_array().cloned().unwrap_or_default());
        match v["next_cursor"].as_str() {
            Some(c) if !c.is_empty() => cursor = Some(c.to_string()),
            _ => return Ok(out),
        }
    }
}

fn outcome_fits(s: &Seen, outcome: &str) -> bool {
    match (&s.verdict, outcome) {
        (Verdict::Left, o) => matches!(o, "cancelled" | "ok" | "truncated"),
        (Verdict::Ok, o) => o == "ok",
        (Verdict::Truncated | Verdict::Aborted, o) => o == "truncated",
        (Verdict::Error, o) => matches!(o, "client_error" | "upstream_error" | "no_key"),
        _ => false,
    }
}

fn check_logs(r: &mut Report, seen: &[Seen], logs: &[Value]) {
    let mut by_id: HashMap<&str, Vec<&Value>> = HashMap::new();
    for l in logs {
        by_id
            .entry(l["request_id"].as_str().unwrap_or(""))
            .or_default()
            .push(l);
    }
    let dups = by_id.values().filter(|v| v.len() > 1).count();
    let ids: HashSet<&str> = seen
        .iter()
        .filter_map(|s| s.request_id.as_deref())
        .collect();
    let missing: Vec<&Seen> = seen
        .iter()
        .filter(|s| {
            s.request_id
                .as_deref()
                .is_some_and(|i| !by_id.contains_key(i))
        })
        .collect();
    let extra = by_id.keys().filter(|i| !ids.contains(*i)).count();
    r.figure("log records", logs.len());
    r.check(
        "exactly one log record per client request",
        logs.len() == seen.len() && dups == 0 && missing.is_empty() && extra == 0,
        format!(
            "{} requests, {} records, {dups} duplicated, {} missing{}, {extra} unknown",
            seen.len(),
            logs.len(),
            missing.len(),
            missing
                .first()
                .map(|m| format!(" (first: {:?} {:?})", m.kind, m.verdict))
                .unwrap_or_default()
        ),
    );
    let mut wrong = Vec::new();
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for s in seen {
        let Some(l) = s.request_id.as_deref().and_then(|i| by_id.get(i)) else {
            continue;
        };
        let l = l[0];
        let outcome = l["outcome"].as_str().unwrap_or("?");
        *outcomes.entry(outcome.to_string()).or_default() += 1;
        let status_ok = s.vanished || l["status"].as_u64() == Some(u64::from(s.status));
        if !status_ok || !outcome_fits(s, outcome) {
            wrong.push(format!(
                "{:?} client saw {} {:?}, log says {} {outcome}",
                s.kind, s.status, s.verdict, l["status"]
            ));
        }
    }
    let mut o: Vec<_> = outcomes.into_iter().collect();
    o.sort();
    r.figure("logged outcomes", format!("{o:?}"));
    r.check(
        "logged status and outcome match what the client saw",
        wrong.is_empty(),
        format!("{} mismatched{}", wrong.len(), first3(&wrong)),
    );
}

async fn check_stats(
    r: &mut Report,
    client: &Client,
    base: &str,
    token: &str,
    logs: &[Value],
) -> anyhow::Result<()> {
    let auth = format!("Bearer {token}");
    let url = format!("{base}/api/stats/summary");
    let resp = http::call(client, "GET", &url, &[("authorization", &auth)], "").await?;
    let v: Value = serde_json::from_slice(&resp.body)?;
    let day = &v["last_24h"];
    let count = |o: &str| logs.iter().filter(|l| l["outcome"] == o).count() as u64;
    let tokens: u64 = logs
        .iter()
        .filter_map(|l| l["tokens"]["total"].as_u64())
        .sum();
    let want = (
        logs.len() as u64,
        count("ok"),
        count("client_error"),
        count("cancelled"),
        tokens,
    );
    let got = (
        day["requests"].as_u64().unwrap_or(u64::MAX),
        day["ok"].as_u64().unwrap_or(u64::MAX),
        day["client_errors"].as_u64().unwrap_or(u64::MAX),
        day["cancelled"].as_u64().unwrap_or(u64::MAX),
        day["tokens"].as_u64().unwrap_or(u64::MAX),
    );
    r.check(
        "statistics equal the sum of the log",
        want == got,
        format!("(requests, ok, client_errors, cancelled, tokens): log {want:?}, stats {got:?}"),
    );
    Ok(())
}

async fn keys_view(client: &Client, base: &str, token: &str) -> anyhow::Result<Vec<Value>> {
    let auth = format!("Bearer {token}");
    let url = format!("{base}/api/keys");
    let resp = http::call(client, "GET", &url, &[("authorization", &auth)], "").await?;
    let v: Value = serde_json::from_slice(&resp.body)?;
    Ok(v["keys"].as_array().cloned().unwrap_or_default())
}

/// `k005` for `AIzaSOAK-…-k005`.
fn label(key: &str) -> &str {
    &key[key.len() - 4..]
}

fn brief_matches(view: &Value, key: &str) -> bool {
    let brief = view["brief"].as_str().unwrap_or("");
    let tail = &key[key.len() - 4..];
    brief.starts_with(&key[..4]) && brief.ends_with(tail)
}

async fn check_keys(
    r: &mut Report,
    client: &Client,
    base: &str,
    token: &str,
    keys: &[(String, Profile, Role)],
) -> anyhow::Result<()> {
    let views = keys_view(client, base, token).await?;
    let mut wrong = Vec::new();
    let mut states = Vec::new();
    for (k, _, role) in keys {
        let Some(v) = views.iter().find(|v| brief_matches(v, k)) else {
            wrong.push(format!("{k}: not listed"));
            continue;
        };
        let state = v["state"].as_str().unwrap_or("?");
        states.push(format!("{}={state}", label(k)));
        let retired = state == "invalid";
        if (*role == Role::Broken) != retired {
            wrong.push(format!("key {} ({role:?}) is {state}", label(k)));
        }
    }
    r.figure("key states at the end", states.join(" "));
    r.check(
        "no healthy key retired, every broken key retired",
        wrong.is_empty(),
        if wrong.is_empty() {
            "3 broken retired, 5 others not".into()
        } else {
            wrong.join("; ")
        },
    );
    Ok(())
}

/// The quota-limited key answers 429 with `retryDelay` 1 s, so (key, model) cools 2 s: no
/// request may reach it sooner, and under steady traffic one must reach it soon after.
fn check_cooling(r: &mut Report, served: &[crate::faults::Served], traffic_end: Instant) {
    let tolerance = Duration::from_millis(300);
    let mut early = Vec::new();
    let mut late = 0;
    let mut cools = 0;
    for (i, s) in served.iter().enumerate() {
        if s.fault != Fault::Status(429) {
            continue;
        }
        cools += 1;
        let later: Vec<&crate::faults::Served> = served[i + 1..]
            .iter()
            .filter(|n| n.model == s.model)
            .collect();
        for n in &later {
            let gap = n.at.duration_since(s.at);
            if gap > tolerance && gap + tolerance < COOL {
                early.push(format!("{} after {gap:?}", s.model));
            }
        }
        let back_by = s.at + COOL + Duration::from_secs(3);
        if back_by < traffic_end && !later.iter().any(|n| n.at <= back_by) {
            late += 1;
        }
    }
    r.figure("quota key 429s (cool-downs)", cools);
    r.check(
        "cooled key skipped during its cool-down",
        early.is_empty(),
        format!(
            "{} requests inside a 2 s cool-down{}",
            early.len(),
            early
                .first()
                .map(|e| format!("; first: {e}"))
                .unwrap_or_default()
        ),
    );
    r.check(
        "cooled key came back on time",
        late == 0,
        format!("{late} of {cools} cool-downs not followed by traffic within 5 s"),
    );
}

async fn check_slots(
    r: &mut Report,
    client: &Client,
    base: &str,
    token: &str,
    up: &FaultUpstream,
) -> anyhow::Result<()> {
    let keys = keys_view(client, base, token).await?;
    let key_slots: u64 = keys.iter().filter_map(|k| k["in_flight"].as_u64()).sum();
    let auth = format!("Bearer {token}");
    let url = format!("{base}/api/users");
    let resp = http::call(client, "GET", &url, &[("authorization", &auth)], "").await?;
    let v: Value = serde_json::from_slice(&resp.body)?;
    let user_slots: u64 = v["users"]
        .as_array()
        .map(|u| u.iter().filter_map(|u| u["in_flight"].as_u64()).sum())
        .unwrap_or(u64::MAX);
    let open = up.open_bodies();
    r.check(
        "every key and user slot released, no upstream body left open",
        key_slots == 0 && user_slots == 0 && open == 0,
        format!("key in_flight {key_slots}, user in_flight {user_slots}, upstream bodies {open}"),
    );
    Ok(())
}

fn first3(items: &[String]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let shown: Vec<&str> = items.iter().take(3).map(String::as_str).collect();
    format!("; e.g. {}", shown.join(" | "))
}
