//! Headers of the PDUs an initiator sends (RFC 7143 §11.3–§11.16, even
//! opcodes below 0x20). Each struct is a plain value with `parse`/`encode`
//! over a borrowed `[u8; 48]`; neither direction allocates.

use super::bhs::{
    expect_opcode, flag, get_isid, get_u16, get_u24, get_u32, get_u64, put_lengths, put_u16,
    put_u32, put_u64, set, start, Opcode, BHS_LEN, FINAL_BIT, IMMEDIATE_BIT,
};
use super::{PduError, Stage};

/// SCSI Command header (RFC 7143 §11.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScsiCommand {
    /// I: immediate delivery.
    pub immediate: bool,
    /// F: no unsolicited Data-Out PDUs follow.
    pub final_bit: bool,
    /// R: the command reads data from the target.
    pub read: bool,
    /// W: the command writes data to the target.
    pub write: bool,
    /// ATTR: task attribute (0 untagged, 1 simple, 2 ordered, 3 head of queue, 4 ACA).
    pub attr: u8,
    /// TotalAHSLength in 4-byte words.
    pub total_ahs_len: u8,
    /// DataSegmentLength (immediate data bytes, 24-bit).
    pub data_segment_len: u32,
    /// Raw 8-byte LUN field.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Expected Data Transfer Length.
    pub expected_data_transfer_length: u32,
    /// CmdSN.
    pub cmdsn: u32,
    /// ExpStatSN.
    pub exp_statsn: u32,
    /// The first 16 bytes of the CDB.
    pub cdb: [u8; 16],
}

impl ScsiCommand {
    /// Decodes a SCSI Command BHS.
    pub fn parse(bhs: &[u8; BHS_LEN]) -> Result<Self, PduError> {
        expect_opcode(bhs, Opcode::ScsiCommand)?;
        let mut cdb = [0u8; 16];
        cdb.copy_from_slice(&bhs[32..48]);
        Ok(Self {
            immediate: flag(bhs[0], IMMEDIATE_BIT),
            final_bit: flag(bhs[1], FINAL_BIT),
            read: flag(bhs[1], 0x40),
            write: flag(bhs[1], 0x20),
            attr: bhs[1] & 0x07,
            total_ahs_len: bhs[4],
            data_segment_len: get_u24(bhs, 5),
            lun: get_u64(bhs, 8),
            itt: get_u32(bhs, 16),
            expected_data_transfer_length: get_u32(bhs, 20),
            cmdsn: get_u32(bhs, 24),
            exp_statsn: get_u32(bhs, 28),
            cdb,
        })
    }

    /// Encodes into `out`, overwriting all 48 bytes.
    pub fn encode(&self, out: &mut [u8; BHS_LEN]) {
        start(out, Opcode::ScsiCommand, self.immediate);
        out[1] = set(self.final_bit, FINAL_BIT)
            | set(self.read, 0x40)
            | set(self.write, 0x20)
            | (self.attr & 0x07);
        put_lengths(out, self.total_ahs_len, self.data_segment_len);
        put_u64(out, 8, self.lun);
        put_u32(out, 16, self.itt);
        put_u32(out, 20, self.expected_data_transfer_length);
        put_u32(out, 24, self.cmdsn);
        put_u32(out, 28, self.exp_statsn);
        out[32..48].copy_from_slice(&self.cdb);
    }
}

/// SCSI Data-Out header (RFC 7143 §11.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataOut {
    /// F: last PDU of the sequence.
    pub final_bit: bool,
    /// TotalAHSLength in 4-byte words.
    pub total_ahs_len: u8,
    /// DataSegmentLength (24-bit).
    pub data_segment_len: u32,
    /// Raw 8-byte LUN field.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag (0xffffffff for unsolicited data).
    pub ttt: u32,
    /// ExpStatSN.
    pub exp_statsn: u32,
    /// DataSN within the sequence.
    pub data_sn: u32,
    /// Buffer Offset.
    pub buffer_offset: u32,
}

impl DataOut {
    /// Decodes a Data-Out BHS.
    pub fn parse(bhs: &[u8; BHS_LEN]) -> Result<Self, PduError> {
        expect_opcode(bhs, Opcode::DataOut)?;
        Ok(Self {
            final_bit: flag(bhs[1], FINAL_BIT),
            total_ahs_len: bhs[4],
            data_segment_len: get_u24(bhs, 5),
            lun: get_u64(bhs, 8),
            itt: get_u32(bhs, 16),
            ttt: get_u32(bhs, 20),
            exp_statsn: get_u32(bhs, 28),
            data_sn: get_u32(bhs, 36),
            buffer_offset: get_u32(bhs, 40),
        })
    }

    /// Encodes into `out`, overwriting all 48 bytes.
    pub fn encode(&self, out: &mut [u8; BHS_LEN]) {
        start(out, Opcode::DataOut, false);
        out[1] = set(self.final_bit, FINAL_BIT);
        put_lengths(out, self.total_ahs_len, self.data_segment_len);
        put_u64(out, 8, self.lun);
        put_u32(out, 16, self.itt);
        put_u32(out, 20, self.ttt);
        put_u32(out, 28, self.exp_statsn);
        put_u32(out, 36, self.data_sn);
        put_u32(out, 40, self.buffer_offset);
    }
}

/// NOP-Out header (RFC 7143 §11.18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NopOut {
    /// I: immediate delivery.
    pub immediate: bool,
    /// TotalAHSLength in 4-byte words.
    pub total_ahs_len: u8,
    /// DataSegmentLength (ping data, 24-bit).
    pub data_segment_len: u32,
    /// Raw 8-byte LUN field.
    pub lun: u64,
    /// Initiator Task Tag (0xffffffff when answering a NOP-In).
    pub itt: u32,
    /// Target Transfer Tag (echoes a NOP-In's TTT, else 0xffffffff).
    pub ttt: u32,
    /// CmdSN.
    pub cmdsn: u32,
    /// ExpStatSN.
    pub exp_statsn: u32,
}

impl NopOut {
    /// Decodes a NOP-Out BHS.
    pub fn parse(bhs: &[u8; BHS_LEN]) -> Result<Self, PduError> {
        expect_opcode(bhs, Opcode::NopOut)?;
        Ok(Self {
            immediate: flag(bhs[0], IMMEDIATE_BIT),
            total_ahs_len: bhs[4],
            data_segment_len: get_u24(bhs, 5),
            lun: get_u64(bhs, 8),
            itt: get_u32(bhs, 16),
            ttt: get_u32(bhs, 20),
            cmdsn: get_u32(bhs, 24),
            exp_statsn: get_u32(bhs, 28),
        })
    }

    /// Encodes into `out`, overwriting all 48 bytes.
    pub fn encode(&self, out: &mut [u8; BHS_LEN]) {
        start(out, Opcode::NopOut, self.immediate);
        out[1] = FINAL_BIT;
        put_lengths(out, self.total_ahs_len, self.data_segment_len);
        put_u64(out, 8, self.lun);
        put_u32(out, 16, self.itt);
        put_u32(out, 20, self.ttt);
        put_u32(out, 24, self.cmdsn);
        put_u32(out, 28, self.exp_statsn);
    }
}

/// SCSI Task Management Function Request header (RFC 7143 §11.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskMgmtRequest {
    /// I: immediate delivery.
    pub immediate: bool,
    /// Function code (1 ABORT TASK … 8 TASK REASSIGN), 7 bits.
    pub function: u8,
    /// TotalAHSLength in 4-byte words (must be 0).
    pub total_ahs_len: u8,
    /// DataSegmentLength (must be 0).
    pub data_segment_len: u32,
    /// Raw 8-byte LUN field.
    pub lun: u64,
    /// Initiator Task Tag of this request.
    pub itt: u32,
    /// Referenced Task Tag (ABORT TASK, TASK REASSIGN).
    pub referenced_task_tag: u32,
    /// CmdSN.
    pub cmdsn: u32,
    /// ExpStatSN.
    pub exp_statsn: u32,
    /// RefCmdSN.
    pub ref_cmdsn: u32,
    /// ExpDataSN (TASK REASSIGN).
    pub exp_data_sn: u32,
}

impl TaskMgmtRequest {
    /// Decodes a Task Management Function Request BHS.
    pub fn parse(bhs: &[u8; BHS_LEN]) -> Result<Self, PduError> {
        expect_opcode(bhs, Opcode::TaskMgmtRequest)?;
        Ok(Self {
            immediate: flag(bhs[0], IMMEDIATE_BIT),
            function: bhs[1] & 0x7f,
            total_ahs_len: bhs[4],
            data_segment_len: get_u24(bhs, 5),
            lun: get_u64(bhs, 8),
            itt: get_u32(bhs, 16),
            referenced_task_tag: get_u32(bhs, 20),
            cmdsn: get_u32(bhs, 24),
            exp_statsn: get_u32(bhs, 28),
            ref_cmdsn: get_u32(bhs, 32),
            exp_data_sn: get_u32(bhs, 36),
        })
    }

    /// Encodes into `out`, overwriting all 48 bytes.
    pub fn encode(&self, out: &mut [u8; BHS_LEN]) {
        start(out, Opcode::TaskMgmtRequest, self.immediate);
        out[1] = FINAL_BIT | (self.function & 0x7f);
        put_lengths(out, self.total_ahs_len, self.data_segment_len);
        put_u64(out, 8, self.lun);
        put_u32(out, 16, self.itt);
        put_u32(out, 20, self.referenced_task_tag);
        put_u32(out, 24, self.cmdsn);
        put_u32(out, 28, self.exp_statsn);
        put_u32(out, 32, self.ref_cmdsn);
        put_u32(out, 36, self.exp_data_sn);
    }
}

/// Decodes the CSG/NSG bit pair of a login PDU.
pub(crate) fn stage_bits(bits: u8) -> Result<Stage, PduError> {
    Stage::from_bits(bits).ok_or(PduError::InvalidField("login stage 2 is reserved"))
}

/// Login Request header (RFC 7143 §11.12); the I bit is always set on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginRequest {
    /// T: the initiator is ready to transit to `nsg`.
    pub transit: bool,
    /// C: the text is continued in the next PDU.
    pub continue_: bool,
    /// Current stage.
    pub csg: Stage,
    /// Next stage (meaningful when `transit`).
    pub nsg: Stage,
    /// Version-max.
    pub version_max: u8,
    /// Version-min.
    pub version_min: u8,
    /// TotalAHSLength in 4-byte words.
    pub total_ahs_len: u8,
    /// DataSegmentLength (24-bit).
    pub data_segment_len: u32,
    /// Initiator Session ID.
    pub isid: [u8; 6],
    /// Target Session Identifying Handle (0 for a new session).
    pub tsih: u16,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Connection ID.
    pub cid: u16,
    /// CmdSN.
    pub cmdsn: u32,
    /// ExpStatSN.
    pub exp_statsn: u32,
}

impl LoginRequest {
    /// Decodes a Login Request BHS.
    pub fn parse(bhs: &[u8; BHS_LEN]) -> Result<Self, PduError> {
        expect_opcode(bhs, Opcode::LoginRequest)?;
        Ok(Self {
            transit: flag(bhs[1], 0x80),
            continue_: flag(bhs[1], 0x40),
            csg: stage_bits((bhs[1] >> 2) & 0x03)?,
            nsg: stage_bits(bhs[1] & 0x03)?,
            version_max: bhs[2],
            version_min: bhs[3],
            total_ahs_len: bhs[4],
            data_segment_len: get_u24(bhs, 5),
            isid: get_isid(bhs),
            tsih: get_u16(bhs, 14),
            itt: get_u32(bhs, 16),
            cid: get_u16(bhs, 20),
            cmdsn: get_u32(bhs, 24),
            exp_statsn: get_u32(bhs, 28),
        })
    }

    /// Encodes into `out`, overwriting all 48 bytes.
    pub fn encode(&self, out: &mut [u8; BHS_LEN]) {
        start(out, Opcode::LoginRequest, true);
        out[1] = set(self.transit, 0x80)
            | set(self.continue_, 0x40)
            | (self.csg as u8) << 2
            | self.nsg as u8;
        out[2] = self.version_max;
        out[3] = self.version_min;
        put_lengths(out, self.total_ahs_len, self.data_segment_len);
        out[8..14].copy_from_slice(&self.isid);
        put_u16(out, 14, self.tsih);
        put_u32(out, 16, self.itt);
        put_u16(out, 20, self.cid);
        put_u32(out, 24, self.cmdsn);
        put_u32(out, 28, self.exp_statsn);
    }
}

/// Text Request header (RFC 7143 §11.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextRequest {
    /// I: immediate delivery.
    pub immediate: bool,
    /// F: last PDU of the text request.
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
    /// Target Transfer Tag (0xffffffff on a new request).
    pub ttt: u32,
    /// CmdSN.
    pub cmdsn: u32,
    /// ExpStatSN.
    pub exp_statsn: u32,
}

impl TextRequest {
    /// Decodes a Text Request BHS.
    pub fn parse(bhs: &[u8; BHS_LEN]) -> Result<Self, PduError> {
        expect_opcode(bhs, Opcode::TextRequest)?;
        Ok(Self {
            immediate: flag(bhs[0], IMMEDIATE_BIT),
            final_bit: flag(bhs[1], FINAL_BIT),
            continue_: flag(bhs[1], 0x40),
            total_ahs_len: bhs[4],
            data_segment_len: get_u24(bhs, 5),
            lun: get_u64(bhs, 8),
            itt: get_u32(bhs, 16),
            ttt: get_u32(bhs, 20),
            cmdsn: get_u32(bhs, 24),
            exp_statsn: get_u32(bhs, 28),
        })
    }

    /// Encodes into `out`, overwriting all 48 bytes.
    pub fn encode(&self, out: &mut [u8; BHS_LEN]) {
        start(out, Opcode::TextRequest, self.immediate);
        out[1] = set(self.final_bit, FINAL_BIT) | set(self.continue_, 0x40);
        put_lengths(out, self.total_ahs_len, self.data_segment_len);
        put_u64(out, 8, self.lun);
        put_u32(out, 16, self.itt);
        put_u32(out, 20, self.ttt);
        put_u32(out, 24, self.cmdsn);
        put_u32(out, 28, self.exp_statsn);
    }
}

/// Logout Request header (RFC 7143 §11.14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogoutRequest {
    /// I: immediate delivery.
    pub immediate: bool,
    /// Reason code (0 close session, 1 close connection, 2 remove for recovery), 7 bits.
    pub reason_code: u8,
    /// TotalAHSLength in 4-byte words (must be 0).
    pub total_ahs_len: u8,
    /// DataSegmentLength (must be 0).
    pub data_segment_len: u32,
    /// Initiator Task Tag.
    pub itt: u32,
    /// CID of the connection to close (reserved when closing the session).
    pub cid: u16,
    /// CmdSN.
    pub cmdsn: u32,
    /// ExpStatSN.
    pub exp_statsn: u32,
}

impl LogoutRequest {
    /// Decodes a Logout Request BHS.
    pub fn parse(bhs: &[u8; BHS_LEN]) -> Result<Self, PduError> {
        expect_opcode(bhs, Opcode::LogoutRequest)?;
        Ok(Self {
            immediate: flag(bhs[0], IMMEDIATE_BIT),
            reason_code: bhs[1] & 0x7f,
            total_ahs_len: bhs[4],
            data_segment_len: get_u24(bhs, 5),
            itt: get_u32(bhs, 16),
            cid: get_u16(bhs, 20),
            cmdsn: get_u32(bhs, 24),
            exp_statsn: get_u32(bhs, 28),
        })
    }

    /// Encodes into `out`, overwriting all 48 bytes.
    pub fn encode(&self, out: &mut [u8; BHS_LEN]) {
        start(out, Opcode::LogoutRequest, self.immediate);
        out[1] = FINAL_BIT | (self.reason_code & 0x7f);
        put_lengths(out, self.total_ahs_len, self.data_segment_len);
        put_u32(out, 16, self.itt);
        put_u16(out, 20, self.cid);
        put_u32(out, 24, self.cmdsn);
        put_u32(out, 28, self.exp_statsn);
    }
}

/// SNACK Request header (RFC 7143 §11.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnackRequest {
    /// Type (0 Data/R2T, 1 Status, 2 DataACK, 3 R-Data), 4 bits.
    pub snack_type: u8,
    /// TotalAHSLength in 4-byte words (must be 0).
    pub total_ahs_len: u8,
    /// DataSegmentLength (must be 0).
    pub data_segment_len: u32,
    /// Raw 8-byte LUN field.
    pub lun: u64,
    /// Initiator Task Tag (0xffffffff for Status SNACK).
    pub itt: u32,
    /// Target Transfer Tag or SNACK Tag.
    pub ttt: u32,
    /// ExpStatSN.
    pub exp_statsn: u32,
    /// BegRun.
    pub beg_run: u32,
    /// RunLength.
    pub run_length: u32,
}

impl SnackRequest {
    /// Decodes a SNACK Request BHS.
    pub fn parse(bhs: &[u8; BHS_LEN]) -> Result<Self, PduError> {
        expect_opcode(bhs, Opcode::SnackRequest)?;
        Ok(Self {
            snack_type: bhs[1] & 0x0f,
            total_ahs_len: bhs[4],
            data_segment_len: get_u24(bhs, 5),
            lun: get_u64(bhs, 8),
            itt: get_u32(bhs, 16),
            ttt: get_u32(bhs, 20),
            exp_statsn: get_u32(bhs, 28),
            beg_run: get_u32(bhs, 40),
            run_length: get_u32(bhs, 44),
        })
    }

    /// Encodes into `out`, overwriting all 48 bytes.
    pub fn encode(&self, out: &mut [u8; BHS_LEN]) {
        start(out, Opcode::SnackRequest, false);
        out[1] = FINAL_BIT | (self.snack_type & 0x0f);
        put_lengths(out, self.total_ahs_len, self.data_segment_len);
        put_u64(out, 8, self.lun);
        put_u32(out, 16, self.itt);
        put_u32(out, 20, self.ttt);
        put_u32(out, 28, self.exp_statsn);
        put_u32(out, 40, self.beg_run);
        put_u32(out, 44, self.run_length);
    }
}
