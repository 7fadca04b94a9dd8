//! Two data members and a witness (a Raft voter with no portals and no data
//! path): killing either data member leaves the cluster writable (and the
//! survivor serves what is created meanwhile), and the killed member
//! catches up when it comes back. A member that is not a voter joins as a
//! learner and serves the devices too. The witness has no storage to check
//! a new device's backing against: one that no data member reaches is
//! taken, and each data member reports it unserved on `/metrics`.

// Test helpers: a panic is the test failing, with the message in hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use trellis_tests::{
    api_request, eventually, free_control_port, iscsi_tool, stable_port, trellis_cli,
    wait_devices_listed, Trellisd,
};

const TOKEN: &str = "witness-test-api-token";
const TARGET: &str = "iqn.2026-12.io.trellis:witness-test";
const HOST: &str = "iqn.2026-12.io.trellis:witness-test-host";

/// Member `i`: m1, m2 (data members and voters), the witness w (3, a
/// voter), m4 (a data member that is not a voter: it joins as a learner).
fn config(i: usize, port: u16, raft: &[u16; 4], api: &[u16; 4]) -> String {
    let name = if i == 3 {
        "w".to_owned()
    } else {
        format!("m{i}")
    };
    let mut seeds = String::new();
    for p in (1..=4).filter(|&p| p != i) {
        for net in [1, 2] {
            let l = if net == 1 { 'a' } else { 'b' };
            seeds.push_str(&format!(
                "  {{ link = \"{l}\", addr = \"127.0.{net}.{}:{port}\" }},\n",
                20 + p
            ));
        }
    }
    let mut voters = String::new();
    for (j, r) in raft.iter().take(3).enumerate() {
        voters.push_str(&format!(
            "  {{ id = {}, raft = \"127.0.0.1:{r}\" }},\n",
            j + 1
        ));
    }
    let data = if i == 3 {
        String::new()
    } else {
        "portals = [\"127.0.0.1:3260\"]\n".to_owned()
    };
    format!(
        "{data}[cluster]\nid = \"wt\"\nmember = \"{name}\"\nkey = \"witness-test-cluster-key\"\n\
         links = [\n  {{ name = \"a\", addr = \"127.0.1.{a}:{port}\" }},\n  {{ name = \"b\", addr = \"127.0.2.{a}:{port}\" }},\n]\n\
         seeds = [\n{seeds}]\nnode_id = {i}\nraft = \"127.0.0.1:{}\"\napi = \"127.0.0.1:{}\"\napi_token = \"{TOKEN}\"\nvoters = [\n{voters}]\n",
        raft[i - 1],
        api[i - 1],
        a = 20 + i,
    )
}

fn cli(endpoints: &str, args: &[&str]) -> (i32, String) {
    trellis_cli(endpoints, TOKEN, args)
}

/// Creates device `name` through `endpoints`, retrying while there is no
/// leader (an election after a kill).
fn create(endpoints: &str, name: &str) {
    eventually(
        &format!("cannot create {name}"),
        Duration::from_secs(20),
        || match cli(endpoints, &["device", "create", name, "--size", "8MiB"]) {
            (0, _) => Ok(()),
            (code, out) => Err(format!("{code} {out}")),
        },
    );
}

#[test]
fn either_data_member_can_die_with_a_witness() {
    let port = free_control_port(21..=24);
    let raft = [stable_port(), stable_port(), stable_port(), stable_port()];
    let api = [stable_port(), stable_port(), stable_port(), stable_port()];
    let url = |i: usize| format!("http://127.0.0.1:{}", api[i - 1]);
    let texts: Vec<String> = (1..=4).map(|i| config(i, port, &raft, &api)).collect();
    let mut m1 = Trellisd::start_with(Some(&texts[0]), &[]).unwrap();
    let mut m2 = Trellisd::start_with(Some(&texts[1]), &[]).unwrap();
    let w = Trellisd::start_witness(tempfile::tempdir().unwrap(), &texts[2]).unwrap();
    create(&format!("{},{},{}", url(1), url(2), url(3)), "first");
    // The witness is a configured voter with no portals.
    eventually("members", Duration::from_secs(20), || {
        let (_, out) = cli(&url(3), &["--json", "member", "list"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        let witness_ok = v["members"].as_array().is_some_and(|m| {
            m.len() == 3 && m.iter().any(|x| x["id"] == "w" && x["witness"] == true)
        });
        witness_ok.then_some(()).ok_or(out)
    });

    // Created through the witness, a device whose backing no data member
    // reaches is taken (the witness has no storage to check it against);
    // each data member counts it unserved on /metrics until it is deleted.
    let (code, out) = cli(
        &url(3),
        &[
            "device",
            "create",
            "orphan",
            "--size",
            "1MiB",
            "--backing",
            "/nonexistent-share/orphan.img",
        ],
    );
    assert_eq!(code, 0, "{out}");
    // Both data members report `orphan` unserved (or no longer).
    let wait_unserved = |orphan: bool| {
        let (line, count) = ("trellis_device_unserved{device=\"orphan\"} 1", orphan as u8);
        for i in [1, 2] {
            eventually(
                &format!("m{i}: orphan unserved {orphan}"),
                Duration::from_secs(20),
                || {
                    let metrics = api_request(api[i - 1], TOKEN, "GET", "/metrics", "", None);
                    let named = metrics.lines().any(|l| l == line);
                    let counted = metrics
                        .lines()
                        .any(|l| l == format!("trellis_devices_unserved {count}"));
                    (named == orphan && counted).then_some(()).ok_or(metrics)
                },
            );
        }
    };
    wait_unserved(true);
    let (code, out) = cli(&url(1), &["device", "delete", "orphan"]);
    assert_eq!(code, 0, "{out}");
    wait_unserved(false);

    // m1 dies: m2 and the witness still take writes, and m2 serves them.
    m1.kill();
    create(&format!("{},{}", url(2), url(3)), "while-m1-down");
    let survivors = format!("{},{}", url(2), url(3));
    for args in [
        vec!["target", "create", TARGET],
        vec!["target", "map", TARGET, "while-m1-down", "--lun", "0"],
        vec!["acl", "allow", TARGET, HOST],
    ] {
        let (code, out) = cli(&survivors, &args);
        assert_eq!(code, 0, "{args:?}: {out}");
    }
    eventually("m2 does not serve it", Duration::from_secs(20), || {
        let out = iscsi_tool("iscsi-ls", &["-i", HOST, "-s", &m2.portal_url()]).unwrap_or_default();
        (out.contains(&format!("Target:{TARGET}")) && out.contains("Lun:0"))
            .then_some(())
            .ok_or(out)
    });
    let dir = std::mem::replace(&mut m1.dir, tempfile::tempdir().unwrap());
    m1 = Trellisd::start_in(dir, Some(&texts[0]), &[]).unwrap();
    wait_devices_listed(&url(1), TOKEN, &["while-m1-down"], &[&m1, &m2, &w]);

    // m2 dies: m1 and the witness still take writes.
    m2.kill();
    create(&format!("{},{}", url(1), url(3)), "while-m2-down");
    let dir = std::mem::replace(&mut m2.dir, tempfile::tempdir().unwrap());
    m2 = Trellisd::start_in(dir, Some(&texts[1]), &[]).unwrap();
    wait_devices_listed(&url(2), TOKEN, &["while-m2-down"], &[&m1, &m2, &w]);

    // A fourth member, not among the voters, joins as a learner: it holds
    // the configuration and serves the target like the others.
    let m4 = Trellisd::start_with(Some(&texts[3]), &[]).unwrap();
    wait_devices_listed(&url(4), TOKEN, &["while-m2-down"], &[&m1, &m2, &w, &m4]);
    eventually("status", Duration::from_secs(20), || {
        let (_, out) = cli(&url(4), &["--json", "status"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        (v["raft"]["learners"] == serde_json::json!([4])
            && v["raft"]["voters"] == serde_json::json!([1, 2, 3]))
        .then_some(())
        .ok_or(out)
    });
    eventually("m4 does not serve it", Duration::from_secs(20), || {
        let out = iscsi_tool("iscsi-ls", &["-i", HOST, "-s", &m4.portal_url()]).unwrap_or_default();
        (out.contains(&format!("Target:{TARGET} Portal:{},4", m4.portal)) && out.contains("Lun:0"))
            .then_some(())
            .ok_or(out)
    });
    drop((m1, m2, m4, w));
}
