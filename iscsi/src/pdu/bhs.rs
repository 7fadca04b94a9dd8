//! Basic Header Segment primitives (RFC 7143 §11.2): the opcode byte, the
//! fields every BHS shares, and big-endian field accessors over `[u8; 48]`.
//!
//! Every accessor indexes a fixed-size array with constant offsets, so none
//! can panic and none allocates.

use super::PduError;

/// Length of the Basic Header Segment in bytes.
pub const BHS_LEN: usize = 48;

/// The Initiator Task Tag value reserved to mean "no task" (RFC 7143 §11.18).
pub const RESERVED_TAG: u32 = 0xffff_ffff;

/// Immediate-delivery bit in byte 0.
pub(crate) const IMMEDIATE_BIT: u8 = 0x40;
/// Final bit in byte 1.
pub(crate) const FINAL_BIT: u8 = 0x80;

/// An iSCSI opcode (RFC 7143 §11.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    /// NOP-Out (initiator).
    NopOut = 0x00,
    /// SCSI Command (initiator).
    ScsiCommand = 0x01,
    /// SCSI Task Management Function Request (initiator).
    TaskMgmtRequest = 0x02,
    /// Login Request (initiator).
    LoginRequest = 0x03,
    /// Text Request (initiator).
    TextRequest = 0x04,
    /// SCSI Data-Out (initiator).
    DataOut = 0x05,
    /// Logout Request (initiator).
    LogoutRequest = 0x06,
    /// SNACK Request (initiator).
    SnackRequest = 0x10,
    /// NOP-In (target).
    NopIn = 0x20,
    /// SCSI Response (target).
    ScsiResponse = 0x21,
    /// SCSI Task Management Function Response (target).
    TaskMgmtResponse = 0x22,
    /// Login Response (target).
    LoginResponse = 0x23,
    /// Text Response (target).
    TextResponse = 0x24,
    /// SCSI Data-In (target).
    DataIn = 0x25,
    /// Logout Response (target).
    LogoutResponse = 0x26,
    /// Ready To Transfer (target).
    R2t = 0x31,
    /// Asynchronous Message (target).
    AsyncMessage = 0x32,
    /// Reject (target).
    Reject = 0x3f,
}

impl Opcode {
    /// Decodes the low six bits of byte 0; unknown codes are an error.
    pub fn from_u8(code: u8) -> Result<Self, PduError> {
        Ok(match code & 0x3f {
            0x00 => Self::NopOut,
            0x01 => Self::ScsiCommand,
            0x02 => Self::TaskMgmtRequest,
            0x03 => Self::LoginRequest,
            0x04 => Self::TextRequest,
            0x05 => Self::DataOut,
            0x06 => Self::LogoutRequest,
            0x10 => Self::SnackRequest,
            0x20 => Self::NopIn,
            0x21 => Self::ScsiResponse,
            0x22 => Self::TaskMgmtResponse,
            0x23 => Self::LoginResponse,
            0x24 => Self::TextResponse,
            0x25 => Self::DataIn,
            0x26 => Self::LogoutResponse,
            0x31 => Self::R2t,
            0x32 => Self::AsyncMessage,
            0x3f => Self::Reject,
            other => return Err(PduError::UnknownOpcode(other)),
        })
    }

    /// True for opcodes an initiator sends.
    pub fn is_initiator(self) -> bool {
        (self as u8) < 0x20
    }
}

/// The raw opcode (low six bits of byte 0) of a BHS.
pub fn raw_opcode(bhs: &[u8; BHS_LEN]) -> u8 {
    bhs[0] & 0x3f
}

/// The decoded opcode of a BHS.
pub fn opcode(bhs: &[u8; BHS_LEN]) -> Result<Opcode, PduError> {
    Opcode::from_u8(bhs[0])
}

/// The immediate-delivery bit of a BHS.
pub fn immediate(bhs: &[u8; BHS_LEN]) -> bool {
    bhs[0] & IMMEDIATE_BIT != 0
}

/// TotalAHSLength in bytes (the wire field counts 4-byte words).
pub fn total_ahs_len(bhs: &[u8; BHS_LEN]) -> usize {
    usize::from(bhs[4]) * 4
}

/// DataSegmentLength in bytes, without padding.
pub fn data_segment_len(bhs: &[u8; BHS_LEN]) -> usize {
    get_u24(bhs, 5) as usize
}

/// The Initiator Task Tag (bytes 16..20).
pub fn itt(bhs: &[u8; BHS_LEN]) -> u32 {
    get_u32(bhs, 16)
}

/// The raw 8-byte LUN field (bytes 8..16).
pub fn lun(bhs: &[u8; BHS_LEN]) -> u64 {
    get_u64(bhs, 8)
}

/// Checks that `bhs` carries `expected`, ignoring the I bit.
pub(crate) fn expect_opcode(bhs: &[u8; BHS_LEN], expected: Opcode) -> Result<(), PduError> {
    let found = raw_opcode(bhs);
    if found == expected as u8 {
        Ok(())
    } else {
        Err(PduError::WrongOpcode {
            expected: expected as u8,
            found,
        })
    }
}

/// Writes byte 0 (opcode plus I bit) after zeroing the whole BHS.
pub(crate) fn start(out: &mut [u8; BHS_LEN], op: Opcode, immediate: bool) {
    *out = [0; BHS_LEN];
    out[0] = op as u8 | if immediate { IMMEDIATE_BIT } else { 0 };
}

/// Writes TotalAHSLength (in words) and the 24-bit DataSegmentLength.
pub(crate) fn put_lengths(out: &mut [u8; BHS_LEN], total_ahs_len: u8, data_segment_len: u32) {
    out[4] = total_ahs_len;
    put_u24(out, 5, data_segment_len);
}

/// Largest value DataSegmentLength can carry.
pub const MAX_DATA_SEGMENT_LEN: u32 = 0x00ff_ffff;

macro_rules! be_accessors {
    ($get:ident, $put:ident, $ty:ty, $n:expr) => {
        /// Reads a big-endian field at a constant offset.
        #[inline]
        pub(crate) fn $get(bhs: &[u8; BHS_LEN], at: usize) -> $ty {
            let mut b = [0u8; $n];
            b.copy_from_slice(&bhs[at..at + $n]);
            <$ty>::from_be_bytes(b)
        }
        /// Writes a big-endian field at a constant offset.
        #[inline]
        pub(crate) fn $put(out: &mut [u8; BHS_LEN], at: usize, v: $ty) {
            out[at..at + $n].copy_from_slice(&v.to_be_bytes());
        }
    };
}

be_accessors!(get_u16, put_u16, u16, 2);
be_accessors!(get_u32, put_u32, u32, 4);
be_accessors!(get_u64, put_u64, u64, 8);

/// Reads a 24-bit big-endian field.
#[inline]
pub(crate) fn get_u24(bhs: &[u8; BHS_LEN], at: usize) -> u32 {
    u32::from(bhs[at]) << 16 | u32::from(bhs[at + 1]) << 8 | u32::from(bhs[at + 2])
}

/// Writes a 24-bit big-endian field; bits above 24 are dropped.
#[inline]
pub(crate) fn put_u24(out: &mut [u8; BHS_LEN], at: usize, v: u32) {
    out[at] = (v >> 16) as u8;
    out[at + 1] = (v >> 8) as u8;
    out[at + 2] = v as u8;
}

/// Reads the 6-byte ISID.
#[inline]
pub(crate) fn get_isid(bhs: &[u8; BHS_LEN]) -> [u8; 6] {
    let mut isid = [0u8; 6];
    isid.copy_from_slice(&bhs[8..14]);
    isid
}

/// Whether `mask` is set in the flags byte `b`.
#[inline]
pub(crate) fn flag(b: u8, mask: u8) -> bool {
    b & mask != 0
}

/// `mask` if `on`, else 0: for building a flags byte.
#[inline]
pub(crate) fn set(on: bool, mask: u8) -> u8 {
    if on {
        mask
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcode_round_trip_and_unknown() {
        for code in 0u8..0x40 {
            match Opcode::from_u8(code) {
                Ok(op) => assert_eq!(op as u8, code),
                Err(PduError::UnknownOpcode(c)) => assert_eq!(c, code),
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(Opcode::from_u8(0x41).unwrap(), Opcode::ScsiCommand);
        assert!(Opcode::ScsiCommand.is_initiator());
        assert!(!Opcode::DataIn.is_initiator());
    }

    #[test]
    fn generic_views() {
        let mut b = [0u8; BHS_LEN];
        b[0] = 0x41;
        b[4] = 3;
        b[5..8].copy_from_slice(&[0x01, 0x02, 0x03]);
        b[16..20].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(opcode(&b).unwrap(), Opcode::ScsiCommand);
        assert!(immediate(&b));
        assert_eq!(total_ahs_len(&b), 12);
        assert_eq!(data_segment_len(&b), 0x010203);
        assert_eq!(itt(&b), 0xdead_beef);
    }
}
