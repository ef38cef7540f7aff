//! Benchmark harness for gemini-balance (how to run and read it: bench/README.md).
//!
//! Starts a fast fake Gemini upstream (this executable, `bench upstream`) and the release
//! daemon on loopback, drives them with `wrk` — direct to the upstream and through the daemon,
//! alternating, several rounds — and prints markdown tables on stdout (progress on stderr):
//! requests/s, p50/p99, CPU seconds per 1,000 requests and peak RSS, the proxied/direct
//! ratio, memory per held stream, and the issue's targets. It never asserts: it records.
//!
//! `cargo build --release && cargo run --release --example bench -- [--quick] [--rounds N]
//! [--duration SECS] [--only gen1,gen64,...] [--perf]`

#[path = "bench_support/cases.rs"]
mod cases;
#[path = "bench_support/h2path.rs"]
mod h2path;
#[path = "bench_support/load.rs"]
mod load;
#[path = "bench_support/procs.rs"]
mod procs;
#[path = "bench_support/profile.rs"]
mod profile;
#[path = "bench_support/relay.rs"]
mod relay;
#[path = "bench_support/report.rs"]
mod report;
#[path = "bench_support/upstream.rs"]
mod upstream;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use cases::{WrkCase, chat, native};
use clap::Parser;
use procs::{DaemonSetup, Proc, USER_KEY, pool_key};
use report::{HeldRow, Target, WrkScenario};

#[derive(Parser)]
#[command(about = "Benchmark gemini-balance against a fake upstream on loopback")]
struct Args {
    /// One round of 2 s per scenario (a smoke run, not a measurement).
    #[arg(long)]
    quick: bool,
    /// Direct/proxied pairs per scenario (alternating which goes first).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Streams held open in the slow-streams scenario.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Clients each holding a ten-second stream in the `held` scenario.
    #[arg(long, default_value_t = 2000)]
    held: usize,
    /// Only these scenarios (comma-separated): gen1, gen64, stream32, chat64, nolog64,
    /// keys10k, keys10knolog, slow, floor64, and on the TLS + HTTP/2 path tls64, held,
    /// goaway64.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The daemon binary (default: `gemini-balance` beside this example's target directory).
    #[arg(long)]
    daemon: Option<PathBuf>,
    /// Record the daemon with `perf` during one extra proxied generateContent c=64 run (log on
    /// and log off) and print its top symbols (build with CARGO_PROFILE_RELEASE_STRIP=false for names).
    #[arg(long)]
    perf: bool,
    /// Run every daemon on this store (`redis://127.0.0.1:6379/0`) instead of redb; each
    /// daemon gets its own key prefix.
    #[arg(long)]
    store: Option<String>,
    /// The daemon's `server.workers` (serving threads; default: its own, one per core).
    #[arg(long)]
    workers: Option<usize>,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Run only the fake upstream (prints `listening on ADDR`).
    Upstream {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// TLS with ALPN h2, 100 streams per connection, GOAWAY on SIGUSR1.
        #[arg(long)]
        tls: bool,
    },
    /// Run only the byte relay to `--to` (the floor scenario; prints `listening on ADDR`).
    Relay {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        #[arg(long)]
        to: std::net::SocketAddr,
    },
}

struct Bench {
    args: Args,
    daemon_bin: PathBuf,
    dir: tempfile::TempDir,
    script: PathBuf,
    upstream: Proc,
    out: String,
    targets: Vec<Target>,
    /// Median proxied p50 − direct p50 at c=1, in microseconds.
    c1_delta: Option<f64>,
    /// Proxied / direct of the SSE scenario.
    sse_ratio: Option<f64>,
    /// Largest daemon peak RSS of any wrk scenario, with the scenario.
    max_rss: (u64, String),
    /// The generateContent c=64 scenario (10 keys, logs on).
    gen64: Option<WrkScenario>,
    /// The same load through the byte relay instead of the daemon: proxied / direct.
    floor: Option<f64>,
    /// Setups compared with [`Bench::paired`].
    comparisons: Vec<Target>,
}

/// One setup against another (see [`Bench::paired`]): ratios other / base.
struct Paired {
    cpu: f64,
    rps: f64,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if let Some(store) = &args.store {
        procs::STORE.set(store.clone()).expect("set once");
    }
    if let Some(n) = args.workers {
        procs::WORKERS.set(n).expect("set once");
    }
    match &args.command {
        Some(Sub::Upstream { listen, tls }) => return upstream::run(listen, *tls),
        Some(Sub::Relay { listen, to }) => return relay::run(listen, *to),
        None => {}
    }
    if args.quick {
        args.rounds = 1;
        args.duration = 2;
    }
    args.rounds = args.rounds.max(1);
    let daemon_bin = match args.daemon.clone() {
        Some(p) => p,
        None => default_daemon()?,
    };
    let dir = tempfile::Builder::new().prefix("gb-bench-").tempdir()?;
    let script = dir.path().join("wrk.lua");
    std::fs::write(&script, load::WRK_LUA)?;
    let busy = profile::machine_busy();
    let upstream = procs::start_upstream()?;
    let mut bench = Bench {
        args,
        daemon_bin,
        dir,
        script,
        upstream,
        out: String::new(),
        targets: Vec::new(),
        c1_delta: None,
        sse_ratio: None,
        max_rss: (0, String::new()),
        gen64: None,
        floor: None,
        comparisons: Vec::new(),
    };
    bench.header(busy);
    bench.run_all()?;
    print!("{}", bench.out);
    print!("{}", report::targets_table(&bench.targets));
    Ok(())
}

fn default_daemon() -> anyhow::Result<PathBuf> {
    // This example lives in <target>/release/examples/bench; the daemon in <target>/release.
    let exe = std::env::current_exe()?;
    let release = exe.parent().and_then(Path::parent).context("exe path")?;
    let bin = release.join("gemini-balance");
    if !bin.exists() {
        bail!(
            "{} is missing: build it first with `cargo build --release` (same CARGO_TARGET_DIR), \
             or pass --daemon PATH",
            bin.display()
        );
    }
    Ok(bin)
}

impl Bench {
    fn wants(&self, id: &str) -> bool {
        self.args.only.is_empty() || self.args.only.iter().any(|o| o == id)
    }

    fn header(&mut self, busy: f64) {
        let version = Command::new(&self.daemon_bin)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        self.out += &format!(
            "## gemini-balance benchmark\n\n\
             {version}; {}; {cores} cores; load average before: {}; \
             machine busy before start: {:.0} % of all cores.\n\
             {} round(s) of {} s per target and scenario, direct and proxied alternating.\n\n",
            load::wrk_version().unwrap_or_else(|| "wrk missing".into()),
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            busy * 100.0,
            self.args.rounds,
            self.args.duration,
        );
    }

    fn run_all(&mut self) -> anyhow::Result<()> {
        let main = DaemonSetup {
            keys: 10,
            logs: true,
        };
        let cases = vec![
            native(
                "gen1",
                "generateContent, 1 connection",
                "generateContent",
                1,
            ),
            native(
                "gen64",
                "generateContent, 64 connections",
                "generateContent",
                64,
            ),
            native(
                "stream32",
                "streamGenerateContent (SSE, 10 chunks), 32 connections",
                "streamGenerateContent?alt=sse",
                32,
            ),
            chat(64),
        ];
        self.with_daemon(main, &cases)?;
        self.production_path(main)?;
        let logs_off = DaemonSetup {
            keys: 10,
            logs: false,
        };
        let many = DaemonSetup {
            keys: 10_000,
            logs: true,
        };
        // Without the log, what is left of 10,000 keys is the request path itself.
        let many_nolog = DaemonSetup {
            keys: 10_000,
            logs: false,
        };
        for (id, setup) in [
            ("nolog64", logs_off),
            ("keys10k", many),
            ("keys10knolog", many_nolog),
        ] {
            let case = native(id, "generateContent, 64 connections", "generateContent", 64);
            self.with_daemon(setup, &[case])?;
        }
        if self.wants("slow") {
            self.slow_streams(main)?;
        }
        if self.wants("floor64") {
            self.floor()?;
        }
        // The comparisons between setups, each from runs taken in turn (see `paired`).
        let few_log = main;
        let (few_nolog, many_log, many_nolog) = (logs_off, many, many_nolog);
        let comparisons = [
            (
                "nolog64",
                "gen64",
                few_nolog,
                few_log,
                "request log costs < 10 % (c=64, log on vs off: daemon CPU/req; req/s)",
                true,
            ),
            (
                "nolog64",
                "keys10knolog",
                few_nolog,
                many_nolog,
                "selection flat in pool size (10,000 vs 10 keys, log off: daemon CPU/req; req/s)",
                true,
            ),
            (
                "gen64",
                "keys10k",
                few_log,
                many_log,
                "10,000 vs 10 keys with the request log on (more statistics buckets per batch)",
                false,
            ),
        ];
        for (base_id, other_id, base, other, what, judged) in comparisons {
            if self.wants(base_id) && self.wants(other_id) {
                let p = self.paired(base, other)?;
                self.comparisons.push(Target {
                    what,
                    measured: format!(
                        "{:+.1} % CPU; {:.1} % req/s",
                        (p.cpu - 1.0) * 100.0,
                        p.rps * 100.0
                    ),
                    met: judged.then_some(p.cpu <= 1.10),
                });
            }
        }
        self.summarise();
        Ok(())
    }

    /// Runs `cases` against one fresh daemon.
    fn with_daemon(&mut self, setup: DaemonSetup, cases: &[WrkCase]) -> anyhow::Result<()> {
        let cases: Vec<&WrkCase> = cases.iter().filter(|c| self.wants(c.id)).collect();
        if cases.is_empty() {
            return Ok(());
        }
        eprintln!("starting the daemon ({})", setup.label());
        let name = format!("daemon-{}-keys-logs-{}", setup.keys, setup.logs);
        let dir = self.dir.path().join(name);
        let daemon = procs::start_daemon(&self.daemon_bin, &dir, self.upstream.addr, setup)?;
        for case in cases {
            let scenario = self.wrk_case(&daemon, case, &setup.label())?;
            self.out += &scenario.table();
            if scenario.daemon_peak > self.max_rss.0 {
                self.max_rss = (scenario.daemon_peak, scenario.title.clone());
            }
            if case.id == "gen1" {
                self.c1_delta = Some(scenario.p50_delta_us());
            }
            if case.id == "stream32" {
                self.sse_ratio = Some(scenario.ratio());
            }
            if case.id == "gen64" {
                self.gen64 = Some(scenario);
            }
            if matches!(case.id, "gen64" | "nolog64") && self.args.perf {
                let title = format!("{} — {}", case.title, setup.label());
                self.perf(&daemon, case, &title)?;
            }
        }
        Ok(())
    }

    /// Direct and proxied rounds of `case`; `daemon` is whatever serves the proxied side,
    /// `label` says how it is set up.
    fn wrk_case(
        &mut self,
        daemon: &Proc,
        case: &WrkCase,
        label: &str,
    ) -> anyhow::Result<WrkScenario> {
        let base = format!("http://{}", self.upstream.addr);
        self.wrk_against((&self.upstream, &base), daemon, case, label)
    }

    /// [`Bench::wrk_case`] with the direct side sent to `direct` at `base` (its URL).
    fn wrk_against(
        &self,
        (direct, base): (&Proc, &str),
        daemon: &Proc,
        case: &WrkCase,
        label: &str,
    ) -> anyhow::Result<WrkScenario> {
        eprintln!("scenario {}: {} ({label})", case.id, case.title);
        let (script, secs, c) = (&self.script, self.args.duration, case.connections);
        // Warm both paths (connection pools, allocator) without recording.
        load::wrk_at(script, base, &case.direct, c, 1)?;
        load::wrk(script, daemon.addr, &case.proxied, c, 1)?;
        let mut s = WrkScenario {
            title: format!("{} — {label}", case.title),
            ..Default::default()
        };
        daemon.reset_peak();
        direct.reset_peak();
        for round in 0..self.args.rounds {
            for proxied in [round % 2 == 1, round % 2 == 0] {
                let (u0, d0) = (direct.cpu(), daemon.cpu());
                let r = if proxied {
                    load::wrk(script, daemon.addr, &case.proxied, c, secs)?
                } else {
                    load::wrk_at(script, base, &case.direct, c, secs)?
                };
                let (du, dd) = (
                    (direct.cpu() - u0).as_secs_f64(),
                    (daemon.cpu() - d0).as_secs_f64(),
                );
                let who = if proxied { "proxied" } else { "direct" };
                eprintln!(
                    "  round {} {who:7}: {:>9.0} req/s  p50 {}  p99 {}  errors {}",
                    round + 1,
                    r.rps(),
                    report::ms(r.p50_us),
                    report::ms(r.p99_us),
                    r.errors
                );
                if proxied {
                    s.proxied.push(r);
                    s.daemon_cpu += dd;
                    s.upstream_cpu_proxied += du;
                } else {
                    s.direct.push(r);
                    s.upstream_cpu_direct += du;
                }
            }
        }
        s.daemon_peak = daemon.rss().1;
        s.upstream_peak = direct.rss().1;
        Ok(s)
    }

    /// generateContent c=64 through the byte relay instead of the daemon: the share of
    /// direct throughput a proxy that does nothing but copy bytes reaches here.
    fn floor(&mut self) -> anyhow::Result<()> {
        eprintln!("starting the byte relay");
        let relay = procs::start_relay(self.upstream.addr)?;
        let mut case = native(
            "floor64",
            "generateContent, 64 connections",
            "generateContent",
            64,
        );
        // The relay passes the request on as it is: the client sends what direct sends.
        case.proxied = case.direct.clone();
        let label = "TCP byte relay (no HTTP) in place of the daemon";
        let scenario = self.wrk_case(&relay, &case, label)?;
        self.out += &scenario.table();
        self.floor = Some(scenario.ratio());
        Ok(())
    }

    fn slow_streams(&mut self, setup: DaemonSetup) -> anyhow::Result<()> {
        let n = self.args.streams;
        eprintln!(
            "scenario slow: {n} slow streams held open ({})",
            setup.label()
        );
        let dir = self.dir.path().join("daemon-slow");
        let daemon = procs::start_daemon(&self.daemon_bin, &dir, self.upstream.addr, setup)?;
        let path = format!(
            "{}:streamGenerateContent?alt=sse",
            "/v1beta/models/gemini-slow"
        );
        std::thread::sleep(Duration::from_millis(500));
        let fresh = daemon.rss().0;
        // A little ordinary traffic first, so "idle" is a daemon that has served requests.
        let warm = native("warm", "", "generateContent", 4);
        load::wrk(&self.script, daemon.addr, &warm.proxied, 4, 1)?;
        let mut rows = Vec::new();
        let targets = [
            (&self.upstream, "direct (fake upstream)", pool_key(0)),
            (&daemon, "proxied (daemon)", USER_KEY.to_owned()),
        ];
        for (proc, who, key) in targets {
            std::thread::sleep(Duration::from_millis(500));
            let idle = proc.rss().0;
            let header = ("x-goog-api-key", key);
            let (held, rss) = load::hold_streams(proc.addr, &path, header, n, || {
                std::thread::sleep(Duration::from_millis(500));
                proc.rss().0
            })?;
            std::thread::sleep(Duration::from_secs(1));
            eprintln!("  {who}: {} streams opened", held.opened);
            rows.push(HeldRow {
                who,
                streams: n,
                opened: held.opened,
                idle,
                held: rss,
                after: proc.rss().0,
                open_secs: held.open_time.as_secs_f64(),
            });
        }
        let title = format!(
            "{} slow streams held open — {}",
            procs::fmt_int(n as f64),
            setup.label()
        );
        self.out += &report::held_table(&title, &rows);
        self.targets.push(Target {
            what: "daemon RSS idle ≤ 20 MB: just started; after 1 s of traffic",
            measured: format!("{}; {}", report::mib(fresh), report::mib(rows[1].idle)),
            met: Some(fresh.max(rows[1].idle) <= 20_000_000),
        });
        self.targets.push(Target {
            what: "daemon RSS with 1,000 open streams ≤ 80 MB",
            measured: report::mib(rows[1].held),
            met: Some(rows[1].held <= 80_000_000),
        });
        let per = rows[1].held.saturating_sub(rows[1].idle) as f64 / n.max(1) as f64 / 1024.0;
        self.targets.push(Target {
            what: "daemon memory per held stream (RSS with streams − idle) / streams",
            measured: format!("{per:.1} KiB"),
            met: None,
        });
        Ok(())
    }

    /// One extra proxied run under `perf record`; prints the daemon's top symbols.
    fn perf(&mut self, daemon: &Proc, case: &WrkCase, title: &str) -> anyhow::Result<()> {
        let data = self.dir.path().join(format!("perf-{}.data", case.id));
        eprintln!("perf: recording the daemon during one more proxied run");
        let mut rec = Command::new("perf")
            .args(["record", "-F", "999", "-o"])
            .arg(&data)
            .args(["-p", &daemon.pid().to_string()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("running perf")?;
        std::thread::sleep(Duration::from_millis(300));
        let secs = self.args.duration;
        load::wrk(&self.script, daemon.addr, &case.proxied, 64, secs)?;
        let _ = Command::new("kill")
            .args(["-INT", &rec.id().to_string()])
            .status();
        rec.wait()?;
        self.out += &format!(
            "### perf: daemon self time, proxied {}\n\n\
             ```\n{}\n\n{}\n```\n\n",
            title,
            profile::top(&data, "dso", "1", 8)?,
            profile::top(&data, "dso,sym", "0.5", 40)?
        );
        Ok(())
    }

    /// Daemon CPU per request of `other` relative to `base` (and req/s), generateContent
    /// c=64 on two daemons started side by side and loaded in turn (base, other; other,
    /// base; …): between scenarios minutes apart the machine drifts by more than the
    /// differences these comparisons are after. Medians of the per-round ratios.
    fn paired(&mut self, base: DaemonSetup, other: DaemonSetup) -> anyhow::Result<Paired> {
        eprintln!("paired: {} vs {}", other.label(), base.label());
        let case = native("paired", "", "generateContent", 64);
        let start = |setup: DaemonSetup, side: &str| {
            let name = format!("paired-{side}-{}-keys-logs-{}", setup.keys, setup.logs);
            let dir = self.dir.path().join(name);
            procs::start_daemon(&self.daemon_bin, &dir, self.upstream.addr, setup)
        };
        let (a, b) = (start(base, "base")?, start(other, "other")?);
        for d in [&a, &b] {
            load::wrk(&self.script, d.addr, &case.proxied, 64, 1)?;
        }
        let run = |d: &Proc| -> anyhow::Result<(f64, f64)> {
            let cpu = d.cpu();
            let r = load::wrk(&self.script, d.addr, &case.proxied, 64, self.args.duration)?;
            let us = (d.cpu() - cpu).as_secs_f64() / r.requests.max(1) as f64 * 1e6;
            Ok((us, r.rps()))
        };
        let (mut cpu, mut rps) = (Vec::new(), Vec::new());
        // Twice the scenario rounds: the differences measured here are small.
        for round in 0..self.args.rounds * 2 {
            let (x, y) = if round % 2 == 0 {
                let x = run(&a)?;
                (x, run(&b)?)
            } else {
                let y = run(&b)?;
                (run(&a)?, y)
            };
            eprintln!(
                "  round {}: {:.1} µs vs {:.1} µs per request, {:.0} vs {:.0} req/s",
                round + 1,
                y.0,
                x.0,
                y.1,
                x.1
            );
            cpu.push(y.0 / x.0);
            rps.push(y.1 / x.1);
        }
        Ok(Paired {
            cpu: report::median(cpu),
            rps: report::median(rps),
        })
    }

    fn summarise(&mut self) {
        let mut t = Vec::new();
        if let Some(g) = &self.gen64 {
            t.push(Target {
                what: "proxied ≥ 40 % of direct req/s, generateContent c=64",
                measured: format!("{:.1} %", g.ratio() * 100.0),
                met: Some(g.ratio() >= 0.40),
            });
            t.push(Target {
                what: "daemon CPU per proxied request ≤ 60 µs (generateContent c=64)",
                measured: format!("{:.1} µs", g.daemon_us_per_req()),
                met: Some(g.daemon_us_per_req() <= 60.0),
            });
        }
        if let Some(floor) = self.floor {
            t.push(Target {
                what: "the floor: a TCP byte relay's share of direct req/s, generateContent c=64 (the most any proxy process reaches here)",
                measured: format!("{:.1} %", floor * 100.0),
                met: None,
            });
            if let Some(g) = &self.gen64 {
                t.push(Target {
                    what: "the daemon's req/s as a share of the byte relay's (ratio to direct ÷ the floor's), generateContent c=64",
                    measured: format!("{:.1} %", g.ratio() / floor * 100.0),
                    met: None,
                });
            }
        }
        if let Some(r) = self.sse_ratio.take() {
            t.push(Target {
                what: "SSE streaming ≥ 40 % of direct req/s, c=32",
                measured: format!("{:.1} %", r * 100.0),
                met: Some(r >= 0.40),
            });
        }
        if let Some(delta) = self.c1_delta.take() {
            t.push(Target {
                what: "proxied p50 − direct p50 ≤ 0.1 ms, generateContent c=1",
                measured: report::delta_ms(delta),
                met: Some(delta <= 100.0),
            });
        }
        t.append(&mut self.comparisons);
        if self.max_rss.0 > 0 {
            t.push(Target {
                what: "largest daemon peak RSS of a scenario (a 512 MB VPS is a normal host)",
                measured: format!("{} ({})", report::mib(self.max_rss.0), self.max_rss.1),
                met: None,
            });
        }
        t.append(&mut self.targets);
        self.targets = t;
    }
}
