//! The live feed's hub: finished requests, opened Live sessions and key state changes,
//! broadcast to whoever listens (`/api/events`). Bounded: a subscriber that falls behind loses the oldest
//! events and is told how many (it never makes the daemon hold more).
//! A leaf module: it knows the event shapes, not who produces or consumes them.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// A Live session that has just opened (its record comes as a `Request` when it
    /// closes), already serialised.
    Session(Arc<str>),
    Key(Arc<KeyChange>),
}

/// Only feed clients subscribe: "is anyone listening" must stay false without them, so
/// that no request pays for an event nobody reads. Counts for `/metrics` are kept here.
#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<Event>,
    key_counts: Arc<Mutex<BTreeMap<&'static str, u64>>>,
    /// Live subscriptions, kept beside the channel's own count: that one is read under
    /// the channel's lock, which every request would take in turn to ask.
    subscribers: Arc<AtomicUsize>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
            key_counts: Arc::default(),
            subscribers: Arc::default(),
        }
    }
}

/// A feed client's receiver; counted in [`Hub::has_subscribers`] until dropped.
pub struct Subscription {
    rx: broadcast::Receiver<Event>,
    count: Arc<AtomicUsize>,
}

impl Subscription {
    pub async fn recv(&mut self) -> Result<Event, broadcast::error::RecvError> {
        self.rx.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
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

    pub fn subscribe(&self) -> Subscription {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscription {
            rx: self.tx.subscribe(),
            count: self.subscribers.clone(),
        }
    }

    pub fn has_subscribers(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_are_published_only_while_someone_listens() {
        let hub = Hub::default();
        assert!(!hub.has_subscribers());
        let mut one = hub.subscribe();
        let two = hub.clone().subscribe();
        assert!(hub.has_subscribers());
        hub.publish(Event::Request("{}".into()));
        assert!(matches!(one.recv().await, Ok(Event::Request(j)) if &*j == "{}"));
        drop(one);
        assert!(hub.has_subscribers());
        drop(two);
        assert!(!hub.has_subscribers());
    }
}
