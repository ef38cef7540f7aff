//! The production path's scenarios: the daemon speaking TLS + HTTP/2 to the TLS fake
//! upstream (100 streams per connection, as Google's front ends allow), beside the plain
//! HTTP/1.1 figures of the same run.
//!
//! - `tls64`: generateContent at c=64, direct (wrk over TLS, HTTP/1.1: wrk speaks no
//!   HTTP/2) and proxied (wrk → daemon over plain HTTP/1.1 → upstream over TLS + HTTP/2).
//! - `held`: `--held` clients (2,000) each holding a ten-second SSE stream at once, direct
//!   to the plain fake upstream, through a daemon on the plain path and through one on
//!   the TLS path: time to first event, streams that completed, daemon memory per stream.
//! - `goaway64`: generateContent at c=64 through the TLS daemon while the upstream sends
//!   a graceful GOAWAY on every connection once a second: every request must succeed.

use std::time::{Duration, Instant};

use crate::cases::native;
use crate::load::{self, Streams};
use crate::procs::{self, DaemonSetup, Proc, USER_KEY, pool_key};
use crate::report::{self, Target, median};
use crate::{Bench, WrkScenario};

const HELD_PATH: &str = "/v1beta/models/gemini-held10s:streamGenerateContent?alt=sse";

impl Bench {
    pub fn production_path(&mut self, setup: DaemonSetup) -> anyhow::Result<()> {
        if !["tls64", "held", "goaway64"]
            .iter()
            .any(|id| self.wants(id))
        {
            return Ok(());
        }
        eprintln!("starting the TLS fake upstream and a daemon on the TLS path");
        let tls = procs::start_upstream_tls()?;
        let dir = self.dir.path().join("daemon-tls");
        let daemon = procs::start_daemon_on(&self.daemon_bin, &dir, tls.addr, setup, true)?;
        if self.wants("tls64") {
            self.tls64(&tls, &daemon, setup)?;
        }
        if self.wants("held") {
            self.held(&daemon, setup)?;
        }
        if self.wants("goaway64") {
            self.goaway64(&tls, &daemon)?;
        }
        Ok(())
    }

    fn tls64(&mut self, tls: &Proc, daemon: &Proc, setup: DaemonSetup) -> anyhow::Result<()> {
        let case = native(
            "tls64",
            "generateContent, 64 connections, upstream over TLS + HTTP/2",
            "generateContent",
            64,
        );
        let base = format!("https://{}", tls.addr);
        let s = self.wrk_against((tls, &base), daemon, &case, &setup.label())?;
        self.out += &s.table();
        let plain = self.gen64.as_ref().map(WrkScenario::daemon_us_per_req);
        let tls_us = s.daemon_us_per_req();
        self.targets.push(Target {
            what: "daemon CPU per request, TLS + HTTP/2 upstream ≤ 1.5 × plain HTTP/1.1 (c=64)",
            measured: match plain {
                Some(p) => format!("{tls_us:.1} µs vs {p:.1} µs ({:.2}×)", tls_us / p),
                None => format!("{tls_us:.1} µs (plain not run)"),
            },
            met: plain.map(|p| tls_us <= 1.5 * p),
        });
        Ok(())
    }

    fn held(&mut self, tls_daemon: &Proc, setup: DaemonSetup) -> anyhow::Result<()> {
        let n = self.args.held;
        eprintln!("scenario held: {n} ten-second SSE streams at once");
        let dir = self.dir.path().join("daemon-held-plain");
        let plain = procs::start_daemon(&self.daemon_bin, &dir, self.upstream.addr, setup)?;
        let mut rows = Vec::new();
        let sides = [
            (&self.upstream, "direct (plain fake upstream)", pool_key(0)),
            (
                &plain,
                "daemon, plain HTTP/1.1 upstream",
                USER_KEY.to_owned(),
            ),
            (
                tls_daemon,
                "daemon, TLS + HTTP/2 upstream",
                USER_KEY.to_owned(),
            ),
        ];
        for (proc, who, key) in sides {
            std::thread::sleep(Duration::from_millis(500));
            let idle = proc.rss().0;
            let header = ("x-goog-api-key", key);
            let (run, held) = load::read_streams(proc.addr, HELD_PATH, header, n, || {
                std::thread::sleep(Duration::from_millis(300));
                proc.rss().0
            })?;
            eprintln!(
                "  {who}: {} first events, {} complete",
                run.ttfb_us.len(),
                run.completed
            );
            rows.push((who, idle, held, run));
        }
        self.out += &held_table(n, &setup.label(), &rows);
        let direct_p99 = p(&rows[0].3, 0.99);
        let (_, idle, held, run) = &rows[2];
        let added = p(run, 0.99) - direct_p99;
        let per = held.saturating_sub(*idle) as f64 / n.max(1) as f64 / 1024.0;
        self.targets.push(Target {
            what: "held streams over TLS + HTTP/2: added TTFB p99 ≤ 50 ms, all complete, ≤ 24 KiB RSS per stream",
            measured: format!(
                "{}; {}/{n}; {per:.1} KiB",
                report::ms(added),
                run.completed
            ),
            met: Some(added <= 50_000.0 && run.completed == n && per <= 24.0),
        });
        Ok(())
    }

    fn goaway64(&mut self, tls: &Proc, daemon: &Proc) -> anyhow::Result<()> {
        let secs = self.args.duration.max(5);
        eprintln!("scenario goaway64: c=64 for {secs} s, GOAWAY from the upstream every second");
        let case = native("goaway64", "", "generateContent", 64);
        let pid = tls.pid().to_string();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let signaller = std::thread::spawn(move || {
            let mut sent = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                let kill = std::process::Command::new("kill")
                    .args(["-USR1", &pid])
                    .status();
                sent += usize::from(kill.is_ok_and(|s| s.success()));
            }
            sent
        });
        let started = Instant::now();
        let r = load::wrk(&self.script, daemon.addr, &case.proxied, 64, secs)?;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = signaller.join().unwrap_or(0);
        eprintln!(
            "  {} requests in {:.1} s, {} errors, {sent} GOAWAY rounds",
            r.requests,
            started.elapsed().as_secs_f64(),
            r.errors
        );
        self.out += &format!(
            "### generateContent, 64 connections, TLS + HTTP/2 upstream sending GOAWAY on every \
             connection once a second\n\n| requests | req/s | p50 | p99 | GOAWAY rounds | failed |\n\
             |---:|---:|---:|---:|---:|---:|\n| {} | {:.0} | {} | {} | {sent} | **{}** |\n\n",
            procs::fmt_int(r.requests as f64),
            r.rps(),
            report::ms(r.p50_us),
            report::ms(r.p99_us),
            r.errors
        );
        self.targets.push(Target {
            what: "GOAWAY from the upstream during a c=64 run: zero failed requests",
            measured: format!("{} failed of {}", r.errors, r.requests),
            met: Some(r.errors == 0 && sent > 0),
        });
        Ok(())
    }
}

/// The `q` quantile of the streams' times to first event, µs.
fn p(run: &Streams, q: f64) -> f64 {
    let mut v = run.ttfb_us.clone();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn held_table(n: usize, label: &str, rows: &[(&str, u64, u64, Streams)]) -> String {
    let mut s = format!(
        "### {} clients each holding a ten-second SSE stream at once — {label}\n\n",
        procs::fmt_int(n as f64)
    );
    s += "| | first events | complete | TTFB p50 | TTFB p99 | idle RSS | RSS with streams | per stream | time to open all |\n";
    s += "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for (who, idle, held, run) in rows {
        let per = held.saturating_sub(*idle) as f64 / n.max(1) as f64 / 1024.0;
        s += &format!(
            "| {who} | {} | {} | {} | {} | {} | {} | **{per:.1} KiB** | {:.2} s |\n",
            procs::fmt_int(run.ttfb_us.len() as f64),
            procs::fmt_int(run.completed as f64),
            report::ms(median(run.ttfb_us.clone())),
            report::ms(p(run, 0.99)),
            report::mib(*idle),
            report::mib(*held),
            run.open_time.as_secs_f64(),
        );
    }
    s + "\nThe direct row is the fake upstream holding the streams (for scale); the daemon \
         rows hold two sockets per stream (client and upstream; over HTTP/2 the upstream \
         side is one stream of a shared connection).\n\n"
}
