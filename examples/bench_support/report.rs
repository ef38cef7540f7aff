//! Turns measurements into the markdown tables the benchmark prints (stdout) and the
//! performance targets (memory, throughput, added latency) into a pass/miss summary.
//! Pure formatting: no processes, no I/O.

use crate::load::WrkResult;
use crate::procs::fmt_int;

/// Every round of one wrk scenario, direct and proxied, plus the process accounting.
#[derive(Default)]
pub struct WrkScenario {
    pub title: String,
    pub direct: Vec<WrkResult>,
    pub proxied: Vec<WrkResult>,
    /// CPU seconds used by the fake upstream during the direct runs.
    pub upstream_cpu_direct: f64,
    /// CPU seconds used by the daemon and by the fake upstream during the proxied runs.
    pub daemon_cpu: f64,
    pub upstream_cpu_proxied: f64,
    pub upstream_peak: u64,
    pub daemon_peak: u64,
}

fn total(runs: &[WrkResult]) -> f64 {
    runs.iter().map(|r| r.requests as f64).sum::<f64>().max(1.0)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl WrkScenario {
    pub fn rps(runs: &[WrkResult]) -> f64 {
        median(runs.iter().map(WrkResult::rps).collect())
    }
    pub fn p50(runs: &[WrkResult]) -> f64 {
        median(runs.iter().map(|r| r.p50_us).collect())
    }
    pub fn p99(runs: &[WrkResult]) -> f64 {
        median(runs.iter().map(|r| r.p99_us).collect())
    }
    /// Per-round proxied/direct throughput, in the order run.
    pub fn ratios(&self) -> Vec<f64> {
        self.direct
            .iter()
            .zip(&self.proxied)
            .map(|(d, p)| p.rps() / d.rps().max(1e-9))
            .collect()
    }
    pub fn ratio(&self) -> f64 {
        median(self.ratios())
    }
    /// Daemon CPU per proxied request, in microseconds.
    pub fn daemon_us_per_req(&self) -> f64 {
        self.daemon_cpu / total(&self.proxied) * 1e6
    }
    /// Median over rounds of proxied p50 − direct p50, in microseconds.
    pub fn p50_delta_us(&self) -> f64 {
        let deltas = self.direct.iter().zip(&self.proxied);
        median(deltas.map(|(d, p)| p.p50_us - d.p50_us).collect())
    }

    pub fn table(&self) -> String {
        let (d, p) = (&self.direct, &self.proxied);
        let errors: u64 = d.iter().chain(p).map(|r| r.errors).sum();
        let mut s = format!("### {}\n\n", self.title);
        s += "| | req/s | p50 | p99 | CPU s / 1k req | peak RSS |\n";
        s += "|---|---:|---:|---:|---:|---:|\n";
        s += &format!(
            "| direct | {} | {} | {} | {:.3} upstream | {} upstream |\n",
            fmt_int(Self::rps(d)),
            ms(Self::p50(d)),
            ms(Self::p99(d)),
            self.upstream_cpu_direct / total(d) * 1e3,
            mib(self.upstream_peak),
        );
        s += &format!(
            "| proxied | {} | {} | {} | **{:.3} daemon** + {:.3} upstream | **{} daemon** |\n",
            fmt_int(Self::rps(p)),
            ms(Self::p50(p)),
            ms(Self::p99(p)),
            self.daemon_cpu / total(p) * 1e3,
            self.upstream_cpu_proxied / total(p) * 1e3,
            mib(self.daemon_peak),
        );
        let dp99 = Self::p99(p) - Self::p99(d);
        s += &format!(
            "| proxied / direct | **{:.1} %** | {} | {} | | |\n\n",
            self.ratio() * 100.0,
            delta_ms(self.p50_delta_us()),
            delta_ms(dp99),
        );
        let per_round: Vec<String> = self
            .ratios()
            .iter()
            .map(|r| format!("{:.1} %", r * 100.0))
            .collect();
        s += &format!(
            "Rounds: {}; proxied/direct per round: {}.",
            d.len(),
            per_round.join(", ")
        );
        if errors > 0 {
            s += &format!(" **{errors} failed requests (errors or non-2xx) — see stderr.**");
        }
        s + "\n\n"
    }
}

pub fn ms(us: f64) -> String {
    let v = us / 1000.0;
    if v.abs() < 10.0 {
        format!("{v:.3} ms")
    } else {
        format!("{v:.1} ms")
    }
}

pub fn delta_ms(us: f64) -> String {
    let s = ms(us);
    if us >= 0.0 { format!("+{s}") } else { s }
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// One row of the slow-streams table.
pub struct HeldRow {
    pub who: &'static str,
    pub streams: usize,
    pub opened: usize,
    pub idle: u64,
    pub held: u64,
    pub after: u64,
    pub open_secs: f64,
}

pub fn held_table(title: &str, rows: &[HeldRow]) -> String {
    let mut s = format!("### {title}\n\n");
    s += "| | streams open | idle RSS | RSS with streams | per stream | RSS after close | time to open all |\n";
    s += "|---|---:|---:|---:|---:|---:|---:|\n";
    for r in rows {
        let per = r.held.saturating_sub(r.idle) as f64 / r.streams.max(1) as f64 / 1024.0;
        s += &format!(
            "| {} | {} | {} | {} | **{per:.1} KiB** | {} | {:.2} s |\n",
            r.who,
            fmt_int(r.opened as f64),
            mib(r.idle),
            mib(r.held),
            mib(r.after),
            r.open_secs,
        );
    }
    s + "\n"
}

/// A performance target the benchmark checks its measurements against: recorded, not asserted.
pub struct Target {
    pub what: &'static str,
    pub measured: String,
    pub met: Option<bool>,
}

pub fn targets_table(targets: &[Target]) -> String {
    let mut s = String::from("### Targets (recorded, not asserted)\n\n");
    s += "| target | measured | |\n|---|---:|---|\n";
    for t in targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "recorded",
        };
        s += &format!("| {} | {} | {verdict} |\n", t.what, t.measured);
    }
    s + "\n"
}
