//! Logical block provisioning (SBC-3 4.7): WRITE SAME (10)/(16), UNMAP and
//! GET LBA STATUS, and the limits VPD page B0h reports for them.
//!
//! ```text
//! WRITE SAME ── Io(WriteSame{unmap, ndob}) ── session: one block ─┬ zeros + UNMAP (thin) ─> punch hole
//!                                                                 ├ zeros ──────────────> zero range
//!                                                                 └ pattern ────────────> replicated writes
//! UNMAP ── DataOut{len} ── unmap_parameters ── Action::Unmap(ranges) ─> punch holes
//! GET LBA STATUS ── Io(LbaStatus) ── session: extent at LBA ─> lba_status(..)
//! ```

use super::block::out_of_range;
use super::cdb::{be, be16, be32, decode_rw, ndob, Cdb, RwLayout};
use super::sense::{Sense, SenseKey};
use super::{Action, Completion, IoOp, IoRequest, LunDevice};

/// MAXIMUM UNMAP LBA COUNT (VPD B0h) of thin devices.
pub(crate) const MAX_UNMAP_LBA_COUNT: u32 = 0x0004_0000;
/// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT (VPD B0h) of thin devices.
pub(crate) const MAX_UNMAP_DESCRIPTORS: u32 = 256;
/// MAXIMUM WRITE SAME LENGTH (VPD B0h), in blocks: what WRITE SAME(10) can
/// express. It bounds how long one command replicating a pattern runs
/// (256 MiB of writes at 4 KiB blocks); larger ranges take several commands.
pub(crate) const MAX_WRITE_SAME_BLOCKS: u32 = 0xFFFF;

/// Length of GET LBA STATUS parameter data with one descriptor.
pub(crate) const LBA_STATUS_LEN: u32 = 8 + 16;

/// UNMAP parameter list header length.
const UNMAP_HEADER_LEN: usize = 8;
/// UNMAP block descriptor length.
const UNMAP_DESCRIPTOR_LEN: usize = 16;

/// WRITE SAME (10)/(16). ANCHOR and WRPROTECT were refused by the usage map;
/// NUMBER OF LOGICAL BLOCKS 0 is refused (WSNZ = 1 in VPD B0h). The
/// expected data transfer length `edtl` must be exactly one block (0 with
/// NDOB): a partial block cannot be replicated.
pub(crate) fn write_same(
    layout: RwLayout,
    c: &Cdb,
    dev: &LunDevice,
    edtl: u32,
) -> Result<Action, Sense> {
    let rw = decode_rw(layout, c);
    let unmap = c[1] & 0x08 != 0;
    if dev.read_only {
        return Err(Sense::write_protected());
    }
    let block = if ndob(c) { 0 } else { dev.block_size };
    if edtl != block {
        return Err(Sense::new(SenseKey::IllegalRequest, 0x24, 0x00));
    }
    if out_of_range(rw.lba, rw.blocks, dev.num_blocks) {
        return Err(Sense::lba_out_of_range());
    }
    if unmap && !dev.thin {
        // LBPWS/LBPWS10 = 0: unmapping through WRITE SAME is not supported.
        return Err(Sense::invalid_field_in_cdb(1, 3));
    }
    if rw.blocks == 0 {
        return Err(Sense::invalid_field_in_cdb(layout.length_at(), 7));
    }
    let blocks = rw.blocks;
    if blocks > MAX_WRITE_SAME_BLOCKS {
        return Err(Sense::invalid_field_in_cdb(layout.length_at(), 7));
    }
    Ok(Action::Io(IoRequest {
        op: IoOp::WriteSame {
            unmap,
            ndob: ndob(c),
        },
        lba: rw.lba,
        blocks,
        fua: false,
    }))
}

/// UNMAP CDB: collect the parameter list (ANCHOR was refused by the usage map).
pub(crate) fn unmap(c: &Cdb, dev: &LunDevice) -> Result<Action, Sense> {
    if dev.read_only {
        return Err(Sense::write_protected());
    }
    match be16(c, 7) {
        0 => Ok(Action::Complete(Completion::good())),
        len => Ok(Action::DataOut {
            len: u32::from(len),
        }),
    }
}

/// UNMAP parameter list: the ranges to deallocate, validated against the
/// medium and the VPD B0h limits (descriptors of zero blocks are skipped).
pub(crate) fn unmap_parameters(data: &[u8], dev: &LunDevice) -> Result<Action, Sense> {
    if data.is_empty() {
        return Ok(Action::Complete(Completion::good()));
    }
    if data.len() < UNMAP_HEADER_LEN {
        return Err(Sense::parameter_list_length_error());
    }
    let described = usize::from(be16(data, 2));
    let descriptors = &data[UNMAP_HEADER_LEN..];
    let n = described.min(descriptors.len()) / UNMAP_DESCRIPTOR_LEN;
    if n > MAX_UNMAP_DESCRIPTORS as usize {
        return Err(Sense::invalid_field_in_parameter_list(2, 7));
    }
    let mut ranges = Vec::with_capacity(n);
    for (i, d) in descriptors
        .chunks_exact(UNMAP_DESCRIPTOR_LEN)
        .take(n)
        .enumerate()
    {
        let lba = be(d, 0, 8);
        let blocks = be32(d, 8);
        if out_of_range(lba, blocks, dev.num_blocks) {
            return Err(Sense::lba_out_of_range());
        }
        if blocks > MAX_UNMAP_LBA_COUNT {
            let at = UNMAP_HEADER_LEN + i * UNMAP_DESCRIPTOR_LEN + 8;
            return Err(Sense::invalid_field_in_parameter_list(at as u16, 7));
        }
        if blocks > 0 {
            ranges.push((lba, blocks));
        }
    }
    if ranges.is_empty() {
        return Ok(Action::Complete(Completion::good()));
    }
    Ok(Action::Unmap(ranges))
}

/// GET LBA STATUS (SERVICE ACTION IN(16), 12h): the session finds the
/// allocation extent at the LBA and answers with [`lba_status`].
pub(crate) fn get_lba_status(c: &Cdb, dev: &LunDevice) -> Result<Action, Sense> {
    let lba = be(c, 2, 8);
    let alloc = be32(c, 10);
    if lba >= dev.num_blocks {
        return Err(Sense::lba_out_of_range());
    }
    if alloc == 0 {
        return Ok(Action::Complete(Completion::good()));
    }
    Ok(Action::Io(IoRequest {
        op: IoOp::LbaStatus { alloc },
        lba,
        blocks: 0,
        fua: false,
    }))
}

/// GET LBA STATUS parameter data: one descriptor saying that `bytes` from
/// `lba` are mapped (or deallocated), rounded to whole blocks and clipped to
/// the medium, truncated to the allocation length `alloc`.
pub fn lba_status(dev: &LunDevice, lba: u64, mapped: bool, bytes: u64, alloc: u32) -> Completion {
    let bs = u64::from(dev.block_size.max(1));
    // A partly mapped block counts as mapped: round holes in, data out.
    let blocks = if mapped {
        bytes.div_ceil(bs)
    } else {
        bytes / bs
    };
    let (mapped, blocks) = if blocks == 0 {
        (true, 1)
    } else {
        (mapped, blocks)
    };
    let left = dev.num_blocks.saturating_sub(lba).max(1);
    let blocks = u32::try_from(blocks.min(left)).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(LBA_STATUS_LEN as usize);
    out.extend_from_slice(&(LBA_STATUS_LEN - 4).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&lba.to_be_bytes());
    out.extend_from_slice(&blocks.to_be_bytes());
    // PROVISIONING STATUS: 0h mapped, 1h deallocated.
    out.push(if mapped { 0x0 } else { 0x1 });
    out.extend_from_slice(&[0; 3]);
    out.truncate(alloc as usize);
    Completion::with_data(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::cdb::pad;
    use crate::scsi::dispatch::tests::disk;

    fn thin(bs: u32, n: u64) -> LunDevice {
        LunDevice {
            thin: true,
            holes_read_zero: true,
            ..disk(bs, n)
        }
    }

    fn ws10(b1: u8, lba: u32, n: u16) -> Cdb {
        let mut c = [0u8; 16];
        c[0] = 0x41;
        c[1] = b1;
        c[2..6].copy_from_slice(&lba.to_be_bytes());
        c[7..9].copy_from_slice(&n.to_be_bytes());
        c
    }

    fn ws16(b1: u8, lba: u64, n: u32) -> Cdb {
        let mut c = [0u8; 16];
        c[0] = 0x93;
        c[1] = b1;
        c[2..10].copy_from_slice(&lba.to_be_bytes());
        c[10..14].copy_from_slice(&n.to_be_bytes());
        c
    }

    fn same(unmap: bool, ndob: bool, lba: u64, blocks: u32) -> Result<Action, Sense> {
        Ok(Action::Io(IoRequest {
            op: IoOp::WriteSame { unmap, ndob },
            lba,
            blocks,
            fua: false,
        }))
    }

    #[test]
    fn write_same_table() {
        let t = thin(512, 1000);
        let thick = disk(512, 1000);
        let big = thin(512, 1 << 40);
        let ro = LunDevice {
            read_only: true,
            ..thin(512, 1000)
        };
        let table: Vec<(RwLayout, Cdb, &LunDevice, Result<Action, Sense>)> = vec![
            (RwLayout::Ten, ws10(0, 0, 8), &t, same(false, false, 0, 8)),
            (
                RwLayout::Ten,
                ws10(0x08, 990, 10),
                &t,
                same(true, false, 990, 10),
            ),
            (
                RwLayout::Ten,
                ws10(0, 991, 10),
                &t,
                Err(Sense::lba_out_of_range()),
            ),
            (
                RwLayout::Ten,
                ws10(0, 1001, 0),
                &t,
                Err(Sense::lba_out_of_range()),
            ),
            // 0 blocks: refused (WSNZ = 1).
            (
                RwLayout::Ten,
                ws10(0, 900, 0),
                &t,
                Err(Sense::invalid_field_in_cdb(7, 7)),
            ),
            (
                RwLayout::Ten,
                ws10(0x08, 0, 1),
                &thick,
                Err(Sense::invalid_field_in_cdb(1, 3)),
            ),
            (
                RwLayout::Ten,
                ws10(0, 0, 1),
                &thick,
                same(false, false, 0, 1),
            ),
            (
                RwLayout::Ten,
                ws10(0, 0, 1),
                &ro,
                Err(Sense::write_protected()),
            ),
            (
                RwLayout::Sixteen,
                ws16(0x09, 5, 3),
                &t,
                same(true, true, 5, 3),
            ),
            (
                RwLayout::Sixteen,
                ws16(0x01, 5, 3),
                &t,
                same(false, true, 5, 3),
            ),
            (
                RwLayout::Sixteen,
                ws16(0, 0, MAX_WRITE_SAME_BLOCKS + 1),
                &big,
                Err(Sense::invalid_field_in_cdb(10, 7)),
            ),
            (
                RwLayout::Sixteen,
                ws16(0, 0, MAX_WRITE_SAME_BLOCKS),
                &big,
                same(false, false, 0, MAX_WRITE_SAME_BLOCKS),
            ),
            // To the end of a big medium exceeds the limit.
            (
                RwLayout::Sixteen,
                ws16(0, 0, 0),
                &big,
                Err(Sense::invalid_field_in_cdb(10, 7)),
            ),
        ];
        for (i, (l, c, d, want)) in table.into_iter().enumerate() {
            let edtl = if ndob(&c) { 0 } else { 512 };
            assert_eq!(write_same(l, &c, d, edtl), want, "row {i}");
        }
        // Data-out of anything but one block (none with NDOB) is refused.
        let bad = Err(Sense::new(SenseKey::IllegalRequest, 0x24, 0x00));
        for (c, edtl) in [
            (ws10(0, 0, 1), 256),
            (ws10(0, 0, 1), 1024),
            (ws10(0, 0, 1), 0),
        ] {
            assert_eq!(write_same(RwLayout::Ten, &c, &t, edtl), bad, "{edtl}");
        }
        assert_eq!(
            write_same(RwLayout::Sixteen, &ws16(0x01, 0, 1), &t, 512),
            bad
        );
    }

    fn unmap_list(descs: &[(u64, u32)]) -> Vec<u8> {
        let mut d = vec![0u8; 8];
        d[0..2].copy_from_slice(&((6 + 16 * descs.len()) as u16).to_be_bytes());
        d[2..4].copy_from_slice(&((16 * descs.len()) as u16).to_be_bytes());
        for (lba, n) in descs {
            d.extend_from_slice(&lba.to_be_bytes());
            d.extend_from_slice(&n.to_be_bytes());
            d.extend_from_slice(&[0; 4]);
        }
        d
    }

    #[test]
    fn unmap_cdb_and_parameters() {
        let t = thin(512, 1000);
        let c = pad(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0]);
        assert_eq!(unmap(&c, &t), Ok(Action::DataOut { len: 24 }));
        let c0 = pad(&[0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(unmap(&c0, &t), Ok(Action::Complete(Completion::good())));
        let ro = LunDevice {
            read_only: true,
            ..thin(512, 1000)
        };
        assert_eq!(unmap(&c, &ro), Err(Sense::write_protected()));

        let good = Ok(Action::Complete(Completion::good()));
        let table: Vec<(Vec<u8>, Result<Action, Sense>)> = vec![
            (vec![], good.clone()),
            (vec![0, 6, 0], Err(Sense::parameter_list_length_error())),
            (unmap_list(&[]), good.clone()),
            (unmap_list(&[(0, 0)]), good.clone()),
            (
                unmap_list(&[(0, 8), (992, 8)]),
                Ok(Action::Unmap(vec![(0, 8), (992, 8)])),
            ),
            (
                unmap_list(&[(5, 0), (7, 1)]),
                Ok(Action::Unmap(vec![(7, 1)])),
            ),
            (unmap_list(&[(993, 8)]), Err(Sense::lba_out_of_range())),
            (unmap_list(&[(1001, 0)]), Err(Sense::lba_out_of_range())),
        ];
        for (i, (data, want)) in table.into_iter().enumerate() {
            assert_eq!(unmap_parameters(&data, &t), want, "row {i}");
        }
        // Descriptors beyond BLOCK DESCRIPTOR DATA LENGTH are ignored.
        let mut d = unmap_list(&[(0, 1), (1, 1)]);
        d[2..4].copy_from_slice(&16u16.to_be_bytes());
        assert_eq!(unmap_parameters(&d, &t), Ok(Action::Unmap(vec![(0, 1)])));
        // Limits.
        let big = thin(512, 1 << 30);
        let d = unmap_list(&[(0, MAX_UNMAP_LBA_COUNT + 1)]);
        assert_eq!(
            unmap_parameters(&d, &big),
            Err(Sense::invalid_field_in_parameter_list(16, 7))
        );
        let many: Vec<(u64, u32)> = (0..=u64::from(MAX_UNMAP_DESCRIPTORS))
            .map(|i| (i, 1))
            .collect();
        assert_eq!(
            unmap_parameters(&unmap_list(&many), &big),
            Err(Sense::invalid_field_in_parameter_list(2, 7))
        );
    }

    fn glbas(lba: u64, alloc: u32) -> Cdb {
        let mut c = [0u8; 16];
        c[0] = 0x9E;
        c[1] = 0x12;
        c[2..10].copy_from_slice(&lba.to_be_bytes());
        c[10..14].copy_from_slice(&alloc.to_be_bytes());
        c
    }

    #[test]
    fn get_lba_status_cdb() {
        let t = thin(512, 1000);
        assert_eq!(
            get_lba_status(&glbas(999, 24), &t),
            Ok(Action::Io(IoRequest {
                op: IoOp::LbaStatus { alloc: 24 },
                lba: 999,
                blocks: 0,
                fua: false,
            }))
        );
        assert_eq!(
            get_lba_status(&glbas(1000, 24), &t),
            Err(Sense::lba_out_of_range())
        );
        assert_eq!(
            get_lba_status(&glbas(u64::MAX, 24), &t),
            Err(Sense::lba_out_of_range())
        );
        assert_eq!(
            get_lba_status(&glbas(0, 0), &t),
            Ok(Action::Complete(Completion::good()))
        );
    }

    #[test]
    fn lba_status_bytes() {
        let t = thin(512, 1000);
        let d = lba_status(&t, 8, false, 4096, 64).data;
        assert_eq!(
            d,
            [
                0, 0, 0, 20, 0, 0, 0, 0, //
                0, 0, 0, 0, 0, 0, 0, 8, //
                0, 0, 0, 8, 0x01, 0, 0, 0
            ]
        );
        // Mapped extents round up; holes round down; clipped to the medium.
        assert_eq!(
            &lba_status(&t, 0, true, 513, 64).data[16..21],
            &[0, 0, 0, 2, 0]
        );
        assert_eq!(
            &lba_status(&t, 0, false, 1000, 64).data[16..21],
            &[0, 0, 0, 1, 1]
        );
        assert_eq!(
            &lba_status(&t, 0, false, 100, 64).data[16..21],
            &[0, 0, 0, 1, 0]
        );
        assert_eq!(
            &lba_status(&t, 990, true, 1 << 30, 64).data[16..20],
            &[0, 0, 0, 10]
        );
        // Allocation length truncates.
        assert_eq!(lba_status(&t, 0, true, 512, 8).data.len(), 8);
    }
}
