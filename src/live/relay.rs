//! The relay of an open Live session: messages from the client go to Google and
//! Google's to the client as they come, each forwarded whole as tungstenite read it
//! (text or binary, unchanged), with nothing queued in between: a side that cannot take
//! more holds back the other. Each of Google's messages is checked for a turn's
//! `usageMetadata`. The relay ends at the first close, broken connection, idle spell,
//! used-up budget or shutdown, and says what each side is still to be sent.

use super::Caller;
use super::account::{self, End, Tally};
use super::setup::short;
use super::upstream::UpstreamWs;
use crate::app::AppState;
use crate::limits::Permit;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

pub type ClientWs = WebSocketStream<TokioIo<Upgraded>>;

/// How long each side has to answer a close before its connection is dropped.
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

pub struct Ctx<'a> {
    pub state: &'a AppState,
    pub caller: &'a Caller,
    pub permit: &'a Permit,
    pub idle: Duration,
    pub going_away: &'a CancellationToken,
    /// The session's entry among the open ones (its tokens so far).
    pub open: &'a crate::logs::OpenSession,
}

/// The two sockets after the session ended, and the close each side is to get.
pub struct Closing {
    client: ClientWs,
    upstream: UpstreamWs,
    to_client: Option<CloseFrame>,
    to_upstream: Option<CloseFrame>,
    /// The reason of the close that ended the session, if a side sent one.
    pub reason: String,
}

impl Closing {
    /// Sends each side its close (a side that closed has had its answer already) and
    /// waits a little for the other ends to finish, so nothing unread makes a reset.
    pub async fn finish(mut self) {
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

/// When either side last sent anything, for the idle limit.
struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Ends once nothing has been sent either way for `idle`.
    async fn idle(&self, idle: Duration) {
        loop {
            let at = Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle;
            if self.origin.elapsed() >= at {
                return;
            }
            tokio::time::sleep_until(self.origin + at).await;
        }
    }
}

type Ended = (End, Option<CloseFrame>);

/// Relays until the session ends.
pub async fn relay(
    client: ClientWs,
    upstream: UpstreamWs,
    ctx: &Ctx<'_>,
    tally: &mut Tally,
) -> (End, Closing) {
    let (mut c_tx, mut c_rx) = client.split();
    let (mut u_tx, mut u_rx) = upstream.split();
    let activity = Activity {
        origin: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let mut bytes_up = 0;
    let (end, frame) = tokio::select! {
        e = upward(&mut c_rx, &mut u_tx, &activity, &mut bytes_up) => e,
        e = downward(&mut u_rx, &mut c_tx, &activity, ctx, tally) => e,
        _ = activity.idle(ctx.idle) => (End::Idle, None),
        _ = ctx.going_away.cancelled() => (End::Shutdown, None),
    };
    tally.bytes_up += bytes_up;
    let reason = frame.as_ref().map_or("", |f| f.reason.as_str()).to_owned();
    let client = c_tx.reunite(c_rx).expect("halves of one socket");
    let upstream = u_tx.reunite(u_rx).expect("halves of one socket");
    let (to_client, to_upstream) = closes(end, frame);
    let closing = Closing {
        client,
        upstream,
        to_client,
        to_upstream,
        reason,
    };
    (end, closing)
}

/// The client's messages to Google.
async fn upward(
    from: &mut SplitStream<ClientWs>,
    to: &mut SplitSink<UpstreamWs, Message>,
    activity: &Activity,
    bytes: &mut u64,
) -> Ended {
    loop {
        match from.next().await {
            Some(Ok(Message::Close(f))) => return (End::Client(code_of(&f)), f),
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                activity.touch();
                *bytes += m.len() as u64;
                if to.send(m).await.is_err() {
                    return (End::UpstreamGone, None);
                }
            }
            Some(Ok(_)) => activity.touch(),
            Some(Err(_)) | None => return (End::ClientGone, None),
        }
    }
}

/// Google's messages to the client, each turn's tokens counted (and held against the
/// user's budget) as they pass.
async fn downward(
    from: &mut SplitStream<UpstreamWs>,
    to: &mut SplitSink<ClientWs, Message>,
    activity: &Activity,
    ctx: &Ctx<'_>,
    tally: &mut Tally,
) -> Ended {
    loop {
        match from.next().await {
            Some(Ok(Message::Close(f))) => return (End::Upstream(code_of(&f)), f),
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                activity.touch();
                tally.bytes_down += m.len() as u64;
                let used = tally.count(m_bytes(&m)).map(|t| t.total);
                if to.send(m).await.is_err() {
                    return (End::ClientGone, None);
                }
                if let Some(n) = used {
                    ctx.permit.add_tokens(n);
                    ctx.open.set_tokens(tally.tokens.total);
                    if account::over_budget(ctx.state, &ctx.caller.user, tally) {
                        return (End::Budget, None);
                    }
                }
            }
            Some(Ok(_)) => activity.touch(),
            Some(Err(_)) | None => return (End::UpstreamGone, None),
        }
    }
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

pub fn m_bytes(m: &Message) -> &[u8] {
    match m {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) => b,
        _ => &[],
    }
}

pub fn frame(code: u16, reason: &str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(code),
        reason: short(reason).to_owned().into(),
    }
}
