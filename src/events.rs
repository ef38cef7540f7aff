//! The live feed's hub: finished requests and key state changes, broadcast to whoever
//! listens (`/api/events`). Bounded: a subscriber that falls behind loses the oldest
//! events and is told how many (it never makes the daemon hold more).
//! A leaf module: it knows the event shapes, not who produces or consumes them.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Events kept for slow subscribers before they start missing some.
const CAPACITY: usize = 512;

#[derive(Debug, Clone, Serialize)]
pub struct KeyChange {
    pub id: String,
    pub brief: String,
    /// `retired`, `cooled`, `revived`, `disabled`, `enabled`, `added`, `removed`.
    pub change: &'static str,
    pub model: Option<String>,
    pub reason: Option<String>,
    pub until_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub enum Event {
    /// A finished request, already serialised as its log record.
    Request(Arc<str>),
    Key(Arc<KeyChange>),
}

/// Only feed clients subscribe: "is anyone listening" must stay false without them, so
/// that no request pays for an event nobody reads. Counts for `/metrics` are kept here.
#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<Event>,
    key_counts: Arc<Mutex<BTreeMap<&'static str, u64>>>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
            key_counts: Arc::default(),
        }
    }
}

impl Hub {
    pub fn publish(&self, e: Event) {
        // No subscriber is fine: the event is simply not wanted.
        let _ = self.tx.send(e);
    }

    pub fn key(&self, change: KeyChange) {
        let mut counts = self.key_counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry(change.change).or_default() += 1;
        drop(counts);
        self.publish(Event::Key(Arc::new(change)));
    }

    /// Key changes announced so far, by kind.
    pub fn key_counts(&self) -> BTreeMap<&'static str, u64> {
        self.key_counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    pub fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0
    }
}
