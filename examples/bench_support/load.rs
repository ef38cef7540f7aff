//! Load generation: one `wrk` run (with `bench/wrk.lua` for the POST body, a header and a
//! machine-readable summary line), and the slow-streams client that holds many streams open
//! through hyper. It measures only what the client sees; process accounting is `procs`'.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

pub const WRK_LUA: &str = include_str!("../../bench/wrk.lua");

/// One request shape: what wrk sends.
#[derive(Clone, Debug)]
pub struct Shot {
    pub path: String,
    pub body: &'static str,
    /// `name: value`
    pub header: String,
}

/// What one wrk run measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct WrkResult {
    pub requests: u64,
    pub seconds: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Connect, read, write, timeout errors and non-2xx/3xx answers.
    pub errors: u64,
}

impl WrkResult {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }
}

pub fn wrk_version() -> Option<String> {
    let out = Command::new("wrk").arg("-v").output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines().next().map(|l| l.trim().to_owned())
}

pub fn wrk(
    script: &Path,
    addr: SocketAddr,
    shot: &Shot,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<WrkResult> {
    wrk_at(
        script,
        &format!("http://{addr}"),
        shot,
        connections,
        seconds,
    )
}

/// [`wrk`] against `base` (`http://ADDR` or `https://ADDR`).
pub fn wrk_at(
    script: &Path,
    base: &str,
    shot: &Shot,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<WrkResult> {
    let threads = connections.clamp(1, 2);
    let url = format!("{base}{}", shot.path);
    let out = Command::new("wrk")
        .args(["-t", &threads.to_string(), "-c", &connections.to_string()])
        .args(["-d", &format!("{seconds}s"), "--timeout", "10s", "-s"])
        .arg(script)
        .arg(&url)
        .env("BENCH_BODY", shot.body)
        .env("BENCH_HEADER", &shot.header)
        .output()
        .context("running wrk (apt-get install -y wrk)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(line) = stdout.lines().find(|l| l.starts_with("BENCH ")) else {
        bail!(
            "wrk gave no summary for {url}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let field = |name: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let errors = ["connect", "read", "write", "status", "timeout"]
        .iter()
        .map(|e| field(&format!("errors_{e}")) as u64)
        .sum();
    Ok(WrkResult {
        requests: field("requests") as u64,
        seconds: field("duration_us") / 1e6,
        p50_us: field("p50_us"),
        p99_us: field("p99_us"),
        errors,
    })
}

/// What holding `n` streams open looked like from the client.
pub struct Held {
    /// From the first connect until every stream had its first event.
    pub open_time: Duration,
    /// Streams that got a first event.
    pub opened: usize,
}

/// Opens `n` streaming requests to `addr` at `path`, each on its own connection, waits until
/// all got their first event, calls `measure` while they are held, then closes them all.
pub fn hold_streams<T>(
    addr: SocketAddr,
    path: &str,
    header: (&'static str, String),
    n: usize,
    measure: impl FnOnce() -> T,
) -> anyhow::Result<(Held, T)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    let opened = Arc::new(AtomicUsize::new(0));
    let (release, released) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<anyhow::Result<()>>(n);
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    for _ in 0..n {
        let path = path.to_owned();
        let header = header.clone();
        let (opened, done_tx, gate) = (opened.clone(), done_tx.clone(), gate.clone());
        let mut released = released.clone();
        runtime.spawn(async move {
            let permit = gate.acquire_owned().await;
            let held = open_one(addr, &path, header).await;
            drop(permit);
            match held {
                Ok(stream) => {
                    opened.fetch_add(1, Ordering::Relaxed);
                    let _ = done_tx.send(Ok(())).await;
                    let _ = released.wait_for(|r| *r).await;
                    drop(stream);
                }
                Err(e) => {
                    let _ = done_tx.send(Err(e)).await;
                }
            }
        });
    }
    drop(done_tx);
    let waited = runtime.block_on(async {
        let mut first_error = None;
        for _ in 0..n {
            match tokio::time::timeout(Duration::from_secs(60), done_rx.recv()).await {
                Ok(Some(Ok(()))) => {}
                Ok(Some(Err(e))) => {
                    first_error.get_or_insert(e);
                }
                Ok(None) | Err(_) => break,
            }
        }
        first_error
    });
    let open_time = started.elapsed();
    if let Some(e) = waited {
        eprintln!("  warning: not every stream opened: {e:#}");
    }
    let value = measure();
    let _ = release.send(true);
    runtime.shutdown_timeout(Duration::from_secs(5));
    let opened = opened.load(Ordering::Relaxed);
    Ok((Held { open_time, opened }, value))
}

/// A stream that has delivered its first event; dropping it closes the connection.
struct OpenStream {
    body: hyper::body::Incoming,
    conn: tokio::task::JoinHandle<()>,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

async fn open_one(
    addr: SocketAddr,
    path: &str,
    (name, value): (&'static str, String),
) -> anyhow::Result<OpenStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::post(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header(name, value)
        .body(Full::new(Bytes::from_static(
            crate::cases::GENERATE_BODY.as_bytes(),
        )))?;
    let resp = send.send_request(req).await?;
    if !resp.status().is_success() {
        bail!("status {}", resp.status());
    }
    let mut body = resp.into_body();
    loop {
        match body.frame().await {
            Some(Ok(f)) if f.data_ref().is_some_and(|d| !d.is_empty()) => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("the stream ended before its first event"),
        }
    }
    Ok(OpenStream { body, conn })
}

/// What `n` streams read to their end looked like from the client.
pub struct Streams {
    /// Time to the first event of each stream that got one (connect → first data), µs.
    pub ttfb_us: Vec<f64>,
    /// Streams that ended cleanly after their first event.
    pub completed: usize,
    /// From the first connect until every stream had its first event.
    pub open_time: Duration,
}

/// Opens `n` streaming requests to `addr` at `path`, each on its own connection (at most
/// 64 being opened at a time), calls `measure` once every stream has its first event (so
/// all are held at once), and reads every stream to its end.
pub fn read_streams<T>(
    addr: SocketAddr,
    path: &str,
    header: (&'static str, String),
    n: usize,
    measure: impl FnOnce() -> T,
) -> anyhow::Result<(Streams, T)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    let (first_tx, mut first_rx) = tokio::sync::mpsc::channel::<Option<f64>>(n);
    let (end_tx, mut end_rx) = tokio::sync::mpsc::channel::<bool>(n);
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    for _ in 0..n {
        let (path, header) = (path.to_owned(), header.clone());
        let (first_tx, end_tx, gate) = (first_tx.clone(), end_tx.clone(), gate.clone());
        runtime.spawn(async move {
            let permit = gate.acquire_owned().await;
            let sent = Instant::now();
            let opened = open_one(addr, &path, header).await;
            drop(permit);
            let Ok(mut stream) = opened else {
                let _ = first_tx.send(None).await;
                let _ = end_tx.send(false).await;
                return;
            };
            let _ = first_tx
                .send(Some(sent.elapsed().as_secs_f64() * 1e6))
                .await;
            let ended = loop {
                match stream.body.frame().await {
                    None => break true,
                    Some(Ok(_)) => {}
                    Some(Err(_)) => break false,
                }
            };
            let _ = end_tx.send(ended).await;
        });
    }
    drop((first_tx, end_tx));
    let ttfb_us = runtime.block_on(async {
        let mut ttfb = Vec::with_capacity(n);
        for _ in 0..n {
            match tokio::time::timeout(Duration::from_secs(60), first_rx.recv()).await {
                Ok(Some(Some(t))) => ttfb.push(t),
                Ok(Some(None)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        ttfb
    });
    let open_time = started.elapsed();
    let value = measure();
    let completed = runtime.block_on(async {
        let mut done = 0;
        for _ in 0..n {
            match tokio::time::timeout(Duration::from_secs(60), end_rx.recv()).await {
                Ok(Some(true)) => done += 1,
                Ok(Some(false)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        done
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    Ok((
        Streams {
            ttfb_us,
            completed,
            open_time,
        },
        value,
    ))
}
