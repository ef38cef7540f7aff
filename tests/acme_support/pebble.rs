//! Debian's `pebble` (Let's Encrypt's test ACME server) for one test, on loopback with
//! nothing fixed: it serves its directory with the test-only certificate of
//! `tests/fixtures/tls` and listens on port 0 for both its ACME and its management API.
//! Pebble logs the configured address, not the bound one, so the ports it bound are read
//! from the kernel's socket table for its pid (`/proc/PID/net/tcp` rows whose inodes are
//! among `/proc/PID/fd`), and told apart by asking each for `/dir`.
//!
//! Pebble validates a challenge by connecting to the domain (`localhost`) at the ports of
//! its config, written before the daemon runs; so the test owns two relay listeners (port
//! 0, in this process) whose ports go into the config, and forwards them to the daemon's
//! HTTPS and plain listeners once it knows their addresses — as a VPS's port forwarding
//! from 443 and 80 would.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// A port the test listens on, forwarding each connection to wherever `point` says.
pub struct Relay {
    pub port: u16,
    target: watch::Sender<Option<SocketAddr>>,
}

impl Relay {
    pub async fn start() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (target, rx) = watch::channel(None);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    let Ok(to) = rx.wait_for(Option::is_some).await.map(|t| t.unwrap()) else {
                        return;
                    };
                    if let Ok(mut out) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        Relay { port, target }
    }

    /// Forwards new connections to `to`.
    pub fn point(&self, to: SocketAddr) {
        self.target.send_replace(Some(to));
    }
}

pub struct Pebble {
    child: Child,
    _dir: tempfile::TempDir,
    pub acme: SocketAddr,
    pub management: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Pebble {
    /// Starts pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`.
    pub async fn start(http_port: u16, tls_port: u16) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let config = serde_json::json!({"pebble": {
            "listenAddress": "127.0.0.1:0",
            "managementListenAddress": "127.0.0.1:0",
            "certificate": fixture("server.pem"),
            "privateKey": fixture("server.key"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        let path = dir.path().join("pebble.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let mut child = Command::new("pebble")
            .arg("-config")
            .arg(&path)
            // No random sleeps before validating, no nonces refused on purpose, no
            // authorisations reused: every order is checked, quickly, the same way.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pebble (apt install pebble)");
        let logs = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let pid = child.id();
        let mut p = Pebble {
            child,
            _dir: dir,
            acme: "127.0.0.1:0".parse().unwrap(),
            management: "127.0.0.1:0".parse().unwrap(),
            logs,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((acme, management)) = api_addrs(pid).await {
                (p.acme, p.management) = (acme, management);
                return p;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "pebble did not come up:\n{}",
                p.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn directory_url(&self) -> String {
        format!("https://{}/dir", self.acme)
    }

    /// The root that issued the daemon's certificate, as PEM.
    pub async fn root(&self) -> String {
        let (status, pem) = get(&format!("https://{}/roots/0", self.management))
            .await
            .expect("pebble's root");
        assert_eq!(status, 200, "{pem}");
        pem
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// How many orders pebble was asked for.
    pub fn orders(&self) -> usize {
        self.logs()
            .iter()
            .filter(|l| l.contains("POST /order-plz"))
            .count()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- pebble log ----\n{}", self.logs().join("\n"));
        }
    }
}

/// Pebble's ACME and management addresses, once both listen and the ACME one answers.
async fn api_addrs(pid: u32) -> Option<(SocketAddr, SocketAddr)> {
    let addrs: Vec<SocketAddr> = listening_ports(pid)
        .into_iter()
        .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
        .collect();
    let [a, b] = addrs[..] else {
        return None;
    };
    for (acme, management) in [(a, b), (b, a)] {
        if let Some((200, body)) = get(&format!("https://{acme}/dir")).await {
            if body.contains("newOrder") {
                return Some((acme, management));
            }
        }
    }
    None
}

/// Ports the process `pid` listens on over IPv4.
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_str()?;
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    let mut ports: Vec<u16> = table
        .lines()
        .skip(1)
        .filter_map(|row| {
            let f: Vec<&str> = row.split_whitespace().collect();
            // local_address is f[1] ("0100007F:9C41"), state f[3] (0A: LISTEN), inode f[9].
            let listening = f.get(3) == Some(&"0A") && inodes.contains(*f.get(9)?);
            let port = f.get(1)?.rsplit(':').next()?;
            listening.then(|| u16::from_str_radix(port, 16).ok())?
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// `GET url` trusting the test CA pebble's own HTTPS uses; None when it cannot connect.
async fn get(url: &str) -> Option<(u16, String)> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(fixture("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let req = http::Request::get(url).body(Full::default()).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .ok()?
        .ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}
