//! The admin API (`/api/…`, JSON). Every route but login needs the admin session
//! (`auth`); every answer carries security headers and `Cache-Control: no-store`.
//! Changes are durable before the answer is sent and take effect on the next request.
//!
//! This module translates HTTP to pool, user and store operations; it holds no state of
//! its own beyond the session keys in `auth`.

mod feed;
pub mod keys;
mod logs;
mod resources;
mod users;

use crate::app::AppState;
use crate::auth;
use crate::body::Body;
use crate::body::ReqBody;
use crate::client_addr;
use crate::error::{ApiError, Shape};
use crate::router::{AdminRoute, Auth};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use serde::de::DeserializeOwned;
use std::net::IpAddr;
use std::sync::Arc;

/// Admin bodies are small, but a pasted key list can be long.
const BODY_LIMIT: usize = 8 * 1024 * 1024;
/// A login body holds one password; it is read before anyone is authenticated.
const LOGIN_BODY_LIMIT: usize = 4 * 1024;

pub async fn handle(
    state: &Arc<AppState>,
    req: Request<ReqBody>,
    route: AdminRoute<'_>,
    peer: IpAddr,
) -> Response<Body> {
    let result = if route.auth() == Auth::Open {
        auth_routes::login(state, req, peer).await
    } else {
        match state.admin.authorize(req.method(), req.headers()) {
            Ok(()) => dispatch(state, req, route).await,
            Err(auth::Denied::Unauthenticated) => Err(ApiError::AdminUnauthenticated),
            Err(auth::Denied::Csrf) => Err(ApiError::Csrf),
        }
    };
    let mut resp = result.unwrap_or_else(|e| e.into_response(Shape::Admin));
    let h = resp.headers_mut();
    crate::ui::security_headers(h);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn dispatch(
    state: &Arc<AppState>,
    req: Request<ReqBody>,
    route: AdminRoute<'_>,
) -> Result<Response<Body>, ApiError> {
    use AdminRoute as A;
    match route {
        A::Login => unreachable!("login is handled before authorization"),
        A::Logout => auth_routes::logout(state, req).await,
        A::ListKeys => keys::list(state),
        A::AddKeys => keys::add(state, req).await,
        A::ExportKeys => keys::export(state),
        A::CheckKeys => keys::check(state, req).await,
        A::ResetKeys => keys::reset_all(state).await,
        A::PatchKey(id) => keys::patch(state, id, req).await,
        A::DeleteKey(id) => keys::delete(state, id).await,
        A::ResetKey(id) => keys::reset(state, id).await,
        A::ListUsers => users::list(state),
        A::CreateUser => users::create(state, req).await,
        A::PatchUser(id) => users::patch(state, id, req).await,
        A::DeleteUser(id) => users::delete(state, id).await,
        A::RotateUser(id) => users::rotate(state, id).await,
        A::Logs => logs::list(state, req.uri()).await,
        A::ExportLogs => logs::export(state, req.uri()).await,
        A::Log(id) => logs::one(state, id).await,
        A::Summary => logs::summary(state, req.uri()).await,
        A::Timeseries => logs::timeseries(state, req.uri()).await,
        A::Heatmap => logs::heatmap(state, req.uri()).await,
        A::Events => {
            let session = state
                .admin
                .session(req.headers())
                .ok_or(ApiError::AdminUnauthenticated)?;
            Ok(feed::subscribe(state, session))
        }
        A::Resources => resources::list(state, req.uri()).await,
        A::LiveSessions => Ok(json(
            StatusCode::OK,
            &state.live.view(crate::keys::unix_ms()),
        )),
    }
}

mod auth_routes {
    use super::*;
    use crate::keys::unix_ms;
    use crate::login_gate::Refusal;

    #[derive(serde::Deserialize)]
    struct Login {
        password: String,
    }

    pub async fn login(
        state: &Arc<AppState>,
        req: Request<ReqBody>,
        peer: IpAddr,
    ) -> Result<Response<Body>, ApiError> {
        let form = is_form(req.headers());
        let (parts, body) = req.into_parts();
        let bytes = crate::proxy::read_body(body, &parts.headers, LOGIN_BODY_LIMIT).await?;
        let password = if form {
            form_urlencoded::parse(&bytes)
                .find(|(k, _)| k == "password")
                .map(|(_, v)| v.into_owned())
                .ok_or_else(|| ApiError::BadRequest("Missing field `password`.".into()))?
        } else {
            parse_json::<Login>(&bytes)?.password
        };
        let proxies = &state.config.server.trusted_proxies;
        let client = client_addr::client_ip(proxies, peer, &parts.headers);
        let attempt = state
            .admin
            .begin_login(client_addr::bucket(client), unix_ms())
            .map_err(|r| match r {
                Refusal::Throttled(wait) => ApiError::LoginThrottled(wait),
                Refusal::Busy => ApiError::LoginBusy,
            })?;
        let Some(attempt) = state.admin.verify_password(password, attempt).await else {
            tracing::warn!(%client, "admin login failed");
            return Err(ApiError::WrongPassword);
        };
        attempt.succeeded();
        let token = state.admin.issue();
        let ttl = state.admin.ttl().as_secs();
        let body = serde_json::json!({
            "access_token": token,
            "token_type": "bearer",
            "expires_in": ttl,
        });
        let mut resp = json(StatusCode::OK, &body);
        set_cookie(state, &parts, &mut resp, &token, ttl);
        Ok(resp)
    }

    /// The session cookie (`token` empty and `max_age` 0 clear it); `Secure` when the
    /// client reached us over HTTPS.
    fn set_cookie(
        state: &AppState,
        parts: &http::request::Parts,
        resp: &mut Response<Body>,
        token: &str,
        max_age: u64,
    ) {
        let https = client_addr::over_https(&state.config.server.trusted_proxies, parts);
        let cookie = format!(
            "{}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{}",
            auth::COOKIE,
            if https { "; Secure" } else { "" }
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
    }

    pub async fn logout(
        state: &Arc<AppState>,
        req: Request<ReqBody>,
    ) -> Result<Response<Body>, ApiError> {
        let (parts, _) = req.into_parts();
        let token = auth::bearer(&parts.headers)
            .or_else(|| auth::cookie(&parts.headers, auth::COOKIE))
            .unwrap_or("");
        state
            .admin
            .revoke(&state.store, token)
            .await
            .map_err(|e| ApiError::Store(e.to_string()))?;
        let mut resp = json(StatusCode::OK, &serde_json::json!({"ok": true}));
        set_cookie(state, &parts, &mut resp, "", 0);
        Ok(resp)
    }
}

fn is_form(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

pub(crate) async fn read(req: Request<ReqBody>) -> Result<Bytes, ApiError> {
    let (parts, body) = req.into_parts();
    crate::proxy::read_body(body, &parts.headers, BODY_LIMIT).await
}

/// Parses a JSON body. Errors name the problem and position, never echo values.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let msg = e.to_string();
        let what = if msg.starts_with("unknown field") || msg.starts_with("missing field") {
            msg.split(" at line")
                .next()
                .unwrap_or("invalid field")
                .to_owned()
        } else if e.is_data() {
            "a field has the wrong type or value".to_owned()
        } else {
            "malformed JSON".to_owned()
        };
        ApiError::BadRequest(format!(
            "Invalid request body: {what} (line {}, column {}).",
            e.line(),
            e.column()
        ))
    })
}

pub(crate) fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let bytes = serde_json::to_vec(value).expect("admin views serialise");
    let mut resp = Response::new(Body::full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
