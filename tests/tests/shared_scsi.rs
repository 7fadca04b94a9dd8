//! One SCSI device across three real members: persistent reservations
//! and LOGICAL UNIT RESET.
//!
//! Persistent reservations as one state across three real members (an
//! active-active device: every member serves it Active/Optimized).
//!
//! A host registers and reserves (Write Exclusive) through m1; READ KEYS
//! and READ RESERVATION through m2 and m3 show it at once (the PR OUT is
//! answered only once every live member applied it); another host's WRITE
//! through m2 gets RESERVATION CONFLICT; that host registers and PREEMPTs
//! through m3, which removes the first host's registration everywhere, and
//! the first host's session on m1 gets REGISTRATIONS PREEMPTED. Then the
//! member that took the reservation is SIGKILLed (the state stays, and
//! changes through the two left), and all three are restarted (APTPL: the
//! state is back, enforced on every member).

// Test helpers: a panic is the test failing, with the message in hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use trellis_tests::alua::{self, state};
use trellis_tests::cluster::{export_vol, Cluster};
use trellis_tests::raw::{Conn, ScsiResult};
use trellis_tests::{eventually, require_tool};

const TARGET: &str = "iqn.2026-12.io.trellis:pr-test";
const HOST_A: &str = "iqn.2026-12.io.trellis:pr-host-a";
const HOST_B: &str = "iqn.2026-12.io.trellis:pr-host-b";
const PROBE: &str = "iqn.2026-12.io.trellis:pr-probe";

const GOOD: u8 = 0x00;
const CHECK: u8 = 0x02;
const CONFLICT: u8 = 0x18;

const KEY_A: u64 = 0xA1A1;
const KEY_B: u64 = 0xB2B2;

/// Write Exclusive.
const WE: u8 = 1;

/// A session of `initiator` through `portal`, its unit attentions taken.
fn session(portal: SocketAddr, initiator: &str) -> Conn {
    let mut c = session_raw(portal, initiator);
    c.clear_unit_attentions().expect("unit attentions");
    c
}

/// A session of `initiator` through `portal`, as it comes (unit
/// attentions pending; nothing run on it yet).
fn session_raw(portal: SocketAddr, initiator: &str) -> Conn {
    let c = Conn::login_to(portal, TARGET, initiator).expect("login");
    c.set_timeout(Duration::from_secs(30)).expect("timeout");
    c
}

/// The status of `cdb` on `c` once the unit attentions pending are taken
/// (each answers a try with CHECK CONDITION, UNIT ATTENTION).
fn status(c: &mut Conn, cdb: &[u8], edtl_in: u32) -> u8 {
    for _ in 0..8 {
        let r = c.scsi(cdb, &[], edtl_in).expect("command");
        if r.status != CHECK || r.sense.get(2).map(|k| k & 0x0F) != Some(6) {
            return r.status;
        }
    }
    panic!("unit attentions without end");
}

/// PERSISTENT RESERVE OUT `sa` with `key` and `sark` (APTPL set).
fn prout(c: &mut Conn, sa: u8, kind: u8, key: u64, sark: u64) -> ScsiResult {
    let mut p = vec![0u8; 24];
    p[..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sark.to_be_bytes());
    p[20] = 0x01;
    let cdb = [0x5F, sa, kind, 0, 0, 0, 0, 0, 24, 0];
    c.scsi(&cdb, &p, 0).expect("PR OUT")
}

/// PR OUT that must succeed.
fn prout_good(c: &mut Conn, what: &str, sa: u8, kind: u8, key: u64, sark: u64) {
    let r = prout(c, sa, kind, key, sark);
    assert_eq!(r.status, GOOD, "{what}: {r:?}");
}

/// READ KEYS: the generation and the keys.
fn read_keys(c: &mut Conn) -> (u32, Vec<u64>) {
    let r = c
        .scsi(&[0x5E, 0, 0, 0, 0, 0, 0, 0x10, 0, 0], &[], 4096)
        .expect("READ KEYS");
    assert_eq!(r.status, GOOD, "READ KEYS: {r:?}");
    let generation = u32::from_be_bytes(r.data[..4].try_into().unwrap());
    let len = u32::from_be_bytes(r.data[4..8].try_into().unwrap()) as usize;
    let keys = r.data[8..8 + len]
        .chunks(8)
        .map(|k| u64::from_be_bytes(k.try_into().unwrap()))
        .collect();
    (generation, keys)
}

/// READ RESERVATION: the holder's key and the type, if reserved.
fn read_reservation(c: &mut Conn) -> Option<(u64, u8)> {
    let r = c
        .scsi(&[0x5E, 1, 0, 0, 0, 0, 0, 0x10, 0, 0], &[], 4096)
        .expect("READ RESERVATION");
    assert_eq!(r.status, GOOD, "READ RESERVATION: {r:?}");
    let len = u32::from_be_bytes(r.data[4..8].try_into().unwrap());
    (len >= 16).then(|| {
        (
            u64::from_be_bytes(r.data[8..16].try_into().unwrap()),
            r.data[21] & 0x0F,
        )
    })
}

/// WRITE (10) of one 512-byte block at `lba`: its status.
fn write(c: &mut Conn, lba: u32) -> ScsiResult {
    let l = lba.to_be_bytes();
    let cdb = [0x2A, 0, l[0], l[1], l[2], l[3], 0, 0, 1, 0];
    c.scsi(&cdb, &[0x5A; 512], 0).expect("WRITE")
}

/// (ASC, ASCQ) of the unit attentions pending on `c`, taken with TEST
/// UNIT READY until GOOD.
fn unit_attentions(c: &mut Conn) -> Vec<(u8, u8)> {
    let mut seen = Vec::new();
    for _ in 0..8 {
        let r = c.scsi(&[0u8; 6], &[], 0).expect("TEST UNIT READY");
        if r.status == GOOD {
            return seen;
        }
        assert_eq!(r.status, CHECK, "{r:?}");
        assert_eq!(r.sense[2] & 0x0F, 6, "a unit attention: {r:?}");
        seen.push((r.sense[12], r.sense[13]));
    }
    panic!("TEST UNIT READY never GOOD; saw {seen:?}");
}

/// What every listed member answers READ KEYS and READ RESERVATION with,
/// through a probe session each (not registered: it only reads).
/// READ KEYS (generation, keys) and READ RESERVATION (key, type).
type View = ((u32, Vec<u64>), Option<(u64, u8)>);

fn views(c: &Cluster, members: &[usize]) -> Vec<View> {
    members
        .iter()
        .map(|&i| {
            let mut s = session(c.members[i].portal, PROBE);
            (read_keys(&mut s), read_reservation(&mut s))
        })
        .collect()
}

/// Waits until every listed member serves the device Active/Optimized.
fn wait_serving(c: &Cluster, members: &[usize]) {
    for &i in members {
        alua::wait_state(
            c.members[i].portal,
            TARGET,
            PROBE,
            0,
            i as u16 + 1,
            state::AO,
            Duration::from_secs(60),
        );
    }
}

/// Three members exporting an active-active device to the hosts.
fn exported() -> Cluster {
    require_tool("iscsi-inq");
    let c = Cluster::start(3);
    c.wait_primary("default", Duration::from_secs(60));
    for args in export_vol(
        "64MiB",
        &["--policy", "aa", "--block-size", "512"],
        TARGET,
        &[HOST_A, HOST_B, PROBE],
    ) {
        c.cli(&args);
    }
    c
}

#[test]
fn a_reservation_taken_through_one_member_holds_on_every_member() {
    let mut c = exported();
    wait_serving(&c, &[0, 1, 2]);

    // Host A registers and reserves through m1.
    let mut a1 = session(c.members[0].portal, HOST_A);
    prout_good(&mut a1, "A registers through m1", 0, 0, 0, KEY_A);
    prout_good(&mut a1, "A reserves through m1", 1, WE, KEY_A, 0);
    // Every member answers the same, at once.
    let all = views(&c, &[0, 1, 2]);
    for v in &all {
        assert_eq!(v.0 .1, vec![KEY_A], "{all:?}");
        assert_eq!(v.1, Some((KEY_A, WE)), "{all:?}");
        assert_eq!(v.0 .0, all[0].0 .0, "one generation: {all:?}");
    }
    // A registration of the same key through m2 is refused there: the
    // key of another I_T nexus does not make host B a registrant.
    let mut b2 = session(c.members[1].portal, HOST_B);
    let r = prout(&mut b2, 0, 0, KEY_A, KEY_B);
    assert_eq!(r.status, CONFLICT, "REGISTER with A's key by B: {r:?}");
    // Host B's write through m2 conflicts with A's Write Exclusive.
    let r = write(&mut b2, 8);
    assert_eq!(r.status, CONFLICT, "B's write through m2: {r:?}");
    // Host A's own write through m1 (the holding I_T nexus) goes.
    assert_eq!(write(&mut a1, 8).status, GOOD);

    // Host B registers and preempts A through m3.
    let mut b3 = session(c.members[2].portal, HOST_B);
    prout_good(&mut b3, "B registers through m3", 0, 0, 0, KEY_B);
    prout_good(&mut b3, "B preempts A through m3", 4, WE, KEY_B, KEY_A);
    let all = views(&c, &[0, 1, 2]);
    for v in &all {
        assert_eq!(v.0 .1, vec![KEY_B], "A's key gone everywhere: {all:?}");
        assert_eq!(v.1, Some((KEY_B, WE)), "{all:?}");
    }
    // A's session on m1 is told.
    let uas = unit_attentions(&mut a1);
    assert!(
        uas.contains(&(0x2A, 0x05)),
        "REGISTRATIONS PREEMPTED on A's session through m1: {uas:?}"
    );
    // Now A's writes conflict, through any member.
    assert_eq!(write(&mut a1, 8).status, CONFLICT);
    let mut a2 = session(c.members[1].portal, HOST_A);
    assert_eq!(write(&mut a2, 8).status, CONFLICT);
    assert_eq!(write(&mut b3, 8).status, GOOD);
    drop((a1, a2, b2, b3));

    // The member that took the reservation dies: the state stays on the
    // others, and changes through them.
    c.kill(2);
    // (Its port group turns Unavailable: the sessions made after that
    // carry no unit attention for it.)
    for i in 0..2 {
        eventually("m3's group Unavailable", Duration::from_secs(30), || {
            let r =
                alua::rtpg(c.members[i].portal, TARGET, PROBE, 0).map_err(|e| format!("{e:#}"))?;
            (r.state_of(3) == Some(state::UNAVAILABLE))
                .then_some(())
                .ok_or(format!("{r:?}"))
        });
    }
    let left = views(&c, &[0, 1]);
    for v in &left {
        assert_eq!(v.0 .1, vec![KEY_B], "{left:?}");
        assert_eq!(v.1, Some((KEY_B, WE)), "{left:?}");
    }
    let mut a1 = session(c.members[0].portal, HOST_A);
    assert_eq!(write(&mut a1, 16).status, CONFLICT);
    prout_good(&mut a1, "A registers again through m1", 0, 0, 0, KEY_A);
    prout_good(&mut a1, "A preempts B through m1", 4, WE, KEY_A, KEY_B);
    let left = views(&c, &[0, 1]);
    for v in &left {
        assert_eq!(v.0 .1, vec![KEY_A], "{left:?}");
        assert_eq!(v.1, Some((KEY_A, WE)), "{left:?}");
    }
    let generation = left[0].0 .0;
    drop(a1);

    // All three go down and come back (APTPL): the state is the same on
    // every member, and enforced.
    c.kill(0);
    c.kill(1);
    for i in 0..3 {
        c.restart(i);
    }
    c.wait_primary("default", Duration::from_secs(90));
    wait_serving(&c, &[0, 1, 2]);
    let all = views(&c, &[0, 1, 2]);
    for v in &all {
        assert_eq!(v.0, (generation, vec![KEY_A]), "after a restart: {all:?}");
        assert_eq!(v.1, Some((KEY_A, WE)), "after a restart: {all:?}");
    }
    for i in 0..3 {
        let mut b = session(c.members[i].portal, HOST_B);
        let r = write(&mut b, 24);
        assert_eq!(r.status, CONFLICT, "B's write through m{}: {r:?}", i + 1);
    }
}

/// Task management function `function` through m1 while a write waits
/// for its data-out on m2: the write is gone (its data-out completes
/// nothing) and m2's session gets the unit attention `(asc, ascq)`.
fn task_management_reaches_another_member(function: u8, ua: (u8, u8)) {
    let c = exported();
    wait_serving(&c, &[0, 1]);
    let mut on_m2 = session(c.members[1].portal, HOST_B);
    let (itt, ttt) = on_m2
        .start_write(&[0x2A, 0, 0, 0, 0, 64, 0, 0, 8, 0], 4096)
        .expect("a write waiting for data");
    // Answered once every member made it.
    let mut on_m1 = session(c.members[0].portal, HOST_A);
    assert_eq!(
        on_m1.task_mgmt(function, 0).expect("task management"),
        0,
        "function complete"
    );
    let uas = unit_attentions(&mut on_m2);
    assert!(uas.contains(&ua), "{ua:02x?} on m2's session: {uas:02x?}");
    // A write still there would be answered now, before the next
    // command's status.
    on_m2.data_out(itt, ttt, &[0xEE; 4096]).expect("data-out");
    let r = on_m2
        .scsi(&[0u8; 6], &[], 0)
        .expect("TEST UNIT READY after the data-out, with no response for the aborted write");
    assert_eq!(r.status, GOOD, "{r:?}");
    // A reset reaches m1's own nexus too; a clear does not (it lost no
    // task, and asked for it).
    let own = unit_attentions(&mut on_m1);
    assert_eq!(own.contains(&(0x29, 0x03)), function == 5, "{own:02x?}");
}

#[test]
fn a_lun_reset_through_one_member_aborts_the_tasks_on_another() {
    task_management_reaches_another_member(5, (0x29, 0x03));
}

#[test]
fn a_clear_task_set_through_one_member_aborts_the_tasks_on_another() {
    task_management_reaches_another_member(4, (0x2F, 0x00));
}

#[test]
fn an_spc2_reservation_holds_on_every_member_until_its_nexus_goes() {
    let c = exported();
    wait_serving(&c, &[0, 1, 2]);
    let reserve6 = [0x16, 0, 0, 0, 0, 0];
    let mut a1 = session(c.members[0].portal, HOST_A);
    let r = a1.scsi(&reserve6, &[], 0).expect("RESERVE(6)");
    assert_eq!(r.status, GOOD, "{r:?}");
    // Another host through m2 and m3: refused, its RESERVE too.
    for i in [1, 2] {
        let mut b = session_raw(c.members[i].portal, HOST_B);
        assert_eq!(
            status(&mut b, &[0u8; 6], 0),
            CONFLICT,
            "TUR through m{}",
            i + 1
        );
        assert_eq!(
            status(&mut b, &reserve6, 0),
            CONFLICT,
            "RESERVE through m{}",
            i + 1
        );
    }
    // A second session of the same initiator through m1 (another I_T
    // nexus, as libiscsi's tests make): refused; the holder logs out, and
    // the very next command through m1 is not.
    let mut other = session_raw(c.members[0].portal, HOST_A);
    assert_eq!(status(&mut other, &[0u8; 6], 0), CONFLICT);
    a1.logout().expect("logout");
    assert_eq!(
        status(&mut other, &[0u8; 6], 0),
        GOOD,
        "right after the holder's logout"
    );
    // Through the other members it goes too.
    eventually("the reservation released", Duration::from_secs(10), || {
        let mut b = session_raw(c.members[1].portal, HOST_B);
        let s = status(&mut b, &[0u8; 6], 0);
        (s == GOOD).then_some(()).ok_or(format!("status {s:#x}"))
    });
    // Through m2, B reserves and releases.
    let mut b2 = session(c.members[1].portal, HOST_B);
    assert_eq!(b2.scsi(&reserve6, &[], 0).unwrap().status, GOOD);
    let read10 = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    let mut a3 = session_raw(c.members[2].portal, HOST_A);
    assert_eq!(
        status(&mut a3, &read10, 512),
        CONFLICT,
        "A's read through m3"
    );
    assert_eq!(
        b2.scsi(&[0x17, 0, 0, 0, 0, 0], &[], 0).unwrap().status,
        GOOD
    );
    assert_eq!(
        status(&mut a3, &read10, 512),
        GOOD,
        "A's read after the release"
    );
}

/// MODE SELECT (6) of the Control mode page with SWP `on`, through `c`.
fn set_swp(c: &mut Conn, on: bool) -> ScsiResult {
    let r = c
        .scsi(&[0x1A, 0x08, 0x0A, 0, 255, 0], &[], 255)
        .expect("MODE SENSE");
    assert_eq!(r.status, GOOD, "MODE SENSE: {r:?}");
    let mut p = vec![0, 0, 0, 0];
    p.extend_from_slice(&r.data[4..4 + 2 + usize::from(r.data[5])]);
    p[4] &= 0x3F;
    if on {
        p[8] |= 0x08;
    } else {
        p[8] &= !0x08;
    }
    c.scsi(&[0x15, 0x10, 0, 0, p.len() as u8, 0], &p, 0)
        .expect("MODE SELECT")
}

#[test]
fn software_write_protect_set_through_one_member_holds_on_every_member() {
    let c = exported();
    wait_serving(&c, &[0, 1, 2]);
    let mut a1 = session(c.members[0].portal, HOST_A);
    let mut b2 = session(c.members[1].portal, HOST_B);
    assert_eq!(write(&mut b2, 32).status, GOOD);
    let r = set_swp(&mut a1, true);
    assert_eq!(r.status, GOOD, "SWP on through m1: {r:?}");
    // m2's nexus is told, and its writes are refused: DATA PROTECT,
    // WRITE PROTECTED.
    let uas = unit_attentions(&mut b2);
    assert!(
        uas.contains(&(0x2A, 0x01)),
        "MODE PARAMETERS CHANGED on m2: {uas:?}"
    );
    let r = write(&mut b2, 32);
    assert_eq!(
        (r.status, r.sense[2] & 0x0F, r.sense[12]),
        (CHECK, 7, 0x27),
        "{r:?}"
    );
    // m1's own nexus is not told of its own change.
    assert!(unit_attentions(&mut a1).is_empty());
    // Off again through m3.
    let mut a3 = session(c.members[2].portal, HOST_A);
    assert_eq!(set_swp(&mut a3, false).status, GOOD);
    assert!(unit_attentions(&mut b2).contains(&(0x2A, 0x01)));
    assert_eq!(write(&mut b2, 32).status, GOOD);
}

/// COMPARE AND WRITE (16) of one 512-byte block at `lba`: compare with
/// `old`, write `new`.
fn caw(c: &mut Conn, lba: u64, old: &[u8], new: &[u8]) -> ScsiResult {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x89;
    cdb[2..10].copy_from_slice(&lba.to_be_bytes());
    cdb[13] = 1;
    let mut data = old.to_vec();
    data.extend_from_slice(new);
    c.scsi(&cdb, &data, 0).expect("COMPARE AND WRITE")
}

/// READ (10) of one block.
fn read_block(c: &mut Conn, lba: u32) -> Vec<u8> {
    let l = lba.to_be_bytes();
    let r = c
        .scsi(&[0x28, 0, l[0], l[1], l[2], l[3], 0, 0, 1, 0], &[], 512)
        .expect("READ");
    assert_eq!(r.status, GOOD, "{r:?}");
    r.data
}

/// The counter block: an increment count, then who wrote it last.
const COUNTER_LBA: u32 = 100;

/// Increments the counter through `c` with read-compare-write until `n`
/// increments were acknowledged, as VMware's ATS heartbeat updates its
/// block; returns the latency of every COMPARE AND WRITE and how many
/// miscompared (another writer came first).
fn increment(c: &mut Conn, who: u8, n: usize) -> (Vec<Duration>, usize) {
    let (mut took, mut miscompares, mut goods) = (Vec::new(), 0, 0);
    while goods < n {
        let old = read_block(c, COUNTER_LBA);
        let count = u64::from_be_bytes(old[..8].try_into().unwrap());
        let mut new = old.clone();
        new[..8].copy_from_slice(&(count + 1).to_be_bytes());
        new[8] = who;
        let started = std::time::Instant::now();
        let r = caw(c, u64::from(COUNTER_LBA), &old, &new);
        took.push(started.elapsed());
        match (r.status, r.sense.get(2).map(|k| k & 0x0F)) {
            (GOOD, _) => goods += 1,
            (CHECK, Some(0x0E)) => miscompares += 1,
            other => panic!("COMPARE AND WRITE by {who}: {other:?} {r:?}"),
        }
    }
    (took, miscompares)
}

/// Median and 99th percentile.
fn spread(mut d: Vec<Duration>) -> (Duration, Duration) {
    d.sort();
    let at = |q: f64| d[((d.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

#[test]
fn compare_and_write_through_two_members_never_loses_an_increment() {
    let c = exported();
    wait_serving(&c, &[0, 1, 2]);
    let roles = c.roles("default");
    assert_eq!(roles["primary"], "m1", "m1 owns the device: {roles}");
    // Each alone first: the owner's path and another member's.
    for (i, who) in [(0, 1u8), (1, 2u8)] {
        let mut s = session(c.members[i].portal, HOST_A);
        let (took, miscompares) = increment(&mut s, who, 50);
        assert_eq!(miscompares, 0, "alone");
        let (median, p99) = spread(took);
        println!(
            "COMPARE AND WRITE through m{} ({}), alone: median {median:?}, p99 {p99:?}",
            i + 1,
            if i == 0 {
                "the owner"
            } else {
                "forwarded to the owner"
            }
        );
    }
    // Then both at once, on the same block.
    const EACH: usize = 200;
    let writers: Vec<_> = [(0usize, 1u8, HOST_A), (1, 2, HOST_B)]
        .into_iter()
        .map(|(i, who, host)| {
            let portal = c.members[i].portal;
            std::thread::spawn(move || {
                let mut s = session(portal, host);
                increment(&mut s, who, EACH)
            })
        })
        .collect();
    let mut miscompares = 0;
    for (i, w) in writers.into_iter().enumerate() {
        let (took, m) = w.join().expect("writer");
        miscompares += m;
        let (median, p99) = spread(took);
        println!(
            "COMPARE AND WRITE through m{}, both writers on one block: median {median:?}, p99 {p99:?}, {m} miscompares",
            i + 1
        );
    }
    // Every acknowledged increment is there: 50 + 50 alone, 2 x EACH
    // together.
    let mut s = session(c.members[2].portal, PROBE);
    let block = read_block(&mut s, COUNTER_LBA);
    let count = u64::from_be_bytes(block[..8].try_into().unwrap());
    assert_eq!(
        count,
        100 + 2 * EACH as u64,
        "{miscompares} miscompares on the way"
    );
}

#[test]
fn a_sanitize_through_one_member_is_in_progress_on_every_member() {
    let c = exported();
    wait_serving(&c, &[0, 1, 2]);
    let mut a1 = session(c.members[0].portal, HOST_A);
    let mut b2 = session(c.members[1].portal, HOST_B);
    // SANITIZE OVERWRITE, IMMED: 31 passes of a 0xA5 pattern over the
    // 64 MiB device (seconds), answered at once and running on m1.
    let mut params = vec![0x1F, 0, 0, 1];
    params.push(0xA5);
    let r = a1
        .scsi(
            &[0x48, 0x81, 0, 0, 0, 0, 0, 0, params.len() as u8, 0],
            &params,
            0,
        )
        .expect("SANITIZE");
    assert_eq!(r.status, GOOD, "{r:?}");
    // m2 reports it: NOT READY, SANITIZE IN PROGRESS (once the cluster
    // decided it, a commit after the IMMED answer).
    let in_progress = |c: &mut Conn| {
        let r = c.scsi(&[0u8; 6], &[], 0).expect("TEST UNIT READY");
        r.status == CHECK && (r.sense[2] & 0x0F, r.sense[12], r.sense[13]) == (2, 0x04, 0x1B)
    };
    eventually(
        "SANITIZE IN PROGRESS through m2",
        Duration::from_secs(10),
        || {
            in_progress(&mut b2)
                .then_some(())
                .ok_or_else(|| "not reported".to_owned())
        },
    );
    // ...until it ends on m1; then m2 serves again, and reads the pattern.
    eventually(
        "the sanitize done, seen through m2",
        Duration::from_secs(120),
        || {
            (!in_progress(&mut b2))
                .then_some(())
                .ok_or_else(|| "still in progress".to_owned())
        },
    );
    assert!(!in_progress(&mut a1), "ended on m1 too");
    assert_eq!(status(&mut b2, &[0u8; 6], 0), GOOD);
    let block = read_block(&mut b2, 77);
    assert!(block.iter().all(|&b| b == 0xA5), "{:02x?}", &block[..16]);
}

#[test]
fn preempt_and_abort_through_one_member_aborts_the_tasks_on_another() {
    let c = exported();
    wait_serving(&c, &[0, 1]);
    // Host B, registered and holding Write Exclusive through m2, has a
    // write waiting for its data-out.
    let mut b2 = session(c.members[1].portal, HOST_B);
    prout_good(&mut b2, "B registers through m2", 0, 0, 0, KEY_B);
    prout_good(&mut b2, "B reserves through m2", 1, WE, KEY_B, 0);
    let (itt, ttt) = b2
        .start_write(&[0x2A, 0, 0, 0, 0, 72, 0, 0, 8, 0], 4096)
        .expect("a write waiting for data");
    // Host A registers and PREEMPT AND ABORTs B through m1.
    let mut a1 = session(c.members[0].portal, HOST_A);
    prout_good(&mut a1, "A registers through m1", 0, 0, 0, KEY_A);
    prout_good(&mut a1, "A preempts and aborts B", 5, WE, KEY_A, KEY_B);
    // B's session on m2 is told, and its write is gone.
    let uas = unit_attentions(&mut b2);
    assert!(
        uas.contains(&(0x2A, 0x05)),
        "REGISTRATIONS PREEMPTED: {uas:02x?}"
    );
    b2.data_out(itt, ttt, &[0xEE; 4096]).expect("data-out");
    let r = b2
        .scsi(&[0u8; 6], &[], 0)
        .expect("TEST UNIT READY after the data-out, with no response for the aborted write");
    assert_eq!(r.status, GOOD, "{r:?}");
    // And B, no longer registered, cannot write under the reservation A
    // took over.
    assert_eq!(write(&mut b2, 72).status, CONFLICT);
}

#[test]
fn an_spc2_reservation_goes_with_the_member_that_held_it() {
    let mut c = exported();
    wait_serving(&c, &[0, 1, 2]);
    let reserve6 = [0x16, 0, 0, 0, 0, 0];
    let mut a3 = session(c.members[2].portal, HOST_A);
    assert_eq!(a3.scsi(&reserve6, &[], 0).unwrap().status, GOOD);
    let mut b1 = session_raw(c.members[0].portal, HOST_B);
    assert_eq!(status(&mut b1, &[0u8; 6], 0), CONFLICT);
    // m3 dies: its I_T nexus is lost, and with it the reservation, once
    // the others declare m3 failed.
    c.kill(2);
    drop(a3);
    eventually(
        "the reservation of the dead member's nexus gone",
        Duration::from_secs(30),
        || {
            let mut b = session_raw(c.members[0].portal, HOST_B);
            let s = status(&mut b, &[0u8; 6], 0);
            (s == GOOD).then_some(()).ok_or(format!("status {s:#x}"))
        },
    );
    let mut b2 = session_raw(c.members[1].portal, HOST_B);
    assert_eq!(
        status(&mut b2, &reserve6, 0),
        GOOD,
        "B reserves through m2 now"
    );
}

#[test]
fn without_a_quorum_a_reservation_change_is_refused_and_changes_nothing() {
    let mut c = exported();
    wait_serving(&c, &[0, 1, 2]);
    let mut a1 = session(c.members[0].portal, HOST_A);
    prout_good(&mut a1, "A registers through m1", 0, 0, 0, KEY_A);
    // m2 and m3 die: m1 is alone, with no quorum.
    c.kill(1);
    c.kill(2);
    // B's registration through m1 is not answered GOOD: NOT READY,
    // ASYMMETRIC ACCESS STATE TRANSITION, which hosts retry.
    let mut b1 = session_raw(c.members[0].portal, HOST_B);
    let r = prout(&mut b1, 0, 0, 0, KEY_B);
    let r = if r.status == CHECK && r.sense[2] & 0x0F == 6 {
        prout(&mut b1, 0, 0, 0, KEY_B)
    } else {
        r
    };
    assert_eq!(
        (r.status, r.sense[2] & 0x0F, r.sense[12], r.sense[13]),
        (CHECK, 2, 0x04, 0x0A),
        "{r:?}"
    );
    // The others come back: B's key is nowhere, A's still there.
    c.restart(1);
    c.restart(2);
    c.wait_primary("default", Duration::from_secs(90));
    wait_serving(&c, &[0, 1, 2]);
    for v in views(&c, &[0, 1, 2]) {
        assert_eq!(v.0 .1, vec![KEY_A], "{v:?}");
    }
}
