//! Runs the real `gemini-balance` binary for a test: writes its config into a temp dir, starts
//! `serve --listen 127.0.0.1:0`, learns the bound address from the `listening on ADDR` log
//! line, waits for `/healthz`, and can stop (SIGTERM), crash (SIGKILL) and restart it on the
//! same data dir. All stdout/stderr lines are kept for assertions; dropped → killed.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use tempfile::TempDir;

use super::client;
use super::upstream::Upstream;

/// The `server.metrics_token` every harness daemon gets, unless its test sets its own.
pub const METRICS_TOKEN: &str = "gb-test-metrics-token";

/// The header a harness daemon's `/metrics` needs.
pub fn metrics_auth() -> (&'static str, &'static str) {
    ("authorization", "Bearer gb-test-metrics-token")
}

pub const USER_NAME: &str = "alice";
pub const USER_KEY: &str = "gb-test-alice-0123456789abcdef";

/// Pool key number `i`: `AIzaFAKE-key-a`, `AIzaFAKE-key-b`, …
pub fn key(i: usize) -> String {
    format!("AIzaFAKE-key-{}", (b'a' + i as u8) as char)
}

/// The first `n` pool keys.
pub fn keys(n: usize) -> Vec<String> {
    (0..n).map(key).collect()
}

/// Builder for the daemon's TOML config.
#[derive(Clone, Debug)]
pub struct Config {
    pub upstream_url: String,
    pub keys: Vec<String>,
    pub users: Vec<(String, String)>,
    /// `[pool]` entries as raw TOML values, e.g. `("queue_wait", "\"0s\"")`.
    pub pool: Vec<(String, String)>,
    pub admin_password: Option<String>,
    /// Raw TOML appended at the end of the file (start it with a table header).
    pub extra: String,
    /// Raw TOML lines added to the `[upstream]` table.
    pub upstream_extra: String,
    /// Raw TOML lines added to the `[admin]` table.
    pub admin_extra: String,
    /// Give the daemon [`METRICS_TOKEN`] (unless `extra` sets a token of its own).
    pub metrics_token: bool,
}

impl Config {
    /// Two pool keys, user alice, `queue_wait = "0s"`.
    pub fn new(upstream: &Upstream) -> Config {
        Config::with_url(&upstream.url())
    }

    pub fn with_url(url: &str) -> Config {
        Config {
            upstream_url: url.to_string(),
            keys: keys(2),
            users: vec![(USER_NAME.into(), USER_KEY.into())],
            pool: vec![("queue_wait".into(), "\"0s\"".into())],
            admin_password: None,
            extra: String::new(),
            upstream_extra: String::new(),
            admin_extra: String::new(),
            metrics_token: true,
        }
    }

    pub fn keys<I: IntoIterator<Item = S>, S: Into<String>>(mut self, keys: I) -> Config {
        self.keys = keys.into_iter().map(Into::into).collect();
        self
    }

    pub fn user(mut self, name: &str, key: &str) -> Config {
        self.users.push((name.into(), key.into()));
        self
    }

    /// Sets `[pool] name = value` (`value` is raw TOML: `"2"`, `"\"30s\""`).
    pub fn pool(mut self, name: &str, value: &str) -> Config {
        self.pool.retain(|(k, _)| k != name);
        self.pool.push((name.into(), value.into()));
        self
    }

    pub fn admin_password(mut self, password: &str) -> Config {
        self.admin_password = Some(password.into());
        self
    }

    /// Adds a raw TOML line (`name = value`) to the `[upstream]` table.
    pub fn upstream(mut self, line: &str) -> Config {
        self.upstream_extra.push_str(line);
        self.upstream_extra.push('\n');
        self
    }

    /// Adds a raw TOML line (`name = value`) to the `[admin]` table.
    pub fn admin(mut self, line: &str) -> Config {
        self.admin_extra.push_str(line);
        self.admin_extra.push('\n');
        self
    }

    /// No `server.metrics_token`: `/metrics` is then served only on `admin_listen`.
    pub fn without_metrics_token(mut self) -> Config {
        self.metrics_token = false;
        self
    }

    pub fn extra(mut self, toml: &str) -> Config {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    pub fn to_toml(&self) -> String {
        let q = |s: &str| serde_json::to_string(s).expect("quote");
        let mut t = String::new();
        if self.admin_password.is_some() || !self.admin_extra.is_empty() {
            t += "[admin]\n";
            if let Some(p) = &self.admin_password {
                t += &format!("password = {}\n", q(p));
            }
            t += &format!("{}\n", self.admin_extra);
        }
        t += &format!(
            "[upstream]\nbase_url = {}\nallow_plain_http = true\n{}\n",
            q(&self.upstream_url),
            self.upstream_extra
        );
        t += "[pool]\n";
        for (k, v) in &self.pool {
            t += &format!("{k} = {v}\n");
        }
        for k in &self.keys {
            t += &format!("\n[[upstream_keys]]\nkey = {}\n", q(k));
        }
        for (name, k) in &self.users {
            t += &format!("\n[[users]]\nname = {}\nkey = {}\n", q(name), q(k));
        }
        t += "\n";
        if self.metrics_token {
            t += &with_metrics_token(&self.extra);
        } else {
            t += &self.extra;
        }
        t
    }
}

/// `extra` with `metrics_token = METRICS_TOKEN` in its `[server]` table (added when it has
/// none), unless it sets a token of its own.
fn with_metrics_token(extra: &str) -> String {
    if extra.contains("metrics_token") {
        return extra.to_owned();
    }
    let line = format!("metrics_token = \"{METRICS_TOKEN}\"\n");
    match extra.find("[server]\n") {
        Some(i) => {
            let at = i + "[server]\n".len();
            format!("{}{line}{}", &extra[..at], &extra[at..])
        }
        None => format!("{extra}\n[server]\n{line}"),
    }
}

pub struct Daemon {
    pub addr: SocketAddr,
    child: Option<Child>,
    readers: Vec<JoinHandle<()>>,
    dir: TempDir,
    logs: Arc<Mutex<Vec<String>>>,
    /// The file-mode mask the daemon runs with (by a shell's `umask`), when set.
    umask: Option<u32>,
}

enum Event {
    Listening(SocketAddr),
    Eof,
}

impl Daemon {
    pub async fn start(cfg: &Config) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("gb.toml"), cfg.to_toml()).expect("write config");
        let mut d = Daemon {
            addr: "127.0.0.1:0".parse().unwrap(),
            child: None,
            readers: Vec::new(),
            dir,
            logs: Arc::new(Mutex::new(Vec::new())),
            umask: None,
        };
        d.spawn().await;
        d
    }

    /// Like [`Daemon::start`], with `top` (raw top-level TOML such as
    /// `store = "redis://…"`) written before the first table of `cfg`'s file, where TOML
    /// needs top-level keys. Restarts reuse the file as written.
    pub async fn start_with_top_level(cfg: &Config, top: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = format!("{top}\n\n{}", cfg.to_toml());
        std::fs::write(dir.path().join("gb.toml"), text).expect("write config");
        let mut d = Daemon {
            addr: "127.0.0.1:0".parse().unwrap(),
            child: None,
            readers: Vec::new(),
            dir,
            logs: Arc::new(Mutex::new(Vec::new())),
            umask: None,
        };
        d.spawn().await;
        d
    }

    /// Like [`Daemon::start`], the daemon running under `umask` (e.g. `0o022`).
    pub async fn start_with_umask(cfg: &Config, umask: u32) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("gb.toml"), cfg.to_toml()).expect("write config");
        let mut d = Daemon {
            addr: "127.0.0.1:0".parse().unwrap(),
            child: None,
            readers: Vec::new(),
            dir,
            logs: Arc::new(Mutex::new(Vec::new())),
            umask: Some(umask),
        };
        d.spawn().await;
        d
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET /metrics` with the harness's token.
    pub async fn metrics(&self) -> client::Response {
        client::get(&self.url("/metrics"), &[metrics_auth()]).await
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gb.toml")
    }

    /// Every stdout/stderr line of every run so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon not running").id()
    }

    /// SIGTERM, then wait (up to 20 s, then SIGKILL) and collect the last log lines.
    pub async fn stop(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_ref()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        self.wait_exit(Duration::from_secs(20)).await
    }

    /// SIGKILL: a crash.
    pub async fn kill(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.kill().ok()?;
        self.wait_exit(Duration::from_secs(10)).await
    }

    /// Graceful stop, then start again on the same config and data dir.
    pub async fn restart(&mut self) {
        let status = self.stop().await;
        self.note(&format!(
            "--- harness: stopped ({status:?}), restarting ---"
        ));
        self.spawn().await;
    }

    /// Graceful stop, rewrite the config, start again on the same data dir.
    pub async fn restart_with(&mut self, cfg: &Config) {
        self.stop().await;
        std::fs::write(self.config_path(), cfg.to_toml()).expect("write config");
        self.note("--- harness: restarting with new config ---");
        self.spawn().await;
    }

    /// `kill -9`, then start again on the same data dir.
    pub async fn crash_restart(&mut self) {
        self.kill().await;
        self.note("--- harness: killed (SIGKILL), restarting ---");
        self.spawn().await;
    }

    /// Sends `sig` (a `kill` name such as `TERM`, `HUP`) to the running daemon; returns at once.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed: {status:?}");
    }

    /// Waits up to `within` for the daemon to exit on its own (SIGKILL after that) and
    /// returns its status; `None` when it was not running.
    pub async fn wait_exited(&mut self, within: Duration) -> Option<ExitStatus> {
        self.wait_exit(within).await
    }

    /// True while the daemon process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Polls the log until a line contains `needle` (deadline: `client::TIMEOUT`); returns it.
    pub async fn wait_log(&self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + client::TIMEOUT;
        loop {
            if let Some(l) = self.logs().into_iter().find(|l| l.contains(needle)) {
                return l;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "no log line containing {needle:?}:\n{}",
                    self.logs().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn note(&self, line: &str) {
        self.logs.lock().unwrap().push(line.to_string());
    }

    async fn wait_exit(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let deadline = tokio::time::Instant::now() + grace;
        let status = loop {
            if let Ok(Some(st)) = child.try_wait() {
                break Some(st);
            }
            if tokio::time::Instant::now() >= deadline {
                self.note("--- harness: daemon did not exit in time, SIGKILL ---");
                let _ = child.kill();
                break child.wait().ok();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        status
    }

    async fn spawn(&mut self) {
        let bin = env!("CARGO_BIN_EXE_gemini-balance");
        // With a umask, a shell sets it and execs the daemon (same pid).
        let mut cmd = match self.umask {
            Some(mask) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("umask {mask:03o} && exec \"$0\" \"$@\""))
                    .arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(self.data_dir())
            .env_remove("RUST_LOG")
            .env_remove("GEMINI_BALANCE_CONFIG")
            .env_remove("GEMINI_BALANCE_ADMIN_PASSWORD")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gemini-balance");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        self.readers = vec![
            read_lines(stderr, self.logs.clone(), tx.clone()),
            read_lines(stdout, self.logs.clone(), tx),
        ];
        self.child = Some(child);
        let waited = tokio::task::spawn_blocking(move || {
            let mut eofs = 0;
            loop {
                match rx.recv_timeout(client::TIMEOUT) {
                    Ok(Event::Listening(a)) => return Some(a),
                    Ok(Event::Eof) if eofs == 0 => eofs += 1,
                    _ => return None,
                }
            }
        });
        match waited.await.unwrap() {
            Some(addr) => self.addr = addr,
            None => panic!(
                "daemon did not log `listening on ADDR`:\n{}",
                self.logs().join("\n")
            ),
        }
        self.wait_healthy().await;
    }

    async fn wait_healthy(&self) {
        // A daemon serving HTTPS is probed by its test, which has a client trusting it.
        let conf = std::fs::read_to_string(self.config_path()).unwrap_or_default();
        if conf.contains("\n[tls]") {
            return;
        }
        let url = self.url("/healthz");
        let deadline = tokio::time::Instant::now() + client::TIMEOUT;
        loop {
            let probe = tokio::time::timeout(Duration::from_secs(2), client::get(&url, &[])).await;
            if matches!(probe, Ok(ref r) if r.status == 200) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("/healthz never answered 200:\n{}", self.logs().join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let logs = self.logs();
            let tail = &logs[logs.len().saturating_sub(200)..];
            eprintln!(
                "---- gemini-balance log (last {} lines) ----\n{}",
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

fn read_lines(
    pipe: impl Read + Send + 'static,
    logs: Arc<Mutex<Vec<String>>>,
    tx: mpsc::Sender<Event>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let line = strip_ansi(&line);
            if let Some(addr) = listening_addr(&line) {
                let _ = tx.send(Event::Listening(addr));
            }
            logs.lock().unwrap().push(line);
        }
        let _ = tx.send(Event::Eof);
    })
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let token = rest.split_whitespace().next()?;
    token
        .trim_matches(|c: char| matches!(c, '"' | '\'' | ',' | '`'))
        .parse()
        .ok()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte(@..~)
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
