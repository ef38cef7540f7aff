//! Google's per-project resources, for the fake upstream: every pool key is a Cloud project
//! of its own, and what a project creates — files (resumable upload), cachedContents,
//! batches, long-running operations (Veo) and interactions — only that project's key can
//! see. Another key gets what Google answers then: 403 `PERMISSION_DENIED` "You do not have
//! permission to access the File … or it may not exist." for files, 403 "CachedContent not
//! found (or permission denied)" for caches, 404 `NOT_FOUND` "Requested entity was not
//! found." for batches, operations and interactions (assumed from public reports; Google
//! does not document these bodies). References inside a request body (`fileData.fileUri`,
//! `cachedContent`, `previous_interaction_id`, a batch's `fileName`) are checked the same
//! way.
//!
//! The resumable upload follows Google's protocol: `start` answers an absolute
//! `X-Goog-Upload-URL` built from the request's `Host` (echoing `key=` when the start had
//! it in the query, as Google does), `upload` / `upload, finalize` with
//! `X-Goog-Upload-Offset`, `query` for the bytes received. Byte requests need no API key:
//! the upload id is the credential. Operations and batches finish after [`POLLS`] polls.
//!
//! Use: `let g = Google::new(); Upstream::start(move |r| g.handle(r).unwrap_or_else(…))`.
//!
//! `upload` holds the resumable upload, `created` the resources a call creates and later
//! calls read, poll, patch or cancel (caches, batches, operations, interactions); this file
//! the project bookkeeping, the routing and the reads every kind shares.

use super::upstream::{Recorded, Reply, chunk_with_finish};
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

mod created;
mod upload;

/// Polls of a batch or operation before it is done.
pub const POLLS: u32 = 2;

#[derive(Default)]
struct State {
    next: u64,
    uploads: BTreeMap<String, Upload>,
    /// Every resource by name (`files/…`, `cachedContents/…`, …): its project and object.
    objects: BTreeMap<String, Object>,
}

struct Upload {
    project: String,
    meta: Value,
    mime: String,
    declared: Option<u64>,
    bytes: Vec<u8>,
    host: String,
}

struct Object {
    project: String,
    value: Value,
    /// A file's bytes (for `:download`).
    data: Bytes,
    /// Polls left before a batch or operation is done.
    polls: u32,
}

#[derive(Default)]
pub struct Google {
    state: Mutex<State>,
}

fn google_error(code: u16, status: &str, message: &str) -> Reply {
    Reply::json(
        code,
        &json!({"error": {"code": code, "message": message, "status": status}}),
    )
}

fn not_found() -> Reply {
    google_error(404, "NOT_FOUND", "Requested entity was not found.")
}

/// What Google answers a project asking for another project's resource (or none at all).
fn denied(name: &str) -> Reply {
    match name.split_once('/') {
        Some(("files", id)) => google_error(
            403,
            "PERMISSION_DENIED",
            &format!("You do not have permission to access the File {id} or it may not exist."),
        ),
        Some(("cachedContents", _)) => google_error(
            403,
            "PERMISSION_DENIED",
            "CachedContent not found (or permission denied)",
        ),
        _ => not_found(),
    }
}

fn headers_reply(status: u16, headers: Vec<(&str, String)>, body: Bytes) -> Reply {
    Reply::WithHeaders {
        status,
        headers: headers
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        body,
    }
}

fn json_reply(v: &Value) -> Reply {
    Reply::json(200, v)
}

impl Google {
    pub fn new() -> Arc<Google> {
        Arc::new(Google::default())
    }

    /// The project (pool key) that owns `name`, if it exists.
    pub fn owner(&self, name: &str) -> Option<String> {
        let s = self.state.lock().unwrap();
        s.objects.get(name).map(|o| o.project.clone())
    }

    /// Drops `name` at Google, as when its project can no longer read it (users of
    /// python-genai report this when a payment was due); the owner then gets Google's 403.
    pub fn forget(&self, name: &str) {
        self.state.lock().unwrap().objects.remove(name);
    }

    /// Names of every resource, with their owners.
    pub fn all(&self) -> Vec<(String, String)> {
        let s = self.state.lock().unwrap();
        s.objects
            .iter()
            .map(|(n, o)| (n.clone(), o.project.clone()))
            .collect()
    }

    /// Answers the requests this model covers; `None` for everything else.
    pub fn handle(&self, r: &Recorded) -> Option<Reply> {
        let path = r.path.as_str();
        let host = r
            .headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("generativelanguage.googleapis.com")
            .to_owned();
        if path.starts_with("/upload/") {
            return Some(self.upload(r, &host));
        }
        let rest = path
            .strip_prefix("/v1beta/")
            .or_else(|| path.strip_prefix("/v1/"))
            .or_else(|| path.strip_prefix("/v1alpha/"))?;
        let Some(project) = r.key().map(str::to_owned) else {
            return Some(google_error(
                403,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
            ));
        };
        let segs: Vec<&str> = rest.split('/').collect();
        let m = r.method.as_str();
        Some(match (m, segs.as_slice()) {
            ("GET", ["files"]) => self.list(&project, "files", r),
            ("GET", ["cachedContents"]) => self.list(&project, "cachedContents", r),
            ("GET", ["batches"]) => self.list(&project, "batches", r),
            ("POST", ["cachedContents"]) => self.create_cache(&project, r),
            ("POST", ["interactions"]) => self.interact(&project, r),
            ("POST", ["models", call]) if call.ends_with(":generateContent") => {
                self.generate(&project, r)
            }
            ("POST", ["models", call])
                if call.ends_with(":batchGenerateContent")
                    || call.ends_with(":asyncBatchEmbedContent") =>
            {
                self.create_batch(&project, r)
            }
            ("POST", ["models", call]) if call.ends_with(":predictLongRunning") => {
                self.predict_long_running(&project, call, &host)
            }
            ("GET", ["models", _, "operations", _]) => self.poll(&project, rest),
            ("GET", ["files", id]) if id.ends_with(":download") => {
                self.download(&project, id.trim_end_matches(":download"))
            }
            (
                "GET",
                [
                    kind @ ("files" | "cachedContents" | "batches" | "interactions"),
                    id,
                ],
            ) => {
                let name = format!("{kind}/{id}");
                if *kind == "batches" {
                    self.poll(&project, &name)
                } else {
                    self.get(&project, &name)
                }
            }
            ("GET", ["operations", _]) => self.poll(&project, rest),
            ("PATCH", ["cachedContents", id]) => self.patch_cache(&project, id, r),
            ("DELETE", [kind, id]) => self.delete(&project, &format!("{kind}/{id}")),
            ("POST", ["batches", id]) if id.ends_with(":cancel") => {
                let name = format!("batches/{}", id.trim_end_matches(":cancel"));
                self.cancel(&project, &name)
            }
            _ => return None,
        })
    }

    fn id(&self, s: &mut State, prefix: &str) -> String {
        s.next += 1;
        format!("{prefix}{:06}x{}", s.next, rand::random::<u32>())
    }

    /// The reference a project may not use (the first in the body), if any.
    fn foreign_reference(&self, project: &str, body: &Value) -> Option<String> {
        let mut names = Vec::new();
        collect_references(body, &mut names);
        let s = self.state.lock().unwrap();
        names
            .into_iter()
            .find(|n| s.objects.get(n).is_none_or(|o| o.project != project))
    }

    fn generate(&self, project: &str, r: &Recorded) -> Reply {
        let body = serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null);
        if let Some(name) = self.foreign_reference(project, &body) {
            return denied(&name);
        }
        Reply::generate_ok("hello")
    }

    fn list(&self, project: &str, kind: &str, r: &Recorded) -> Reply {
        let q = r.query_pairs();
        let param = |n: &str| q.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let size: usize = param("pageSize").and_then(|v| v.parse().ok()).unwrap_or(10);
        let from: usize = param("pageToken").and_then(|v| v.parse().ok()).unwrap_or(0);
        let s = self.state.lock().unwrap();
        let prefix = format!("{kind}/");
        let mine: Vec<&Value> = s
            .objects
            .iter()
            .filter(|(n, o)| n.starts_with(&prefix) && o.project == project)
            .map(|(_, o)| &o.value)
            .collect();
        let page: Vec<&Value> = mine.iter().skip(from).take(size.max(1)).copied().collect();
        let mut out = json!({ kind: page });
        if from + page.len() < mine.len() {
            out["nextPageToken"] = json!((from + page.len()).to_string());
        }
        json_reply(&out)
    }

    fn get(&self, project: &str, name: &str) -> Reply {
        let s = self.state.lock().unwrap();
        match s.objects.get(name) {
            Some(o) if o.project == project => json_reply(&o.value),
            _ => denied(name),
        }
    }

    fn download(&self, project: &str, id: &str) -> Reply {
        let s = self.state.lock().unwrap();
        match s.objects.get(&format!("files/{id}")) {
            Some(o) if o.project == project => headers_reply(
                200,
                vec![("content-type", "application/octet-stream".into())],
                o.data.clone(),
            ),
            _ => denied(&format!("files/{id}")),
        }
    }

    fn delete(&self, project: &str, name: &str) -> Reply {
        let mut s = self.state.lock().unwrap();
        match s.objects.get(name) {
            Some(o) if o.project == project => {
                s.objects.remove(name);
                json_reply(&json!({}))
            }
            _ => denied(name),
        }
    }

    fn insert(&self, s: &mut State, project: &str, name: &str, value: Value, polls: u32) {
        s.objects.insert(
            name.to_owned(),
            Object {
                project: project.to_owned(),
                value,
                data: Bytes::new(),
                polls,
            },
        );
    }
}

/// Every resource a request body names: `fileUri` / `file_uri` (full URL or `files/…`),
/// `cachedContent`, `previous_interaction_id`, a batch's `fileName` / `file_name`.
pub fn collect_references(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if let Some(s) = v.as_str() {
                    match k.as_str() {
                        "fileUri" | "file_uri" | "fileName" | "file_name" => {
                            if let Some(i) = s.find("files/") {
                                let name = &s[i..];
                                let end = name.find([':', '?']).unwrap_or(name.len());
                                out.push(name[..end].to_owned());
                            }
                        }
                        "cachedContent" | "cached_content" => out.push(s.to_owned()),
                        "previous_interaction_id" | "previousInteractionId" => {
                            out.push(format!("interactions/{s}"))
                        }
                        _ => {}
                    }
                }
                collect_references(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_references(v, out)),
        _ => {}
    }
}
