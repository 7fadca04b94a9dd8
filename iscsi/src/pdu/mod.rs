//! Sans-IO PDU codec (RFC 7143 §11): framing, digests and the typed Basic
//! Header Segment of every PDU, in both directions.
//!
//! ```text
//! bytes -> split_pdu (length, digests) -> RawPdu { bhs, ahs, data }
//!       -> Header::parse (initiator PDUs) | <Type>::parse (any PDU)
//! <Type>::encode -> [u8; 48] -> write_pdu | header_digest/data_digest (iovecs)
//! ```
//! Header parse/encode never allocate; data segments stay borrowed.

mod bhs;
mod digest;
mod header;
mod initiator;
mod target;
#[cfg(test)]
mod tests;

pub use bhs::{
    data_segment_len, immediate, itt, lun, opcode, raw_opcode, total_ahs_len, Opcode, BHS_LEN,
    MAX_DATA_SEGMENT_LEN, RESERVED_TAG,
};
pub use digest::{
    data_digest, data_digest_unpadded, header_digest, padded, pdu_wire_len, split_pdu, write_pdu,
    Digests, RawPdu, DIGEST_LEN,
};
pub use header::Header;
pub use initiator::{
    DataOut, LoginRequest, LogoutRequest, NopOut, ScsiCommand, SnackRequest, TaskMgmtRequest,
    TextRequest,
};
pub use target::{
    AsyncMessage, DataIn, LoginResponse, LogoutResponse, NopIn, R2t, Reject, ScsiResponse,
    TaskMgmtResponse, TextResponse,
};

/// What can be wrong with a PDU on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    /// The opcode is not defined by RFC 7143.
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    /// A target-to-initiator opcode arrived at the target.
    #[error("opcode {0:#04x} is not sent by initiators")]
    NotFromInitiator(u8),
    /// A typed parser was handed a BHS of another opcode.
    #[error("expected opcode {expected:#04x}, found {found:#04x}")]
    WrongOpcode {
        /// The parser's opcode.
        expected: u8,
        /// The BHS's opcode.
        found: u8,
    },
    /// A reserved or constrained field holds an illegal value.
    #[error("invalid field: {0}")]
    InvalidField(&'static str),
    /// The header digest does not match.
    #[error("header digest mismatch: computed {expected:#010x}, received {found:#010x}")]
    HeaderDigest {
        /// Digest computed over the received header.
        expected: u32,
        /// Digest received.
        found: u32,
    },
    /// The data digest does not match.
    #[error("data digest mismatch: computed {expected:#010x}, received {found:#010x}")]
    DataDigest {
        /// Digest computed over the received data.
        expected: u32,
        /// Digest received.
        found: u32,
    },
    /// The data segment exceeds our declared MaxRecvDataSegmentLength.
    #[error("data segment of {len} bytes exceeds the limit of {max}")]
    DataSegmentTooLong {
        /// DataSegmentLength of the PDU.
        len: usize,
        /// The limit in force.
        max: usize,
    },
}

/// A login stage (CSG/NSG, RFC 7143 §11.12.3); the value 2 is reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Stage {
    /// SecurityNegotiation (0).
    SecurityNegotiation = 0,
    /// LoginOperationalNegotiation (1).
    LoginOperationalNegotiation = 1,
    /// FullFeaturePhase (3).
    FullFeaturePhase = 3,
}

impl Stage {
    /// Decodes two stage bits; `None` for the reserved value 2.
    pub fn from_bits(bits: u8) -> Option<Self> {
        match bits & 0x03 {
            0 => Some(Self::SecurityNegotiation),
            1 => Some(Self::LoginOperationalNegotiation),
            3 => Some(Self::FullFeaturePhase),
            _ => None,
        }
    }
}
