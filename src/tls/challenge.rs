//! The answers to an ACME CA's checks while an order waits for them: for TLS-ALPN-01 a
//! self-signed certificate per domain carrying the key authorisation's digest (RFC 8737),
//! served to handshakes that offer only `acme-tls/1`; for HTTP-01 the key authorisation
//! per token, served by the plain listener. Both are dropped when the order ends.

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, Default)]
pub struct Challenges {
    alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    http: Mutex<HashMap<String, String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Challenges {
    /// The TLS-ALPN-01 certificate for `domain`, while its check is pending.
    pub fn alpn_cert(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        lock(&self.alpn).get(&domain.to_ascii_lowercase()).cloned()
    }

    /// The HTTP-01 answer (the key authorisation) for `token`, while its check is pending.
    pub fn http_answer(&self, token: &str) -> Option<String> {
        lock(&self.http).get(token).cloned()
    }

    /// Makes the TLS-ALPN-01 certificate for `domain` from the key authorisation's
    /// SHA-256 `digest`.
    pub(super) fn offer_alpn(&self, domain: &str, digest: &[u8]) -> anyhow::Result<()> {
        let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()])?;
        params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signer = any_supported_type(&der)?;
        let certified = CertifiedKey::new(vec![cert.der().clone()], signer);
        lock(&self.alpn).insert(domain.to_ascii_lowercase(), Arc::new(certified));
        Ok(())
    }

    /// The HTTP-01 tokens offered in the order under way.
    pub(super) fn http_tokens(&self) -> Vec<String> {
        lock(&self.http).keys().cloned().collect()
    }

    pub(super) fn offer_http(&self, token: &str, key_authorization: &str) {
        lock(&self.http).insert(token.to_owned(), key_authorization.to_owned());
    }

    /// Forgets every answer (the order is over, one way or the other).
    pub(super) fn clear(&self) {
        lock(&self.alpn).clear();
        lock(&self.http).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::Challenges;

    #[test]
    fn answers_exist_only_while_offered() {
        let c = Challenges::default();
        c.offer_alpn("gb.example.org", &[7; 32]).unwrap();
        c.offer_http("tok", "tok.thumb");
        let cert = c
            .alpn_cert("GB.example.org")
            .expect("case-insensitive name");
        let (_, leaf) = x509_parser::parse_x509_certificate(&cert.cert[0]).unwrap();
        // id-pe-acmeIdentifier, critical, holding the digest as an OCTET STRING.
        let ext = leaf
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("the acmeIdentifier extension");
        assert!(ext.critical);
        assert_eq!(&ext.value[2..], &[7; 32]);
        assert_eq!(c.http_answer("tok").as_deref(), Some("tok.thumb"));
        assert!(c.alpn_cert("other.example.org").is_none());
        c.clear();
        assert!(c.alpn_cert("gb.example.org").is_none());
        assert!(c.http_answer("tok").is_none());
    }
}
