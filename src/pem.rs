//! PEM files read for TLS. A leaf: it reads certificates from files and knows nothing of
//! who trusts them or why.

use anyhow::{Context, bail};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::Path;

/// The certificates of a PEM file; an error when the file cannot be read, holds something
/// that is not PEM, or holds no certificate.
pub fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate file ({e})", path.display()))?;
    if certs.is_empty() {
        bail!("{}: no certificate in it", path.display());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::certificates;

    #[test]
    fn a_ca_file_gives_its_certificates_and_anything_else_a_reason() {
        let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.pem");
        assert_eq!(certificates(&ca).unwrap().len(), 1);
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "garbage.pem",
                Some("-----BEGIN CERTIFICATE-----\nnot base64\n"),
                "not a PEM certificate file",
            ),
            ("empty.pem", Some(""), "no certificate in it"),
            ("missing.pem", None, "reading"),
        ];
        for (name, text, why) in cases {
            let path = dir.path().join(name);
            if let Some(text) = text {
                std::fs::write(&path, text).unwrap();
            }
            let e = format!("{:#}", certificates(&path).unwrap_err());
            assert!(e.contains(why) && e.contains(name), "{name}: {e}");
        }
    }
}
