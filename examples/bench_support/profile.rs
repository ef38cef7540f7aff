//! What the harness reads about the machine and the daemon's profile: how busy the cores
//! were before the run (`/proc/stat`) and the top of a `perf report`. Read-only helpers.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Share of all cores busy over one second before the run (other processes on the machine).
pub fn machine_busy() -> f64 {
    let sample = || -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let idle = cpu.get(3)? + cpu.get(4).unwrap_or(&0);
        Some((cpu.iter().sum(), idle))
    };
    let Some((t0, i0)) = sample() else {
        return f64::NAN;
    };
    std::thread::sleep(Duration::from_secs(1));
    let Some((t1, i1)) = sample() else {
        return f64::NAN;
    };
    let total = t1.saturating_sub(t0).max(1) as f64;
    1.0 - i1.saturating_sub(i0) as f64 / total
}

/// The top `lines` rows of `perf report` on `data`, sorted by `sort`, by share.
pub fn top(data: &Path, sort: &str, limit: &str, lines: usize) -> anyhow::Result<String> {
    let out = Command::new("perf")
        .args([
            "report",
            "--no-children",
            "--stdio",
            "--percent-limit",
            limit,
        ])
        .args(["--sort", sort, "-F", &format!("overhead,{sort}"), "-i"])
        .arg(data)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let share = |l: &str| -> f64 {
        let pct = l.split_whitespace().next().unwrap_or("");
        pct.trim_end_matches('%').parse().unwrap_or(0.0)
    };
    let mut rows: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    rows.sort_by(|a, b| share(b).total_cmp(&share(a)));
    rows.truncate(lines);
    Ok(rows.join("\n"))
}
