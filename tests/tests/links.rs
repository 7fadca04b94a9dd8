//! Redundant networks with real members in network namespaces: cutting one
//! network of one member is a link alarm, never a member failure, and the
//! link comes back when the cable does; cutting both networks fails the
//! member, and restoring them brings it back.

// Test helpers: a panic is the test failing, with the message in hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use trellis_tests::netns::{Lab, Member};
use trellis_tests::require_tool;

const WAIT: Duration = Duration::from_secs(20);

fn config(lab: &Lab, i: usize, members: usize) -> String {
    let mut seeds = String::new();
    for p in (1..=members).filter(|&p| p != i) {
        for l in ['a', 'b'] {
            seeds.push_str(&format!(
                "  {{ link = \"{l}\", addr = \"{}:7401\" }},\n",
                lab.ip(p, l)
            ));
        }
    }
    format!(
        "portals = [\"127.0.0.1:3260\"]\n\
         [[device]]\nname = \"disk0\"\nsize = \"16MiB\"\nmemory = true\n\
         [[target]]\nname = \"iqn.2026-11.io.trellis:links\"\nluns = [{{ lun = 0, device = \"disk0\" }}]\n\
         [cluster]\nid = \"links\"\nmember = \"m{i}\"\nkey = \"links-test-cluster-key\"\n\
         links = [\n  {{ name = \"a\", addr = \"{}:7401\" }},\n  {{ name = \"b\", addr = \"{}:7401\" }},\n]\n\
         seeds = [\n{seeds}]\n",
        lab.ip(i, 'a'),
        lab.ip(i, 'b'),
    )
}

#[test]
fn one_cut_network_is_an_alarm_and_two_fail_the_member() {
    require_tool("ip");
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "network namespaces need root");
    let lab = Lab::new(3).unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let members: Vec<Member> = (1..=3)
        .map(|i| {
            lab.trellisd(i, dirs[i - 1].path(), &config(&lab, i, 3))
                .unwrap()
        })
        .collect();
    let (m2, m3) = (&members[1], &members[2]);
    // Everyone sees everyone on both networks.
    for (i, m) in members.iter().enumerate() {
        for p in (1..=3).filter(|&p| p != i + 1) {
            let peer = format!("member=m{p}");
            for l in ["link=a", "link=b"] {
                m.wait_for(&["link up", &peer, l], 1, WAIT).unwrap();
            }
        }
    }

    // Network a of m1 is cut: m2 and m3 raise the link alarm for m1 on a,
    // and m1 stays alive on b.
    lab.cut(1, 'a').unwrap();
    for m in [m2, m3] {
        m.wait_for(&["link down", "member=m1", "link=a"], 1, WAIT)
            .unwrap();
    }
    members[0]
        .wait_for(&["link down", "member=m2", "link=a"], 1, WAIT)
        .unwrap();
    // Well past the suspect and failed timeouts (1 s + 2 s).
    std::thread::sleep(Duration::from_secs(4));
    for m in [m2, m3] {
        assert_eq!(
            m.count(&["member suspect", "member=m1"]),
            0,
            "{}",
            m.log_text()
        );
        assert_eq!(m.count(&["member failed", "member=m1"]), 0);
        assert_eq!(m.count(&["link down", "member=m1", "link=b"]), 0);
    }
    // Back: the link is up again.
    lab.restore(1, 'a').unwrap();
    for m in [m2, m3] {
        m.wait_for(&["link up", "member=m1", "link=a"], 2, WAIT)
            .unwrap();
    }

    // Both networks cut: m1 is suspect, then failed; m2 and m3 stay fine
    // with each other.
    lab.cut(1, 'a').unwrap();
    lab.cut(1, 'b').unwrap();
    for m in [m2, m3] {
        m.wait_for(&["member suspect", "member=m1"], 1, WAIT)
            .unwrap();
        m.wait_for(&["member failed", "member=m1"], 1, WAIT)
            .unwrap();
    }
    assert_eq!(m2.count(&["member failed", "member=m3"]), 0);
    assert_eq!(m3.count(&["member failed", "member=m2"]), 0);
    // Restored: alive again, without a restart.
    lab.restore(1, 'a').unwrap();
    lab.restore(1, 'b').unwrap();
    for m in [m2, m3] {
        m.wait_for(&["member alive", "member=m1"], 1, WAIT).unwrap();
        assert_eq!(m.count(&["member restarted", "member=m1"]), 0);
    }
}
