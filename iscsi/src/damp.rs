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
    /// Lines per interval.
    burst: u32,
    /// When the current interval ends (`None`: none started).
    window_end: Option<Instant>,
    /// Lines logged in the current interval.
    used: u32,
    /// Events since the last line.
    pending: u64,
}

impl Damper {
    /// At most one line per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self::with_burst(interval, 1)
    }

    /// At most `burst` lines per `interval` (each of the first events of
    /// an interval gets its own line, the rest are counted).
    pub fn with_burst(interval: Duration, burst: u32) -> Self {
        Self {
            interval,
            burst: burst.max(1),
            window_end: None,
            used: 0,
            pending: 0,
        }
    }

    /// Records an event at `now`: `Some(n)` when a line is due now, `n`
    /// being the events it stands for (this one and those held back since
    /// the last line); `None` when the event is held back.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        self.pending += 1;
        if self.window_end.is_none_or(|end| now >= end) {
            self.window_end = Some(now + self.interval);
            self.used = 0;
        }
        if self.used < self.burst {
            self.used += 1;
            return Some(std::mem::take(&mut self.pending));
        }
        None
    }

    /// Events held back, once their interval is over (call it now and then
    /// so the last of a burst is told too).
    pub fn flush(&mut self, now: Instant) -> Option<u64> {
        if self.pending == 0 || self.window_end.is_some_and(|end| now < end) {
            return None;
        }
        self.window_end = Some(now + self.interval);
        self.used = self.burst;
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

    #[test]
    fn a_burst_of_lines_then_a_count() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut d = Damper::with_burst(10 * s, 3);
        for i in 0..3 {
            assert_eq!(d.hit(t0 + i * s), Some(1), "each of the first three");
        }
        for i in 3..10 {
            assert_eq!(d.hit(t0 + i * s), None);
        }
        assert_eq!(d.flush(t0 + 10 * s), Some(7), "then what was held back");
        assert_eq!(d.hit(t0 + 11 * s), None, "the flush used this interval");
        assert_eq!(d.hit(t0 + 20 * s), Some(2), "a new interval");
    }
}
