//! The OpenAI-compatible routes, forwarded to Gemini's own OpenAI-compatible upstream
//! (`{openai_base}/chat/completions`, …) with the pool key as `Authorization: Bearer`.
//! They ride the same plan/attempt path as the native routes.
//!
//! Bodies stay opaque except for two edits, made only when needed (otherwise the bytes go
//! through untouched): the original project's top-level `thinking_budget` /
//! `include_thoughts` move into `extra_body.google.thinking_config`, and a stream asks for
//! `stream_options.include_usage` (for token accounting) — when the client did not ask,
//! the usage-only chunk is held back from it.

use super::{KeyIn, Plan, admit, authenticate, forward_headers, names, read_body, upstream_uri};
use crate::app::AppState;
use crate::body::Body;
use crate::body::ReqBody;
use crate::error::{ApiError, Shape};
use crate::logs::Trace;
use crate::relay::ErrorStyle;
use crate::router::OpenAiCall;
use crate::upstream::Lane;
use bytes::Bytes;
use http::{Method, Request, Response};
use serde_json::{Map, Value, json};
use std::sync::Arc;

const FORWARDED: &[&str] = &["content-type", "accept", "user-agent"];

/// The OpenAI routes; `model_path` is the model id of `GET /v1/models/{id}`, if any.
pub async fn handle(
    state: &Arc<AppState>,
    req: Request<ReqBody>,
    call: OpenAiCall,
    model_path: Option<String>,
    trace: &mut Trace,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    let user = authenticate(state, &parts.headers, &parts.uri, trace.time)?;
    trace.route = Some(call.name());
    trace.user = Some(user.name.clone());
    if let Some(m) = &model_path {
        names::model_id(m, false)?;
    }
    let base = state.config.upstream.openai_base();
    let uri = upstream_uri(
        state,
        &base,
        &upstream_path(call, model_path.as_deref()),
        None,
    )?;
    let headers = forward_headers(&parts.headers, FORWARDED);
    let edited = if parts.method == Method::POST {
        let raw = read_body(body, &parts.headers, state.config.server.max_body_bytes).await?;
        Some(edit_body(call, raw)?)
    } else {
        None
    };
    let model = match &edited {
        Some(e) => e.model.clone(),
        None => model_path.unwrap_or_default(),
    };
    names::model_id(&model, true)?;
    trace.stream = edited.as_ref().is_some_and(|e| e.stream);
    let permit = admit(state, &user, &model, trace).await?;
    let mut plan = Plan {
        shape: Shape::OpenAi,
        style: ErrorStyle::OpenAi,
        translate_error: Some(error_body),
        model,
        method: parts.method.clone(),
        uri,
        headers,
        body: Bytes::new(),
        key_in: KeyIn::Bearer,
        stream: false,
        hide_events: None,
        permit,
        lane: Lane::of(&parts.extensions),
    };
    if let Some(edited) = edited {
        plan.stream = edited.stream;
        if edited.hide_usage {
            plan.hide_events = Some(is_usage_only_chunk);
        }
        plan.body = edited.body;
    }
    Ok(super::execute(state, plan, trace).await)
}

/// The path under Google's OpenAI-compatible base that `call` goes to.
fn upstream_path(call: OpenAiCall, model: Option<&str>) -> String {
    match (call, model) {
        (OpenAiCall::Chat, _) => "/chat/completions".to_owned(),
        (OpenAiCall::Embeddings, _) => "/embeddings".to_owned(),
        (OpenAiCall::Images, _) => "/images/generations".to_owned(),
        (OpenAiCall::Models, None) => "/models".to_owned(),
        (OpenAiCall::Models, Some(m)) => format!("/models/{m}"),
    }
}

struct Edited {
    body: Bytes,
    model: String,
    stream: bool,
    hide_usage: bool,
}

/// Reads what the proxy needs from the body and makes the two allowed edits.
fn edit_body(call: OpenAiCall, raw: Bytes) -> Result<Edited, ApiError> {
    let mut value: Value = serde_json::from_slice(&raw)
        .map_err(|e| ApiError::BadRequest(format!("The request body is not valid JSON: {e}")))?;
    let Some(obj) = value.as_object_mut() else {
        return Err(ApiError::BadRequest(
            "The request body must be a JSON object.".into(),
        ));
    };
    // Cool-downs are per model whichever surface was used: `models/x` and `x` are one model.
    let model = obj
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim_start_matches("models/")
        .to_owned();
    let stream =
        call == OpenAiCall::Chat && obj.get("stream").and_then(Value::as_bool) == Some(true);
    let mut changed = false;
    if call == OpenAiCall::Chat {
        changed |= move_thinking(obj);
    }
    let mut hide_usage = false;
    if stream {
        let asked = obj
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true);
        if !asked {
            let opts = obj
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(opts) = opts.as_object_mut() {
                opts.insert("include_usage".into(), Value::Bool(true));
                hide_usage = true;
                changed = true;
            }
        }
    }
    let body = if changed {
        Bytes::from(serde_json::to_vec(&value).expect("a JSON value serialises"))
    } else {
        raw
    };
    Ok(Edited {
        body,
        model,
        stream,
        hide_usage,
    })
}

/// Moves top-level `thinking_budget` / `include_thoughts` into
/// `extra_body.google.thinking_config`, keeping any values already there.
fn move_thinking(obj: &mut Map<String, Value>) -> bool {
    let budget = obj.shift_remove("thinking_budget");
    let include = obj.shift_remove("include_thoughts");
    if budget.is_none() && include.is_none() {
        return false;
    }
    let config = obj
        .entry("extra_body")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .map(|eb| eb.entry("google").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
        .map(|g| g.entry("thinking_config").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut);
    if let Some(config) = config {
        if let Some(b) = budget {
            config.entry("thinking_budget").or_insert(b);
        }
        if let Some(i) = include {
            config.entry("include_thoughts").or_insert(i);
        }
    }
    true
}

/// True for a chunk that carries only usage (`"choices": []`), sent because the proxy asked.
pub fn is_usage_only_chunk(event: &[u8]) -> bool {
    let Some(data) = sse_data(event) else {
        return false;
    };
    if !memchr_contains(data, b"\"usage\"") {
        return false;
    }
    serde_json::from_slice::<Value>(data).is_ok_and(|v| {
        v.get("choices")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
            && v.get("usage").is_some_and(|u| !u.is_null())
    })
}

fn sse_data(event: &[u8]) -> Option<&[u8]> {
    let text = event.trim_ascii();
    text.strip_prefix(b"data:").map(<[u8]>::trim_ascii)
}

fn memchr_contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

/// An upstream error in OpenAI's shape, keeping Google's status. Google's compatible
/// layer answers `[{"error":{code,message,status}}]`; an answer already in OpenAI's
/// shape (`error.type` present) is kept as it is.
pub fn error_body(status: u16, body: &[u8]) -> Option<Bytes> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let error = match &value {
        Value::Array(items) => items.first()?.get("error")?,
        other => other.get("error")?,
    };
    if error.get("type").is_some() && !value.is_array() {
        return None;
    }
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("upstream error");
    let code = error.get("status").and_then(Value::as_str).unwrap_or("");
    let kind = match status {
        401 | 403 => "authentication_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    };
    let out = json!({"error": {"message": message, "type": kind, "code": code, "param": null}});
    Some(Bytes::from(out.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(body: &str) -> (Value, Edited) {
        let e = edit_body(OpenAiCall::Chat, Bytes::from(body.to_owned())).unwrap();
        (serde_json::from_slice(&e.body).unwrap(), e)
    }

    #[test]
    fn untouched_body_keeps_its_bytes() {
        let raw = r#"{"model":"gemini-2.5-flash",  "messages":[], "response_format":{"type":"json_schema"}}"#;
        let e = edit_body(OpenAiCall::Chat, Bytes::from(raw)).unwrap();
        assert_eq!(e.body, raw.as_bytes());
        assert_eq!(e.model, "gemini-2.5-flash");
        assert!(!e.stream);
    }

    #[test]
    fn thinking_fields_move_into_extra_body() {
        let (v, _) =
            edit(r#"{"model":"m","thinking_budget":512,"include_thoughts":true,"tools":[1]}"#);
        assert_eq!(
            v["extra_body"]["google"]["thinking_config"]["thinking_budget"],
            512
        );
        assert_eq!(
            v["extra_body"]["google"]["thinking_config"]["include_thoughts"],
            true
        );
        assert!(v.get("thinking_budget").is_none() && v.get("include_thoughts").is_none());
        assert_eq!(v["tools"], json!([1]));
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["model", "tools", "extra_body"], "order kept");
    }

    #[test]
    fn streams_ask_for_usage_and_remember_to_hide_it() {
        let (v, e) = edit(r#"{"model":"m","stream":true}"#);
        assert!(e.stream && e.hide_usage);
        assert_eq!(v["stream_options"]["include_usage"], true);
        let (_, e) = edit(r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#);
        assert!(e.stream && !e.hide_usage);
    }

    #[test]
    fn usage_only_chunks_are_recognised() {
        assert!(is_usage_only_chunk(
            b"data: {\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\n"
        ));
        assert!(!is_usage_only_chunk(
            b"data: {\"choices\":[{\"delta\":{}}],\"usage\":{\"total_tokens\":3}}\n\n"
        ));
        assert!(!is_usage_only_chunk(b"data: [DONE]\n\n"));
    }

    #[test]
    fn google_list_errors_become_openai_errors() {
        let body = br#"[{"error":{"code":400,"message":"bad model","status":"INVALID_ARGUMENT"}}]"#;
        let v: Value = serde_json::from_slice(&error_body(400, body).unwrap()).unwrap();
        assert_eq!(v["error"]["message"], "bad model");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "INVALID_ARGUMENT");
        let native = br#"{"error":{"message":"x","type":"invalid_request_error"}}"#;
        assert!(error_body(400, native).is_none());
    }

    #[test]
    fn non_json_body_is_a_clear_400() {
        let err = edit_body(OpenAiCall::Chat, Bytes::from_static(b"{nope"))
            .err()
            .unwrap();
        assert_eq!(err.status(), 400);
    }
}
