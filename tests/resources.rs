//! Files, caches, batches, operations and interactions through the gateway, against a fake
//! Google that keeps them per project (one project per pool key, `common::resources`):
//! every later call reaches the key that created the resource, another user gets 404,
//! the owner key cooling gives 429, a restart keeps the affinity, no key is retired.

mod common;

use common::resources::Google;
use common::{Config, Daemon, Recorded, Reply, USER_KEY, Upstream, client, keys, ok_or_stream};
use http::Method;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BOB_KEY: &str = "gb-test-bob-0123456789abcdef01";

/// A fake Google with three projects; `throttle` makes one key answer 429 on uploads.
struct World {
    up: Upstream,
    google: Arc<Google>,
    throttle: Arc<Mutex<Option<(String, &'static str)>>>,
}

async fn world() -> World {
    let google = Google::new();
    let throttle: Arc<Mutex<Option<(String, &'static str)>>> = Arc::default();
    let (g, t) = (google.clone(), throttle.clone());
    let up = Upstream::start(move |r: &Recorded| {
        if let Some((key, path)) = t.lock().unwrap().clone() {
            if r.key() == Some(key.as_str()) && r.path.ends_with(path) {
                return Reply::resource_exhausted("30s");
            }
        }
        g.handle(r).unwrap_or_else(|| ok_or_stream(r))
    })
    .await;
    World {
        up,
        google,
        throttle,
    }
}

async fn daemon(w: &World) -> Daemon {
    let cfg = Config::new(&w.up).keys(keys(3)).user("bob", BOB_KEY);
    Daemon::start(&cfg).await
}

fn auth(key: &str) -> Vec<(&str, &str)> {
    vec![("x-goog-api-key", key)]
}

/// The resumable upload as google-genai does it: start (with the user key), then one
/// `upload, finalize` request to the upload URL without any key. Answers the file.
async fn upload(d: &Daemon, user: &str, bytes: &'static [u8]) -> Value {
    let len = bytes.len().to_string();
    let mut h = auth(user);
    h.extend([
        ("x-goog-upload-protocol", "resumable"),
        ("x-goog-upload-command", "start"),
        ("x-goog-upload-header-content-length", len.as_str()),
        ("x-goog-upload-header-content-type", "text/plain"),
    ]);
    let body = r#"{"file":{"display_name":"notes"}}"#;
    let start = client::post(&d.url("/upload/v1beta/files"), &h, body).await;
    assert_eq!(start.status, 200, "{}", start.text());
    let url = start.header("x-goog-upload-url").expect("an upload URL");
    assert!(
        url.starts_with(&d.url("/upload/v1beta/files?")),
        "the upload URL points at the gateway: {url}"
    );
    assert!(!url.contains("key="), "no key in the upload URL: {url}");
    let h = [
        ("x-goog-upload-command", "upload, finalize"),
        ("x-goog-upload-offset", "0"),
        ("content-type", "text/plain"),
    ];
    let done = client::post(&url, &h, bytes).await;
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(
        done.header("x-goog-upload-status").as_deref(),
        Some("final")
    );
    done.json()["file"].clone()
}

fn generate_with(file_uri: &str) -> String {
    json!({"contents": [{"role": "user", "parts": [
        {"fileData": {"mimeType": "text/plain", "fileUri": file_uri}},
        {"text": "Summarise the file."}
    ]}]})
    .to_string()
}

async fn generate(d: &Daemon, user: &str, body: String) -> common::Response {
    let path = common::model_path(common::FLASH, "generateContent");
    client::post(&d.url(&path), &auth(user), body).await
}

/// Pool keys of requests whose path contains `part`.
fn keys_at(up: &Upstream, part: &str) -> Vec<String> {
    up.requests()
        .iter()
        .filter(|r| r.path.contains(part))
        .map(|r| r.key().unwrap_or("<none>").to_owned())
        .collect()
}

/// Every key still serves: plain requests reach all three.
async fn no_key_retired(w: &World, d: &Daemon) {
    w.up.clear();
    for _ in 0..3 {
        let r = generate(d, USER_KEY, common::GENERATE_BODY.into()).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let mut used = keys_at(&w.up, ":generateContent");
    used.sort();
    used.dedup();
    assert_eq!(used.len(), 3, "every key still serves: {used:?}");
}

#[tokio::test]
async fn an_uploaded_file_stays_on_its_key_and_with_its_user() {
    let w = world().await;
    let d = daemon(&w).await;
    let file = upload(&d, USER_KEY, b"hello, file").await;
    let name = file["name"].as_str().unwrap().to_owned();
    let uri = file["uri"].as_str().unwrap().to_owned();
    let owner = w.google.owner(&name).expect("Google holds the file");
    // The byte request reached Google with the owner's key, not the client's nothing.
    let bytes_keys: Vec<String> =
        w.up.requests()
            .iter()
            .filter(|r| r.query.as_deref().is_some_and(|q| q.contains("upload_id")))
            .map(|r| r.key().unwrap_or("<none>").to_owned())
            .collect();
    assert_eq!(bytes_keys, std::slice::from_ref(&owner));

    w.up.clear();
    for _ in 0..4 {
        let r = generate(&d, USER_KEY, generate_with(&uri)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = generate(&d, USER_KEY, generate_with(&name)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let get = client::get(&d.url(&format!("/v1beta/{name}")), &auth(USER_KEY)).await;
    assert_eq!(get.status, 200, "{}", get.text());
    assert_eq!(get.json()["name"], name.as_str());
    let list = client::get(&d.url("/v1beta/files"), &auth(USER_KEY)).await;
    assert_eq!(list.status, 200, "{}", list.text());
    assert_eq!(list.json()["files"][0]["name"], name.as_str());
    assert_eq!(list.json()["files"].as_array().unwrap().len(), 1);
    let mut used = keys_at(&w.up, "/");
    used.dedup();
    assert_eq!(
        used,
        std::slice::from_ref(&owner),
        "every call reached the creating key"
    );

    // Bob sees nothing of it: get, generate with it, delete, list.
    w.up.clear();
    let bob_get = client::get(&d.url(&format!("/v1beta/{name}")), &auth(BOB_KEY)).await;
    common::assert_google_error(&bob_get, 404, "NOT_FOUND");
    let bob_gen = generate(&d, BOB_KEY, generate_with(&uri)).await;
    common::assert_google_error(&bob_gen, 404, "NOT_FOUND");
    let del = client::request(
        Method::DELETE,
        &d.url(&format!("/v1beta/{name}")),
        &auth(BOB_KEY),
        "",
    )
    .await;
    common::assert_google_error(&del, 404, "NOT_FOUND");
    let bob_list = client::get(&d.url("/v1beta/files"), &auth(BOB_KEY)).await;
    assert_eq!(bob_list.status, 200);
    assert_eq!(bob_list.json(), json!({}));
    assert!(
        w.up.requests().is_empty(),
        "nothing of bob's reached Google"
    );

    let del = client::request(
        Method::DELETE,
        &d.url(&format!("/v1beta/{name}")),
        &auth(USER_KEY),
        "",
    )
    .await;
    assert_eq!(del.status, 200, "{}", del.text());
    assert_eq!(w.google.owner(&name), None, "deleted at Google");
    let gone = client::get(&d.url(&format!("/v1beta/{name}")), &auth(USER_KEY)).await;
    common::assert_google_error(&gone, 404, "NOT_FOUND");
    no_key_retired(&w, &d).await;
}

#[tokio::test]
async fn a_restart_keeps_the_affinity() {
    let w = world().await;
    let mut d = daemon(&w).await;
    let file = upload(&d, USER_KEY, b"kept across a restart").await;
    let name = file["name"].as_str().unwrap().to_owned();
    let owner = w.google.owner(&name).unwrap();
    d.restart().await;
    w.up.clear();
    for _ in 0..3 {
        let get = client::get(&d.url(&format!("/v1beta/{name}")), &auth(USER_KEY)).await;
        assert_eq!(get.status, 200, "{}", get.text());
    }
    assert_eq!(keys_at(&w.up, "/files/"), vec![owner; 3]);
}

/// Two instances on one Redis are one gateway: a file uploaded through one is routed to
/// its key by the other, and stays the uploader's.
#[tokio::test]
async fn a_second_instance_on_redis_routes_to_the_owner() {
    let w = world().await;
    let redis = common::redis::RedisServer::start();
    let cfg = Config::new(&w.up).keys(keys(3)).user("bob", BOB_KEY);
    let top = format!("store = {:?}\n", redis.url());
    let a = Daemon::start_with_top_level(&cfg, &top).await;
    let b = Daemon::start_with_top_level(&cfg, &top).await;
    let file = upload(&a, USER_KEY, b"shared through redis").await;
    let name = file["name"].as_str().unwrap().to_owned();
    let owner = w.google.owner(&name).unwrap();
    w.up.clear();
    for _ in 0..3 {
        let get = client::get(&b.url(&format!("/v1beta/{name}")), &auth(USER_KEY)).await;
        assert_eq!(get.status, 200, "{}", get.text());
        let r = generate(&b, USER_KEY, generate_with(&name)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let mut used = keys_at(&w.up, "/");
    used.dedup();
    assert_eq!(
        used,
        std::slice::from_ref(&owner),
        "instance b used the owner key"
    );
    let bob = client::get(&b.url(&format!("/v1beta/{name}")), &auth(BOB_KEY)).await;
    common::assert_google_error(&bob, 404, "NOT_FOUND");
}

/// The admin API lists each resource with its kind, size, owner key and user; other
/// users' rows stay apart under `?user=`, and nothing is shown without the admin session.
#[tokio::test]
async fn the_admin_api_lists_resources_by_user_and_key() {
    let w = world().await;
    let cfg = Config::new(&w.up)
        .keys(keys(3))
        .user("bob", BOB_KEY)
        .admin_password("resources-admin-pw");
    let d = Daemon::start(&cfg).await;
    let file = upload(&d, USER_KEY, b"listed for the admin").await;
    let name = file["name"].as_str().unwrap().to_owned();
    let owner = w.google.owner(&name).unwrap();
    let denied = client::get(&d.url("/api/resources"), &[]).await;
    assert_eq!(denied.status, 401, "{}", denied.text());

    let token = common::admin::login(&d, "resources-admin-pw").await;
    let all =
        common::admin::admin_ok(&d, Method::GET, "/api/resources?kind=files", &token, None).await;
    let rows = all["resources"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{all}");
    let row = &rows[0];
    assert_eq!(row["name"], name.as_str());
    assert_eq!(row["kind"], "files");
    assert_eq!(row["user"], common::USER_NAME);
    assert_eq!(row["size"], 20);
    let brief = row["key"].as_str().unwrap();
    assert!(
        brief.starts_with(&owner[..4]) && brief.ends_with(&owner[owner.len() - 4..]),
        "the owner key's brief: {brief}"
    );
    assert!(!all.to_string().contains(&owner), "no key in the answer");
    assert!(row["expires_ms"].as_i64() > row["created_ms"].as_i64());

    let users = common::admin::admin_ok(&d, Method::GET, "/api/users", &token, None).await;
    let bob = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "bob")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bobs = common::admin::admin_ok(
        &d,
        Method::GET,
        &format!("/api/resources?user={bob}"),
        &token,
        None,
    )
    .await;
    assert_eq!(bobs["resources"], json!([]), "{bobs}");
}

#[tokio::test]
async fn caches_batches_videos_and_interactions_reach_their_key() {
    let w = world().await;
    let d = daemon(&w).await;
    let file = upload(&d, USER_KEY, b"context to cache").await;
    let file_owner = w.google.owner(file["name"].as_str().unwrap()).unwrap();

    // A cache of the file: created on the file's key, used there.
    let cache = json!({"model": "models/gemini-2.5-flash", "contents": [{"role": "user",
        "parts": [{"fileData": {"fileUri": file["uri"], "mimeType": "text/plain"}}]}], "ttl": "600s"});
    let made = client::post(
        &d.url("/v1beta/cachedContents"),
        &auth(USER_KEY),
        cache.to_string(),
    )
    .await;
    assert_eq!(made.status, 200, "{}", made.text());
    let cache_name = made.json()["name"].as_str().unwrap().to_owned();
    assert_eq!(
        w.google.owner(&cache_name).as_deref(),
        Some(file_owner.as_str())
    );
    let with_cache = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "cachedContent": cache_name});
    let r = generate(&d, USER_KEY, with_cache.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = client::get(&d.url(&format!("/v1beta/{cache_name}")), &auth(USER_KEY)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = client::get(&d.url(&format!("/v1beta/{cache_name}")), &auth(BOB_KEY)).await;
    common::assert_google_error(&r, 404, "NOT_FOUND");

    // A batch of inlined requests, polled until done on its key.
    let batch = json!({"batch": {"display_name": "b", "input_config": {"requests": {"requests": [
        {"request": {"contents": [{"parts": [{"text": "one"}]}]}}]}}}});
    let path = common::model_path(common::FLASH, "batchGenerateContent");
    let made = client::post(&d.url(&path), &auth(USER_KEY), batch.to_string()).await;
    assert_eq!(made.status, 200, "{}", made.text());
    let batch_name = made.json()["name"].as_str().unwrap().to_owned();
    let batch_owner = w.google.owner(&batch_name).unwrap();
    let done = poll(&d, &batch_name, |v| v["done"] == true).await;
    assert_eq!(done["metadata"]["state"], "BATCH_STATE_SUCCEEDED");
    assert!(
        keys_at(&w.up, &batch_name)
            .iter()
            .all(|k| *k == batch_owner)
    );
    // A batch whose input is the uploaded file goes to the file's key.
    let from_file = json!({"batch": {"input_config": {"file_name": file["name"]}}});
    let made = client::post(&d.url(&path), &auth(USER_KEY), from_file.to_string()).await;
    assert_eq!(made.status, 200, "{}", made.text());
    let name = made.json()["name"].as_str().unwrap().to_owned();
    assert_eq!(w.google.owner(&name).as_deref(), Some(file_owner.as_str()));

    // A Veo operation polled to done, its video downloaded from the same key.
    let veo = common::model_path("veo-3.0-generate-001", "predictLongRunning");
    let made = client::post(
        &d.url(&veo),
        &auth(USER_KEY),
        r#"{"instances":[{"prompt":"a cat"}]}"#,
    )
    .await;
    assert_eq!(made.status, 200, "{}", made.text());
    let op = made.json()["name"].as_str().unwrap().to_owned();
    let op_owner = w.google.owner(&op).unwrap();
    let done = poll(&d, &op, |v| v["done"] == true).await;
    let video = done["response"]["generateVideoResponse"]["generatedSamples"][0]["video"]["uri"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = &video[video.find("/v1beta/").unwrap()..];
    let dl = client::get(&d.url(path), &auth(USER_KEY)).await;
    assert_eq!(dl.status, 200, "{}", dl.text());
    assert!(dl.body.ends_with(b"fake video"));
    assert!(keys_at(&w.up, "operations/").iter().all(|k| *k == op_owner));
    assert_eq!(keys_at(&w.up, ":download"), [op_owner]);
    let r = client::get(&d.url(path), &auth(BOB_KEY)).await;
    common::assert_google_error(&r, 404, "NOT_FOUND");

    // An interaction continued with previous_interaction_id on its key; bob cannot.
    let first = json!({"model": "gemini-2.5-flash", "input": "hello"});
    let made = client::post(
        &d.url("/v1beta/interactions"),
        &auth(USER_KEY),
        first.to_string(),
    )
    .await;
    assert_eq!(made.status, 200, "{}", made.text());
    let id = made.json()["id"].as_str().unwrap().to_owned();
    let owner = w.google.owner(&format!("interactions/{id}")).unwrap();
    w.up.clear();
    let next = json!({"model": "gemini-2.5-flash", "input": "more", "previous_interaction_id": id});
    for _ in 0..3 {
        let r = client::post(
            &d.url("/v1beta/interactions"),
            &auth(USER_KEY),
            next.to_string(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(keys_at(&w.up, "/interactions"), vec![owner; 3]);
    let r = client::post(
        &d.url("/v1beta/interactions"),
        &auth(BOB_KEY),
        next.to_string(),
    )
    .await;
    common::assert_google_error(&r, 404, "NOT_FOUND");
    no_key_retired(&w, &d).await;
}

/// GETs `name` until `done` holds (the fake finishes after a few polls).
async fn poll(d: &Daemon, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..=common::resources::POLLS + 1 {
        let r = client::get(&d.url(&format!("/v1beta/{name}")), &auth(USER_KEY)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        if done(&r.json()) {
            return r.json();
        }
    }
    panic!("{name} never finished");
}

#[tokio::test]
async fn a_cooling_owner_is_429_and_two_owners_are_400() {
    let w = world().await;
    let d = daemon(&w).await;
    let file = upload(&d, USER_KEY, b"first").await;
    let first = file["name"].as_str().unwrap().to_owned();
    let owner = w.google.owner(&first).unwrap();
    // The owner refuses uploads for a while: the next upload starts on another key.
    *w.throttle.lock().unwrap() = Some((owner.clone(), "/upload/v1beta/files"));
    let second = upload(&d, USER_KEY, b"second").await;
    let second = second["name"].as_str().unwrap().to_owned();
    let other = w.google.owner(&second).unwrap();
    assert_ne!(other, owner);
    let both = json!({"contents": [{"parts": [
        {"fileData": {"fileUri": first}}, {"fileData": {"fileUri": second}}]}]});
    let r = generate(&d, USER_KEY, both.to_string()).await;
    common::assert_google_error(&r, 400, "INVALID_ARGUMENT");

    // Google says 429 to the owner for generation: relayed, then the gateway answers 429
    // with Retry-After itself, and never tries a key that cannot see the file.
    *w.throttle.lock().unwrap() = Some((owner.clone(), ":generateContent"));
    w.up.clear();
    let r = generate(&d, USER_KEY, generate_with(&first)).await;
    assert_eq!(r.status, 429, "{}", r.text());
    let r = generate(&d, USER_KEY, generate_with(&first)).await;
    common::assert_google_error(&r, 429, "RESOURCE_EXHAUSTED");
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=31).contains(&retry), "Retry-After {retry}");
    assert_eq!(keys_at(&w.up, ":generateContent"), [owner]);
}

#[tokio::test]
async fn unknown_methods_are_forwarded_and_unknown_prefixes_are_404() {
    let w = world().await;
    let d = daemon(&w).await;
    let r = client::post(
        &d.url(&format!("/v1alpha/models/imagen-4:predict?key={USER_KEY}")),
        &[],
        r#"{"instances":[]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = w.up.requests_to(":predict");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].query, None, "the user key is not forwarded");
    assert!(seen[0].key().is_some_and(|k| k.starts_with("AIzaFAKE")));
    let r = client::post(&d.url("/upload/v9/files"), &auth(USER_KEY), "{}").await;
    assert_eq!(r.status, 404);
    let r = client::get(&d.url("/v1beta/files"), &[]).await;
    common::assert_google_error(&r, 401, "UNAUTHENTICATED");
    // An upload URL of nobody's session finds nothing.
    let r = client::post(&d.url("/upload/v1beta/files?upload_id=nope"), &[], "x").await;
    common::assert_google_error(&r, 404, "NOT_FOUND");
}

/// Google refusing a file the gateway knows (its project cannot read it any more): the
/// client gets Google's 403 as Google sent it, and no key is retired for it.
#[tokio::test]
async fn a_403_about_a_file_reaches_the_client_as_sent_and_retires_no_key() {
    let w = world().await;
    let d = daemon(&w).await;
    let file = upload(&d, USER_KEY, b"soon refused").await;
    let name = file["name"].as_str().unwrap().to_owned();
    let uri = file["uri"].as_str().unwrap().to_owned();
    let owner = w.google.owner(&name).expect("Google holds the file");
    w.google.forget(&name);
    w.up.clear();
    let id = name.trim_start_matches("files/");
    let message =
        format!("You do not have permission to access the File {id} or it may not exist.");
    let sent = serde_json::to_string_pretty(
        &json!({"error": {"code": 403, "message": message, "status": "PERMISSION_DENIED"}}),
    )
    .unwrap()
        + "\n";
    for _ in 0..3 {
        let r = generate(&d, USER_KEY, generate_with(&uri)).await;
        assert_eq!(r.status, 403, "{}", r.text());
        assert_eq!(r.text(), sent, "Google's body, byte for byte");
    }
    assert_eq!(keys_at(&w.up, ":generateContent"), vec![owner; 3]);
    no_key_retired(&w, &d).await;
}

/// The request log says which resource each call was about and how many bytes went each
/// way — and never the upload session's id, which is the byte requests' credential.
#[tokio::test]
async fn the_request_log_names_the_resource_and_counts_bytes() {
    let w = world().await;
    let cfg = Config::new(&w.up)
        .keys(keys(3))
        .admin_password("log-resources-pw");
    let d = Daemon::start(&cfg).await;
    let content: &'static [u8] = b"twenty-six bytes of notes.";
    let file = upload(&d, USER_KEY, content).await;
    let name = file["name"].as_str().unwrap().to_owned();
    let body = generate_with(&name);
    let gen_len = body.len() as u64;
    let r = generate(&d, USER_KEY, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let answer_len = r.body.len() as u64;
    let get = client::get(&d.url(&format!("/v1beta/{name}")), &auth(USER_KEY)).await;
    assert_eq!(get.status, 200, "{}", get.text());
    let chat = json!({"model": common::FLASH, "input": "hello"}).to_string();
    let made = client::post(&d.url("/v1beta/interactions"), &auth(USER_KEY), chat).await;
    assert_eq!(made.status, 200, "{}", made.text());
    let interaction = format!("interactions/{}", made.json()["id"].as_str().unwrap());

    let token = common::admin::login(&d, "log-resources-pw").await;
    let (d2, t2) = (&d, token.as_str());
    let logs: Vec<Value> =
        common::wait_for("four log records", Duration::from_secs(10), || async move {
            let v = common::admin::admin_ok(d2, Method::GET, "/api/logs", t2, None).await;
            let logs = v["logs"].as_array().cloned().unwrap_or_default();
            if logs.len() >= 4 {
                Ok(logs)
            } else {
                Err(v.to_string())
            }
        })
        .await;
    // Newest first: the interaction, get, generate, the upload's bytes, its start.
    let fields = |r: &Value| (r["route"].clone(), r["resource"].clone());
    let routes: Vec<_> = logs.iter().map(fields).collect();
    assert_eq!(logs.len(), 5, "{routes:?}");
    let chat_rec = &logs[0];
    assert_eq!(chat_rec["resource"], interaction.as_str(), "{routes:?}");
    assert_eq!(chat_rec["tokens"]["prompt"], 5, "{chat_rec}");
    assert_eq!(chat_rec["tokens"]["candidates"], 7, "{chat_rec}");
    assert_eq!(chat_rec["tokens"]["total"], 12, "{chat_rec}");
    let [get_rec, gen_rec, bytes_rec, start_rec] = [&logs[1], &logs[2], &logs[3], &logs[4]];
    assert_eq!(get_rec["resource"], name.as_str(), "{routes:?}");
    assert_eq!(get_rec["bytes_down"], get.body.len() as u64);
    assert_eq!(gen_rec["resource"], name.as_str(), "{routes:?}");
    assert_eq!(gen_rec["bytes_up"], gen_len);
    assert_eq!(gen_rec["bytes_down"], answer_len);
    assert_eq!(bytes_rec["resource"], name.as_str(), "{routes:?}");
    assert_eq!(bytes_rec["bytes_up"], content.len() as u64);
    assert_eq!(start_rec["resource"], Value::Null, "{routes:?}");
    assert!(logs.iter().all(|r| r["close_code"].is_null()));
    let all = Value::Array(logs).to_string();
    assert!(!all.contains("upload_id"), "no upload id in the log: {all}");
}
