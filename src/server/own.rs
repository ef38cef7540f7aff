//! The answers the server gives itself: `/healthz`, `/metrics` (and its refusal without
//! the metrics token), and the HSTS header on answers sent over TLS.

use super::Role;
use crate::app::AppState;
use crate::body::{Body, ReqBody};
use crate::keys::unix_ms;
use http::{HeaderValue, Request, Response, header};

/// The refusal of a request without the metrics credential (`Auth::MetricsToken`).
pub(super) fn metrics_refusal(
    state: &AppState,
    req: &Request<ReqBody>,
    role: Role,
) -> Option<Response<Body>> {
    let token = state.config.server.metrics_token.as_ref();
    let (status, why) =
        crate::auth::metrics_access(token, role == Role::Admin, req.headers()).err()?;
    let mut resp = Response::new(Body::full(why));
    *resp.status_mut() = status;
    Some(resp)
}

pub(super) fn metrics(state: &AppState) -> Response<Body> {
    let open = state.spread.open_per_lane();
    let mut text = state
        .metrics
        .render(&state.pool, &state.hub, &open, unix_ms());
    if let Some(tls) = &state.tls {
        let left = tls.certs.seconds_left(std::time::SystemTime::now());
        crate::metrics::tls_expiry(&mut text, left);
    }
    let mut resp = Response::new(Body::full(text));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// `Strict-Transport-Security` on an answer sent over TLS, unless `tls.hsts_max_age` is 0.
pub(super) fn hsts(state: &AppState, resp: &mut Response<Body>) {
    let age = state
        .config
        .tls
        .as_ref()
        .map_or(0, |t| t.hsts_max_age.as_secs());
    if age > 0 {
        if let Ok(v) = HeaderValue::from_str(&format!("max-age={age}")) {
            resp.headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, v);
        }
    }
}

pub(super) fn health(state: &AppState) -> Response<Body> {
    let mut body = if state.store.healthy() {
        serde_json::json!({"status": "ok", "store": state.store.kind()})
    } else {
        serde_json::json!({
            "status": "degraded",
            "store": state.store.kind(),
            "detail": "the shared store is unreachable; serving from the last known pool state",
        })
    };
    if let Some(tls) = &state.tls {
        body["tls_days_left"] = tls.certs.days_left(std::time::SystemTime::now()).into();
    }
    let mut resp = Response::new(Body::full(body.to_string()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
