//! LUN encoding (SAM-5 4.7: single-level peripheral and flat space
//! addressing) and REPORT LUNS (SPC-4 6.33).
//!
//! LUNs 0..=255 use peripheral device addressing (`00 LL 00..`), 256..=16383
//! flat space addressing (`01HH LL 00..`); the wire value is the 8-byte LUN
//! field read big-endian.

use super::cdb::{be, Cdb};
use super::sense::Sense;
use super::Completion;

/// Largest LUN number that single-level addressing can express.
pub const MAX_LUN: u16 = 0x3FFF;

/// Decodes a single-level LUN field; `None` for other address methods,
/// a non-zero bus identifier, or trailing levels.
pub fn lun_from_wire(wire: u64) -> Option<u16> {
    if wire & 0x0000_FFFF_FFFF_FFFF != 0 {
        return None;
    }
    let b0 = (wire >> 56) as u8;
    let b1 = (wire >> 48) as u8;
    match b0 >> 6 {
        0b00 if b0 == 0 => Some(u16::from(b1)),
        0b01 => Some((u16::from(b0 & 0x3F) << 8) | u16::from(b1)),
        _ => None,
    }
}

/// Encodes a LUN number: peripheral addressing below 256, flat space above.
/// Numbers above [`MAX_LUN`] are masked to 14 bits.
pub fn lun_to_wire(lun: u16) -> u64 {
    let lun = lun & MAX_LUN;
    if lun < 256 {
        u64::from(lun) << 48
    } else {
        (0x4000 | u64::from(lun)) << 48
    }
}

/// REPORT LUNS for the LUN numbers in `luns` (those above [`MAX_LUN`] are
/// skipped). SELECT REPORT 00h and 02h list them; 01h (well known LUs only)
/// lists none.
pub(crate) fn report_luns(c: &Cdb, luns: &[u64]) -> Result<Completion, Sense> {
    let alloc = be(c, 6, 4) as usize;
    if alloc < 16 {
        return Err(Sense::invalid_field_in_cdb(6, 7));
    }
    let listed: &[u64] = match c[2] {
        0x00 | 0x02 => luns,
        0x01 => &[],
        _ => return Err(Sense::invalid_field_in_cdb(2, 7)),
    };
    let mut out = Vec::with_capacity(8 + listed.len() * 8);
    out.extend_from_slice(&[0u8; 8]);
    for lun in listed {
        if let Ok(n) = u16::try_from(*lun) {
            if n <= MAX_LUN {
                out.extend_from_slice(&lun_to_wire(n).to_be_bytes());
            }
        }
    }
    let list_len = (out.len() - 8) as u32;
    out[0..4].copy_from_slice(&list_len.to_be_bytes());
    out.truncate(alloc);
    Ok(Completion::with_data(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wire_table() {
        let table: [(u16, u64); 5] = [
            (0, 0),
            (1, 0x0001_0000_0000_0000),
            (255, 0x00FF_0000_0000_0000),
            (256, 0x4100_0000_0000_0000),
            (16383, 0x7FFF_0000_0000_0000),
        ];
        for (lun, wire) in table {
            assert_eq!(lun_to_wire(lun), wire, "{lun}");
            assert_eq!(lun_from_wire(wire), Some(lun), "{wire:#x}");
        }
        // Flat space may also carry small LUNs.
        assert_eq!(lun_from_wire(0x4005_0000_0000_0000), Some(5));
        // Bus id, second level, logical unit / extended addressing are rejected.
        assert_eq!(lun_from_wire(0x0101_0000_0000_0000), None);
        assert_eq!(lun_from_wire(0x0001_0001_0000_0000), None);
        assert_eq!(lun_from_wire(0x8001_0000_0000_0000), None);
        assert_eq!(lun_from_wire(0xC001_0000_0000_0000), None);
    }

    proptest! {
        #[test]
        fn wire_round_trip(lun in 0u16..=MAX_LUN) {
            prop_assert_eq!(lun_from_wire(lun_to_wire(lun)), Some(lun));
        }

        #[test]
        fn from_wire_total(wire in any::<u64>()) {
            if let Some(lun) = lun_from_wire(wire) {
                prop_assert!(lun <= MAX_LUN);
            }
        }
    }

    fn cdb(select: u8, alloc: u32) -> Cdb {
        let mut c = [0u8; 16];
        c[0] = 0xA0;
        c[2] = select;
        c[6..10].copy_from_slice(&alloc.to_be_bytes());
        c
    }

    #[test]
    fn report_luns_list() {
        let d = report_luns(&cdb(0, 4096), &[0, 1, 300, 70000])
            .unwrap()
            .data;
        assert_eq!(
            d,
            [
                0, 0, 0, 24, 0, 0, 0, 0, //
                0, 0, 0, 0, 0, 0, 0, 0, //
                0, 1, 0, 0, 0, 0, 0, 0, //
                0x41, 0x2C, 0, 0, 0, 0, 0, 0,
            ]
        );
        assert_eq!(report_luns(&cdb(2, 4096), &[7]).unwrap().data.len(), 16);
        assert_eq!(
            report_luns(&cdb(1, 4096), &[7]).unwrap().data,
            [0u8; 8].to_vec()
        );
        // Truncated to the allocation length, LUN LIST LENGTH still complete.
        let d = report_luns(&cdb(0, 16), &[0, 1, 2]).unwrap().data;
        assert_eq!(d.len(), 16);
        assert_eq!(&d[0..4], &[0, 0, 0, 24]);
    }

    #[test]
    fn report_luns_invalid() {
        assert_eq!(
            report_luns(&cdb(0, 15), &[0]),
            Err(Sense::invalid_field_in_cdb(6, 7))
        );
        assert_eq!(
            report_luns(&cdb(0x10, 64), &[0]),
            Err(Sense::invalid_field_in_cdb(2, 7))
        );
    }
}
