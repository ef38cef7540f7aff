//! Soak runner: a fault-injecting fake Gemini upstream and the daemon on
//! loopback, mixed traffic for a bounded time, then the invariant checks — one well-formed
//! answer per request, one log record per request matching what the client saw, statistics
//! equal to the log, broken keys retired and healthy ones not, cool-downs honoured, slots
//! released, memory flat. Prints the figures and checks; exits non-zero if one fails.
//!
//! `cargo build --release && cargo run --release --example soak -- --seconds 300`

#[allow(dead_code)]
#[path = "../tests/common/faults.rs"]
mod faults;
#[allow(dead_code)]
#[path = "../tests/common/upstream/mod.rs"]
mod upstream;
mod soak_support {
    pub mod http;
    pub mod proc;
    pub mod run;
}

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Soak gemini-balance against a fault-injecting fake upstream on loopback")]
struct Args {
    /// How long to drive traffic.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seed for the fault and traffic generators (a run is repeatable up to timing).
    #[arg(long, default_value_t = 10)]
    seed: u64,
    /// The daemon binary (default: `gemini-balance` beside this example's target directory).
    #[arg(long)]
    daemon: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let daemon = args.daemon.unwrap_or_else(|| {
        let exe = std::env::current_exe().expect("own path");
        // target/<profile>/examples/soak → target/<profile>/gemini-balance
        exe.parent()
            .and_then(|p| p.parent())
            .map(|p| p.join("gemini-balance"))
            .expect("target directory")
    });
    if !daemon.exists() {
        eprintln!(
            "no daemon at {} (run `cargo build --release` first, or pass --daemon)",
            daemon.display()
        );
        return ExitCode::FAILURE;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let settings = soak_support::run::Settings {
        seconds: args.seconds,
        clients: args.clients,
        seed: args.seed,
        daemon,
    };
    eprintln!(
        "soak: {} s, {} clients, seed {}",
        settings.seconds, settings.clients, settings.seed
    );
    match rt.block_on(soak_support::run::run(settings)) {
        Ok(report) => {
            print!("{}", report.render());
            if report.passed() {
                println!("soak: all invariants held");
                ExitCode::SUCCESS
            } else {
                println!("soak: INVARIANTS FAILED");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("soak: {e:#}");
            ExitCode::FAILURE
        }
    }
}
