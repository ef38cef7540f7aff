//! Taking a serving thread's next connection: from the listener under the connection
//! caps, or one another thread handed over; some are handed on so open connections stay
//! even across threads (see `spread`). Serving them is the caller's business.

use crate::app::AppState;
use crate::gate::{Gate, Slot};
use crate::spread::Handoff;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

/// What one turn of a serving thread's accept loop yields.
pub(super) enum Next {
    Serve(TcpStream, SocketAddr, Slot),
    /// Nothing to serve this turn (a failed accept or hand-over).
    Again,
    /// `shutdown` fired.
    Stop,
}

/// Waits for the next connection this thread (`lane`) serves, or for `shutdown`.
pub(super) async fn next(
    listener: &TcpListener,
    gate: &Arc<Gate>,
    state: &AppState,
    lane: Option<usize>,
    inbox: &mut Option<UnboundedReceiver<Handoff>>,
    shutdown: &CancellationToken,
) -> Next {
    tokio::select! {
        _ = shutdown.cancelled() => Next::Stop,
        Some(handed) = async {
            match inbox.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        } => match TcpStream::from_std(handed.tcp) {
            Ok(tcp) => Next::Serve(tcp, handed.peer, handed.slot),
            Err(e) => {
                tracing::warn!(error = %e, "taking over a connection failed");
                if let Some(n) = lane {
                    state.spread.closed(n);
                }
                Next::Again
            }
        },
        accepted = accept(listener, gate) => match accepted {
            Ok((tcp, peer, slot)) => match lane.map(|me| (me, state.spread.place(me))) {
                Some((me, to)) if to != me => match hand_over(state, (me, to), tcp, peer, slot) {
                    Some((tcp, peer, slot)) => Next::Serve(tcp, peer, slot),
                    None => Next::Again,
                },
                _ => Next::Serve(tcp, peer, slot),
            },
            Err(e) => {
                // Out of descriptors and the like: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                Next::Again
            }
        },
    }
}

/// A `max_connections` place, then a connection from an address that has not used up its
/// `max_connections_per_ip` (others are closed at once).
async fn accept(
    listener: &TcpListener,
    gate: &Arc<Gate>,
) -> std::io::Result<(TcpStream, SocketAddr, Slot)> {
    loop {
        let place = gate.place().await;
        let (tcp, peer) = listener.accept().await?;
        match gate.admit(place, peer.ip()) {
            Some(slot) => return Ok((tcp, peer, slot)),
            None => tracing::debug!(%peer, "closed: the address holds max_connections_per_ip"),
        }
    }
}

/// Gives a connection lane `me` accepted to the thread serving lane `to` (already counted
/// there). Answers the connection back, counted on `me`, when that thread no longer takes
/// any.
fn hand_over(
    state: &AppState,
    (me, to): (usize, usize),
    tcp: TcpStream,
    peer: SocketAddr,
    slot: Slot,
) -> Option<(TcpStream, SocketAddr, Slot)> {
    let tcp = match tcp.into_std() {
        Ok(tcp) => tcp,
        Err(e) => {
            tracing::warn!(error = %e, "handing over a connection failed");
            state.spread.closed(to);
            return None;
        }
    };
    let handed = Handoff { tcp, peer, slot };
    let back = state.spread.hand_to(to, handed).err()?;
    state.spread.closed(to);
    let tcp = TcpStream::from_std(back.tcp).ok()?;
    state.spread.opened(me);
    Some((tcp, back.peer, back.slot))
}
