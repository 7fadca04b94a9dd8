//! Cluster formation with real trellisd processes on loopback: three
//! members, each with two control links (127.0.1.x and 127.0.2.x stand for
//! two networks), find each other from static seeds, admit each other only
//! after both networks are confirmed, and see every link up; a member with
//! the wrong cluster key is refused with the reason in the log; a member
//! killed with SIGKILL is declared failed by the others. The management API
//! answers on every member through the `trellis` CLI (which skips a dead
//! endpoint): three members, both links up; a device created through one
//! member reaches every replica; with the Raft leader SIGKILLed the others
//! take writes, and the restarted leader catches up; all three restarted
//! keep the configuration; a wrong token is refused.
//!
//! Cutting one link of one member needs network namespaces; that test comes
//! with the namespace fixtures.

// Test helpers: a panic is the test failing, with the message in hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use trellis_tests::{free_control_port, free_port, trellis_cli, Trellisd};

const KEY: &str = "cluster-test-key-0123456789";

const TOKEN: &str = "cluster-test-api-token";

/// The `[cluster]` lines that start the replicated configuration and the
/// API of member `i` (voters m1..m3 on `raft_ports`).
fn control_lines(i: u8, raft_ports: &[u16; 3], api_port: u16) -> String {
    let mut voters = String::new();
    for (j, p) in raft_ports.iter().enumerate() {
        voters.push_str(&format!(
            "  {{ id = {}, raft = \"127.0.0.1:{p}\" }},\n",
            j + 1
        ));
    }
    format!(
        "node_id = {i}\nraft = \"127.0.0.1:{}\"\napi = \"127.0.0.1:{api_port}\"\napi_token = \"{TOKEN}\"\nvoters = [\n{voters}]\n",
        raft_ports[usize::from(i) - 1]
    )
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
    let port = free_control_port(1..=4);
    let all = [1u8, 2, 3];
    let raft_ports = [free_port(), free_port(), free_port()];
    let api_ports = [free_port(), free_port(), free_port()];
    let texts: Vec<String> = all
        .iter()
        .map(|&i| {
            let peers: Vec<u8> = all.iter().copied().filter(|&p| p != i).collect();
            member_config(i, port, KEY, &peers)
                + &control_lines(i, &raft_ports, api_ports[usize::from(i) - 1])
        })
        .collect();
    let mut members: Vec<Trellisd> = texts
        .iter()
        .map(|t| Trellisd::start_with(Some(t), &[]).unwrap())
        .collect();
    for (i, d) in members.iter().enumerate() {
        for p in all.iter().filter(|&&p| usize::from(p) != i + 1) {
            let peer = format!("member=m{p}");
            wait_log(d, &["member admitted", &peer], "admission");
            wait_log(d, &["link up", &peer, "link=a"], "link a");
            wait_log(d, &["link up", &peer, "link=b"], "link b");
        }
    }

    // The management API of any member, through the CLI, with a dead
    // endpoint first: three members, the two peers with both links up.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let ep = |i: usize| format!("{dead},http://127.0.0.1:{}", api_ports[i]);
    let start = Instant::now();
    loop {
        let (code, out) = trellis_cli(&ep(1), TOKEN, &["--json", "member", "list"]);
        let list: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        let ok = code == 0
            && list["members"].as_array().is_some_and(|m| {
                m.len() == 3
                    && m.iter().all(|v| v["state"] == "alive")
                    && m.iter().filter(|v| v["local"] != true).all(|v| {
                        v["links"]
                            .as_array()
                            .is_some_and(|l| l.len() == 2 && l.iter().all(|x| x["state"] == "up"))
                    })
            });
        if ok {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "member list: {code} {out}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // A device created through member 2 is in every member's replica.
    let (code, out) = trellis_cli(
        &ep(1),
        TOKEN,
        &["device", "create", "d1", "--size", "64MiB"],
    );
    assert_eq!(code, 0, "{out}");
    for i in [0, 2] {
        let start = Instant::now();
        while !trellis_cli(&ep(i), TOKEN, &["--json", "device", "list"])
            .1
            .contains("\"d1\"")
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "d1 not replicated to m{}",
                i + 1
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // SIGKILL the Raft leader: the two others take config changes within
    // seconds; restarted, it catches up with what was done meanwhile.
    let (_, out) = trellis_cli(&ep(0), TOKEN, &["--json", "status"]);
    let status: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
    let leader = status["raft"]["leader"].as_u64().expect("a leader") as usize - 1;
    members[leader].kill();
    let others: Vec<String> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| format!("http://127.0.0.1:{}", api_ports[i]))
        .collect();
    let survivors = others.join(",");
    let start = Instant::now();
    loop {
        let (code, out) = trellis_cli(
            &survivors,
            TOKEN,
            &["device", "create", "d2", "--size", "32MiB"],
        );
        if code == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no write after the leader died: {code} {out}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let dir = std::mem::replace(&mut members[leader].dir, tempfile::tempdir().unwrap());
    members[leader] = Trellisd::start_in(dir, Some(&texts[leader]), &[]).unwrap();
    let own = format!("http://127.0.0.1:{}", api_ports[leader]);
    let start = Instant::now();
    while !trellis_cli(&own, TOKEN, &["--json", "device", "list"])
        .1
        .contains("\"d2\"")
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the old leader did not catch up"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // All three restarted: the configuration is intact on each.
    for (i, m) in members.iter_mut().enumerate() {
        m.kill();
        let dir = std::mem::replace(&mut m.dir, tempfile::tempdir().unwrap());
        *m = Trellisd::start_in(dir, Some(&texts[i]), &[]).unwrap();
    }
    for (i, port) in api_ports.iter().enumerate() {
        let own = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        loop {
            let list = trellis_cli(&own, TOKEN, &["--json", "device", "list"]).1;
            if list.contains("\"d1\"") && list.contains("\"d2\"") {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "m{} lost its configuration: {list}",
                i + 1
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    for m in &members {
        wait_log(m, &["link up", "link=b"], "links after the restart");
    }

    // Without the right token: refused.
    let (code, out) = trellis_cli(&ep(0), "not-the-api-token-at-all", &["device", "list"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("401") || out.to_lowercase().contains("token"),
        "{out}"
    );

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
    let count = |d: &Trellisd, what: &str| {
        d.log_text()
            .lines()
            .filter(|l| l.contains(what) && l.contains("member=m3"))
            .count()
    };
    let before: Vec<(usize, usize)> = members[..2]
        .iter()
        .map(|d| (count(d, "member suspect"), count(d, "member failed")))
        .collect();
    let mut m3 = members.pop().unwrap();
    m3.kill();
    for (d, (suspect, failed)) in members.iter().zip(before) {
        let start = Instant::now();
        while count(d, "member suspect") <= suspect || count(d, "member failed") <= failed {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "m3 not failed:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
