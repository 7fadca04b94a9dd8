//! Damped logging: a repeated event (a refused connection, a failed
//! accept, a refused login) is logged at most once per interval, with how
//! many times it happened since the last line, so a flood of them costs a
//! line per interval instead of a line each. Sans-IO: the caller passes
//! the time.

use std::time::{Duration, Instant};

/// Counts events and says when one is worth a log line.
#[derive(Debug, Clone)]
pub struct Damper {
    interval: Duration,
    /// When the next line may be logged (`None`: at the next event).
    next: Option<Instant>,
    /// Events since the last line.
    pending: u64,
}

impl Damper {
    /// At most one line per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            next: None,
            pending: 0,
        }
    }

    /// Records an event at `now`: `Some(n)` when a line is due now, `n`
    /// being the events it stands for (this one and those held back since
    /// the last line); `None` when the event is held back.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        self.pending += 1;
        self.due(now)
    }

    /// Events held back, once their interval is over (call it now and then
    /// so the last of a burst is told too).
    pub fn flush(&mut self, now: Instant) -> Option<u64> {
        if self.pending == 0 {
            return None;
        }
        self.due(now)
    }

    fn due(&mut self, now: Instant) -> Option<u64> {
        if self.next.is_some_and(|t| now < t) {
            return None;
        }
        self.next = Some(now + self.interval);
        Some(std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_counting_what_was_held_back() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut d = Damper::new(5 * s);
        assert_eq!(d.hit(t0), Some(1), "the first event is told at once");
        for i in 1..1000 {
            assert_eq!(d.hit(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(d.flush(t0 + 4 * s), None, "not before the interval");
        assert_eq!(d.hit(t0 + 5 * s), Some(1000), "999 held back and this one");
        assert_eq!(d.hit(t0 + 6 * s), None);
        assert_eq!(d.flush(t0 + 10 * s), Some(1), "the tail of a burst");
        assert_eq!(d.flush(t0 + 20 * s), None, "nothing held back");
        assert_eq!(d.hit(t0 + 21 * s), Some(1));
    }
}
