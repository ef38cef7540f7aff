//! The certificate from files: `[tls] cert_file` (PEM, the chain with the leaf first) and
//! `key_file` (PKCS#8, PKCS#1 RSA or SEC1 EC; RSA, ECDSA and Ed25519). The pair is checked
//! when read: readable, key matching the certificate, the leaf not expired. It is read
//! again when either file changes (looked at every `tls.watch_interval`) and on SIGHUP; a
//! bad one is logged and ignored, so the last good certificate stays.

use super::Certs;
use crate::config::TlsConfig;
use anyhow::{Context, bail};
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;

fn paths(cfg: &TlsConfig) -> anyhow::Result<(&Path, &Path)> {
    match (&cfg.cert_file, &cfg.key_file) {
        (Some(c), Some(k)) => Ok((c, k)),
        _ => bail!("[tls] needs both cert_file and key_file"),
    }
}

/// The configured pair, checked.
pub(super) fn read(cfg: &TlsConfig, now: SystemTime) -> anyhow::Result<(CertifiedKey, i64)> {
    let (cert, key) = paths(cfg)?;
    read_pair(cert, key, now)
}

/// Reads the files again; a bad pair leaves the served one in place.
pub(super) fn reload(cfg: &TlsConfig, certs: &Certs, why: &str) {
    match read(cfg, SystemTime::now()) {
        Ok(pair) => {
            certs.swap(pair);
            tracing::info!(
                why,
                days_left = certs.days_left(SystemTime::now()),
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
pub(super) async fn watch(cfg: &TlsConfig, certs: Arc<Certs>, stop: CancellationToken) {
    let stamp = |p: &Option<std::path::PathBuf>| {
        p.as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| (m.modified().ok(), m.len()))
    };
    let files = |c: &TlsConfig| (stamp(&c.cert_file), stamp(&c.key_file));
    let mut seen = files(cfg);
    let mut tick = tokio::time::interval(cfg.watch_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = files(cfg);
        if now != seen {
            seen = now;
            reload(cfg, &certs, "the certificate files changed");
        }
    }
}

/// The certified key of a cert/key file pair and the leaf's expiry (Unix seconds).
fn read_pair(cert: &Path, key: &Path, now: SystemTime) -> anyhow::Result<(CertifiedKey, i64)> {
    let chain = crate::pem::certificates(cert)?;
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("{}: no usable private key ({e})", key.display()))?;
    checked(chain, &der, now).map_err(|e| match e {
        PairError::Key(e) => anyhow::anyhow!("{}: {e}", key.display()),
        PairError::Cert(e) => anyhow::anyhow!("{}: {e}", cert.display()),
        PairError::Mismatch(e) => anyhow::anyhow!(
            "{} does not belong to the certificate in {} ({e})",
            key.display(),
            cert.display()
        ),
    })
}

/// A PEM chain and key kept elsewhere (the store), checked like files are.
pub(super) fn from_pem(
    chain: &str,
    key: &str,
    now: SystemTime,
) -> anyhow::Result<(CertifiedKey, i64)> {
    let chain = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("not a PEM certificate chain")?;
    if chain.is_empty() {
        bail!("no certificate in the chain");
    }
    let der = PrivateKeyDer::from_pem_slice(key.as_bytes()).context("no usable private key")?;
    checked(chain, &der, now).map_err(|e| match e {
        PairError::Key(e) | PairError::Cert(e) => anyhow::anyhow!("{e}"),
        PairError::Mismatch(e) => anyhow::anyhow!("the key does not belong to it ({e})"),
    })
}

enum PairError {
    Key(String),
    Cert(String),
    Mismatch(String),
}

/// The key matches the leaf, which is valid at `now`; answers its expiry (Unix seconds).
fn checked(
    chain: Vec<CertificateDer<'static>>,
    der: &PrivateKeyDer<'_>,
    now: SystemTime,
) -> Result<(CertifiedKey, i64), PairError> {
    let signer = any_supported_type(der)
        .map_err(|e| PairError::Key(format!("unsupported private key ({e})")))?;
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0])
        .map_err(|e| PairError::Cert(format!("the first certificate cannot be read ({e})")))?;
    let validity = leaf.validity();
    let not_after = validity.not_after.timestamp();
    let now_s = super::unix(now);
    if not_after <= now_s {
        let when = &validity.not_after;
        return Err(PairError::Cert(format!(
            "the certificate expired on {when}"
        )));
    }
    if validity.not_before.timestamp() > now_s {
        let when = &validity.not_before;
        return Err(PairError::Cert(format!(
            "the certificate is not valid before {when}"
        )));
    }
    let certified = CertifiedKey::new(chain, signer);
    certified
        .keys_match()
        .map_err(|e| PairError::Mismatch(e.to_string()))?;
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
