//! Changing the configuration of a running trellisd (SIGHUP): a grown device
//! and a newly mapped LUN reach a logged-in session as CAPACITY DATA HAS
//! CHANGED and REPORTED LUNS DATA HAS CHANGED, then as the new READ CAPACITY
//! and REPORT LUNS; a fresh libiscsi client sees the new size; a change that
//! cannot be applied (a shrink) is refused with a log line and changes
//! nothing.

// Test helpers: a panic is the test failing, with the message in hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use trellis_tests::raw::Conn;
use trellis_tests::{eventually, iscsi_tool, Trellisd, DEFAULT_TARGET};

const MIB: u64 = 1 << 20;

fn config(disk0_mib: u64, luns: &str) -> String {
    format!(
        "portals = [\"127.0.0.1:3260\"]\n\
         [[device]]\nname = \"disk0\"\nsize = \"{disk0_mib}MiB\"\npath = \"disk0.img\"\nthin = true\n\
         [[device]]\nname = \"disk1\"\nsize = \"32MiB\"\npath = \"disk1.img\"\nthin = true\n\
         [[target]]\nname = \"{DEFAULT_TARGET}\"\nluns = [{luns}]\n"
    )
}

/// Rewrites the config file, sends SIGHUP and waits for the log line saying
/// how it went (`applied` or an error), the `n`-th such line.
fn reload(d: &Trellisd, text: &str, n: usize) -> String {
    std::fs::write(d.dir.path().join("trellisd.toml"), text).unwrap();
    let pid = d.pid().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    eventually("no SIGHUP log line", Duration::from_secs(10), || {
        let log = d.log_text();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("SIGHUP:")).collect();
        match lines.get(n - 1) {
            Some(line) => Ok((*line).to_owned()),
            None => Err(log),
        }
    })
}

/// Sense key, ASC and ASCQ of every unit attention until a TEST UNIT READY
/// passes.
fn unit_attentions(c: &mut Conn) -> Vec<(u8, u8, u8)> {
    unit_attentions_on(c, 0)
}

/// [`unit_attentions`] of LUN `lun`.
fn unit_attentions_on(c: &mut Conn, lun: u16) -> Vec<(u8, u8, u8)> {
    let mut seen = Vec::new();
    for _ in 0..8 {
        let r = c.scsi_lun(lun, &[0u8; 6], &[], 0).unwrap();
        if r.status == 0 {
            return seen;
        }
        seen.push((r.sense[2] & 0x0F, r.sense[12], r.sense[13]));
    }
    panic!("unit attentions never end: {seen:02x?}");
}

fn capacity_bytes(c: &mut Conn) -> u64 {
    let rc = [0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0];
    let r = c.scsi(&rc, &[], 32).unwrap();
    assert_eq!(r.status, 0, "READ CAPACITY(16): {:02x?}", r.sense);
    let last = u64::from_be_bytes(r.data[0..8].try_into().unwrap());
    let bs = u32::from_be_bytes(r.data[8..12].try_into().unwrap());
    (last + 1) * u64::from(bs)
}

fn report_luns(c: &mut Conn) -> Vec<u16> {
    let r = c
        .scsi(&[0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], &[], 256)
        .unwrap();
    assert_eq!(r.status, 0);
    let len = u32::from_be_bytes(r.data[0..4].try_into().unwrap()) as usize;
    r.data[8..8 + len]
        .chunks(8)
        .map(|l| u16::from_be_bytes([l[0] & 0x3F, l[1]]))
        .collect()
}

#[test]
fn a_grown_device_and_a_new_lun_reach_running_sessions() {
    let d =
        Trellisd::start_with(Some(&config(64, "{ lun = 0, device = \"disk0\" }")), &[]).unwrap();
    let mut c = Conn::login(d.portal).unwrap();
    c.clear_unit_attentions().unwrap();
    assert_eq!(capacity_bytes(&mut c), 64 * MIB);
    assert_eq!(report_luns(&mut c), vec![0]);

    let both = "{ lun = 0, device = \"disk0\" }, { lun = 1, device = \"disk1\" }";
    let line = reload(&d, &config(128, both), 1);
    assert!(line.contains("configuration applied"), "{line}");

    // The session hears of both changes before its next command runs.
    let uas = unit_attentions(&mut c);
    assert!(
        uas.contains(&(6, 0x2A, 0x09)),
        "CAPACITY DATA HAS CHANGED: {uas:02x?}"
    );
    assert!(
        uas.contains(&(6, 0x3F, 0x0E)),
        "REPORTED LUNS DATA HAS CHANGED: {uas:02x?}"
    );
    assert_eq!(capacity_bytes(&mut c), 128 * MIB);
    assert_eq!(report_luns(&mut c), vec![0, 1]);
    // The grown blocks are usable: write and read the last one.
    let last = (128 * MIB / 512 - 1) as u32;
    let mut w = [0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    w[2..6].copy_from_slice(&last.to_be_bytes());
    assert_eq!(c.scsi(&w, &[0x77; 512], 0).unwrap().status, 0);
    let mut r = w;
    r[0] = 0x28;
    let back = c.scsi(&r, &[], 512).unwrap();
    assert_eq!((back.status, back.data), (0, vec![0x77; 512]));

    // A new libiscsi client sees the new size and the new LUN.
    let out = iscsi_tool("iscsi-readcapacity16", &[&d.url(DEFAULT_TARGET, 0)]).unwrap();
    assert!(out.contains(&format!("{}", 128 * MIB / 512 - 1)), "{out}");
    let out = iscsi_tool("iscsi-readcapacity16", &[&d.url(DEFAULT_TARGET, 1)]).unwrap();
    assert!(out.contains(&format!("{}", 32 * MIB / 512 - 1)), "{out}");

    // Shrinking is refused, with the reason; nothing changes.
    let line = reload(&d, &config(64, both), 2);
    assert!(line.contains("cannot shrink"), "{line}");
    assert_eq!(unit_attentions(&mut c), vec![]);
    assert_eq!(capacity_bytes(&mut c), 128 * MIB);

    // Unmapping LUN 1 is reported again.
    let line = reload(&d, &config(128, "{ lun = 0, device = \"disk0\" }"), 3);
    assert!(line.contains("configuration applied"), "{line}");
    assert_eq!(unit_attentions(&mut c), vec![(6, 0x3F, 0x0E)]);
    assert_eq!(report_luns(&mut c), vec![0]);
}

/// disk0 (64 MiB, file) at LUN 0, and disk2 (16 MiB, file) at LUN 1 when
/// `with_disk2`.
fn config_with(disk0_read_only: bool, with_disk2: bool) -> String {
    let mut text = format!(
        "portals = [\"127.0.0.1:3260\"]\n\
         [[device]]\nname = \"disk0\"\nsize = \"64MiB\"\npath = \"disk0.img\"\nthin = true\nread_only = {disk0_read_only}\n"
    );
    if with_disk2 {
        text.push_str("[[device]]\nname = \"disk2\"\nsize = \"16MiB\"\npath = \"disk2.img\"\n");
    }
    text.push_str(&format!(
        "[[target]]\nname = \"{DEFAULT_TARGET}\"\nluns = [{{ lun = 0, device = \"disk0\" }}{}]\n",
        if with_disk2 {
            ", { lun = 1, device = \"disk2\" }"
        } else {
            ""
        }
    ));
    text
}

/// WRITE(10) of one block of `byte` at `lba` on `lun`; status and sense.
fn write_block(c: &mut Conn, lun: u16, lba: u32, byte: u8) -> (u8, Vec<u8>) {
    let mut w = [0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    w[2..6].copy_from_slice(&lba.to_be_bytes());
    let r = c.scsi_lun(lun, &w, &[byte; 512], 0).unwrap();
    (r.status, r.sense)
}

fn read_block(c: &mut Conn, lun: u16, lba: u32) -> Vec<u8> {
    let mut r = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    r[2..6].copy_from_slice(&lba.to_be_bytes());
    let back = c.scsi_lun(lun, &r, &[], 512).unwrap();
    assert_eq!(back.status, 0, "READ(10): {:02x?}", back.sense);
    back.data
}

#[test]
fn devices_are_added_removed_and_switched_read_only_while_running() {
    let d = Trellisd::start_with(Some(&config_with(false, false)), &[]).unwrap();
    let mut c = Conn::login(d.portal).unwrap();
    c.clear_unit_attentions().unwrap();
    assert_eq!(write_block(&mut c, 0, 7, 0x11).0, 0);

    // A new device, mapped at LUN 1: the session is told and can use it.
    let line = reload(&d, &config_with(false, true), 1);
    assert!(line.contains("device `disk2` added"), "{line}");
    assert_eq!(unit_attentions(&mut c), vec![(6, 0x3F, 0x0E)]);
    assert_eq!(report_luns(&mut c), vec![0, 1]);
    // The new LUN's nexus starts with its own POWER ON OCCURRED.
    let uas = unit_attentions_on(&mut c, 1);
    assert_eq!(
        uas.first().map(|u| (u.0, u.1)),
        Some((6, 0x29)),
        "{uas:02x?}"
    );
    assert_eq!(write_block(&mut c, 1, 3, 0x22), (0, vec![]));
    assert_eq!(read_block(&mut c, 1, 3), vec![0x22; 512]);
    assert_eq!(read_block(&mut c, 0, 7), vec![0x11; 512]);
    let out = iscsi_tool("iscsi-readcapacity16", &[&d.url(DEFAULT_TARGET, 1)]).unwrap();
    assert!(out.contains(&format!("{}", 16 * MIB / 512 - 1)), "{out}");

    // disk0 made read-only: its store is reopened read-only, the session
    // keeps its LUNs and gets DATA PROTECT / WRITE PROTECTED on writes.
    let line = reload(&d, &config_with(true, true), 2);
    assert!(line.contains("device `disk0` reopened"), "{line}");
    let (status, sense) = write_block(&mut c, 0, 7, 0x33);
    assert_eq!(status, 2, "a write to a read-only device fails");
    assert_eq!(
        (sense[2] & 0x0F, sense[12], sense[13]),
        (7, 0x27, 0x00),
        "DATA PROTECT, WRITE PROTECTED"
    );
    assert_eq!(read_block(&mut c, 0, 7), vec![0x11; 512]);
    // And writable again.
    let line = reload(&d, &config_with(false, true), 3);
    assert!(line.contains("device `disk0` reopened"), "{line}");
    assert_eq!(write_block(&mut c, 0, 7, 0x44).0, 0);
    assert_eq!(read_block(&mut c, 0, 7), vec![0x44; 512]);

    // disk2 removed with its LUN: the session is told, a new client sees
    // LUN 0 only, and LUN 1 is gone.
    let line = reload(&d, &config_with(false, false), 4);
    assert!(line.contains("device `disk2` removed"), "{line}");
    assert_eq!(unit_attentions(&mut c), vec![(6, 0x3F, 0x0E)]);
    assert_eq!(report_luns(&mut c), vec![0]);
    let r = c
        .scsi_lun(1, &[0x28, 0, 0, 0, 0, 3, 0, 0, 1, 0], &[], 512)
        .unwrap();
    assert_eq!(r.status, 2, "LUN 1 is gone");
    assert_eq!(
        (r.sense[2] & 0x0F, r.sense[12]),
        (5, 0x25),
        "LOGICAL UNIT NOT SUPPORTED"
    );
    let out = iscsi_tool("iscsi-ls", &["-s", &d.portal_url()]).unwrap();
    assert!(out.contains("Lun:0") && !out.contains("Lun:1"), "{out}");

    // Added back over the same file: its data is there.
    let line = reload(&d, &config_with(false, true), 5);
    assert!(line.contains("device `disk2` added"), "{line}");
    assert_eq!(unit_attentions(&mut c), vec![(6, 0x3F, 0x0E)]);
    assert!(!unit_attentions_on(&mut c, 1).is_empty());
    assert_eq!(read_block(&mut c, 1, 3), vec![0x22; 512]);
}

#[test]
fn revoked_access_ends_sessions_and_other_blocks_are_refused() {
    let d = Trellisd::start_with(Some(&config_with(false, false)), &[]).unwrap();
    let mut c = Conn::login(d.portal).unwrap();
    c.clear_unit_attentions().unwrap();
    assert_eq!(write_block(&mut c, 0, 1, 0x5A).0, 0);

    // disk0 pointed at another file under the same name (and so the same
    // persisted UUID): refused, nothing changes, the session goes on.
    let moved = config_with(false, false).replace("disk0.img", "elsewhere.img");
    let line = reload(&d, &moved, 1);
    assert!(line.contains("backing changed"), "{line}");
    assert_eq!(read_block(&mut c, 0, 1), vec![0x5A; 512]);

    // The target now admits another initiator only: this session ends.
    let only_other = format!(
        "{}[[target.acl]]\ninitiator = \"iqn.2026-12.org.example:someone-else\"\n",
        config_with(false, false)
    );
    let line = reload(&d, &only_other, 2);
    assert!(line.contains("access changed"), "{line}");
    let r = c.scsi(&[0u8; 6], &[], 0);
    assert!(r.is_err(), "the session was not ended: {r:?}");
    let log = d.log_text();
    assert!(
        log.contains("no longer admits this initiator: ending its session"),
        "{log}"
    );
    // And a new login is refused.
    assert!(Conn::login(d.portal).is_err());
}
