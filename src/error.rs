//! Errors of the request path and the one place they become responses, in the route's
//! error shape: Google's `{"error":{"code","message","status"}}` on native routes,
//! OpenAI's `{"error":{"message","type","code"}}` on compatible routes, and a plain
//! `{"error":"…"}` on the admin API. Upstream client errors are relayed, never re-wrapped,
//! so they do not pass through here. Messages never include secrets.

use crate::body::Body;
use http::{HeaderValue, Response, StatusCode, header};
use std::time::Duration;

/// Which error body shape a route answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Google,
    OpenAi,
    Admin,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "Method doesn't allow unregistered callers. Please use an API key (x-goog-api-key header, key= query parameter or Authorization: Bearer)."
    )]
    MissingKey,
    #[error("API key not valid. Please pass a valid API key.")]
    UnknownKey,
    #[error("This API key is disabled.")]
    UserDisabled,
    #[error("This API key has expired.")]
    UserExpired,
    #[error("Request body is larger than the limit of {0} bytes.")]
    BodyTooLarge(usize),
    #[error("{0}")]
    BadRequest(String),
    #[error("Not found.")]
    NotFound,
    #[error("Method not allowed on this path.")]
    MethodNotAllowed,
    #[error("All upstream keys are cooling down for this model; retry later.")]
    AllCooling(Duration),
    #[error("All upstream keys are busy; retry later.")]
    AllBusy(Duration),
    #[error(
        "No usable upstream key: the pool is empty, or every key is invalid, disabled or without the model in its tier."
    )]
    NoKey,
    #[error("The upstream could not be reached: {0}")]
    Unreachable(String),
    #[error("The request did not complete within its deadline.")]
    Deadline,
    #[error("Admin login required.")]
    AdminUnauthenticated,
    #[error("Cookie-authenticated changes need a JSON body or an X-Requested-With header.")]
    Csrf,
    #[error("Wrong password.")]
    WrongPassword,
    #[error("Too many login attempts from this address; retry later.")]
    LoginThrottled(Duration),
    #[error("A login from this address is already being checked; retry in a moment.")]
    LoginBusy,
    #[error("{0} not found.")]
    NoSuch(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("Unsupported content type: send {0}.")]
    UnsupportedMediaType(&'static str),
    #[error("Saving the change failed: {0}")]
    Store(String),
    #[error("This API key may not use model {0:?}.")]
    ModelNotAllowed(String),
    #[error("This API key exceeded its limit: {0}.")]
    UserLimit(&'static str, Duration),
    /// A resource that does not exist for this user (another user's looks the same).
    #[error("Requested entity was not found.")]
    ResourceNotFound,
    #[error("The request names resources held by different upstream keys: {0} and {1}.")]
    TwoOwners(String, String),
    #[error("The upstream key holding {0} is cooling down; retry later.")]
    OwnerCooling(String, Duration),
    #[error("The upstream key holding {0} was retired or removed; the resource is gone.")]
    OwnerGone(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingKey | Self::AdminUnauthenticated | Self::WrongPassword => {
                StatusCode::UNAUTHORIZED
            }
            Self::UnknownKey
            | Self::UserDisabled
            | Self::UserExpired
            | Self::Csrf
            | Self::ModelNotAllowed(_) => StatusCode::FORBIDDEN,
            Self::NoSuch(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::LoginThrottled(_) | Self::LoginBusy | Self::UserLimit(..) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound | Self::ResourceNotFound => StatusCode::NOT_FOUND,
            Self::TwoOwners(..) => StatusCode::BAD_REQUEST,
            Self::OwnerCooling(..) => StatusCode::TOO_MANY_REQUESTS,
            Self::OwnerGone(_) => StatusCode::CONFLICT,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::AllCooling(_) | Self::AllBusy(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::NoKey => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unreachable(_) => StatusCode::BAD_GATEWAY,
            Self::Deadline => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Google's canonical status name for this error.
    fn google_status(&self) -> &'static str {
        match self.status() {
            StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
            StatusCode::FORBIDDEN => "PERMISSION_DENIED",
            StatusCode::NOT_FOUND => "NOT_FOUND",
            StatusCode::TOO_MANY_REQUESTS => "RESOURCE_EXHAUSTED",
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY => "UNAVAILABLE",
            StatusCode::GATEWAY_TIMEOUT => "DEADLINE_EXCEEDED",
            StatusCode::INTERNAL_SERVER_ERROR => "INTERNAL",
            StatusCode::CONFLICT => "ABORTED",
            _ => "INVALID_ARGUMENT",
        }
    }

    /// OpenAI's error `type` and `code` for this error.
    fn openai_type_code(&self) -> (&'static str, &'static str) {
        match self {
            Self::MissingKey | Self::UnknownKey | Self::UserDisabled | Self::UserExpired => {
                ("invalid_request_error", "invalid_api_key")
            }
            Self::AllCooling(_) | Self::AllBusy(_) | Self::UserLimit(..) => {
                ("rate_limit_error", "rate_limit_exceeded")
            }
            Self::ModelNotAllowed(_) => ("invalid_request_error", "model_not_allowed"),
            Self::BodyTooLarge(_) | Self::BadRequest(_) | Self::MethodNotAllowed => {
                ("invalid_request_error", "invalid_request")
            }
            Self::NotFound => ("invalid_request_error", "not_found"),
            _ => ("server_error", "upstream_unavailable"),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::AllCooling(d) | Self::AllBusy(d) | Self::LoginThrottled(d) => Some(*d),
            Self::UserLimit(_, d) | Self::OwnerCooling(_, d) => Some(*d),
            Self::LoginBusy => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    pub fn body(&self, shape: Shape) -> serde_json::Value {
        let message = self.to_string();
        match shape {
            Shape::Google => serde_json::json!({"error": {
                "code": self.status().as_u16(),
                "message": message,
                "status": self.google_status(),
            }}),
            Shape::OpenAi => {
                let (kind, code) = self.openai_type_code();
                serde_json::json!({"error": {"message": message, "type": kind, "code": code}})
            }
            Shape::Admin => serde_json::json!({"error": message}),
        }
    }

    pub fn into_response(self, shape: Shape) -> Response<Body> {
        let body = serde_json::to_vec(&self.body(shape)).unwrap_or_default();
        let mut resp = Response::new(Body::full(body));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(d) = self.retry_after() {
            // Round up: a client retrying after the floor would find the key still cooling.
            let secs = d.as_millis().div_ceil(1000).max(1) as u64;
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_shape_has_code_message_status() {
        let v = ApiError::MissingKey.body(Shape::Google);
        assert_eq!(v["error"]["code"], 401);
        assert_eq!(v["error"]["status"], "UNAUTHENTICATED");
        assert!(v["error"]["message"].as_str().unwrap().contains("API key"));
    }

    #[test]
    fn openai_shape_has_message_type_code() {
        let v = ApiError::UnknownKey.body(Shape::OpenAi);
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "invalid_api_key");
    }

    #[test]
    fn cooling_answers_429_with_retry_after_rounded_up() {
        let r = ApiError::AllCooling(Duration::from_millis(2100)).into_response(Shape::Google);
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
    }
}
