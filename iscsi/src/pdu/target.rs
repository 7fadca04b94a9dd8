//! Headers of the PDUs a target sends (RFC 7143 §11.4–§11.17, opcodes 0x20
//! and above). Each struct is a plain value with `parse`/`encode` over a
//! borrowed `[u8; 48]`; neither direction allocates. Tests use `parse` to act
//! as an initiator.

use super::bhs::{
    expect_opcode, flag, get_isid, get_u16, get_u24, get_u32, get_u64, put_lengths, put_u16,
    put_u32, put_u64, set, start, Opcode, BHS_LEN, FINAL_BIT, RESERVED_TAG,
};
use super::initiator::stage_bits;
use super::{PduError, Stage};

/// SCSI Response header (RFC 7143 §11.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScsiResponse {
    /// o: bidirectional read residual overflow.
    pub bidi_overflow: bool,
    /// u: bidirectional read residual underflow.
    pub bidi_underflow: bool,
    /// O: residual overflow.
    pub residual_overflow: bool,
    /// U: residual underflow.
    pub residual_underflow: bool,
    /// iSCSI service response (0 command completed at target).
    pub response: u8,
    /// SCSI status byte.
    pub status: u8,
    /// TotalAHSLength in 4-byte words.
    pub total_ahs_len: u8,
    /// DataSegmentLength (sense/response data, 24-bit).
    pub data_segment_len: u32,
    /// Initiator Task Tag.
    pub itt: u32,
    /// SNACK Tag.
    pub snack_tag: u32,
    /// StatSN.
    pub statsn: u32,
    /// ExpCmdSN.
    pub exp_cmdsn: u32,
    /// MaxCmdSN.
    pub max_cmdsn: u32,
    /// ExpDataSN (number of Data-In PDUs sent for the command).
    pub exp_data_sn: u32,
    /// Bidirectional Read Residual Count.
    pub bidi_read_residual_count: u32,
    /// Residual Count.
    pub residual_count: u32,
}

impl ScsiResponse {
    /// Decodes a SCSI Response BHS.
    pub fn parse(bhs: &[u8; BHS_LEN]) -> Result<Self, PduError> {
        expect_opcode(bhs, Opcode::ScsiResponse)?;
        Ok(Self {
            bidi_overflow: flag(bhs[1], 0x10),
            bidi_underflow: flag(bhs[1], 0x08),
            residual_overflow: flag(bhs[1], 0x04),
            residual_underflow: flag(bhs[1], 0x02),
            response: bhs[2],
            status: bhs[3],
            total_ahs_len: bhs[4],
            data_segment_len: get_u24(bhs, 5),
            itt: get_u32(bhs, 16),
            snack_tag: get_u32(bhs, 20),
            statsn: get_u32(bhs, 24),
            exp_cmdsn: get_u32(bhs, 28),
            max_cmdsn: get_u32(bhs, 32),
            exp_data_sn: get_u32(bhs, 36),
            bidi_read_residual_count: get_u32(bhs, 40),
            residual_count: get_u32(bhs, 44),
        })
    }

    /// Encodes into `out`, overwriting all 48 bytes.
    pub fn encode(&self, out: &mut [u8; BHS_LEN]) {
        start(out, Opcode::ScsiResponse, false);
        out[1] = FINAL_BIT
            | set(self.bidi_overflow, 0x10)
            | set(self.bidi_underflow, 0x08)
            | set(self.residual_overflow, 0x04)
            | set(self.residual_underflow, 0x02);
        out[2] = self.response;
        out[3] = self.status;
        put_lengths(out, self.total_ahs_len, self.data_segment_len);
        put_u32(out, 16, self.itt);
        put_u32(out, 20, self.snack_tag);
        put_u32(out, 24, self.statsn);
        put_u32(out, 28, self.exp_cmdsn);
        put_u32(out, 32, self.max_cmdsn);
        put_u32(out, 36, self.exp_data_sn);
        put_u32(out, 40, self.bidi_read_residual_count);
        put_u32(out, 44, self.residual_count);
    }
}

/// SCSI Data-In header (RFC 7143 §11.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataIn {
    /// F: last PDU of the sequence.
    pub final_bit: bool,
    /// A: the target requests a DataACK SNACK (ERL > 0).
    pub acknowledge: bool,
    /// O: residual overflow (valid with S).
    pub residual_overflow: bool,
    /// U: residual underflow (valid with S).
    pub residual_underflow: bool,
    /// S: the PDU carries the command's status (phase collapse).
    pub status_present: bool,
    /// SCSI status byte (valid with S).
    pub status: u8,
    /// TotalAHSLength in 4-byte words.
    pub total_ahs_len: u8,
    /// DataSegmentLength (24-bit).
    pub data_segment_len: u32,
    /// Raw 8-byte LUN field (set with A, else reserved).
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag (set with A, else 0xffffffff).
    pub ttt: u32,
    /// StatSN (valid with S).
    pub statsn: u32,
    /// ExpCmdSN.
    pub exp_cmdsn: u32,
    /// MaxCmdSN.
    pub max_cmdsn: u32,
    /// DataSN.
    pub data_sn: u32,
    /// Buffer Offset.
    pub buffer_offset: u32,
    /// Residual Count (valid with S).
    pub residual_count: u32,
}

impl DataIn {
    /// Decodes a Data-In BHS.
    pub fn parse(bhs: &[u8; BHS_LEN]) -> Result<Self, PduError> {
        expect_opcode(bhs, Opcode::DataIn)?;
        Ok(Self {
            final_bit: flag(bhs[1], FINAL_BIT),
            acknowledge: flag(bhs[1], 0x40),
            residual_overflow: flag(bhs[1], 0x04),
            residual_underflow: flag(bhs[1], 0x02),
            status_present: flag(bhs[1], 0x01),
            status: bhs[3],
            total_ahs_len: bhs[4],
            data_segment_len: get_u24(bhs, 5),
            lun: get_u64(bhs, 8),
            itt: get_u32(bhs, 16),
            ttt: get_u32(bhs, 20),
            statsn: get_u32(bhs, 24),
            exp_cmdsn: get_u32(bhs, 28),
            max_cmdsn: get_u32(bhs, 32),
            data_sn: get_u32(bhs, 36),
            buffer_offset: get_u32(bhs, 40),
            residual_count: get_u32(bhs, 44),
        })
    }

    /// Encodes into `out`, overwriting all 48 bytes.
    pub fn encode(&self, out: &mut [u8; BHS_LEN]) {
        start(out, Opcode::DataIn, false);
        out[1] = set(self.final_bit, FINAL_BIT)
            | set(self.acknowledge, 0x40)
            | set(self.residual_overflow, 0x04)
            | set(self.residual_underflow, 0x02)
            | set(self.status_present, 0x01);
        out[3] = self.status;
        put_lengths(out, self.total_ahs_len, self.data_segment_len);
        put_u64(out, 8, self.lun);
        put_u32(out, 16, self.itt);
        put_u32(out, 20, self.ttt);
        put_u32(out, 24, self.statsn);
        put_u32(out, 28, self.exp_cmdsn);
        put_u32(out, 32, self.max_cmdsn);
        put_u32(out, 36, self.data_sn);
        put_u32(out, 40, self.buffer_offset);
        put_u32(out, 44, self.residual_count);
    }
}

/// Ready To Transfer header (RFC 7143 §11.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct R2t {
    /// TotalAHSLength in 4-byte words.
    pub total_ahs_len: u8,
    /// DataSegmentLength (must be 0).
    pub data_segment_len: u32,
    /// Raw 8-byte LUN field.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag.
    pub ttt: u32,
    /// StatSN (next StatSN, not advanced).
    pub statsn: u32,
    /// ExpCmdSN.
    pub exp_cmdsn: u32,
    /// MaxCmdSN.
    pub max_cmdsn: u32,
    /// R2TSN.
    pub r2tsn: u32,
    /// Buffer Offset.
    pub buffer_offset: u32,
    /// Desired Data Transfer Length.
    pub desired_data_transfer_length: u32,
}

impl R2t {
    /// Decodes an R2T BHS.
    pub fn parse(bhs: &[u8; BHS_LEN]) -> Result<Self, PduError> {
        expect_opcode(bhs, Opcode::R2t)?;
        Ok(Self {
            total_ahs_len: bhs[4],
            data_segment_len: get_u24(bhs, 5),
            lun: get_u64(bhs, 8),
            itt: get_u32(bhs, 16),
            ttt: get_u32(bhs, 20),
            statsn: get_u32(bhs, 24),
            exp_cmdsn: get_u32(bhs, 28),
            max_cmdsn: get_u32(bhs, 32),
            r2tsn: get_u32(bhs, 36),
            buffer_offset: get_u32(bhs, 40),
            desired_data_transfer_length: get_u32(bhs, 44),
        })
    }

    /// Encodes into `out`, overwriting all 48 bytes.
    pub fn encode(&self, out: &mut [u8; BHS_LEN]) {
        start(out, Opcode::R2t, false);
        out[1] = FINAL_BIT;
        put_lengths(out, self.total_ahs_len, self.data_segment_len);
        put_u64(out, 8, self.lun);
        put_u32(out, 16, self.itt);
        put_u32(out, 20, self.ttt);
        put_u32(out, 24, self.statsn);
        put_u32(out, 28, self.exp_cmdsn);
        put_u32(out, 32, self.max_cmdsn);
        put_u32(out, 36, self.r2tsn);
        put_u32(out, 40, self.buffer_offset);
        put_u32(out, 44, self.desired_data_transfer_length);
    }
}

/// NOP-In header (RFC 7143 §11.19).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NopIn {
    /// TotalAHSLength in 4-byte words.
    pub total_ahs_len: u8,
    /// DataSegmentLength (24-bit).
    pub data_segment_len: u32,
    /// Raw 8-byte LUN field.
    pub lun: u64,
    /// Initiator Task Tag (0xffffffff for a target-initiated ping).
    pub itt: u32,
    /// Target Transfer Tag (0xffffffff when no answer is wanted).
    pub ttt: u32,
    /// StatSN.
    pub statsn: u32,
    /// ExpCmdSN.
    pub exp_cmdsn: u32,
    /// MaxCmdSN.
    pub max_cmdsn: u32,
}

impl NopIn {
    /// Decodes a NOP-In BHS.
    pub fn parse(bhs: &[u8; BHS_LEN]) -> Result<Self, PduError> {
        expect_opcode(bhs, Opcode::NopIn)?;
        Ok(Self {
            total_ahs_len: bhs[4],
            data_segment_len: get_u24(bhs, 5),
            lun: get_u64(bhs, 8),
            itt: get_u32(bhs, 16),
            ttt: get_u32(bhs, 20),
            statsn: get_u32(bhs, 24),
            exp_cmdsn: get_u32(bhs, 28),
            max_cmdsn: get_u32(bhs, 32),
        })
    }

    /// Encodes into `out`, overwriting all 48 bytes.
    pub fn encode(&self, out: &mut [u8; BHS_LEN]) {
        start(out, Opcode::NopIn, false);
        out[1] = FINAL_BIT;
        put_lengths(out, self.total_ahs_len, self.data_segment_len);
        put_u64(out, 8, self.lun);
        put_u32(out, 16, self.itt);
        put_u32(out, 20, self.ttt);
        put_u32(out, 24, self.statsn);
        put_u32(out, 28, self.exp_cmdsn);
        put_u32(out, 32, self.max_cmdsn);
    }
}

/// SCSI Task Management Function Response header (RFC 7143 §11.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskMgmtResponse {
    /// Response (0 function complete, 1 task does not exist, … 255 rejected).
    pub response: u8,
    /// TotalAHSLength in 4-byte words.
    pub total_ahs_len: u8,
    /// DataSegmentLength (must be 0).
    pub data_segment_len: u32,
    /// Initiator Task Tag of the request.
    pub itt: u32,
    /// StatSN.
    pub statsn: u32,
    /// ExpCmdSN.
    pub exp_cmdsn: u32,
    /// MaxCmdSN.
    pub max_cmdsn: u32,
}

impl TaskMgmtResponse {
    /// Decodes a Task Management Function Response BHS.
    pub fn parse(bhs: &[u8; BHS_LEN]) -> Result<Self, PduError> {
        expect_opcode(bhs, Opcode::TaskMgmtResponse)?;
        Ok(Self {
            response: bhs[2],
            total_ahs_len: bhs[4],
            data_segment_len: get_u24(bhs, 5),
            itt: get_u32(bhs, 16),
            statsn: get_u32(bhs, 24),
            exp_cmdsn: get_u32(bhs, 28),
            max_cmdsn: get_u32(bhs, 32),
        })
    }

    /// Encodes into `out`, overwriting all 48 bytes.
    pub fn encode(&self, out: &mut [u8; BHS_LEN]) {
        start(out, Opcode::TaskMgmtResponse, false);
        out[1] = FINAL_BIT;
        out[2] = self.response;
        put_lengths(out, self.total_ahs_len, self.data_segment_len);
        put_u32(out, 16, self.itt);
        put_u32(out, 24, self.statsn);
        put_u32(out, 28, self.exp_cmdsn);
        put_u32(out, 32, self.max_cmdsn);
    }
}

/// Login Response header (RFC 7143 §11.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginResponse {
    /// T: the target transits to `nsg`.
    pub transit: bool,
    /// C: the text is continued in the next response.
    pub continue_: bool,
    /// Current stage.
    pub csg: Stage,
    /// Next stage (meaningful when `transit`).
    pub nsg: Stage,
    /// Version-max.
    pub version_max: u8,
    /// Version-active.
    pub version_active: u8,
    /// TotalAHSLength in 4-byte words.
    pub total_ahs_len: u8,
    /// DataSegmentLength (24-bit).
    pub data_segment_len: u32,
    /// Initiator Session ID (echoed).
    pub isid: [u8; 6],
    /// Target Session Identifying Handle (set on the final response).
    pub tsih: u16,
    /// Initiator Task Tag (echoed).
    pub itt: u32,
    /// StatSN.
    pub statsn: u32,
    /// ExpCmdSN.
    pub exp_cmdsn: u32,
    /// MaxCmdSN.
    pub max_cmdsn: u32,
    /// Status-Class (0 success, 1 redirect, 2 initiator error, 3 target error).
    pub status_class: u8,
    /// Status-Detail.
    pub status_detail: u8,
}

impl LoginResponse {
    /// Decodes a Login Response BHS.
    pub fn parse(bhs: &[u8; BHS_LEN]) -> Result<Self, PduError> {
        expect_opcode(bhs, Opcode::LoginResponse)?;
        Ok(Self {
            transit: flag(bhs[1], 0x80),
            continue_: flag(bhs[1], 0x40),
            csg: stage_bits((bhs[1] >> 2) & 0x03)?,
            nsg: stage_bits(bhs[1] & 0x03)?,
            version_max: bhs[2],
            version_active: bhs[3],
            total_ahs_len: bhs[4],
            data_segment_len: get_u24(bhs, 5),
            isid: get_isid(bhs),
            tsih: get_u16(bhs, 14),
            itt: get_u32(bhs, 16),
            statsn: get_u32(bhs, 24),
            exp_cmdsn: get_u32(bhs, 28),
            max_cmdsn: get_u32(bhs, 32),
            status_class: bhs[36],
            status_detail: bhs[37],
        })
    }

    /// Encodes into `out`, overwriting all 48 bytes.
    pub fn encode(&self, out: &mut [u8; BHS_LEN]) {
        start(out, Opcode::LoginResponse, false);
        out[1] = set(self.transit, 0x80)
            | set(self.continue_, 0x40)
            | (self.csg as u8) << 2
            | self.nsg as u8;
        out[2] = self.version_max;
        out[3] = self.version_active;
        put_lengths(out, self.total_ahs_len, self.data_segment_len);
        out[8..14].copy_from_slice(&self.isid);
        put_u16(out, 14, self.tsih);
        put_u32(out, 16, self.itt);
        put_u32(out, 24, self.statsn);
        put_u32(out, 28, self.exp_cmdsn);
        put_u32(out, 32, self.max_cmdsn);
        out[36] = self.status_class;
        out[37] = self.status_detail;
    }
}

/// Text Response header (RFC 7143 §11.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextResponse {
    /// F: last PDU of the text response.
    pub final_bit: bool,
    /// C: the text is continued in the next PDU.
    pub continue_: bool,
    /// TotalAHSLength in 4-byte words.
    pub total_ahs_len: u8,
    /// DataSegmentLength (24-bit).
    pub data_segment_len: u32,
    /// Raw 8-byte LUN field.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag (0xffffffff when the exchange is complete).
    pub ttt: u32,
    /// StatSN.
    pub statsn: u32,
    /// ExpCmdSN.
    pub exp_cmdsn: u32,
    /// MaxCmdSN.
    pub max_cmdsn: u32,
}

impl TextResponse {
    /// Decodes a Text Response BHS.
    pub fn parse(bhs: &[u8; BHS_LEN]) -> Result<Self, PduError> {
        expect_opcode(bhs, Opcode::TextResponse)?;
        Ok(Self {
            final_bit: flag(bhs[1], FINAL_BIT),
            continue_: flag(bhs[1], 0x40),
            total_ahs_len: bhs[4],
            data_segment_len: get_u24(bhs, 5),
            lun: get_u64(bhs, 8),
            itt: get_u32(bhs, 16),
            ttt: get_u32(bhs, 20),
            statsn: get_u32(bhs, 24),
            exp_cmdsn: get_u32(bhs, 28),
            max_cmdsn: get_u32(bhs, 32),
        })
    }

    /// Encodes into `out`, overwriting all 48 bytes.
    pub fn encode(&self, out: &mut [u8; BHS_LEN]) {
        start(out, Opcode::TextResponse, false);
        out[1] = set(self.final_bit, FINAL_BIT) | set(self.continue_, 0x40);
        put_lengths(out, self.total_ahs_len, self.data_segment_len);
        put_u64(out, 8, self.lun);
        put_u32(out, 16, self.itt);
        put_u32(out, 20, self.ttt);
        put_u32(out, 24, self.statsn);
        put_u32(out, 28, self.exp_cmdsn);
        put_u32(out, 32, self.max_cmdsn);
    }
}

/// Logout Response header (RFC 7143 §11.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogoutResponse {
    /// Response (0 closed successfully, 1 CID not found, 2 recovery unsupported, 3 cleanup failed).
    pub response: u8,
    /// TotalAHSLength in 4-byte words.
    pub total_ahs_len: u8,
    /// DataSegmentLength (must be 0).
    pub data_segment_len: u32,
    /// Initiator Task Tag.
    pub itt: u32,
    /// StatSN.
    pub statsn: u32,
    /// ExpCmdSN.
    pub exp_cmdsn: u32,
    /// MaxCmdSN.
    pub max_cmdsn: u32,
    /// Time2Wait in seconds.
    pub time2wait: u16,
    /// Time2Retain in seconds.
    pub time2retain: u16,
}

impl LogoutResponse {
    /// Decodes a Logout Response BHS.
    pub fn parse(bhs: &[u8; BHS_LEN]) -> Result<Self, PduError> {
        expect_opcode(bhs, Opcode::LogoutResponse)?;
        Ok(Self {
            response: bhs[2],
            total_ahs_len: bhs[4],
            data_segment_len: get_u24(bhs, 5),
            itt: get_u32(bhs, 16),
            statsn: get_u32(bhs, 24),
            exp_cmdsn: get_u32(bhs, 28),
            max_cmdsn: get_u32(bhs, 32),
            time2wait: get_u16(bhs, 40),
            time2retain: get_u16(bhs, 42),
        })
    }

    /// Encodes into `out`, overwriting all 48 bytes.
    pub fn encode(&self, out: &mut [u8; BHS_LEN]) {
        start(out, Opcode::LogoutResponse, false);
        out[1] = FINAL_BIT;
        out[2] = self.response;
        put_lengths(out, self.total_ahs_len, self.data_segment_len);
        put_u32(out, 16, self.itt);
        put_u32(out, 24, self.statsn);
        put_u32(out, 28, self.exp_cmdsn);
        put_u32(out, 32, self.max_cmdsn);
        put_u16(out, 40, self.time2wait);
        put_u16(out, 42, self.time2retain);
    }
}

/// Asynchronous Message header (RFC 7143 §11.9); the ITT is always 0xffffffff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncMessage {
    /// TotalAHSLength in 4-byte words.
    pub total_ahs_len: u8,
    /// DataSegmentLength (sense data and/or vendor data, 24-bit).
    pub data_segment_len: u32,
    /// Raw 8-byte LUN field (event 0).
    pub lun: u64,
    /// StatSN.
    pub statsn: u32,
    /// ExpCmdSN.
    pub exp_cmdsn: u32,
    /// MaxCmdSN.
    pub max_cmdsn: u32,
    /// AsyncEvent (0 SCSI event, 1 logout request, 2 drop connection, …).
    pub event: u8,
    /// AsyncVCode (vendor code, event 255).
    pub vcode: u8,
    /// Parameter1.
    pub param1: u16,
    /// Parameter2.
    pub param2: u16,
    /// Parameter3.
    pub param3: u16,
}

impl AsyncMessage {
    /// Decodes an Asynchronous Message BHS.
    pub fn parse(bhs: &[u8; BHS_LEN]) -> Result<Self, PduError> {
        expect_opcode(bhs, Opcode::AsyncMessage)?;
        Ok(Self {
            total_ahs_len: bhs[4],
            data_segment_len: get_u24(bhs, 5),
            lun: get_u64(bhs, 8),
            statsn: get_u32(bhs, 24),
            exp_cmdsn: get_u32(bhs, 28),
            max_cmdsn: get_u32(bhs, 32),
            event: bhs[36],
            vcode: bhs[37],
            param1: get_u16(bhs, 38),
            param2: get_u16(bhs, 40),
            param3: get_u16(bhs, 42),
        })
    }

    /// Encodes into `out`, overwriting all 48 bytes.
    pub fn encode(&self, out: &mut [u8; BHS_LEN]) {
        start(out, Opcode::AsyncMessage, false);
        out[1] = FINAL_BIT;
        put_lengths(out, self.total_ahs_len, self.data_segment_len);
        put_u64(out, 8, self.lun);
        put_u32(out, 16, RESERVED_TAG);
        put_u32(out, 24, self.statsn);
        put_u32(out, 28, self.exp_cmdsn);
        put_u32(out, 32, self.max_cmdsn);
        out[36] = self.event;
        out[37] = self.vcode;
        put_u16(out, 38, self.param1);
        put_u16(out, 40, self.param2);
        put_u16(out, 42, self.param3);
    }
}

/// Reject header (RFC 7143 §11.17); the data segment is the rejected BHS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    /// Reason (0x02 data digest error, 0x04 protocol error, 0x05 command not supported, 0x09 invalid PDU field, …).
    pub reason: u8,
    /// TotalAHSLength in 4-byte words.
    pub total_ahs_len: u8,
    /// DataSegmentLength (normally 48: the rejected header).
    pub data_segment_len: u32,
    /// StatSN.
    pub statsn: u32,
    /// ExpCmdSN.
    pub exp_cmdsn: u32,
    /// MaxCmdSN.
    pub max_cmdsn: u32,
    /// DataSN/R2TSN (data SNACK rejects), else reserved.
    pub data_sn: u32,
}

impl Reject {
    /// Decodes a Reject BHS.
    pub fn parse(bhs: &[u8; BHS_LEN]) -> Result<Self, PduError> {
        expect_opcode(bhs, Opcode::Reject)?;
        Ok(Self {
            reason: bhs[2],
            total_ahs_len: bhs[4],
            data_segment_len: get_u24(bhs, 5),
            statsn: get_u32(bhs, 24),
            exp_cmdsn: get_u32(bhs, 28),
            max_cmdsn: get_u32(bhs, 32),
            data_sn: get_u32(bhs, 36),
        })
    }

    /// Encodes into `out`, overwriting all 48 bytes.
    pub fn encode(&self, out: &mut [u8; BHS_LEN]) {
        start(out, Opcode::Reject, false);
        out[1] = FINAL_BIT;
        out[2] = self.reason;
        put_lengths(out, self.total_ahs_len, self.data_segment_len);
        put_u32(out, 16, RESERVED_TAG);
        put_u32(out, 24, self.statsn);
        put_u32(out, 28, self.exp_cmdsn);
        put_u32(out, 32, self.max_cmdsn);
        put_u32(out, 36, self.data_sn);
    }
}
