//! A seeded, deterministic simulated network for testing the control
//! plane's sans-IO state machines (test-only).
//!
//! ```text
//! send(from, to, link, bytes) ──> drop? (per-link probability) ──> queue at now + delay + jitter
//! advance_to(t) ──> every datagram due by t, in (due, send order), minus those cut by a partition
//! ```
//!
//! The network knows members and links by name only and carries opaque
//! bytes; the test drives its own nodes (membership, discovery, ...) around
//! it. All randomness comes from one `StdRng` seeded by the test, and every
//! collection is ordered, so a seed replays exactly.
//!
//! Partitions are checked both when a datagram is sent and when it is due:
//! cutting a member off a link also loses what was in flight to or from it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{LinkName, MemberId};

/// How one network treats the datagrams it carries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Conditions {
    /// Probability that a datagram is lost, 0.0 to 1.0.
    pub drop: f64,
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` per datagram (so
    /// datagrams may be reordered).
    pub jitter: Duration,
}

impl Default for Conditions {
    fn default() -> Self {
        Self {
            drop: 0.0,
            delay: Duration::from_millis(1),
            jitter: Duration::ZERO,
        }
    }
}

/// A datagram in flight or delivered.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Datagram {
    /// Sender.
    pub from: MemberId,
    /// Receiver.
    pub to: MemberId,
    /// The network it travels on.
    pub link: LinkName,
    /// Payload, opaque to the network.
    pub bytes: Vec<u8>,
}

/// What happened to the datagrams sent so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    /// Handed to `send`.
    pub sent: u64,
    /// Lost to the link's drop probability.
    pub dropped: u64,
    /// Lost to a partition.
    pub cut: u64,
    /// Returned by `advance_to`.
    pub delivered: u64,
}

/// The simulated networks between members.
#[derive(Debug)]
pub(crate) struct Net {
    rng: StdRng,
    now: Instant,
    seq: u64,
    queue: BinaryHeap<Reverse<(Instant, u64, Datagram)>>,
    conditions: BTreeMap<LinkName, Conditions>,
    /// (member, link) pairs cut off.
    cut_links: BTreeSet<(MemberId, LinkName)>,
    /// Members cut off every link.
    isolated: BTreeSet<MemberId>,
    /// Whole networks down.
    down_networks: BTreeSet<LinkName>,
    stats: Stats,
}

impl Net {
    /// A network with no partitions and default conditions on every link,
    /// its clock at `start`.
    pub fn new(seed: u64, start: Instant) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            now: start,
            seq: 0,
            queue: BinaryHeap::new(),
            conditions: BTreeMap::new(),
            cut_links: BTreeSet::new(),
            isolated: BTreeSet::new(),
            down_networks: BTreeSet::new(),
            stats: Stats::default(),
        }
    }

    /// The simulated time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The seeded generator, for the test's own draws (start offsets, ...).
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Sets the conditions of one network (for datagrams sent from now on).
    pub fn set_conditions(&mut self, link: &LinkName, c: Conditions) {
        self.conditions.insert(link.clone(), c);
    }

    /// Cuts `member` off network `link` (both directions).
    pub fn partition_link(&mut self, member: &MemberId, link: &LinkName) {
        self.cut_links.insert((member.clone(), link.clone()));
    }

    /// Undoes [`Net::partition_link`].
    pub fn heal_link(&mut self, member: &MemberId, link: &LinkName) {
        self.cut_links.remove(&(member.clone(), link.clone()));
    }

    /// Cuts `member` off every network.
    pub fn isolate(&mut self, member: &MemberId) {
        self.isolated.insert(member.clone());
    }

    /// Undoes [`Net::isolate`].
    pub fn rejoin(&mut self, member: &MemberId) {
        self.isolated.remove(member);
    }

    /// Takes a whole network down (a switch failure) or back up.
    pub fn set_network_down(&mut self, link: &LinkName, down: bool) {
        if down {
            self.down_networks.insert(link.clone());
        } else {
            self.down_networks.remove(link);
        }
    }

    /// Removes every partition.
    pub fn heal_all(&mut self) {
        self.cut_links.clear();
        self.isolated.clear();
        self.down_networks.clear();
    }

    fn is_cut(&self, d: &Datagram) -> bool {
        self.down_networks.contains(&d.link)
            || self.isolated.contains(&d.from)
            || self.isolated.contains(&d.to)
            || self.cut_links.contains(&(d.from.clone(), d.link.clone()))
            || self.cut_links.contains(&(d.to.clone(), d.link.clone()))
    }

    /// Sends a datagram now; it is due after the link's delay and jitter,
    /// unless dropped or cut.
    pub fn send(&mut self, from: &MemberId, to: &MemberId, link: &LinkName, bytes: Vec<u8>) {
        self.stats.sent += 1;
        let d = Datagram {
            from: from.clone(),
            to: to.clone(),
            link: link.clone(),
            bytes,
        };
        let c = self.conditions.get(link).copied().unwrap_or_default();
        // Draw both numbers for every datagram so a partition does not shift
        // the random sequence of the datagrams after it.
        let lost = c.drop > 0.0 && self.rng.gen_bool(c.drop.min(1.0));
        let jitter_ns = u64::try_from(c.jitter.as_nanos()).unwrap_or(u64::MAX);
        let extra = Duration::from_nanos(self.rng.gen_range(0..=jitter_ns));
        if lost {
            self.stats.dropped += 1;
            return;
        }
        if self.is_cut(&d) {
            self.stats.cut += 1;
            return;
        }
        let due = self.now + c.delay + extra;
        self.seq += 1;
        self.queue.push(Reverse((due, self.seq, d)));
    }

    /// When the next datagram in flight is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Moves the clock to `t` (never backwards) and returns the datagrams
    /// due by then, in order, with the time each arrives.
    pub fn advance_to(&mut self, t: Instant) -> Vec<(Instant, Datagram)> {
        let t = t.max(self.now);
        let mut out = Vec::new();
        while let Some(Reverse((due, _, _))) = self.queue.peek() {
            if *due > t {
                break;
            }
            let Some(Reverse((due, _, d))) = self.queue.pop() else {
                break;
            };
            if self.is_cut(&d) {
                self.stats.cut += 1;
                continue;
            }
            self.stats.delivered += 1;
            out.push((due, d));
        }
        self.now = t;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> MemberId {
        MemberId(s.into())
    }
    fn l(s: &str) -> LinkName {
        LinkName(s.into())
    }

    /// Offsets from the start, so two runs compare equal.
    fn run(seed: u64) -> (Vec<(Duration, Datagram)>, Stats) {
        let t0 = Instant::now();
        let mut net = Net::new(seed, t0);
        net.set_conditions(
            &l("a"),
            Conditions {
                drop: 0.3,
                delay: Duration::from_millis(5),
                jitter: Duration::from_millis(20),
            },
        );
        let mut got = Vec::new();
        for i in 0..=200u32 {
            if i < 200 {
                net.send(&m("m1"), &m("m2"), &l("a"), i.to_be_bytes().to_vec());
                net.send(&m("m2"), &m("m1"), &l("b"), i.to_be_bytes().to_vec());
            }
            let now = net.now() + Duration::from_millis(if i < 200 { 10 } else { 1000 });
            got.extend(
                net.advance_to(now)
                    .into_iter()
                    .map(|(t, d)| (t.duration_since(t0), d)),
            );
        }
        (got, net.stats())
    }

    #[test]
    fn a_seed_replays_exactly_and_conditions_apply() {
        let (a, sa) = run(7);
        let (b, sb) = run(7);
        assert_eq!(sa, sb);
        assert_eq!(a, b);
        assert_ne!(a, run(8).0);
        assert_eq!(sa.sent, 400);
        assert!(sa.dropped > 20 && sa.dropped < 110, "{sa:?}");
        assert_eq!(sa.delivered + sa.dropped, 400);
        // Link b is lossless and in order.
        let on_b: Vec<_> = a.iter().filter(|(_, d)| d.link == l("b")).collect();
        assert_eq!(on_b.len(), 200);
        // Jitter on link a reorders some datagrams.
        let on_a: Vec<u32> = a
            .iter()
            .filter(|(_, d)| d.link == l("a"))
            .map(|(_, d)| u32::from_be_bytes([d.bytes[0], d.bytes[1], d.bytes[2], d.bytes[3]]))
            .collect();
        assert!(on_a.windows(2).any(|w| w[0] > w[1]));
    }

    #[test]
    fn partitions_cut_in_flight_and_new_datagrams() {
        let t0 = Instant::now();
        let mut net = Net::new(1, t0);
        net.send(&m("m1"), &m("m2"), &l("a"), vec![1]);
        assert_eq!(net.next_due(), Some(t0 + Duration::from_millis(1)));
        net.partition_link(&m("m2"), &l("a"));
        net.send(&m("m1"), &m("m2"), &l("b"), vec![2]);
        net.send(&m("m1"), &m("m2"), &l("a"), vec![3]);
        let got = net.advance_to(t0 + Duration::from_millis(10));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.bytes, vec![2]);
        net.heal_link(&m("m2"), &l("a"));
        net.isolate(&m("m1"));
        net.send(&m("m2"), &m("m1"), &l("b"), vec![4]);
        net.rejoin(&m("m1"));
        net.set_network_down(&l("b"), true);
        net.send(&m("m2"), &m("m1"), &l("b"), vec![5]);
        net.send(&m("m2"), &m("m1"), &l("a"), vec![6]);
        let got = net.advance_to(t0 + Duration::from_millis(20));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.bytes, vec![6]);
        assert_eq!(net.stats().cut, 4);
        net.isolate(&m("m2"));
        net.partition_link(&m("m1"), &l("a"));
        net.heal_all();
        net.send(&m("m2"), &m("m1"), &l("a"), vec![7]);
        net.send(&m("m2"), &m("m1"), &l("b"), vec![8]);
        assert_eq!(net.advance_to(t0 + Duration::from_millis(30)).len(), 2);
        assert_eq!(net.next_due(), None);
    }
}
