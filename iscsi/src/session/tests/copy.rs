//! Session tests of EXTENDED COPY: segments copied chunk by chunk through
//! one pool buffer between two LUNs of the session, then RECEIVE COPY
//! RESULTS, on the rig of `tests.rs`.

use super::*;

const NAA1: [u8; 16] = [0x60, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 1];

/// A rig whose target has a second LUN (wire LUN 1, store slot 1).
fn two_luns() -> Rig {
    let mut r = Rig::new(0x1000);
    let mut table = (*r.host.luns).clone();
    let mut dev = (*table.luns[0].dev).clone();
    dev.naa = NAA1;
    table.luns.push(LunEntry {
        lun: 1 << 48,
        dev: Rc::new(dev),
        slot: 1,
        shared: std::sync::Arc::new(LunShared::new()),
        sanitize: std::sync::Arc::default(),
    });
    table.ids.push(1);
    r.host.luns = Rc::new(table);
    r.login(&Keys::default());
    r.clear_ua();
    r
}

fn target(naa: [u8; 16]) -> Vec<u8> {
    let mut d = vec![0u8; 32];
    d[0] = 0xE4;
    d[4] = 0x01;
    d[5] = 0x03;
    d[7] = 16;
    d[8..24].copy_from_slice(&naa);
    d[29..32].copy_from_slice(&BS.to_be_bytes()[1..]);
    d
}

/// A parameter list copying `blocks` from LUN 0 at `src` to LUN 1 at `dst`.
fn params(r: &Rig, list_id: u8, blocks: u16, src: u64, dst: u64) -> Vec<u8> {
    let mut seg = vec![0u8; 28];
    seg[0] = 0x02;
    seg[3] = 0x18;
    seg[7] = 1; // destination: target descriptor 1
    seg[10..12].copy_from_slice(&blocks.to_be_bytes());
    seg[12..20].copy_from_slice(&src.to_be_bytes());
    seg[20..28].copy_from_slice(&dst.to_be_bytes());
    let mut d = vec![0u8; 16];
    d[0] = list_id;
    d[3] = 64;
    d[11] = 28;
    d.extend_from_slice(&target(r.host.luns.luns[0].dev.naa));
    d.extend_from_slice(&target(NAA1));
    d.extend_from_slice(&seg);
    d
}

fn xcopy(len: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x83;
    c[10..14].copy_from_slice(&len.to_be_bytes());
    c
}

fn copy_status(list_id: u8) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x84;
    c[2] = list_id;
    c[13] = 64;
    c
}

#[test]
fn extended_copy_reads_then_writes_each_chunk_and_holds_the_result() {
    let mut r = two_luns();
    let blocks = 300u16; // 150 KiB: two chunks through the 128 KiB buffer
    let p = params(&r, 5, blocks, 10, 20);
    let itt = r.scsi(xcopy(p.len() as u32), p.len() as u32, false, true, &p, true);
    let mut copied = 0u64;
    let mut reads = 0;
    while copied < u64::from(blocks) {
        let req = r.disk();
        assert_eq!(req.slot, 0, "reads the source LUN");
        assert_eq!(req.offset, (10 + copied) * u64::from(BS));
        let DiskOp::Read(mut buf) = req.op else {
            panic!("a read first: {:?}", req.op)
        };
        let n = buf.len();
        buf.fill(0x40 + reads);
        reads += 1;
        r.disk_done(req.task, n as i32, Some(buf));
        let req = r.disk();
        assert_eq!(req.slot, 1, "writes the destination LUN");
        assert_eq!(req.offset, (20 + copied) * u64::from(BS));
        let DiskOp::Write { buf, fua } = req.op else {
            panic!("then a write: {:?}", req.op)
        };
        assert!(!fua);
        assert_eq!(buf.len(), n);
        assert!(buf.iter().all(|b| *b == 0x40 + reads - 1));
        r.disk_done(req.task, n as i32, Some(buf));
        copied += n as u64 / u64::from(BS);
    }
    assert_eq!((copied, reads), (300, 2));
    let resp = r.one().response();
    r.statsn_is(resp.statsn);
    assert_eq!((resp.itt, resp.status), (itt, 0));

    let itt = r.scsi(copy_status(5), 64, true, false, &[], true);
    let out = r.output();
    let data: Vec<u8> = out.iter().flat_map(|p| p.data.clone()).collect();
    let last = out.last().expect("a response").data_in();
    r.statsn_is(last.statsn);
    assert_eq!(last.itt, itt);
    let bytes = 300 * BS;
    let mut want = vec![0, 0, 0, 8, 0, 0, 1, 0];
    want.extend_from_slice(&bytes.to_be_bytes());
    assert_eq!(data, want);
}

#[test]
fn extended_copy_to_an_unknown_device_is_aborted() {
    let mut r = two_luns();
    let mut p = params(&r, 1, 8, 0, 0);
    p[16 + 32 + 23] ^= 0xFF; // second designator names no LUN
    let itt = r.scsi(xcopy(p.len() as u32), p.len() as u32, false, true, &p, true);
    let out = r.one();
    let resp = out.response();
    r.statsn_is(resp.statsn);
    assert_eq!((resp.itt, resp.status), (itt, 0x02));
    assert_eq!(sense_of(&out), (0x0A, 0x0D, 0x02));
    assert!(r.conn.next_disk().is_none());
    // Nothing held for the list.
    let itt = r.scsi(copy_status(1), 64, true, false, &[], true);
    let out = r.one();
    let resp = out.response();
    r.statsn_is(resp.statsn);
    assert_eq!((resp.itt, resp.status), (itt, 0x02));
    assert_eq!(sense_of(&out), (0x05, 0x24, 0x00));
}

#[test]
fn a_copy_into_blocks_a_compare_and_write_holds_waits_for_it() {
    let mut a = two_luns();
    let mut b = a.sharing();
    // B's COMPARE AND WRITE of LUN 0 block 20 is reading.
    let mut caw = [0u8; 16];
    caw[0] = 0x89;
    caw[2..10].copy_from_slice(&20u64.to_be_bytes());
    caw[13] = 1;
    let mut data = vec![0u8; 512];
    data.extend_from_slice(&[7; 512]);
    let caw_itt = b.scsi(caw, 1024, false, true, &data, true);
    let read = b.disk();
    // A copies LUN 1 blocks 0..4 onto LUN 0 blocks 18..22: the target
    // descriptors swapped, so the segment's source is LUN 1.
    let mut p = params(&a, 6, 4, 0, 18);
    let (first, second) = (16..48, 48..80);
    let t0 = p[first.clone()].to_vec();
    let t1 = p[second.clone()].to_vec();
    p[first].copy_from_slice(&t1);
    p[second].copy_from_slice(&t0);
    a.scsi(xcopy(p.len() as u32), p.len() as u32, false, true, &p, true);
    assert!(a.conn.next_disk().is_none(), "the copy waits for the CAW");
    // The CAW ends; A's core is woken and the copy starts.
    let DiskOp::Read(mut medium) = read.op else {
        panic!("read")
    };
    medium.fill(0);
    b.disk_done(read.task, 512, Some(medium));
    let w = b.disk();
    let DiskOp::Write { buf, .. } = w.op else {
        panic!("CAW write")
    };
    b.disk_done(w.task, 512, Some(buf));
    assert_eq!(status(&mut b, caw_itt), GOOD);
    a.conn.poll_shared();
    let r = a.disk();
    assert_eq!((r.slot, r.offset), (1, 0), "the copy reads LUN 1 block 0");
}

/// The destination LUN is remapped to another unit while a copy runs: the
/// session keeps its table (and so the copy keeps its units) until the copy
/// is done, and only then picks up the new unit.
#[test]
fn a_copy_keeps_its_units_across_a_reconfiguration() {
    let mut r = two_luns();
    let p = params(&r, 6, 300, 10, 20);
    let itt = r.scsi(xcopy(p.len() as u32), p.len() as u32, false, true, &p, true);
    let first = r.disk();
    assert_eq!(first.slot, 0);
    // LUN 1 now names another unit, on another store slot.
    let mut table = (*r.host.luns).clone();
    table.luns[1].slot = 2;
    table.luns[1].shared = std::sync::Arc::new(LunShared::new());
    r.host.luns = Rc::new(table);
    r.host.generation += 1;
    // A command arrives meanwhile (the rebuild is tried there).
    let t = r.scsi([0; 16], 0, false, false, &[], true);
    assert_eq!(status(&mut r, t), GOOD);
    // Every write of the copy still goes to the unit it started with.
    let mut next = Some(first);
    let mut chunks = 0;
    while let Some(req) = next.take() {
        let DiskOp::Read(buf) = req.op else {
            panic!("a read: {:?}", req.op)
        };
        let n = buf.len();
        r.disk_done(req.task, n as i32, Some(buf));
        let w = r.disk();
        assert_eq!(w.slot, 1, "the destination the copy started with");
        let DiskOp::Write { buf, .. } = w.op else {
            panic!("a write: {:?}", w.op)
        };
        r.disk_done(w.task, n as i32, Some(buf));
        chunks += 1;
        next = r.conn.next_disk();
    }
    assert_eq!(chunks, 2);
    let resp = r.one().response();
    r.statsn_is(resp.statsn);
    assert_eq!((resp.itt, resp.status), (itt, 0));
    // Done: the next command sees the new unit, whose nexus starts fresh.
    let mut c = [0u8; 16];
    c[0] = 0x28;
    c[8] = 1;
    let t = r.scsi_lun(1 << 48, c, 512, true, false, &[], true);
    assert_eq!(
        status(&mut r, t).1.map(|s| s.0),
        Some(0x06),
        "POWER ON for the new unit"
    );
    r.scsi_lun(1 << 48, c, 512, true, false, &[], true);
    assert_eq!(r.disk().slot, 2, "reads go to the new unit now");
}
