//! The proxy routes: authenticate the user key, read the body once (bounded), turn the
//! request into a [`Plan`] for the upstream, and run it with retries (`attempt`).
//!
//! Bodies are opaque: native requests are forwarded byte for byte. The client's key is
//! removed from every place it can hide (header, `?key=`, `Authorization`) before anything
//! is sent; the pool key goes only in a header, never in a URL.
//!
//! Nothing a client without a valid key sends is recorded: a request is logged (its
//! route set in the [`Trace`]) only once its key is accepted, and refusals before that
//! are counted in `/metrics` by reason. Names it carries are checked (`names`) before
//! they are logged, and a model the user may not use is logged without it.

mod attempt;
mod headers;
mod lists;
mod names;
pub mod openai;
mod queue;
mod resources;
mod send;
mod upload;
mod upload_url;

use crate::app::AppState;
use crate::body::ReqBody;
use crate::error::{ApiError, Shape};
use crate::limits::Permit;
use crate::logs::Trace;
use crate::metrics::Rejected;
use crate::native::Act;
use crate::relay::ErrorStyle;
use crate::router::GeminiCall;
use crate::store::UserRecord;
use crate::upstream::Lane;
use crate::users::AuthError;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt, Limited};
use std::sync::Arc;

pub use attempt::execute;
pub use queue::acquire;

/// Where the pool key goes on the upstream request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyIn {
    /// `x-goog-api-key` (native API).
    GoogHeader,
    /// `Authorization: Bearer` (OpenAI-compatible API).
    Bearer,
}

/// An upstream error's body in a route's shape, from its status and Google's body; `None`
/// keeps Google's.
pub type TranslateError = fn(status: u16, body: &[u8]) -> Option<Bytes>;

/// One client request, ready to be sent upstream with any pool key.
pub struct Plan {
    pub shape: Shape,
    pub style: ErrorStyle,
    /// How an upstream error is put in the route's shape before it is relayed; `None`
    /// relays it as Google sent it.
    pub translate_error: Option<TranslateError>,
    /// The model the request is for: cool-downs are kept per (key, model).
    pub model: String,
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub key_in: KeyIn,
    /// The answer is streamed: fail over only before the first event.
    pub stream: bool,
    /// Events held back from the client (the usage-only chunk the proxy asked for on
    /// its behalf).
    pub hide_events: Option<fn(&[u8]) -> bool>,
    /// The user's admission: held until the answer's last byte, charged its tokens.
    pub permit: Arc<Permit>,
    /// Whose upstream connections carry it: the serving thread's that took the request.
    pub lane: Lane,
}

/// Headers a Gemini client sends that Google uses; everything else stays here.
const FORWARDED: &[&str] = &[
    "content-type",
    "accept",
    "user-agent",
    "x-goog-api-client",
    "x-server-timeout",
    "x-goog-user-project",
];

/// The user key from any of the three places clients put it.
pub fn client_key<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Option<&'a str> {
    if let Some(v) = headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    if let Some(q) = uri.query() {
        for pair in q.split('&') {
            if let Some(v) = pair.strip_prefix("key=") {
                return Some(v);
            }
        }
    }
    crate::auth::bearer(headers)
}

/// The query string without `key=…`, to forward upstream.
pub fn query_without_key(uri: &Uri) -> Option<String> {
    let q = uri.query()?;
    let kept: Vec<&str> = q
        .split('&')
        .filter(|p| !p.is_empty() && *p != "key" && !p.starts_with("key="))
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// The user of a request's key; a refusal is counted by reason (and not logged: the
/// caller sets the trace's route only after this succeeds). `now_ms`: when the request
/// arrived (Unix ms).
pub fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    now_ms: i64,
) -> Result<Arc<UserRecord>, ApiError> {
    let now = now_ms / 1000;
    state
        .users
        .authenticate(client_key(headers, uri), now)
        .map_err(|e| {
            let (why, err) = match e {
                AuthError::Missing => (Rejected::MissingKey, ApiError::MissingKey),
                AuthError::Unknown => (Rejected::UnknownKey, ApiError::UnknownKey),
                AuthError::Disabled => (Rejected::UserDisabled, ApiError::UserDisabled),
                AuthError::Expired => (Rejected::UserExpired, ApiError::UserExpired),
            };
            state.metrics.rejected(why);
            err
        })
}

/// The user's admission for `model`; the trace names the model unless the user may not
/// use it (a refused name is not recorded).
pub async fn admit(
    state: &AppState,
    user: &UserRecord,
    model: &str,
    trace: &mut Trace,
) -> Result<Arc<Permit>, ApiError> {
    let admitted = state.limits.admit(user, model, trace.time).await;
    if !matches!(admitted, Err(ApiError::ModelNotAllowed(_))) {
        model.clone_into(&mut trace.model);
    }
    admitted.map(Arc::new)
}

/// Reads the whole request body, refusing more than `limit` bytes without reading them.
pub async fn read_body(
    body: ReqBody,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::BodyTooLarge(limit));
    }
    // By hand rather than `collect()`: a body that comes in one piece (the usual case)
    // is kept as it is, with no list of pieces and no copy.
    let mut body = Limited::new(body, limit);
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(ApiError::BodyTooLarge(limit));
            }
            Err(_) => {
                return Err(ApiError::BadRequest(
                    "The request body could not be read.".into(),
                ));
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match (&mut joined, first.take()) {
            (Some(all), _) => all.extend_from_slice(&data),
            (None, None) => first = Some(data),
            (None, Some(one)) => {
                let mut all = BytesMut::with_capacity(one.len() + data.len());
                all.extend_from_slice(&one);
                all.extend_from_slice(&data);
                joined = Some(all);
            }
        }
    }
    Ok(match joined {
        Some(all) => all.freeze(),
        None => first.unwrap_or_default(),
    })
}

/// Copies the forwardable client headers.
pub fn forward_headers(from: &HeaderMap, names: &[&'static str]) -> HeaderMap {
    // One pass over what the client sent (a handful of headers) instead of a hashed
    // look-up per name; room for the pool key and `Host`, added per attempt.
    let mut out = HeaderMap::with_capacity(names.len() + 2);
    for (name, v) in from {
        if names.contains(&name.as_str()) && !out.contains_key(name) {
            out.insert(name.clone(), v.clone());
        }
    }
    out
}

/// Builds the upstream URI from a base URL, a path and an optional query.
pub fn upstream_uri(
    state: &AppState,
    base: &str,
    path: &str,
    query: Option<&str>,
) -> Result<Uri, ApiError> {
    state
        .upstream
        .uri(base, path, query)
        .ok_or_else(|| ApiError::BadRequest("The request path or query is not valid.".into()))
}

/// The native Gemini routes.
pub async fn gemini(
    state: &Arc<AppState>,
    req: Request<ReqBody>,
    call: GeminiCall,
    model: String,
    trace: &mut Trace,
) -> Result<http::Response<crate::body::Body>, ApiError> {
    if let GeminiCall::Native(native) = call {
        if native.act == Act::Upload {
            return upload::handle(state, req, native.label, trace).await;
        }
        return resources::handle(state, req, native, trace).await;
    }
    let (parts, body) = req.into_parts();
    let user = authenticate(state, &parts.headers, &parts.uri, trace.time)?;
    trace.route = Some(call.name());
    trace.stream = call == GeminiCall::Stream;
    trace.user = Some(user.name.clone());
    names::model_id(&model, false)?;
    let permit = admit(state, &user, &model, trace).await?;
    let path = parts.uri.path();
    let body = read_body(body, &parts.headers, state.config.server.max_body_bytes).await?;
    let query = query_without_key(&parts.uri);
    let uri = upstream_uri(
        state,
        &state.config.upstream.base_url,
        path,
        query.as_deref(),
    )?;
    let mut headers = forward_headers(&parts.headers, FORWARDED);
    if call == GeminiCall::Stream && !headers.contains_key(header::ACCEPT) {
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    }
    let plan = Plan {
        shape: Shape::Google,
        style: ErrorStyle::Google,
        translate_error: None,
        model,
        method: parts.method,
        uri,
        headers,
        body,
        key_in: KeyIn::GoogHeader,
        stream: call == GeminiCall::Stream,
        hide_events: None,
        permit,
        lane: Lane::of(&parts.extensions),
    };
    // A request naming uploaded files, a cache or an interaction goes to their key.
    let names = crate::refs::references(&plan.body);
    if !names.is_empty() {
        return resources::pinned(state, plan, &user, &names, trace).await;
    }
    Ok(execute(state, plan, trace).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_key_from_header_query_or_bearer() {
        let uri: Uri = "/v1beta/models?alt=sse&key=gb-q".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(client_key(&h, &uri), Some("gb-q"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer gb-b"),
        );
        let bare: Uri = "/v1beta/models".parse().unwrap();
        assert_eq!(client_key(&h, &bare), Some("gb-b"));
        h.insert("x-goog-api-key", HeaderValue::from_static("gb-h"));
        assert_eq!(client_key(&h, &uri), Some("gb-h"));
    }

    #[test]
    fn key_is_dropped_from_the_forwarded_query() {
        let uri: Uri = "/x?alt=sse&key=gb-secret&pageSize=5".parse().unwrap();
        assert_eq!(
            query_without_key(&uri).as_deref(),
            Some("alt=sse&pageSize=5")
        );
        let only: Uri = "/x?key=gb-secret".parse().unwrap();
        assert_eq!(query_without_key(&only), None);
        let lookalike: Uri = "/x?keyword=a&monkey=b".parse().unwrap();
        assert_eq!(
            query_without_key(&lookalike).as_deref(),
            Some("keyword=a&monkey=b")
        );
    }
}
