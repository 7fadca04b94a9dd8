//! Members running [`Discovery`] over two networks (test-only), on the
//! crate's seeded simulated network ([`crate::sim::Net`]: per-link drop,
//! delay, jitter and partitions). Discovery sends to addresses; the
//! simulation maps each address to the member owning it.
//!
//! ```text
//! Output::Send ─> member owning `to` ─> Net::send ─> Net::advance_to ─> received() on it
//! every STEP: deliver what is due (in time, then send order), then tick() every member
//! ```
//!
//! All randomness comes from the network's generator, seeded by the test,
//! and every collection is ordered, so a seed replays exactly.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::{Config, Discovery, Identity, Output};
use crate::sim::{Conditions, Net};
use crate::wire::ClusterKey;
use crate::{ClusterId, LinkName, MemberId, ProtocolVersion};

/// How often every member is ticked.
const STEP: Duration = Duration::from_millis(100);

/// The cluster key of well-configured members.
pub(super) const KEY: &[u8] = b"trellis-test-cluster-key";

/// Link `a` and link `b`.
pub(super) fn links() -> [LinkName; 2] {
    [LinkName("a".into()), LinkName("b".into())]
}

/// Member `i`'s control address on `link` (127.0.1.x on `a`, 127.0.2.x on `b`).
pub(super) fn addr(i: usize, link: &LinkName) -> String {
    let net = if link.0 == "a" { 1 } else { 2 };
    format!("127.0.{net}.{}:7401", i + 1)
}

/// How one simulated member is configured.
#[derive(Debug, Clone)]
pub(super) struct Spec {
    /// Its name.
    pub member: MemberId,
    /// Its cluster.
    pub cluster: ClusterId,
    /// Its cluster key.
    pub key: Vec<u8>,
    /// Its protocol version.
    pub protocol: ProtocolVersion,
    /// Its incarnation.
    pub incarnation: u64,
    /// Seeds: (member index, link).
    pub seeds: Vec<(usize, LinkName)>,
}

impl Spec {
    /// A well-configured member `m{i+1}` of cluster `c1`, seeded with
    /// `seeds` on both links.
    pub fn good(i: usize, seeds: &[usize]) -> Self {
        Self {
            member: MemberId(format!("m{}", i + 1)),
            cluster: ClusterId("c1".into()),
            key: KEY.to_vec(),
            protocol: ProtocolVersion::CURRENT,
            incarnation: 1,
            seeds: seeds
                .iter()
                .flat_map(|&s| links().map(|l| (s, l)))
                .collect(),
        }
    }
}

/// What one member reported.
#[derive(Debug, Default)]
pub(super) struct Log {
    /// Admitted members with their incarnation and the time.
    pub admitted: Vec<(MemberId, u64, Duration)>,
    /// Confirmed (member, link).
    pub confirmed: BTreeSet<(MemberId, LinkName)>,
    /// Rejections: (link, addr, reason, time).
    pub rejected: Vec<(LinkName, String, String, Duration)>,
    /// Every output but sends, in order (for replay checks).
    pub events: Vec<(Duration, Output)>,
}

impl Log {
    /// Whether `m` was admitted (at any incarnation).
    pub fn has_admitted(&self, m: &str) -> bool {
        self.admitted.iter().any(|(a, _, _)| a.0 == m)
    }
}

/// Member `i` as the network knows it (by index: two specs may share a
/// member name).
fn node(i: usize) -> MemberId {
    MemberId(format!("node{i}"))
}

/// The index of a [`node`] name.
fn index(m: &MemberId) -> usize {
    m.0.strip_prefix("node")
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

/// The simulated members and networks.
#[derive(Debug)]
pub(super) struct Sim {
    t0: Instant,
    net: Net,
    /// Datagrams sent to an address no member owns.
    misaddressed: u64,
    specs: Vec<Spec>,
    /// Each member's service.
    pub nodes: Vec<Discovery>,
    /// Each member's reports.
    pub logs: Vec<Log>,
}

impl Sim {
    /// Members as `specs` say, member `i` at [`addr`]`(i, link)`; both
    /// networks lossless with a delay of 1 to 20 ms.
    pub fn new(seed: u64, specs: Vec<Spec>) -> Self {
        let t0 = Instant::now();
        let nodes = specs.iter().enumerate().map(|(i, s)| build(i, s)).collect();
        let logs = specs.iter().map(|_| Log::default()).collect();
        let mut sim = Self {
            t0,
            net: Net::new(seed, t0),
            misaddressed: 0,
            specs,
            nodes,
            logs,
        };
        sim.set_conditions(0.0, Duration::from_millis(1), Duration::from_millis(20));
        sim
    }

    /// On both networks: datagrams lost with probability `drop`, delayed
    /// by `min..=max` (so reordered).
    pub fn set_conditions(&mut self, drop: f64, min: Duration, max: Duration) {
        for link in links() {
            let c = Conditions {
                drop,
                delay: min,
                jitter: max.saturating_sub(min),
            };
            self.net.set_conditions(&link, c);
        }
    }

    /// Datagrams sent so far.
    pub fn sent(&self) -> u64 {
        self.net.stats().sent + self.misaddressed
    }

    /// Datagrams lost so far (dropped, cut off, or sent nowhere).
    pub fn lost(&self) -> u64 {
        let stats = self.net.stats();
        stats.dropped + stats.cut + self.misaddressed
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.net.now().duration_since(self.t0)
    }

    /// Cuts member `i` off `link` (both directions, in flight included).
    pub fn cut(&mut self, i: usize, link: &LinkName) {
        self.net.partition_link(&node(i), link);
    }

    /// Reconnects member `i` to `link`.
    pub fn heal(&mut self, i: usize, link: &LinkName) {
        self.net.heal_link(&node(i), link);
    }

    /// Restarts member `i` with the next incarnation (all its state lost).
    pub fn restart(&mut self, i: usize) {
        self.specs[i].incarnation += 1;
        self.nodes[i] = build(i, &self.specs[i]);
    }

    /// Member `i`'s browser finds member `j` on `link`.
    pub fn browse(&mut self, i: usize, j: usize, link: &LinkName) {
        let now = self.net.now();
        let hint = self.specs[j].member.clone();
        let outs = self.nodes[i].found(now, link, Some(&hint), &addr(j, link));
        self.handle(i, outs);
    }

    /// Runs the members and networks for `d`.
    pub fn run(&mut self, d: Duration) {
        let end = self.net.now() + d;
        while self.net.now() < end {
            let step_end = self.net.now() + STEP;
            // One due time at a time, so that what a delivery sends is
            // sent at that time and may be due within the step.
            while let Some(due) = self.net.next_due().filter(|&t| t <= step_end) {
                for (at, datagram) in self.net.advance_to(due) {
                    let to = index(&datagram.to);
                    let from = addr(index(&datagram.from), &datagram.link);
                    let outs = self.nodes[to].received(at, &datagram.link, &from, &datagram.bytes);
                    self.handle(to, outs);
                }
            }
            self.net.advance_to(step_end);
            for i in 0..self.nodes.len() {
                let outs = self.nodes[i].tick(step_end);
                self.handle(i, outs);
            }
        }
    }

    /// Whether every member in `who` admitted every other one in `who`.
    pub fn all_admitted(&self, who: &[usize]) -> bool {
        who.iter().all(|&i| {
            who.iter()
                .filter(|&&j| j != i)
                .all(|&j| self.nodes[i].is_admitted(&self.specs[j].member))
        })
    }

    fn handle(&mut self, i: usize, outs: Vec<Output>) {
        let now = self.elapsed();
        for o in outs {
            match o {
                Output::Send { link, to, datagram } => self.send(i, link, to, datagram),
                other => {
                    let log = &mut self.logs[i];
                    match &other {
                        Output::Admitted {
                            member,
                            incarnation,
                            ..
                        } => log.admitted.push((member.clone(), *incarnation, now)),
                        Output::Confirmed { member, link } => {
                            log.confirmed.insert((member.clone(), link.clone()));
                        }
                        Output::Rejected { link, addr, reason } => {
                            log.rejected
                                .push((link.clone(), addr.clone(), reason.clone(), now));
                        }
                        _ => {}
                    }
                    log.events.push((now, other));
                }
            }
        }
    }

    fn send(&mut self, i: usize, link: LinkName, to: String, bytes: Vec<u8>) {
        match (0..self.nodes.len()).find(|&j| addr(j, &link) == to) {
            Some(j) => self.net.send(&node(i), &node(j), &link, bytes),
            None => self.misaddressed += 1,
        }
    }
}

fn build(i: usize, s: &Spec) -> Discovery {
    let id = Identity {
        member: s.member.clone(),
        cluster: s.cluster.clone(),
        key: ClusterKey::new(&s.key).expect("test key"),
        software: "trellis 0.1.0".into(),
        protocol: s.protocol,
        incarnation: s.incarnation,
    };
    let own = links().map(|l| {
        let a = addr(i, &l);
        (l, a)
    });
    let seeds = s
        .seeds
        .iter()
        .map(|(j, l)| (l.clone(), addr(*j, l)))
        .collect();
    Discovery::new(id, own.to_vec(), seeds, Config::default()).expect("discovery")
}
