//! HTTPS for clients: TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`, the certificate
//! from files (`files`: `[tls] cert_file`, `key_file`, re-read when they change and on
//! SIGHUP) or from an ACME CA (`acme`: `[tls.acme]`, kept in the store and renewed). A new
//! certificate serves new handshakes while open connections keep theirs.
//!
//! `ca_client` is the HTTPS client to the ACME server. `challenge` holds the answers to
//! the CA's checks while an order waits for them (a TLS-ALPN-01 certificate served here,
//! an HTTP-01 token served by `redirect`, the plain listener that otherwise only
//! redirects to HTTPS). Nothing here routes requests.

mod acme;
mod ca_client;
mod challenge;
mod files;
pub mod redirect;

use crate::config::{Challenge, TlsConfig};
use crate::store::Store;
use anyhow::Context;
use arc_swap::ArcSwapOption;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::SystemTime;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub use challenge::Challenges;

/// The ALPN protocol of TLS-ALPN-01 validation handshakes (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The certificate every new handshake gets, swapped whole when a new one arrives.
#[derive(Debug)]
pub struct Certs {
    /// None only while the first ACME certificate is on its way.
    current: ArcSwapOption<CertifiedKey>,
    /// When the current leaf expires (Unix seconds), for `/healthz` and `/metrics`.
    not_after: AtomicI64,
    pub challenges: Challenges,
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut alpn = hello.alpn().into_iter().flatten();
        // A validation handshake offers acme-tls/1 and nothing else.
        if alpn.next() == Some(ACME_TLS_ALPN) && alpn.next().is_none() {
            return self.challenges.alpn_cert(hello.server_name()?);
        }
        self.current.load_full()
    }
}

impl Certs {
    fn new() -> Certs {
        Certs {
            current: ArcSwapOption::empty(),
            not_after: AtomicI64::new(0),
            challenges: Challenges::default(),
        }
    }

    /// Seconds until the served certificate expires; None before there is one.
    pub fn seconds_left(&self, now: SystemTime) -> Option<i64> {
        self.current.load().as_ref()?;
        Some(self.not_after.load(Ordering::Relaxed) - unix(now))
    }

    /// Whole days until the served certificate expires (`/healthz`, `/metrics`).
    pub fn days_left(&self, now: SystemTime) -> Option<i64> {
        self.seconds_left(now).map(|s| s.div_euclid(86_400))
    }

    fn swap(&self, (key, not_after): (CertifiedKey, i64)) {
        self.current.store(Some(Arc::new(key)));
        self.not_after.store(not_after, Ordering::Relaxed);
    }

    fn not_after(&self) -> Option<i64> {
        self.current.load().as_ref()?;
        Some(self.not_after.load(Ordering::Relaxed))
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// True for a connection that negotiated `acme-tls/1`: a CA's TLS-ALPN-01 check, which
/// ends with the handshake and is never served HTTP.
pub fn is_challenge<IO>(stream: &tokio_rustls::server::TlsStream<IO>) -> bool {
    stream.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN)
}

/// Where the certificate comes from.
#[derive(Clone)]
enum Source {
    Files(Arc<TlsConfig>),
    Acme(Arc<acme::Acme>),
}

/// The listener side: the acceptor and the certificates behind it.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    pub certs: Arc<Certs>,
    source: Source,
}

impl Tls {
    /// Reads and checks the certificate files, or the ACME certificate kept in `store`
    /// (none yet is no error: it is ordered once serving). Errors say which file and why.
    pub async fn start(cfg: &TlsConfig, store: &Store) -> anyhow::Result<Tls> {
        let certs = Arc::new(Certs::new());
        let mut alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let source = match &cfg.acme {
            None => {
                certs.swap(files::read(cfg, SystemTime::now())?);
                Source::Files(Arc::new(cfg.clone()))
            }
            Some(acme_cfg) => {
                if acme_cfg.challenge == Challenge::TlsAlpn01 {
                    alpn.push(ACME_TLS_ALPN.to_vec());
                }
                let acme = acme::Acme::new(acme_cfg, store.clone(), certs.clone())?;
                acme.load_stored(SystemTime::now()).await;
                Source::Acme(Arc::new(acme))
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("TLS 1.2 and 1.3")?
            .with_no_client_auth()
            .with_cert_resolver(certs.clone());
        config.alpn_protocols = alpn;
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certs,
            source,
        })
    }

    /// Certificate files: reads them again; a bad pair leaves the served one in place.
    /// ACME: looks at the store and orders if due, at once rather than at the next look
    /// or retry.
    pub fn reload(&self, why: &str) {
        match &self.source {
            Source::Files(cfg) => files::reload(cfg, &self.certs, why),
            Source::Acme(acme) => {
                tracing::info!(why, "ACME: looking at the certificate now");
                acme.look_now();
            }
        }
    }

    /// The answer to the HTTP-01 check `token`: this instance's, else (ACME with a
    /// shared store) the one another instance kept there.
    pub async fn http01_answer(&self, token: &str) -> Option<String> {
        if let Some(answer) = self.certs.challenges.http_answer(token) {
            return Some(answer);
        }
        match &self.source {
            Source::Acme(acme) => acme.stored_http_answer(token).await,
            Source::Files(_) => None,
        }
    }

    /// Until `stop`: certificate files are watched for changes; an ACME certificate is
    /// ordered when there is none and renewed before it expires.
    pub async fn watch(self, stop: CancellationToken) {
        match self.source {
            Source::Files(cfg) => files::watch(&cfg, self.certs, stop).await,
            Source::Acme(acme) => acme.run(stop).await,
        }
    }
}
