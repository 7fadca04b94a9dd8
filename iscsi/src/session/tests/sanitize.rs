//! Session tests of SANITIZE: the disk steps of OVERWRITE and BLOCK ERASE,
//! IMMED, SANITIZE IN PROGRESS seen by this and other sessions, REQUEST
//! SENSE progress, and failure mode after a failed operation.

use super::*;

fn sanitize(b1: u8, len: u16) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x48;
    c[1] = b1;
    c[7..9].copy_from_slice(&len.to_be_bytes());
    c
}

const IN_PROGRESS: (u8, Option<(u8, u8, u8)>) = (0x02, Some((0x02, 0x04, 0x1B)));

fn tur(r: &mut Rig) -> (u8, Option<(u8, u8, u8)>) {
    let itt = r.scsi([0; 16], 0, false, false, &[], true);
    status(r, itt)
}

#[test]
fn overwrite_writes_every_pass_then_flushes() {
    let mut r = Rig::ready(&Keys::default());
    let mut other = r.sharing();

    // Two passes of a 3-byte pattern, the second inverted.
    let params = [0x82, 0, 0, 3, 0xA1, 0xB2, 0xC3];
    let itt = r.scsi(sanitize(0x01, 7), 7, false, true, &params, true);
    let mut block = [0u8; 512];
    for (i, b) in block.iter_mut().enumerate() {
        *b = params[4 + i % 3];
    }
    let total = BLOCKS * 512;
    for pass in 0..2 {
        let mut at = 0;
        while at < total {
            let req = r.disk();
            assert_eq!(req.offset, at);
            let DiskOp::Write { buf, fua: false } = req.op else {
                panic!("pattern write: {:?}", req.op)
            };
            assert_eq!(buf.len(), 131_072);
            let want: Vec<u8> = if pass == 0 {
                block.to_vec()
            } else {
                block.iter().map(|b| !b).collect()
            };
            assert!(buf.chunks(512).all(|c| c == &want[..]), "pass {pass}");
            at += buf.len() as u64;
            if pass == 1 && at == total / 2 {
                // Meanwhile every command of every session but INQUIRY,
                // REPORT LUNS and REQUEST SENSE is refused.
                assert_eq!(tur(&mut r), IN_PROGRESS);
                assert_eq!(tur(&mut other), IN_PROGRESS);
                let itt2 = other.scsi(read10(0, 1), 512, true, false, &[], true);
                assert_eq!(status(&mut other, itt2), IN_PROGRESS);
                let itt2 = other.scsi(inquiry(96), 96, true, false, &[], true);
                let din = other.one().data_in();
                assert_eq!(din.itt, itt2);
                other.statsn_is(din.statsn);
                let mut rs = [0u8; 16];
                rs[0] = 0x03;
                rs[4] = 18;
                other.scsi(rs, 18, true, false, &[], true);
                let p = other.one();
                other.statsn_is(p.data_in().statsn);
                let d = p.data;
                assert_eq!((d[2], d[12], d[13]), (0x02, 0x04, 0x1B));
                let progress = u16::from_be_bytes([d[16], d[17]]);
                assert_eq!(d[15], 0x80, "SKSV");
                assert!((0x8000..0xC000).contains(&progress), "{progress:#x}");
            }
            let n = buf.len() as i32;
            r.disk_done(req.task, n, Some(buf));
        }
    }
    let req = r.disk();
    assert!(matches!(req.op, DiskOp::Flush));
    r.nothing();
    r.disk_done(req.task, 0, None);
    assert_eq!(status(&mut r, itt), GOOD);
    assert_eq!(tur(&mut other), GOOD);

    // An all-zero pattern on a thick LUN: one zero range.
    let itt = r.scsi(
        sanitize(0x01, 8),
        8,
        false,
        true,
        &[1, 0, 0, 4, 0, 0, 0, 0],
        true,
    );
    let req = r.disk();
    assert_eq!(req.offset, 0);
    assert!(matches!(req.op, DiskOp::WriteZeroes { len } if len == total));
    r.disk_done(req.task, 0, None);
    let req = r.disk();
    assert!(matches!(req.op, DiskOp::Flush));
    r.disk_done(req.task, 0, None);
    assert_eq!(status(&mut r, itt), GOOD);
}

#[test]
fn bad_fields_are_refused_before_any_io() {
    let mut r = Rig::ready(&Keys::default());
    let itt = r.scsi(sanitize(0x01, 4), 4, false, true, &[1, 0, 0, 0], true);
    assert_eq!(status(&mut r, itt), (0x02, Some((0x05, 0x24, 0x00))));
    let itt = r.scsi(sanitize(0x01, 5), 5, false, true, &[0, 0, 0, 1, 0xAA], true);
    assert_eq!(status(&mut r, itt), (0x02, Some((0x05, 0x26, 0x00))));
    let itt = r.scsi(sanitize(0x02, 8), 8, false, true, &[0; 8], true);
    assert_eq!(status(&mut r, itt), (0x02, Some((0x05, 0x24, 0x00))));
    let itt = r.scsi(sanitize(0x03, 0), 0, false, false, &[], true);
    assert_eq!(status(&mut r, itt), (0x02, Some((0x05, 0x24, 0x00))));
    assert!(r.conn.next_disk().is_none());
    assert_eq!(tur(&mut r), GOOD);
}

#[test]
fn immediate_block_erase_and_failure_mode() {
    let mut r = Rig::new(0x1000);
    thin(&mut r);
    r.login(&Keys::default());
    r.clear_ua();
    let total = BLOCKS * 512;

    // IMMED: GOOD before the disk work; none after it.
    let itt = r.scsi(sanitize(0x82, 0), 0, false, false, &[], true);
    assert_eq!(status(&mut r, itt), GOOD);
    let req = r.disk();
    assert!(matches!(req.op, DiskOp::Unmap { len } if len == total));
    assert_eq!(tur(&mut r), IN_PROGRESS);
    r.disk_done(req.task, 0, None);
    let req = r.disk();
    assert!(matches!(req.op, DiskOp::Flush));
    r.disk_done(req.task, 0, None);
    r.nothing();
    assert_eq!(tur(&mut r), GOOD);

    // A failed erase (AUSE set): MEDIUM ERROR, then failure mode for media
    // access until EXIT FAILURE MODE.
    let itt = r.scsi(sanitize(0x22, 0), 0, false, false, &[], true);
    let req = r.disk();
    r.disk_done(req.task, -libc::EIO, None);
    assert_eq!(status(&mut r, itt), (0x02, Some((0x03, 0x0C, 0x00))));
    let itt = r.scsi(read10(0, 1), 512, true, false, &[], true);
    assert_eq!(status(&mut r, itt), (0x02, Some((0x03, 0x31, 0x03))));
    assert_eq!(tur(&mut r), GOOD);
    let itt = r.scsi(sanitize(0x1F, 0), 0, false, false, &[], true);
    assert_eq!(status(&mut r, itt), GOOD);
    let itt = r.scsi(read10(0, 1), 512, true, false, &[], true);
    let req = r.disk();
    assert!(matches!(req.op, DiskOp::Read(_)));
    let _ = itt;
}

#[test]
fn a_running_sanitize_outlives_resets_and_is_seen_by_every_session() {
    let mut a = Rig::new(0x1000);
    thin(&mut a);
    a.login(&Keys::default());
    a.clear_ua();
    let mut b = a.sharing();

    // A BLOCK ERASE without IMMED is on the disk.
    let _itt = a.scsi(sanitize(0x02, 0), 0, false, false, &[], true);
    let req = a.disk();
    assert!(matches!(req.op, DiskOp::Unmap { .. }));
    // The other session is told SANITIZE IN PROGRESS; INQUIRY still runs.
    assert_eq!(tur(&mut b), IN_PROGRESS);
    let itt = b.scsi(
        [0x12, 0, 0, 0, 36, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        36,
        true,
        false,
        &[],
        true,
    );
    let p = b.one();
    assert_eq!(p.data_in().itt, itt);
    b.statsn_is(p.data_in().statsn);
    // A LUN reset from B does not stop it.
    let t = b.tmf(5, 0, 0);
    let resp = b.one().tmf();
    assert_eq!((resp.itt, resp.response), (t, 0));
    b.statsn_is(resp.statsn);
    let itt = b.scsi([0; 16], 0, false, false, &[], true);
    assert_eq!(
        status(&mut b, itt).1,
        Some((0x06, 0x29, 0x03)),
        "the reset's UA first"
    );
    assert_eq!(tur(&mut b), IN_PROGRESS, "still sanitizing after the reset");
    // A's core wakes and aborts A's task: the erase itself goes on (its
    // status is never sent), then its flush; the unit is ready again.
    a.conn.poll_shared();
    a.disk_done(req.task, 0, None);
    let req = a.disk();
    assert!(matches!(req.op, DiskOp::Flush));
    a.disk_done(req.task, 0, None);
    a.nothing();
    assert_eq!(tur(&mut b), GOOD);
}
