//! Running the gateway: bind the listeners, start and own the background tasks, serve
//! until SIGTERM/SIGINT, then drain, flush and close in order. SIGHUP re-reads the config
//! and applies what is safe to change live (the log level); everything else needs a
//! restart, and the log says so.

use crate::app::AppState;
use crate::app::Background;
use crate::config::Config;
use crate::gate::Gate;
use crate::server::{self, Role};
use crate::{app, checker, logs};
use anyhow::Context;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
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

fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    listener.set_nonblocking(true)?;
    tracing::info!("{what} {}", listener.local_addr()?);
    Ok(listener)
}

/// Starts serving thread `n` (1-based): its own single-threaded event loop accepting on
/// `listener` (shared with the other serving threads) and, through the lane it serves,
/// its own upstream connections, so a request never changes threads. The receiver fires
/// when the thread has drained.
fn spawn_worker(
    n: usize,
    listener: &std::net::TcpListener,
    state: Arc<AppState>,
    role: Role,
    gate: Arc<Gate>,
    stop: CancellationToken,
) -> anyhow::Result<oneshot::Receiver<()>> {
    let listener = listener.try_clone().context("sharing the listener")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a serving thread")?;
    let (done, drained) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("serve-{n}"))
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(l) => server::serve(l, state, role, gate, stop, Some(n - 1)).await,
                    Err(e) => tracing::error!(error = %e, "serving thread could not listen"),
                }
            });
            // Connections still open after the grace period end with the runtime; the
            // records they leave go to the writer with the rest of this thread's, when the
            // last of them lets go of the thread's log lane.
            drop(runtime);
            let _ = done.send(());
        })
        .context("starting a serving thread")?;
    Ok(drained)
}

pub async fn run(
    config: Config,
    reload: LogReload,
    reconfigure: Reconfigure,
) -> anyhow::Result<()> {
    let (listen, admin_listen) = (config.listen, config.admin_listen);
    let (state, background) = AppState::build(config).await?;
    // Logged before `listening on`, which tells a watcher that every listener is up.
    let redirect = match state.config.tls.as_ref().and_then(|t| t.redirect_listen) {
        Some(addr) => Some(bind(addr, "redirecting to HTTPS on")?),
        None => None,
    };
    let listener = bind(listen, "listening on")?;
    let admin = match admin_listen {
        Some(addr) => Some(TcpListener::from_std(bind(addr, "admin API on")?)?),
        None => None,
    };
    let stop = CancellationToken::new();
    let redirect = match (redirect, state.tls.clone()) {
        (Some(l), Some(tls)) => Some(tokio::spawn(crate::tls::redirect::serve(
            TcpListener::from_std(l)?,
            tls,
            listener.local_addr()?.port(),
            stop.clone(),
        ))),
        _ => None,
    };
    let tasks = Tasks::start(&state, redirect, reload, reconfigure, &stop);
    let cfg = &state.config.server;
    let gate = Gate::new(cfg.max_connections, cfg.max_connections_per_ip);
    let role = if admin.is_some() {
        Role::Proxy
    } else {
        Role::All
    };
    let drained = spawn_workers(&listener, &state, role, &gate, &stop)?;
    drop(listener);
    if let Some(admin) = admin {
        server::serve(admin, state.clone(), Role::Admin, gate, stop.clone(), None).await;
    }
    for rx in drained {
        let _ = rx.await;
    }
    stop.cancel();
    tasks.join().await;
    flush(state, background).await;
    tracing::info!("stopped");
    Ok(())
}

/// The background tasks that shutdown waits for (the others end with the runtime).
struct Tasks {
    revalidate: JoinHandle<()>,
    retention: JoinHandle<()>,
    prune: JoinHandle<()>,
    redirect: Option<JoinHandle<()>>,
}

impl Tasks {
    /// Starts the tasks beside the serving threads, each ending when `stop` fires.
    fn start(
        state: &Arc<AppState>,
        redirect: Option<JoinHandle<()>>,
        reload: LogReload,
        reconfigure: Reconfigure,
        stop: &CancellationToken,
    ) -> Self {
        let revalidate = tokio::spawn(checker::revalidate_loop(state.clone(), stop.clone()));
        tokio::spawn(signals(
            stop.clone(),
            reload,
            reconfigure,
            state.tls.clone(),
        ));
        if let Some(tls) = state.tls.clone() {
            tokio::spawn(tls.watch(stop.clone()));
        }
        tokio::spawn(app::sync_from_store(state.clone()));
        let logs_cfg = &state.config.logs;
        let retention = tokio::spawn(logs::retention_loop(
            state.store.clone(),
            logs_cfg.log_retention_days,
            logs_cfg.stats_retention_days,
            stop.clone(),
        ));
        let prune = tokio::spawn(crate::affinity::prune_loop(
            state.store.clone(),
            stop.clone(),
        ));
        Self {
            revalidate,
            retention,
            prune,
            redirect,
        }
    }

    async fn join(self) {
        let _ = self.revalidate.await;
        let _ = self.retention.await;
        let _ = self.prune.await;
        if let Some(r) = self.redirect {
            let _ = r.await;
        }
    }
}

/// Starts the serving threads; when one cannot start, stops those that did.
fn spawn_workers(
    listener: &std::net::TcpListener,
    state: &Arc<AppState>,
    role: Role,
    gate: &Arc<Gate>,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<oneshot::Receiver<()>>> {
    let workers = state.config.server.worker_count();
    let mut drained = Vec::with_capacity(workers);
    for n in 1..=workers {
        let w = spawn_worker(n, listener, state.clone(), role, gate.clone(), stop.clone());
        match w {
            Ok(rx) => drained.push(rx),
            Err(e) => {
                stop.cancel();
                return Err(e);
            }
        }
    }
    tracing::debug!(workers, "serving threads started");
    Ok(drained)
}

/// Writes out what is left once serving is over: the pool's changes, then the request
/// log, under a deadline.
async fn flush(state: Arc<AppState>, background: Background) {
    state.persister.sync().await;
    background.persist.abort();
    // The log writer drains its queue and ends once the last sink (in the state) is gone.
    let log_writer = background.logs;
    drop(state);
    let flushed = tokio::time::timeout(std::time::Duration::from_secs(5), log_writer).await;
    if flushed.is_err() {
        tracing::warn!("the request log did not finish writing in time");
    }
}

async fn signals(
    stop: CancellationToken,
    reload: LogReload,
    reconfigure: Reconfigure,
    tls: Option<crate::tls::Tls>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = hup.recv() => {
                if let Some(tls) = &tls {
                    tls.reload("SIGHUP");
                }
                match reconfigure() {
                Ok(config) => {
                    let applied = reload.reload(filter(&config.log_level));
                    match applied {
                        Ok(()) => tracing::info!(level = %config.log_level, "SIGHUP: log level reloaded; other settings apply at the next restart"),
                        Err(e) => tracing::warn!(error = %e, "SIGHUP: the log level could not be changed"),
                    }
                }
                Err(e) => tracing::warn!("SIGHUP: the config has problems, nothing changed: {e:#}"),
                }
            }
        }
    }
    stop.cancel();
}
