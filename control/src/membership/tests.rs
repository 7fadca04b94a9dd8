//! Unit tests of the failure detector, driven by explicit instants.

use super::*;
use crate::wire::{self, ClusterKey, Header, Role};
use crate::{ClusterId, ProtocolVersion};
use proptest::prelude::*;

mod scenarios;

fn m(s: &str) -> MemberId {
    MemberId(s.into())
}
fn l(s: &str) -> LinkName {
    LinkName(s.into())
}
fn up(member: &str, link: &str) -> Event {
    Event::LinkUp {
        member: m(member),
        link: l(link),
    }
}
fn down(member: &str, link: &str) -> Event {
    Event::LinkDown {
        member: m(member),
        link: l(link),
    }
}
fn flapping(member: &str, link: &str) -> Event {
    Event::LinkFlapping {
        member: m(member),
        link: l(link),
    }
}
fn alive(member: &str) -> Event {
    Event::MemberAlive { member: m(member) }
}
fn suspect(member: &str) -> Event {
    Event::MemberSuspect { member: m(member) }
}
fn failed(member: &str) -> Event {
    Event::MemberFailed { member: m(member) }
}
fn restarted(member: &str, incarnation: u64) -> Event {
    Event::MemberRestarted {
        member: m(member),
        incarnation,
    }
}

/// A detector with default timing and peer m2 on links a and b, configured
/// at `t0`.
fn setup() -> (Membership, Instant, impl Fn(u64) -> Instant) {
    let t0 = Instant::now();
    let mut ms = Membership::new(Config::default()).expect("config");
    ms.add_peer(t0, &m("m2"), [l("a"), l("b")]).expect("peer");
    (ms, t0, move |millis| t0 + Duration::from_millis(millis))
}

fn hear(ms: &mut Membership, now: Instant, link: &str, inc: u64) -> Vec<Event> {
    ms.heard(now, &m("m2"), &l(link), inc).expect("accepted")
}

#[test]
fn a_new_peer_is_alive_with_links_down_until_heard() {
    let (mut ms, _, at) = setup();
    assert_eq!(ms.state(&m("m2")), Some(MemberState::Alive));
    assert_eq!(ms.link_state(&m("m2"), &l("a")), Some(LinkState::Down));
    assert_eq!(ms.tick(at(500)), vec![]);
    assert_eq!(hear(&mut ms, at(500), "a", 1), vec![up("m2", "a")]);
    assert_eq!(hear(&mut ms, at(600), "b", 1), vec![up("m2", "b")]);
    assert_eq!(hear(&mut ms, at(700), "a", 1), vec![]);
    assert_eq!(ms.tick(at(1000)), vec![]);
}

#[test]
fn a_peer_never_heard_is_suspect_then_failed() {
    let (mut ms, _, at) = setup();
    assert_eq!(ms.next_deadline(), Some(at(1000)));
    assert_eq!(ms.tick(at(999)), vec![]);
    assert_eq!(ms.tick(at(1000)), vec![suspect("m2")]);
    assert_eq!(ms.next_deadline(), Some(at(3000)));
    assert_eq!(ms.tick(at(3000)), vec![failed("m2")]);
    assert_eq!(ms.next_deadline(), None);
}

#[test]
fn losing_one_link_is_a_link_event_not_a_member_failure() {
    let (mut ms, _, at) = setup();
    hear(&mut ms, at(0), "a", 1);
    hear(&mut ms, at(0), "b", 1);
    // Only link b keeps carrying heartbeats.
    for t in (200..=5000).step_by(200) {
        let mut ev = ms.tick(at(t));
        ev.extend(hear(&mut ms, at(t), "b", 1));
        if t == 1000 {
            assert_eq!(ev, vec![down("m2", "a")]);
        } else {
            assert_eq!(ev, vec![], "at {t} ms");
        }
    }
    assert_eq!(ms.state(&m("m2")), Some(MemberState::Alive));
    assert_eq!(ms.link_state(&m("m2"), &l("a")), Some(LinkState::Down));
    assert_eq!(hear(&mut ms, at(5100), "a", 1), vec![up("m2", "a")]);
}

#[test]
fn silent_on_every_link_is_suspect_then_failed_then_alive_again() {
    let (mut ms, _, at) = setup();
    hear(&mut ms, at(0), "a", 1);
    hear(&mut ms, at(100), "b", 1);
    assert_eq!(ms.tick(at(1000)), vec![down("m2", "a")]);
    assert_eq!(ms.state(&m("m2")), Some(MemberState::Alive));
    assert_eq!(ms.tick(at(1100)), vec![down("m2", "b"), suspect("m2")]);
    assert_eq!(ms.tick(at(3099)), vec![]);
    assert_eq!(ms.tick(at(3100)), vec![failed("m2")]);
    // Same incarnation: it was cut off, not restarted.
    assert_eq!(
        hear(&mut ms, at(9000), "b", 1),
        vec![up("m2", "b"), alive("m2")]
    );
    assert_eq!(hear(&mut ms, at(9000), "a", 1), vec![up("m2", "a")]);
}

#[test]
fn heard_while_suspect_is_alive_without_failing() {
    let (mut ms, _, at) = setup();
    hear(&mut ms, at(0), "a", 1);
    assert_eq!(ms.tick(at(1500)), vec![down("m2", "a"), suspect("m2")]);
    assert_eq!(
        hear(&mut ms, at(2000), "b", 1),
        vec![up("m2", "b"), alive("m2")]
    );
    assert_eq!(ms.tick(at(2500)), vec![]);
    assert_eq!(ms.state(&m("m2")), Some(MemberState::Alive));
}

#[test]
fn heard_after_a_missed_tick_reports_the_history_in_order() {
    let (mut ms, _, at) = setup();
    hear(&mut ms, at(0), "a", 1);
    assert_eq!(
        hear(&mut ms, at(10_000), "a", 1),
        vec![
            down("m2", "a"),
            suspect("m2"),
            failed("m2"),
            up("m2", "a"),
            alive("m2")
        ]
    );
}

#[test]
fn a_higher_incarnation_is_a_restart_and_a_lower_one_is_stale() {
    let (mut ms, _, at) = setup();
    hear(&mut ms, at(0), "a", 3);
    ms.tick(at(5000));
    assert_eq!(ms.state(&m("m2")), Some(MemberState::Failed));
    // A datagram from before the restart, delayed: ignored, nothing changes.
    assert_eq!(
        ms.heard(at(5000), &m("m2"), &l("a"), 2),
        Err(Ignored::StaleIncarnation {
            member: m("m2"),
            got: 2,
            known: 3
        })
    );
    assert_eq!(ms.state(&m("m2")), Some(MemberState::Failed));
    assert_eq!(
        hear(&mut ms, at(5100), "b", 4),
        vec![restarted("m2", 4), up("m2", "b"), alive("m2")]
    );
    assert_eq!(
        ms.member(at(5100), &m("m2")).and_then(|s| s.incarnation),
        Some(4)
    );
    // A restart faster than detection is still reported.
    assert_eq!(hear(&mut ms, at(5300), "b", 5), vec![restarted("m2", 5)]);
    assert!(matches!(
        ms.heard(at(5400), &m("m2"), &l("a"), 4),
        Err(Ignored::StaleIncarnation { .. })
    ));
}

#[test]
fn unknown_senders_and_links_are_ignored() {
    let (mut ms, _, at) = setup();
    assert_eq!(
        ms.heard(at(0), &m("m9"), &l("a"), 1),
        Err(Ignored::UnknownMember(m("m9")))
    );
    assert_eq!(
        ms.heard(at(0), &m("m2"), &l("c"), 1),
        Err(Ignored::UnknownLink {
            member: m("m2"),
            link: l("c")
        })
    );
    assert_eq!(ms.link_state(&m("m2"), &l("c")), None);
    assert_eq!(ms.member(at(0), &m("m2")).and_then(|s| s.incarnation), None);
}

#[test]
fn a_link_that_keeps_changing_is_flapping_until_stable() {
    let (mut ms, _, at) = setup();
    let cfg = ms.config().clone();
    // Link b carries every heartbeat; link a is heard for a second, lost
    // for two, and so on.
    let mut events = Vec::new();
    for t in (0..=20_000).step_by(200) {
        events.extend(ms.tick(at(t)));
        events.extend(hear(&mut ms, at(t), "b", 1));
        if t % 3000 < 1000 {
            events.extend(hear(&mut ms, at(t), "a", 1));
        }
    }
    let on_a: Vec<_> = events.iter().filter(|e| e != &&up("m2", "b")).collect();
    // First up (not counted), then changes 1..=4 reported, the 5th is
    // more than the threshold of 4: Flapping, and nothing more while it lasts.
    assert_eq!(cfg.flap_threshold, 4);
    assert_eq!(
        on_a,
        vec![
            &up("m2", "a"),
            &down("m2", "a"),
            &up("m2", "a"),
            &down("m2", "a"),
            &up("m2", "a"),
            &flapping("m2", "a"),
        ]
    );
    assert_eq!(ms.link_state(&m("m2"), &l("a")), Some(LinkState::Flapping));
    assert_eq!(ms.state(&m("m2")), Some(MemberState::Alive));
    // Now steady on both links: Up once the flap window has passed with no
    // change.
    let mut later = Vec::new();
    for t in (20_200..=60_000).step_by(200) {
        later.extend(ms.tick(at(t)));
        later.extend(hear(&mut ms, at(t), "a", 1));
        later.extend(hear(&mut ms, at(t), "b", 1));
    }
    assert_eq!(later, vec![up("m2", "a")]);
    assert_eq!(ms.link_state(&m("m2"), &l("a")), Some(LinkState::Up));
}

#[test]
fn member_list_reports_states_incarnations_and_silence() {
    let (mut ms, _, at) = setup();
    ms.add_peer(at(0), &m("m3"), [l("a")]).expect("peer");
    hear(&mut ms, at(100), "a", 7);
    hear(&mut ms, at(300), "b", 7);
    ms.tick(at(1200));
    let list = ms.members(at(1250));
    assert_eq!(list.len(), 2);
    assert_eq!(
        list[0],
        MemberStatus {
            announced: Vec::new(),
            data: None,
            member: m("m2"),
            state: MemberState::Alive,
            since: Duration::from_millis(1250),
            incarnation: Some(7),
            links: vec![
                LinkStatus {
                    link: l("a"),
                    state: LinkState::Down,
                    since: Duration::from_millis(150),
                    last_heard: Some(Duration::from_millis(1150)),
                },
                LinkStatus {
                    link: l("b"),
                    state: LinkState::Up,
                    since: Duration::from_millis(950),
                    last_heard: Some(Duration::from_millis(950)),
                },
            ],
        }
    );
    assert_eq!(list[1].member, m("m3"));
    assert_eq!(list[1].state, MemberState::Suspect);
    assert_eq!(list[1].since, Duration::from_millis(250));
    assert_eq!(list[1].links[0].last_heard, None);
}

#[test]
fn peers_are_configured_and_reconfigured() {
    let (mut ms, _, at) = setup();
    assert_eq!(
        ms.add_peer(at(0), &m("m3"), []),
        Err(MembershipError::NoLinks(m("m3")))
    );
    hear(&mut ms, at(0), "a", 1);
    // m2 moves from links a, b to a, c: a keeps its state, c starts Down.
    ms.add_peer(at(100), &m("m2"), [l("a"), l("c")])
        .expect("peer");
    assert_eq!(ms.link_state(&m("m2"), &l("a")), Some(LinkState::Up));
    assert_eq!(ms.link_state(&m("m2"), &l("c")), Some(LinkState::Down));
    assert_eq!(ms.link_state(&m("m2"), &l("b")), None);
    assert!(ms.remove_peer(&m("m2")));
    assert!(!ms.remove_peer(&m("m2")));
    assert_eq!(ms.tick(at(10_000)), vec![]);
    assert_eq!(ms.next_deadline(), None);
}

#[test]
fn timings_are_validated() {
    let bad = [
        Config {
            heartbeat_interval: Duration::ZERO,
            ..Config::default()
        },
        Config {
            link_timeout: Duration::from_millis(300),
            ..Config::default()
        },
        Config {
            flap_threshold: 0,
            ..Config::default()
        },
        Config {
            flap_window: Duration::from_millis(500),
            ..Config::default()
        },
    ];
    for c in bad {
        assert!(matches!(
            Membership::new(c),
            Err(MembershipError::InvalidConfig(_))
        ));
    }
}

#[test]
fn decoded_heartbeats_count_on_the_link_they_name() {
    let (mut ms, _, at) = setup();
    let key = ClusterKey::new(b"0123456789abcdef-cluster-key").expect("key");
    let cluster = ClusterId("c1".into());
    let beat = |link: &str| Message::Heartbeat {
        header: Header {
            cluster: cluster.clone(),
            from: m("m2"),
            software: "trellis test".into(),
            protocol: ProtocolVersion::CURRENT,
            incarnation: 1,
            link: l(link),
            seq: 1,
        },
        role: Role::None,
        roles: Vec::new(),
        state: None,
        epoch: 0,
    };
    let bytes = wire::encode(&beat("a"), &key).expect("encode");
    let msg = wire::decode(&bytes, &key, &cluster, ProtocolVersion::CURRENT).expect("decode");
    assert_eq!(
        ms.heard_message(at(0), &l("a"), &msg),
        Ok(vec![up("m2", "a")])
    );
    assert_eq!(
        ms.heard_message(at(0), &l("b"), &msg),
        Err(Ignored::LinkMismatch {
            member: m("m2"),
            claimed: l("a"),
            arrived: l("b")
        })
    );
    let ack = Message::HelloAck {
        header: beat("b").header().clone(),
        nonce: 1,
    };
    assert_eq!(
        ms.heard_message(at(0), &l("b"), &ack),
        Err(Ignored::NotHeartbeat)
    );
}

#[test]
fn alarms() {
    assert!(down("m", "a").is_alarm());
    assert!(flapping("m", "a").is_alarm());
    assert!(failed("m").is_alarm());
    assert!(!up("m", "a").is_alarm());
    assert!(!restarted("m", 2).is_alarm());
    assert_eq!(alive("m2").member(), &m("m2"));
}

#[derive(Debug, Clone)]
enum Op {
    Hear { link: usize, inc_up: bool },
    Tick,
}

fn op() -> impl Strategy<Value = (u64, Op)> {
    let op = prop_oneof![
        (0usize..3, proptest::bool::weighted(0.05))
            .prop_map(|(link, inc_up)| Op::Hear { link, inc_up }),
        Just(Op::Tick),
    ];
    (0u64..1500, op)
}

/// The states the events describe, replayed from the start.
#[derive(Debug, Default)]
struct Replay {
    member: Option<MemberState>,
    links: BTreeMap<LinkName, LinkState>,
}

impl Replay {
    fn apply(&mut self, e: &Event) {
        match e {
            Event::LinkUp { link, .. } => {
                self.links.insert(link.clone(), LinkState::Up);
            }
            Event::LinkDown { link, .. } => {
                self.links.insert(link.clone(), LinkState::Down);
            }
            Event::LinkFlapping { link, .. } => {
                self.links.insert(link.clone(), LinkState::Flapping);
            }
            Event::MemberAlive { .. } => self.member = Some(MemberState::Alive),
            Event::MemberSuspect { .. } => self.member = Some(MemberState::Suspect),
            Event::MemberFailed { .. } => self.member = Some(MemberState::Failed),
            Event::MemberRestarted { .. } => {}
        }
    }
}

proptest! {
    /// Whatever arrives when, the events tell the states exactly, and the
    /// states agree with the silence: Suspect or Failed only when silent on
    /// every link for the link timeout, Alive otherwise.
    #[test]
    fn events_and_states_agree_with_the_silence(ops in proptest::collection::vec(op(), 1..200)) {
        let links = [l("a"), l("b"), l("c")];
        let t0 = Instant::now();
        let cfg = Config {
            flap_threshold: 2,
            flap_window: Duration::from_secs(5),
            ..Config::default()
        };
        let mut ms = Membership::new(cfg.clone()).expect("config");
        ms.add_peer(t0, &m("m2"), links.iter().cloned()).expect("peer");
        let mut replay = Replay { member: Some(MemberState::Alive), ..Replay::default() };
        for link in &links {
            replay.links.insert(link.clone(), LinkState::Down);
        }
        let mut now = t0;
        let mut inc = 1;
        let mut last_heard = t0;
        for (step, op) in ops {
            now += Duration::from_millis(step);
            let events = match op {
                Op::Hear { link, inc_up } => {
                    if inc_up { inc += 1; }
                    last_heard = now;
                    ms.heard(now, &m("m2"), &links[link], inc).expect("accepted")
                }
                Op::Tick => ms.tick(now),
            };
            for e in &events {
                prop_assert_eq!(e.member(), &m("m2"));
                replay.apply(e);
            }
            let state = ms.state(&m("m2"));
            prop_assert_eq!(replay.member, state);
            for link in &links {
                prop_assert_eq!(replay.links.get(link).copied(), ms.link_state(&m("m2"), link));
            }
            let silent = now.duration_since(last_heard) >= cfg.link_timeout;
            let failed = now.duration_since(last_heard) >= cfg.link_timeout + cfg.failed_after;
            let expected = if failed {
                MemberState::Failed
            } else if silent {
                MemberState::Suspect
            } else {
                MemberState::Alive
            };
            prop_assert_eq!(state, Some(expected));
            for s in ms.members(now).iter().flat_map(|s| &s.links) {
                if s.state == LinkState::Up {
                    prop_assert!(s.last_heard.is_some_and(|h| h < cfg.link_timeout));
                }
            }
        }
    }
}
