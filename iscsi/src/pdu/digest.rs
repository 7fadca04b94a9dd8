//! PDU framing and CRC32C digests (RFC 7143 §11.1, §13.1, Annex B).
//!
//! ```text
//! | BHS 48 | AHS (TotalAHSLength*4) | HeaderDigest 4? | data | pad to 4 | DataDigest 4? |
//! ```
//! The header digest covers BHS+AHS; the data digest covers the data segment
//! and its padding. Digests go on the wire least significant byte first (the
//! RFC's Annex B example and libiscsi, Linux and open-iscsi all agree), so
//! `crc.to_le_bytes()`.

use super::bhs::{data_segment_len, total_ahs_len, BHS_LEN};
use super::PduError;

/// Length of a CRC32C digest on the wire.
pub const DIGEST_LEN: usize = 4;

/// Which digests are in force on a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digests {
    /// HeaderDigest=CRC32C.
    pub header: bool,
    /// DataDigest=CRC32C.
    pub data: bool,
}

/// A PDU borrowed from a receive buffer: header, AHS and data (no padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPdu<'a> {
    /// The Basic Header Segment.
    pub bhs: &'a [u8; BHS_LEN],
    /// The Additional Header Segments (often empty).
    pub ahs: &'a [u8],
    /// The data segment, without padding.
    pub data: &'a [u8],
}

/// `len` rounded up to a multiple of 4.
#[inline]
pub const fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// Total bytes the PDU described by `bhs` occupies on the wire.
pub fn pdu_wire_len(bhs: &[u8; BHS_LEN], header_digest: bool, data_digest: bool) -> usize {
    let data = data_segment_len(bhs);
    let mut len = BHS_LEN + total_ahs_len(bhs);
    if header_digest {
        len += DIGEST_LEN;
    }
    if data > 0 {
        len += padded(data);
        if data_digest {
            len += DIGEST_LEN;
        }
    }
    len
}

/// CRC32C over a BHS (for PDUs without AHS).
#[inline]
pub fn header_digest(bhs: &[u8; BHS_LEN]) -> u32 {
    crc32c::crc32c(bhs)
}

/// CRC32C over a data segment that already includes its padding.
#[inline]
pub fn data_digest(data_with_padding: &[u8]) -> u32 {
    crc32c::crc32c(data_with_padding)
}

/// CRC32C over `data` followed by the zero padding to a multiple of 4,
/// without copying.
#[inline]
pub fn data_digest_unpadded(data: &[u8]) -> u32 {
    const ZEROS: [u8; 3] = [0; 3];
    let crc = crc32c::crc32c(data);
    let pad = padded(data.len()) - data.len();
    crc32c::crc32c_append(crc, &ZEROS[..pad])
}

fn read_digest(bytes: &[u8]) -> u32 {
    let mut b = [0u8; DIGEST_LEN];
    b.copy_from_slice(bytes);
    u32::from_le_bytes(b)
}

/// Splits one PDU off the front of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold the whole PDU, else the
/// borrowed segments and the number of bytes consumed. Digests in force are
/// verified; a data segment longer than `max_data` (our declared
/// MaxRecvDataSegmentLength) is an error before any data is awaited.
pub fn split_pdu(
    buf: &[u8],
    digests: Digests,
    max_data: usize,
) -> Result<Option<(RawPdu<'_>, usize)>, PduError> {
    let Some(bhs) = buf.first_chunk::<BHS_LEN>() else {
        return Ok(None);
    };
    let data_len = data_segment_len(bhs);
    if data_len > max_data {
        return Err(PduError::DataSegmentTooLong {
            len: data_len,
            max: max_data,
        });
    }
    let ahs_end = BHS_LEN + total_ahs_len(bhs);
    let total = pdu_wire_len(bhs, digests.header, digests.data);
    if buf.len() < total {
        return Ok(None);
    }
    let mut at = ahs_end;
    if digests.header {
        let expected = crc32c::crc32c(&buf[..ahs_end]);
        let found = read_digest(&buf[at..at + DIGEST_LEN]);
        if expected != found {
            return Err(PduError::HeaderDigest { expected, found });
        }
        at += DIGEST_LEN;
    }
    let data = &buf[at..at + data_len];
    if data_len > 0 {
        let padded_end = at + padded(data_len);
        if digests.data {
            let expected = data_digest(&buf[at..padded_end]);
            let found = read_digest(&buf[padded_end..padded_end + DIGEST_LEN]);
            if expected != found {
                return Err(PduError::DataDigest { expected, found });
            }
        }
    }
    let pdu = RawPdu {
        bhs,
        ahs: &buf[BHS_LEN..ahs_end],
        data,
    };
    Ok(Some((pdu, total)))
}

/// Appends a whole PDU (no AHS) to `out`: BHS, digests and padding.
///
/// The caller keeps DataSegmentLength in `bhs` equal to `data.len()`.
pub fn write_pdu(bhs: &[u8; BHS_LEN], data: &[u8], digests: Digests, out: &mut Vec<u8>) {
    out.reserve(BHS_LEN + padded(data.len()) + 2 * DIGEST_LEN);
    out.extend_from_slice(bhs);
    if digests.header {
        out.extend_from_slice(&header_digest(bhs).to_le_bytes());
    }
    if !data.is_empty() {
        out.extend_from_slice(data);
        let pad = padded(data.len()) - data.len();
        out.extend_from_slice(&[0u8; 3][..pad]);
        if digests.data {
            out.extend_from_slice(&data_digest_unpadded(data).to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::bhs::put_u24;
    use super::*;

    fn bhs_with(data_len: u32, ahs_words: u8) -> [u8; BHS_LEN] {
        let mut b = [0u8; BHS_LEN];
        b[0] = 0x05;
        b[4] = ahs_words;
        put_u24(&mut b, 5, data_len);
        b
    }

    #[test]
    fn annex_b_byte_order() {
        // RFC 7143 Annex B.4: 32 bytes of zeros -> CRC bytes aa 36 91 8a.
        assert_eq!(
            data_digest(&[0u8; 32]).to_le_bytes(),
            [0xaa, 0x36, 0x91, 0x8a]
        );
        // 32 bytes of 0xff -> 43 ab a8 62.
        assert_eq!(
            data_digest(&[0xffu8; 32]).to_le_bytes(),
            [0x43, 0xab, 0xa8, 0x62]
        );
    }

    #[test]
    fn padding_and_wire_len() {
        assert_eq!(padded(0), 0);
        assert_eq!(padded(1), 4);
        assert_eq!(padded(4), 4);
        assert_eq!(padded(5), 8);
        let b = bhs_with(5, 1);
        assert_eq!(pdu_wire_len(&b, false, false), 48 + 4 + 8);
        assert_eq!(pdu_wire_len(&b, true, true), 48 + 4 + 4 + 8 + 4);
        let empty = bhs_with(0, 0);
        assert_eq!(pdu_wire_len(&empty, true, true), 52);
    }

    #[test]
    fn split_round_trip_all_digest_modes() {
        let data: Vec<u8> = (0..13u8).collect();
        for (h, d) in [(false, false), (true, false), (false, true), (true, true)] {
            let digests = Digests { header: h, data: d };
            let b = bhs_with(data.len() as u32, 0);
            let mut wire = Vec::new();
            write_pdu(&b, &data, digests, &mut wire);
            wire.extend_from_slice(&[9, 9, 9]); // start of the next PDU
            let want = pdu_wire_len(&b, h, d);
            for cut in 0..want {
                assert_eq!(split_pdu(&wire[..cut], digests, 8192).unwrap(), None);
            }
            let (pdu, used) = split_pdu(&wire, digests, 8192).unwrap().unwrap();
            assert_eq!(used, want);
            assert_eq!(pdu.bhs, &b);
            assert_eq!(pdu.data, &data[..]);
            assert!(pdu.ahs.is_empty());
        }
    }

    #[test]
    fn split_with_ahs() {
        let mut b = bhs_with(0, 2);
        b[0] = 0x01;
        let mut wire = b.to_vec();
        wire.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let crc = crc32c::crc32c(&wire);
        wire.extend_from_slice(&crc.to_le_bytes());
        let digests = Digests {
            header: true,
            data: true,
        };
        let (pdu, used) = split_pdu(&wire, digests, 0).unwrap().unwrap();
        assert_eq!(used, 48 + 8 + 4);
        assert_eq!(pdu.ahs, &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(pdu.data.is_empty());
    }

    #[test]
    fn bad_digests_and_oversize() {
        let digests = Digests {
            header: true,
            data: true,
        };
        let b = bhs_with(8, 0);
        let mut wire = Vec::new();
        write_pdu(&b, &[1; 8], digests, &mut wire);
        let mut bad_header = wire.clone();
        bad_header[10] ^= 1;
        assert!(matches!(
            split_pdu(&bad_header, digests, 8192),
            Err(PduError::HeaderDigest { .. })
        ));
        let mut bad_data = wire.clone();
        bad_data[BHS_LEN + 4 + 3] ^= 0x80;
        assert!(matches!(
            split_pdu(&bad_data, digests, 8192),
            Err(PduError::DataDigest { .. })
        ));
        let mut bad_crc = wire.clone();
        let n = bad_crc.len();
        bad_crc[n - 1] ^= 1;
        assert!(matches!(
            split_pdu(&bad_crc, digests, 8192),
            Err(PduError::DataDigest { .. })
        ));
        // Oversize is reported from the BHS alone.
        assert_eq!(
            split_pdu(&wire[..BHS_LEN], digests, 4),
            Err(PduError::DataSegmentTooLong { len: 8, max: 4 })
        );
    }

    #[test]
    fn unpadded_digest_matches_padded() {
        for n in 0..9usize {
            let data: Vec<u8> = (1..=n as u8).collect();
            let mut p = data.clone();
            p.resize(padded(n), 0);
            assert_eq!(data_digest_unpadded(&data), data_digest(&p));
        }
    }
}
