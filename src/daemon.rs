//! Running the gateway: bind the listeners, start and own the background tasks, serve
//! until SIGTERM/SIGINT, then drain, flush and close in order. SIGHUP re-reads the config
//! and applies what is safe to change live (the log level); everything else needs a
//! restart, and the log says so.

use crate::config::Config;
use crate::server::{self, Role};
use crate::{AppState, app, checker, logs};
use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

pub type LogReload = reload::Handle<EnvFilter, Registry>;
pub type Reconfigure = Box<dyn Fn() -> anyhow::Result<Config> + Send>;

fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Structured logs to stderr (journald), with a level that SIGHUP can change.
pub fn init_logging(level: &str) -> LogReload {
    let (layer, handle) = reload::Layer::new(filter(level));
    tracing_subscriber::registry()
        .with(layer)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .init();
    handle
}

async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!("{what} {}", listener.local_addr()?);
    Ok(listener)
}

pub async fn run(
    config: Config,
    reload: LogReload,
    reconfigure: Reconfigure,
) -> anyhow::Result<()> {
    let (listen, admin_listen) = (config.listen, config.admin_listen);
    let (state, background) = AppState::build(config).await?;
    let listener = bind(listen, "listening on").await?;
    let admin = match admin_listen {
        Some(addr) => Some(bind(addr, "admin API on").await?),
        None => None,
    };
    let stop = CancellationToken::new();
    let revalidate = tokio::spawn(checker::revalidate_loop(state.clone(), stop.clone()));
    tokio::spawn(signals(stop.clone(), reload, reconfigure));
    tokio::spawn(app::sync_from_store(state.clone()));
    let logs_cfg = &state.config.logs;
    let retention = tokio::spawn(logs::retention_loop(
        state.store.clone(),
        logs_cfg.log_retention_days,
        logs_cfg.stats_retention_days,
        stop.clone(),
    ));
    match admin {
        Some(admin) => {
            let admin_task = tokio::spawn(server::serve(
                admin,
                state.clone(),
                Role::Admin,
                stop.clone(),
            ));
            server::serve(listener, state.clone(), Role::Proxy, stop.clone()).await;
            let _ = admin_task.await;
        }
        None => server::serve(listener, state.clone(), Role::All, stop.clone()).await,
    }
    stop.cancel();
    let _ = revalidate.await;
    let _ = retention.await;
    state.persister.sync().await;
    background.persist.abort();
    // The log writer drains its queue and ends once the last sink (in the state) is gone.
    let log_writer = background.logs;
    drop(state);
    let flushed = tokio::time::timeout(std::time::Duration::from_secs(5), log_writer).await;
    if flushed.is_err() {
        tracing::warn!("the request log did not finish writing in time");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn signals(stop: CancellationToken, reload: LogReload, reconfigure: Reconfigure) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = hup.recv() => match reconfigure() {
                Ok(config) => {
                    let applied = reload.reload(filter(&config.log_level));
                    match applied {
                        Ok(()) => tracing::info!(level = %config.log_level, "SIGHUP: log level reloaded; other settings apply at the next restart"),
                        Err(e) => tracing::warn!(error = %e, "SIGHUP: the log level could not be changed"),
                    }
                }
                Err(e) => tracing::warn!("SIGHUP: the config has problems, nothing changed: {e:#}"),
            },
        }
    }
    stop.cancel();
}
