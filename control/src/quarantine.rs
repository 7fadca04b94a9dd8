//! Quarantine: a member that keeps restarting takes no role.
//!
//! A member whose incarnation (it grows at every start) changes
//! [`RESTARTS`] times within [`WINDOW`] is crash-looping: handing it a role
//! would move the role again at its next crash, and each move costs hosts a
//! stall. The arbiter counts the restarts it sees in the failure detector's
//! view and marks such a member quarantined ([`MemberFacts::quarantined`])
//! while [`RESTARTS`] of its restarts fall within the last [`WINDOW`]. The
//! count lives in the leader's arbiter: a new leader starts it afresh.
//! Sans-IO: the caller passes the clock.
//!
//! [`MemberFacts::quarantined`]: crate::arbitration::MemberFacts::quarantined

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::MemberId;

/// Restarts within [`WINDOW`] that quarantine a member.
pub const RESTARTS: usize = 3;
/// How far back restarts count, and how long quarantine lasts after the
/// last one.
pub const WINDOW: Duration = Duration::from_secs(600);

/// The restarts seen per member.
#[derive(Debug, Default)]
pub struct RestartWatch {
    members: BTreeMap<MemberId, Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    incarnation: Option<u64>,
    restarts: VecDeque<Instant>,
}

impl RestartWatch {
    /// Records that `member` is at `incarnation` (None: not heard yet) at
    /// `now`; returns true when this is a restart that quarantines it.
    pub fn observe(&mut self, member: &MemberId, incarnation: Option<u64>, now: Instant) -> bool {
        let seen = self.members.entry(member.clone()).or_default();
        let Some(inc) = incarnation else {
            return false;
        };
        let restarted = seen.incarnation.is_some_and(|old| inc > old);
        seen.incarnation = Some(inc);
        if !restarted {
            return false;
        }
        seen.restarts.push_back(now);
        while seen
            .restarts
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) > WINDOW)
        {
            seen.restarts.pop_front();
        }
        seen.restarts.len() == RESTARTS
    }

    /// Whether `member` is quarantined at `now`: [`RESTARTS`] restarts
    /// within [`WINDOW`], the last less than [`WINDOW`] ago.
    pub fn quarantined(&self, member: &MemberId, now: Instant) -> bool {
        self.members.get(member).is_some_and(|s| {
            let recent: Vec<&Instant> = s
                .restarts
                .iter()
                .filter(|&&t| now.saturating_duration_since(t) <= WINDOW)
                .collect();
            recent.len() >= RESTARTS
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_restarts_within_the_window_quarantine_until_it_has_passed() {
        let m = MemberId("m2".into());
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = RestartWatch::default();
        // First sight and steady heartbeats are no restart.
        assert!(!w.observe(&m, None, at(0)));
        assert!(!w.observe(&m, Some(5), at(1)));
        assert!(!w.observe(&m, Some(5), at(2)));
        // Two restarts: not yet.
        assert!(!w.observe(&m, Some(6), at(60)));
        assert!(!w.observe(&m, Some(7), at(120)));
        assert!(!w.quarantined(&m, at(121)));
        // The third within ten minutes: quarantined.
        assert!(w.observe(&m, Some(8), at(180)));
        assert!(w.quarantined(&m, at(181)));
        // Until the oldest of them is ten minutes old.
        assert!(w.quarantined(&m, at(60 + 600)));
        assert!(!w.quarantined(&m, at(60 + 601)));
        // Others are not touched.
        assert!(!w.quarantined(&MemberId("m1".into()), at(181)));
    }

    #[test]
    fn restarts_spread_over_more_than_the_window_never_quarantine() {
        let m = MemberId("m3".into());
        let t0 = Instant::now();
        let mut w = RestartWatch::default();
        w.observe(&m, Some(1), t0);
        for i in 1..10u64 {
            let now = t0 + Duration::from_secs(400 * i);
            assert!(!w.observe(&m, Some(1 + i), now), "restart {i}");
            assert!(!w.quarantined(&m, now));
        }
    }
}
