//! The Live API: Google's WebSocket methods `…BidiGenerateContent` and
//! `…BidiGenerateContentConstrained` at Google's paths, relayed over the key pool.
//!
//! This file is the HTTP side: check that the request is a WebSocket upgrade, take the
//! credential (the user key from `x-goog-api-key`, `?key=` or `Authorization: Bearer`;
//! for the Constrained method the ephemeral token from `?access_token=`,
//! `Authorization: Token` or the key slot, which is credential enough on its own — it
//! was minted through the gateway by a user, like an upload URL), admit the session
//! under the user's limits, answer `101 Switching Protocols` and hand the upgraded
//! connection to a session task (`session`). No key is chosen here: the model comes in
//! the client's first message.
//!
//! Sessions run on the serving thread that accepted them and are owned by its
//! [`Sessions`]: at shutdown they may go on for the grace period, then each is closed
//! with 1001 "going away".

mod account;
mod relay;
mod session;
mod setup;
mod upstream;

use crate::app::AppState;
use crate::body::{Body, ReqBody};
use crate::error::{ApiError, Shape};
use crate::logs::Trace;
use crate::proxy;
use crate::router::LiveCall;
use crate::secret::Secret;
use crate::store::UserRecord;
use crate::store::affinity::ResourceRecord;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long closing sessions have to finish their close handshakes at shutdown.
const GOODBYE: Duration = Duration::from_secs(2);

/// The Live sessions of one serving thread.
#[derive(Clone, Default)]
pub struct Sessions {
    tracker: TaskTracker,
    going_away: CancellationToken,
}

impl Sessions {
    /// Waits for the sessions to end, up to `grace`; then closes the rest with 1001
    /// "going away" and waits briefly for their close handshakes.
    pub async fn drain(&self, grace: Duration) {
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
        {
            return;
        }
        tracing::info!(
            open = self.tracker.len(),
            "closing Live sessions: going away"
        );
        self.going_away.cancel();
        let _ = tokio::time::timeout(GOODBYE, self.tracker.wait()).await;
    }
}

/// One client connection's view of Live: its serving thread's sessions, and what the
/// connection holds while it is open (its place under the connection caps), which a
/// session upgraded from it takes over and keeps until it ends.
pub struct Upgrades {
    sessions: Arc<Sessions>,
    held: std::sync::Mutex<Option<Box<dyn Send>>>,
}

impl Upgrades {
    pub fn new(sessions: Arc<Sessions>, held: Box<dyn Send>) -> Self {
        Self {
            sessions,
            held: std::sync::Mutex::new(Some(held)),
        }
    }

    fn take_held(&self) -> Option<Box<dyn Send>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Who opens a session, and with what.
pub(crate) struct Caller {
    user: Arc<UserRecord>,
    /// The ephemeral token and the row binding it to its key (Constrained sessions).
    token: Option<(Secret, ResourceRecord)>,
}

/// Answers a Live upgrade request: `101` and a session task, or an error in Google's
/// shape (not logged before the credential is accepted, as on every proxy route).
pub async fn handle(
    state: &Arc<AppState>,
    mut req: Request<ReqBody>,
    call: LiveCall,
    trace: &mut Trace,
    conn: &Upgrades,
) -> Response<Body> {
    let accept = match upgrade_key(&req) {
        Ok(k) => k,
        Err(e) => return e.into_response(Shape::Google),
    };
    let caller = match credential(state, &req, call, trace.time).await {
        Ok(c) => c,
        Err(e) => return e.into_response(Shape::Google),
    };
    // The access line names the user; the record is the session's (written when it
    // ends), so the upgrade itself is logged only when it is refused.
    trace.user = Some(caller.user.name.clone());
    let permit = match state.limits.admit(&caller.user, "", trace.time).await {
        Ok(p) => p,
        Err(e) => {
            trace.route = Some(call.name());
            return e.into_response(Shape::Google);
        }
    };
    let opening = session::Opening {
        state: state.clone(),
        call,
        caller,
        permit,
        path: req.uri().path().to_owned(),
        query: upstream_query(req.uri()),
        headers: proxy::forward_headers(req.headers(), FORWARDED),
        trace: Trace::new(trace.request_id.clone(), trace.time),
        going_away: conn.sessions.going_away.clone(),
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let held = conn.take_held();
    conn.sessions.tracker.spawn(async move {
        match upgrade.await {
            Ok(io) => session::run(opening, io).await,
            Err(e) => tracing::debug!(error = %e, "the Live upgrade did not complete"),
        }
        drop(held);
    });
    switching(&accept)
}

/// Client headers Google uses on a Live connection; everything else stays here.
const FORWARDED: &[&str] = &["user-agent", "x-goog-api-client", "x-goog-user-project"];

/// `Sec-WebSocket-Accept` for a well-formed WebSocket upgrade (RFC 6455 4.2.1).
fn upgrade_key(req: &Request<ReqBody>) -> Result<String, ApiError> {
    let h = req.headers();
    let has = |name: header::HeaderName, token: &str| {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let key = h.get(header::SEC_WEBSOCKET_KEY).map(HeaderValue::as_bytes);
    let version_ok = h
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    match key {
        Some(key)
            if req.version() == http::Version::HTTP_11
                && has(header::UPGRADE, "websocket")
                && has(header::CONNECTION, "upgrade")
                && version_ok =>
        {
            Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key))
        }
        _ => Err(ApiError::BadRequest(
            "This is a Live API method: open it as a WebSocket (HTTP/1.1 upgrade, version 13)."
                .into(),
        )),
    }
}

fn switching(accept: &str) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

/// The query to send upstream: the client's without its credentials.
fn upstream_query(uri: &http::Uri) -> Option<String> {
    let q = proxy::query_without_key(uri)?;
    let kept: Vec<&str> = q
        .split('&')
        .filter(|p| *p != "access_token" && !p.starts_with("access_token="))
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// The user (and token) a request opens its session as.
async fn credential(
    state: &AppState,
    req: &Request<ReqBody>,
    call: LiveCall,
    now_ms: i64,
) -> Result<Caller, ApiError> {
    if !call.constrained {
        let user = proxy::authenticate(state, req.headers(), req.uri(), now_ms)?;
        return Ok(Caller { user, token: None });
    }
    // The Constrained method takes a token only: Google refuses it an API key, and that
    // refusal must not count against a pool key.
    let token = ephemeral_token(req.headers(), req.uri()).ok_or(ApiError::MissingKey)?;
    let row = state
        .store
        .resource(&crate::affinity::token_row(token.expose()))
        .await
        .map_err(|e| ApiError::Store(e.to_string()))?
        .filter(|r| r.expires_ms > now_ms)
        .ok_or(ApiError::UnknownKey)?;
    let user = state
        .users
        .all()
        .into_iter()
        .find(|u| u.id == row.user_id)
        .ok_or(ApiError::UnknownKey)?;
    if !user.enabled {
        return Err(ApiError::UserDisabled);
    }
    if user.expires_at.is_some_and(|t| t <= now_ms / 1000) {
        return Err(ApiError::UserExpired);
    }
    Ok(Caller {
        user,
        token: Some((token, row)),
    })
}

/// An ephemeral token (`auth_tokens/…`) from `?access_token=`, `Authorization: Token`,
/// or where a key goes (google-genai sends the token as its API key too).
fn ephemeral_token(headers: &HeaderMap, uri: &http::Uri) -> Option<Secret> {
    let from_query = uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.into_owned())
    });
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("token"))
        .map(|(_, t)| t.trim().to_owned());
    let as_key = proxy::client_key(headers, uri).map(str::to_owned);
    [from_query, from_header, as_key]
        .into_iter()
        .flatten()
        .find(|t| t.starts_with("auth_tokens/"))
        .map(Secret::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_the_query_the_token_scheme_or_the_key_slot() {
        let uri: http::Uri = "/ws/x?access_token=auth_tokens%2Fabc".parse().unwrap();
        let t = ephemeral_token(&HeaderMap::new(), &uri).unwrap();
        assert_eq!(t.expose(), "auth_tokens/abc");
        let bare: http::Uri = "/ws/x".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Token auth_tokens/t"),
        );
        assert_eq!(
            ephemeral_token(&h, &bare).unwrap().expose(),
            "auth_tokens/t"
        );
        let mut h = HeaderMap::new();
        h.insert("x-goog-api-key", HeaderValue::from_static("auth_tokens/k"));
        assert_eq!(
            ephemeral_token(&h, &bare).unwrap().expose(),
            "auth_tokens/k"
        );
        h.insert("x-goog-api-key", HeaderValue::from_static("gb-user-key"));
        assert!(ephemeral_token(&h, &bare).is_none());
    }

    #[test]
    fn credentials_stay_out_of_the_upstream_query() {
        let uri: http::Uri = "/ws/x?key=gb-1&access_token=auth_tokens/a&alt=1"
            .parse()
            .unwrap();
        assert_eq!(upstream_query(&uri).as_deref(), Some("alt=1"));
        let uri: http::Uri = "/ws/x?access_token=auth_tokens/a".parse().unwrap();
        assert_eq!(upstream_query(&uri), None);
    }
}
