//! Seeded simulations: four members on two networks send heartbeats
//! encoded and authenticated with the real wire codec, carried by
//! [`crate::sim::Net`] with drops, delay, jitter and partitions; every
//! member runs its own failure detector. Each scenario runs with every seed
//! in [`SEEDS`].

use super::*;
use crate::sim::{Conditions, Net};
use rand::Rng;

const SEEDS: [u64; 6] = [1, 2, 3, 42, 1337, 0xC0FFEE];
const STEP: Duration = Duration::from_millis(10);
const MEMBERS: usize = 4;

#[derive(Debug)]
struct Node {
    id: MemberId,
    incarnation: u64,
    running: bool,
    ms: Membership,
    next_beat: Instant,
    seq: u64,
}

#[derive(Debug)]
struct Cluster {
    seed: u64,
    net: Net,
    key: ClusterKey,
    cluster: ClusterId,
    links: Vec<LinkName>,
    nodes: Vec<Node>,
    start: Instant,
    /// (observer, when, event), in order.
    log: Vec<(MemberId, Instant, Event)>,
    /// Heartbeats ignored as from before a restart.
    stale: usize,
}

impl Cluster {
    fn new(seed: u64) -> Self {
        let start = Instant::now();
        let mut c = Self {
            seed,
            net: Net::new(seed, start),
            key: ClusterKey::new(b"simulated-cluster-key-0123").expect("key"),
            cluster: ClusterId("sim".into()),
            links: vec![l("a"), l("b")],
            nodes: Vec::new(),
            start,
            log: Vec::new(),
            stale: 0,
        };
        for i in 0..MEMBERS {
            let node = c.fresh_node(i, 1);
            c.nodes.push(node);
        }
        c
    }

    fn id(i: usize) -> MemberId {
        MemberId(format!("m{}", i + 1))
    }

    /// Node `i` starting now with `incarnation`, every other member admitted.
    fn fresh_node(&mut self, i: usize, incarnation: u64) -> Node {
        let now = self.net.now();
        let mut ms = Membership::new(Config::default()).expect("config");
        for j in (0..MEMBERS).filter(|&j| j != i) {
            ms.add_peer(now, &Self::id(j), self.links.iter().cloned())
                .expect("peer");
        }
        let interval = ms.config().heartbeat_interval;
        let offset = self.net.rng().gen_range(Duration::ZERO..interval);
        Node {
            id: Self::id(i),
            incarnation,
            running: true,
            ms,
            next_beat: now + offset,
            seq: 0,
        }
    }

    fn at(&self, millis: u64) -> Instant {
        self.start + Duration::from_millis(millis)
    }

    fn crash(&mut self, i: usize) {
        self.nodes[i].running = false;
    }

    fn restart(&mut self, i: usize) {
        let inc = self.nodes[i].incarnation + 1;
        self.nodes[i] = self.fresh_node(i, inc);
    }

    fn run_until(&mut self, until: Instant) {
        while self.net.now() < until {
            let now = self.net.now() + STEP;
            for (arrived, d) in self.net.advance_to(now) {
                let Some(node) = self.nodes.iter_mut().find(|n| n.id == d.to && n.running) else {
                    continue;
                };
                let msg =
                    wire::decode(&d.bytes, &self.key, &self.cluster, ProtocolVersion::CURRENT)
                        .expect("authentic heartbeat");
                match node.ms.heard_message(arrived, &d.link, &msg) {
                    Ok(events) => self
                        .log
                        .extend(events.into_iter().map(|e| (node.id.clone(), arrived, e))),
                    Err(Ignored::StaleIncarnation { .. }) => self.stale += 1,
                    Err(e) => panic!("seed {}: {} ignored: {e}", self.seed, node.id),
                }
            }
            for i in 0..self.nodes.len() {
                if !self.nodes[i].running {
                    continue;
                }
                while self.nodes[i].next_beat <= now {
                    self.beat(i);
                }
                let node = &mut self.nodes[i];
                let events = node.ms.tick(now);
                self.log
                    .extend(events.into_iter().map(|e| (node.id.clone(), now, e)));
            }
        }
    }

    /// Node `i` sends a heartbeat on each link to every other member.
    fn beat(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.seq += 1;
        node.next_beat += node.ms.config().heartbeat_interval;
        let (from, inc, seq) = (node.id.clone(), node.incarnation, node.seq);
        for link in self.links.clone() {
            let msg = Message::Heartbeat {
                header: Header {
                    cluster: self.cluster.clone(),
                    from: from.clone(),
                    software: "trellis sim".into(),
                    protocol: ProtocolVersion::CURRENT,
                    incarnation: inc,
                    link: link.clone(),
                    seq,
                },
                role: Role::None,
                roles: Vec::new(),
                state: None,
                epoch: 0,
            };
            let bytes = wire::encode(&msg, &self.key).expect("encode");
            for j in (0..MEMBERS).filter(|&j| j != i) {
                self.net.send(&from, &Self::id(j), &link, bytes.clone());
            }
        }
    }

    /// What `observer` reported about `member` from `from` on.
    fn about(&self, observer: usize, member: usize, from: Instant) -> Vec<Event> {
        let (o, mid) = (Self::id(observer), Self::id(member));
        self.log
            .iter()
            .filter(|(obs, t, e)| obs == &o && *t >= from && e.member() == &mid)
            .map(|(_, _, e)| e.clone())
            .collect()
    }

    /// Everything reported from `from` on.
    fn since(&self, from: Instant) -> Vec<&(MemberId, Instant, Event)> {
        self.log.iter().filter(|(_, t, _)| *t >= from).collect()
    }

    /// Every observer heard every peer on every link exactly once before
    /// `until`, and reported nothing else.
    fn assert_clean_start(&self, until: Instant) {
        for o in 0..MEMBERS {
            for p in (0..MEMBERS).filter(|&p| p != o) {
                let mut got: Vec<_> = self
                    .log
                    .iter()
                    .filter(|(obs, t, e)| {
                        obs == &Self::id(o) && *t < until && e.member() == &Self::id(p)
                    })
                    .map(|(_, _, e)| e.clone())
                    .collect();
                got.sort_by_key(|e| format!("{e:?}"));
                let pid = Self::id(p);
                let want: Vec<_> = self
                    .links
                    .iter()
                    .map(|link| Event::LinkUp {
                        member: pid.clone(),
                        link: link.clone(),
                    })
                    .collect();
                assert_eq!(got, want, "seed {}: m{} about {pid}", self.seed, o + 1);
            }
        }
    }

    /// Every running member sees every other running member Alive on
    /// every link.
    fn assert_all_alive_and_up(&self) {
        let now = self.net.now();
        for n in self.nodes.iter().filter(|n| n.running) {
            for s in n.ms.members(now) {
                assert_eq!(
                    s.state,
                    MemberState::Alive,
                    "seed {}: {} sees {s:?}",
                    self.seed,
                    n.id
                );
                for link in &s.links {
                    assert_eq!(
                        link.state,
                        LinkState::Up,
                        "seed {}: {} sees {s:?}",
                        self.seed,
                        n.id
                    );
                }
            }
        }
    }
}

fn is_member_event(e: &Event) -> bool {
    matches!(
        e,
        Event::MemberAlive { .. }
            | Event::MemberSuspect { .. }
            | Event::MemberFailed { .. }
            | Event::MemberRestarted { .. }
    )
}

fn on_link<'a>(events: &'a [Event], link: &'a LinkName) -> Vec<&'a Event> {
    events
        .iter()
        .filter(|e| match e {
            Event::LinkUp { link: x, .. }
            | Event::LinkDown { link: x, .. }
            | Event::LinkFlapping { link: x, .. } => x == link,
            _ => false,
        })
        .collect()
}

#[test]
fn steady_state_everyone_alive() {
    for seed in SEEDS {
        let mut c = Cluster::new(seed);
        c.run_until(c.at(60_000));
        c.assert_clean_start(c.at(60_001));
        c.assert_all_alive_and_up();
        assert_eq!(c.stale, 0);
        assert_eq!(c.net.stats().dropped, 0);
    }
}

#[test]
fn delay_below_the_timeout_changes_nothing() {
    for seed in SEEDS {
        let mut c = Cluster::new(seed);
        // Up to 700 ms one way, reordering consecutive heartbeats.
        let slow = Conditions {
            drop: 0.0,
            delay: Duration::from_millis(500),
            jitter: Duration::from_millis(200),
        };
        for link in c.links.clone() {
            c.net.set_conditions(&link, slow);
        }
        c.run_until(c.at(60_000));
        c.assert_clean_start(c.at(60_001));
        c.assert_all_alive_and_up();
    }
}

#[test]
fn a_lossy_link_never_fails_a_member() {
    let mut link_events = Vec::new();
    for seed in SEEDS {
        let mut c = Cluster::new(seed);
        c.net.set_conditions(
            &l("b"),
            Conditions {
                drop: 0.2,
                ..Conditions::default()
            },
        );
        c.run_until(c.at(120_000));
        let stats = c.net.stats();
        // Half the datagrams go on link b, a fifth of those are lost.
        assert!(
            stats.dropped * 100 > stats.sent * 7 && stats.dropped * 100 < stats.sent * 13,
            "seed {seed}: {stats:?}"
        );
        // Link b may go down, up and flap; nothing else may happen.
        let mut on_b = 0;
        for (obs, _, e) in &c.log {
            assert!(!is_member_event(e), "seed {seed}: {obs} reported {e:?}");
            match e {
                Event::LinkUp { link, .. } if link == &l("a") => {}
                Event::LinkUp { link, .. }
                | Event::LinkDown { link, .. }
                | Event::LinkFlapping { link, .. } => {
                    assert_eq!(link, &l("b"), "seed {seed}: {obs} reported {e:?}");
                    on_b += 1;
                }
                _ => {}
            }
        }
        for n in &c.nodes {
            for s in n.ms.members(c.net.now()) {
                assert_eq!(s.state, MemberState::Alive, "seed {seed}");
                assert_eq!(s.links[0].state, LinkState::Up, "seed {seed}");
            }
        }
        link_events.push(on_b);
    }
    // The first LinkUp on b per (observer, peer) at least.
    assert!(link_events.iter().all(|&n| n >= MEMBERS * (MEMBERS - 1)));
}

#[test]
fn one_partitioned_link_is_link_down_then_up_and_the_member_stays_alive() {
    for seed in SEEDS {
        let mut c = Cluster::new(seed);
        c.run_until(c.at(5_000));
        c.assert_clean_start(c.at(5_000));
        let (m3, a) = (Cluster::id(2), l("a"));
        c.net.partition_link(&m3, &a);
        c.run_until(c.at(15_000));
        for o in [0, 1, 3] {
            assert_eq!(
                c.about(o, 2, c.at(5_000)),
                vec![down("m3", "a")],
                "seed {seed}: m{}",
                o + 1
            );
            assert_eq!(c.nodes[o].ms.state(&m3), Some(MemberState::Alive));
            // m3 sees the same from its side.
            assert_eq!(
                c.about(2, o, c.at(5_000)),
                vec![Event::LinkDown {
                    member: Cluster::id(o),
                    link: a.clone()
                }],
                "seed {seed}"
            );
        }
        c.net.heal_link(&m3, &a);
        c.run_until(c.at(25_000));
        for o in [0, 1, 3] {
            assert_eq!(
                c.about(o, 2, c.at(15_000)),
                vec![up("m3", "a")],
                "seed {seed}: m{}",
                o + 1
            );
        }
        // Nothing about anyone else, and no member event at all.
        for (obs, _, e) in c.since(c.at(5_000)) {
            assert!(
                obs == &m3 || e.member() == &m3,
                "seed {seed}: {obs} reported {e:?}"
            );
            assert!(!is_member_event(e), "seed {seed}: {obs} reported {e:?}");
        }
        c.assert_all_alive_and_up();
    }
}

/// The reports of observer `o` about a member cut off every link from
/// `from` on: both links down then up again, Suspect once both are down,
/// Failed, then `back` (Alive, or Restarted and Alive).
fn assert_lost_and_back(c: &Cluster, o: usize, member: usize, from: Instant, back: &[Event]) {
    let seed = c.seed;
    let ev = c.about(o, member, from);
    let mid = Cluster::id(member);
    let members: Vec<_> = ev.iter().filter(|e| is_member_event(e)).cloned().collect();
    let mut want = vec![
        Event::MemberSuspect {
            member: mid.clone(),
        },
        Event::MemberFailed {
            member: mid.clone(),
        },
    ];
    want.extend_from_slice(back);
    assert_eq!(members, want, "seed {seed}: m{} about {mid}: {ev:?}", o + 1);
    let pos = |e: &Event| ev.iter().position(|x| x == e).unwrap_or(usize::MAX);
    for link in &c.links {
        let d = Event::LinkDown {
            member: mid.clone(),
            link: link.clone(),
        };
        let u = Event::LinkUp {
            member: mid.clone(),
            link: link.clone(),
        };
        assert_eq!(on_link(&ev, link), vec![&d, &u], "seed {seed}: {ev:?}");
        assert!(pos(&d) < pos(&want[0]), "seed {seed}: {ev:?}");
        assert!(pos(&u) > pos(&want[1]), "seed {seed}: {ev:?}");
    }
}

#[test]
fn a_member_cut_off_every_link_is_suspect_then_failed_then_alive() {
    for seed in SEEDS {
        let mut c = Cluster::new(seed);
        c.run_until(c.at(5_000));
        c.assert_clean_start(c.at(5_000));
        let m3 = Cluster::id(2);
        c.net.isolate(&m3);
        c.run_until(c.at(15_000));
        for o in [0, 1, 3] {
            assert_eq!(c.nodes[o].ms.state(&m3), Some(MemberState::Failed));
        }
        c.net.rejoin(&m3);
        c.run_until(c.at(25_000));
        for o in [0, 1, 3] {
            // Same incarnation: back without a restart.
            assert_lost_and_back(&c, o, 2, c.at(5_000), &[alive("m3")]);
            // m3 saw every one of them go silent and come back the same way.
            assert_lost_and_back(
                &c,
                2,
                o,
                c.at(5_000),
                &[Event::MemberAlive {
                    member: Cluster::id(o),
                }],
            );
        }
        for (obs, _, e) in c.since(c.at(5_000)) {
            assert!(
                obs == &m3 || e.member() == &m3,
                "seed {seed}: {obs} reported {e:?}"
            );
        }
        c.assert_all_alive_and_up();
    }
}

#[test]
fn a_crashed_member_is_failed_then_restarted_with_a_higher_incarnation() {
    for seed in SEEDS {
        let mut c = Cluster::new(seed);
        c.run_until(c.at(5_000));
        c.crash(2);
        c.run_until(c.at(15_000));
        c.restart(2);
        let restarted_at = c.net.now();
        c.run_until(c.at(25_000));
        for o in [0, 1, 3] {
            assert_lost_and_back(&c, o, 2, c.at(5_000), &[restarted("m3", 2), alive("m3")]);
            let s = c.nodes[o].ms.member(c.net.now(), &Cluster::id(2));
            assert_eq!(s.and_then(|s| s.incarnation), Some(2));
            // The new m3 heard each of them on each link, nothing else.
            let seen = c.about(2, o, restarted_at);
            assert_eq!(seen.len(), 2, "seed {seed}: {seen:?}");
            assert!(seen.iter().all(|e| matches!(e, Event::LinkUp { .. })));
        }
        c.assert_all_alive_and_up();
    }
}

#[test]
fn a_restart_faster_than_the_timeout_is_still_reported() {
    for seed in SEEDS {
        let mut c = Cluster::new(seed);
        c.run_until(c.at(5_000));
        c.crash(2);
        c.run_until(c.at(5_300));
        c.restart(2);
        c.run_until(c.at(10_000));
        for o in [0, 1, 3] {
            assert_eq!(
                c.about(o, 2, c.at(5_000)),
                vec![restarted("m3", 2)],
                "seed {seed}"
            );
        }
        c.assert_all_alive_and_up();
    }
}

#[test]
fn a_whole_network_down_is_link_events_only() {
    for seed in SEEDS {
        let mut c = Cluster::new(seed);
        c.run_until(c.at(5_000));
        c.net.set_network_down(&l("a"), true);
        c.run_until(c.at(15_000));
        c.net.set_network_down(&l("a"), false);
        c.run_until(c.at(25_000));
        for o in 0..MEMBERS {
            for p in (0..MEMBERS).filter(|&p| p != o) {
                let pid = Cluster::id(p);
                assert_eq!(
                    c.about(o, p, c.at(5_000)),
                    vec![
                        Event::LinkDown {
                            member: pid.clone(),
                            link: l("a")
                        },
                        Event::LinkUp {
                            member: pid,
                            link: l("a")
                        }
                    ],
                    "seed {seed}"
                );
            }
        }
        c.assert_all_alive_and_up();
    }
}
