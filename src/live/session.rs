//! One Live session, from the upgraded connection to its record: read the client's
//! `setup` (which must come first), open the session at Google (`upstream`, with
//! failover before anything reaches the client), then relay messages both ways as they
//! come — text and binary, unchanged, none held back — while counting each turn's
//! tokens. Pings are answered on each side by tungstenite; close frames are relayed with
//! their code and reason. The session ends when either side closes or goes, when it is
//! idle for `stream_idle_timeout`, when the user's daily budget runs out (1008), or at
//! shutdown (1001 "going away"). The key and the user's slot are let go the moment it
//! ends; the close handshakes finish after that, bounded.

use super::Caller;
use super::account::{self, End, Tally};
use super::setup::{setup_model, short, valid_model};
use super::upstream::{self, Target, UpstreamWs};
use crate::AppState;
use crate::keys::unix_ms;
use crate::limits::{Permit, model_allowed};
use crate::logs::Trace;
use crate::router::LiveCall;
use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;

type ClientWs = WebSocketStream<TokioIo<Upgraded>>;

/// How long each side has to answer a close before its connection is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

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
    trace.route = Some(call.name());
    trace.stream = true;
    trace.user = Some(caller.user.name.clone());
    if let Some((_, row)) = &caller.token {
        trace.resource = Some(row.name.clone());
    }
    let wait = state.config.server.handshake_timeout;
    let setup = match tokio::time::timeout(wait, first_message(&mut client)).await {
        Ok(Some(m)) => m,
        Ok(None) => return, // the client left before saying anything
        Err(_) => {
            let why = "No setup message came in time.";
            return refuse(&state, client, trace, 1008, why, 408).await;
        }
    };
    let model = match setup_model(&setup.clone().into_data()) {
        Some(m) if valid_model(&m) => m,
        Some(_) => {
            return refuse(
                &state,
                client,
                trace,
                1007,
                "The model name is not valid.",
                400,
            )
            .await;
        }
        None => {
            let why = "The first message of a Live session must be `setup`.";
            return refuse(&state, client, trace, 1007, why, 400).await;
        }
    };
    if !model_allowed(&caller.user.models, &model) {
        let why = format!("This key may not use the model {model}.");
        return refuse(&state, client, trace, 1008, &why, 403).await;
    }
    trace.model.clone_from(&model);
    let target = Target {
        model: &model,
        path: &path,
        query: query.as_deref(),
        headers: &headers,
        token: caller.token.as_ref(),
        config,
    };
    let opened = match upstream::open(&state, &target, &setup, &mut trace).await {
        Ok(o) => o,
        Err(r) => {
            trace.no_key = r.no_key;
            return refuse(&state, client, trace, r.code, &r.reason, r.status).await;
        }
    };
    account::opened(&state, &trace, &opened.lease.entry.brief);
    let mut tally = Tally {
        accepted: Some(Instant::now()),
        ..Tally::default()
    };
    let first = opened.first.clone().into_data();
    tally.count(&first);
    tally.bytes_down += first.len() as u64;
    tally.bytes_up += setup.clone().into_data().len() as u64;
    if client.send(opened.first).await.is_err() {
        drop((opened.lease, permit));
        return account::closed(&state, trace, End::ClientGone, &tally);
    }
    let ctx = Ctx {
        state: &state,
        caller: &caller,
        permit: &permit,
        idle: state.config.upstream.stream_idle_timeout,
        going_away: &going_away,
    };
    let (end, closing) = relay(client, opened.ws, &ctx, &mut tally).await;
    if let End::Upstream(code) = end {
        report_close(&state, &opened.lease, &trace.model, code, &closing.reason);
    }
    drop((opened.lease, permit));
    account::closed(&state, trace, end, &tally);
    closing.finish().await;
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
async fn refuse(
    state: &AppState,
    mut client: ClientWs,
    trace: Trace,
    code: u16,
    why: &str,
    status: u16,
) {
    tracing::debug!(code, reason = why, "Live session refused");
    state.logs.record(trace.finish_now(status, 0));
    let frame = frame(code, why);
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        let _ = client.close(Some(frame)).await;
        while let Some(Ok(_)) = client.next().await {}
    })
    .await;
}

fn frame(code: u16, reason: &str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(code),
        reason: short(reason).to_owned().into(),
    }
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

struct Ctx<'a> {
    state: &'a AppState,
    caller: &'a Caller,
    permit: &'a Permit,
    idle: Duration,
    going_away: &'a CancellationToken,
}

/// The two sockets after the session ended, and the close each side is to get.
struct Closing {
    client: ClientWs,
    upstream: UpstreamWs,
    to_client: Option<CloseFrame>,
    to_upstream: Option<CloseFrame>,
    /// The reason of the close that ended the session, if a side sent one.
    reason: String,
}

impl Closing {
    /// Sends each side its close (a side that closed has had its answer already) and
    /// waits a little for the other ends to finish, so nothing unread makes a reset.
    async fn finish(mut self) {
        let client = async {
            if let Some(f) = self.to_client.take() {
                let _ = self.client.send(Message::Close(Some(f))).await;
            }
            let _ = self.client.flush().await;
            while let Some(Ok(_)) = self.client.next().await {}
        };
        let upstream = async {
            if let Some(f) = self.to_upstream.take() {
                let _ = self.upstream.send(Message::Close(Some(f))).await;
            }
            let _ = self.upstream.flush().await;
            while let Some(Ok(_)) = self.upstream.next().await {}
        };
        let _ =
            tokio::time::timeout(CLOSE_WAIT, futures_util::future::join(client, upstream)).await;
    }
}

/// Relays until the session ends.
async fn relay(
    client: ClientWs,
    upstream: UpstreamWs,
    ctx: &Ctx<'_>,
    tally: &mut Tally,
) -> (End, Closing) {
    let (mut c_tx, mut c_rx) = client.split();
    let (mut u_tx, mut u_rx) = upstream.split();
    let origin = Instant::now();
    let last = AtomicU64::new(0);
    let touch = || last.store(origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    let up_bytes = AtomicU64::new(0);
    let mut reason = String::new();
    let up = async {
        loop {
            match c_rx.next().await {
                Some(Ok(Message::Close(f))) => return (End::Client(code_of(&f)), f),
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                    touch();
                    up_bytes.fetch_add(m_bytes(&m).len() as u64, Ordering::Relaxed);
                    if u_tx.send(m).await.is_err() {
                        return (End::UpstreamGone, None);
                    }
                }
                Some(Ok(_)) => touch(),
                Some(Err(_)) | None => return (End::ClientGone, None),
            }
        }
    };
    let down = async {
        loop {
            match u_rx.next().await {
                Some(Ok(Message::Close(f))) => return (End::Upstream(code_of(&f)), f),
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                    touch();
                    tally.bytes_down += m_bytes(&m).len() as u64;
                    let used = tally.count(m_bytes(&m)).map(|t| t.total);
                    if c_tx.send(m).await.is_err() {
                        return (End::ClientGone, None);
                    }
                    if let Some(n) = used {
                        ctx.permit.add_tokens(n);
                        if account::over_budget(ctx.state, &ctx.caller.user, tally) {
                            return (End::Budget, None);
                        }
                    }
                }
                Some(Ok(_)) => touch(),
                Some(Err(_)) | None => return (End::UpstreamGone, None),
            }
        }
    };
    let idle = async {
        loop {
            let at = Duration::from_millis(last.load(Ordering::Relaxed)) + ctx.idle;
            if origin.elapsed() >= at {
                return;
            }
            tokio::time::sleep_until(origin + at).await;
        }
    };
    let (end, frame) = tokio::select! {
        e = up => e,
        e = down => e,
        _ = idle => (End::Idle, None),
        _ = ctx.going_away.cancelled() => (End::Shutdown, None),
    };
    if let Some(f) = &frame {
        f.reason.as_str().clone_into(&mut reason);
    }
    tally.bytes_up += up_bytes.into_inner();
    let client = c_tx.reunite(c_rx).expect("halves of one socket");
    let upstream = u_tx.reunite(u_rx).expect("halves of one socket");
    let (to_client, to_upstream) = closes(end, frame);
    (
        end,
        Closing {
            client,
            upstream,
            to_client,
            to_upstream,
            reason,
        },
    )
}

/// The close each side gets for how the session ended (`frame`: the one a side sent).
fn closes(end: End, sent: Option<CloseFrame>) -> (Option<CloseFrame>, Option<CloseFrame>) {
    // A close without a code is relayed as a normal one (1005 cannot be sent).
    let relayed = |f: Option<CloseFrame>| f.unwrap_or_else(|| frame(1000, ""));
    match end {
        End::Client(_) => (None, Some(relayed(sent))),
        End::Upstream(_) => (Some(relayed(sent)), None),
        End::ClientGone => (None, Some(frame(1001, "The client went away."))),
        End::UpstreamGone => (Some(frame(1011, "The upstream connection was lost.")), None),
        End::Idle => {
            let why = "The session was idle for longer than the gateway allows.";
            (Some(frame(1001, why)), Some(frame(1000, why)))
        }
        End::Budget => {
            let why = "The daily token budget of this key is used up.";
            (Some(frame(1008, why)), Some(frame(1000, "")))
        }
        End::Shutdown => (
            Some(frame(1001, "going away")),
            Some(frame(1001, "going away")),
        ),
    }
}

fn code_of(f: &Option<CloseFrame>) -> u16 {
    f.as_ref().map_or(1005, |f| u16::from(f.code))
}

fn m_bytes(m: &Message) -> &[u8] {
    match m {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) => b,
        _ => &[],
    }
}
