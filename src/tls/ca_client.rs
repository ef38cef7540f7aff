//! The HTTPS client instant-acme talks to the ACME server with: hyper-util over rustls
//! (ring), trusting the web-pki roots plus those of `tls.acme.ca_file` (a test CA such
//! as pebble's), host names resolved in Rust like the upstream's, each request bounded
//! in time.

use crate::config::AcmeConfig;
use crate::upstream::dns::Dns;
use anyhow::Context;
use bytes::Bytes;
use http::Request;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The longest one request to the CA may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The CA's HTTPS: web-pki roots plus `ca_file`'s, names resolved in Rust.
#[derive(Clone)]
pub(super) struct Http(Client<HttpsConnector<HttpConnector<Dns>>, BodyWrapper<Bytes>>);

impl Http {
    pub(super) fn new(cfg: &AcmeConfig) -> anyhow::Result<Http> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &cfg.ca_file {
            for cert in crate::pem::certificates(path).context("tls.acme.ca_file")? {
                roots.add(cert).context("tls.acme.ca_file")?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let dns = Dns::new(&[]);
        let mut tcp = HttpConnector::new_with_resolver(dns);
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        Ok(Http(Client::builder(TokioExecutor::new()).build(https)))
    }
}

impl HttpClient for Http {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let sent = self.0.request(req);
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, sent).await {
                Ok(Ok(rsp)) => Ok(BytesResponse::from(rsp)),
                Ok(Err(e)) => Err(instant_acme::Error::Other(Box::new(e))),
                Err(_) => Err(instant_acme::Error::Str(
                    "no answer from the ACME server in time",
                )),
            }
        })
    }
}
