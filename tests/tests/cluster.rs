//! Cluster formation with real trellisd processes on loopback: three
//! members, each with two control links (127.0.1.x and 127.0.2.x stand for
//! two networks), find each other from static seeds, admit each other only
//! after both networks are confirmed, and see every link up; a member with
//! the wrong cluster key is refused with the reason in the log; a member
//! killed with SIGKILL is declared failed by the others.
//!
//! Cutting one link of one member needs network namespaces; that test comes
//! with the namespace fixtures.

// Test helpers: a panic is the test failing, with the message in hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use trellis_tests::Trellisd;

const KEY: &str = "cluster-test-key-0123456789";

/// A UDP port free on both 127.0.1.`i` and 127.0.2.`i` for i in 1..=4.
fn free_control_port() -> u16 {
    'search: for _ in 0..50 {
        let probe = UdpSocket::bind("127.0.1.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        for i in 1..=4 {
            for net in [1, 2] {
                if UdpSocket::bind(format!("127.0.{net}.{i}:{port}")).is_err() {
                    continue 'search;
                }
            }
        }
        return port;
    }
    panic!("no free control port");
}

fn member_config(i: u8, port: u16, key: &str, peers: &[u8]) -> String {
    let mut seeds = String::new();
    for p in peers {
        seeds.push_str(&format!(
            "  {{ link = \"a\", addr = \"127.0.1.{p}:{port}\" }},\n  {{ link = \"b\", addr = \"127.0.2.{p}:{port}\" }},\n"
        ));
    }
    format!(
        "portals = [\"127.0.0.1:3260\"]\n\
         [[device]]\nname = \"disk0\"\nsize = \"16MiB\"\nmemory = true\n\
         [[target]]\nname = \"iqn.2026-11.io.trellis:cluster-test\"\nluns = [{{ lun = 0, device = \"disk0\" }}]\n\
         [cluster]\nid = \"test\"\nmember = \"m{i}\"\nkey = \"{key}\"\n\
         links = [\n  {{ name = \"a\", addr = \"127.0.1.{i}:{port}\" }},\n  {{ name = \"b\", addr = \"127.0.2.{i}:{port}\" }},\n]\n\
         seeds = [\n{seeds}]\n"
    )
}

/// Waits until `d`'s log has a line containing every one of `parts`.
fn wait_log(d: &Trellisd, parts: &[&str], what: &str) {
    let start = Instant::now();
    loop {
        let log = d.log_text();
        if log.lines().any(|l| parts.iter().all(|p| l.contains(p))) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what}: no log line with {parts:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn three_members_form_a_cluster_and_see_a_killed_one_fail() {
    let port = free_control_port();
    let all = [1u8, 2, 3];
    let members: Vec<Trellisd> = all
        .iter()
        .map(|&i| {
            let peers: Vec<u8> = all.iter().copied().filter(|&p| p != i).collect();
            Trellisd::start_with(Some(&member_config(i, port, KEY, &peers)), &[]).unwrap()
        })
        .collect();
    for (i, d) in members.iter().enumerate() {
        for p in all.iter().filter(|&&p| usize::from(p) != i + 1) {
            let peer = format!("member=m{p}");
            wait_log(d, &["member admitted", &peer], "admission");
            wait_log(d, &["link up", &peer, "link=a"], "link a");
            wait_log(d, &["link up", &peer, "link=b"], "link b");
        }
    }

    // A member with another cluster key is refused, with the reason.
    let intruder = Trellisd::start_with(
        Some(&member_config(4, port, "not-the-cluster-key-at-all", &[1])),
        &[],
    )
    .unwrap();
    wait_log(
        &members[0],
        &[
            "refused a control datagram",
            "member m4: authentication failed (cluster key mismatch?)",
        ],
        "wrong key",
    );
    assert!(!members[0].log_text().contains("member admitted member=m4"));
    drop(intruder);

    // m3 dies: the others see it suspect, then failed.
    let mut members = members;
    let mut m3 = members.pop().unwrap();
    m3.kill();
    for d in &members {
        wait_log(d, &["member suspect", "member=m3"], "suspect");
        wait_log(d, &["member failed", "member=m3"], "failed");
        assert!(!d.log_text().contains("member failed member=m1"));
        assert!(!d.log_text().contains("member failed member=m2"));
    }
}
