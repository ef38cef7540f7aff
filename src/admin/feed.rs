//! `GET /api/events`: the live feed as Server-Sent Events. Each subscriber gets a small
//! forwarding task and a bounded queue: a subscriber that reads too slowly misses events
//! (and is told how many), so it can never make the daemon hold more than the queue.
//! A feed lives no longer than the session that opened it: it ends when the token
//! expires or is revoked (logout).

use crate::app::AppState;
use crate::auth::Session;
use crate::body::Body;
use crate::events::Event;
use bytes::Bytes;
use http::{HeaderValue, Response, header};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

const HEARTBEAT: Duration = Duration::from_secs(15);
const QUEUE: usize = 64;

pub fn subscribe(state: &Arc<AppState>, session: Session) -> Response<Body> {
    let mut events = state.hub.subscribe();
    let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
    let state = state.clone();
    tokio::spawn(async move {
        let mut revocations = state.admin.revocations();
        let left = (session.expires_at * 1000).saturating_sub(crate::keys::unix_ms() as u64);
        let expired = tokio::time::sleep(Duration::from_millis(left));
        tokio::pin!(expired);
        let mut beat = tokio::time::interval(HEARTBEAT);
        if tx
            .send(Bytes::from_static(b"retry: 3000\n: connected\n\n"))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let frame = tokio::select! {
                _ = tx.closed() => return,
                _ = &mut expired => return,
                Ok(()) = revocations.changed() => {
                    if state.admin.is_revoked(&session.id) {
                        return;
                    }
                    continue;
                }
                _ = beat.tick() => Bytes::from_static(b": ping\n\n"),
                e = events.recv() => match e {
                    Ok(Event::Request(json)) => Bytes::from(format!("event: request\ndata: {json}\n\n")),
                    Ok(Event::Session(json)) => Bytes::from(format!("event: session\ndata: {json}\n\n")),
                    Ok(Event::Key(k)) => {
                        let json = serde_json::to_string(&*k).unwrap_or_default();
                        Bytes::from(format!("event: key\ndata: {json}\n\n"))
                    }
                    Err(RecvError::Lagged(n)) => {
                        Bytes::from(format!("event: dropped\ndata: {{\"missed\":{n}}}\n\n"))
                    }
                    Err(RecvError::Closed) => return,
                },
            };
            // A full queue means the reader is slow: wait, and let the hub drop for it.
            if tx.send(frame).await.is_err() {
                return;
            }
        }
    });
    let mut resp = Response::new(Body::Events(rx));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}
