//! Black-box tests of the admin side against a hostile client: a burst of
//! logins is throttled before the password checks run, and cannot exhaust the daemon's
//! memory; the login body is capped; the live feed ends with its session; the store is
//! private to the daemon's user whatever the umask; forwarded headers count only from
//! `server.trusted_proxies`; `/metrics` on the public listener needs its token; the log
//! API takes extreme time bounds, and its CSV export defuses formulas.

mod common;

use common::admin::{admin, login, login_resp};
use common::*;
use http::Method;
use std::time::Duration;
use tokio::time::Instant;

const PASSWORD: &str = "correct-horse-battery-staple-7";

/// The daemon's resident memory in KiB, from `/proc/<pid>/status`.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_wrong_logins_is_throttled_and_memory_stays_bounded() {
    let up = Upstream::start(ok_upstream()).await;
    let cfg = Config::new(&up)
        .admin_password(PASSWORD)
        .admin("login_window = \"3s\"");
    let d = Daemon::start(&cfg).await;
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..30 {
        let url = d.url("/api/login");
        let body = serde_json::json!({ "password": format!("wrong-{i}") }).to_string();
        burst.spawn(async move { client::post(&url, &[], body).await });
    }
    let (mut refused, mut throttled) = (0, 0);
    while let Some(r) = burst.join_next().await {
        let r = r.unwrap();
        match r.status {
            401 => refused += 1,
            429 => {
                throttled += 1;
                let wait: u64 = r
                    .header("retry-after")
                    .expect("Retry-After on 429")
                    .parse()
                    .expect("Retry-After in seconds");
                assert!((1..=3).contains(&wait), "Retry-After {wait}");
                assert!(r.json()["error"].is_string(), "admin error: {}", r.text());
            }
            s => panic!("login answered {s}: {}", r.text()),
        }
    }
    assert!(
        refused <= 5,
        "{refused} passwords checked, at most 5 may be"
    );
    assert!(throttled >= 25, "only {throttled} of 30 got 429");
    let rss = rss_kib(d.pid());
    assert!(rss < 100 * 1024, "RSS {rss} KiB after the burst");

    // Wrong passwords one at a time use up the address's attempts: then even the right
    // one is refused, until the window (3 s) is over.
    let mut checked = refused;
    loop {
        let r = login_resp(&d, "still-wrong").await;
        if r.status == 429 {
            break;
        }
        assert_eq!(r.status, 401, "{}", r.text());
        checked += 1;
        assert!(checked <= 5, "more than 5 attempts checked in one window");
    }
    assert_eq!(login_resp(&d, PASSWORD).await.status, 429, "throttled");
    let deadline = Instant::now() + client::TIMEOUT;
    loop {
        let r = login_resp(&d, PASSWORD).await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 429, "{}", r.text());
        assert!(Instant::now() < deadline, "still throttled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_body_over_a_few_kib_is_refused_unread() {
    let up = Upstream::start(ok_upstream()).await;
    let d = Daemon::start(&Config::new(&up).admin_password(PASSWORD)).await;
    let big = serde_json::json!({ "password": "x".repeat(64 * 1024) }).to_string();
    let r = client::post(&d.url("/api/login"), &[], big).await;
    assert_eq!(r.status, 413, "{}", r.text());
    let msg = r.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(msg.contains("larger than the limit"), "{msg}");
    // Not counted as an attempt: the right password is still welcome.
    assert_eq!(login_resp(&d, PASSWORD).await.status, 200);
}

/// Opens `/api/events` with `token` and reads its first frame.
async fn open_feed(d: &Daemon, token: &str) -> Stream {
    let auth = format!("Bearer {token}");
    let mut feed = client::send(
        Method::GET,
        &d.url("/api/events"),
        &[("authorization", auth.as_str())],
        "",
    )
    .await;
    assert_eq!(feed.status, 200, "feed opens");
    feed.read_until("the connected comment", |b| lf(b).contains(": connected"))
        .await;
    feed
}

/// Reads the feed to its end, which must come within `within`.
async fn feed_ends_within(feed: Stream, within: Duration, what: &str) {
    match tokio::time::timeout(within, feed.read_to_end()).await {
        Ok(r) => assert!(r.body_error.is_none(), "{what}: {:?}", r.body_error),
        Err(_) => panic!("{what}: the feed was still open after {within:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_feed_ends_at_logout() {
    let up = Upstream::start(ok_upstream()).await;
    let d = Daemon::start(&Config::new(&up).admin_password(PASSWORD)).await;
    let token = login(&d, PASSWORD).await;
    let other = login(&d, PASSWORD).await;
    let feed = open_feed(&d, &token).await;
    let kept = open_feed(&d, &other).await;
    let r = admin(&d, Method::POST, "/api/logout", &token, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    feed_ends_within(feed, Duration::from_secs(5), "after logout").await;
    // Another session's feed still delivers.
    let r = client::post(
        &d.url(&model_path(FLASH, "generateContent")),
        &user_auth(),
        GENERATE_BODY,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut kept = kept;
    kept.read_until("a request event", |b| lf(b).contains("event: request"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_feed_ends_when_its_session_expires() {
    let up = Upstream::start(ok_upstream()).await;
    let cfg = Config::new(&up)
        .admin_password(PASSWORD)
        .admin("session_ttl = \"2s\"");
    let d = Daemon::start(&cfg).await;
    let token = login(&d, PASSWORD).await;
    let feed = open_feed(&d, &token).await;
    // The token lasts 2 s from login (whole seconds): the feed ends well before 8 s.
    feed_ends_within(feed, Duration::from_secs(8), "after the session's expiry").await;
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    m.permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_private_under_umask_022() {
    let up = Upstream::start(ok_upstream()).await;
    let mut d = Daemon::start_with_umask(&Config::new(&up).admin_password(PASSWORD), 0o022).await;
    let dir = d.data_dir();
    let file = dir.join("gemini-balance.redb");
    assert_eq!(mode(&dir), 0o700, "data dir");
    assert_eq!(mode(&file), 0o600, "store file");
    let open = "open to other local users";
    assert!(!d.logs().iter().any(|l| l.contains(open)), "no warning yet");

    // Opened up by hand: the next start says so.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    d.restart().await;
    let line = d.wait_log(open).await;
    assert!(line.contains("chmod 600"), "{line}");
}

/// A JSON login with extra headers (`X-Forwarded-For`, `X-Forwarded-Proto`).
async fn login_with(d: &Daemon, password: &str, headers: &[(&str, &str)]) -> Response {
    let body = serde_json::json!({ "password": password }).to_string();
    client::post(&d.url("/api/login"), headers, body).await
}

/// Uses up the attempts of the client `xff` names; the next one is refused.
async fn exhaust(d: &Daemon, xff: &str) {
    for i in 0..5 {
        let r = login_with(d, "wrong", &[("x-forwarded-for", xff)]).await;
        assert_eq!(r.status, 401, "attempt {i} from {xff}: {}", r.text());
    }
}

const BEHIND_LOOPBACK_PROXY: &str = "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_throttle_counts_each_forwarded_client() {
    let up = Upstream::start(ok_upstream()).await;
    let cfg = Config::new(&up)
        .admin_password(PASSWORD)
        .extra(BEHIND_LOOPBACK_PROXY);
    let d = Daemon::start(&cfg).await;
    // The proxy appends the client it saw: that rightmost hop is the client.
    exhaust(&d, "198.51.100.1, 203.0.113.7").await;
    let r = login_with(&d, PASSWORD, &[("x-forwarded-for", "203.0.113.7")]).await;
    assert_eq!(r.status, 429, "{}", r.text());
    let r = login_with(
        &d,
        PASSWORD,
        &[("x-forwarded-for", "203.0.113.7, 203.0.113.8")],
    )
    .await;
    assert_eq!(
        r.status,
        200,
        "another client is not locked out: {}",
        r.text()
    );

    // IPv6 clients count by their /64.
    exhaust(&d, "2001:db8:1:2::1").await;
    let r = login_with(&d, PASSWORD, &[("x-forwarded-for", "2001:db8:1:2:ffff::9")]).await;
    assert_eq!(r.status, 429, "same /64: {}", r.text());
    let r = login_with(&d, PASSWORD, &[("x-forwarded-for", "2001:db8:1:3::1")]).await;
    assert_eq!(r.status, 200, "another /64: {}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_an_untrusted_peer_are_ignored() {
    let up = Upstream::start(ok_upstream()).await;
    let d = Daemon::start(&Config::new(&up).admin_password(PASSWORD)).await;
    exhaust(&d, "203.0.113.7").await;
    let r = login_with(&d, PASSWORD, &[("x-forwarded-for", "203.0.113.8")]).await;
    assert_eq!(r.status, 429, "the socket peer is the client: {}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_is_secure_when_the_client_came_over_https() {
    let up = Upstream::start(ok_upstream()).await;
    let https = [("x-forwarded-proto", "https")];
    let cookie = |r: &Response| r.header("set-cookie").expect("Set-Cookie on login");
    let secure = |c: &str| {
        c.split(';')
            .any(|a| a.trim().eq_ignore_ascii_case("secure"))
    };

    let cfg = Config::new(&up)
        .admin_password(PASSWORD)
        .extra(BEHIND_LOOPBACK_PROXY);
    let d = Daemon::start(&cfg).await;
    let c = cookie(&login_with(&d, PASSWORD, &https).await);
    assert!(secure(&c), "over HTTPS: {c}");
    let token = c
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("gb_session=");
    let auth = format!("Bearer {token}");
    let logout = [("authorization", auth.as_str()), https[0]];
    let r = client::post(&d.url("/api/logout"), &logout, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let c = r.header("set-cookie").expect("Set-Cookie on logout");
    assert!(secure(&c) && c.contains("Max-Age=0"), "cleared alike: {c}");
    let c = cookie(&login_with(&d, PASSWORD, &[]).await);
    assert!(!secure(&c), "plain HTTP: {c}");

    let untrusted = Daemon::start(&Config::new(&up).admin_password(PASSWORD)).await;
    let c = cookie(&login_with(&untrusted, PASSWORD, &https).await);
    assert!(!secure(&c), "X-Forwarded-Proto from an untrusted peer: {c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_the_public_listener_need_the_token() {
    let up = Upstream::start(ok_upstream()).await;
    let open = Daemon::start(&Config::new(&up).without_metrics_token()).await;
    let r = client::get(&open.url("/metrics"), &[]).await;
    assert_eq!(r.status, 403, "no token configured: {}", r.text());
    assert!(r.text().contains("metrics_token"), "{}", r.text());
    assert!(
        !r.text().contains("gemini_balance_"),
        "no metrics in {}",
        r.text()
    );

    let d = Daemon::start(&Config::new(&up)).await;
    let wrong = "Bearer gb-test-metrics-tokeX";
    for headers in [vec![], vec![("authorization", wrong)]] {
        let r = client::get(&d.url("/metrics"), &headers).await;
        assert_eq!(r.status, 401, "{headers:?}: {}", r.text());
    }
    let r = d.metrics().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("gemini_balance_"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_time_bounds_are_clamped_not_overflowed() {
    let up = Upstream::start(ok_upstream()).await;
    let d = Daemon::start(&Config::new(&up).admin_password(PASSWORD)).await;
    let token = login(&d, PASSWORD).await;
    let (min, max) = (i64::MIN, i64::MAX);
    for path in [
        format!("/api/logs?from={min}&to={max}"),
        format!("/api/logs/export?from={min}&to={max}"),
        format!("/api/logs?from={max}&to={min}"),
        format!("/api/stats/timeseries?to={min}"),
    ] {
        let r = admin(&d, Method::GET, &path, &token, None).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    for path in [
        format!("/api/stats/timeseries?from={min}&to={max}"),
        "/api/logs?from=yesterday".to_owned(),
    ] {
        let r = admin(&d, Method::GET, &path, &token, None).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(r.json()["error"].is_string(), "{}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_csv_export_defuses_formulas_behind_spaces_and_in_fullwidth() {
    let up = Upstream::start(ok_upstream()).await;
    let names = [
        " =1+1",
        "\u{3000}@SUM(A1)",
        "＝cmd|x",
        "＋1",
        "－1",
        "＠x",
        "\t=1",
    ];
    let mut cfg = Config::new(&up).admin_password(PASSWORD);
    for (i, name) in names.iter().enumerate() {
        cfg = cfg.user(name, &format!("gb-test-formula-{i}-0123456789abcdef"));
    }
    let d = Daemon::start(&cfg).await;
    for i in 0..names.len() {
        let key = format!("gb-test-formula-{i}-0123456789abcdef");
        let path = model_path(FLASH, "generateContent");
        let r = client::post(&d.url(&path), &[("x-goog-api-key", &key)], GENERATE_BODY).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let token = login(&d, PASSWORD).await;
    let deadline = Instant::now() + client::TIMEOUT;
    let csv = loop {
        let r = admin(&d, Method::GET, "/api/logs/export", &token, None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        if r.text().lines().count() > names.len() {
            break r.text();
        }
        assert!(
            Instant::now() < deadline,
            "the log never had every request: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for row in csv.lines().skip(1) {
        let user = row.split(',').nth(2).expect("a user column");
        let cell = user.trim_start_matches('"');
        assert!(cell.starts_with('\''), "not defused: {user:?} in {row:?}");
    }
}

fn ok_upstream() -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    ok_or_stream
}
