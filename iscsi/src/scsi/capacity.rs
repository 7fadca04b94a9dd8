//! READ CAPACITY (10) and READ CAPACITY (16) (SBC-3 5.15, 5.16).

use super::cdb::{be, Cdb};
use super::sense::Sense;
use super::{Completion, LunDevice};

/// The last LBA of the device (0 for an empty device).
fn last_lba(dev: &LunDevice) -> u64 {
    dev.num_blocks.saturating_sub(1)
}

/// PMI = 0 requires LOGICAL BLOCK ADDRESS = 0 (SBC-3).
fn check_pmi(pmi: bool, lba: u64, lba_at: u16) -> Result<(), Sense> {
    if !pmi && lba != 0 {
        return Err(Sense::invalid_field_in_cdb(lba_at, 7));
    }
    Ok(())
}

/// READ CAPACITY (10): last LBA (FFFF_FFFFh when it does not fit) and block length.
pub(crate) fn read_capacity10(c: &Cdb, dev: &LunDevice) -> Result<Completion, Sense> {
    check_pmi(c[8] & 0x01 != 0, be(c, 2, 4), 2)?;
    let lba = u32::try_from(last_lba(dev)).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(8);
    out.extend_from_slice(&lba.to_be_bytes());
    out.extend_from_slice(&dev.block_size.to_be_bytes());
    Ok(Completion::with_data(out))
}

/// READ CAPACITY (16) parameter data length.
const RC16_LEN: usize = 32;

/// READ CAPACITY (16): 32 bytes, truncated to the allocation length.
pub(crate) fn read_capacity16(c: &Cdb, dev: &LunDevice) -> Result<Completion, Sense> {
    check_pmi(c[14] & 0x01 != 0, be(c, 2, 8), 2)?;
    let alloc = be(c, 10, 4) as usize;
    let mut out = vec![0u8; RC16_LEN];
    out[0..8].copy_from_slice(&last_lba(dev).to_be_bytes());
    out[8..12].copy_from_slice(&dev.block_size.to_be_bytes());
    // Byte 12: P_TYPE/PROT_EN = 0; byte 13: P_I_EXPONENT = 0, LOGICAL
    // BLOCKS PER PHYSICAL BLOCK EXPONENT; bytes 14-15: LOWEST ALIGNED LBA 0.
    out[13] = dev.blocks_per_physical().trailing_zeros() as u8;
    if dev.thin {
        out[14] = 0x80; // LBPME
        if dev.holes_read_zero {
            out[14] |= 0x40; // LBPRZ
        }
    }
    out.truncate(alloc);
    Ok(Completion::with_data(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::cdb::pad;
    use crate::scsi::dispatch::tests::disk;

    fn rc16(alloc: u32) -> Cdb {
        let mut c = [0u8; 16];
        c[0] = 0x9E;
        c[1] = 0x10;
        c[10..14].copy_from_slice(&alloc.to_be_bytes());
        c
    }

    #[test]
    fn capacity10_values() {
        let c = pad(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let table = [
            (512, 2048, [0, 0, 0x07, 0xFF, 0, 0, 0x02, 0x00]),
            (4096, 256, [0, 0, 0, 0xFF, 0, 0, 0x10, 0x00]),
            (512, 0xFFFF_FFFF, [0xFF, 0xFF, 0xFF, 0xFE, 0, 0, 0x02, 0x00]),
            (512, 1 << 32, [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x02, 0x00]),
            (4096, 1 << 40, [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x10, 0x00]),
        ];
        for (bs, n, want) in table {
            let got = read_capacity10(&c, &disk(bs, n)).unwrap();
            assert_eq!(got.data, want, "{bs} {n}");
        }
    }

    #[test]
    fn capacity10_pmi() {
        let dev = disk(512, 100);
        let c = pad(&[0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(
            read_capacity10(&c, &dev),
            Err(Sense::invalid_field_in_cdb(2, 7))
        );
        let c = pad(&[0x25, 0, 0, 0, 0, 1, 0, 0, 1, 0]);
        assert!(read_capacity10(&c, &dev).is_ok());
    }

    #[test]
    fn capacity16_values() {
        let d = read_capacity16(&rc16(32), &disk(4096, 1 << 40))
            .unwrap()
            .data;
        assert_eq!(&d[0..8], &((1u64 << 40) - 1).to_be_bytes());
        assert_eq!(&d[8..12], &[0, 0, 0x10, 0]);
        assert_eq!(&d[12..32], &[0u8; 20]);

        let thin = LunDevice {
            thin: true,
            holes_read_zero: true,
            ..disk(512, 1000)
        };
        let d = read_capacity16(&rc16(64), &thin).unwrap().data;
        assert_eq!(d.len(), 32);
        assert_eq!(&d[0..8], &999u64.to_be_bytes());
        assert_eq!(&d[8..12], &[0, 0, 0x02, 0]);
        assert_eq!(d[14], 0xC0);
        let no_lbprz = LunDevice {
            holes_read_zero: false,
            ..thin
        };
        assert_eq!(
            read_capacity16(&rc16(64), &no_lbprz).unwrap().data[14],
            0x80
        );
    }

    #[test]
    fn capacity16_alloc_truncation() {
        for alloc in 0..16u32 {
            let got = read_capacity16(&rc16(alloc), &disk(512, 1000)).unwrap();
            assert_eq!(got.data.len(), alloc as usize);
        }
    }
}
