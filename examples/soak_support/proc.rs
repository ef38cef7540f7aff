//! The daemon process a soak run owns: started on `127.0.0.1:0` with a config in a temp
//! dir, its address read from the `listening on ADDR` line, its RSS read from `/proc`.
//! Killed and reaped when dropped. Its log lines are drained (and dropped) by a thread.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;

pub struct DaemonProc {
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl DaemonProc {
    pub fn start(exe: &Path, config: &str) -> anyhow::Result<DaemonProc> {
        let dir = tempfile::tempdir()?;
        let cfg = dir.path().join("gb.toml");
        std::fs::write(&cfg, config)?;
        let mut child = Command::new(exe)
            .arg("serve")
            .arg("--config")
            .arg(&cfg)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env(
                "RUST_LOG",
                "warn,gemini_balance=info,gemini_balance::server=warn",
            )
            .env_remove("GEMINI_BALANCE_CONFIG")
            .env_remove("GEMINI_BALANCE_ADMIN_PASSWORD")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let token = rest.split_whitespace().next().unwrap_or("");
                    let token = token.trim_matches(|c: char| matches!(c, '"' | '\'' | ',' | '`'));
                    if let Ok(a) = token.parse::<SocketAddr>() {
                        let _ = tx.send(a);
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .context("the daemon never logged `listening on ADDR`")?;
        Ok(DaemonProc {
            addr,
            child,
            _dir: dir,
        })
    }

    /// Resident set size, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()));
        status
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |k| k * 1024)
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
