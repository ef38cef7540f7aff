//! The error event a cut stream ends with, in the route's error shape and the stream's
//! framing, so the client sees a well-formed end. A pure function; no I/O.

use super::{ErrorStyle, Format};
use bytes::Bytes;

/// The event that ends a `format` stream cut for `reason`; `started` when part of the
/// answer already went to the client (a JSON array is then closed, not opened).
pub(super) fn error_event(style: ErrorStyle, format: Format, started: bool, reason: &str) -> Bytes {
    let error = match style {
        ErrorStyle::Google => serde_json::json!({"error": {
            "code": 502,
            "message": format!("The upstream stream was interrupted: {reason}"),
            "status": "UNAVAILABLE",
        }}),
        ErrorStyle::OpenAi => serde_json::json!({"error": {
            "message": format!("The upstream stream was interrupted: {reason}"),
            "type": "server_error",
            "code": "upstream_interrupted",
        }}),
    };
    let nl = if style == ErrorStyle::Google {
        "\r\n"
    } else {
        "\n"
    };
    let tail = match format {
        Format::Sse => format!("data: {error}{nl}{nl}"),
        Format::JsonArray if !started => format!("[{error}]"),
        Format::JsonArray => format!(",\r\n{error}]"),
        Format::Passthrough => String::new(),
    };
    Bytes::from(tail)
}
