//! READ DEFECT DATA (10)/(12) (SBC-3 5.17, 5.18): a virtual disk has no
//! grown or primary defects, so both lists are reported valid and empty in
//! the format asked for.

use super::cdb::{be, Cdb};
use super::sense::Sense;
use super::Completion;

/// REQ_PLIST, REQ_GLIST and DEFECT LIST FORMAT, echoed as PLISTV, GLISTV and
/// the format of the (empty) list.
const LIST_BITS: u8 = 0x1F;

/// READ DEFECT DATA (10): 4-byte header, DEFECT LIST LENGTH 0.
pub(crate) fn read_defect_data10(c: &Cdb) -> Result<Completion, Sense> {
    let alloc = be(c, 7, 2) as usize;
    let mut out = vec![0, c[2] & LIST_BITS, 0, 0];
    out.truncate(alloc);
    Ok(Completion::with_data(out))
}

/// READ DEFECT DATA (12): 8-byte header (GENERATION CODE 0, DEFECT LIST
/// LENGTH 0).
pub(crate) fn read_defect_data12(c: &Cdb) -> Result<Completion, Sense> {
    let alloc = be(c, 6, 4) as usize;
    let mut out = vec![0, c[1] & LIST_BITS, 0, 0, 0, 0, 0, 0];
    out.truncate(alloc);
    Ok(Completion::with_data(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::cdb::pad;

    #[test]
    fn empty_lists() {
        let table: [(&[u8], &[u8]); 5] = [
            (&[0x37, 0, 0x18, 0, 0, 0, 0, 0, 4, 0], &[0, 0x18, 0, 0]),
            (
                &[0x37, 0, 0x0D, 0, 0, 0, 0, 0xFF, 0xFF, 0],
                &[0, 0x0D, 0, 0],
            ),
            (&[0x37, 0, 0x18, 0, 0, 0, 0, 0, 2, 0], &[0, 0x18]),
            (
                &[0xB7, 0x14, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0],
                &[0, 0x14, 0, 0, 0, 0, 0, 0],
            ),
            (&[0xB7, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]),
        ];
        for (cdb, want) in table {
            let c = pad(cdb);
            let got = if c[0] == 0x37 {
                read_defect_data10(&c)
            } else {
                read_defect_data12(&c)
            };
            assert_eq!(got.unwrap().data, want, "{cdb:02x?}");
        }
    }
}
