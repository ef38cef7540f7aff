//! What a client may name on a proxy route, checked once its key is known and before the
//! name is logged, counted or sent: model ids (path, OpenAI body, tuned models) and the
//! segments of a native path. Model ids are what Google's names use — letters, digits,
//! `.`, `-`, `_`, at most [`MAX_MODEL_LEN`] bytes, `/` only after `models` or
//! `tunedModels` — and no path segment is a dot-segment (`.`, `..`, or either
//! percent-encoded), which an upstream would resolve into another method.

use crate::error::ApiError;

/// The longest model id accepted; Google's are far shorter.
pub const MAX_MODEL_LEN: usize = 128;

/// The collections a model id may be prefixed with where a `/` is allowed.
const PREFIXES: &[&str] = &["models", "tunedModels"];

/// Checks a model id; `slash` allows `models/x` and `tunedModels/x` (a request body's
/// `model`). An empty id (a route without a model) passes.
pub fn model_id(id: &str, slash: bool) -> Result<(), ApiError> {
    if id.is_empty() {
        return Ok(());
    }
    let bare = match id.split_once('/') {
        Some((prefix, rest)) if slash && PREFIXES.contains(&prefix) => rest,
        _ => id,
    };
    let ok = id.len() <= MAX_MODEL_LEN
        && !bare.is_empty()
        && bare != "."
        && bare != ".."
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "The model name is not valid: use letters, digits, '.', '-' and '_' \
             (at most {MAX_MODEL_LEN} characters), as in \"gemini-2.5-flash\"."
        )))
    }
}

/// Refuses a path with a dot-segment, plain or percent-encoded (`%2e`, `.%2E`, …).
pub fn path(path: &str) -> Result<(), ApiError> {
    let dotted = path.split('/').any(|seg| {
        let seg = seg.split(':').next().unwrap_or(seg);
        let decoded = seg.replace("%2e", ".").replace("%2E", ".");
        decoded == "." || decoded == ".."
    });
    if dotted {
        return Err(ApiError::BadRequest(
            "The request path may not contain '.' or '..' segments.".into(),
        ));
    }
    Ok(())
}

/// The id a tuned-model path names (`tunedModels/{id}…`), to check as a model id.
pub fn tuned_model<'a>(segs: &[&'a str]) -> Option<&'a str> {
    match segs {
        ["tunedModels", id, ..] => id.split(':').next(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_model_names_pass() {
        for id in [
            "gemini-2.5-flash",
            "gemini-2.5-flash-preview-05-20",
            "text-embedding-004",
            "gemini-exp-1206",
            "imagen-4.0-generate-001",
            "my_tuned.model-1",
        ] {
            assert!(model_id(id, false).is_ok(), "{id}");
        }
        assert!(model_id("models/gemini-2.5-flash", true).is_ok());
        assert!(model_id("tunedModels/abc-123", true).is_ok());
        assert!(model_id("", false).is_ok());
    }

    #[test]
    fn anything_else_is_a_400() {
        let long = "a".repeat(MAX_MODEL_LEN + 1);
        for id in [
            ".",
            "..",
            "%2e%2e",
            "a b",
            "a:b",
            "a\"b",
            "é",
            "models/x",
            "../x",
            "files/x",
            long.as_str(),
        ] {
            let err = model_id(id, false).expect_err(id);
            assert_eq!(err.status(), 400, "{id}");
        }
        for id in [
            "models/..",
            "tunedModels/",
            "files/x",
            "models/a/b",
            "tunedModels/.",
        ] {
            assert!(model_id(id, true).is_err(), "{id}");
        }
        assert!(model_id(&"a".repeat(MAX_MODEL_LEN), false).is_ok());
    }

    #[test]
    fn dot_segments_plain_or_encoded_are_refused() {
        assert!(path("/v1beta/files/abc").is_ok());
        assert!(path("/v1beta/models/gemini-2.5-flash:generateContent").is_ok());
        assert!(path("/v1beta/files/a.b").is_ok());
        for p in [
            "/v1beta/files/../models/x:generateContent",
            "/v1beta/./files",
            "/v1beta/files/%2e%2e/models/x:generateContent",
            "/v1beta/files/.%2E/x",
            "/v1beta/models/..:generateContent",
        ] {
            assert_eq!(path(p).expect_err(p).status(), 400, "{p}");
        }
    }

    #[test]
    fn the_tuned_model_a_path_names() {
        assert_eq!(
            tuned_model(&["tunedModels", "t1:generateContent"]),
            Some("t1")
        );
        assert_eq!(tuned_model(&["files", "f"]), None);
    }
}
