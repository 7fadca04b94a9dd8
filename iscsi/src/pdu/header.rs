//! `Header`: the decoded BHS of any PDU a target receives, with the cheap
//! validity checks (opcode, reserved bits, lengths that must be zero) done
//! once at the connection's front door.

use super::bhs::{Opcode, BHS_LEN, RESERVED_TAG};
use super::initiator::{
    DataOut, LoginRequest, LogoutRequest, NopOut, ScsiCommand, SnackRequest, TaskMgmtRequest,
    TextRequest,
};
use super::PduError;

/// A decoded initiator-to-target BHS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// NOP-Out.
    NopOut(NopOut),
    /// SCSI Command.
    ScsiCommand(ScsiCommand),
    /// Task Management Function Request.
    TaskMgmtRequest(TaskMgmtRequest),
    /// Login Request.
    LoginRequest(LoginRequest),
    /// Text Request.
    TextRequest(TextRequest),
    /// SCSI Data-Out.
    DataOut(DataOut),
    /// Logout Request.
    LogoutRequest(LogoutRequest),
    /// SNACK Request.
    SnackRequest(SnackRequest),
}

impl Header {
    /// Decodes and sanity-checks an initiator BHS.
    ///
    /// Errors: unknown opcode, a target-only opcode, a set reserved bit in
    /// byte 0, or a length field the RFC requires to be zero.
    pub fn parse(bhs: &[u8; BHS_LEN]) -> Result<Self, PduError> {
        if bhs[0] & 0x80 != 0 {
            return Err(PduError::InvalidField("reserved bit 7 of byte 0"));
        }
        let op = Opcode::from_u8(bhs[0])?;
        let header = match op {
            Opcode::NopOut => {
                let h = NopOut::parse(bhs)?;
                if h.itt == RESERVED_TAG && !h.immediate {
                    return Err(PduError::InvalidField(
                        "NOP-Out with reserved ITT must be immediate",
                    ));
                }
                Self::NopOut(h)
            }
            Opcode::ScsiCommand => {
                let h = ScsiCommand::parse(bhs)?;
                if h.itt == RESERVED_TAG {
                    return Err(PduError::InvalidField("SCSI Command with reserved ITT"));
                }
                Self::ScsiCommand(h)
            }
            Opcode::TaskMgmtRequest => {
                let h = TaskMgmtRequest::parse(bhs)?;
                no_ahs_no_data(h.total_ahs_len, h.data_segment_len)?;
                Self::TaskMgmtRequest(h)
            }
            Opcode::LoginRequest => {
                let h = LoginRequest::parse(bhs)?;
                if h.total_ahs_len != 0 {
                    return Err(PduError::InvalidField("AHS on a Login Request"));
                }
                Self::LoginRequest(h)
            }
            Opcode::TextRequest => {
                let h = TextRequest::parse(bhs)?;
                if h.final_bit && h.continue_ {
                    return Err(PduError::InvalidField("Text Request with both F and C"));
                }
                Self::TextRequest(h)
            }
            Opcode::DataOut => Self::DataOut(DataOut::parse(bhs)?),
            Opcode::LogoutRequest => {
                let h = LogoutRequest::parse(bhs)?;
                no_ahs_no_data(h.total_ahs_len, h.data_segment_len)?;
                Self::LogoutRequest(h)
            }
            Opcode::SnackRequest => {
                let h = SnackRequest::parse(bhs)?;
                no_ahs_no_data(h.total_ahs_len, h.data_segment_len)?;
                Self::SnackRequest(h)
            }
            other => return Err(PduError::NotFromInitiator(other as u8)),
        };
        Ok(header)
    }

    /// The opcode of this header.
    pub fn opcode(&self) -> Opcode {
        match self {
            Self::NopOut(_) => Opcode::NopOut,
            Self::ScsiCommand(_) => Opcode::ScsiCommand,
            Self::TaskMgmtRequest(_) => Opcode::TaskMgmtRequest,
            Self::LoginRequest(_) => Opcode::LoginRequest,
            Self::TextRequest(_) => Opcode::TextRequest,
            Self::DataOut(_) => Opcode::DataOut,
            Self::LogoutRequest(_) => Opcode::LogoutRequest,
            Self::SnackRequest(_) => Opcode::SnackRequest,
        }
    }

    /// The I bit: immediate delivery (always true for Login; false for Data-Out and SNACK).
    pub fn immediate(&self) -> bool {
        match self {
            Self::NopOut(h) => h.immediate,
            Self::ScsiCommand(h) => h.immediate,
            Self::TaskMgmtRequest(h) => h.immediate,
            Self::LoginRequest(_) => true,
            Self::TextRequest(h) => h.immediate,
            Self::DataOut(_) | Self::SnackRequest(_) => false,
            Self::LogoutRequest(h) => h.immediate,
        }
    }

    /// The Initiator Task Tag.
    pub fn itt(&self) -> u32 {
        match self {
            Self::NopOut(h) => h.itt,
            Self::ScsiCommand(h) => h.itt,
            Self::TaskMgmtRequest(h) => h.itt,
            Self::LoginRequest(h) => h.itt,
            Self::TextRequest(h) => h.itt,
            Self::DataOut(h) => h.itt,
            Self::LogoutRequest(h) => h.itt,
            Self::SnackRequest(h) => h.itt,
        }
    }

    /// The CmdSN, for the PDUs that carry one (not Data-Out or SNACK).
    pub fn cmdsn(&self) -> Option<u32> {
        match self {
            Self::NopOut(h) => Some(h.cmdsn),
            Self::ScsiCommand(h) => Some(h.cmdsn),
            Self::TaskMgmtRequest(h) => Some(h.cmdsn),
            Self::LoginRequest(h) => Some(h.cmdsn),
            Self::TextRequest(h) => Some(h.cmdsn),
            Self::LogoutRequest(h) => Some(h.cmdsn),
            Self::DataOut(_) | Self::SnackRequest(_) => None,
        }
    }

    /// The ExpStatSN every initiator PDU carries.
    pub fn exp_statsn(&self) -> u32 {
        match self {
            Self::NopOut(h) => h.exp_statsn,
            Self::ScsiCommand(h) => h.exp_statsn,
            Self::TaskMgmtRequest(h) => h.exp_statsn,
            Self::LoginRequest(h) => h.exp_statsn,
            Self::TextRequest(h) => h.exp_statsn,
            Self::DataOut(h) => h.exp_statsn,
            Self::LogoutRequest(h) => h.exp_statsn,
            Self::SnackRequest(h) => h.exp_statsn,
        }
    }
}

fn no_ahs_no_data(total_ahs_len: u8, data_segment_len: u32) -> Result<(), PduError> {
    if total_ahs_len != 0 || data_segment_len != 0 {
        Err(PduError::InvalidField(
            "TotalAHSLength and DataSegmentLength must be 0",
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unknown_and_target_opcodes() {
        let mut b = [0u8; BHS_LEN];
        b[0] = 0x07;
        assert_eq!(Header::parse(&b), Err(PduError::UnknownOpcode(0x07)));
        b[0] = 0x21;
        assert_eq!(Header::parse(&b), Err(PduError::NotFromInitiator(0x21)));
        b[0] = 0x81;
        assert!(matches!(Header::parse(&b), Err(PduError::InvalidField(_))));
    }

    #[test]
    fn tmf_with_data_is_invalid() {
        let mut b = [0u8; BHS_LEN];
        TaskMgmtRequest {
            immediate: true,
            function: 1,
            total_ahs_len: 0,
            data_segment_len: 4,
            lun: 0,
            itt: 1,
            referenced_task_tag: 2,
            cmdsn: 3,
            exp_statsn: 4,
            ref_cmdsn: 5,
            exp_data_sn: 6,
        }
        .encode(&mut b);
        assert!(matches!(Header::parse(&b), Err(PduError::InvalidField(_))));
    }

    #[test]
    fn scsi_command_accessors() {
        let mut b = [0u8; BHS_LEN];
        let cmd = ScsiCommand {
            immediate: true,
            final_bit: true,
            read: true,
            write: false,
            attr: 1,
            total_ahs_len: 0,
            data_segment_len: 0,
            lun: 0,
            itt: 77,
            expected_data_transfer_length: 512,
            cmdsn: 9,
            exp_statsn: 10,
            cdb: [0; 16],
        };
        cmd.encode(&mut b);
        let h = Header::parse(&b).unwrap();
        assert_eq!(h, Header::ScsiCommand(cmd));
        assert!(h.immediate());
        assert_eq!(h.itt(), 77);
        assert_eq!(h.cmdsn(), Some(9));
        assert_eq!(h.exp_statsn(), 10);
        assert_eq!(h.opcode(), Opcode::ScsiCommand);
    }
}
