//! A seeded simulation of members running [`Discovery`] over two networks
//! (test-only): a deterministic event queue delivers datagrams by address,
//! with per-link drop probability, delay and partitions.
//!
//! ```text
//! Output::Send ─> cut? drop? ─> queue at now + delay ─> received() on the member owning `to`
//! every STEP: deliver what is due (in time, then send order), then tick() every member
//! ```
//!
//! All randomness comes from one `StdRng` seeded by the test and every
//! collection is ordered, so a seed replays exactly.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Config, Discovery, Identity, Output};
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

/// A datagram on its way.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    to: usize,
    link: LinkName,
    from: String,
    bytes: Vec<u8>,
}

/// The simulated members and networks.
#[derive(Debug)]
pub(super) struct Sim {
    t0: Instant,
    now: Duration,
    rng: StdRng,
    /// Probability that a datagram is lost.
    pub drop: f64,
    /// Delay is drawn uniformly from this range (milliseconds).
    pub delay_ms: (u64, u64),
    cut: BTreeSet<(usize, LinkName)>,
    seq: u64,
    queue: BinaryHeap<Reverse<(Duration, u64, InFlight)>>,
    specs: Vec<Spec>,
    /// Each member's service.
    pub nodes: Vec<Discovery>,
    /// Each member's reports.
    pub logs: Vec<Log>,
    /// Datagrams sent, and lost to drop or partition.
    pub sent: u64,
    /// Datagrams lost.
    pub lost: u64,
}

impl Sim {
    /// Members as `specs` say, member `i` at [`addr`]`(i, link)`.
    pub fn new(seed: u64, specs: Vec<Spec>) -> Self {
        let t0 = Instant::now();
        let nodes = specs.iter().enumerate().map(|(i, s)| build(i, s)).collect();
        let logs = specs.iter().map(|_| Log::default()).collect();
        Self {
            t0,
            now: Duration::ZERO,
            rng: StdRng::seed_from_u64(seed),
            drop: 0.0,
            delay_ms: (1, 20),
            cut: BTreeSet::new(),
            seq: 0,
            queue: BinaryHeap::new(),
            specs,
            nodes,
            logs,
            sent: 0,
            lost: 0,
        }
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now
    }

    /// The instant `d` after the start.
    pub fn at(&self, d: Duration) -> Instant {
        self.t0 + d
    }

    /// Cuts member `i` off `link` (both directions, in flight included).
    pub fn cut(&mut self, i: usize, link: &LinkName) {
        self.cut.insert((i, link.clone()));
    }

    /// Reconnects member `i` to `link`.
    pub fn heal(&mut self, i: usize, link: &LinkName) {
        self.cut.remove(&(i, link.clone()));
    }

    /// Restarts member `i` with the next incarnation (all its state lost).
    pub fn restart(&mut self, i: usize) {
        self.specs[i].incarnation += 1;
        self.nodes[i] = build(i, &self.specs[i]);
    }

    /// Member `i`'s browser finds member `j` on `link`.
    pub fn browse(&mut self, i: usize, j: usize, link: &LinkName) {
        let now = self.at(self.now);
        let hint = self.specs[j].member.clone();
        let outs = self.nodes[i].found(now, link, Some(&hint), &addr(j, link));
        self.handle(i, outs);
    }

    /// Runs the members and networks for `d`.
    pub fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            let step_end = self.now + STEP;
            while let Some(Reverse((at, _, _))) = self.queue.peek() {
                if *at > step_end {
                    break;
                }
                let Some(Reverse((at, _, f))) = self.queue.pop() else {
                    break;
                };
                self.now = at;
                if self.cut.contains(&(f.to, f.link.clone())) {
                    self.lost += 1;
                    continue;
                }
                let now = self.at(at);
                let outs = self.nodes[f.to].received(now, &f.link, &f.from, &f.bytes);
                self.handle(f.to, outs);
            }
            self.now = step_end;
            let now = self.at(step_end);
            for i in 0..self.nodes.len() {
                let outs = self.nodes[i].tick(now);
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
                        } => log.admitted.push((member.clone(), *incarnation, self.now)),
                        Output::Confirmed { member, link } => {
                            log.confirmed.insert((member.clone(), link.clone()));
                        }
                        Output::Rejected { link, addr, reason } => {
                            log.rejected.push((
                                link.clone(),
                                addr.clone(),
                                reason.clone(),
                                self.now,
                            ));
                        }
                        _ => {}
                    }
                    log.events.push((self.now, other));
                }
            }
        }
    }

    fn send(&mut self, i: usize, link: LinkName, to: String, bytes: Vec<u8>) {
        self.sent += 1;
        let dest = (0..self.nodes.len()).find(|&j| addr(j, &link) == to);
        let Some(j) = dest else {
            self.lost += 1;
            return;
        };
        if self.cut.contains(&(i, link.clone())) || self.cut.contains(&(j, link.clone())) {
            self.lost += 1;
            return;
        }
        if self.drop > 0.0 && self.rng.gen_bool(self.drop) {
            self.lost += 1;
            return;
        }
        let (lo, hi) = self.delay_ms;
        let delay = Duration::from_millis(self.rng.gen_range(lo..=hi));
        self.seq += 1;
        let f = InFlight {
            to: j,
            link: link.clone(),
            from: addr(i, &link),
            bytes,
        };
        self.queue.push(Reverse((self.now + delay, self.seq, f)));
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
