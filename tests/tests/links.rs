//! Redundant networks with real members in network namespaces, and a host
//! namespace on both networks as the multipath initiator. The members have
//! no seeds: they find each other by DNS-SD over mDNS on each network.
//! A device made through the API is served by every member on both
//! networks with one identity (libiscsi's iscsi-ls and iscsi-inq from the
//! host). Cutting one network of one member is a link alarm, never a member
//! failure: the host still reaches that member on the other network, and
//! the link comes back when the cable does; cutting both networks fails the
//! member and SendTargets drops its portals; restoring them brings it back.

// Test helpers: a panic is the test failing, with the message in hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use trellis_tests::netns::{Lab, Member};
use trellis_tests::{eventually, require_tool, trellis_cli_bin};

const WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "links-test-api-token";
const TARGET: &str = "iqn.2026-12.io.trellis:links";
const HOST: &str = "iqn.2026-12.io.trellis:links-host";
/// Members 1..=3; namespace 4 is the host.
const MEMBERS: usize = 3;
const HOST_NS: usize = 4;

/// Member `i`: portals on both networks, Raft and the API on network b,
/// control links on both, no seeds (mDNS finds the others).
fn config(lab: &Lab, i: usize, storage: &Path) -> String {
    let voters: String = (1..=MEMBERS)
        .map(|p| format!("{{ id = {p}, raft = \"{}:7501\" }},", lab.ip(p, 'b')))
        .collect();
    format!(
        "portals = [\"{a}:3260\", \"{b}:3260\"]\n\
         [cluster]\nid = \"links\"\nmember = \"m{i}\"\nkey = \"links-test-cluster-key\"\n\
         links = [\n  {{ name = \"a\", addr = \"{a}:7401\" }},\n  {{ name = \"b\", addr = \"{b}:7401\" }},\n]\n\
         storage_dir = \"{storage}\"\nnode_id = {i}\nraft = \"{b}:7501\"\napi = \"{b}:8080\"\n\
         api_token = \"{TOKEN}\"\napi_plaintext = true\nvoters = [{voters}]\n",
        a = lab.ip(i, 'a'),
        b = lab.ip(i, 'b'),
        storage = storage.display(),
    )
}

/// Runs a client in the host namespace; its stdout and stderr, and whether
/// it succeeded.
fn on_host(lab: &Lab, program: &str, args: &[&str]) -> (bool, String) {
    let path = if program == "trellis" {
        trellis_cli_bin()
    } else {
        require_tool(program);
        Path::new(program).to_owned()
    };
    let out = lab.exec(HOST_NS, &path, args).unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The API through every member, from the host.
fn cli(lab: &Lab, args: &[&str]) -> (bool, String) {
    let endpoints: Vec<String> = (1..=MEMBERS)
        .map(|i| format!("http://{}:8080", lab.ip(i, 'b')))
        .collect();
    let endpoints = endpoints.join(",");
    let mut all = vec!["--endpoints", endpoints.as_str(), "--token", TOKEN];
    all.extend_from_slice(args);
    on_host(lab, "trellis", &all)
}

/// SendTargets from the host through `portal`: the portals listed for the
/// target.
fn portals_listed(lab: &Lab, portal: &str) -> Result<Vec<String>, String> {
    let (ok, out) = on_host(lab, "iscsi-ls", &["-i", HOST, &format!("iscsi://{portal}")]);
    if !ok {
        return Err(out);
    }
    let mut v: Vec<String> = out
        .lines()
        .filter(|l| l.starts_with(&format!("Target:{TARGET} Portal:")))
        .filter_map(|l| l.split("Portal:").nth(1).map(str::to_owned))
        .collect();
    v.sort();
    Ok(v)
}

fn all_portals(lab: &Lab, members: &[usize]) -> Vec<String> {
    let mut v: Vec<String> = members
        .iter()
        .flat_map(|&i| ['a', 'b'].map(|l| format!("{}:3260,{i}", lab.ip(i, l))))
        .collect();
    v.sort();
    v
}

/// The NAA designator line iscsi-inq prints for LUN 0 through `portal`.
fn naa_through(lab: &Lab, portal: &str) -> Result<String, String> {
    let url = format!("iscsi://{portal}/{TARGET}/0");
    let (ok, out) = on_host(
        lab,
        "iscsi-inq",
        &["-i", HOST, "-e", "1", "-c", "131", &url],
    );
    if !ok {
        return Err(out);
    }
    let mut lines = out
        .lines()
        .skip_while(|l| !l.contains("Designator Type:(3) NAA"));
    lines.next();
    lines
        .next()
        .map(str::to_owned)
        .ok_or_else(|| format!("no NAA in:\n{out}"))
}

#[test]
fn one_cut_network_is_an_alarm_and_two_fail_the_member() {
    require_tool("ip");
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "network namespaces need root");
    let lab = Lab::new(HOST_NS).unwrap();
    let storage = tempfile::tempdir().unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..MEMBERS).map(|_| tempfile::tempdir().unwrap()).collect();
    let members: Vec<Member> = (1..=MEMBERS)
        .map(|i| {
            lab.trellisd(i, dirs[i - 1].path(), &config(&lab, i, storage.path()))
                .unwrap()
        })
        .collect();
    let (m2, m3) = (&members[1], &members[2]);
    // Everyone finds everyone by mDNS and sees them on both networks.
    for (i, m) in members.iter().enumerate() {
        for p in (1..=MEMBERS).filter(|&p| p != i + 1) {
            let peer = format!("member=m{p}");
            for l in ["link=a", "link=b"] {
                m.wait_for(&["link up", &peer, l], 1, WAIT).unwrap();
            }
        }
        assert!(
            m.count(&["mDNS: advertising and browsing"]) == 1,
            "{}",
            m.log_text()
        );
    }

    // A device made through the API from the host is served by every
    // member on both networks, with one identity.
    for args in [
        vec!["device", "create", "vol1", "--size", "16MiB", "--thin"],
        vec!["target", "create", TARGET],
        vec!["target", "map", TARGET, "vol1", "--lun", "0"],
        vec!["acl", "allow", TARGET, HOST],
    ] {
        eventually(&format!("trellis {args:?}"), WAIT, || {
            match cli(&lab, &args) {
                (true, _) => Ok(()),
                (false, out) => Err(out),
            }
        });
    }
    let six = all_portals(&lab, &[1, 2, 3]);
    let mut naa = Vec::new();
    for i in 1..=MEMBERS {
        for l in ['a', 'b'] {
            let portal = format!("{}:3260", lab.ip(i, l));
            eventually(
                "SendTargets with every member on both networks",
                WAIT,
                || {
                    let listed = portals_listed(&lab, &portal)?;
                    (listed == six).then_some(()).ok_or(format!("{listed:?}"))
                },
            );
            naa.push(eventually("iscsi-inq", WAIT, || naa_through(&lab, &portal)));
        }
    }
    assert!(
        naa.iter().all(|n| *n == naa[0]),
        "one NAA on every path: {naa:?}"
    );

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
    // The host still reaches m1 on network b, and m1 is still listed.
    let m1_b = format!("{}:3260", lab.ip(1, 'b'));
    assert_eq!(naa_through(&lab, &m1_b).unwrap(), naa[0]);
    assert_eq!(
        portals_listed(&lab, &format!("{}:3260", lab.ip(2, 'b'))).unwrap(),
        six
    );
    // Back: the link is up again.
    lab.restore(1, 'a').unwrap();
    for m in [m2, m3] {
        m.wait_for(&["link up", "member=m1", "link=a"], 2, WAIT)
            .unwrap();
    }

    // Both networks cut: m1 is suspect, then failed; m2 and m3 stay fine
    // with each other, and SendTargets no longer lists m1's portals.
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
    let four = all_portals(&lab, &[2, 3]);
    eventually("SendTargets without the failed member", WAIT, || {
        let listed = portals_listed(&lab, &format!("{}:3260", lab.ip(3, 'a')))?;
        (listed == four).then_some(()).ok_or(format!("{listed:?}"))
    });
    // Restored: alive again, without a restart, and listed again.
    lab.restore(1, 'a').unwrap();
    lab.restore(1, 'b').unwrap();
    for m in [m2, m3] {
        m.wait_for(&["member alive", "member=m1"], 1, WAIT).unwrap();
        assert_eq!(m.count(&["member restarted", "member=m1"]), 0);
    }
    eventually("SendTargets with m1 again", WAIT, || {
        let listed = portals_listed(&lab, &format!("{}:3260", lab.ip(2, 'a')))?;
        (listed == six).then_some(()).ok_or(format!("{listed:?}"))
    });
}
