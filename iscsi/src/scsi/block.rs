//! The media-access hot path (SBC-3): READ, WRITE, WRITE AND VERIFY, VERIFY
//! (6/10/12/16 as defined), SYNCHRONIZE CACHE (10/16), ORWRITE(16), and the
//! range commands PRE-FETCH (10/16) and COMPARE AND WRITE.
//!
//! ```text
//! decode -> BYTCHK check -> write protect -> LBA range -> MAXIMUM TRANSFER LENGTH
//!        -> length 0 / BYTCHK 0: GOOD  |  otherwise: IoRequest for the session
//! ```
//!
//! Nothing here allocates. Reserved bits (RDPROTECT/WRPROTECT/VRPROTECT, ...)
//! were already rejected by the opcode table's usage maps.

use super::cdb::{be, be16, decode_rw, Cdb, RwLayout};
use super::sense::Sense;
use super::{Action, Completion, IoOp, IoRequest, LunDevice};

/// Which media-access command a CDB is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockOp {
    Read,
    Write,
    WriteVerify,
    Verify,
    SyncCache,
    OrWrite,
}

/// True if `lba .. lba + blocks` does not fit in the medium (also when
/// `blocks` is 0 and `lba` lies past the end).
pub(crate) fn out_of_range(lba: u64, blocks: u32, num_blocks: u64) -> bool {
    lba.checked_add(u64::from(blocks))
        .is_none_or(|end| end > num_blocks)
}

/// Runs one media-access command.
pub(crate) fn block_command(
    op: BlockOp,
    layout: RwLayout,
    c: &Cdb,
    dev: &LunDevice,
) -> Result<Action, Sense> {
    let rw = decode_rw(layout, c);

    // VERIFY BYTCHK: 00b no compare, 01b compare; 10b is reserved and 11b
    // (compare one block against every LBA) is not supported.
    if op == BlockOp::Verify && rw.bytchk > 1 {
        return Err(Sense::invalid_field_in_cdb(1, 2));
    }
    if matches!(op, BlockOp::Write | BlockOp::WriteVerify | BlockOp::OrWrite) && dev.read_only {
        return Err(Sense::write_protected());
    }
    if out_of_range(rw.lba, rw.blocks, dev.num_blocks) {
        return Err(Sense::lba_out_of_range());
    }
    if op == BlockOp::SyncCache {
        return Ok(Action::Io(IoRequest {
            op: IoOp::Flush {
                immediate: rw.immed,
            },
            lba: rw.lba,
            blocks: rw.blocks,
            fua: false,
        }));
    }
    if dev.max_transfer_blocks != 0 && rw.blocks > dev.max_transfer_blocks {
        return Err(Sense::invalid_field_in_cdb(layout.length_at(), 7));
    }
    if rw.blocks == 0 || (op == BlockOp::Verify && rw.bytchk == 0) {
        return Ok(Action::Complete(Completion::good()));
    }
    let (io, fua) = match op {
        BlockOp::Read => (IoOp::Read, rw.fua),
        BlockOp::Write => (IoOp::Write, rw.fua),
        BlockOp::OrWrite => (IoOp::OrWrite, rw.fua),
        BlockOp::WriteVerify => (IoOp::WriteVerify, true),
        BlockOp::Verify | BlockOp::SyncCache => (IoOp::Verify { bytchk: true }, false),
    };
    Ok(Action::Io(IoRequest {
        op: io,
        lba: rw.lba,
        blocks: rw.blocks,
        fua,
    }))
}

/// PRE-FETCH (10)/(16): range check only; PREFETCH LENGTH 0 means "to the
/// last LBA" (the request then carries 0 blocks).
pub(crate) fn prefetch(layout: RwLayout, c: &Cdb, dev: &LunDevice) -> Result<Action, Sense> {
    let rw = decode_rw(layout, c);
    if out_of_range(rw.lba, rw.blocks, dev.num_blocks) {
        return Err(Sense::lba_out_of_range());
    }
    if rw.blocks == 0 && rw.lba == dev.num_blocks {
        return Ok(Action::Complete(Completion::good()));
    }
    Ok(Action::Io(IoRequest {
        op: IoOp::Prefetch {
            immediate: rw.immed,
        },
        lba: rw.lba,
        blocks: rw.blocks,
        fua: false,
    }))
}

/// Upper bound of MAXIMUM COMPARE AND WRITE LENGTH. Atomic test-and-set
/// users (VMFS ATS, cluster locks) compare one block; a power of two below
/// 255 also keeps "limit + 1" expressible in the 8-bit CDB field.
const MAX_COMPARE_AND_WRITE_BLOCKS: u8 = 128;

/// MAXIMUM COMPARE AND WRITE LENGTH in blocks (VPD B0h): both halves of the
/// data-out must fit one transfer.
pub(crate) fn max_compare_and_write_blocks(dev: &LunDevice) -> u8 {
    match dev.max_transfer_blocks {
        0 => MAX_COMPARE_AND_WRITE_BLOCKS,
        max => u8::try_from(max / 2)
            .unwrap_or(u8::MAX)
            .min(MAX_COMPARE_AND_WRITE_BLOCKS),
    }
}

/// COMPARE AND WRITE: NUMBER OF LOGICAL BLOCKS is byte 13 (0: nothing to
/// do). Both halves are needed whole, so the expected data transfer length
/// `edtl` must be exactly twice the blocks (0 for 0 blocks).
pub(crate) fn compare_and_write(c: &Cdb, dev: &LunDevice, edtl: u32) -> Result<Action, Sense> {
    let rw = decode_rw(RwLayout::Sixteen, c);
    let blocks = u32::from(c[13]);
    if u64::from(edtl) != 2 * u64::from(blocks) * u64::from(dev.block_size) {
        return Err(Sense::invalid_field_in_cdb(13, 7));
    }
    if dev.read_only {
        return Err(Sense::write_protected());
    }
    if out_of_range(rw.lba, blocks, dev.num_blocks) {
        return Err(Sense::lba_out_of_range());
    }
    if blocks > u32::from(max_compare_and_write_blocks(dev)) {
        return Err(Sense::invalid_field_in_cdb(13, 7));
    }
    if blocks == 0 {
        return Ok(Action::Complete(Completion::good()));
    }
    Ok(Action::Io(IoRequest {
        op: IoOp::CompareAndWrite,
        lba: rw.lba,
        blocks,
        fua: rw.fua,
    }))
}

/// WRITE ATOMIC (16) (SBC-4 5.48): one atomic unit of the store
/// ([`LunDevice::atomic_unit_blocks`], which VPD B0h reports as the maximum
/// atomic transfer length, alignment and granularity), written untorn. No
/// atomic boundary is offered. Linux's RWF_ATOMIC takes only naturally
/// aligned power-of-two writes, which the SBC granularity fields cannot
/// express beyond a single unit.
pub(crate) fn write_atomic(c: &Cdb, dev: &LunDevice) -> Result<Action, Sense> {
    let lba = be(c, 2, 8);
    let boundary = be16(c, 10);
    let blocks = u32::from(be16(c, 12));
    let unit = dev.atomic_unit_blocks;
    if dev.read_only {
        return Err(Sense::write_protected());
    }
    if boundary != 0 {
        return Err(Sense::invalid_field_in_cdb(10, 7));
    }
    if out_of_range(lba, blocks, dev.num_blocks) {
        return Err(Sense::lba_out_of_range());
    }
    if blocks == 0 {
        return Ok(Action::Complete(Completion::good()));
    }
    if unit == 0 || blocks > unit || !blocks.is_multiple_of(unit) {
        return Err(Sense::invalid_field_in_cdb(12, 7));
    }
    if !lba.is_multiple_of(u64::from(unit)) {
        return Err(Sense::invalid_field_in_cdb(2, 7));
    }
    Ok(Action::Io(IoRequest {
        op: IoOp::WriteAtomic,
        lba,
        blocks,
        fua: c[1] & 0x08 != 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::cdb::pad;
    use crate::scsi::cdb::RwLayout::{Six, Sixteen, Ten, Twelve};
    use crate::scsi::dispatch::tests::disk;

    fn cdb10(opcode: u8, b1: u8, lba: u32, len: u16) -> Cdb {
        let mut c = [0u8; 16];
        c[0] = opcode;
        c[1] = b1;
        c[2..6].copy_from_slice(&lba.to_be_bytes());
        c[7..9].copy_from_slice(&len.to_be_bytes());
        c
    }

    fn io(op: IoOp, lba: u64, blocks: u32, fua: bool) -> Result<Action, Sense> {
        Ok(Action::Io(IoRequest {
            op,
            lba,
            blocks,
            fua,
        }))
    }

    #[test]
    fn range_edges() {
        let n = 1000;
        let table = [
            (0, 0, false),
            (999, 1, false),
            (1000, 0, false),
            (1000, 1, true),
            (999, 2, true),
            (1001, 0, true),
            (u64::MAX, 1, true),
            (u64::MAX, 0, true),
        ];
        for (lba, blocks, oob) in table {
            assert_eq!(out_of_range(lba, blocks, n), oob, "{lba} {blocks}");
        }
    }

    #[test]
    fn read_write_table() {
        let dev = disk(512, 1000);
        let ro = LunDevice {
            read_only: true,
            ..disk(512, 1000)
        };
        let good = Ok(Action::Complete(Completion::good()));
        let oob = Err(Sense::lba_out_of_range());
        let t = Ten;
        let table: Vec<(BlockOp, Cdb, &LunDevice, Result<Action, Sense>)> = vec![
            (
                BlockOp::Read,
                cdb10(0x28, 0, 0, 8),
                &dev,
                io(IoOp::Read, 0, 8, false),
            ),
            (
                BlockOp::Read,
                cdb10(0x28, 0x08, 992, 8),
                &dev,
                io(IoOp::Read, 992, 8, true),
            ),
            (BlockOp::Read, cdb10(0x28, 0, 993, 8), &dev, oob.clone()),
            (BlockOp::Read, cdb10(0x28, 0, 1001, 0), &dev, oob.clone()),
            (
                BlockOp::Read,
                cdb10(0x28, 0, 0xFFFF_FFFF, 1),
                &dev,
                oob.clone(),
            ),
            (BlockOp::Read, cdb10(0x28, 0, 5, 0), &dev, good.clone()),
            (
                BlockOp::Read,
                cdb10(0x28, 0, 0, 129),
                &dev,
                Err(Sense::invalid_field_in_cdb(7, 7)),
            ),
            (
                BlockOp::Write,
                cdb10(0x2A, 0x08, 1, 1),
                &dev,
                io(IoOp::Write, 1, 1, true),
            ),
            (
                BlockOp::Write,
                cdb10(0x2A, 0, 1, 1),
                &ro,
                Err(Sense::write_protected()),
            ),
            (
                BlockOp::Read,
                cdb10(0x28, 0, 1, 1),
                &ro,
                io(IoOp::Read, 1, 1, false),
            ),
            (
                BlockOp::WriteVerify,
                cdb10(0x2E, 0x02, 1, 1),
                &dev,
                io(IoOp::WriteVerify, 1, 1, true),
            ),
            (BlockOp::Verify, cdb10(0x2F, 0x00, 1, 1), &dev, good.clone()),
            (
                BlockOp::Verify,
                cdb10(0x2F, 0x00, 1000, 1),
                &dev,
                oob.clone(),
            ),
            (
                BlockOp::Verify,
                cdb10(0x2F, 0x02, 1, 1),
                &dev,
                io(IoOp::Verify { bytchk: true }, 1, 1, false),
            ),
            (
                BlockOp::Verify,
                cdb10(0x2F, 0x04, 1, 1),
                &dev,
                Err(Sense::invalid_field_in_cdb(1, 2)),
            ),
            (
                BlockOp::Verify,
                cdb10(0x2F, 0x06, 1, 1),
                &dev,
                Err(Sense::invalid_field_in_cdb(1, 2)),
            ),
            (
                BlockOp::SyncCache,
                cdb10(0x35, 0x02, 0, 0),
                &dev,
                io(IoOp::Flush { immediate: true }, 0, 0, false),
            ),
            (
                BlockOp::SyncCache,
                cdb10(0x35, 0, 990, 20),
                &dev,
                oob.clone(),
            ),
        ];
        for (i, (op, c, d, want)) in table.into_iter().enumerate() {
            assert_eq!(block_command(op, t, &c, d), want, "row {i}");
        }
    }

    fn cdb16(opcode: u8, b1: u8, lba: u64, len: u32) -> Cdb {
        let mut c = [0u8; 16];
        c[0] = opcode;
        c[1] = b1;
        c[2..10].copy_from_slice(&lba.to_be_bytes());
        c[10..14].copy_from_slice(&len.to_be_bytes());
        c
    }

    #[test]
    fn orwrite_table() {
        let dev = disk(512, 1000);
        let ro = LunDevice {
            read_only: true,
            ..disk(512, 1000)
        };
        let ow = |c: Cdb, d: &LunDevice| block_command(BlockOp::OrWrite, Sixteen, &c, d);
        assert_eq!(
            ow(cdb16(0x8B, 0x08, 10, 4), &dev),
            io(IoOp::OrWrite, 10, 4, true)
        );
        assert_eq!(
            ow(cdb16(0x8B, 0, 997, 4), &dev),
            Err(Sense::lba_out_of_range())
        );
        assert_eq!(
            ow(cdb16(0x8B, 0, 5, 0), &dev),
            Ok(Action::Complete(Completion::good()))
        );
        assert_eq!(ow(cdb16(0x8B, 0, 5, 1), &ro), Err(Sense::write_protected()));
        assert_eq!(
            ow(cdb16(0x8B, 0, 0, 129), &dev),
            Err(Sense::invalid_field_in_cdb(10, 7))
        );
    }

    #[test]
    fn prefetch_table() {
        let dev = disk(512, 1000);
        let pf = |immed: u8, lba: u32, len: u16| prefetch(Ten, &cdb10(0x34, immed, lba, len), &dev);
        let req = |immediate, lba, blocks| {
            Ok(Action::Io(IoRequest {
                op: IoOp::Prefetch { immediate },
                lba,
                blocks,
                fua: false,
            }))
        };
        assert_eq!(pf(0, 0, 8), req(false, 0, 8));
        assert_eq!(pf(0x02, 992, 8), req(true, 992, 8));
        // 0 blocks: to the end of the medium; none left at the very end.
        assert_eq!(pf(0, 10, 0), req(false, 10, 0));
        assert_eq!(pf(0, 1000, 0), Ok(Action::Complete(Completion::good())));
        assert_eq!(pf(0, 1001, 0), Err(Sense::lba_out_of_range()));
        assert_eq!(pf(0, 993, 8), Err(Sense::lba_out_of_range()));
        assert_eq!(pf(0, u32::MAX, 1), Err(Sense::lba_out_of_range()));
        // No transfer, so no MAXIMUM TRANSFER LENGTH limit.
        assert_eq!(pf(0, 0, 500), req(false, 0, 500));
        let c = cdb16(0x90, 0x02, 999, 1);
        assert_eq!(prefetch(Sixteen, &c, &dev), req(true, 999, 1));
        let c = cdb16(0x90, 0, u64::MAX, 0);
        assert_eq!(prefetch(Sixteen, &c, &dev), Err(Sense::lba_out_of_range()));
    }

    #[test]
    fn compare_and_write_table() {
        let dev = disk(512, 1000);
        let ro = LunDevice {
            read_only: true,
            ..disk(512, 1000)
        };
        let caw = |b1: u8, lba: u64, n: u8| {
            let mut c = cdb16(0x89, b1, lba, 0);
            c[13] = n;
            c
        };
        let edtl = |c: &Cdb| 2 * 512 * u32::from(c[13]);
        assert_eq!(max_compare_and_write_blocks(&dev), 64);
        let table: Vec<(Cdb, &LunDevice, Result<Action, Sense>)> = vec![
            (caw(0, 0, 1), &dev, io(IoOp::CompareAndWrite, 0, 1, false)),
            (
                caw(0x08, 999, 1),
                &dev,
                io(IoOp::CompareAndWrite, 999, 1, true),
            ),
            (caw(0, 999, 2), &dev, Err(Sense::lba_out_of_range())),
            (
                caw(0, 1000, 0),
                &dev,
                Ok(Action::Complete(Completion::good())),
            ),
            (caw(0, 1001, 0), &dev, Err(Sense::lba_out_of_range())),
            (caw(0, 0, 65), &dev, Err(Sense::invalid_field_in_cdb(13, 7))),
            (caw(0, 0, 1), &ro, Err(Sense::write_protected())),
        ];
        for (i, (c, d, want)) in table.into_iter().enumerate() {
            assert_eq!(compare_and_write(&c, d, edtl(&c)), want, "row {i}");
        }
        // The data-out must be both halves exactly, also for 0 blocks.
        let short = Err(Sense::invalid_field_in_cdb(13, 7));
        assert_eq!(compare_and_write(&caw(0, 0, 1), &dev, 512), short.clone());
        assert_eq!(compare_and_write(&caw(0, 0, 1), &dev, 2048), short.clone());
        assert_eq!(compare_and_write(&caw(0, 0, 0), &dev, 512 * 512), short);
        let unlimited = LunDevice {
            max_transfer_blocks: 0,
            ..disk(512, 1000)
        };
        assert_eq!(max_compare_and_write_blocks(&unlimited), 128);
    }

    #[test]
    fn read6_zero_means_256() {
        let dev = LunDevice {
            max_transfer_blocks: 0, // no limit
            ..disk(4096, 1 << 20)
        };
        let c = pad(&[0x08, 0, 0, 0, 0, 0]);
        assert_eq!(
            block_command(BlockOp::Read, Six, &c, &dev),
            io(IoOp::Read, 0, 256, false)
        );
        // 256 blocks at the end: LBA 2^20 - 256 is fine, one more is not.
        let dev = LunDevice {
            max_transfer_blocks: 256,
            ..disk(512, 0x1000)
        };
        let c = pad(&[0x0A, 0, 0x0F, 0x00, 0, 0]);
        assert_eq!(
            block_command(BlockOp::Write, Six, &c, &dev),
            io(IoOp::Write, 0xF00, 256, false)
        );
        let c = pad(&[0x0A, 0, 0x0F, 0x01, 0, 0]);
        assert_eq!(
            block_command(BlockOp::Write, Six, &c, &dev),
            Err(Sense::lba_out_of_range())
        );
    }

    #[test]
    fn sixteen_byte_lba() {
        let dev = disk(512, 1 << 40);
        let mut c = [0u8; 16];
        c[0] = 0x88;
        c[2..10].copy_from_slice(&((1u64 << 40) - 1).to_be_bytes());
        c[13] = 1;
        assert_eq!(
            block_command(BlockOp::Read, Sixteen, &c, &dev),
            io(IoOp::Read, (1 << 40) - 1, 1, false)
        );
        c[2..10].copy_from_slice(&u64::MAX.to_be_bytes());
        c[13] = 0;
        assert_eq!(
            block_command(BlockOp::Read, Sixteen, &c, &dev),
            Err(Sense::lba_out_of_range())
        );
        let mut c = [0u8; 16];
        c[0] = 0xA8;
        c[9] = 129;
        assert_eq!(
            block_command(BlockOp::Read, Twelve, &c, &dev),
            Err(Sense::invalid_field_in_cdb(6, 7))
        );
    }

    #[test]
    fn write_atomic_takes_one_aligned_unit() {
        let wa = |lba: u64, boundary: u16, len: u16, b1: u8| {
            let mut c = [0u8; 16];
            c[0] = 0x9C;
            c[1] = b1;
            c[2..10].copy_from_slice(&lba.to_be_bytes());
            c[10..12].copy_from_slice(&boundary.to_be_bytes());
            c[12..14].copy_from_slice(&len.to_be_bytes());
            c
        };
        let dev = LunDevice {
            atomic_unit_blocks: 8,
            ..disk(512, 1024)
        };
        let io = |lba, blocks, fua| {
            Ok(Action::Io(IoRequest {
                op: IoOp::WriteAtomic,
                lba,
                blocks,
                fua,
            }))
        };
        let table: Vec<(Cdb, Result<Action, Sense>)> = vec![
            (wa(0, 0, 8, 0), io(0, 8, false)),
            (wa(16, 0, 8, 0x08), io(16, 8, true)),
            (wa(0, 0, 0, 0), Ok(Action::Complete(Completion::good()))),
            (wa(4, 0, 8, 0), Err(Sense::invalid_field_in_cdb(2, 7))),
            (wa(0, 0, 4, 0), Err(Sense::invalid_field_in_cdb(12, 7))),
            (wa(0, 0, 16, 0), Err(Sense::invalid_field_in_cdb(12, 7))),
            (wa(0, 1, 8, 0), Err(Sense::invalid_field_in_cdb(10, 7))),
            (wa(1020, 0, 8, 0), Err(Sense::lba_out_of_range())),
        ];
        for (i, (c, want)) in table.into_iter().enumerate() {
            assert_eq!(write_atomic(&c, &dev), want, "row {i}");
        }
        let ro = LunDevice {
            read_only: true,
            ..dev.clone()
        };
        assert_eq!(
            write_atomic(&wa(0, 0, 8, 0), &ro),
            Err(Sense::write_protected())
        );
        // Not offered at all without an atomic unit: INVALID COMMAND
        // OPERATION CODE from dispatch, and VPD B0h reports zeros.
        let plain = disk(512, 1024);
        let entry = crate::scsi::opcodes::find(&pad(&wa(0, 0, 8, 0))).expect("in the table");
        assert!(entry.supported_by(&dev));
        assert!(!entry.supported_by(&plain));
    }
}
