//! The native methods beyond generation (`native`'s table): files, cachedContents,
//! batches, operations, interactions, file-search stores, tuned models, and every method
//! the table does not know (`other`).
//!
//! A request about a resource — named in its path, or referred to in its body (`refs`) —
//! goes to the key that owns it and nowhere else; a create goes to the user's home key
//! while it is usable, else to the next key by normal selection, and its owner row is
//! written before the answer is relayed. Only a create may move on to another key, and
//! only when Google refused it (429, a key problem): nothing was made then. `other`
//! methods are sent once. A 403 about a resource is the client's business: it never
//! retires the key. Uploads (`upload`) are dispatched before this, by `proxy::gemini`.

use super::send::{Ran, native_segments, plan, primed_bytes, respond, run};
use super::{Plan, admit, authenticate, names, read_body};
use crate::affinity;
use crate::app::AppState;
use crate::body::{Body, ReqBody};
use crate::error::ApiError;
use crate::keys::KeyEntry;
use crate::logs::Trace;
use crate::native::{self, Act, Kind, NativeCall};
use crate::refs;
use crate::store::UserRecord;
use http::{Request, Response};
use std::sync::Arc;

pub async fn handle(
    state: &Arc<AppState>,
    req: Request<ReqBody>,
    call: NativeCall,
    trace: &mut Trace,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    let user = authenticate(state, &parts.headers, &parts.uri, trace.time)?;
    trace.route = Some(call.label);
    trace.user = Some(user.name.clone());
    names::path(parts.uri.path())?;
    let segs = native_segments(parts.uri.path());
    let model = path_model(&segs).unwrap_or_default().to_owned();
    names::model_id(&model, false)?;
    names::model_id(names::tuned_model(&segs).unwrap_or_default(), false)?;
    let permit = admit(state, &user, &model, trace).await?;
    let body = read_body(body, &parts.headers, state.config.server.max_body_bytes).await?;
    let mut names = refs::references(&body);
    if let Act::Owned { .. } = call.act {
        let Some(name) = native::owner_of(&segs) else {
            return Err(ApiError::ResourceNotFound);
        };
        names.insert(0, name);
    }
    trace.resource = names.first().cloned();
    let owner = affinity::owner_of_all(state, &names, &user, trace.time).await?;
    let plan = plan(state, &parts, body, model, permit)?;
    if let Act::List(kind) = call.act {
        return super::lists::merged(state, &plan, parts.uri.path(), kind, &user, trace).await;
    }
    let home = match (&owner, call.act) {
        (None, Act::Create(_)) => affinity::home_key(state, &user, trace.time).await,
        _ => None,
    };
    let retry = matches!(call.act, Act::Create(_)) && owner.is_none();
    let (parts, relay, entry) = match run(state, &plan, owner.as_ref(), home, retry, trace).await? {
        Ran::Answer(resp) => return Ok(resp),
        Ran::Success(parts, relay, entry) => (parts, relay, entry),
    };
    let answer = primed_bytes(&relay);
    match call.act {
        Act::Create(kind) => {
            if let Some(name) = created_name(kind, &answer) {
                affinity::record(state, &name, &entry.id, &user, trace.time, &answer).await?;
                trace.resource = Some(name);
            }
        }
        Act::Owned { delete: true } => {
            if let Some(row) = &owner {
                let _ = state.store.delete_resource(&row.name).await;
            }
        }
        _ => {}
    }
    record_produced(state, &answer, &entry, &user, trace.time).await?;
    Ok(respond(parts, relay))
}

/// A generation request whose body names resources: sent to their owner only.
pub async fn pinned(
    state: &Arc<AppState>,
    plan: Plan,
    user: &UserRecord,
    names: &[String],
    trace: &mut Trace,
) -> Result<Response<Body>, ApiError> {
    trace.resource = names.first().cloned();
    let owner = affinity::owner_of_all(state, names, user, trace.time).await?;
    match run(state, &plan, owner.as_ref(), None, false, trace).await? {
        Ran::Answer(resp) => Ok(resp),
        Ran::Success(parts, relay, _) => Ok(respond(parts, relay)),
    }
}

/// The name a create answer gives its resource.
fn created_name(kind: Kind, answer: &[u8]) -> Option<String> {
    if kind == Kind::Interactions {
        return refs::first_field(answer, "id").map(|id| format!("interactions/{id}"));
    }
    if kind == Kind::AuthTokens {
        // The token is a credential: its row is named by its hash.
        let name = refs::first_field(answer, "name")?;
        return Some(affinity::token_row(&name));
    }
    let name = refs::first_field(answer, "name")?;
    native::owner_of_name(&name)
}

/// Files an answer brings into being on the same key (a Veo video, a batch's results).
async fn record_produced(
    state: &AppState,
    answer: &[u8],
    entry: &KeyEntry,
    user: &UserRecord,
    now: i64,
) -> Result<(), ApiError> {
    for name in refs::produced(answer) {
        let known = state.store.resource(&name).await.ok().flatten();
        if known.is_none() {
            affinity::record(state, &name, &entry.id, user, now, b"").await?;
        }
    }
    Ok(())
}

/// `gemini-x` for `models/gemini-x:method` and `models/gemini-x/operations/…`.
fn path_model<'a>(segs: &[&'a str]) -> Option<&'a str> {
    match segs {
        ["models", m, ..] => m.split(':').next(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_model_of_a_native_path() {
        let segs = native_segments("/v1/models/veo-3:predictLongRunning");
        assert_eq!(path_model(&segs), Some("veo-3"));
        assert_eq!(
            created_name(Kind::Interactions, br#"{"id":"v1_a"}"#).as_deref(),
            Some("interactions/v1_a")
        );
        assert_eq!(
            created_name(
                Kind::TunedModels,
                br#"{"name":"tunedModels/t/operations/o"}"#
            )
            .as_deref(),
            Some("tunedModels/t")
        );
    }
}
