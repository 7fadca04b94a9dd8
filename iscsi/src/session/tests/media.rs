//! Session tests of the media commands with several disk steps (WRITE SAME,
//! UNMAP, GET LBA STATUS, COMPARE AND WRITE with its block holds) and of
//! LOGICAL UNIT RESET reaching other sessions, on the rig of `tests.rs`.

use trellis_datapath::Extent;

use super::*;

fn cdb10(opcode: u8, b1: u8, lba: u32, len: u16) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = opcode;
    c[1] = b1;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&len.to_be_bytes());
    c
}

fn caw(lba: u64, blocks: u8) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x89;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[13] = blocks;
    c
}

#[test]
fn lun_reset_gives_every_session_of_the_lun_a_unit_attention() {
    let mut a = Rig::ready(&Keys::default());
    let mut b = a.sharing();

    let itt = a.tmf(5, 0, 0);
    let t = a.one().tmf();
    assert_eq!((t.itt, t.response), (itt, 0));
    a.statsn_is(t.statsn);
    for r in [&mut a, &mut b] {
        let itt = r.scsi([0; 16], 0, false, false, &[], true);
        assert_eq!(status(r, itt), (0x02, Some((0x06, 0x29, 0x03))));
        let itt = r.scsi([0; 16], 0, false, false, &[], true);
        assert_eq!(status(r, itt), GOOD, "reported once");
    }
    // A session logging in after the reset does not see it.
    let mut c = a.sharing();
    let itt = c.scsi([0; 16], 0, false, false, &[], true);
    assert_eq!(status(&mut c, itt), GOOD);
}

#[test]
fn compare_and_write_reads_compares_then_writes_the_second_half() {
    let mut r = Rig::ready(&Keys::default());
    let mut data = vec![0xAA; 512];
    data.extend_from_slice(&[0x55; 512]);

    // Mismatch at byte 7: MISCOMPARE with the offset in INFORMATION, no write.
    let itt = r.scsi(caw(5, 1), 1024, false, true, &data, true);
    let req = r.disk();
    assert_eq!(req.offset, 5 * u64::from(BS));
    let DiskOp::Read(mut medium) = req.op else {
        panic!("reads the blocks first: {:?}", req.op)
    };
    assert_eq!(medium.len(), 512);
    medium.fill(0xAA);
    medium[7] = 0;
    r.disk_done(req.task, 512, Some(medium));
    let p = r.one();
    let resp = p.response();
    r.statsn_is(resp.statsn);
    assert_eq!((resp.itt, resp.status), (itt, 0x02));
    assert_eq!(sense_of(&p), (0x0E, 0x1D, 0x00));
    assert_eq!(&p.data[2 + 3..2 + 7], &7u32.to_be_bytes(), "INFORMATION");
    assert!(r.conn.next_disk().is_none());

    // Match: the second half is written (FUA from the CDB), then GOOD.
    let mut c = caw(5, 1);
    c[1] = 0x08;
    let itt = r.scsi(c, 1024, false, true, &data, true);
    let req = r.disk();
    let DiskOp::Read(mut medium) = req.op else {
        panic!("read")
    };
    medium.fill(0xAA);
    r.disk_done(req.task, 512, Some(medium));
    let req = r.disk();
    assert_eq!(req.offset, 5 * u64::from(BS));
    let DiskOp::Write { buf, fua } = req.op else {
        panic!("then writes: {:?}", req.op)
    };
    assert!(fua);
    assert!(buf.iter().all(|b| *b == 0x55));
    r.disk_done(req.task, 512, Some(buf));
    assert_eq!(status(&mut r, itt), GOOD);
}

#[test]
fn writes_of_held_blocks_wait_for_the_compare_and_write() {
    let mut r = Rig::ready(&Keys::default());
    let mut data = vec![0u8; 512];
    data.extend_from_slice(&[1; 512]);
    let caw_itt = r.scsi(caw(8, 1), 1024, false, true, &data, true);
    let read = r.disk();
    // A WRITE of an overlapping block arrives while the CAW's read is out.
    let w_itt = r.scsi(write10(7, 2), 1024, false, true, &[9; 1024], true);
    assert!(r.conn.next_disk().is_none(), "the write waits");
    // A write of another stripe of block locks does not.
    let o_itt = r.scsi(write10(3000, 1), 512, false, true, &[3; 512], true);
    let other = r.disk();
    assert_eq!(other.offset, 3000 * u64::from(BS));
    let DiskOp::Read(medium) = read.op else {
        panic!("read")
    };
    r.disk_done(read.task, 512, Some(medium));
    let caw_write = r.disk();
    let DiskOp::Write { buf, .. } = caw_write.op else {
        panic!("CAW write")
    };
    assert!(
        r.conn.next_disk().is_none(),
        "still held until the CAW is done"
    );
    r.disk_done(caw_write.task, 512, Some(buf));
    assert_eq!(status(&mut r, caw_itt), GOOD);
    let w = r.disk();
    assert_eq!(w.offset, 7 * u64::from(BS));
    for (req, itt) in [(other, o_itt), (w, w_itt)] {
        let DiskOp::Write { buf, .. } = req.op else {
            panic!("write")
        };
        let n = buf.len() as i32;
        r.disk_done(req.task, n, Some(buf));
        assert_eq!(status(&mut r, itt), GOOD);
    }
}

#[test]
fn compare_and_write_excludes_writes_of_other_sessions() {
    let mut a = Rig::ready(&Keys::default());
    let mut b = a.sharing();

    // B's write of block 8 is on the disk when A's CAW of block 8 arrives:
    // the CAW waits for it to drain.
    let bw_itt = b.scsi(write10(8, 1), 512, false, true, &[7; 512], true);
    let bw = b.disk();
    let mut data = vec![0u8; 512];
    data.extend_from_slice(&[1; 512]);
    let caw_itt = a.scsi(caw(8, 1), 1024, false, true, &data, true);
    assert!(a.conn.next_disk().is_none(), "the CAW waits for B's write");
    let DiskOp::Write { buf, .. } = bw.op else {
        panic!("write")
    };
    b.disk_done(bw.task, 512, Some(buf));
    assert_eq!(status(&mut b, bw_itt), GOOD);
    // The release wakes the cores; A's core retries.
    a.conn.poll_shared();
    let read = a.disk();
    assert_eq!(read.offset, 8 * u64::from(BS));

    // While A's CAW runs, B's new write of block 8 waits, on B's core.
    let bw2_itt = b.scsi(write10(8, 1), 512, false, true, &[9; 512], true);
    assert!(b.conn.next_disk().is_none(), "B's write waits for the CAW");
    b.conn.poll_shared();
    assert!(b.conn.next_disk().is_none(), "still");
    let DiskOp::Read(mut medium) = read.op else {
        panic!("read")
    };
    medium.fill(0);
    a.disk_done(read.task, 512, Some(medium));
    let w = a.disk();
    let DiskOp::Write { buf, .. } = w.op else {
        panic!("CAW write")
    };
    a.disk_done(w.task, 512, Some(buf));
    assert_eq!(status(&mut a, caw_itt), GOOD);
    b.conn.poll_shared();
    let bw2 = b.disk();
    assert_eq!(bw2.offset, 8 * u64::from(BS));
    let DiskOp::Write { buf, .. } = bw2.op else {
        panic!("write")
    };
    b.disk_done(bw2.task, 512, Some(buf));
    assert_eq!(status(&mut b, bw2_itt), GOOD);
}

#[test]
fn write_same_unmaps_zeros_and_replicates_a_pattern() {
    let mut r = Rig::new(0x1000);
    thin(&mut r);
    r.login(&Keys::default());
    r.clear_ua();

    // Zeros with UNMAP on a thin LUN: one punch hole over the range.
    let itt = r.scsi(cdb10(0x41, 0x08, 16, 64), 512, false, true, &[0; 512], true);
    let req = r.disk();
    assert_eq!(req.offset, 16 * 512);
    assert!(
        matches!(req.op, DiskOp::Unmap { len } if len == 64 * 512),
        "{:?}",
        req.op
    );
    r.disk_done(req.task, 0, None);
    assert_eq!(status(&mut r, itt), GOOD);

    // Zeros without UNMAP: a zero range.
    let itt = r.scsi(cdb10(0x41, 0, 16, 4), 512, false, true, &[0; 512], true);
    let req = r.disk();
    assert!(matches!(req.op, DiskOp::WriteZeroes { len } if len == 4 * 512));
    r.disk_done(req.task, 0, None);
    assert_eq!(status(&mut r, itt), GOOD);

    // A pattern over 300 blocks: the 128 KiB buffer holds 256 copies.
    let block = pattern(512, 3);
    let itt = r.scsi(cdb10(0x41, 0, 8, 300), 512, false, true, &block, true);
    let mut at = 8 * 512;
    for blocks in [256u64, 44] {
        let req = r.disk();
        assert_eq!(req.offset, at);
        let DiskOp::Write { buf, fua } = req.op else {
            panic!("pattern write: {:?}", req.op)
        };
        assert!(!fua);
        assert_eq!(buf.len() as u64, blocks * 512);
        assert!(buf.chunks(512).all(|c| c == &block[..]));
        at += blocks * 512;
        let n = buf.len() as i32;
        r.disk_done(req.task, n, Some(buf));
    }
    assert_eq!(status(&mut r, itt), GOOD);

    // Data-out of anything but one block is refused before any I/O.
    let itt = r.scsi(cdb10(0x41, 0, 8, 2), 1024, false, true, &[0; 1024], true);
    assert_eq!(status(&mut r, itt), (0x02, Some((0x05, 0x24, 0x00))));
    assert!(r.conn.next_disk().is_none());
}

#[test]
fn unmap_punches_each_range_in_turn() {
    let mut r = Rig::new(0x1000);
    thin(&mut r);
    r.login(&Keys::default());
    r.clear_ua();
    let mut list = vec![0, 38, 0, 32, 0, 0, 0, 0];
    for (lba, n) in [(0u64, 8u32), (1000, 16)] {
        list.extend_from_slice(&lba.to_be_bytes());
        list.extend_from_slice(&n.to_be_bytes());
        list.extend_from_slice(&[0; 4]);
    }
    let itt = r.scsi(cdb10(0x42, 0, 0, 40), 40, false, true, &list, true);
    for (offset, len) in [(0, 8 * 512), (1000 * 512, 16 * 512)] {
        let req = r.disk();
        assert_eq!(req.offset, offset);
        assert!(matches!(req.op, DiskOp::Unmap { len: l } if l == len));
        r.disk_done(req.task, 0, None);
    }
    assert_eq!(status(&mut r, itt), GOOD);

    // A range past the end fails the whole command before any I/O.
    let mut bad = list.clone();
    bad[8..16].copy_from_slice(&(BLOCKS - 1).to_be_bytes());
    let itt = r.scsi(cdb10(0x42, 0, 0, 40), 40, false, true, &bad, true);
    assert_eq!(status(&mut r, itt), (0x02, Some((0x05, 0x21, 0x00))));
    assert!(r.conn.next_disk().is_none());
}

#[test]
fn get_lba_status_reports_the_extent_from_the_driver() {
    let mut r = Rig::ready(&Keys::default());
    let mut c = [0u8; 16];
    c[0] = 0x9E;
    c[1] = 0x12;
    c[2..10].copy_from_slice(&10u64.to_be_bytes());
    c[10..14].copy_from_slice(&24u32.to_be_bytes());
    let itt = r.scsi(c, 24, true, false, &[], true);
    let req = r.disk();
    assert_eq!(req.offset, 10 * 512);
    assert!(matches!(req.op, DiskOp::Extent));
    let hole = Extent {
        mapped: false,
        len: 4096,
    };
    r.conn.extent_done(req.task, Ok(hole), &r.pool);
    let p = r.one();
    let d = p.data_in();
    assert_eq!((d.itt, d.status_present, d.status), (itt, true, 0));
    r.statsn_is(d.statsn);
    assert_eq!(
        p.data,
        [0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 8, 1, 0, 0, 0]
    );
}
