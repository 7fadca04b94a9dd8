//! Cold boot of a new cluster whose members come up over 10 s (m1, then m2
//! 5 s later, then m3 5 s after that). Once m1 and m2 form a quorum an
//! active-passive device is made, before any role is committed: the
//! arbiter waits for every Raft member (up to its boot window). While it
//! waits, no member reports any port Active/Optimized: every REPORT TARGET
//! PORT GROUPS answer that shows an AO group comes from a member whose own
//! replica already has the committed assignment. Then the set has one
//! Primary, the preferred member m1, and every member reports exactly one
//! AO group, m1's. The first assignment gives every member a role: the
//! arbiter waited (up to 10 s from its election) for the last one.

// Test helpers: a panic is the test failing, with the message in hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::time::Duration;

use trellis_tests::alua::{self, state};
use trellis_tests::cluster::{export_vol, Cluster};
use trellis_tests::{eventually, trellis_cli};

const TARGET: &str = "iqn.2026-12.io.trellis:cold-boot";
const HOST: &str = "iqn.2026-12.io.trellis:cold-boot-host";

/// What the test saw while members were starting.
#[derive(Default)]
struct Seen {
    /// The device, target and ACL were made.
    made: bool,
    /// RTPG answers read before member i's replica had roles (all must
    /// show no AO group).
    before_roles: usize,
    /// RTPG answers with an AO group from a member without roles.
    violations: Vec<String>,
}

/// The default set's committed Primary as member `i`'s replica has it.
fn primary_via(c: &Cluster, i: usize) -> Option<String> {
    let api = format!("http://127.0.0.1:{}", c.api_ports[i]);
    let (code, out) = trellis_cli(&api, &c.token, &["--json", "role", "list"]);
    if code != 0 {
        return None;
    }
    let all: serde_json::Value = serde_json::from_str(&out).ok()?;
    let r = all["roles"]
        .as_array()?
        .iter()
        .find(|v| v["set"] == "default")?;
    r["primary"].as_str().map(str::to_owned)
}

fn look(c: &Cluster, seen: &mut Seen) {
    if !seen.made {
        // Needs a leader, so a quorum: m1 and m2.
        let made = export_vol("16MiB", &[], TARGET, &[HOST])
            .iter()
            .all(|args| {
                let (code, out) = trellis_cli(&c.endpoints(), &c.token, args);
                code == 0 || out.contains("exists") || out.contains("already")
            });
        seen.made = made;
    }
    for (i, m) in c.members.iter().enumerate() {
        // The RTPG first, then the roles of the same member: a member
        // shows AO only from an assignment its replica has applied, so if
        // the RTPG showed AO the roles read after it must have a Primary.
        let Ok(report) = alua::rtpg(m.portal, TARGET, HOST, 0) else {
            continue;
        };
        let ao = report.groups.iter().any(|g| g.state == state::AO);
        match (primary_via(c, i), ao) {
            (None, false) => seen.before_roles += 1,
            (None, true) => seen
                .violations
                .push(format!("m{} reported AO with no roles: {report:?}", i + 1)),
            (Some(_), _) => {}
        }
    }
}

#[test]
fn members_starting_over_ten_seconds_serve_nothing_optimized_before_roles_then_one_primary() {
    let seen = RefCell::new(Seen::default());
    let c = Cluster::start_over(3, Duration::from_secs(5), |c| {
        look(c, &mut seen.borrow_mut());
    });
    let r = c.wait_primary("default", Duration::from_secs(60));
    // One more look now that the roles are there (counts nothing new
    // before them, but catches an AO report without roles).
    look(&c, &mut seen.borrow_mut());
    let seen = seen.into_inner();
    assert!(seen.made, "the device was not made while members started");
    assert!(
        seen.before_roles > 0,
        "no REPORT TARGET PORT GROUPS answer was read before the roles were committed: the test saw nothing of the boot"
    );
    assert!(seen.violations.is_empty(), "{:?}", seen.violations);
    assert_eq!(r["primary"], "m1", "{r}");
    // The first assignment waited for m3, which started 10 s after m1:
    // every member has a role in it.
    let events: serde_json::Value =
        serde_json::from_str(&c.cli(&["--json", "events", "--last", "100"])).unwrap();
    let first = &events["events"][0];
    assert_eq!(
        (
            &first["epoch"],
            &first["primary"],
            &first["secondary"],
            &first["alternates"]
        ),
        (
            &1.into(),
            &"m1".into(),
            &"m2".into(),
            &serde_json::json!(["m3"])
        ),
        "{events}"
    );
    eprintln!(
        "cold boot: {} RTPG answers before roles, none AO; then {}\n{}",
        seen.before_roles,
        r["why"],
        c.cli(&["events"])
    );
    // One Primary: through every member, exactly one AO group, m1's.
    for (i, m) in c.members.iter().enumerate() {
        eventually(
            &format!("one AO group, m1's, through m{}", i + 1),
            Duration::from_secs(30),
            || {
                let report = alua::rtpg(m.portal, TARGET, HOST, 0).map_err(|e| format!("{e:#}"))?;
                let ao: Vec<u16> = report
                    .groups
                    .iter()
                    .filter(|g| g.state == state::AO)
                    .map(|g| g.id)
                    .collect();
                (ao == [1]).then_some(()).ok_or(format!("{report:?}"))
            },
        );
    }
}
