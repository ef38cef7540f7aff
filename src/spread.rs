//! Spreading client connections over the serving threads.
//!
//! Every serving thread accepts on the same socket, and whichever wakes first takes what
//! is waiting: a burst of new connections (a load generator, a front-end opening its
//! pool) can land on one thread and leave the other cores idle for the life of those
//! keep-alive connections. So each thread counts its open connections, and a thread that
//! accepts while another holds fewer hands the new connection to that one.

use crate::gate::Slot;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::mpsc;

/// A connection accepted by one serving thread for another.
pub struct Handoff {
    pub tcp: std::net::TcpStream,
    pub peer: SocketAddr,
    /// Its place under the connection caps, taken by the thread that accepted it.
    pub slot: Slot,
}

struct Lane {
    open: AtomicUsize,
    inbox: mpsc::UnboundedSender<Handoff>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Handoff>>>,
}

/// Open connections per serving thread (lanes `0..threads`) and their inboxes.
pub struct Spread {
    lanes: Vec<Lane>,
}

impl Spread {
    pub fn new(threads: usize) -> Self {
        let lanes = (0..threads.max(1))
            .map(|_| {
                let (inbox, rx) = mpsc::unbounded_channel();
                Lane {
                    open: AtomicUsize::new(0),
                    inbox,
                    receiver: Mutex::new(Some(rx)),
                }
            })
            .collect();
        Self { lanes }
    }

    /// Lane `lane`'s inbox, once: the serving thread that owns the lane takes it.
    pub fn take_inbox(&self, lane: usize) -> Option<mpsc::UnboundedReceiver<Handoff>> {
        self.lanes
            .get(lane)?
            .receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Where a connection lane `me` just accepted should be served: `me`, unless another
    /// lane holds fewer connections. The chosen lane counts it from now on.
    pub fn place(&self, me: usize) -> usize {
        let mine = self.open(me);
        let (least, fewest) = self
            .lanes
            .iter()
            .enumerate()
            .map(|(i, l)| (i, l.open.load(Ordering::Relaxed)))
            .min_by_key(|&(i, n)| (n, i != me))
            .unwrap_or((me, mine));
        let lane = if fewest < mine { least } else { me };
        self.opened(lane);
        lane
    }

    /// Hands `conn` to `lane`'s thread; gives it back if that thread has stopped.
    pub fn hand_to(&self, lane: usize, conn: Handoff) -> Result<(), Handoff> {
        self.lanes[lane].inbox.send(conn).map_err(|e| e.0)
    }

    /// Counts a connection on `lane` (one handed back to the thread that accepted it, when
    /// the lane [`Spread::place`] chose no longer takes connections).
    pub fn opened(&self, lane: usize) {
        if let Some(l) = self.lanes.get(lane) {
            l.open.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn closed(&self, lane: usize) {
        if let Some(l) = self.lanes.get(lane) {
            l.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub fn open(&self, lane: usize) -> usize {
        self.lanes
            .get(lane)
            .map_or(0, |l| l.open.load(Ordering::Relaxed))
    }

    /// Open connections per lane, for `/metrics`.
    pub fn open_per_lane(&self) -> Vec<usize> {
        (0..self.lanes.len()).map(|i| self.open(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Spread;

    #[test]
    fn a_burst_accepted_by_one_thread_ends_up_even() {
        let spread = Spread::new(3);
        let placed: Vec<usize> = (0..9).map(|_| spread.place(0)).collect();
        assert_eq!(spread.open_per_lane(), vec![3, 3, 3]);
        // The accepting thread keeps a connection when no lane holds fewer than it.
        assert_eq!(placed[0], 0);
    }

    #[test]
    fn closed_connections_make_room_where_they_closed() {
        let spread = Spread::new(2);
        for _ in 0..4 {
            spread.place(0);
        }
        spread.closed(1);
        spread.closed(1);
        assert_eq!(spread.open_per_lane(), vec![2, 0]);
        assert_eq!(spread.place(0), 1);
        // No lane holds fewer than lane 1: it keeps what it accepts.
        assert_eq!(spread.place(1), 1);
        assert_eq!(spread.place(1), 1);
        assert_eq!(spread.open_per_lane(), vec![2, 3]);
        assert_eq!(spread.place(1), 0);
    }

    #[test]
    fn one_thread_serves_everything_itself() {
        let spread = Spread::new(1);
        assert!((0..5).all(|_| spread.place(0) == 0));
        assert_eq!(spread.open_per_lane(), vec![5]);
    }
}
