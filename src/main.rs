//! gemini-balance: a pool of Google Gemini API keys behind one endpoint.
//!
//! `main` only parses the command line, loads and checks the config, builds the shared
//! state, binds, and hands over to [`server::serve`] until a signal asks it to stop.

mod admin;
mod affinity;
mod app;
mod auth;
mod body;
mod boxerror;
mod checker;
mod cli;
mod client_addr;
mod config;
mod daemon;
mod error;
mod events;
mod gate;
mod keys;
mod limits;
mod live;
mod login_gate;
mod logs;
mod metrics;
mod native;
mod offline;
mod pem;
mod proxy;
mod record;
mod refs;
mod relay;
mod router;
mod secret;
mod server;
mod spread;
mod stats;
mod store;
mod tls;
mod ui;
mod upstream;
mod usage;
mod users;

#[cfg(test)]
mod fuzz_tests;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command};
use config::Config;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let config = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gemini-balance: {e:#}");
            return ExitCode::from(2);
        }
    };
    match cli.command.take() {
        Some(Command::CheckConfig) => {
            println!(
                "config OK: listen {}, data dir {}, {} upstream key(s), {} user(s) declared",
                config.listen,
                config.data_dir.display(),
                config.upstream_keys.len(),
                config.users.len()
            );
            ExitCode::SUCCESS
        }
        Some(Command::HashPassword) => run_offline(hash_password()),
        Some(Command::Keys { action }) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            run_offline(runtime.block_on(offline::keys(&config, action)))
        }
        Some(Command::Migrate { from, to }) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            run_offline(runtime.block_on(offline::migrate(&config, &from, &to)))
        }
        Some(Command::Serve) | None => {
            let reload = daemon::init_logging(&config.log_level);
            for warning in &config.warnings {
                tracing::warn!("{warning}");
            }
            // Background work (log and state writers, checks, the admin listener) runs here;
            // connections are served by the daemon's own per-core threads.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("tokio runtime");
            let reconfigure = move || load_config(&cli);
            match runtime.block_on(daemon::run(config, reload, Box::new(reconfigure))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("gemini-balance: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run_offline(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gemini-balance: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn hash_password() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(!password.is_empty(), "the password is empty");
    println!("{}", auth::hash_password(password)?);
    Ok(())
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let Some(dir) = &cli.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(store) = &cli.store {
        config.store = Some(secret::Secret::new(store.clone()));
    }
    if let Some(level) = &cli.log_level {
        config.log_level = level.clone();
    }
    config.validate()?;
    Ok(config)
}
