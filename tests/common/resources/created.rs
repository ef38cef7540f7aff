//! The resources a call creates and later calls read, poll, patch or cancel: cachedContents,
//! batches, long-running operations (Veo, whose video becomes a file of its project) and
//! interactions. Batches and operations are done after [`POLLS`] polls.

use super::{Google, Object, POLLS, denied, json_reply};
use crate::common::upstream::{Recorded, Reply, chunk_with_finish};
use bytes::Bytes;
use serde_json::{Value, json};

impl Google {
    pub(super) fn create_cache(&self, project: &str, r: &Recorded) -> Reply {
        let body = serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null);
        if let Some(name) = self.foreign_reference(project, &body) {
            return denied(&name);
        }
        let mut s = self.state.lock().unwrap();
        let name = format!("cachedContents/{}", self.id(&mut s, "c"));
        let value = json!({
            "name": name,
            "model": body["model"],
            "displayName": body["displayName"].as_str().unwrap_or(""),
            "createTime": "2026-01-01T00:00:00.000000Z",
            "updateTime": "2026-01-01T00:00:00.000000Z",
            "expireTime": body["expireTime"].as_str().unwrap_or("2099-01-01T01:00:00.000000Z"),
            "usageMetadata": {"totalTokenCount": 4096},
        });
        self.insert(&mut s, project, &name, value.clone(), 0);
        json_reply(&value)
    }

    pub(super) fn patch_cache(&self, project: &str, id: &str, r: &Recorded) -> Reply {
        let body = serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null);
        let name = format!("cachedContents/{id}");
        let mut s = self.state.lock().unwrap();
        match s.objects.get_mut(&name) {
            Some(o) if o.project == project => {
                if let Some(t) = body["expireTime"].as_str() {
                    o.value["expireTime"] = json!(t);
                }
                json_reply(&o.value)
            }
            _ => denied(&name),
        }
    }

    pub(super) fn create_batch(&self, project: &str, r: &Recorded) -> Reply {
        let body = serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null);
        if let Some(name) = self.foreign_reference(project, &body) {
            return denied(&name);
        }
        let mut s = self.state.lock().unwrap();
        let name = format!("batches/{}", self.id(&mut s, "b"));
        let value = json!({
            "name": name,
            "metadata": {
                "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
                "name": name,
                "model": r.model().map(|m| format!("models/{m}")),
                "state": "BATCH_STATE_PENDING",
            },
        });
        self.insert(&mut s, project, &name, value.clone(), POLLS);
        json_reply(&value)
    }

    pub(super) fn cancel(&self, project: &str, name: &str) -> Reply {
        let mut s = self.state.lock().unwrap();
        match s.objects.get_mut(name) {
            Some(o) if o.project == project => {
                o.value["metadata"]["state"] = json!("BATCH_STATE_CANCELLED");
                o.polls = 0;
                json_reply(&json!({}))
            }
            _ => denied(name),
        }
    }

    pub(super) fn predict_long_running(&self, project: &str, call: &str, host: &str) -> Reply {
        let model = call.trim_end_matches(":predictLongRunning");
        let mut s = self.state.lock().unwrap();
        let name = format!("models/{model}/operations/{}", self.id(&mut s, "op"));
        let video = format!("files/{}", self.id(&mut s, "v"));
        let value = json!({"name": name, "done": false, "video": video, "host": host});
        self.insert(&mut s, project, &name, value, POLLS);
        json_reply(&json!({ "name": name }))
    }

    /// A batch or operation: not done for its first polls, then done (a Veo operation's
    /// video becomes a file of its project).
    pub(super) fn poll(&self, project: &str, name: &str) -> Reply {
        let mut s = self.state.lock().unwrap();
        let Some(o) = s.objects.get_mut(name).filter(|o| o.project == project) else {
            return denied(name);
        };
        if o.polls > 0 {
            o.polls -= 1;
            if name.starts_with("batches/") {
                o.value["metadata"]["state"] = json!("BATCH_STATE_RUNNING");
            }
            return json_reply(&without_private(&o.value));
        }
        if name.starts_with("batches/") {
            if o.value["metadata"]["state"] != "BATCH_STATE_CANCELLED" {
                o.value["metadata"]["state"] = json!("BATCH_STATE_SUCCEEDED");
                o.value["done"] = json!(true);
                o.value["response"] = json!({
                    "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput",
                    "inlinedResponses": {"inlinedResponses": [{"response": chunk_with_finish("batched", Some("STOP"))}]},
                });
            }
            return json_reply(&o.value);
        }
        let video = o.value["video"].as_str().unwrap_or_default().to_owned();
        let host = o.value["host"].as_str().unwrap_or_default().to_owned();
        let done = json!({
            "name": name,
            "done": true,
            "response": {
                "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse",
                "generateVideoResponse": {"generatedSamples": [
                    {"video": {"uri": format!("http://{host}/v1beta/{video}:download?alt=media")}}
                ]},
            },
        });
        o.value = done.clone();
        let file = json!({"name": video, "mimeType": "video/mp4", "state": "ACTIVE", "source": "GENERATED"});
        s.objects.entry(video).or_insert_with(|| Object {
            project: project.to_owned(),
            value: file,
            data: Bytes::from_static(b"\x00\x00\x00\x18ftypmp42 fake video"),
            polls: 0,
        });
        json_reply(&done)
    }

    pub(super) fn interact(&self, project: &str, r: &Recorded) -> Reply {
        let body = serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null);
        if let Some(name) = self.foreign_reference(project, &body) {
            return denied(&name);
        }
        let mut s = self.state.lock().unwrap();
        let id = self.id(&mut s, "v1_");
        let value = json!({
            "id": id,
            "model": body["model"],
            "status": if body["background"] == json!(true) { "in_progress" } else { "completed" },
            "previous_interaction_id": body["previous_interaction_id"],
            "outputs": [{"type": "text", "text": "hello from an interaction"}],
            "usage": {"total_input_tokens": 5, "total_output_tokens": 7, "total_tokens": 12},
        });
        self.insert(
            &mut s,
            project,
            &format!("interactions/{id}"),
            value.clone(),
            0,
        );
        json_reply(&value)
    }
}

fn without_private(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("video");
        o.remove("host");
    }
    v
}
