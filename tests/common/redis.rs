//! A private `redis-server` for one test, on a unix socket in its own temp dir (no TCP
//! port, so nothing is probed and nothing clashes), with no persistence, killed on drop.
//! It can be killed and started again on the same socket, and answers `redis-cli`
//! commands. Readiness is checked with `INFO server`, whose `process_id` must be this
//! child's. Shared by the black-box tests and the store's unit tests.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

const READY_WITHIN: Duration = Duration::from_secs(10);

pub struct RedisServer {
    child: Option<Child>,
    dir: TempDir,
    cluster: bool,
}

impl RedisServer {
    /// Starts a fresh server. Panics (with a clear message) when `redis-server` is not
    /// installed: these tests must fail, not pass, without it.
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        let child =
            spawn(&dir, false).unwrap_or_else(|why| panic!("redis-server would not start:\n{why}"));
        RedisServer {
            child: Some(child),
            dir,
            cluster: false,
        }
    }

    /// Starts a one-node Redis Cluster holding every slot: it refuses, as any cluster
    /// does, a script or command whose keys hash to different slots (`CROSSSLOT`).
    pub fn start_cluster() -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        let child =
            spawn(&dir, true).unwrap_or_else(|why| panic!("redis-server would not start:\n{why}"));
        let server = RedisServer {
            child: Some(child),
            dir,
            cluster: true,
        };
        server.cli(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]);
        let deadline = Instant::now() + READY_WITHIN;
        while !server
            .cli(&["CLUSTER", "INFO"])
            .contains("cluster_state:ok")
        {
            assert!(
                Instant::now() < deadline,
                "the one-node cluster never came up"
            );
            // The node takes its slots on its next cron tick: look again shortly.
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// The socket the server listens on.
    pub fn socket(&self) -> PathBuf {
        socket_path(&self.dir)
    }

    /// `redis+unix:///…/redis.sock`
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    /// SIGKILL: Redis is gone (and with `--save ''` its data too).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same socket.
    pub fn restart(&mut self) {
        self.kill();
        let child = spawn(&self.dir, self.cluster)
            .unwrap_or_else(|why| panic!("redis-server would not start again:\n{why}"));
        self.child = Some(child);
    }

    /// Runs `redis-cli -s SOCKET args…` and returns its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-s")
            .arg(self.socket())
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

    /// Sends many commands in one `redis-cli --pipe` run (each a list of arguments, any
    /// bytes), and panics unless every one succeeded.
    pub fn pipe(&self, commands: &[Vec<String>]) {
        let mut resp = Vec::new();
        for c in commands {
            resp.extend(format!("*{}\r\n", c.len()).into_bytes());
            for a in c {
                resp.extend(format!("${}\r\n", a.len()).into_bytes());
                resp.extend(a.as_bytes());
                resp.extend(b"\r\n");
            }
        }
        let mut child = Command::new("redis-cli")
            .arg("-s")
            .arg(self.socket())
            .arg("--pipe")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running redis-cli (is Redis installed?): {e}"));
        child
            .stdin
            .take()
            .expect("redis-cli's stdin")
            .write_all(&resp)
            .expect("commands to redis-cli");
        let out = child.wait_with_output().expect("redis-cli --pipe");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("errors: 0"),
            "redis-cli --pipe: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The server's own log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(log_path(&self.dir)).unwrap_or_default()
    }
}

fn log_path(dir: &TempDir) -> PathBuf {
    dir.path().join("redis.log")
}

fn socket_path(dir: &TempDir) -> PathBuf {
    dir.path().join("redis.sock")
}

/// Starts `redis-server` on the dir's socket and waits until it answers as itself.
fn spawn(dir: &TempDir, cluster: bool) -> Result<Child, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(dir))
        .expect("redis log file");
    let socket = socket_path(dir);
    let child = Command::new("redis-server")
        .args(["--port", "0", "--unixsocketperm", "700"])
        .arg("--unixsocket")
        .arg(&socket)
        .args(["--save", "", "--appendonly", "no"])
        .args(if cluster {
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ][..]
        } else {
            &[]
        })
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
            return Err(format!("redis-server exited ({status}):\n{log}"));
        }
        if server_pid(&socket) == Some(pid) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(log_path(dir)).unwrap_or_default();
            return Err(format!("no answer within {READY_WITHIN:?}:\n{log}"));
        }
        // Redis is still starting: look again shortly.
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- redis-server log ----\n{}", self.log());
        }
        self.kill();
    }
}

/// The `process_id` the server on `socket` reports, if one answers.
fn server_pid(socket: &Path) -> Option<u32> {
    let mut s = UnixStream::connect(socket).ok()?;
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
