//! gemini-balance: a pool of Google Gemini API keys behind one endpoint.
//!
//! `main` only parses the command line, loads and checks the config, builds the shared
//! state, binds, and hands over to [`server::serve`] until a signal asks it to stop.

mod admin;
mod app;
mod body;
mod checker;
mod cli;
mod config;
mod error;
mod events;
mod keys;
mod limits;
mod logs;
mod metrics;
mod offline;
mod proxy;
mod router;
mod secret;
mod server;
mod stats;
mod store;
mod ui;
mod upstream;
mod usage;
mod users;

#[cfg(test)]
mod fuzz_tests;

pub use app::AppState;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command};
use config::Config;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gemini-balance: {e:#}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
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
            init_logging(&config.log_level);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match runtime.block_on(serve(config)) {
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
    println!("{}", admin::auth::hash_password(password)?);
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

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let (state, background) = AppState::build(config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!("listening on {addr}");
    let stop = CancellationToken::new();
    let revalidate = tokio::spawn(checker::revalidate_loop(state.clone(), stop.clone()));
    tokio::spawn(signals(stop.clone()));
    tokio::spawn(app::sync_from_store(state.clone()));
    let logs_cfg = &state.config.logs;
    let retention = tokio::spawn(logs::retention_loop(
        state.store.clone(),
        logs_cfg.log_retention_days,
        logs_cfg.stats_retention_days,
        stop.clone(),
    ));
    server::serve(listener, state.clone(), stop.clone()).await;
    stop.cancel();
    let _ = revalidate.await;
    let _ = retention.await;
    state.persister.sync().await;
    background.persist.abort();
    // The log writer drains its queue and ends once the last sink (in the state) is gone.
    let logs = background.logs;
    drop(state);
    if tokio::time::timeout(std::time::Duration::from_secs(5), logs)
        .await
        .is_err()
    {
        tracing::warn!("the request log did not finish writing in time");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn signals(stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    stop.cancel();
}
