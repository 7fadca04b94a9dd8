//! The media-access hot path (SBC-3): READ, WRITE, WRITE AND VERIFY, VERIFY
//! (6/10/12/16 as defined) and SYNCHRONIZE CACHE (10/16).
//!
//! ```text
//! decode -> BYTCHK check -> write protect -> LBA range -> MAXIMUM TRANSFER LENGTH
//!        -> length 0 / BYTCHK 0: GOOD  |  otherwise: IoRequest for the session
//! ```
//!
//! Nothing here allocates. Reserved bits (RDPROTECT/WRPROTECT/VRPROTECT, ...)
//! were already rejected by the opcode table's usage maps.

use super::cdb::{decode_rw, Cdb, RwLayout};
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
    if matches!(op, BlockOp::Write | BlockOp::WriteVerify) && dev.read_only {
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
}
