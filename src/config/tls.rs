//! The `[tls]` table: where the certificate served to clients comes from (files, or an
//! ACME CA in `[tls.acme]`, never both), HSTS, and the optional plain listener that only
//! redirects to HTTPS (and answers HTTP-01 challenges), with their defaults and checks.

use anyhow::bail;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `[tls]`: HTTPS on `listen` and `admin_listen`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM: the leaf certificate first, then its chain.
    pub cert_file: Option<PathBuf>,
    /// PEM: the leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// How often the files are looked at for a change (also reloaded on SIGHUP).
    #[serde(with = "humantime_serde", default = "TlsConfig::default_watch")]
    pub watch_interval: Duration,
    /// `Strict-Transport-Security` max-age sent on every answer; 0 sends none.
    #[serde(with = "humantime_serde", default = "TlsConfig::default_hsts")]
    pub hsts_max_age: Duration,
    /// A plain-HTTP listener (e.g. `0.0.0.0:80`) answering every request with a redirect
    /// to HTTPS, and HTTP-01 challenges when `[tls.acme]` uses them.
    pub redirect_listen: Option<SocketAddr>,
    /// The certificate from an ACME CA instead of files.
    pub acme: Option<AcmeConfig>,
}

/// `[tls.acme]`: a certificate ordered, kept in the store and renewed by the daemon.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// The names on the certificate (no wildcards: those need DNS-01).
    pub domains: Vec<String>,
    /// `mailto:` address the CA may write to about the account.
    pub contact: Option<String>,
    #[serde(default = "AcmeConfig::default_directory")]
    pub directory_url: String,
    /// PEM roots trusted for the ACME server's own HTTPS, besides the web-pki ones.
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub challenge: Challenge,
    /// A certificate with less than this left is renewed.
    #[serde(with = "humantime_serde", default = "AcmeConfig::default_renew_before")]
    pub renew_before: Duration,
}

/// How the CA checks that this daemon answers for the domains.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Challenge {
    /// On the HTTPS port itself (RFC 8737): no port 80 needed.
    #[default]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// A file under `/.well-known/acme-challenge/`, served on `redirect_listen` (port 80).
    #[serde(rename = "http-01")]
    Http01,
}

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

impl TlsConfig {
    fn default_watch() -> Duration {
        Duration::from_secs(10)
    }

    fn default_hsts() -> Duration {
        Duration::from_secs(365 * 86_400)
    }

    /// Part of the config's `validate()`: files or ACME, each complete.
    pub(super) fn check(&self) -> anyhow::Result<()> {
        match (&self.cert_file, &self.key_file, &self.acme) {
            (Some(_), Some(_), None) => Ok(()),
            (None, None, Some(acme)) => acme.check(self.redirect_listen.is_some()),
            (_, _, Some(_)) => bail!(
                "[tls] has both cert_file/key_file and [tls.acme]: the certificate comes from \
                 files or from ACME, so remove one"
            ),
            (None, None, None) => {
                bail!("[tls] needs cert_file and key_file, or a [tls.acme] table")
            }
            _ => bail!("[tls] needs both cert_file and key_file"),
        }
    }
}

impl AcmeConfig {
    fn default_directory() -> String {
        LETS_ENCRYPT.to_owned()
    }

    fn default_renew_before() -> Duration {
        Duration::from_secs(30 * 86_400)
    }

    fn check(&self, redirect_listen: bool) -> anyhow::Result<()> {
        if self.domains.is_empty() {
            bail!("tls.acme.domains must name at least one domain");
        }
        for d in &self.domains {
            let ok = !d.is_empty()
                && d.len() <= 253
                && d.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !ok {
                bail!(
                    "tls.acme.domains: {d:?} is not a DNS name (wildcards need DNS-01, which \
                     is not supported)"
                );
            }
        }
        if let Some(c) = &self.contact {
            if !c.starts_with("mailto:") {
                bail!("tls.acme.contact must be a mailto: address");
            }
        }
        let url = self.directory_url.parse::<http::Uri>().ok();
        if !url.is_some_and(|u| u.scheme_str() == Some("https") && u.host().is_some()) {
            bail!("tls.acme.directory_url must be an https:// URL");
        }
        if let Some(path) = &self.ca_file {
            crate::pem::certificates(path)
                .map_err(|e| anyhow::anyhow!("tls.acme.ca_file: {e:#}"))?;
        }
        if self.challenge == Challenge::Http01 && !redirect_listen {
            bail!(
                "tls.acme.challenge = \"http-01\" needs tls.redirect_listen (the plain listener \
                 on port 80 that answers the challenges)"
            );
        }
        if self.renew_before.is_zero() {
            bail!("tls.acme.renew_before must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::TlsConfig;

    fn check(toml: &str) -> Result<(), String> {
        let cfg: TlsConfig = toml::from_str(toml).map_err(|e| e.to_string())?;
        cfg.check().map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn files_or_acme_each_complete_and_never_both() {
        let acme = "[acme]\ndomains = [\"gb.example.org\"]\n";
        assert_eq!(check("cert_file = \"c\"\nkey_file = \"k\""), Ok(()));
        assert_eq!(check(acme), Ok(()));
        let both = format!("cert_file = \"c\"\nkey_file = \"k\"\n{acme}");
        let cases = [
            (both.as_str(), "both cert_file/key_file and [tls.acme]"),
            ("cert_file = \"c\"", "needs both"),
            ("hsts_max_age = \"1d\"", "or a [tls.acme] table"),
            ("[acme]\ndomains = []", "at least one domain"),
            ("[acme]\ndomains = [\"*.example.org\"]", "wildcards"),
            (
                "[acme]\ndomains = [\"a.org\"]\ndirectory_url = \"http://ca/dir\"",
                "https:// URL",
            ),
            (
                "[acme]\ndomains = [\"a.org\"]\ncontact = \"admin@a.org\"",
                "mailto:",
            ),
            (
                "[acme]\ndomains = [\"a.org\"]\nchallenge = \"http-01\"",
                "needs tls.redirect_listen",
            ),
            (
                "[acme]\ndomains = [\"a.org\"]\nchallenge = \"dns-01\"",
                "unknown variant",
            ),
        ];
        for (toml, why) in cases {
            let e = check(toml).unwrap_err();
            assert!(e.contains(why), "{toml}: {e}");
        }
        let http01 = "redirect_listen = \"0.0.0.0:80\"\n[acme]\ndomains = [\"a.org\"]\n\
                      challenge = \"http-01\"";
        assert_eq!(check(http01), Ok(()));
    }

    #[test]
    fn the_examples_commented_acme_table_parses_and_validates() {
        let text = include_str!("../../gemini-balance.toml.example");
        let start = text.find("# [tls.acme]").expect("the example's [tls.acme]");
        let table: String = text[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.trim_start_matches('#').trim_start())
            // The example's ca_file names a file this machine does not have.
            .filter(|l| !l.starts_with("ca_file"))
            .map(|l| format!("{l}\n"))
            .collect();
        let cfg: TlsConfig = toml::from_str(&table.replace("[tls.acme]", "[acme]")).unwrap();
        cfg.check().unwrap();
        let acme = cfg.acme.unwrap();
        assert_eq!(acme.domains, ["gw.example.com"]);
        assert_eq!(acme.directory_url, super::LETS_ENCRYPT);
    }
}
