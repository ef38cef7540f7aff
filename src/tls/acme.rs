//! The certificate from an ACME CA (`[tls.acme]`, Let's Encrypt by default), by
//! instant-acme: the account and the certificate are kept in the store's named settings
//! (`acme.account`, `acme.certificate`), so a restart serves the kept certificate without
//! ordering, and instances sharing a Redis store share one certificate. The loop here
//! orders when there is no usable certificate, renews `renew_before` its expiry, backs off
//! on failure (one minute, doubling up to six hours), and looks at the store again now and
//! then for a certificate another instance renewed. Challenges are answered by
//! `challenge`, on the HTTPS port (TLS-ALPN-01) or on the plain listener (HTTP-01); an
//! HTTP-01 answer is also kept in the store while its order waits (`acme.http-01.TOKEN`),
//! so behind one address any instance sharing the store answers the CA's check.

use super::Certs;
use super::ca_client::Http;
use crate::config::{AcmeConfig, Challenge};
use crate::store::{Store, Write};
use anyhow::{Context, anyhow, bail};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, Order, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

const META_ACCOUNT: &str = "acme.account";
const META_CERT: &str = "acme.certificate";
/// How often the store is looked at for a certificate another instance renewed.
const CHECK_EVERY: Duration = Duration::from_secs(3600);
const FIRST_RETRY: Duration = Duration::from_secs(60);
const LAST_RETRY: Duration = Duration::from_secs(6 * 3600);

#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// A certificate as kept in the store: for which directory and names, chain and key (PEM).
#[derive(Serialize, Deserialize)]
struct StoredCert {
    directory: String,
    domains: Vec<String>,
    chain: String,
    key: String,
}

pub(super) struct Acme {
    cfg: AcmeConfig,
    store: Store,
    certs: Arc<Certs>,
    http: Http,
    /// SIGHUP: look now instead of at the next look (a retry after a fixed cause).
    now: tokio::sync::Notify,
}

impl Acme {
    pub(super) fn new(cfg: &AcmeConfig, store: Store, certs: Arc<Certs>) -> anyhow::Result<Acme> {
        let mut cfg = cfg.clone();
        let mut seen = std::collections::HashSet::new();
        cfg.domains = (cfg.domains.iter())
            .map(|d| d.to_ascii_lowercase())
            .filter(|d| seen.insert(d.clone()))
            .collect();
        let http = Http::new(&cfg)?;
        Ok(Acme {
            cfg,
            store,
            certs,
            http,
            now: tokio::sync::Notify::new(),
        })
    }

    /// The names on the certificate, lower-case, in the config's order.
    pub(super) fn domains(&self) -> &[String] {
        &self.cfg.domains
    }

    /// Serves the certificate kept in the store when it is for these names and this CA,
    /// valid, and later than the one served; answers whether it was taken.
    pub(super) async fn load_stored(&self, now: SystemTime) -> bool {
        let stored = match self.store.get_meta(META_CERT).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "ACME: the kept certificate cannot be read");
                return false;
            }
        };
        let cert: StoredCert = match serde_json::from_slice(&stored) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "ACME: the kept certificate is unreadable");
                return false;
            }
        };
        if cert.directory != self.cfg.directory_url || !same_names(&cert.domains, &self.cfg.domains)
        {
            tracing::info!(
                kept_for = ?cert.domains,
                "ACME: the kept certificate is for other names or another CA"
            );
            return false;
        }
        let pair = match super::files::from_pem(&cert.chain, &cert.key, now) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!("ACME: the kept certificate is not usable: {e:#}");
                return false;
            }
        };
        if self.certs.not_after().is_some_and(|n| n >= pair.1) {
            return false;
        }
        self.certs.swap(pair);
        tracing::info!(
            domains = ?self.cfg.domains,
            days_left = self.certs.days_left(now),
            "ACME: serving the certificate kept in the store"
        );
        true
    }

    /// Has the loop look at once (the store, then an order if one is due).
    pub(super) fn look_now(&self) {
        self.now.notify_one();
    }

    /// Orders, renews and retries until `stop`.
    pub(super) async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut failures = 0u32;
        loop {
            let looked = tokio::select! {
                _ = stop.cancelled() => return,
                looked = self.step(SystemTime::now()) => looked,
            };
            let wait = match looked {
                Ok(next) => {
                    failures = 0;
                    next
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = retry_after(failures);
                    tracing::error!(
                        domains = ?self.cfg.domains,
                        failures,
                        retry_in = %humantime::format_duration(wait),
                        "ACME: no certificate this time: {e:#}"
                    );
                    wait
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = self.now.notified() => {}
            }
        }
    }

    /// One look: a newer kept certificate, else an order when due; answers the time to
    /// the next look.
    async fn step(&self, now: SystemTime) -> anyhow::Result<Duration> {
        self.load_stored(now).await;
        let before = self.cfg.renew_before.as_secs() as i64;
        if let Some(left) = self.certs.seconds_left(now).map(|s| s - before) {
            if left > 0 {
                return Ok(CHECK_EVERY.min(Duration::from_secs(left as u64)));
            }
        }
        let reason = match self.certs.days_left(now) {
            None => "no certificate yet".to_owned(),
            Some(days) => format!("{days} days left"),
        };
        tracing::info!(domains = ?self.cfg.domains, %reason, "ACME: ordering a certificate");
        let (chain, key) = self.order().await?;
        let pair = super::files::from_pem(&chain, &key, SystemTime::now())
            .context("the CA's certificate")?;
        let kept = StoredCert {
            directory: self.cfg.directory_url.clone(),
            domains: self.cfg.domains.clone(),
            chain,
            key,
        };
        // Served even when it cannot be kept: only the next start would order again.
        self.certs.swap(pair);
        let write = Write::PutMeta(META_CERT.into(), serde_json::to_vec(&kept)?);
        if let Err(e) = self.store.apply(vec![write]).await {
            tracing::error!(
                error = %e,
                "ACME: the new certificate could not be kept in the store; the next start orders again"
            );
        }
        let days_left = self.certs.days_left(SystemTime::now());
        tracing::info!(
            domains = ?self.cfg.domains,
            days_left,
            "ACME: new certificate served"
        );
        if self.certs.seconds_left(SystemTime::now()) <= Some(before) {
            tracing::warn!(
                days_left,
                "ACME: tls.acme.renew_before is longer than the CA's certificates last, so \
                 each hourly look orders again; make it shorter"
            );
        }
        Ok(CHECK_EVERY)
    }

    /// The account kept for this directory, or a new one (then kept).
    async fn account(&self) -> anyhow::Result<Account> {
        let builder = || Account::builder_with_http(Box::new(self.http.clone()));
        let kept = self.store.get_meta(META_ACCOUNT).await?;
        if let Some(kept) = kept.and_then(|b| serde_json::from_slice::<StoredAccount>(&b).ok()) {
            if kept.directory == self.cfg.directory_url {
                return builder()
                    .from_credentials(kept.credentials)
                    .await
                    .context("reaching the ACME directory");
            }
        }
        let contact: Vec<&str> = self.cfg.contact.iter().map(String::as_str).collect();
        let new = NewAccount {
            contact: &contact,
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let (account, credentials) = builder()
            .create(&new, self.cfg.directory_url.clone(), None)
            .await
            .context("creating the ACME account")?;
        let kept = StoredAccount {
            directory: self.cfg.directory_url.clone(),
            credentials,
        };
        self.store
            .apply(vec![Write::PutMeta(
                META_ACCOUNT.into(),
                serde_json::to_vec(&kept)?,
            )])
            .await
            .context("keeping the ACME account in the store")?;
        tracing::info!(directory = %self.cfg.directory_url, "ACME: account created");
        Ok(account)
    }

    /// Places an order, answers its challenges, and answers the chain and key (PEM).
    async fn order(&self) -> anyhow::Result<(String, String)> {
        let account = self.account().await?;
        let ids: Vec<Identifier> = self
            .cfg
            .domains
            .iter()
            .map(|d| Identifier::Dns(d.clone()))
            .collect();
        let mut order = account
            .new_order(&NewOrder::new(&ids))
            .await
            .context("placing the order")?;
        let done = self.complete(&mut order).await;
        let answered: Vec<Write> = (self.certs.challenges.http_tokens().iter())
            .map(|t| Write::DeleteMeta(http01_name(t)))
            .collect();
        self.certs.challenges.clear();
        if let Err(e) = self.store.apply(answered).await {
            tracing::warn!(error = %e, "ACME: HTTP-01 answers left in the store");
        }
        done
    }

    /// The HTTP-01 answer for `token` another instance sharing the store put there.
    pub(super) async fn stored_http_answer(&self, token: &str) -> Option<String> {
        let ok = !token.is_empty()
            && token.len() <= 128
            && (token.bytes()).all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return None;
        }
        let bytes = self.store.get_meta(&http01_name(token)).await.ok()??;
        String::from_utf8(bytes).ok()
    }

    async fn complete(&self, order: &mut Order) -> anyhow::Result<(String, String)> {
        let kind = match self.cfg.challenge {
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            Challenge::Http01 => ChallengeType::Http01,
        };
        let mut auths = order.authorizations();
        while let Some(auth) = auths.next().await {
            let mut auth = auth.context("reading the order's authorisations")?;
            match auth.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => bail!("the authorisation for {} is {other:?}", auth.identifier()),
            }
            let mut ch = auth
                .challenge(kind.clone())
                .ok_or_else(|| anyhow!("the CA offers no {kind:?} challenge"))?;
            let domain = ch.identifier().to_string();
            let answer = ch.key_authorization();
            match self.cfg.challenge {
                Challenge::TlsAlpn01 => self
                    .certs
                    .challenges
                    .offer_alpn(&domain, answer.digest().as_ref())?,
                Challenge::Http01 => {
                    // Kept in the store too, so any instance behind the address answers.
                    self.certs.challenges.offer_http(&ch.token, answer.as_str());
                    let write = Write::PutMeta(http01_name(&ch.token), answer.as_str().into());
                    self.store.apply(vec![write]).await?;
                }
            }
            ch.set_ready()
                .await
                .with_context(|| format!("asking the CA to check {domain}"))?;
        }
        let retries = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(Duration::from_secs(120));
        let status = order
            .poll_ready(&retries)
            .await
            .context("waiting for the CA's checks")?;
        if status != OrderStatus::Ready {
            bail!("the CA's checks failed: {}", failed_checks(order).await);
        }
        let key = order.finalize().await.context("finalising the order")?;
        let chain = order
            .poll_certificate(&retries)
            .await
            .context("downloading the certificate")?;
        Ok((chain, key))
    }
}

/// Where the answer to the HTTP-01 check `token` is kept while its order waits.
fn http01_name(token: &str) -> String {
    format!("acme.http-01.{token}")
}

/// The same names, whatever their order.
fn same_names(a: &[String], b: &[String]) -> bool {
    use std::collections::BTreeSet;
    a.iter().collect::<BTreeSet<_>>() == b.iter().collect::<BTreeSet<_>>()
}

/// What the CA said about each failed check.
async fn failed_checks(order: &mut Order) -> String {
    let mut why = Vec::new();
    let mut auths = order.authorizations();
    while let Some(Ok(mut auth)) = auths.next().await {
        if auth.refresh().await.is_err() {
            continue;
        }
        let name = auth.identifier().to_string();
        for c in &auth.challenges {
            if let Some(e) = &c.error {
                why.push(format!("{name}: {e}"));
            }
        }
    }
    if why.is_empty() {
        "no reason given".to_owned()
    } else {
        why.join("; ")
    }
}

/// The wait after the `n`th failure in a row: one minute, doubling, at most six hours.
fn retry_after(n: u32) -> Duration {
    let doubled = FIRST_RETRY.saturating_mul(1 << n.saturating_sub(1).min(16));
    doubled.min(LAST_RETRY)
}

#[cfg(test)]
mod tests {
    use super::{retry_after, same_names};
    use std::time::Duration;

    #[test]
    fn the_kept_certificate_is_for_the_same_names_in_any_order() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(same_names(&v(&["a.org", "b.org"]), &v(&["b.org", "a.org"])));
        assert!(!same_names(&v(&["a.org"]), &v(&["a.org", "b.org"])));
    }

    #[test]
    fn failures_back_off_from_a_minute_to_six_hours() {
        let mins = |n| retry_after(n).as_secs() / 60;
        assert_eq!([1, 2, 3, 4].map(mins), [1, 2, 4, 8]);
        assert_eq!(retry_after(10), Duration::from_secs(6 * 3600));
        assert_eq!(retry_after(u32::MAX), Duration::from_secs(6 * 3600));
    }
}
