//! CDB decoding: a zero-padded stack copy of the CDB, big-endian field
//! readers, the READ/WRITE/VERIFY/SYNCHRONIZE CACHE field layouts, and the
//! data direction / implied transfer length helpers for the session.
//!
//! Every reader is total: out-of-range offsets read as zero, so no CDB input
//! can panic.

use super::opcodes::{self, Xfer};

/// Fixed-size CDB copy every decoder works on (AHS-extended bytes beyond 16
/// are not used by any supported command).
pub(crate) type Cdb = [u8; 16];

/// Copies up to 16 bytes of `cdb` into a zero-padded array.
pub(crate) fn pad(cdb: &[u8]) -> Cdb {
    let mut c = [0u8; 16];
    let n = cdb.len().min(16);
    c[..n].copy_from_slice(&cdb[..n]);
    c
}

/// Big-endian unsigned field of `len` (<= 8) bytes at `at`; missing bytes read as 0.
pub(crate) fn be(c: &[u8], at: usize, len: usize) -> u64 {
    (at..at + len).fold(0u64, |acc, i| {
        (acc << 8) | u64::from(c.get(i).copied().unwrap_or(0))
    })
}

/// Big-endian 16-bit field.
pub(crate) fn be16(c: &[u8], at: usize) -> u16 {
    be(c, at, 2) as u16
}

/// Big-endian 32-bit field.
pub(crate) fn be32(c: &[u8], at: usize) -> u32 {
    be(c, at, 4) as u32
}

/// Field layout of the READ/WRITE family of CDBs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RwLayout {
    /// 6-byte: 21-bit LBA, 8-bit length (0 = 256 for READ/WRITE(6)).
    Six,
    /// 10-byte: 32-bit LBA at 2, 16-bit length at 7.
    Ten,
    /// 12-byte: 32-bit LBA at 2, 32-bit length at 6.
    Twelve,
    /// 16-byte: 64-bit LBA at 2, 32-bit length at 10.
    Sixteen,
}

impl RwLayout {
    /// Byte offset of the TRANSFER LENGTH field (for field pointers).
    pub(crate) fn length_at(self) -> u16 {
        match self {
            RwLayout::Six => 4,
            RwLayout::Ten => 7,
            RwLayout::Twelve => 6,
            RwLayout::Sixteen => 10,
        }
    }
}

/// Decoded fields of a READ/WRITE/VERIFY/WRITE AND VERIFY/SYNCHRONIZE CACHE CDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RwCdb {
    /// LOGICAL BLOCK ADDRESS.
    pub lba: u64,
    /// TRANSFER LENGTH / VERIFICATION LENGTH / NUMBER OF LOGICAL BLOCKS.
    pub blocks: u32,
    /// FUA bit (byte 1 bit 3; absent in 6-byte CDBs).
    pub fua: bool,
    /// BYTCHK field (byte 1 bits 2:1) for VERIFY / WRITE AND VERIFY.
    pub bytchk: u8,
    /// IMMED bit (byte 1 bit 1) for SYNCHRONIZE CACHE.
    pub immed: bool,
}

/// Decodes the block-addressing fields of `c` per `layout`.
pub(crate) fn decode_rw(layout: RwLayout, c: &Cdb) -> RwCdb {
    let (lba, blocks) = match layout {
        RwLayout::Six => {
            let lba = be(c, 1, 3) & 0x1F_FFFF;
            let len = u32::from(c[4]);
            (lba, if len == 0 { 256 } else { len })
        }
        RwLayout::Ten => (be(c, 2, 4), u32::from(be16(c, 7))),
        RwLayout::Twelve => (be(c, 2, 4), be32(c, 6)),
        RwLayout::Sixteen => (be(c, 2, 8), be32(c, 10)),
    };
    let b1 = if layout == RwLayout::Six { 0 } else { c[1] };
    RwCdb {
        lba,
        blocks,
        fua: b1 & 0x08 != 0,
        bytchk: (b1 >> 1) & 0x03,
        immed: b1 & 0x02 != 0,
    }
}

/// Direction of the data phase a CDB implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// No data transfer.
    None,
    /// Data-in (target to initiator).
    In,
    /// Data-out (initiator to target).
    Out,
}

/// The data direction `cdb` implies (None for unsupported opcodes), so the
/// session can sanity-check the PDU's R/W bits.
pub fn data_direction(cdb: &[u8]) -> Direction {
    let c = pad(cdb);
    match opcodes::find(&c).map(|e| e.xfer) {
        Some(Xfer::AllocLen { .. }) | Some(Xfer::ReadBlocks(_)) => Direction::In,
        Some(Xfer::ParamLen { .. }) | Some(Xfer::WriteBlocks(_)) => Direction::Out,
        Some(Xfer::VerifyBlocks(l)) if decode_rw(l, &c).bytchk != 0 => Direction::Out,
        Some(Xfer::SameBlock) if !ndob(&c) => Direction::Out,
        Some(Xfer::CompareAndWrite) if c[13] != 0 => Direction::Out,
        Some(Xfer::AtomicBlocks) => Direction::Out,
        _ => Direction::None,
    }
}

/// The number of bytes the CDB asks to move (allocation length, parameter
/// list length, or blocks × `block_size`); 0 for no data or unsupported opcodes.
pub fn expected_transfer_len(cdb: &[u8], block_size: u32) -> u64 {
    let c = pad(cdb);
    let blocks = |l| u64::from(decode_rw(l, &c).blocks) * u64::from(block_size);
    match opcodes::find(&c).map(|e| e.xfer) {
        Some(Xfer::AllocLen { at, len }) | Some(Xfer::ParamLen { at, len }) => {
            be(&c, usize::from(at), usize::from(len))
        }
        Some(Xfer::ReadBlocks(l)) | Some(Xfer::WriteBlocks(l)) => blocks(l),
        Some(Xfer::VerifyBlocks(l)) if decode_rw(l, &c).bytchk != 0 => blocks(l),
        Some(Xfer::SameBlock) if !ndob(&c) => u64::from(block_size),
        Some(Xfer::CompareAndWrite) => 2 * u64::from(c[13]) * u64::from(block_size),
        Some(Xfer::AtomicBlocks) => u64::from(be16(&c, 12)) * u64::from(block_size),
        _ => 0,
    }
}

/// NDOB (no data-out buffer) of WRITE SAME(16); WRITE SAME(10) has none.
pub(crate) fn ndob(c: &Cdb) -> bool {
    c[0] == 0x93 && c[1] & 0x01 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_are_total() {
        let c = [1u8, 2, 3];
        assert_eq!(be(&c, 1, 4), 0x0203_0000);
        assert_eq!(be16(&c, 5), 0);
        assert_eq!(pad(&[]), [0u8; 16]);
        assert_eq!(pad(&[7u8; 40])[15], 7);
    }

    #[test]
    fn decode_layouts() {
        let c = pad(&[0x08, 0xFF, 0x12, 0x34, 0x00, 0]);
        let r = decode_rw(RwLayout::Six, &c);
        assert_eq!((r.lba, r.blocks), (0x1F_1234, 256));

        let c = pad(&[0x28, 0x08, 0, 0, 0x10, 0, 0, 0x01, 0x00, 0]);
        let r = decode_rw(RwLayout::Ten, &c);
        assert_eq!((r.lba, r.blocks, r.fua), (0x1000, 256, true));

        let c = pad(&[0xA8, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 9, 0, 0]);
        let r = decode_rw(RwLayout::Twelve, &c);
        assert_eq!((r.lba, r.blocks), (0xFFFF_FFFF, 9));

        let mut c = [0u8; 16];
        c[0] = 0x88;
        c[2..10].copy_from_slice(&u64::MAX.to_be_bytes());
        c[10..14].copy_from_slice(&7u32.to_be_bytes());
        let r = decode_rw(RwLayout::Sixteen, &c);
        assert_eq!((r.lba, r.blocks), (u64::MAX, 7));

        let c = pad(&[0x2F, 0x02, 0, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(decode_rw(RwLayout::Ten, &c).bytchk, 1);
    }

    #[test]
    fn direction_and_length() {
        let table: &[(&[u8], Direction, u64)] = &[
            (&[0x00, 0, 0, 0, 0, 0], Direction::None, 0),
            (&[0x12, 0, 0, 0x01, 0x00, 0], Direction::In, 256),
            (&[0x28, 0, 0, 0, 0, 0, 0, 0, 2, 0], Direction::In, 1024),
            (&[0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0], Direction::Out, 512),
            (&[0x08, 0, 0, 0, 0, 0], Direction::In, 256 * 512),
            (&[0x2F, 0, 0, 0, 0, 0, 0, 0, 1, 0], Direction::None, 0),
            (&[0x2F, 0x02, 0, 0, 0, 0, 0, 0, 1, 0], Direction::Out, 512),
            (&[0x15, 0x10, 0, 0, 24, 0], Direction::Out, 24),
            (&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], Direction::None, 0),
            (&[0x41, 0, 0, 0, 0, 0, 0, 0, 9, 0], Direction::Out, 512),
            (
                &[0x93, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0],
                Direction::None,
                0,
            ),
            (
                &[0x93, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0],
                Direction::Out,
                512,
            ),
            (&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], Direction::Out, 24),
            (
                &[0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0],
                Direction::Out,
                3072,
            ),
            (
                &[0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                Direction::None,
                0,
            ),
            (
                &[0x8B, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0],
                Direction::Out,
                1024,
            ),
            (
                &[0x9E, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 24, 0, 0],
                Direction::In,
                24,
            ),
            (&[0x34, 0, 0, 0, 0, 0, 0, 0, 8, 0], Direction::None, 0),
            (&[0x37, 0, 0x18, 0, 0, 0, 0, 0, 4, 0], Direction::In, 4),
            (
                &[0xB7, 0x18, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0],
                Direction::In,
                8,
            ),
            (&[0xFF, 0, 0, 0, 0, 0], Direction::None, 0),
        ];
        for (cdb, dir, len) in table {
            assert_eq!(data_direction(cdb), *dir, "{cdb:02x?}");
            assert_eq!(expected_transfer_len(cdb, 512), *len, "{cdb:02x?}");
        }
    }
}
