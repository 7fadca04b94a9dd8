//! The read and write paths: disk requests, Data-In splitting, residuals,
//! immediate data, R2T limits and Data-Out faults.

use super::*;

// ---------------------------------------------------------------- read path

#[test]
fn read10_is_one_disk_read_then_data_in_split_at_initiator_mrdsl() {
    let keys = Keys {
        mrdsl: 2048,
        ..Keys::default()
    };
    let mut r = Rig::ready(&keys);
    let itt = r.scsi(read10(100, 9), 9 * BS, true, false, &[], true);
    r.nothing();
    let req = r.disk();
    assert_eq!(req.slot, 0);
    assert_eq!(req.offset, 100 * u64::from(BS));
    let DiskOp::Read(mut buf) = req.op else {
        panic!("expected a read, got {:?}", req.op);
    };
    assert_eq!(buf.len(), 9 * BS as usize);
    let data = pattern(buf.len(), 9);
    buf.copy_from_slice(&data);
    r.disk_done(req.task, 9 * BS as i32, Some(buf));
    let out = r.output();
    assert_eq!(out.len(), 3, "4608 bytes at MRDSL 2048: {out:?}");
    let mut got = Vec::new();
    for (i, p) in out.iter().enumerate() {
        let d = p.data_in();
        let last = i == 2;
        assert_eq!(d.itt, itt);
        assert_eq!(d.lun, LUN0);
        assert_eq!(d.ttt, RESERVED_TAG);
        assert_eq!(d.data_sn, i as u32, "DataSN");
        assert_eq!(d.buffer_offset, i as u32 * 2048, "buffer offset");
        assert_eq!(d.data_segment_len as usize, p.data.len());
        assert_eq!(p.data.len(), if last { 512 } else { 2048 });
        assert_eq!(d.final_bit, last, "F only on the last");
        assert_eq!(d.status_present, last, "S only on the last");
        assert!(!d.acknowledge);
        assert!(!d.residual_overflow && !d.residual_underflow);
        assert_eq!(d.residual_count, 0);
        if last {
            assert_eq!(d.status, 0);
            r.statsn_is(d.statsn);
        }
        got.extend_from_slice(&p.data);
    }
    assert_eq!(got, data);
    assert_eq!(r.conn.task_count(), 0);
    // The next response takes the next StatSN.
    r.ping();
}

#[test]
fn read_with_edtl_above_the_transfer_reports_underflow() {
    let mut r = Rig::ready(&Keys::default());
    let itt = r.scsi(read10(8, 4), 8192, true, false, &[], true);
    let req = r.disk();
    let DiskOp::Read(mut buf) = req.op else {
        panic!("read");
    };
    assert_eq!(buf.len(), 2048, "the CDB decides what is read");
    buf.fill(0xa5);
    r.disk_done(req.task, 2048, Some(buf));
    let p = r.one();
    let d = p.data_in();
    assert_eq!(d.itt, itt);
    assert!(d.final_bit && d.status_present);
    assert_eq!(p.data, vec![0xa5; 2048]);
    assert!(d.residual_underflow && !d.residual_overflow);
    assert_eq!(d.residual_count, 8192 - 2048);
    r.statsn_is(d.statsn);
}

#[test]
fn read_with_edtl_below_the_transfer_reports_overflow() {
    let mut r = Rig::ready(&Keys::default());
    let itt = r.scsi(read10(8, 4), 1000, true, false, &[], true);
    let req = r.disk();
    let DiskOp::Read(mut buf) = req.op else {
        panic!("read");
    };
    assert_eq!(buf.len(), 2048);
    let data = pattern(2048, 1);
    buf.copy_from_slice(&data);
    r.disk_done(req.task, 2048, Some(buf));
    let p = r.one();
    let d = p.data_in();
    assert_eq!(d.itt, itt);
    assert!(d.final_bit && d.status_present);
    assert_eq!(p.data, data[..1000], "only EDTL bytes are sent");
    assert!(d.residual_overflow && !d.residual_underflow);
    assert_eq!(d.residual_count, 2048 - 1000);
    r.statsn_is(d.statsn);
}

#[test]
fn inquiry_is_answered_without_disk_io() {
    let mut r = Rig::new(5);
    r.login(&Keys::default());
    // INQUIRY is exempt from the pending power-on unit attention.
    let itt = r.scsi(inquiry(255), 255, true, false, &[], true);
    assert!(r.conn.next_disk().is_none());
    let p = r.one();
    let d = p.data_in();
    assert_eq!(d.itt, itt);
    assert!(d.final_bit && d.status_present);
    assert_eq!(d.status, 0);
    assert_eq!(p.data[0], 0x00, "connected direct-access device");
    assert_eq!(&p.data[8..16], b"TRELLIS ");
    assert_eq!(
        usize::from(p.data[4]) + 5,
        p.data.len(),
        "ADDITIONAL LENGTH"
    );
    assert!(d.residual_underflow);
    assert_eq!(d.residual_count as usize, 255 - p.data.len());
    r.statsn_is(d.statsn);
    assert_eq!(r.conn.task_count(), 0);
}

#[test]
fn read_disk_error_is_check_condition_medium_error() {
    let mut r = Rig::ready(&Keys::default());
    let itt = r.scsi(read10(0, 8), 4096, true, false, &[], true);
    let req = r.disk();
    let DiskOp::Read(buf) = req.op else {
        panic!("read");
    };
    r.disk_done(req.task, -EIO, Some(buf));
    let p = r.one();
    let resp = p.response();
    assert_eq!((resp.itt, resp.response, resp.status), (itt, 0, 0x02));
    assert!(!resp.residual_overflow && !resp.residual_underflow);
    assert_eq!(
        sense_of(&p),
        (0x03, 0x11, 0x00),
        "MEDIUM ERROR, UNRECOVERED READ ERROR"
    );
    r.statsn_is(resp.statsn);

    // A short read is an error too, never data.
    let itt = r.scsi(read10(0, 8), 4096, true, false, &[], true);
    let req = r.disk();
    let DiskOp::Read(buf) = req.op else {
        panic!("read");
    };
    r.disk_done(req.task, 512, Some(buf));
    let p = r.one();
    let resp = p.response();
    assert_eq!((resp.itt, resp.status), (itt, 0x02));
    assert_eq!(sense_of(&p), (0x03, 0x11, 0x00));
    r.statsn_is(resp.statsn);
}

// --------------------------------------------------------------- write path

#[test]
fn write10_with_immediate_data_only_needs_no_r2t() {
    let mut r = Rig::ready(&Keys::default());
    let data = pattern(4096, 7);
    let mut cdb = write10(40, 8);
    cdb[1] = 0x08; // FUA
    let itt = r.scsi(cdb, 4096, false, true, &data, true);
    r.nothing(); // no R2T
    let req = r.disk();
    assert_eq!(req.offset, 40 * u64::from(BS));
    let DiskOp::Write { buf, fua } = req.op else {
        panic!("expected a write, got {:?}", req.op);
    };
    assert!(fua, "FUA reaches the disk request");
    assert_eq!(&buf[..], &data[..], "exactly the immediate data");
    r.disk_done(req.task, 4096, Some(buf));
    let p = r.one();
    let resp = p.response();
    assert_eq!((resp.itt, resp.response, resp.status), (itt, 0, 0));
    assert_eq!(resp.data_segment_len, 0);
    assert!(!resp.residual_overflow && !resp.residual_underflow);
    assert_eq!(resp.exp_data_sn, 0, "no R2T was sent");
    r.statsn_is(resp.statsn);
}

/// A write whose data comes in answer to R2Ts: MaxBurstLength 16 KiB,
/// MaxOutstandingR2T 2, target MRDSL 8 KiB, 8 KiB of immediate data.
#[test]
fn write10_with_r2ts_honours_burst_and_outstanding_limits() {
    let keys = Keys {
        max_burst: 16384,
        first_burst: 16384,
        initial_r2t: true,
        immediate_data: true,
        max_r2t: 2,
        ..Keys::default()
    };
    let mut r = Rig::ready(&keys);
    let total = 130 * BS as usize; // 66560
    let data = pattern(total, 11);
    let imm = TARGET_MRDSL as usize;
    let itt = r.scsi(
        write10(1000, 130),
        total as u32,
        false,
        true,
        &data[..imm],
        true,
    );
    assert!(r.conn.next_disk().is_none());
    let out = r.output();
    assert_eq!(out.len(), 2, "MaxOutstandingR2T=2: {out:?}");
    let mut r2ts: Vec<R2t> = out.iter().map(Pdu::r2t).collect();
    let expect = [(0, 8192, 16384), (1, 24576, 16384)];
    for (t, (sn, off, len)) in r2ts.iter().zip(expect) {
        assert_eq!(
            (t.r2tsn, t.buffer_offset, t.desired_data_transfer_length),
            (sn, off, len)
        );
        assert_eq!((t.itt, t.lun), (itt, LUN0));
        assert_ne!(t.ttt, RESERVED_TAG);
        assert_eq!(t.statsn, r.statsn, "R2T carries, not consumes, StatSN");
        assert_eq!(t.data_segment_len, 0);
    }
    assert_ne!(r2ts[0].ttt, r2ts[1].ttt, "distinct TTTs");

    // Answer each burst in MRDSL-sized Data-Out PDUs, oldest R2T first; each
    // completed burst frees exactly one R2T slot.
    let mut next = vec![(2, 40960, 16384), (3, 57344, 9216)];
    let mut seen_sn = 2;
    while !r2ts.is_empty() {
        let t = r2ts.remove(0);
        let (start, len) = (
            t.buffer_offset as usize,
            t.desired_data_transfer_length as usize,
        );
        let mut sn = 0;
        let mut off = start;
        while off < start + len {
            let n = (start + len - off).min(TARGET_MRDSL as usize);
            let fin = off + n == start + len;
            r.data_out(itt, t.ttt, sn, off as u32, &data[off..off + n], fin);
            let out = r.output();
            if !fin {
                assert!(out.is_empty(), "no R2T before the burst completes: {out:?}");
            } else if !next.is_empty() {
                assert_eq!(out.len(), 1, "one R2T per completed burst: {out:?}");
                let nt = out[0].r2t();
                let (esn, eoff, elen) = next.remove(0);
                assert_eq!(
                    (nt.r2tsn, nt.buffer_offset, nt.desired_data_transfer_length),
                    (esn, eoff, elen)
                );
                assert!(nt.desired_data_transfer_length <= 16384);
                assert_eq!(nt.itt, itt);
                assert!(r2ts.iter().all(|o| o.ttt != nt.ttt));
                seen_sn += 1;
                r2ts.push(nt);
                assert!(r2ts.len() <= 2, "MaxOutstandingR2T");
            } else {
                assert!(out.is_empty(), "{out:?}");
            }
            sn += 1;
            off += n;
        }
        if !r2ts.is_empty() || !next.is_empty() {
            assert!(r.conn.next_disk().is_none(), "no write before all data");
        }
    }
    assert_eq!(seen_sn, 4);
    let req = r.disk();
    assert_eq!(req.offset, 1000 * u64::from(BS));
    let DiskOp::Write { buf, fua } = req.op else {
        panic!("expected a write, got {:?}", req.op);
    };
    assert!(!fua);
    assert_eq!(buf.len(), total);
    assert!(
        buf[..] == data[..],
        "the write carries exactly the Data-Out bytes"
    );
    r.disk_done(req.task, total as i32, Some(buf));
    let p = r.one();
    let resp = p.response();
    assert_eq!((resp.itt, resp.status), (itt, 0));
    assert_eq!(resp.exp_data_sn, 4, "ExpDataSN counts the R2Ts");
    r.statsn_is(resp.statsn);
}

/// InitialR2T=No: immediate data, then unsolicited Data-Out up to
/// FirstBurstLength, then R2Ts for the rest.
#[test]
fn write10_with_unsolicited_data_out_then_r2t() {
    let keys = Keys {
        max_burst: 65536,
        first_burst: 16384,
        initial_r2t: false,
        immediate_data: true,
        max_r2t: 1,
        ..Keys::default()
    };
    let mut r = Rig::ready(&keys);
    assert!(!r.params().initial_r2t);
    let total = 32768usize;
    let data = pattern(total, 21);
    let itt = r.scsi(
        write10(8, 64),
        total as u32,
        false,
        true,
        &data[..4096],
        false,
    );
    r.nothing(); // waits for the unsolicited burst
    r.data_out(itt, RESERVED_TAG, 0, 4096, &data[4096..12288], false);
    r.nothing();
    r.data_out(itt, RESERVED_TAG, 1, 12288, &data[12288..16384], true);
    let t = r.one().r2t();
    assert_eq!(
        (t.r2tsn, t.buffer_offset, t.desired_data_transfer_length),
        (0, 16384, 16384)
    );
    r.data_out(itt, t.ttt, 0, 16384, &data[16384..24576], false);
    r.data_out(itt, t.ttt, 1, 24576, &data[24576..], true);
    r.nothing();
    let req = r.disk();
    let DiskOp::Write { buf, .. } = req.op else {
        panic!("write");
    };
    assert!(buf[..] == data[..]);
    r.disk_done(req.task, total as i32, Some(buf));
    let resp = r.one().response();
    assert_eq!((resp.itt, resp.status, resp.exp_data_sn), (itt, 0, 1));
    r.statsn_is(resp.statsn);
}

#[test]
fn write_disk_error_is_check_condition_medium_error() {
    let mut r = Rig::ready(&Keys::default());
    let data = pattern(1024, 2);
    let itt = r.scsi(write10(0, 2), 1024, false, true, &data, true);
    let req = r.disk();
    let DiskOp::Write { buf, .. } = req.op else {
        panic!("write");
    };
    r.disk_done(req.task, -ENOSPC, Some(buf));
    let p = r.one();
    let resp = p.response();
    assert_eq!((resp.itt, resp.status), (itt, 0x02));
    assert_eq!(
        sense_of(&p),
        (0x03, 0x0c, 0x00),
        "MEDIUM ERROR, WRITE ERROR"
    );
    r.statsn_is(resp.statsn);
}

#[test]
fn a_write_refused_at_the_write_fence_is_not_ready_transitioning() {
    // The core refuses to submit a write past the member's write fence
    // (its lease ran out) and hands it back with -ESTALE.
    let mut r = Rig::ready(&Keys::default());
    let data = pattern(1024, 2);
    let itt = r.scsi(write10(0, 2), 1024, false, true, &data, true);
    let req = r.disk();
    let DiskOp::Write { buf, .. } = req.op else {
        panic!("write");
    };
    r.disk_done(req.task, -libc::ESTALE, Some(buf));
    let p = r.one();
    let resp = p.response();
    assert_eq!((resp.itt, resp.status), (itt, 0x02));
    assert_eq!(
        sense_of(&p),
        (0x02, 0x04, 0x0A),
        "NOT READY, ASYMMETRIC ACCESS STATE TRANSITION: hosts retry elsewhere"
    );
}

/// A Data-Out sequence error ends the command (ERL 0 has no recovery R2T)
/// with CHECK CONDITION, ABORTED COMMAND and the iSCSI ASC/ASCQ of RFC 7143
/// §11.4.7.2; nothing is written, the connection goes on, and later Data-Out
/// for the ended task is dropped.
fn data_out_fault(r: &mut Rig, itt: u32, ttt: u32, sense: (u8, u8, u8), exp_data_sn: u32) {
    let p = r.one();
    let resp = p.response();
    assert_eq!((resp.itt, resp.response, resp.status), (itt, 0, 0x02));
    assert_eq!(sense_of(&p), sense);
    assert_eq!(resp.exp_data_sn, exp_data_sn);
    r.statsn_is(resp.statsn);
    assert!(r.conn.next_disk().is_none(), "nothing is written");
    assert_eq!(r.conn.task_count(), 0);
    assert!(!r.conn.should_close());
    r.data_out(itt, ttt, 0, 0, &[0u8; 512], true);
    r.nothing();
    assert!(!r.conn.should_close());
    r.ping();
}

#[test]
fn data_out_with_wrong_datasn_ends_the_command() {
    let mut r = Rig::ready(&Keys::default());
    let (itt, t) = write_waiting_for_r2t(&mut r);
    r.data_out(itt, t.ttt, 1, 0, &[0u8; 4096], false);
    data_out_fault(&mut r, itt, t.ttt, (0x0b, 0x4b, 0x00), 1);
}

#[test]
fn data_out_with_unknown_ttt_ends_the_command() {
    let mut r = Rig::ready(&Keys::default());
    let (itt, t) = write_waiting_for_r2t(&mut r);
    r.data_out(itt, t.ttt ^ 0x5555, 0, 0, &[0u8; 4096], false);
    data_out_fault(&mut r, itt, t.ttt, (0x0b, 0x4b, 0x01), 1);
}

#[test]
fn data_out_outside_its_r2t_ends_the_command() {
    let mut r = Rig::ready(&Keys::default());
    let (itt, t) = write_waiting_for_r2t(&mut r);
    r.data_out(itt, t.ttt, 0, 4096, &[0u8; 8192], false);
    data_out_fault(&mut r, itt, t.ttt, (0x0b, 0x4b, 0x05), 1);
}

#[test]
fn data_out_with_wrapping_buffer_offset_ends_the_command() {
    let mut r = Rig::ready(&Keys::default());
    let (itt, t) = write_waiting_for_r2t(&mut r);
    r.data_out(itt, t.ttt, 0, u32::MAX - 15, &[0u8; 512], false);
    data_out_fault(&mut r, itt, t.ttt, (0x0b, 0x4b, 0x05), 1);
}

#[test]
fn unsolicited_data_out_with_wrong_datasn_ends_the_command() {
    let keys = Keys {
        initial_r2t: false,
        first_burst: 16384,
        ..Keys::default()
    };
    let mut r = Rig::ready(&keys);
    let itt = r.scsi(write10(0, 32), 16384, false, true, &[0u8; 4096], false);
    r.nothing();
    r.data_out(itt, RESERVED_TAG, 3, 4096, &[0u8; 4096], false);
    data_out_fault(&mut r, itt, RESERVED_TAG, (0x0b, 0x4b, 0x00), 0);
}

#[test]
fn unsolicited_data_out_beyond_first_burst_ends_the_command() {
    let keys = Keys {
        initial_r2t: false,
        first_burst: 8192,
        ..Keys::default()
    };
    let mut r = Rig::ready(&keys);
    let itt = r.scsi(write10(0, 32), 16384, false, true, &[0u8; 4096], false);
    r.data_out(itt, RESERVED_TAG, 0, 4096, &[0u8; 8192], false);
    data_out_fault(&mut r, itt, RESERVED_TAG, (0x0b, 0x0c, 0x0c), 0);
}

#[test]
fn unsolicited_data_out_with_wrapping_buffer_offset_ends_the_command() {
    let keys = Keys {
        initial_r2t: false,
        first_burst: 16384,
        ..Keys::default()
    };
    let mut r = Rig::ready(&keys);
    let itt = r.scsi(write10(0, 32), 16384, false, true, &[0u8; 4096], false);
    r.data_out(itt, RESERVED_TAG, 0, u32::MAX - 15, &[0u8; 512], false);
    data_out_fault(&mut r, itt, RESERVED_TAG, (0x0b, 0x4b, 0x05), 0);
}
