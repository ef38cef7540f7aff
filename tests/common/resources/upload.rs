//! Google's resumable upload: `start` answers an absolute `X-Goog-Upload-URL` for the
//! request's `Host`, `upload` / `upload, finalize` the offset received, `query` the bytes so
//! far; the finished file belongs to the project that started the upload.

use super::{Google, Object, Upload, google_error, headers_reply, json_reply, not_found};
use crate::common::upstream::{Recorded, Reply};
use bytes::Bytes;
use serde_json::{Value, json};

impl Google {
    pub(super) fn upload(&self, r: &Recorded, host: &str) -> Reply {
        let command = r
            .headers
            .get("x-goog-upload-command")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let upload_id = r
            .query_pairs()
            .into_iter()
            .find(|(k, _)| k == "upload_id")
            .map(|(_, v)| v);
        let mut s = self.state.lock().unwrap();
        let Some(upload_id) = upload_id else {
            if command != "start" {
                return google_error(
                    400,
                    "INVALID_ARGUMENT",
                    "Upload has already been terminated.",
                );
            }
            let Some(project) = r.key().map(str::to_owned) else {
                return google_error(
                    403,
                    "PERMISSION_DENIED",
                    "Method doesn't allow unregistered callers.",
                );
            };
            let header = |n: &str| {
                r.headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let meta = serde_json::from_slice::<Value>(&r.body).unwrap_or(json!({}));
            let id = self.id(&mut s, "AU");
            s.uploads.insert(
                id.clone(),
                Upload {
                    project,
                    meta,
                    mime: header("x-goog-upload-header-content-type")
                        .unwrap_or_else(|| "application/octet-stream".into()),
                    declared: header("x-goog-upload-header-content-length")
                        .and_then(|v| v.parse().ok()),
                    bytes: Vec::new(),
                    host: host.to_owned(),
                },
            );
            let mut url = format!(
                "http://{host}{}?upload_id={id}&upload_protocol=resumable",
                r.path
            );
            if let Some((_, key)) = r.query_pairs().into_iter().find(|(k, _)| k == "key") {
                url.push_str(&format!("&key={key}"));
            }
            return headers_reply(
                200,
                vec![
                    ("x-goog-upload-url", url),
                    ("x-goog-upload-status", "active".into()),
                    ("x-goog-upload-chunk-granularity", "8388608".into()),
                    ("content-type", "text/plain; charset=utf-8".into()),
                ],
                Bytes::new(),
            );
        };
        let Some(up) = s.uploads.get_mut(&upload_id) else {
            return google_error(404, "NOT_FOUND", "Upload session not found.");
        };
        if command == "query" {
            let received = up.bytes.len().to_string();
            return headers_reply(
                200,
                vec![
                    ("x-goog-upload-status", "active".into()),
                    ("x-goog-upload-size-received", received),
                ],
                Bytes::new(),
            );
        }
        let offset: Option<usize> = r
            .headers
            .get("x-goog-upload-offset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        if !command.contains("upload") || offset != Some(up.bytes.len()) {
            return google_error(400, "INVALID_ARGUMENT", "Invalid upload offset or command.");
        }
        up.bytes.extend_from_slice(&r.body);
        if !command.contains("finalize") {
            return headers_reply(
                200,
                vec![("x-goog-upload-status", "active".into())],
                Bytes::new(),
            );
        }
        let up = s.uploads.remove(&upload_id).expect("present");
        if up.declared.is_some_and(|n| n != up.bytes.len() as u64) {
            return google_error(400, "INVALID_ARGUMENT", "Upload size does not match.");
        }
        let id = self.id(&mut s, "f");
        let name = format!("files/{id}");
        let display = up.meta["file"]["display_name"]
            .as_str()
            .or(up.meta["file"]["displayName"].as_str())
            .unwrap_or("")
            .to_owned();
        let file = json!({
            "name": name,
            "displayName": display,
            "mimeType": up.mime,
            "sizeBytes": up.bytes.len().to_string(),
            "createTime": "2026-01-01T00:00:00.000000Z",
            "expirationTime": "2026-01-03T00:00:00.000000Z",
            "state": "ACTIVE",
            "source": "UPLOADED",
            "uri": format!("http://{}/v1beta/{name}", up.host),
        });
        s.objects.insert(
            name,
            Object {
                project: up.project,
                value: file.clone(),
                data: Bytes::from(up.bytes),
                polls: 0,
            },
        );
        headers_reply(
            200,
            vec![
                ("x-goog-upload-status", "final".into()),
                ("content-type", "application/json; charset=UTF-8".into()),
            ],
            Bytes::from(json!({ "file": file }).to_string()),
        )
    }
}
