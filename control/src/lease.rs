//! Leases: never two writers (SPEC.md §3, path swap). Sans-IO, monotonic
//! instants passed in.
//!
//! A member serves a set's devices as Active/Optimized only while it holds
//! a lease. It asks the Raft leader for one every
//! [`LeaseTimers::renew_every`]; the leader grants it only after confirming
//! with a quorum that it still leads, and the member counts the lease from
//! the moment it *sent* the request ([`Holder`]). The leader notes when it
//! granted ([`Granter`]) and treats the member as possibly holding a lease
//! until that instant plus the lease plus a drift margin; a leader that has
//! just taken over assumes every member may hold one for that long from
//! its election.
//!
//! ```text
//!  member              leader                       quorum
//!   │ t_send ── request ──>│ confirm leadership ──────>│
//!   │                      │<──────────── acks ────────│
//!   │<── grant ────────────│ t_grant (> t_send)
//!   valid until t_send + L            may hold until t_grant + L + drift
//! ```
//!
//! Why this is safe: the member's lease ends at `t_send + L` by its own
//! monotonic clock, which is no later than `t_grant + L` (plus the
//! difference of clock rates, which the drift margin covers). A grant by
//! a leader that was already deposed cannot outlive what its successor
//! assumes: the deposed leader confirmed its leadership with a quorum after
//! `t_send`, so before its successor's election, and the successor waits
//! `L + drift` from its election. The arbiter promotes a new Primary only
//! when the old one's lease may no longer hold ([`Granter::may_hold`]).
//!
//! A member steps down by itself: from [`LeaseTimers::demote_before`]
//! before its lease ends it reports [`LeaseState::Expiring`] (its ports go
//! Transitioning) and once it ends [`LeaseState::Expired`] (Standby or
//! Unavailable), whether or not it can reach anyone.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::MemberId;

/// The lease timers; every member of a cluster must use the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimers {
    /// How long a lease lasts from the request.
    pub duration: Duration,
    /// How often a member asks again.
    pub renew_every: Duration,
    /// What the leader adds for clock-rate differences and stalls between
    /// a member's check and its write reaching the disk.
    pub drift: Duration,
    /// How long before its lease ends a member moves its ports to
    /// Transitioning.
    pub demote_before: Duration,
}

impl Default for LeaseTimers {
    fn default() -> Self {
        LeaseTimers {
            duration: Duration::from_millis(2000),
            renew_every: Duration::from_millis(400),
            drift: Duration::from_millis(300),
            demote_before: Duration::from_millis(500),
        }
    }
}

impl LeaseTimers {
    /// Checks the timers make sense: renewals well inside a lease, the
    /// demotion before its end.
    pub fn check(&self) -> Result<(), String> {
        if self.duration.is_zero() || self.renew_every.is_zero() {
            return Err("lease duration and renewal interval must not be zero".into());
        }
        if self.renew_every * 2 > self.duration {
            return Err(format!(
                "a lease of {:?} must be at least twice the renewal interval ({:?})",
                self.duration, self.renew_every
            ));
        }
        if self.demote_before >= self.duration {
            return Err(format!(
                "demotion {:?} before the end must be shorter than the lease ({:?})",
                self.demote_before, self.duration
            ));
        }
        Ok(())
    }
}

/// A member's lease as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Held until the instant, from a grant that saw epoch `epoch`.
    Valid {
        /// When it ends.
        until: Instant,
        /// The last epoch committed when it was granted.
        epoch: u64,
    },
    /// Held, but ending within the demotion margin.
    Expiring {
        /// When it ends.
        until: Instant,
        /// The last epoch committed when it was granted.
        epoch: u64,
    },
    /// Not held.
    Expired,
}

impl LeaseState {
    /// Whether the member may serve as Active (optimized or not).
    pub fn serves(&self) -> bool {
        matches!(self, LeaseState::Valid { .. })
    }
}

/// Requests kept waiting for an answer at most (older ones are forgotten:
/// their grants, if they come, count for nothing).
const PENDING: usize = 16;

/// The member's side.
#[derive(Debug, Clone)]
pub struct Holder {
    timers: LeaseTimers,
    next_seq: u64,
    /// Requests sent: sequence number and when.
    pending: VecDeque<(u64, Instant)>,
    until: Option<Instant>,
    epoch: u64,
    last_request: Option<Instant>,
}

impl Holder {
    /// A member holding no lease.
    pub fn new(timers: LeaseTimers) -> Self {
        Holder {
            timers,
            next_seq: 1,
            pending: VecDeque::new(),
            until: None,
            epoch: 0,
            last_request: None,
        }
    }

    /// Whether a request is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.last_request
            .is_none_or(|t| now.saturating_duration_since(t) >= self.timers.renew_every)
    }

    /// A request sent at `now`: its sequence number.
    pub fn request(&mut self, now: Instant) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.pending.len() == PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back((seq, now));
        self.last_request = Some(now);
        seq
    }

    /// The leader granted request `seq`, with `epoch` the last epoch it had
    /// committed. Returns whether the grant counts (an unknown or
    /// forgotten request does not).
    pub fn granted(&mut self, seq: u64, epoch: u64) -> bool {
        let Some(i) = self.pending.iter().position(|(s, _)| *s == seq) else {
            return false;
        };
        let (_, sent) = self.pending[i];
        // Earlier requests are superseded by this answer.
        self.pending.drain(..=i);
        let until = sent + self.timers.duration;
        if self.until.is_none_or(|u| until > u) {
            self.until = Some(until);
        }
        self.epoch = self.epoch.max(epoch);
        true
    }

    /// The lease at `now`.
    pub fn state(&self, now: Instant) -> LeaseState {
        match self.until {
            Some(until) if now < until => {
                if until.saturating_duration_since(now) <= self.timers.demote_before {
                    LeaseState::Expiring {
                        until,
                        epoch: self.epoch,
                    }
                } else {
                    LeaseState::Valid {
                        until,
                        epoch: self.epoch,
                    }
                }
            }
            _ => LeaseState::Expired,
        }
    }

    /// When the lease ends (None: not held).
    pub fn until(&self) -> Option<Instant> {
        self.until
    }
}

/// The leader's side.
#[derive(Debug, Clone)]
pub struct Granter {
    timers: LeaseTimers,
    /// When this member became leader.
    since: Instant,
    granted: BTreeMap<MemberId, Instant>,
}

impl Granter {
    /// A member that became leader at `now`.
    pub fn new(timers: LeaseTimers, now: Instant) -> Self {
        Granter {
            timers,
            since: now,
            granted: BTreeMap::new(),
        }
    }

    /// `member`'s request was granted at `now` (after leadership was
    /// confirmed with a quorum).
    pub fn grant(&mut self, member: &MemberId, now: Instant) {
        self.granted.insert(member.clone(), now);
    }

    fn hold(&self) -> Duration {
        self.timers.duration + self.timers.drift
    }

    /// Whether `member` may still believe it holds a lease at `now`.
    pub fn may_hold(&self, member: &MemberId, now: Instant) -> bool {
        let from = self
            .granted
            .get(member)
            .map_or(self.since, |g| (*g).max(self.since));
        now < from + self.hold()
    }

    /// Whether `member` has renewed within a lease's time: it is up and
    /// reaches the quorum.
    pub fn renewing(&self, member: &MemberId, now: Instant) -> bool {
        self.granted
            .get(member)
            .is_some_and(|g| now < *g + self.timers.duration)
    }

    /// When `member`'s lease can no longer hold.
    pub fn runs_out(&self, member: &MemberId) -> Instant {
        self.granted
            .get(member)
            .map_or(self.since, |g| (*g).max(self.since))
            + self.hold()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_lease_counts_from_the_request_and_steps_down_before_it_ends() {
        let t = LeaseTimers::default();
        let t0 = Instant::now();
        let mut h = Holder::new(t);
        assert_eq!(h.state(t0), LeaseState::Expired);
        assert!(h.due(t0));
        let seq = h.request(t0);
        assert!(!h.due(t0 + ms(100)));
        // Answered late: still counted from the request.
        assert!(h.granted(seq, 7));
        assert!(!h.granted(seq, 7), "a grant counts once");
        assert_eq!(
            h.state(t0 + ms(1000)),
            LeaseState::Valid {
                until: t0 + t.duration,
                epoch: 7
            }
        );
        assert!(matches!(
            h.state(t0 + ms(1600)),
            LeaseState::Expiring { .. }
        ));
        assert!(!h.state(t0 + ms(1600)).serves());
        assert_eq!(h.state(t0 + t.duration), LeaseState::Expired);
        // An older request answered after a newer one never shortens it.
        let a = h.request(t0 + ms(400));
        let b = h.request(t0 + ms(800));
        assert!(h.granted(b, 8));
        assert!(!h.granted(a, 8), "superseded");
        assert_eq!(h.until(), Some(t0 + ms(800) + t.duration));
        // A grant for a request never sent counts for nothing.
        assert!(!h.granted(999, 9));
    }

    #[test]
    fn the_leader_outwaits_every_lease_it_or_a_predecessor_may_have_given() {
        let t = LeaseTimers::default();
        let t0 = Instant::now();
        let m1 = MemberId("m1".into());
        let g = Granter::new(t, t0);
        // Just elected: anyone may hold a lease from a former leader.
        assert!(g.may_hold(&m1, t0 + t.duration));
        assert!(!g.may_hold(&m1, t0 + t.duration + t.drift));
        assert!(!g.renewing(&m1, t0));
        let mut g = g;
        g.grant(&m1, t0 + ms(1000));
        assert!(g.renewing(&m1, t0 + ms(2500)));
        assert!(!g.renewing(&m1, t0 + ms(3000)));
        assert_eq!(g.runs_out(&m1), t0 + ms(1000) + t.duration + t.drift);
        // The member's own view always ends first.
        let mut h = Holder::new(t);
        let seq = h.request(t0 + ms(900));
        h.granted(seq, 1);
        assert!(h.until().unwrap() < g.runs_out(&m1));
    }

    #[test]
    fn timers_are_checked() {
        assert!(LeaseTimers::default().check().is_ok());
        let bad = LeaseTimers {
            renew_every: ms(1500),
            ..LeaseTimers::default()
        };
        assert!(bad.check().unwrap_err().contains("twice the renewal"));
        let bad = LeaseTimers {
            demote_before: ms(2000),
            ..LeaseTimers::default()
        };
        assert!(bad.check().is_err());
    }
}
