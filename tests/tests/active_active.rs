//! An active-active device on three real members: every member is
//! Active/Optimized. fio writes and verifies through m1 and m2 at once.
//! Then two host-like writers (one session each, sequence-numbered blocks)
//! write through m1 and m2 while m1 is SIGKILLed: the writer on m2 carries
//! on, seeing nothing but the unit attention that tells it the port states
//! changed (a host retries it), and never stalls for long; every write
//! either member acknowledged reads back through m3.
//!
//! fio's libiscsi engine does not retry a unit attention (it fails the job
//! with EPERM), so fio itself cannot run across the state change here;
//! the real Linux host test runs fio through a kill.

// Test helpers: a panic is the test failing, with the message in hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use trellis_tests::alua::{self, state};
use trellis_tests::cluster::{export_vol, Cluster};
use trellis_tests::raw::Conn;
use trellis_tests::writer::{check_acked, Ack, Record, Writer};
use trellis_tests::{eventually, fio_filename, fio_run, require_tool};

const TARGET: &str = "iqn.2026-12.io.trellis:aa-test";
const HOST: &str = "iqn.2026-12.io.trellis:aa-host";
const HOST_M1: &str = "iqn.2026-12.io.trellis:aa-host-1";
const HOST_M2: &str = "iqn.2026-12.io.trellis:aa-host-2";

fn fio_args(c: &Cluster, i: usize, offset: &str) -> Vec<String> {
    let url = c.members[i].url(TARGET, 0);
    [
        &format!("--name=aa-m{}", i + 1),
        "--ioengine=libiscsi",
        &format!("--initiator={HOST}"),
        &format!("--filename={}", fio_filename(&url)),
        &format!("--offset={offset}"),
        "--size=16m",
        "--bs=16k",
        "--iodepth=8",
        "--rw=randwrite",
        "--verify=crc32c",
        "--do_verify=1",
        "--verify_fatal=1",
        "--verify_state_save=0",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// The longest time between two acknowledged writes in `records`.
fn longest_gap(records: &[Record]) -> Duration {
    let goods: Vec<Instant> = records
        .iter()
        .filter(|r| r.3 == Ack::Good)
        .map(|r| r.0)
        .collect();
    goods
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

#[test]
fn the_survivor_of_two_active_members_carries_on_when_the_other_dies() {
    require_tool("iscsi-inq");
    let mut c = Cluster::start(3);
    c.wait_primary("default", Duration::from_secs(60));
    for args in export_vol(
        "64MiB",
        &["--policy", "aa"],
        TARGET,
        &[HOST, HOST_M1, HOST_M2],
    ) {
        c.cli(&args);
    }
    for (i, m) in c.members.iter().enumerate() {
        let own = i as u16 + 1;
        alua::wait_state(
            m.portal,
            TARGET,
            HOST,
            0,
            own,
            state::AO,
            Duration::from_secs(30),
        );
    }

    // fio with verify through two members at once.
    let jobs: Vec<_> = [(0, "0"), (1, "32m")]
        .into_iter()
        .map(|(i, offset)| {
            let args = fio_args(&c, i, offset);
            std::thread::spawn(move || fio_run(&args))
        })
        .collect();
    for j in jobs {
        j.join().expect("fio with verify");
    }

    // Writers through m1 and m2; m1 dies.
    let mut on_m1 = Writer::start(c.members[0].portal, TARGET, HOST_M1, 0);
    let mut on_m2 = Writer::start(c.members[1].portal, TARGET, HOST_M2, 1000);
    let started = Instant::now();
    eventually("writes through m1 and m2", Duration::from_secs(20), || {
        let (a, b) = (on_m1.goods_since(started), on_m2.goods_since(started));
        (a >= 50 && b >= 50)
            .then_some(())
            .ok_or(format!("{a} and {b} acknowledged"))
    });
    let killed = Instant::now();
    c.kill(0);
    eventually(
        "m1's group Unavailable through m2",
        Duration::from_secs(30),
        || {
            let r =
                alua::rtpg(c.members[2].portal, TARGET, HOST, 0).map_err(|e| format!("{e:#}"))?;
            (r.state_of(1) == Some(state::UNAVAILABLE))
                .then_some(())
                .ok_or(format!("{r:?}"))
        },
    );
    let seen = Instant::now();
    eventually(
        "writes through m2 after the change",
        Duration::from_secs(20),
        || {
            let n = on_m2.goods_since(seen);
            (n >= 100).then_some(()).ok_or(format!("{n} acknowledged"))
        },
    );
    let m1_log = on_m1.finish();
    let m2_log = on_m2.finish();

    let after: Vec<&Record> = m2_log.iter().filter(|r| r.0 >= killed).collect();
    let ua = Ack::Refused(6, 0x2A, 0x06);
    assert!(
        after.iter().all(|r| r.3 == Ack::Good || r.3 == ua),
        "the writer on m2 saw more than a unit attention: {:?}",
        after.iter().find(|r| r.3 != Ack::Good && r.3 != ua)
    );
    assert!(
        after.iter().any(|r| r.3 == ua),
        "m2's session was not told the port states changed"
    );
    eprintln!(
        "FIGURE active-active: longest time between acknowledged writes on the survivor across the kill {} ms (m1's group Unavailable {} ms after the kill)",
        longest_gap(&after.into_iter().cloned().collect::<Vec<_>>()).as_millis(),
        (seen - killed).as_millis()
    );
    let mut reader = Conn::login_to(c.members[2].portal, TARGET, HOST).unwrap();
    reader.clear_unit_attentions().unwrap();
    let both: Vec<Record> = m1_log.into_iter().chain(m2_log).collect();
    check_acked(&mut reader, &both);
    let r = alua::rtpg(c.members[1].portal, TARGET, HOST, 0).unwrap();
    assert_eq!(
        (r.state_of(2), r.state_of(3)),
        (Some(state::AO), Some(state::AO)),
        "{r:?}"
    );
}
