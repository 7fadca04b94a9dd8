//! Cluster formation with real trellisd processes on loopback: three
//! members, each with two control links (127.0.1.x and 127.0.2.x stand for
//! two networks), find each other from static seeds, admit each other only
//! after both networks are confirmed, and see every link up; a member with
//! the wrong cluster key is refused with the reason in the log; a member
//! killed with SIGKILL is declared failed by the others. The management API
//! answers on every member through the `trellis` CLI (which skips a dead
//! endpoint): three members, both links up; a device created through one
//! member reaches every replica and is served by every member's portal
//! (libiscsi's iscsi-ls and iscsi-inq: the same NAA everywhere, each member
//! its own port ids; SendTargets lists every live member's portal); fio
//! writes with verification through one member and reads back through
//! another; with the Raft leader SIGKILLed the others take writes, and the
//! restarted leader catches up and serves what was created meanwhile; all
//! three restarted keep the configuration and the data; a wrong token is
//! refused; members with a wrong key or an incompatible control protocol
//! are refused, by discovery and by Raft, with the reason in the logs.
//!
//! Cutting one link of one member needs network namespaces: `links.rs`.

// Test helpers: a panic is the test failing, with the message in hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use trellis_tests::raw::Conn;
use trellis_tests::{alua, cluster};
use trellis_tests::{
    api_request, eventually, fio_filename, fio_run, free_control_port, free_port, iscsi_tool,
    stable_port, trellis_cli, wait_devices_listed, Trellisd,
};

const KEY: &str = "cluster-test-key-0123456789";

const TOKEN: &str = "cluster-test-api-token";

/// The target the test creates, and the initiator it lets in.
const TARGET: &str = "iqn.2026-12.io.trellis:cluster-test";
const HOST: &str = "iqn.2026-12.io.trellis:cluster-test-host";

/// The `[cluster]` lines that start the replicated configuration and the
/// API of member `i` (voters m1..m3 on `raft_ports`).
fn control_lines(i: u8, raft_ports: &[u16; 3], api_port: u16, storage: &str) -> String {
    cluster::control_lines(i, raft_ports, api_port, storage, TOKEN)
}

fn member_config(i: u8, port: u16, key: &str, peers: &[u8]) -> String {
    cluster::link_lines(i, port, "test", key, peers)
}

/// Waits until `d`'s log has a line containing every one of `parts`.
fn wait_log(d: &Trellisd, parts: &[&str], what: &str) {
    eventually(what, Duration::from_secs(20), || {
        let log = d.log_text();
        if log.lines().any(|l| parts.iter().all(|p| l.contains(p))) {
            return Ok(());
        }
        Err(format!("no log line with {parts:?}:\n{log}"))
    });
}

#[test]
fn three_members_form_a_cluster_and_see_a_killed_one_fail() {
    let port = free_control_port(1..=5);
    let all = [1u8, 2, 3];
    let raft_ports = [stable_port(), stable_port(), stable_port()];
    let api_ports = [stable_port(), stable_port(), stable_port()];
    // The shared storage every member reaches (one machine: one directory).
    let storage = tempfile::tempdir().unwrap();
    let storage_dir = storage.path().display().to_string();
    let texts: Vec<String> = all
        .iter()
        .map(|&i| {
            let peers: Vec<u8> = all.iter().copied().filter(|&p| p != i).collect();
            member_config(i, port, KEY, &peers)
                + &control_lines(i, &raft_ports, api_ports[usize::from(i) - 1], &storage_dir)
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
    // endpoint first: three members, all alive with both links up (this
    // member's own links as its peers hear them).
    let dead = format!("http://127.0.0.1:{}", free_port());
    let ep = |i: usize| format!("{dead},http://127.0.0.1:{}", api_ports[i]);
    eventually("member list", Duration::from_secs(30), || {
        let (code, out) = trellis_cli(&ep(1), TOKEN, &["--json", "member", "list"]);
        let list: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        let ok = code == 0
            && list["members"].as_array().is_some_and(|m| {
                m.len() == 3
                    && m.iter().all(|v| v["state"] == "alive")
                    && m.iter().all(|v| {
                        v["links"]
                            .as_array()
                            .is_some_and(|l| l.len() == 2 && l.iter().all(|x| x["state"] == "up"))
                    })
            });
        ok.then_some(()).ok_or(format!("{code} {out}"))
    });
    // A device created through member 2 is in every member's replica.
    let (code, out) = trellis_cli(
        &ep(1),
        TOKEN,
        &["device", "create", "d1", "--size", "64MiB"],
    );
    assert_eq!(code, 0, "{out}");
    let all_members: Vec<&Trellisd> = members.iter().collect();
    for i in [0, 2] {
        wait_devices_listed(&ep(i), TOKEN, &["d1"], &all_members);
    }

    // A backing the member taking the request cannot reach (a typo, an
    // unmounted share) is refused with the reason, and nothing is written.
    let (code, out) = trellis_cli(
        &ep(2),
        TOKEN,
        &[
            "device",
            "create",
            "typo",
            "--size",
            "1MiB",
            "--backing",
            "/nonexistent-share/typo.img",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("/nonexistent-share")
            && out.contains("member m3")
            && out.contains("invalid_backing"),
        "{out}"
    );

    // A write resent with its idempotency key through another member (its
    // first answer lost) is answered again from the replicated log, not
    // applied twice.
    let key = "Idempotency-Key: cluster-test-keyed-write";
    let body = r#"{"name": "kd", "size": 1048576, "backing": "memory"}"#;
    let first = http(api_ports[0], "POST", "/v1/devices", key, Some(body));
    let again = http(api_ports[2], "POST", "/v1/devices", key, Some(body));
    let (status, created) = status_and_body(&first);
    assert!(status.contains(" 201 "), "{first}");
    assert_eq!(status_and_body(&again), (status, created), "{again}");
    // By now every replica holds kd, written after the refused typo: had
    // the typo been written, it would be listed too.
    wait_devices_listed(&ep(0), TOKEN, &["kd"], &all_members);
    let (_, out) = trellis_cli(&ep(0), TOKEN, &["--json", "device", "list"]);
    assert!(!out.contains("typo"), "{out}");
    let unkeyed = http(api_ports[1], "POST", "/v1/devices", "", Some(body));
    assert!(status_and_body(&unkeyed).0.contains(" 409 "), "{unkeyed}");
    let key = "Idempotency-Key: cluster-test-keyed-delete";
    for port in [api_ports[1], api_ports[0]] {
        let deleted = http(port, "DELETE", "/v1/devices/kd", key, None);
        assert!(status_and_body(&deleted).0.contains(" 200 "), "{deleted}");
    }

    // The data path: a target made through m2 is served by every member's
    // portal, with one identity, and one member's writes are another's
    // reads.
    for args in [
        // Active-active: every member serves it Active/Optimized.
        vec![
            "device", "create", "vol1", "--size", "64MiB", "--thin", "--policy", "aa",
        ],
        vec!["target", "create", TARGET],
        vec!["target", "map", TARGET, "vol1", "--lun", "0"],
        vec!["acl", "allow", TARGET, HOST],
    ] {
        let (code, out) = trellis_cli(&ep(1), TOKEN, &args);
        assert_eq!(code, 0, "{args:?}: {out}");
    }
    let (_, out) = trellis_cli(&ep(0), TOKEN, &["--json", "device", "list"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let uuid: uuid::Uuid = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "vol1")
        .and_then(|d| d["uuid"].as_str())
        .unwrap()
        .parse()
        .unwrap();
    let naa = trellis_datapath::device::naa_from_uuid(&uuid);
    let mut inq_naa = Vec::new();
    for (i, m) in members.iter().enumerate() {
        // SendTargets on each member lists all three portals.
        wait_served(m, 0, &members);
        let out = iscsi_tool(
            "iscsi-inq",
            &["-i", HOST, "-e", "1", "-c", "131", &url(m, 0)],
        )
        .unwrap();
        inq_naa.push(designator_after(&out, "Designator Type:(3) NAA"));
        let name = designator_after(&out, "Designator Type:(8) SCSI_NAME_STRING");
        assert_eq!(name, format!("[{TARGET},t,0x{:04x}]", i + 1), "{out}");
        // The exact designators, read with a raw initiator.
        let ids = vpd83(m);
        assert_eq!(ids.naa, naa, "m{}: NAA from the device UUID", i + 1);
        assert_eq!(
            (ids.tpg, ids.relative_port),
            (i as u16 + 1, i as u16 + 1),
            "m{}: its own port ids",
            i + 1
        );
    }
    assert!(
        inq_naa.iter().all(|n| *n == inq_naa[0]) && inq_naa[0].len() > 2,
        "iscsi-inq shows one NAA on every member: {inq_naa:?}"
    );
    assert!(
        storage.path().join("vol1.img").exists(),
        "the device lives on the shared storage"
    );
    // fio writes with crc32c verification through m1 and reads it back
    // through m3, once roles are committed and every member serves.
    for (i, m) in members.iter().enumerate() {
        wait_optimized(m, i as u16 + 1, 0);
    }
    fio_run(&fio_args(&members[0], "write", "write"));
    fio_run(&fio_args(&members[2], "read", "read-verify"));
    let metrics = http_get(api_ports[0], "/metrics");
    let written = metrics
        .lines()
        .find(|l| l.starts_with("trellis_device_write_bytes_total{device=\"vol1\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no write counter for vol1:\n{metrics}"));
    assert!(written >= 32 << 20, "m1 counted its writes: {written}");

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
    eventually(
        "no write after the leader died",
        Duration::from_secs(20),
        || match trellis_cli(
            &survivors,
            TOKEN,
            &["device", "create", "d2", "--size", "32MiB"],
        ) {
            (0, _) => Ok(()),
            (code, out) => Err(format!("{code} {out}")),
        },
    );
    let (code, out) = trellis_cli(
        &survivors,
        TOKEN,
        &["target", "map", TARGET, "d2", "--lun", "1"],
    );
    assert_eq!(code, 0, "{out}");
    let dir = std::mem::replace(&mut members[leader].dir, tempfile::tempdir().unwrap());
    members[leader] = Trellisd::start_in(dir, Some(&texts[leader]), &[]).unwrap();
    let own = format!("http://127.0.0.1:{}", api_ports[leader]);
    wait_devices_listed(&own, TOKEN, &["d2"], &members.iter().collect::<Vec<_>>());
    // ... and serves what was created while it was down.
    wait_served(&members[leader], 1, &members);

    // All three restarted: the configuration is intact on each.
    for (i, m) in members.iter_mut().enumerate() {
        m.kill();
        let dir = std::mem::replace(&mut m.dir, tempfile::tempdir().unwrap());
        *m = Trellisd::start_in(dir, Some(&texts[i]), &[]).unwrap();
    }
    for port in api_ports {
        let own = format!("http://127.0.0.1:{port}");
        wait_devices_listed(
            &own,
            TOKEN,
            &["d1", "d2"],
            &members.iter().collect::<Vec<_>>(),
        );
    }
    for m in &members {
        wait_log(m, &["link up", "link=b"], "links after the restart");
    }
    // The data is on the shared storage: read back through m2.
    wait_served(&members[1], 1, &members);
    wait_optimized(&members[1], 2, 0);
    fio_run(&fio_args(&members[1], "read", "read-verify"));

    // Without the right token: refused.
    let (code, out) = trellis_cli(&ep(0), "not-the-api-token-at-all", &["device", "list"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("401") || out.to_lowercase().contains("token"),
        "{out}"
    );

    // A member with another cluster key is refused, with the reason: its
    // control datagrams, and its Raft connections when it tries to join.
    let voters: String = raft_ports
        .iter()
        .enumerate()
        .map(|(j, p)| format!("{{ id = {}, raft = \"127.0.0.1:{p}\" }},", j + 1))
        .collect();
    // The [cluster] lines of a would-be member that joins as a learner.
    let joiner = |id: u8| {
        format!(
            "node_id = {id}\nraft = \"127.0.0.1:{}\"\napi = \"127.0.0.1:{}\"\napi_token = \"{TOKEN}\"\nvoters = [{voters}]\n",
            stable_port(),
            stable_port()
        )
    };
    let intruder_text = member_config(4, port, "not-the-cluster-key-at-all", &[1]) + &joiner(4);
    let intruder = Trellisd::start_with(Some(&intruder_text), &[]).unwrap();
    wait_log(
        &members[0],
        &[
            "refused a control datagram",
            "member m4: authentication failed (cluster key mismatch?)",
        ],
        "wrong key",
    );
    wait_log(
        &intruder,
        &["cannot join the cluster yet", "authentication failed"],
        "the intruder's Raft join",
    );
    let refused = |m: &Trellisd| {
        m.log_text()
            .lines()
            .any(|l| l.contains("Raft connection refused") && l.contains("authentication failed"))
    };
    assert!(
        members.iter().any(refused),
        "some member logs the refused Raft connection"
    );
    assert!(!members[0].log_text().contains("member admitted member=m4"));
    let (_, out) = trellis_cli(&ep(0), TOKEN, &["--json", "member", "list"]);
    assert!(!out.contains("\"m4\""), "m4 never registered: {out}");
    drop(intruder);

    // A member speaking an incompatible control protocol (the right key)
    // is refused with the reason, by discovery and by Raft.
    let newer = Trellisd::start_with(
        Some(&(member_config(5, port, KEY, &[1]) + &joiner(5))),
        &["--control-protocol", "2.0"],
    )
    .unwrap();
    wait_log(
        &members[0],
        &[
            "refused a control datagram",
            "member m5 speaks control protocol 2.0, incompatible with our 1.2",
        ],
        "incompatible protocol",
    );
    wait_log(
        &newer,
        &[
            "cannot join the cluster yet",
            "speaks control protocol 1.2, incompatible with our 2.0",
        ],
        "the newer member's Raft join",
    );
    assert!(!members[0].log_text().contains("member admitted member=m5"));
    let (_, out) = trellis_cli(&ep(0), TOKEN, &["--json", "member", "list"]);
    assert!(!out.contains("\"m5\""), "m5 never registered: {out}");
    drop(newer);

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
        eventually("m3 not failed", Duration::from_secs(20), || {
            let done = count(d, "member suspect") > suspect && count(d, "member failed") > failed;
            done.then_some(()).ok_or_else(|| d.log_text())
        });
    }
    // SendTargets stops listing the failed member's portal.
    let dead = m3.portal.to_string();
    for m in &members {
        eventually(
            "SendTargets still lists failed m3",
            Duration::from_secs(10),
            || {
                let out = iscsi_tool("iscsi-ls", &["-i", HOST, &m.portal_url()]).unwrap();
                (!out.contains(&dead)).then_some(()).ok_or(out)
            },
        );
    }
}

/// iSCSI URL of `lun` of the test target on `m`.
/// Waits until member `m` (port group `own`) serves LUN `lun` of the test
/// target Active/Optimized.
fn wait_optimized(m: &Trellisd, own: u16, lun: u16) {
    alua::wait_state(
        m.portal,
        TARGET,
        HOST,
        lun,
        own,
        alua::state::AO,
        Duration::from_secs(30),
    );
}

fn url(m: &Trellisd, lun: u16) -> String {
    format!("iscsi://{}/{TARGET}/{lun}", m.portal)
}

/// Waits until `m` serves `lun` of the test target to libiscsi's iscsi-ls
/// and its SendTargets answer lists the portal of every member of `all`.
fn wait_served(m: &Trellisd, lun: u16, all: &[Trellisd]) {
    let what = format!("{} does not serve LUN {lun} with every portal", m.portal);
    eventually(&what, Duration::from_secs(30), || {
        let out = iscsi_tool("iscsi-ls", &["-i", HOST, "-s", &m.portal_url()]).unwrap_or_default();
        let portals_ok = all
            .iter()
            .all(|p| out.contains(&format!("Target:{TARGET} Portal:{},", p.portal)));
        (portals_ok && out.contains(&format!("Lun:{lun} ")))
            .then_some(())
            .ok_or(out)
    });
}

/// The designator iscsi-inq prints after the line `after`.
fn designator_after(out: &str, after: &str) -> String {
    let mut lines = out.lines().skip_while(|l| !l.contains(after));
    lines.next();
    lines
        .next()
        .and_then(|l| l.strip_prefix("Designator:"))
        .unwrap_or_else(|| panic!("no designator after {after:?} in:\n{out}"))
        .to_owned()
}

/// Device identification (VPD 83h) as a raw initiator reads it.
struct Identity {
    naa: [u8; 16],
    tpg: u16,
    relative_port: u16,
}

fn vpd83(m: &Trellisd) -> Identity {
    let mut c = Conn::login_to(m.portal, TARGET, HOST).unwrap();
    c.clear_unit_attentions().unwrap();
    let r = c.scsi(&[0x12, 1, 0x83, 0, 255, 0], &[], 255).unwrap();
    assert_eq!(r.status, 0, "INQUIRY VPD 83h: {:02x?}", r.sense);
    let page = &r.data;
    let end = 4 + usize::from(u16::from_be_bytes([page[2], page[3]]));
    let mut id = Identity {
        naa: [0; 16],
        tpg: 0,
        relative_port: 0,
    };
    let mut at = 4;
    while at + 4 <= end.min(page.len()) {
        let (kind, len) = (page[at + 1] & 0x0F, usize::from(page[at + 3]));
        let d = &page[at + 4..at + 4 + len];
        match kind {
            3 => id.naa.copy_from_slice(d),
            4 => id.relative_port = u16::from_be_bytes([d[2], d[3]]),
            5 => id.tpg = u16::from_be_bytes([d[2], d[3]]),
            _ => {}
        }
        at += 4 + len;
    }
    id
}

/// fio on LUN 0 of the test target through `m`: 32 MiB in 64 KiB blocks,
/// written with crc32c verification (`write`) or only verified (`read`).
fn fio_args(m: &Trellisd, rw: &str, name: &str) -> Vec<String> {
    let mut args = vec![
        format!("--name={name}"),
        "--ioengine=libiscsi".into(),
        format!("--initiator={HOST}"),
        format!("--filename={}", fio_filename(&url(m, 0))),
        format!("--rw={rw}"),
        "--bs=64k".into(),
        "--size=32m".into(),
        "--iodepth=8".into(),
        "--verify=crc32c".into(),
        "--verify_fatal=1".into(),
        "--verify_state_save=0".into(),
    ];
    if rw == "read" {
        args.push("--verify_only=1".into());
    } else {
        args.push("--do_verify=1".into());
    }
    args
}

/// GET `path` from the management API on `port` with the token; the
/// whole answer.
fn http_get(port: u16, path: &str) -> String {
    http(port, "GET", path, "", None)
}

/// [`api_request`] with this test's token.
fn http(port: u16, method: &str, path: &str, header: &str, body: Option<&str>) -> String {
    api_request(port, TOKEN, method, path, header, body)
}

/// The status line and the body of an answer from [`http`].
fn status_and_body(answer: &str) -> (&str, &str) {
    let status = answer.lines().next().unwrap_or_default();
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body)
}
