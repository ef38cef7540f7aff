//! HTTPS for clients from certificate files: `[tls] cert_file` (PEM, the chain with the
//! leaf first) and `key_file` (PKCS#8, PKCS#1 RSA or SEC1 EC; RSA, ECDSA and Ed25519), TLS
//! 1.2 and 1.3 only, ALPN `h2` and `http/1.1`. The pair is checked when read: readable,
//! key matching the certificate, the leaf not expired. It is read again when either file
//! changes (looked at every `tls.watch_interval`) and on SIGHUP; a new pair serves new
//! handshakes while open connections keep theirs, and a bad one is logged and ignored, so
//! the last good certificate stays.

use crate::config::TlsConfig;
use anyhow::{Context, bail};
use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The certificate every new handshake gets, swapped whole when the files change.
#[derive(Debug)]
pub struct Certs {
    current: ArcSwap<CertifiedKey>,
    /// When the current leaf expires (Unix seconds), for `/healthz` and `/metrics`.
    not_after: std::sync::atomic::AtomicI64,
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl Certs {
    /// Seconds until the served certificate expires.
    pub fn seconds_left(&self, now: SystemTime) -> i64 {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.not_after.load(std::sync::atomic::Ordering::Relaxed) - now
    }

    fn swap(&self, (key, not_after): (CertifiedKey, i64)) {
        self.current.store(Arc::new(key));
        self.not_after
            .store(not_after, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The listener side: the acceptor and the certificates behind it.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    pub certs: Arc<Certs>,
    cfg: TlsConfig,
}

impl Tls {
    /// Reads and checks the pair; the error says which file and why.
    pub fn load(cfg: &TlsConfig) -> anyhow::Result<Tls> {
        let (key, not_after) = read_pair(&cfg.cert_file, &cfg.key_file, SystemTime::now())?;
        let certs = Arc::new(Certs {
            current: ArcSwap::from_pointee(key),
            not_after: not_after.into(),
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("TLS 1.2 and 1.3")?
            .with_no_client_auth()
            .with_cert_resolver(certs.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certs,
            cfg: cfg.clone(),
        })
    }

    /// Reads the files again; a bad pair leaves the served one in place.
    pub fn reload(&self, why: &str) {
        match read_pair(&self.cfg.cert_file, &self.cfg.key_file, SystemTime::now()) {
            Ok(pair) => {
                self.certs.swap(pair);
                tracing::info!(
                    why,
                    days_left = self.certs.seconds_left(SystemTime::now()) / 86_400,
                    "TLS certificate loaded"
                );
            }
            Err(e) => tracing::error!(
                why,
                "TLS certificate not reloaded, the old one stays: {e:#}"
            ),
        }
    }

    /// Reloads when either file's modification time or size changes, until `stop`.
    pub async fn watch(self, stop: CancellationToken) {
        let stamp = |p: &Path| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().ok(), m.len()))
        };
        let files = |t: &Tls| (stamp(&t.cfg.cert_file), stamp(&t.cfg.key_file));
        let mut seen = files(&self);
        let mut tick = tokio::time::interval(self.cfg.watch_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = files(&self);
            if now != seen {
                seen = now;
                self.reload("the certificate files changed");
            }
        }
    }
}

/// The certified key of a cert/key file pair and the leaf's expiry (Unix seconds).
fn read_pair(cert: &Path, key: &Path, now: SystemTime) -> anyhow::Result<(CertifiedKey, i64)> {
    let chain = crate::pem::certificates(cert)?;
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("{}: no usable private key ({e})", key.display()))?;
    let signer = any_supported_type(&der)
        .map_err(|e| anyhow::anyhow!("{}: unsupported private key ({e})", key.display()))?;
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).map_err(|e| {
        anyhow::anyhow!(
            "{}: the first certificate cannot be read ({e})",
            cert.display()
        )
    })?;
    let validity = leaf.validity();
    let not_after = validity.not_after.timestamp();
    let now_s = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if not_after <= now_s {
        bail!(
            "{}: the certificate expired on {}",
            cert.display(),
            validity.not_after
        );
    }
    if validity.not_before.timestamp() > now_s {
        bail!(
            "{}: the certificate is not valid before {}",
            cert.display(),
            validity.not_before
        );
    }
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| {
        anyhow::anyhow!(
            "{} does not belong to the certificate in {} ({e})",
            key.display(),
            cert.display()
        )
    })?;
    Ok((certified, not_after))
}

#[cfg(test)]
mod tests {
    use super::read_pair;
    use std::path::{Path, PathBuf};
    use std::time::{Duration, SystemTime};

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(name)
    }

    #[test]
    fn a_good_pair_loads_and_says_when_it_expires() {
        let (_, not_after) = read_pair(
            &fixture("server.pem"),
            &fixture("server.key"),
            SystemTime::now(),
        )
        .unwrap();
        let year = 365 * 86_400;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            not_after > now + 50 * year,
            "a 100-year test certificate: {not_after}"
        );
    }

    #[test]
    fn bad_pairs_are_refused_with_the_file_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.key");
        std::fs::write(&garbage, "not a key").unwrap();
        let far = SystemTime::now() + Duration::from_secs(200 * 365 * 86_400);
        let cases: [(PathBuf, PathBuf, SystemTime, &str); 4] = [
            (
                fixture("server.pem"),
                fixture("other.key"),
                SystemTime::now(),
                "does not belong",
            ),
            (
                fixture("server.pem"),
                garbage.clone(),
                SystemTime::now(),
                "no usable private key",
            ),
            (fixture("server.pem"), fixture("server.key"), far, "expired"),
            (
                dir.path().join("missing.pem"),
                fixture("server.key"),
                SystemTime::now(),
                "missing.pem",
            ),
        ];
        for (cert, key, now, why) in cases {
            let e = format!("{:#}", read_pair(&cert, &key, now).unwrap_err());
            assert!(e.contains(why), "{}: {e}", key.display());
        }
    }
}
