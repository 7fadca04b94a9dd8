//! WRITE ATOMIC (16) end to end: a device on a filesystem that makes
//! RWF_ATOMIC writes untorn (XFS with reflink, which falls back to
//! copy-on-write when the disk has no atomic writes) offers one atomic unit
//! and writes it untorn; a device without atomic writes (memory here; the
//! default device on ext4 in the conformance run) does not offer it:
//! INVALID COMMAND OPERATION CODE and zeros in VPD B0h.
//!
//! Needs root, `mkfs.xfs` (xfsprogs) and loop devices; `scripts/test-all.sh`
//! installs xfsprogs.

// Test helpers: a panic is the test failing, with the message in hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use trellis_tests::raw::Conn;
use trellis_tests::{require_tool, run, Trellisd, DEFAULT_TARGET};

/// An XFS filesystem (reflink on) in an image file, loop-mounted until drop.
struct XfsMount {
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl XfsMount {
    fn new() -> Self {
        require_tool("mkfs.xfs");
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(euid, 0, "mounting the XFS test filesystem needs root");
        let dir = tempfile::Builder::new()
            .prefix("trellis-xfs-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let img = dir.path().join("xfs.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(512 << 20)
            .unwrap();
        let mkfs = run(
            Command::new("mkfs.xfs")
                .args(["-q", "-f", "-m", "reflink=1"])
                .arg(&img),
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(mkfs.status.success(), "mkfs.xfs: {mkfs:?}");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mount = run(
            Command::new("mount")
                .args(["-o", "loop"])
                .arg(&img)
                .arg(&mnt),
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(mount.status.success(), "mount -o loop: {mount:?}");
        Self { mnt, _dir: dir }
    }

    fn path(&self) -> &Path {
        &self.mnt
    }
}

impl Drop for XfsMount {
    fn drop(&mut self) {
        // Lazy: trellisd may still be closing the backing file.
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

fn config(device_path: &Path) -> String {
    format!(
        "portals = [\"127.0.0.1:3260\"]\n\
         [[device]]\nname = \"disk0\"\nsize = \"64MiB\"\npath = \"{}\"\nthin = true\n\
         [[target]]\nname = \"{DEFAULT_TARGET}\"\nluns = [{{ lun = 0, device = \"disk0\" }}]\n",
        device_path.display()
    )
}

fn write_atomic(lba: u64, blocks: u16) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x9C;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[12..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// VPD B0h MAXIMUM ATOMIC TRANSFER LENGTH, ATOMIC ALIGNMENT and ATOMIC
/// TRANSFER LENGTH GRANULARITY.
fn atomic_limits(c: &mut Conn) -> [u32; 3] {
    let vpd = c
        .scsi(&[0x12, 0x01, 0xB0, 0, 64, 0], &[], 64)
        .expect("INQUIRY VPD B0h");
    assert_eq!(vpd.status, 0);
    let word = |at: usize| u32::from_be_bytes(vpd.data[at..at + 4].try_into().unwrap());
    [word(44), word(48), word(52)]
}

#[test]
fn write_atomic_is_offered_where_the_store_makes_writes_untorn() {
    let xfs = XfsMount::new();
    let mut d = Trellisd::start_with(Some(&config(&xfs.path().join("disk0.img"))), &[]).unwrap();
    assert!(
        d.log_text().contains("WRITE ATOMIC offered"),
        "{}",
        d.log_text()
    );

    // One 4 KiB unit: 8 blocks of 512 bytes, aligned to 8.
    let mut c = Conn::login(d.portal).unwrap();
    c.clear_unit_attentions().unwrap();
    assert_eq!(atomic_limits(&mut c), [8, 8, 8]);
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    let w = c.scsi(&write_atomic(16, 8), &data, 0).unwrap();
    assert_eq!(w.status, 0, "sense {:02x?}", w.sense);
    let r = c
        .scsi(&[0x28, 0, 0, 0, 0, 16, 0, 0, 8, 0], &[], 4096)
        .unwrap();
    assert_eq!(r.status, 0);
    assert!(
        r.data == data,
        "read back what WRITE ATOMIC wrote; first bytes {:02x?}",
        &r.data[..16.min(r.data.len())]
    );
    // Misaligned: INVALID FIELD IN CDB.
    let bad = c.scsi(&write_atomic(4, 8), &[0u8; 4096], 0).unwrap();
    assert_eq!(bad.status, 2);
    assert_eq!((bad.sense[2] & 0x0F, bad.sense[12]), (5, 0x24));
    // Zero blocks: nothing to do. The last unit of the LUN: fine; past it:
    // LBA OUT OF RANGE. More than one unit: INVALID FIELD IN CDB.
    let zero = c.scsi(&write_atomic(0, 0), &[], 0).unwrap();
    assert_eq!(zero.status, 0);
    let last = (64 << 20) / 512 - 8;
    let end = c.scsi(&write_atomic(last, 8), &data, 0).unwrap();
    assert_eq!(end.status, 0, "sense {:02x?}", end.sense);
    let beyond = c.scsi(&write_atomic(last + 8, 8), &data, 0).unwrap();
    assert_eq!((beyond.status, beyond.sense[12]), (2, 0x21));
    let two = c.scsi(&write_atomic(0, 16), &[0u8; 8192], 0).unwrap();
    assert_eq!((two.status, two.sense[12]), (2, 0x24));
    // FUA is honoured (RWF_DSYNC with RWF_ATOMIC).
    let mut fua = write_atomic(24, 8);
    fua[1] = 0x08;
    let f = c.scsi(&fua, &data, 0).unwrap();
    assert_eq!(f.status, 0, "sense {:02x?}", f.sense);
    drop(c);

    // libiscsi's WriteAtomic16 suite is not run here: its Simple test
    // writes every multiple of the granularity up to 256 blocks regardless
    // of the MAXIMUM ATOMIC TRANSFER LENGTH reported, which Linux cannot
    // make atomic (RWF_ATOMIC takes naturally aligned powers of two only).
    d.terminate().unwrap();
}

#[test]
fn write_atomic_is_not_offered_without_store_support() {
    // A memory device (memfd, buffered) has no atomic write unit.
    let config = format!(
        "portals = [\"127.0.0.1:3260\"]\n\
         [[device]]\nname = \"disk0\"\nsize = \"64MiB\"\nmemory = true\n\
         [[target]]\nname = \"{DEFAULT_TARGET}\"\nluns = [{{ lun = 0, device = \"disk0\" }}]\n"
    );
    let d = Trellisd::start_with(Some(&config), &[]).unwrap();
    assert!(!d.log_text().contains("WRITE ATOMIC offered"));
    let mut c = Conn::login(d.portal).unwrap();
    c.clear_unit_attentions().unwrap();
    assert_eq!(atomic_limits(&mut c), [0, 0, 0]);
    let r = c.scsi(&write_atomic(0, 8), &[0u8; 4096], 0).unwrap();
    assert_eq!(r.status, 2);
    assert_eq!(
        (r.sense[2] & 0x0F, r.sense[12], r.sense[13]),
        (5, 0x20, 0),
        "INVALID COMMAND OPERATION CODE"
    );
}
