//! The processes a benchmark run owns — the fake upstream, the daemon, the byte relay — and what is read
//! about them from `/proc` (CPU time, resident memory). Children are killed when dropped.
//! Nothing here measures load; it only starts, watches and stops processes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The user key clients send; the pool keys are `pool_key(i)`.
pub const USER_KEY: &str = "gb-bench-0123456789abcdef0123456789";

pub fn pool_key(i: usize) -> String {
    format!("AIzaBENCH-key-{i:026}")
}

/// The daemon's log filter: the `listening on` line (info, crate root) stays, the
/// per-request access line (target `access`) and everything else below warn go.
const DAEMON_LOG: &str = "warn,gemini_balance=info,access=warn";

/// A child process killed (and reaped) on drop.
pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU time so far.
    pub fn cpu(&self) -> Duration {
        cpu_of(self.pid()).unwrap_or_default()
    }

    /// Current and peak resident set size, in bytes.
    pub fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()));
        let status = status.unwrap_or_default();
        (kib(&status, "VmRSS:"), kib(&status, "VmHWM:"))
    }

    /// Resets the peak RSS to the current RSS (`clear_refs` 5), so each scenario has its own peak.
    pub fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5");
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

fn kib(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |k| k * 1024)
}

fn cpu_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), starting at field 3 (state).
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / clock_ticks(),
    ))
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Starts this executable as the fake upstream and waits for its address.
pub fn start_upstream() -> anyhow::Result<Proc> {
    start_self(&["upstream"], "the fake upstream")
}

/// The same over TLS with HTTP/2 (the production path's upstream, see `upstream`).
pub fn start_upstream_tls() -> anyhow::Result<Proc> {
    start_self(&["upstream", "--tls"], "the TLS fake upstream")
}

/// Starts this executable as the byte relay to `to` (the floor) and waits for its address.
pub fn start_relay(to: SocketAddr) -> anyhow::Result<Proc> {
    start_self(&["relay", "--to", &to.to_string()], "the byte relay")
}

/// Runs this executable with `args` and reads its `listening on ADDR` line.
fn start_self(args: &[&str], what: &str) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    lines.read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("{what} said {line:?}"))?
        .parse()?;
    Ok(Proc { child, addr })
}

/// How a daemon under test is configured.
#[derive(Clone, Copy, Debug)]
pub struct DaemonSetup {
    pub keys: usize,
    pub logs: bool,
}

impl DaemonSetup {
    pub fn label(&self) -> String {
        let logs = if self.logs { "logs on" } else { "logs off" };
        format!("{} keys, {logs}", fmt_int(self.keys as f64))
    }
}

pub fn fmt_int(v: f64) -> String {
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && c != '-' {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The store every daemon uses when `--store` was given (redb otherwise).
pub static STORE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
/// `server.workers` for every daemon, when `--workers` is given.
pub static WORKERS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// The CA of the TLS fake upstream's certificate, which a daemon on the TLS path trusts.
const TEST_CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/ca.pem");

fn write_config(
    dir: &Path,
    upstream: SocketAddr,
    setup: DaemonSetup,
    tls: bool,
) -> anyhow::Result<PathBuf> {
    let path = dir.join("gemini-balance.toml");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
    if let Some(store) = STORE.get() {
        static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("bench-{}-{n}", std::process::id());
        writeln!(f, "store = {store:?}\nstore_prefix = {prefix:?}")?;
    }
    let base = match tls {
        true => format!("base_url = \"https://{upstream}\"\nextra_ca_file = {TEST_CA:?}"),
        false => format!("base_url = \"http://{upstream}\"\nallow_plain_http = true"),
    };
    writeln!(
        f,
        "[upstream]\n{base}\n\n[pool]\nqueue_wait = \"0s\"\n\n[logs]\nenabled = {}\n",
        setup.logs
    )?;
    for i in 0..setup.keys {
        writeln!(f, "[[upstream_keys]]\nkey = \"{}\"", pool_key(i))?;
    }
    // Every benchmark client comes from 127.0.0.1: the per-address cap would stop the
    // held-streams scenarios at 256.
    writeln!(f, "\n[server]\nmax_connections_per_ip = 8192")?;
    if let Some(n) = WORKERS.get() {
        writeln!(f, "workers = {n}")?;
    }
    writeln!(f, "\n[[users]]\nname = \"bench\"\nkey = \"{USER_KEY}\"")?;
    f.flush()?;
    Ok(path)
}

/// Starts the daemon on `127.0.0.1:0` with a fresh data dir under `dir`, waits for `/healthz`.
/// Its stderr goes to `dir/daemon.log`.
pub fn start_daemon(
    bin: &Path,
    dir: &Path,
    upstream: SocketAddr,
    setup: DaemonSetup,
) -> anyhow::Result<Proc> {
    start_daemon_on(bin, dir, upstream, setup, false)
}

/// [`start_daemon`] with `upstream` spoken to over TLS (the TLS fake upstream).
pub fn start_daemon_on(
    bin: &Path,
    dir: &Path,
    upstream: SocketAddr,
    setup: DaemonSetup,
    tls: bool,
) -> anyhow::Result<Proc> {
    std::fs::create_dir_all(dir)?;
    let config = write_config(dir, upstream, setup, tls)?;
    let started = Instant::now();
    let mut child = Command::new(bin)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--log-level", DAEMON_LOG])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env_remove("RUST_LOG")
        .env("GEMINI_BALANCE_ADMIN_PASSWORD", "bench-admin-password")
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let log_path = dir.join("daemon.log");
    let mut log = std::fs::File::create(&log_path)?;
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
            if let Some(at) = line.find("listening on ") {
                let addr = line[at + 13..].split_whitespace().next().unwrap_or("");
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addr.to_owned());
                }
            }
        }
    });
    let mut proc = Proc {
        child,
        addr: "127.0.0.1:1".parse()?,
    };
    let Ok(addr) = rx.recv_timeout(Duration::from_secs(120)) else {
        let mut log = String::new();
        std::fs::File::open(&log_path)?.read_to_string(&mut log)?;
        bail!("the daemon did not report its address; its log:\n{log}");
    };
    proc.addr = addr.parse().with_context(|| format!("address {addr:?}"))?;
    while !healthy(proc.addr) {
        if !proc.alive() || started.elapsed() > Duration::from_secs(120) {
            bail!(
                "the daemon never became healthy; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(proc)
}

fn healthy(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}
