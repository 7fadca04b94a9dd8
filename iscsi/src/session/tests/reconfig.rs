//! Session tests of a configuration change reaching a logged-in session:
//! the LUN table is rebuilt at the next PDU, with the unit attentions that
//! say what changed, and commands in flight are not disturbed.

use super::*;

/// The rig's host with LUN 0 grown to `blocks` and a LUN 1 (a second unit)
/// mapped, at a new configuration generation.
fn grow_and_map(r: &mut Rig, blocks: u64) {
    let mut table = (*r.host.luns).clone();
    let mut dev = (*table.luns[0].dev).clone();
    dev.num_blocks = blocks;
    table.luns[0].dev = Rc::new(dev);
    let mut second = table.luns[0].clone();
    second.lun = crate::scsi::lun_to_wire(1);
    second.shared = std::sync::Arc::new(LunShared::new());
    table.luns.push(second);
    table.ids = vec![0, 1];
    r.host.luns = Rc::new(table);
    r.host.generation += 1;
}

#[test]
fn a_grown_unit_and_a_new_lun_are_reported_at_the_next_command() {
    let mut r = Rig::ready(&Keys::default());
    // A read is on the disk when the configuration changes.
    let itt = r.scsi(read10(0, 8), 4096, true, false, &[], true);
    let req = r.disk();
    grow_and_map(&mut r, BLOCKS * 2);
    // The next command hears of both, one unit attention at a time.
    let t = r.scsi([0; 16], 0, false, false, &[], true);
    assert_eq!(status(&mut r, t), (0x02, Some((0x06, 0x2A, 0x09))));
    let t = r.scsi([0; 16], 0, false, false, &[], true);
    assert_eq!(status(&mut r, t), (0x02, Some((0x06, 0x3F, 0x0E))));
    let t = r.scsi([0; 16], 0, false, false, &[], true);
    assert_eq!(status(&mut r, t), GOOD);
    // The read in flight completes as usual.
    let DiskOp::Read(buf) = req.op else {
        panic!("read")
    };
    r.disk_done(req.task, 4096, Some(buf));
    let out = r.output();
    let last = out.last().expect("the read's data and status");
    assert_eq!(last.data_in().itt, itt);
    r.statsn_is(last.data_in().statsn);
    // Blocks of the grown part are in range now.
    let mut c = read10(0, 1);
    c[2..6].copy_from_slice(&((BLOCKS + 10) as u32).to_be_bytes());
    r.scsi(c, 512, true, false, &[], true);
    assert!(matches!(r.disk().op, DiskOp::Read(_)));
}

#[test]
fn an_unchanged_generation_rebuilds_nothing() {
    let mut r = Rig::ready(&Keys::default());
    // The host's table changes without a new generation: not picked up.
    grow_and_map(&mut r, BLOCKS * 2);
    r.host.generation -= 1;
    let t = r.scsi([0; 16], 0, false, false, &[], true);
    assert_eq!(status(&mut r, t), GOOD);
}

#[test]
fn a_session_whose_access_is_revoked_ends() {
    let mut r = Rig::ready(&Keys::default());
    // A read is on the disk when the initiator loses access.
    r.scsi(read10(0, 8), 4096, true, false, &[], true);
    let req = r.disk();
    r.host.revoked = true;
    r.host.generation += 1;
    // Whatever arrives next (even nothing) finds the session ended.
    let used = r.conn.receive(&[], &mut r.host, &r.pool, r.now);
    assert_eq!(used, 0);
    assert_eq!(r.conn.closing(), Some(&CloseReason::AccessRevoked));
    // Nothing more is answered; the read in flight is let go.
    let DiskOp::Read(buf) = req.op else {
        panic!("read")
    };
    r.disk_done(req.task, 4096, Some(buf));
    assert!(r.output().iter().all(|p| p.bhs[0] & 0x3F != 0x21));
}
