//! Failover with real trellisd processes on loopback: three members, an
//! active-passive device. REPORT TARGET PORT GROUPS through every member
//! shows m1 Active/Optimized (preferred), m2 and m3 Standby; a write
//! through m2 gets LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN STANDBY
//! STATE (02/04/0B), while TEST UNIT READY there is GOOD. m1 is SIGKILLed while a host
//! writes through it: m2 becomes Active/Optimized (the time from the kill
//! is printed), a session on m2 gets ASYMMETRIC ACCESS STATE CHANGED, fio
//! writes and verifies through m2, the roles moved with a new epoch. m1
//! restarted rejoins as an Alternate without taking the role back. m2
//! drained: its role moves to m3 in a planned handover; undrained, it is
//! an Alternate again.

// Test helpers: a panic is the test failing, with the message in hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use trellis_tests::alua::{self, state};
use trellis_tests::cluster::{export_vol, Cluster};
use trellis_tests::raw::Conn;
use trellis_tests::{
    api_request, eventually, fio_filename, fio_run, require_tool, trellis_cli, BackgroundFio,
};

const TARGET: &str = "iqn.2026-12.io.trellis:failover-test";
const HOST: &str = "iqn.2026-12.io.trellis:failover-host";

/// The sense key, ASC and ASCQ of fixed-format sense data.
fn sense(s: &[u8]) -> (u8, u8, u8) {
    (
        s.get(2).map_or(0, |k| k & 0x0F),
        s.get(12).copied().unwrap_or(0),
        s.get(13).copied().unwrap_or(0),
    )
}

/// WRITE (10) of one 512-byte block at `lba`.
fn write10(c: &mut Conn, lba: u32, fill: u8) -> trellis_tests::raw::ScsiResult {
    let mut cdb = [0u8; 10];
    cdb[0] = 0x2A;
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[8] = 1;
    c.scsi(&cdb, &[fill; 512], 0).unwrap()
}

fn fio_args(c: &Cluster, i: usize, rw: &str, extra: &[&str]) -> Vec<String> {
    let url = c.members[i].url(TARGET, 0);
    let mut args = vec![
        format!("--name=failover-{rw}"),
        "--ioengine=libiscsi".into(),
        format!("--initiator={HOST}"),
        format!("--filename={}", fio_filename(&url)),
        format!("--rw={rw}"),
        "--bs=64k".into(),
        "--size=16m".into(),
        "--iodepth=8".into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// Member `id` as `member list` through the API at `api` shows it.
fn member_seen_by(api: &str, token: &str, id: &str) -> Result<serde_json::Value, String> {
    let (_, out) = trellis_cli(api, token, &["--json", "member", "list"]);
    let list: serde_json::Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
    list["members"]
        .as_array()
        .and_then(|m| m.iter().find(|v| v["id"] == id))
        .cloned()
        .ok_or(out)
}

#[test]
fn an_active_passive_device_fails_over_to_the_secondary_and_m1_rejoins_without_taking_it_back() {
    require_tool("iscsi-inq");
    let mut c = Cluster::start(3);
    // Cold boot: the preferred member is Primary, and once every member
    // has registered, the others are Secondary and Alternate.
    c.wait_primary("default", Duration::from_secs(60));
    let roles = eventually("every member with a role", Duration::from_secs(30), || {
        let r = c.roles("default");
        let want = (&"m1".into(), &"m2".into(), &serde_json::json!(["m3"]));
        ((&r["primary"], &r["secondary"], &r["alternates"]) == want)
            .then_some(r.clone())
            .ok_or(r.to_string())
    });
    let epoch = roles["epoch"].as_u64().unwrap();
    for args in export_vol("64MiB", &[], TARGET, &[HOST]) {
        c.cli(&args);
    }
    let out = c.cli(&["device", "list"]);
    assert!(
        out.contains("default") && out.contains("active-passive"),
        "{out}"
    );

    // Every member reports the same groups: m1 AO and preferred, the
    // others Standby, each group its member's port.
    let want = [
        (1u16, state::AO, true),
        (2, state::STANDBY, false),
        (3, state::STANDBY, false),
    ];
    for (i, m) in c.members.iter().enumerate() {
        let own = i as u16 + 1;
        let r = alua::wait_state(
            m.portal,
            TARGET,
            HOST,
            0,
            own,
            want[i].1,
            Duration::from_secs(30),
        );
        let got: Vec<(u16, u8, bool)> = r
            .groups
            .iter()
            .map(|g| (g.id, g.state, g.preferred))
            .collect();
        assert_eq!(got, want, "RTPG through m{own}: {r:?}");
        assert!(r.groups.iter().all(|g| g.ports == [g.id]), "{r:?}");
        assert!((1..=10).contains(&r.transition_secs), "{r:?}");
    }

    // Through m2 (Standby): TEST UNIT READY is GOOD, a write is refused.
    let mut standby = Conn::login_to(c.members[1].portal, TARGET, HOST).unwrap();
    standby.clear_unit_attentions().unwrap();
    let w = write10(&mut standby, 0, 0xAB);
    assert_eq!((w.status, sense(&w.sense)), (2, (2, 0x04, 0x0B)), "{w:?}");
    assert_eq!(standby.scsi(&[0u8; 6], &[], 0).unwrap().status, 0);
    // Through m1: accepted.
    let mut primary = Conn::login_to(c.members[0].portal, TARGET, HOST).unwrap();
    primary.clear_unit_attentions().unwrap();
    assert_eq!(write10(&mut primary, 0, 0xAB).status, 0);

    // A host writing through m1 when it is SIGKILLed.
    let mut load = BackgroundFio::start(&fio_args(
        &c,
        0,
        "randwrite",
        &["--time_based", "--runtime=30"],
    ));
    let written = |c: &Cluster| -> u64 {
        let m = api_request(c.api_ports[0], &c.token, "GET", "/metrics", "", None);
        m.lines()
            .find(|l| l.starts_with("trellis_device_write_bytes_total{device=\"vol\""))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let before = written(&c);
    eventually("fio writing through m1", Duration::from_secs(20), || {
        let now = written(&c);
        (now > before + (1 << 20))
            .then_some(())
            .ok_or(format!("{now} bytes written"))
    });
    let killed = Instant::now();
    c.kill(0);
    let m2 = c.members[1].portal;
    let report = eventually(
        "m2 Active/Optimized after m1's death",
        Duration::from_secs(30),
        || {
            let r = alua::rtpg(m2, TARGET, HOST, 0).map_err(|e| format!("{e:#}"))?;
            (r.state_of(2) == Some(state::AO))
                .then_some(r.clone())
                .ok_or(format!("{r:?}"))
        },
    );
    let took = killed.elapsed();
    eprintln!(
        "FIGURE failover: SIGKILL of the Primary -> Active/Optimized on the Secondary in {} ms",
        took.as_millis()
    );
    load.stop();
    assert_eq!(report.state_of(1), Some(state::UNAVAILABLE), "{report:?}");
    assert_eq!(report.state_of(3), Some(state::STANDBY), "{report:?}");
    assert!(report.groups.iter().any(|g| g.id == 2 && g.preferred));

    // The session that was on m2 all along is told, then may write.
    let r = standby.scsi(&[0u8; 6], &[], 0).unwrap();
    assert_eq!((r.status, sense(&r.sense)), (2, (6, 0x2A, 0x06)), "{r:?}");
    assert_eq!(write10(&mut standby, 0, 0xCD).status, 0);
    fio_run(&fio_args(
        &c,
        1,
        "write",
        &[
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            "--verify_state_save=0",
        ],
    ));

    let roles = c.roles("default");
    assert_eq!(
        (&roles["primary"], &roles["secondary"]),
        (&"m2".into(), &"m3".into()),
        "{roles}"
    );
    assert!(roles["epoch"].as_u64().unwrap() > epoch, "{roles}");
    assert!(roles["why"].as_str().unwrap().contains("m1"), "{roles}");
    // The event history tells what changed and why, the same through each
    // surviving member (it is replicated).
    let events_through = |i: usize| -> serde_json::Value {
        let api = format!("http://127.0.0.1:{}", c.api_ports[i]);
        let (code, out) = trellis_cli(&api, &c.token, &["--json", "events", "--set", "default"]);
        assert_eq!(code, 0, "{out}");
        serde_json::from_str(&out).expect("events JSON")
    };
    let events = events_through(1);
    assert_eq!(events, events_through(2));
    let last = events["events"]
        .as_array()
        .and_then(|e| e.last())
        .expect("an event");
    assert_eq!(last["epoch"], roles["epoch"], "{events}");
    assert_eq!(last["primary"], "m2", "{events}");
    let why = last["why"].as_str().unwrap();
    assert!(
        why.starts_with("m1 ") && why.contains("on every link"),
        "{events}"
    );
    // m2 announces its new role in its heartbeats; m3 hears it.
    let m3_api = format!("http://127.0.0.1:{}", c.api_ports[2]);
    eventually(
        "m3 hearing m2 announce itself Primary",
        Duration::from_secs(20),
        || {
            let m2 = member_seen_by(&m3_api, &c.token, "m2")?;
            let want =
                serde_json::json!([{"set": "default", "role": "primary", "epoch": roles["epoch"]}]);
            (m2["announced"] == want)
                .then_some(())
                .ok_or(m2.to_string())
        },
    );
    let human = c.cli(&["events", "--set", "default", "--last", "1"]);
    assert!(human.contains(why) && human.lines().count() == 2, "{human}");
    // m2's /metrics tells the same.
    let metrics = api_request(c.api_ports[1], &c.token, "GET", "/metrics", "", None);
    for line in [
        "trellis_role{set=\"default\",member=\"m2\",role=\"primary\"} 1",
        "trellis_alua_state{device=\"vol\",state=\"active_optimized\"} 1",
        "trellis_lease_valid 1",
        "trellis_failovers_total 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line} in\n{metrics}"
        );
    }

    // m1 comes back: an Alternate, Standby; m2 keeps the role.
    c.restart(0);
    let m1 = c.members[0].portal;
    alua::wait_state(
        m1,
        TARGET,
        HOST,
        0,
        1,
        state::STANDBY,
        Duration::from_secs(30),
    );
    eventually("m1 back as an Alternate", Duration::from_secs(30), || {
        let r = c.roles("default");
        (r["alternates"] == serde_json::json!(["m1"]))
            .then_some(())
            .ok_or(r.to_string())
    });
    let roles = c.roles("default");
    assert_eq!(roles["primary"], "m2", "{roles}");
    let r = alua::rtpg(m1, TARGET, HOST, 0).unwrap();
    assert_eq!(
        (r.state_of(1), r.state_of(2)),
        (Some(state::STANDBY), Some(state::AO)),
        "{r:?}"
    );

    // Planned: m2 drained. Its roles move to m3 (Active/Optimized first),
    // the hosts logged in to it are asked to log out and new logins are
    // refused (0x0301: retry later); once they are gone, drain reports
    // no sessions. m2 is left without a role, its group Unavailable;
    // undrained, it takes logins and is an Alternate again.
    let mut on_m2 = Conn::login_to(c.members[1].portal, TARGET, HOST).unwrap();
    on_m2.ping().unwrap();
    let out = c.cli(&["member", "drain", "m2", "--wait", "0"]);
    assert!(out.contains("m2 drained"), "{out}");
    let asked = on_m2.logout_when_asked().unwrap();
    assert!(asked.param3 > 0, "{asked:?}");
    let refused = Conn::login_to(c.members[1].portal, TARGET, HOST).unwrap_err();
    assert!(
        format!("{refused:#}").contains("login failed: 0x03/0x01"),
        "{refused:#}"
    );
    let out = c.cli(&["member", "drain", "m2"]);
    assert!(
        out.contains("m2 drained: no sessions") && out.contains("m3 Primary"),
        "{out}"
    );
    // Every member's view of m2's sessions comes from its heartbeats: the
    // one answering next may be a heartbeat behind the one drain asked.
    for i in 0..3 {
        let api = format!("http://127.0.0.1:{}", c.api_ports[i]);
        eventually(
            &format!("m{} seeing no sessions on m2", i + 1),
            Duration::from_secs(10),
            || {
                let m2 = member_seen_by(&api, &c.token, "m2")?;
                (m2["sessions"] == 0).then_some(()).ok_or(m2.to_string())
            },
        );
    }
    let roles = c.roles("default");
    assert_eq!(roles["primary"], "m3", "{roles}");
    let r = alua::wait_state(
        m1,
        TARGET,
        HOST,
        0,
        2,
        state::UNAVAILABLE,
        Duration::from_secs(30),
    );
    assert_eq!(r.state_of(3), Some(state::AO), "{r:?}");
    assert!(c.cli(&["member", "list"]).contains("drained"));
    c.cli(&["member", "undrain", "m2"]);
    eventually("logins to m2 taken again", Duration::from_secs(30), || {
        Conn::login_to(c.members[1].portal, TARGET, HOST)
            .map(drop)
            .map_err(|e| format!("{e:#}"))
    });
    eventually("m2 back as an Alternate", Duration::from_secs(30), || {
        let r = c.roles("default");
        r["alternates"]
            .as_array()
            .is_some_and(|a| a.contains(&"m2".into()))
            .then_some(())
            .ok_or(r.to_string())
    });
    // A witness or an unknown member cannot be drained.
    let (code, out) =
        trellis_tests::trellis_cli(&c.endpoints(), &c.token, &["member", "drain", "m9"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no member m9"), "{out}");
}
