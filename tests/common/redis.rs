//! A private `redis-server` for one test: started on a free port (bind `127.0.0.1:0`, drop
//! the listener, start Redis there; another pick on a clash), with no persistence, in its
//! own temp dir, killed on drop. It can be killed and started again on the same port, and
//! answers `redis-cli` commands. Readiness is checked with `INFO server`, whose
//! `process_id` must be this child's, so a stranger on the port is never mistaken for it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

const READY_WITHIN: Duration = Duration::from_secs(10);

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl RedisServer {
    /// Starts a fresh server on a free port. Panics (with a clear message) when
    /// `redis-server` is not installed: these tests must fail, not pass, without it.
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        let mut last = String::new();
        for _ in 0..10 {
            let port = free_port();
            match spawn(port, &dir) {
                Ok(child) => {
                    return RedisServer {
                        port,
                        child: Some(child),
                        dir,
                    };
                }
                Err(why) => last = why,
            }
        }
        panic!("redis-server would not start on any free port; last failure:\n{last}");
    }

    /// `redis://127.0.0.1:PORT/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// SIGKILL: Redis is gone (and with `--save ''` its data too).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port (retrying for a few seconds while it is not free).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            match spawn(self.port, &self.dir) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(why) if Instant::now() >= deadline => {
                    panic!(
                        "redis-server would not start again on port {}:\n{why}",
                        self.port
                    )
                }
                // The port is not free yet: try again shortly.
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Runs `redis-cli -p PORT args…` and returns its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running redis-cli (is Redis installed?): {e}"));
        assert!(
            out.status.success(),
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The server's own log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(log_path(&self.dir)).unwrap_or_default()
    }
}

fn log_path(dir: &TempDir) -> PathBuf {
    dir.path().join("redis.log")
}

/// Starts `redis-server` on `port` and waits until it answers as itself; `Err` when it
/// exited (the port was taken).
fn spawn(port: u16, dir: &TempDir) -> Result<Child, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(dir))
        .expect("redis log file");
    let child = Command::new("redis-server")
        .arg("--port")
        .arg(port.to_string())
        .arg("--bind")
        .arg("127.0.0.1")
        .arg("--save")
        .arg("")
        .arg("--appendonly")
        .arg("no")
        .arg("--dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("log handle")))
        .stderr(Stdio::from(log))
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "redis-server is not installed (not found on PATH): the Redis store tests need \
             it — install it (apt-get install redis-server); CI does"
        ),
        Err(e) => panic!("starting redis-server: {e}"),
    };
    let pid = child.id();
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log_path(dir)).unwrap_or_default();
            return Err(format!(
                "redis-server on port {port} exited ({status}):\n{log}"
            ));
        }
        if server_pid(port) == Some(pid) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(log_path(dir)).unwrap_or_default();
            panic!("redis-server on port {port} did not answer within {READY_WITHIN:?}:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- redis-server (port {}) log ----\n{}",
                self.port,
                self.log()
            );
        }
        self.kill();
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// The `process_id` the server on `port` reports, if one answers.
fn server_pid(port: u16) -> Option<u32> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"INFO server\r\n").ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // A bulk reply: `$LEN\r\n` then LEN bytes then `\r\n`.
    loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if text.starts_with('-') {
            return None; // e.g. LOADING
        }
        if let Some(end) = text.find("\r\n") {
            let len: usize = text[1..end].parse().ok()?;
            if buf.len() >= end + 2 + len {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
}
