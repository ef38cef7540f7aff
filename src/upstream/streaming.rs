//! Requests whose body streams through (file uploads, up to 2 GiB): sent on a connection
//! of their own (through the key's egress) with hyper's client, the body read from the
//! client as the upstream takes it, never held whole. HTTP/2 when the upstream offers it,
//! HTTP/1.1 otherwise.

use super::{SendError, Upstream, Via, connect_error, host_value};
use crate::boxerror::BoxError;
use bytes::Bytes;
use http::{Request, Response, Uri, header};
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioTimer};

impl Upstream {
    /// Sends `req` (an absolute URI) with its body streamed, and waits for the answer
    /// head until `deadline`. Never retried: once sent, the body is gone.
    pub async fn send_streaming<B>(
        &self,
        via: &Via<'_>,
        req: Request<B>,
        deadline: tokio::time::Instant,
    ) -> Result<Response<super::UpstreamBody>, SendError>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let fut = self.stream_once(via, req);
        match tokio::time::timeout_at(deadline, fut).await {
            Err(_) => Err(SendError::Timeout),
            Ok(Err(e)) => Err(connect_error(&*e)),
            Ok(Ok(resp)) => Ok(resp.map(super::UpstreamBody::from)),
        }
    }

    async fn stream_once<B>(
        &self,
        via: &Via<'_>,
        mut req: Request<B>,
    ) -> Result<Response<hyper::body::Incoming>, BoxError>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let uri = req.uri().clone();
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err("the upstream URI has no scheme or host".into());
        };
        let base = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()?;
        let io = self.connect_via(via, base, true).await?;
        if io.connected().is_negotiated_h2() {
            let (mut sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            req.headers_mut().remove(header::HOST);
            let resp = sender.send_request(req).await?;
            return Ok(resp);
        }
        let (mut sender, conn) = http1::Builder::new().handshake(io).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        if let Some(host) = host_value(&uri) {
            req.headers_mut().insert(header::HOST, host);
        }
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        *req.uri_mut() = path.parse()?;
        let resp = sender.send_request(req).await?;
        Ok(resp)
    }
}
