//! Changes pushed to whoever waits for them: a counter under a condition
//! variable. A producer (the Raft state machine applying entries, the
//! failure detector seeing a member's state move) calls [`Watch::notify`];
//! a consumer (trellisd's exports and arbitration threads) holds a
//! [`Subscriber`] and blocks in [`Subscriber::wait`] until something moved
//! since it last looked, or a timeout. Notifications coalesce: a consumer
//! that was busy sees one change for many, and then reads the state as it
//! is now.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Inner {
    version: Mutex<u64>,
    moved: Condvar,
    /// Watches notified with this one ([`merged`]).
    forwards: Mutex<Vec<Watch>>,
}

/// The producer's side; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    inner: Arc<Inner>,
}

impl Watch {
    /// A watch nothing has changed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Something changed: wakes every waiting subscriber (of this watch
    /// and of the watches merged from it).
    pub fn notify(&self) {
        {
            let mut v = self
                .inner
                .version
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *v = v.wrapping_add(1);
            self.inner.moved.notify_all();
        }
        let forwards = self
            .inner
            .forwards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for w in forwards {
            w.notify();
        }
    }

    /// How many changes so far.
    pub fn version(&self) -> u64 {
        *self
            .inner
            .version
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A subscriber that has seen nothing yet: its first
    /// [`wait`](Subscriber::wait) returns at once.
    pub fn subscribe(&self) -> Subscriber {
        Subscriber {
            watch: self.clone(),
            seen: None,
        }
    }
}

/// The consumer's side.
#[derive(Debug, Clone)]
pub struct Subscriber {
    watch: Watch,
    seen: Option<u64>,
}

impl Subscriber {
    /// Waits until something changed since the last call (or since the
    /// subscription, for the first: that returns at once) or `timeout`
    /// passed; true when something changed.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let inner = &self.watch.inner;
        let mut v = inner.version.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if self.seen != Some(*v) {
                self.seen = Some(*v);
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            v = inner
                .moved
                .wait_timeout(v, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Whether something changed since the last [`wait`](Self::wait),
    /// without waiting or taking it.
    pub fn changed(&self) -> bool {
        self.seen != Some(self.watch.version())
    }
}

/// A new watch that changes whenever any of `sources` does: a subscriber
/// of it wakes for any of them. (Only a new watch is merged into, so a
/// notification cannot loop.)
pub fn merged(sources: &[&Watch]) -> Watch {
    let out = Watch::new();
    for s in sources {
        s.inner
            .forwards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(out.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_wait_returns_then_only_changes_wake() {
        let w = Watch::new();
        let mut s = w.subscribe();
        assert!(s.wait(Duration::from_secs(5)));
        assert!(!s.changed());
        assert!(!s.wait(Duration::from_millis(20)));
        w.notify();
        w.notify();
        assert!(s.changed());
        // Two notifications, one wake: the consumer reads the state now.
        assert!(s.wait(Duration::from_secs(5)));
        assert!(!s.wait(Duration::from_millis(20)));
    }

    #[test]
    fn a_notification_from_another_thread_wakes_a_waiter() {
        let w = Watch::new();
        let mut s = w.subscribe();
        s.wait(Duration::ZERO);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            tx.send(()).unwrap();
            s.wait(Duration::from_secs(60))
        });
        rx.recv().unwrap();
        let t0 = Instant::now();
        w.notify();
        assert!(waiter.join().unwrap());
        // Woken by the notification, not by the 60 s timeout.
        assert!(t0.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn merged_watch_wakes_for_each_source() {
        let (a, b) = (Watch::new(), Watch::new());
        let m = merged(&[&a, &b]);
        let mut s = m.subscribe();
        s.wait(Duration::ZERO);
        a.notify();
        assert!(s.wait(Duration::from_secs(5)));
        b.notify();
        assert!(s.wait(Duration::from_secs(5)));
        assert!(!s.wait(Duration::from_millis(10)));
        // The sources' own subscribers are unaffected by the merge.
        let mut sa = a.subscribe();
        sa.wait(Duration::ZERO);
        b.notify();
        assert!(!sa.changed());
    }
}
