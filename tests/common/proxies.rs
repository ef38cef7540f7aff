//! A loopback HTTP CONNECT egress proxy for the tests, on `127.0.0.1:0`. It counts the
//! tunnels it opened, notes each CONNECT target and `Proxy-Authorization` it was sent,
//! and reads the `x-goog-api-key` headers going through its tunnels (the fake upstream
//! speaks plain HTTP), so a test can say which keys went through which proxy. It can be
//! made to refuse: then it closes every connection it accepts and every open tunnel.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

#[derive(Default)]
struct Seen {
    tunnels: AtomicU64,
    refused: AtomicU64,
    refusing: AtomicBool,
    /// Wakes the open tunnels when the proxy starts refusing: they close.
    kill: Notify,
    targets: Mutex<Vec<String>>,
    auths: Mutex<Vec<String>>,
    keys: Mutex<Vec<String>>,
}

pub struct ConnectProxy {
    pub addr: std::net::SocketAddr,
    seen: Arc<Seen>,
}

impl ConnectProxy {
    pub async fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let s = seen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if s.refusing.load(Ordering::SeqCst) {
                    s.refused.fetch_add(1, Ordering::SeqCst);
                    drop(client);
                    continue;
                }
                tokio::spawn(tunnel(client, s.clone()));
            }
        });
        ConnectProxy { addr, seen }
    }

    /// `http://127.0.0.1:port`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://user:password@127.0.0.1:port`
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}", self.addr)
    }

    /// From now on closes what it accepts, and closes its open tunnels.
    pub fn refuse(&self) {
        self.seen.refusing.store(true, Ordering::SeqCst);
        self.seen.kill.notify_waiters();
    }

    /// Tunnels opened so far.
    pub fn tunnels(&self) -> u64 {
        self.seen.tunnels.load(Ordering::SeqCst)
    }

    /// Connections closed unanswered while refusing.
    pub fn refused(&self) -> u64 {
        self.seen.refused.load(Ordering::SeqCst)
    }

    /// The `host:port` of each CONNECT, in order.
    pub fn targets(&self) -> Vec<String> {
        self.seen.targets.lock().unwrap().clone()
    }

    /// The `Proxy-Authorization` values sent, in order.
    pub fn auths(&self) -> Vec<String> {
        self.seen.auths.lock().unwrap().clone()
    }

    /// The `x-goog-api-key` of every request that went through, in order.
    pub fn keys(&self) -> Vec<String> {
        self.seen.keys.lock().unwrap().clone()
    }
}

async fn tunnel(mut client: TcpStream, seen: Arc<Seen>) {
    let Some(head) = read_head(&mut client).await else {
        return;
    };
    let mut lines = head.split("\r\n");
    let mut words = lines.next().unwrap_or("").split_whitespace();
    let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
        let _ = client
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            .await;
        return;
    };
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("proxy-authorization") {
                seen.auths.lock().unwrap().push(value.trim().to_owned());
            }
        }
    }
    seen.targets.lock().unwrap().push(target.to_owned());
    let Ok(upstream) = TcpStream::connect(target).await else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return;
    };
    seen.tunnels.fetch_add(1, Ordering::SeqCst);
    let _ = client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await;
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let killed = seen.kill.notified();
    tokio::select! {
        _ = sniff(cr, uw, &seen) => {}
        _ = copy(ur, cw) => {}
        _ = killed => {}
    }
}

async fn read_head(client: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await.unwrap_or(0) == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Copies the daemon's bytes to the upstream, noting the `x-goog-api-key` header lines.
async fn sniff(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin, seen: &Seen) {
    let mut buf = [0u8; 16 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&pending[..end]).into_owned();
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("x-goog-api-key") {
                    seen.keys.lock().unwrap().push(value.trim().to_owned());
                }
            }
            pending.drain(..end + 2);
        }
        if pending.len() > 64 * 1024 {
            pending.clear();
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn copy(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin) {
    let _ = tokio::io::copy(&mut from, &mut to).await;
}
