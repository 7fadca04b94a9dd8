//! Arbitration tables: every composition, stickiness, failback, drain,
//! quarantine, leases and cold boot.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::api::testing::with_data_members;
use crate::config::{Command, FailoverSet};

fn m(id: &str) -> MemberId {
    MemberId(id.into())
}

fn ms(ids: &[&str]) -> Vec<MemberId> {
    ids.iter().map(|i| m(i)).collect()
}

/// Members m1..m6; sets s = n-way [m1, m2, m3], auto = the same with
/// failback after 30 s, one = single [m4], c1 = [m1, m2], c2 = [m3, m4],
/// h = hierarchical [c1, c2].
fn config() -> ClusterConfig {
    let mut c = with_data_members(&["m1", "m2", "m3", "m4", "m5", "m6"]);
    let set = |name: &str, composition, members: &[&str], failback| FailoverSet {
        name: name.into(),
        composition,
        members: members.iter().map(|s| (*s).to_owned()).collect(),
        failback,
    };
    for s in [
        set(
            "s",
            Composition::NWay,
            &["m1", "m2", "m3"],
            Failback::Manual,
        ),
        set(
            "auto",
            Composition::NWay,
            &["m1", "m2", "m3"],
            Failback::Auto { delay_secs: 30 },
        ),
        set("one", Composition::Single, &["m4"], Failback::Manual),
        set("c1", Composition::NWay, &["m1", "m2"], Failback::Manual),
        set("c2", Composition::NWay, &["m3", "m4"], Failback::Manual),
        set(
            "h",
            Composition::Hierarchical,
            &["c1", "c2"],
            Failback::Manual,
        ),
    ] {
        c.apply(&Command::CreateSet(s)).unwrap();
    }
    c
}

fn roles(p: Option<&str>, s: Option<&str>, alts: &[&str], outgoing: Option<&str>) -> Roles {
    Roles {
        primary: p.map(m),
        secondary: s.map(m),
        alternates: ms(alts),
        outgoing: outgoing.map(m),
    }
}

/// What a case expects for its set.
#[derive(Debug)]
enum Want {
    Keep,
    Wait(&'static str),
    Assign(Roles, &'static str),
}

struct Case {
    name: &'static str,
    set: &'static str,
    /// Members whose facts differ from "up for 1000 s".
    facts: Vec<(&'static str, MemberFacts)>,
    /// The committed roles of sets (with `since_ms` 1000).
    current: Vec<(&'static str, Roles)>,
    now_ms: u64,
    settled: bool,
    want: Want,
}

fn case(name: &'static str, set: &'static str, want: Want) -> Case {
    Case {
        name,
        set,
        facts: vec![],
        current: vec![],
        now_ms: 10_000,
        settled: true,
        want,
    }
}

impl Case {
    fn with(mut self, member: &'static str, f: MemberFacts) -> Self {
        self.facts.push((member, f));
        self
    }
    fn at(mut self, set: &'static str, r: Roles) -> Self {
        self.current.push((set, r));
        self
    }
    fn now(mut self, now_ms: u64) -> Self {
        self.now_ms = now_ms;
        self
    }
    fn unsettled(mut self) -> Self {
        self.settled = false;
        self
    }
}

fn up() -> MemberFacts {
    MemberFacts::up(Duration::from_secs(1000))
}

fn with(f: impl FnOnce(&mut MemberFacts)) -> MemberFacts {
    let mut x = up();
    f(&mut x);
    x
}

fn suspect() -> MemberFacts {
    with(|f| {
        f.liveness = Liveness::Suspect;
        f.eligible_for = Duration::ZERO;
    })
}

/// Failed, but its lease may still hold.
fn failed_leased() -> MemberFacts {
    with(|f| {
        f.liveness = Liveness::Failed;
        f.eligible_for = Duration::ZERO;
        f.renewing = false;
    })
}

fn unknown() -> MemberFacts {
    with(|f| {
        f.liveness = Liveness::Unknown;
        f.eligible_for = Duration::ZERO;
        f.renewing = false;
        f.lease_may_hold = false;
    })
}

fn back_for(secs: u64) -> MemberFacts {
    MemberFacts::up(Duration::from_secs(secs))
}

fn run(c: &Case) -> Decision {
    let config = config();
    let mut facts: BTreeMap<MemberId, MemberFacts> = ["m1", "m2", "m3", "m4", "m5", "m6"]
        .iter()
        .map(|id| (m(id), up()))
        .collect();
    for (id, f) in &c.facts {
        facts.insert(m(id), *f);
    }
    let current: BTreeMap<String, Assignment> = c
        .current
        .iter()
        .enumerate()
        .map(|(i, (s, r))| {
            (
                (*s).to_owned(),
                Assignment {
                    epoch: i as u64 + 1,
                    roles: r.clone(),
                    since_ms: 1000,
                    why: String::new(),
                },
            )
        })
        .collect();
    let inputs = Inputs {
        config: &config,
        facts: &facts,
        current: &current,
        now_ms: c.now_ms,
        settled: c.settled,
    };
    let all = decide(&inputs);
    // Deterministic: the same inputs, the same decisions.
    assert_eq!(all, decide(&inputs), "{}", c.name);
    all[c.set].clone()
}

#[test]
fn arbitration_table() {
    let s_1_2_3 = roles(Some("m1"), Some("m2"), &["m3"], None);
    let cases = vec![
        // First assignments.
        case(
            "n-way from nothing",
            "s",
            Want::Assign(s_1_2_3.clone(), "m1 Primary, m2 Secondary, m3 Alternates"),
        ),
        case(
            "single from nothing",
            "one",
            Want::Assign(roles(Some("m4"), None, &[], None), "m4 Primary"),
        ),
        case(
            "default set: every member by node id",
            "default",
            Want::Assign(
                roles(Some("m1"), Some("m2"), &["m3", "m4", "m5", "m6"], None),
                "",
            ),
        ),
        case(
            "a quarantined member gets no role",
            "s",
            Want::Assign(roles(Some("m2"), Some("m3"), &[], None), ""),
        )
        .with("m1", with(|f| f.quarantined = true)),
        case(
            "an incompatible member gets no new role",
            "s",
            Want::Assign(roles(Some("m1"), Some("m3"), &[], None), ""),
        )
        .with("m2", with(|f| f.compatible = false)),
        case(
            "a booting member gets no role yet",
            "s",
            Want::Assign(roles(Some("m2"), Some("m3"), &[], None), ""),
        )
        .with("m1", with(|f| f.booted = false)),
        // Cold boot.
        case(
            "cold boot waits for unheard members",
            "s",
            Want::Wait("cold boot: waiting for m3 (not heard from)"),
        )
        .with("m3", unknown())
        .unsettled(),
        case(
            "cold boot waits for a member still starting",
            "s",
            Want::Wait("cold boot: waiting for m1 (not renewing its lease)"),
        )
        .with("m1", with(|f| f.renewing = false))
        .unsettled(),
        case(
            "cold boot settled: assigns without them",
            "s",
            Want::Assign(roles(Some("m1"), Some("m2"), &[], None), ""),
        )
        .with("m3", unknown()),
        case(
            "an assigned set does not wait for unheard members",
            "s",
            Want::Keep,
        )
        .with("m3", unknown())
        .unsettled()
        .at("s", roles(Some("m1"), Some("m2"), &[], None)),
        // Stability and stickiness.
        case("nothing changed", "s", Want::Keep).at("s", s_1_2_3.clone()),
        case("a suspect Primary keeps its role", "s", Want::Keep)
            .with("m1", suspect())
            .at("s", s_1_2_3.clone()),
        case(
            "sticky: a recovered m1 does not take the role back",
            "s",
            Want::Keep,
        )
        .at("s", roles(Some("m2"), Some("m3"), &["m1"], None)),
        case(
            "sticky: nor does it take the Secondary's place",
            "s",
            Want::Keep,
        )
        .at("s", roles(Some("m2"), Some("m3"), &["m1"], None)),
        case(
            "a recovered member rejoins as an Alternate",
            "s",
            Want::Assign(roles(Some("m2"), Some("m3"), &["m1"], None), ""),
        )
        .at("s", roles(Some("m2"), Some("m3"), &[], None)),
        // Leases.
        case(
            "a silent Primary whose lease ran out is replaced",
            "s",
            Want::Assign(
                roles(Some("m2"), Some("m3"), &[], None),
                "m1 silent on every link",
            ),
        )
        .with(
            "m1",
            with(|f| {
                f.liveness = Liveness::Suspect;
                f.renewing = false;
                f.lease_may_hold = false;
            }),
        )
        .at("s", s_1_2_3.clone()),
        case(
            "a member not renewing its lease gets no new role",
            "s",
            Want::Assign(roles(Some("m1"), Some("m3"), &[], None), ""),
        )
        .with("m2", with(|f| f.renewing = false)),
        // Failover.
        case(
            "Primary failed: the Secondary takes over",
            "s",
            Want::Assign(
                roles(Some("m2"), Some("m3"), &[], None),
                "m1 failed on every link",
            ),
        )
        .with("m1", MemberFacts::failed())
        .at("s", s_1_2_3.clone()),
        case(
            "Primary failed, its lease may hold: wait",
            "s",
            Want::Wait("m1 is failed on every link; its lease may still hold"),
        )
        .with("m1", failed_leased())
        .at("s", s_1_2_3.clone()),
        case(
            "Primary quarantined: replaced (its lease ran out)",
            "s",
            Want::Assign(roles(Some("m2"), Some("m3"), &[], None), "m1 quarantined"),
        )
        .with(
            "m1",
            with(|f| {
                f.quarantined = true;
                f.lease_may_hold = false;
            }),
        )
        .at("s", s_1_2_3.clone()),
        case(
            "Primary and Secondary failed: the best Alternate",
            "s",
            Want::Assign(roles(Some("m3"), None, &[], None), ""),
        )
        .with("m1", MemberFacts::failed())
        .with("m2", MemberFacts::failed())
        .at("s", s_1_2_3.clone()),
        case(
            "Secondary failed: the next eligible member",
            "default",
            Want::Assign(roles(Some("m1"), Some("m3"), &["m4", "m5", "m6"], None), ""),
        )
        .with("m2", MemberFacts::failed())
        .at(
            "default",
            roles(Some("m1"), Some("m2"), &["m3", "m4", "m5", "m6"], None),
        ),
        case(
            "an ineligible Secondary is replaced by the first eligible",
            "s",
            Want::Assign(roles(Some("m1"), Some("m3"), &[], None), ""),
        )
        .with("m2", with(|f| f.healthy = false))
        .at("s", s_1_2_3.clone()),
        case(
            "every member failed: no Primary",
            "s",
            Want::Assign(roles(None, None, &[], None), "no member can be Primary"),
        )
        .with("m1", MemberFacts::failed())
        .with("m2", MemberFacts::failed())
        .with("m3", MemberFacts::failed())
        .at("s", s_1_2_3.clone()),
        case(
            "single set: its member failed",
            "one",
            Want::Assign(roles(None, None, &[], None), "m4 failed"),
        )
        .with("m4", MemberFacts::failed())
        .at("one", roles(Some("m4"), None, &[], None)),
        case(
            "single set: back, it is Primary again",
            "one",
            Want::Assign(roles(Some("m4"), None, &[], None), ""),
        )
        .at("one", roles(None, None, &[], None)),
        // Failback.
        case("failback auto: not before the delay", "auto", Want::Keep)
            .with("m1", back_for(29))
            .at("auto", roles(Some("m2"), Some("m3"), &["m1"], None)),
        case(
            "failback auto: after the delay, a planned handover",
            "auto",
            Want::Assign(
                roles(Some("m1"), Some("m3"), &[], Some("m2")),
                "failback to m1",
            ),
        )
        .with("m1", back_for(31))
        .at("auto", roles(Some("m2"), Some("m3"), &["m1"], None)),
        case(
            "handover: the old Primary serves a little longer",
            "auto",
            Want::Keep,
        )
        .now(1000 + 100)
        .at("auto", roles(Some("m1"), Some("m3"), &[], Some("m2"))),
        case(
            "handover: then steps down",
            "auto",
            Want::Assign(
                roles(Some("m1"), Some("m3"), &["m2"], None),
                "handover from m2 complete",
            ),
        )
        .now(1000 + 600)
        .at("auto", roles(Some("m1"), Some("m3"), &[], Some("m2"))),
        // Drain.
        case(
            "drained Primary: planned handover to the Secondary",
            "s",
            Want::Assign(roles(Some("m2"), Some("m3"), &[], Some("m1")), "m1 drained"),
        )
        .with("m1", with(|f| f.drained = true))
        .at("s", s_1_2_3.clone()),
        case(
            "drained Secondary: replaced, no handover",
            "s",
            Want::Assign(roles(Some("m1"), Some("m3"), &[], None), ""),
        )
        .with("m2", with(|f| f.drained = true))
        .at("s", s_1_2_3.clone()),
        case(
            "drained, nobody to take over: it keeps serving",
            "one",
            Want::Keep,
        )
        .with("m4", with(|f| f.drained = true))
        .at("one", roles(Some("m4"), None, &[], None)),
        // Health: an unhealthy Primary (some device's backing out of its
        // reach) hands over like a drained one; an unhealthy member takes
        // no new role.
        case(
            "unhealthy Primary: planned handover to the Secondary",
            "s",
            Want::Assign(
                roles(Some("m2"), Some("m3"), &[], Some("m1")),
                "m1 unhealthy",
            ),
        )
        .with("m1", with(|f| f.healthy = false))
        .at("s", s_1_2_3.clone()),
        case(
            "unhealthy and drained Primary: still a planned handover",
            "s",
            Want::Assign(roles(Some("m2"), Some("m3"), &[], Some("m1")), "m1 drained"),
        )
        .with(
            "m1",
            with(|f| {
                f.healthy = false;
                f.drained = true;
            }),
        )
        .at("s", s_1_2_3.clone()),
        case(
            "unhealthy Secondary: replaced, no handover",
            "s",
            Want::Assign(roles(Some("m1"), Some("m3"), &[], None), ""),
        )
        .with("m2", with(|f| f.healthy = false))
        .at("s", s_1_2_3.clone()),
        // Hierarchical.
        case(
            "hierarchy from nothing: first child's roles, then the next child's",
            "h",
            Want::Assign(roles(Some("m1"), Some("m2"), &["m3", "m4"], None), ""),
        ),
        case(
            "a card failure is handled inside the chassis",
            "h",
            Want::Assign(roles(Some("m2"), Some("m3"), &["m4"], None), "m1 failed"),
        )
        .with("m1", MemberFacts::failed())
        .at("h", roles(Some("m1"), Some("m2"), &["m3", "m4"], None))
        .at("c1", roles(Some("m1"), Some("m2"), &[], None)),
        case(
            "the whole chassis down: the sibling set takes over",
            "h",
            Want::Assign(
                roles(Some("m3"), Some("m4"), &[], None),
                "every member of the set of m2 is down",
            ),
        )
        .with("m1", MemberFacts::failed())
        .with("m2", MemberFacts::failed())
        .at("h", roles(Some("m2"), Some("m3"), &["m4"], None))
        .at("c1", roles(Some("m2"), None, &[], None)),
        case(
            "the whole chassis down, a lease may hold: wait",
            "h",
            Want::Wait("its lease may still hold"),
        )
        .with("m1", MemberFacts::failed())
        .with("m2", failed_leased())
        .at("h", roles(Some("m2"), Some("m3"), &["m4"], None))
        .at("c1", roles(Some("m2"), None, &[], None)),
        case(
            "chassis back: sticky, the sibling keeps the role",
            "h",
            Want::Assign(roles(Some("m3"), Some("m4"), &["m1", "m2"], None), ""),
        )
        .at("h", roles(Some("m3"), Some("m4"), &[], None))
        .at("c2", roles(Some("m3"), Some("m4"), &[], None)),
    ];
    let mut failures = Vec::new();
    for c in &cases {
        let got = run(c);
        let ok = match (&c.want, &got) {
            (Want::Keep, Decision::Keep) => true,
            (Want::Wait(w), Decision::Wait { why }) => why.contains(w),
            (Want::Assign(r, w), Decision::Assign { roles, why }) => r == roles && why.contains(w),
            _ => false,
        };
        if !ok {
            failures.push(format!("{}: want {:?}, got {got:?}", c.name, c.want));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_set_of_the_configuration_is_decided() {
    let config = config();
    let facts = BTreeMap::new();
    let current = BTreeMap::new();
    let d = decide(&Inputs {
        config: &config,
        facts: &facts,
        current: &current,
        now_ms: 0,
        settled: false,
    });
    let names: Vec<&str> = d.keys().map(String::as_str).collect();
    assert_eq!(names, ["auto", "c1", "c2", "default", "h", "one", "s"]);
    // Nobody heard from, cold boot: every set waits.
    assert!(
        d.values().all(|x| matches!(x, Decision::Wait { .. })),
        "{d:?}"
    );
}
