//! One Live session, from the upgraded connection to its record: read the client's
//! `setup` (which must come first), open the session at Google (`upstream`, with
//! failover before anything reaches the client), then relay messages both ways as they
//! come (`relay`). Pings are answered on each side by tungstenite; close frames are
//! relayed with their code and reason. The session ends when either side closes or goes,
//! when it is idle for `stream_idle_timeout`, when the user's daily budget runs out
//! (1008), or at shutdown (1001 "going away"). The key and the user's slot are let go the
//! moment it ends; the close handshakes finish after that, bounded.

use super::Caller;
use super::account::{self, End, Tally};
use super::relay::{CLOSE_WAIT, ClientWs, Closing, Ctx, frame, m_bytes, relay};
use super::setup::{setup_model, valid_model};
use super::upstream::{self, Refused, Target, UpstreamWs};
use crate::app::AppState;
use crate::keys::unix_ms;
use crate::limits::{Permit, model_allowed};
use crate::logs::Trace;
use crate::router::LiveCall;
use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;

/// What the HTTP side hands over with the upgraded connection.
pub struct Opening {
    pub state: Arc<AppState>,
    pub call: LiveCall,
    pub caller: Caller,
    pub permit: Permit,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub trace: Trace,
    pub going_away: CancellationToken,
}

/// Small buffers (a few KiB a socket, grown only for a large message): sessions are many
/// and mostly quiet.
fn ws_config(state: &AppState) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(state.config.server.max_body_bytes))
        .max_frame_size(Some(state.config.server.max_body_bytes))
}

pub async fn run(o: Opening, io: Upgraded) {
    let config = ws_config(&o.state);
    let mut client =
        WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, Some(config)).await;
    let Opening {
        state,
        call,
        caller,
        permit,
        path,
        query,
        headers,
        mut trace,
        going_away,
    } = o;
    note_caller(&mut trace, &call, &caller);
    let (setup, model) = match read_setup(&state, &mut client, &caller).await {
        Ok(s) => s,
        Err(None) => return, // the client left before saying anything
        Err(Some(no)) => return refuse(&state, client, trace, no).await,
    };
    trace.model.clone_from(&model);
    let target = Target {
        model: &model,
        path: &path,
        query: query.as_deref(),
        headers: &headers,
        token: caller.token.as_ref(),
        groups: permit.groups(),
        config,
    };
    // Boxed, as the close handshakes below: a session's task then keeps room for the
    // relay only, not for the opening's larger state (about 4 KiB a session less).
    let opened = match Box::pin(upstream::open(&state, &target, &setup, &mut trace)).await {
        Ok(o) => o,
        Err(no) => {
            trace.no_key = no.no_key;
            return refuse(&state, client, trace, no).await;
        }
    };
    account::opened(&state, &trace, &opened.lease.entry.brief);
    let listed = state.live.list(&trace, &opened.lease.entry.brief);
    let ctx = Ctx {
        state: &state,
        caller: &caller,
        permit: &permit,
        idle: state.config.upstream.stream_idle_timeout,
        going_away: &going_away,
        open: &listed.session,
    };
    let mut tally = Tally::accepted(setup.len() as u64);
    let (end, closing) = serve(client, opened.ws, opened.first, &ctx, &mut tally).await;
    if let (End::Upstream(code), Some(closing)) = (end, &closing) {
        report_close(&state, &opened.lease, &model, code, &closing.reason);
    }
    drop((opened.lease, permit, listed));
    account::closed(&state, trace, end, &tally);
    if let Some(closing) = closing {
        Box::pin(closing.finish()).await;
    }
}

/// What the log says of the call and its caller, known before the setup is read.
fn note_caller(trace: &mut Trace, call: &LiveCall, caller: &Caller) {
    trace.route = Some(call.name());
    trace.stream = true;
    trace.user = Some(caller.user.name.clone());
    if let Some((_, row)) = &caller.token {
        trace.resource = Some(row.name.clone());
    }
}

/// The client's `setup` and the model it names, within the handshake timeout; a
/// refusal, or `None` when the client left first.
async fn read_setup(
    state: &AppState,
    client: &mut ClientWs,
    caller: &Caller,
) -> Result<(Message, String), Option<Refused>> {
    let wait = state.config.server.handshake_timeout;
    let no = |code, why: &str, status| {
        Some(Refused {
            code,
            reason: why.to_owned(),
            status,
            no_key: false,
        })
    };
    let setup = match tokio::time::timeout(wait, first_message(client)).await {
        Ok(Some(m)) => m,
        Ok(None) => return Err(None),
        Err(_) => return Err(no(1008, "No setup message came in time.", 408)),
    };
    let model = match setup_model(m_bytes(&setup)) {
        Some(m) if valid_model(&m) => m,
        Some(_) => return Err(no(1007, "The model name is not valid.", 400)),
        None => {
            let why = "The first message of a Live session must be `setup`.";
            return Err(no(1007, why, 400));
        }
    };
    if !model_allowed(&caller.user.models, &model) {
        let why = format!("This key may not use the model {model}.");
        return Err(no(1008, &why, 403));
    }
    Ok((setup, model))
}

/// The client's first text or binary message; `None` when it closed or went first.
async fn first_message(client: &mut ClientWs) -> Option<Message> {
    loop {
        match client.next().await? {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => return Some(m),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Closes a session that never reached Google (or that Google refused) and logs it.
async fn refuse(state: &AppState, mut client: ClientWs, mut trace: Trace, no: Refused) {
    tracing::debug!(code = no.code, reason = no.reason, "Live session refused");
    trace.close_code = Some(no.code);
    state.logs.record(trace.finish_now(no.status, 0));
    let frame = frame(no.code, &no.reason);
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        let _ = client.close(Some(frame)).await;
        while let Some(Ok(_)) = client.next().await {}
    })
    .await;
}

/// A close Google sent mid-session about the key (quota, a revoked key) counts for it.
fn report_close(
    state: &AppState,
    lease: &crate::keys::Lease,
    model: &str,
    code: u16,
    reason: &str,
) {
    if matches!(code, 1000 | 1001 | 1005) {
        return;
    }
    let outcome = super::setup::close_outcome(code, reason);
    if !matches!(outcome, crate::keys::classify::Outcome::Transient { .. }) {
        state.pool.report(&lease.entry, model, &outcome, unix_ms());
    }
}

/// Hands the client Google's first message, then relays until the session ends; no
/// [`Closing`] when the client was gone already.
async fn serve(
    mut client: ClientWs,
    upstream: UpstreamWs,
    first: Message,
    ctx: &Ctx<'_>,
    tally: &mut Tally,
) -> (End, Option<Closing>) {
    tally.count(m_bytes(&first));
    tally.bytes_down += first.len() as u64;
    if client.send(first).await.is_err() {
        return (End::ClientGone, None);
    }
    let (end, closing) = relay(client, upstream, ctx, tally).await;
    (end, Some(closing))
}
