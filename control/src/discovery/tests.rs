//! Tests of the discovery rules, one by one (feeding datagrams and time,
//! asserting the outputs), then scenarios in the seeded simulation.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::sim::{addr, links, Sim, Spec, KEY};
use super::*;

fn a() -> LinkName {
    links()[0].clone()
}

fn b() -> LinkName {
    links()[1].clone()
}

fn m(i: usize) -> MemberId {
    MemberId(format!("m{}", i + 1))
}

fn key() -> ClusterKey {
    ClusterKey::new(KEY).expect("key")
}

fn identity(i: usize, incarnation: u64) -> Identity {
    Identity {
        member: m(i),
        cluster: ClusterId("c1".into()),
        key: key(),
        software: "trellis 0.1.0".into(),
        protocol: ProtocolVersion::CURRENT,
        incarnation,
    }
}

fn own_links(i: usize) -> Vec<(LinkName, String)> {
    links().map(|l| (l.clone(), addr(i, &l))).to_vec()
}

/// Member `i` seeded with `seeds` (member, link).
fn member(i: usize, seeds: &[(usize, LinkName)]) -> Discovery {
    let seeds = seeds
        .iter()
        .map(|(j, l)| (l.clone(), addr(*j, l)))
        .collect();
    Discovery::new(identity(i, 1), own_links(i), seeds, Config::default()).expect("new")
}

fn header(i: usize, incarnation: u64, link: &LinkName) -> Header {
    Header {
        cluster: ClusterId("c1".into()),
        from: m(i),
        software: "trellis 0.1.0".into(),
        protocol: ProtocolVersion::CURRENT,
        incarnation,
        link: link.clone(),
        seq: 1,
    }
}

fn hello(i: usize, incarnation: u64, link: &LinkName, nonce: u64) -> Vec<u8> {
    let msg = Message::Hello {
        header: header(i, incarnation, link),
        nonce,
        links: own_links(i),
    };
    wire::encode(&msg, &key()).expect("encode")
}

fn ack(i: usize, incarnation: u64, link: &LinkName, nonce: u64) -> Vec<u8> {
    let msg = Message::HelloAck {
        header: header(i, incarnation, link),
        nonce,
    };
    wire::encode(&msg, &key()).expect("encode")
}

/// The sends among `outs`, decoded: (link, to, message).
fn sends(outs: &[Output]) -> Vec<(LinkName, String, Message)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send { link, to, datagram } => {
                let msg = wire::decode(
                    datagram,
                    &key(),
                    &ClusterId("c1".into()),
                    ProtocolVersion::CURRENT,
                )
                .expect("our own datagram decodes");
                Some((link.clone(), to.clone(), msg))
            }
            _ => None,
        })
        .collect()
}

/// The nonce of the hello in `outs` to `to` on `link`.
fn hello_nonce(outs: &[Output], link: &LinkName, to: &str) -> u64 {
    sends(outs)
        .into_iter()
        .find_map(|(l, t, msg)| match msg {
            Message::Hello { nonce, .. } if l == *link && t == to => Some(nonce),
            _ => None,
        })
        .expect("a hello to that address")
}

fn events(outs: &[Output]) -> Vec<Output> {
    outs.iter()
        .filter(|o| !matches!(o, Output::Send { .. }))
        .cloned()
        .collect()
}

fn ms(t0: Instant, n: u64) -> Instant {
    t0 + Duration::from_millis(n)
}

#[test]
fn configuration_is_checked() {
    let one = vec![(a(), addr(0, &a()))];
    assert_eq!(
        Discovery::new(identity(0, 1), one, vec![], Config::default()).err(),
        Some(ConfigError::TooFewLinks(1))
    );
    let twice = vec![(a(), addr(0, &a())), (a(), addr(0, &b()))];
    assert_eq!(
        Discovery::new(identity(0, 1), twice, vec![], Config::default()).err(),
        Some(ConfigError::DuplicateLink(a()))
    );
    let seed = vec![(LinkName("c".into()), "10.0.0.1:7401".into())];
    let e = Discovery::new(identity(0, 1), own_links(0), seed, Config::default()).err();
    assert_eq!(
        e.map(|e| e.to_string()).as_deref(),
        Some("seed 10.0.0.1:7401 is on link c, which this member does not have")
    );
}

#[test]
fn the_first_tick_says_hello_to_every_seed_on_its_link() {
    let t0 = Instant::now();
    // Our own address as a seed is skipped.
    let mut d = member(0, &[(1, a()), (1, b()), (0, a())]);
    let s = sends(&d.tick(t0));
    assert_eq!(s.len(), 2);
    let mut nonces = Vec::new();
    for (link, to, msg) in s {
        assert_eq!(to, addr(1, &link));
        let Message::Hello {
            header,
            nonce,
            links,
        } = msg
        else {
            panic!("not a hello");
        };
        assert_eq!(header.link, link, "sent on the link it names");
        assert_eq!(header.from, m(0));
        assert_eq!(links, own_links(0), "carries all our links");
        nonces.push(nonce);
    }
    assert_ne!(nonces[0], nonces[1]);
}

#[test]
fn unanswered_hellos_back_off_and_seeds_are_never_given_up() {
    let t0 = Instant::now();
    let mut d = member(0, &[(1, a())]);
    let mut sent_at = Vec::new();
    for step in 0..6000 {
        // Ten minutes in steps of 100 ms.
        let outs = d.tick(ms(t0, step * 100));
        assert!(events(&outs).is_empty(), "a seed is not given up");
        if !sends(&outs).is_empty() {
            sent_at.push(step * 100);
        }
    }
    let gaps: Vec<u64> = sent_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(&gaps[..4], &[500, 1000, 2000, 4000]);
    assert!(gaps.windows(2).all(|w| w[0] <= w[1]), "{gaps:?}");
    assert_eq!(gaps.last(), Some(&30_000), "capped at hello_max");
}

#[test]
fn a_hello_is_acked_on_its_link_and_its_sender_probed_on_every_link() {
    let t0 = Instant::now();
    let mut d = member(0, &[]);
    let outs = d.received(t0, &a(), &addr(1, &a()), &hello(1, 1, &a(), 77));
    assert!(events(&outs).is_empty(), "a hello alone confirms nothing");
    let s = sends(&outs);
    assert!(s.iter().any(|(l, to, msg)| *l == a()
        && *to == addr(1, &a())
        && matches!(msg, Message::HelloAck { nonce: 77, header } if header.link == a())));
    // Its hello named its address on b too: we probe both.
    hello_nonce(&outs, &a(), &addr(1, &a()));
    hello_nonce(&outs, &b(), &addr(1, &b()));
    assert_eq!(s.len(), 3);
}

#[test]
fn admitted_only_once_every_common_link_is_confirmed() {
    let t0 = Instant::now();
    let mut d = member(0, &[]);
    let outs = d.received(t0, &a(), &addr(1, &a()), &hello(1, 1, &a(), 5));
    let na = hello_nonce(&outs, &a(), &addr(1, &a()));
    let nb = hello_nonce(&outs, &b(), &addr(1, &b()));

    let outs = d.received(ms(t0, 10), &a(), &addr(1, &a()), &ack(1, 1, &a(), na));
    assert_eq!(
        events(&outs),
        vec![Output::Confirmed {
            member: m(1),
            link: a()
        }]
    );
    assert!(!d.is_admitted(&m(1)), "one network is not enough");
    // Hellos keep going on b only.
    let s = sends(&d.tick(ms(t0, 600)));
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0, b());

    let outs = d.received(ms(t0, 700), &b(), &addr(1, &b()), &ack(1, 1, &b(), nb));
    assert_eq!(
        events(&outs),
        vec![
            Output::Confirmed {
                member: m(1),
                link: b()
            },
            Output::Admitted {
                member: m(1),
                incarnation: 1,
                software: "trellis 0.1.0".into(),
                protocol: ProtocolVersion::CURRENT,
                links: own_links(1),
            }
        ]
    );
    assert!(d.is_admitted(&m(1)));
    assert_eq!(d.admitted().collect::<Vec<_>>(), vec![&m(1)]);
    assert_eq!(d.confirmed_links(&m(1)), vec![a(), b()]);
    // Confirmed everywhere: no more hellos.
    for step in 1..100 {
        assert!(d.tick(ms(t0, 700 + step * 1000)).is_empty());
    }
}

#[test]
fn acks_confirm_only_a_live_nonce_on_its_own_link() {
    let t0 = Instant::now();
    let mut d = member(0, &[(1, a()), (1, b())]);
    let outs = d.tick(t0);
    let na = hello_nonce(&outs, &a(), &addr(1, &a()));
    let nb = hello_nonce(&outs, &b(), &addr(1, &b()));
    // A nonce we never sent.
    let o = d.received(t0, &a(), &addr(1, &a()), &ack(1, 1, &a(), na ^ 1));
    assert!(events(&o).is_empty());
    // The nonce of our hello on a, answered on b.
    let o = d.received(t0, &b(), &addr(1, &b()), &ack(1, 1, &b(), na));
    assert!(events(&o).is_empty());
    // Too late: the nonce expired.
    d.tick(ms(t0, 10_100));
    let o = d.received(ms(t0, 10_100), &b(), &addr(1, &b()), &ack(1, 1, &b(), nb));
    assert!(events(&o).is_empty());
    assert!(d.confirmed_links(&m(1)).is_empty());
    // A live one confirms, once.
    let outs = d.tick(ms(t0, 20_000));
    let na = hello_nonce(&outs, &a(), &addr(1, &a()));
    let o = d.received(ms(t0, 20_010), &a(), &addr(1, &a()), &ack(1, 1, &a(), na));
    assert_eq!(events(&o).len(), 1);
    let o = d.received(ms(t0, 20_020), &a(), &addr(1, &a()), &ack(1, 1, &a(), na));
    assert!(events(&o).is_empty(), "a replayed ack confirms nothing");
    // Its links are unknown until it says hello: not admitted yet.
    assert!(!d.is_admitted(&m(1)));
}

/// A hello from member `i` of cluster `cluster`, with `key` and `protocol`.
fn foreign_hello(i: usize, cluster: &str, key: &[u8], protocol: ProtocolVersion) -> Vec<u8> {
    let mut h = header(i, 1, &a());
    h.cluster = ClusterId(cluster.into());
    h.protocol = protocol;
    let msg = Message::Hello {
        header: h,
        nonce: 1,
        links: own_links(i),
    };
    let key = ClusterKey::new(key).expect("key");
    wire::encode(&msg, &key).expect("encode")
}

#[test]
fn misconfigured_members_are_rejected_with_the_reason_once_per_interval() {
    let t0 = Instant::now();
    let mut d = member(0, &[]);
    let v2 = ProtocolVersion { major: 2, minor: 0 };
    let cases = [
        (
            3,
            foreign_hello(3, "c1", b"some-other-cluster-key", ProtocolVersion::CURRENT),
            "member m4: authentication failed (cluster key mismatch?)",
        ),
        (
            4,
            foreign_hello(4, "c2", KEY, ProtocolVersion::CURRENT),
            "member m5 belongs to cluster c2, not ours",
        ),
        (
            5,
            foreign_hello(5, "c1", KEY, v2),
            "member m6 speaks control protocol 2.0, incompatible with our 1.2",
        ),
    ];
    for (i, datagram, reason) in &cases {
        let from = addr(*i, &a());
        let outs = d.received(t0, &a(), &from, datagram);
        assert_eq!(
            outs,
            vec![Output::Rejected {
                link: a(),
                addr: from.clone(),
                reason: (*reason).into()
            }]
        );
        // The same address again within the interval: silence.
        for s in 1..60 {
            assert!(d
                .received(ms(t0, s * 1000), &a(), &from, datagram)
                .is_empty());
        }
    }
    d.tick(ms(t0, 60_000));
    for (i, datagram, _) in &cases {
        let outs = d.received(ms(t0, 60_000), &a(), &addr(*i, &a()), datagram);
        assert_eq!(events(&outs).len(), 1, "reported again after the interval");
        // Another address has its own allowance.
        let outs = d.received(ms(t0, 60_000), &b(), &addr(*i, &b()), datagram);
        assert_eq!(events(&outs).len(), 1);
    }
    assert_eq!(d.admitted().count(), 0);
}

#[test]
fn garbage_and_crossed_networks_are_rejected() {
    let t0 = Instant::now();
    let mut d = member(0, &[]);
    let outs = d.received(t0, &a(), "10.9.9.9:1", b"GET / HTTP/1.1\r\n");
    assert!(matches!(&outs[..], [Output::Rejected { reason, .. }]
        if reason == "not a Trellis control datagram"));
    // Sent on its link b, arrived on our link a.
    let outs = d.received(t0, &a(), &addr(1, &b()), &hello(1, 1, &b(), 3));
    assert_eq!(
        outs,
        vec![Output::Rejected {
            link: a(),
            addr: addr(1, &b()),
            reason:
                "member m2 sent on its link b, but it arrived on our link a (networks crossed?)"
                    .into()
        }]
    );
}

/// Member 0 having admitted member 1 (incarnation `inc`) at `t`.
fn admit(d: &mut Discovery, t: Instant, inc: u64) {
    let outs = d.received(t, &a(), &addr(1, &a()), &hello(1, inc, &a(), 5));
    let na = hello_nonce(&outs, &a(), &addr(1, &a()));
    let nb = hello_nonce(&outs, &b(), &addr(1, &b()));
    d.received(t, &a(), &addr(1, &a()), &ack(1, inc, &a(), na));
    let outs = d.received(t, &b(), &addr(1, &b()), &ack(1, inc, &b(), nb));
    assert!(
        events(&outs)
            .iter()
            .any(|o| matches!(o, Output::Admitted { incarnation, .. } if *incarnation == inc)),
        "{outs:?}"
    );
}

#[test]
fn a_restarted_member_is_confirmed_afresh_and_late_datagrams_ignored() {
    let t0 = Instant::now();
    let mut d = member(0, &[]);
    admit(&mut d, t0, 1);
    // It restarted: incarnation 2.
    let outs = d.received(ms(t0, 1000), &b(), &addr(1, &b()), &hello(1, 2, &b(), 9));
    assert!(!d.is_admitted(&m(1)));
    assert!(d.confirmed_links(&m(1)).is_empty());
    assert!(sends(&outs)
        .iter()
        .any(|(_, _, msg)| matches!(msg, Message::HelloAck { nonce: 9, .. })));
    // A late hello of its previous life: not even acked.
    let outs = d.received(ms(t0, 1001), &a(), &addr(1, &a()), &hello(1, 1, &a(), 4));
    assert!(outs.is_empty(), "{outs:?}");
    admit(&mut d, ms(t0, 2000), 2);
    assert!(d.is_admitted(&m(1)));
}

#[test]
fn our_own_hello_looped_back_stops_that_seed_and_an_impostor_is_rejected() {
    let t0 = Instant::now();
    let alias = "127.0.0.1:7401".to_string();
    let seeds = vec![(a(), alias.clone())];
    let mut d =
        Discovery::new(identity(0, 1), own_links(0), seeds, Config::default()).expect("new");
    let outs = d.tick(t0);
    let Some(Output::Send { datagram, .. }) = outs.first() else {
        panic!("a hello to the seed");
    };
    // The alias is us: our hello comes back from our own address.
    let o = d.received(ms(t0, 1), &a(), &addr(0, &a()), datagram);
    assert!(o.is_empty(), "{o:?}");
    for s in 1..200 {
        assert!(
            d.tick(ms(t0, s * 1000)).is_empty(),
            "no more hellos to ourselves"
        );
    }
    // Another member using our id.
    let o = d.received(
        ms(t0, 300_000),
        &a(),
        "127.0.1.9:7401",
        &hello(0, 7, &a(), 1),
    );
    assert_eq!(
        o,
        vec![Output::Rejected {
            link: a(),
            addr: "127.0.1.9:7401".into(),
            reason: "member m1 at 127.0.1.9:7401 uses our member id (duplicate member name?)"
                .into()
        }]
    );
}

#[test]
fn browse_results_are_probed_and_given_up_when_silent() {
    let t0 = Instant::now();
    let mut d = member(0, &[]);
    assert!(
        d.found(t0, &a(), Some(&m(0)), "127.0.0.1:7401").is_empty(),
        "us"
    );
    assert!(
        d.found(t0, &a(), None, &addr(0, &a())).is_empty(),
        "our address"
    );
    let outs = d.found(t0, &a(), Some(&m(1)), &addr(1, &a()));
    hello_nonce(&outs, &a(), &addr(1, &a()));
    assert!(
        d.found(ms(t0, 1), &a(), None, &addr(1, &a())).is_empty(),
        "found again: no extra hello"
    );
    let mut gave_up = None;
    for s in 1..=400 {
        let outs = d.tick(ms(t0, s * 1000));
        if !events(&outs).is_empty() {
            gave_up = Some((s, events(&outs)));
            break;
        }
    }
    // Silent for `forget_after` since it was last found (at 1 ms).
    assert_eq!(
        gave_up,
        Some((
            301,
            vec![Output::GaveUp {
                link: a(),
                addr: addr(1, &a())
            }]
        ))
    );
    // Admitted members' addresses are not probed again.
    admit(&mut d, ms(t0, 400_000), 1);
    assert!(d
        .found(ms(t0, 400_001), &b(), None, &addr(1, &b()))
        .is_empty());
}

#[test]
fn a_member_never_confirmed_is_forgotten_when_silent() {
    let t0 = Instant::now();
    let mut d = member(0, &[]);
    d.received(t0, &a(), &addr(1, &a()), &hello(1, 1, &a(), 1));
    let mut forgotten = None;
    for s in 1..=400 {
        let outs = d.tick(ms(t0, s * 1000));
        if !events(&outs).is_empty() {
            forgotten = Some((s, events(&outs)));
            break;
        }
    }
    assert_eq!(
        forgotten,
        Some((300, vec![Output::Forgotten { member: m(1) }]))
    );
    assert!(
        d.tick(ms(t0, 500_000)).is_empty(),
        "no hellos to it any more"
    );
}

#[test]
fn forget_makes_a_seed_probe_again() {
    let t0 = Instant::now();
    let mut d = member(0, &[(1, a()), (1, b())]);
    d.tick(t0);
    admit(&mut d, ms(t0, 10), 1);
    assert!(d.tick(ms(t0, 100_000)).is_empty());
    assert!(d.forget(&m(1)));
    assert_eq!(sends(&d.tick(ms(t0, 100_100))).len(), 2);
}

proptest! {
    #[test]
    fn arbitrary_datagrams_never_panic_or_admit(
        data in proptest::collection::vec(any::<u8>(), 0..300),
        on_b: bool,
    ) {
        let t0 = Instant::now();
        let mut d = member(0, &[(1, a())]);
        let link = if on_b { b() } else { a() };
        let outs = d.received(t0, &link, "10.0.0.1:9", &data);
        let nothing_learned = outs
            .iter()
            .all(|o| matches!(o, Output::Rejected { .. } | Output::Send { .. }));
        prop_assert!(nothing_learned);
        prop_assert_eq!(d.admitted().count(), 0);
    }
}

// ---- Scenarios in the seeded simulation ----

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn sim_three_members_with_seeds_admit_each_other() {
    for seed in [1, 2, 3] {
        let specs = (0..3)
            .map(|i| {
                let others: Vec<usize> = (0..3).filter(|&j| j != i).collect();
                Spec::good(i, &others)
            })
            .collect();
        let mut sim = Sim::new(seed, specs);
        sim.run(secs(30));
        assert!(sim.all_admitted(&[0, 1, 2]), "seed {seed}");
        for (i, log) in sim.logs.iter().enumerate() {
            assert_eq!(log.admitted.len(), 2, "seed {seed} member {i}: once each");
            assert_eq!(log.confirmed.len(), 4, "two members on two links");
            assert!(log.rejected.is_empty());
        }
    }
}

#[test]
fn sim_a_member_cut_off_one_link_is_not_admitted_until_it_heals() {
    let seed = 11;
    let specs = (0..3).map(|i| Spec::good(i, &[0, 1, 2])).collect();
    let mut sim = Sim::new(seed, specs);
    sim.cut(2, &b());
    sim.run(secs(120));
    assert!(sim.all_admitted(&[0, 1]));
    for i in [0, 1] {
        assert!(
            !sim.logs[i].has_admitted("m3"),
            "only one network confirmed"
        );
        assert!(sim.logs[i].confirmed.contains(&(m(2), a())));
        assert!(!sim.logs[i].confirmed.contains(&(m(2), b())));
    }
    assert!(sim.logs[2].admitted.is_empty());
    let healed = sim.elapsed();
    sim.heal(2, &b());
    sim.run(secs(60));
    assert!(sim.all_admitted(&[0, 1, 2]));
    for i in [0, 1] {
        let at = sim.logs[i]
            .admitted
            .iter()
            .find(|(mm, _, _)| *mm == m(2))
            .map(|(_, _, t)| *t);
        assert!(at.is_some_and(|t| t >= healed));
    }
}

#[test]
fn sim_misconfigured_members_are_rejected_with_the_reason_and_never_admitted() {
    let seed = 21;
    let everyone = [0, 1, 2, 3, 4, 5];
    let mut specs: Vec<Spec> = (0..6).map(|i| Spec::good(i, &everyone)).collect();
    specs[3].key = b"a-different-cluster-key".to_vec();
    specs[4].cluster = ClusterId("c2".into());
    specs[5].protocol = ProtocolVersion { major: 2, minor: 0 };
    let mut sim = Sim::new(seed, specs);
    let run = secs(300);
    sim.run(run);
    assert!(sim.all_admitted(&[0, 1, 2]));
    let reasons = [
        (
            3,
            "member m4: authentication failed (cluster key mismatch?)",
        ),
        (4, "member m5 belongs to cluster c2, not ours"),
        (
            5,
            "member m6 speaks control protocol 2.0, incompatible with our 1.2",
        ),
    ];
    for i in 0..3 {
        let log = &sim.logs[i];
        assert_eq!(
            log.admitted.len(),
            2,
            "member {i} admitted only the good ones"
        );
        for (j, reason) in reasons {
            for l in links() {
                let from = addr(j, &l);
                let got: Vec<_> = log.rejected.iter().filter(|r| r.1 == from).collect();
                assert!(!got.is_empty(), "member {i} rejected m{} on {l}", j + 1);
                assert!(got.iter().all(|r| r.2 == reason), "{got:?}");
                // Rate-limited: at most one per minute per address.
                assert!(got.len() as u64 <= run.as_secs() / 60 + 1, "{}", got.len());
            }
        }
    }
    for j in 3..6 {
        assert!(sim.logs[j].admitted.is_empty(), "m{} admits nobody", j + 1);
    }
}

#[test]
fn sim_thirty_percent_drop_still_converges() {
    for seed in [31, 32, 33, 34, 35] {
        let everyone = [0, 1, 2, 3, 4];
        let specs = (0..5).map(|i| Spec::good(i, &everyone)).collect();
        let mut sim = Sim::new(seed, specs);
        sim.set_conditions(0.3, Duration::from_millis(1), Duration::from_millis(80));
        sim.run(secs(300));
        assert!(sim.all_admitted(&everyone), "seed {seed}");
        assert!(sim.lost() > 0);
    }
}

#[test]
fn sim_seeds_on_one_link_only_find_the_other_link_from_hellos() {
    let specs = (0..3)
        .map(|i| {
            let mut s = Spec::good(i, &[]);
            s.seeds = (0..3).filter(|&j| j != i).map(|j| (j, a())).collect();
            s
        })
        .collect();
    let mut sim = Sim::new(41, specs);
    sim.run(secs(30));
    assert!(sim.all_admitted(&[0, 1, 2]));
}

#[test]
fn sim_a_single_seed_is_enough_when_the_seeded_one_answers() {
    // m2 and m3 know only m1; m1 knows nobody: each learns the other from
    // the hellos it receives.
    let specs = vec![
        Spec::good(0, &[]),
        Spec::good(1, &[0]),
        Spec::good(2, &[0, 1]),
    ];
    let mut sim = Sim::new(42, specs);
    sim.run(secs(30));
    assert!(sim.all_admitted(&[0, 1, 2]));
}

#[test]
fn sim_browse_results_alone_are_enough() {
    let specs = (0..3).map(|i| Spec::good(i, &[])).collect();
    let mut sim = Sim::new(51, specs);
    for i in 0..3 {
        for j in 0..3 {
            for l in links() {
                sim.browse(i, j, &l);
            }
        }
    }
    sim.run(secs(30));
    assert!(sim.all_admitted(&[0, 1, 2]));
}

#[test]
fn sim_a_restarted_member_is_admitted_again_with_its_new_incarnation() {
    let specs = (0..3).map(|i| Spec::good(i, &[0, 1, 2])).collect();
    let mut sim = Sim::new(61, specs);
    sim.run(secs(30));
    assert!(sim.all_admitted(&[0, 1, 2]));
    sim.restart(1);
    sim.run(secs(30));
    assert!(sim.all_admitted(&[0, 1, 2]));
    for i in [0, 2] {
        let incs: Vec<u64> = sim.logs[i]
            .admitted
            .iter()
            .filter(|(mm, _, _)| *mm == m(1))
            .map(|(_, inc, _)| *inc)
            .collect();
        assert_eq!(incs, vec![1, 2]);
    }
}

#[test]
fn sim_a_seed_replays_exactly() {
    let run = |seed| {
        let everyone = [0, 1, 2, 3];
        let specs = (0..4).map(|i| Spec::good(i, &everyone)).collect();
        let mut sim = Sim::new(seed, specs);
        sim.set_conditions(0.3, Duration::from_millis(1), Duration::from_millis(20));
        sim.run(secs(60));
        let events: Vec<_> = sim.logs.iter().map(|l| l.events.clone()).collect();
        (events, sim.sent(), sim.lost())
    };
    assert_eq!(run(7), run(7));
}
