//! SCSI status codes and sense data (SPC-4 4.5): the one place where a
//! per-command failure becomes bytes on the wire.
//!
//! A [`Sense`] is a plain value (no allocation); it is encoded in fixed format
//! (response code 70h, 18 bytes) for CHECK CONDITION, and in fixed or
//! descriptor format (72h) for REQUEST SENSE according to its DESC bit.

/// SAM-5 status byte of a completed command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// GOOD (00h).
    Good,
    /// CHECK CONDITION (02h): sense data follows.
    CheckCondition,
    /// CONDITION MET (04h).
    ConditionMet,
    /// BUSY (08h).
    Busy,
    /// RESERVATION CONFLICT (18h).
    ReservationConflict,
    /// TASK SET FULL (28h).
    TaskSetFull,
    /// ACA ACTIVE (30h).
    AcaActive,
    /// TASK ABORTED (40h).
    TaskAborted,
}

impl Status {
    /// The status byte as carried in the SCSI Response PDU.
    pub fn code(self) -> u8 {
        match self {
            Status::Good => 0x00,
            Status::CheckCondition => 0x02,
            Status::ConditionMet => 0x04,
            Status::Busy => 0x08,
            Status::ReservationConflict => 0x18,
            Status::TaskSetFull => 0x28,
            Status::AcaActive => 0x30,
            Status::TaskAborted => 0x40,
        }
    }
}

/// SPC-4 sense key (table 27).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenseKey {
    /// No specific sense key information (0h).
    NoSense,
    /// The command completed with recovery action (1h).
    RecoveredError,
    /// The logical unit is not accessible (2h).
    NotReady,
    /// Non-recoverable error on the medium (3h).
    MediumError,
    /// Non-recoverable hardware failure (4h).
    HardwareError,
    /// Illegal parameter in the CDB or parameter list (5h).
    IllegalRequest,
    /// A unit attention condition was reported (6h).
    UnitAttention,
    /// Access to the medium is denied (7h).
    DataProtect,
    /// EXTENDED COPY ended early (Ah).
    CopyAborted,
    /// Aborted by the device server (Bh).
    AbortedCommand,
    /// Source data did not match the medium (Eh).
    Miscompare,
}

impl SenseKey {
    /// The 4-bit sense key value.
    pub fn code(self) -> u8 {
        match self {
            SenseKey::NoSense => 0x0,
            SenseKey::RecoveredError => 0x1,
            SenseKey::NotReady => 0x2,
            SenseKey::MediumError => 0x3,
            SenseKey::HardwareError => 0x4,
            SenseKey::IllegalRequest => 0x5,
            SenseKey::UnitAttention => 0x6,
            SenseKey::DataProtect => 0x7,
            SenseKey::CopyAborted => 0xA,
            SenseKey::AbortedCommand => 0xB,
            SenseKey::Miscompare => 0xE,
        }
    }
}

/// Which field of the CDB or parameter list was in error (sense-key specific
/// field pointer, SPC-4 4.5.2.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldPointer {
    /// True if the error is in the CDB (C/D = 1), false for the parameter list.
    pub in_cdb: bool,
    /// Byte offset of the field (most significant byte of the field).
    pub byte: u16,
    /// Bit (0..=7) of the field's most significant bit, if known.
    pub bit: Option<u8>,
}

impl FieldPointer {
    /// The three sense-key-specific bytes with SKSV set.
    fn bytes(self) -> [u8; 3] {
        let mut b0 = 0x80; // SKSV
        if self.in_cdb {
            b0 |= 0x40;
        }
        if let Some(bit) = self.bit {
            b0 |= 0x08 | (bit & 0x07); // BPV + bit pointer
        }
        let [hi, lo] = self.byte.to_be_bytes();
        [b0, hi, lo]
    }
}

/// Sense data of one failed command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    /// Sense key.
    pub key: SenseKey,
    /// Additional sense code.
    pub asc: u8,
    /// Additional sense code qualifier.
    pub ascq: u8,
    /// INFORMATION field (e.g. the miscompare offset), if valid.
    pub info: Option<u64>,
    /// Sense-key specific field pointer, if any.
    pub field_pointer: Option<FieldPointer>,
    /// Sense-key specific progress indication (numerator over 65536), for
    /// NOT READY while an operation runs; ignored when `field_pointer` is set.
    pub progress: Option<u16>,
}

/// Length of fixed-format sense data as encoded by [`Sense::encode_fixed`].
pub const FIXED_SENSE_LEN: usize = 18;
/// Maximum length of descriptor-format sense data from [`Sense::encode_descriptor`].
pub const DESCRIPTOR_SENSE_MAX_LEN: usize = 8 + 12 + 8;

impl Sense {
    /// Sense with key, ASC and ASCQ and nothing else.
    pub const fn new(key: SenseKey, asc: u8, ascq: u8) -> Self {
        Sense {
            key,
            asc,
            ascq,
            info: None,
            field_pointer: None,
            progress: None,
        }
    }

    /// NO SENSE, NO ADDITIONAL SENSE INFORMATION (00/00/00).
    pub const fn no_sense() -> Self {
        Self::new(SenseKey::NoSense, 0x00, 0x00)
    }

    /// ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE (05/20/00).
    pub const fn invalid_opcode() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x20, 0x00)
    }

    /// ILLEGAL REQUEST, INVALID FIELD IN CDB (05/24/00) pointing at `byte`
    /// and `bit` (a bit number, or `None` when no bit is meaningful).
    pub fn invalid_field_in_cdb(byte: u16, bit: impl Into<Option<u8>>) -> Self {
        let mut s = Self::new(SenseKey::IllegalRequest, 0x24, 0x00);
        s.field_pointer = Some(FieldPointer {
            in_cdb: true,
            byte,
            bit: bit.into(),
        });
        s
    }

    /// ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE (05/21/00).
    pub const fn lba_out_of_range() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x21, 0x00)
    }

    /// ILLEGAL REQUEST, LOGICAL UNIT NOT SUPPORTED (05/25/00).
    pub const fn lun_not_supported() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x25, 0x00)
    }

    /// ILLEGAL REQUEST, PARAMETER LIST LENGTH ERROR (05/1A/00).
    pub const fn parameter_list_length_error() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x1A, 0x00)
    }

    /// ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST (05/26/00) at `byte`
    /// and `bit` (or `None`).
    pub fn invalid_field_in_parameter_list(byte: u16, bit: impl Into<Option<u8>>) -> Self {
        let mut s = Self::new(SenseKey::IllegalRequest, 0x26, 0x00);
        s.field_pointer = Some(FieldPointer {
            in_cdb: false,
            byte,
            bit: bit.into(),
        });
        s
    }

    /// ILLEGAL REQUEST, SAVING PARAMETERS NOT SUPPORTED (05/39/00).
    pub const fn saving_parameters_not_supported() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x39, 0x00)
    }

    /// DATA PROTECT, WRITE PROTECTED (07/27/00).
    pub const fn write_protected() -> Self {
        Self::new(SenseKey::DataProtect, 0x27, 0x00)
    }

    /// MEDIUM ERROR, UNRECOVERED READ ERROR (03/11/00).
    pub const fn medium_error_read() -> Self {
        Self::new(SenseKey::MediumError, 0x11, 0x00)
    }

    /// MEDIUM ERROR, WRITE ERROR (03/0C/00).
    pub const fn medium_error_write() -> Self {
        Self::new(SenseKey::MediumError, 0x0C, 0x00)
    }

    /// MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION (0E/1D/00); INFORMATION
    /// holds the byte offset of the first mismatch within the data-out.
    pub const fn miscompare(offset: u64) -> Self {
        let mut s = Self::new(SenseKey::Miscompare, 0x1D, 0x00);
        s.info = Some(offset);
        s
    }

    /// ABORTED COMMAND, NO ADDITIONAL SENSE INFORMATION (0B/00/00).
    pub const fn aborted_command() -> Self {
        Self::new(SenseKey::AbortedCommand, 0x00, 0x00)
    }

    /// ABORTED COMMAND, DATA PHASE ERROR (0B/4B/00): a Data-Out out of
    /// sequence (DataSN).
    pub const fn data_phase_error() -> Self {
        Self::new(SenseKey::AbortedCommand, 0x4B, 0x00)
    }

    /// ABORTED COMMAND, INVALID TARGET PORT TRANSFER TAG RECEIVED (0B/4B/01).
    pub const fn invalid_transfer_tag() -> Self {
        Self::new(SenseKey::AbortedCommand, 0x4B, 0x01)
    }

    /// ABORTED COMMAND, DATA OFFSET ERROR (0B/4B/05): a Data-Out outside its R2T.
    pub const fn data_offset_error() -> Self {
        Self::new(SenseKey::AbortedCommand, 0x4B, 0x05)
    }

    /// ABORTED COMMAND, UNEXPECTED UNSOLICITED DATA (0B/0C/0C; RFC 7143 11.4.7.2).
    pub const fn unexpected_unsolicited_data() -> Self {
        Self::new(SenseKey::AbortedCommand, 0x0C, 0x0C)
    }

    /// HARDWARE ERROR, INTERNAL TARGET FAILURE (04/44/00).
    pub const fn internal_target_failure() -> Self {
        Self::new(SenseKey::HardwareError, 0x44, 0x00)
    }

    /// UNIT ATTENTION, POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (06/29/00).
    pub const fn ua_power_on_reset() -> Self {
        Self::new(SenseKey::UnitAttention, 0x29, 0x00)
    }

    /// UNIT ATTENTION, BUS DEVICE RESET FUNCTION OCCURRED (06/29/03): LOGICAL UNIT RESET.
    pub const fn ua_lun_reset() -> Self {
        Self::new(SenseKey::UnitAttention, 0x29, 0x03)
    }

    /// UNIT ATTENTION, I_T NEXUS LOSS OCCURRED (06/29/07).
    pub const fn ua_it_nexus_loss() -> Self {
        Self::new(SenseKey::UnitAttention, 0x29, 0x07)
    }

    /// UNIT ATTENTION, COMMANDS CLEARED BY ANOTHER INITIATOR (06/2F/00).
    pub const fn ua_commands_cleared() -> Self {
        Self::new(SenseKey::UnitAttention, 0x2F, 0x00)
    }

    /// UNIT ATTENTION, MODE PARAMETERS CHANGED (06/2A/01).
    pub const fn ua_mode_parameters_changed() -> Self {
        Self::new(SenseKey::UnitAttention, 0x2A, 0x01)
    }

    /// UNIT ATTENTION, RESERVATIONS PREEMPTED (06/2A/03).
    pub const fn ua_reservations_preempted() -> Self {
        Self::new(SenseKey::UnitAttention, 0x2A, 0x03)
    }

    /// UNIT ATTENTION, RESERVATIONS RELEASED (06/2A/04).
    pub const fn ua_reservations_released() -> Self {
        Self::new(SenseKey::UnitAttention, 0x2A, 0x04)
    }

    /// UNIT ATTENTION, REGISTRATIONS PREEMPTED (06/2A/05).
    pub const fn ua_registrations_preempted() -> Self {
        Self::new(SenseKey::UnitAttention, 0x2A, 0x05)
    }

    /// UNIT ATTENTION, ASYMMETRIC ACCESS STATE CHANGED (06/2A/06).
    pub const fn ua_asymmetric_access_state_changed() -> Self {
        Self::new(SenseKey::UnitAttention, 0x2A, 0x06)
    }

    /// UNIT ATTENTION, CAPACITY DATA HAS CHANGED (06/2A/09).
    pub const fn ua_capacity_changed() -> Self {
        Self::new(SenseKey::UnitAttention, 0x2A, 0x09)
    }

    /// UNIT ATTENTION, REPORTED LUNS DATA HAS CHANGED (06/3F/0E).
    pub const fn ua_reported_luns_changed() -> Self {
        Self::new(SenseKey::UnitAttention, 0x3F, 0x0E)
    }

    /// NOT READY, LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS STATE TRANSITION (02/04/0A).
    pub const fn not_ready_alua_transitioning() -> Self {
        Self::new(SenseKey::NotReady, 0x04, 0x0A)
    }

    /// NOT READY, LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN STANDBY STATE (02/04/0B).
    pub const fn not_ready_alua_standby() -> Self {
        Self::new(SenseKey::NotReady, 0x04, 0x0B)
    }

    /// NOT READY, LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN UNAVAILABLE STATE (02/04/0C).
    pub const fn not_ready_alua_unavailable() -> Self {
        Self::new(SenseKey::NotReady, 0x04, 0x0C)
    }

    /// NOT READY, LOGICAL UNIT NOT READY, OFFLINE (02/04/12).
    pub const fn not_ready_offline() -> Self {
        Self::new(SenseKey::NotReady, 0x04, 0x12)
    }

    /// NOT READY, LOGICAL UNIT NOT READY, SANITIZE IN PROGRESS (02/04/1B)
    /// with the fraction done (`progress` / 65536).
    pub const fn sanitize_in_progress(progress: u16) -> Self {
        let mut s = Self::new(SenseKey::NotReady, 0x04, 0x1B);
        s.progress = Some(progress);
        s
    }

    /// MEDIUM ERROR, SANITIZE COMMAND FAILED (03/31/03): the last sanitize
    /// operation failed and the medium is not accessible until one succeeds.
    pub const fn sanitize_failed() -> Self {
        Self::new(SenseKey::MediumError, 0x31, 0x03)
    }

    /// NOT READY, LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE (02/04/00).
    pub const fn not_ready() -> Self {
        Self::new(SenseKey::NotReady, 0x04, 0x00)
    }

    /// Encodes fixed-format sense data (response code 70h) into `out`,
    /// truncated to `out.len()`; returns the number of bytes written.
    ///
    /// INFORMATION is reported (VALID = 1) only when it fits in 32 bits.
    pub fn encode_fixed(&self, out: &mut [u8]) -> usize {
        let mut b = [0u8; FIXED_SENSE_LEN];
        b[0] = 0x70;
        if let Some(info) = self.info.and_then(|i| u32::try_from(i).ok()) {
            b[0] |= 0x80;
            b[3..7].copy_from_slice(&info.to_be_bytes());
        }
        b[2] = self.key.code();
        b[7] = (FIXED_SENSE_LEN - 8) as u8;
        b[12] = self.asc;
        b[13] = self.ascq;
        if let Some(sks) = self.key_specific() {
            b[15..18].copy_from_slice(&sks);
        }
        copy_prefix(&b, out)
    }

    /// Encodes descriptor-format sense data (response code 72h) with an
    /// information descriptor and a sense-key specific descriptor when
    /// present, truncated to `out.len()`; returns the number of bytes written.
    pub fn encode_descriptor(&self, out: &mut [u8]) -> usize {
        let mut b = [0u8; DESCRIPTOR_SENSE_MAX_LEN];
        b[0] = 0x72;
        b[1] = self.key.code();
        b[2] = self.asc;
        b[3] = self.ascq;
        let mut n = 8;
        if let Some(info) = self.info {
            b[n] = 0x00; // information descriptor
            b[n + 1] = 0x0A;
            b[n + 2] = 0x80; // VALID
            b[n + 4..n + 12].copy_from_slice(&info.to_be_bytes());
            n += 12;
        }
        if let Some(sks) = self.key_specific() {
            b[n] = 0x02; // sense key specific descriptor
            b[n + 1] = 0x06;
            b[n + 4..n + 7].copy_from_slice(&sks);
            n += 8;
        }
        b[7] = (n - 8) as u8;
        copy_prefix(&b[..n], out)
    }

    /// The three sense-key specific bytes (SKSV set): the field pointer, else
    /// the progress indication.
    fn key_specific(&self) -> Option<[u8; 3]> {
        if let Some(fp) = self.field_pointer {
            return Some(fp.bytes());
        }
        self.progress.map(|p| {
            let [hi, lo] = p.to_be_bytes();
            [0x80, hi, lo]
        })
    }

    /// Fixed-format sense data as an array (what CHECK CONDITION carries).
    pub fn to_fixed(&self) -> [u8; FIXED_SENSE_LEN] {
        let mut b = [0u8; FIXED_SENSE_LEN];
        self.encode_fixed(&mut b);
        b
    }
}

fn copy_prefix(src: &[u8], out: &mut [u8]) -> usize {
    let n = src.len().min(out.len());
    out[..n].copy_from_slice(&src[..n]);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes() {
        let table = [
            (Status::Good, 0x00),
            (Status::CheckCondition, 0x02),
            (Status::ConditionMet, 0x04),
            (Status::Busy, 0x08),
            (Status::ReservationConflict, 0x18),
            (Status::TaskSetFull, 0x28),
            (Status::AcaActive, 0x30),
            (Status::TaskAborted, 0x40),
        ];
        for (s, c) in table {
            assert_eq!(s.code(), c, "{s:?}");
        }
    }

    #[test]
    fn fixed_invalid_field_in_cdb() {
        let b = Sense::invalid_field_in_cdb(2, 7).to_fixed();
        assert_eq!(
            b,
            [0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0x00, 0, 0xCF, 0x00, 0x02]
        );
    }

    #[test]
    fn fixed_miscompare_info() {
        let b = Sense::miscompare(0x1234).to_fixed();
        assert_eq!(b[0], 0xF0);
        assert_eq!(&b[3..7], &[0, 0, 0x12, 0x34]);
        assert_eq!((b[2], b[12], b[13]), (0x0E, 0x1D, 0x00));
        // INFORMATION wider than 32 bits cannot be VALID in fixed format.
        assert_eq!(Sense::miscompare(1 << 40).to_fixed()[0], 0x70);
    }

    #[test]
    fn field_pointer_without_bit() {
        let b = Sense::invalid_field_in_cdb(7, None).to_fixed();
        assert_eq!(&b[15..18], &[0xC0, 0x00, 0x07]);
    }

    #[test]
    fn fixed_truncates() {
        let mut out = [0u8; 4];
        assert_eq!(Sense::write_protected().encode_fixed(&mut out), 4);
        assert_eq!(out, [0x70, 0, 0x07, 0]);
    }

    #[test]
    fn descriptor_format() {
        let mut out = [0u8; DESCRIPTOR_SENSE_MAX_LEN];
        let n = Sense::ua_power_on_reset().encode_descriptor(&mut out);
        assert_eq!(&out[..n], &[0x72, 0x06, 0x29, 0x00, 0, 0, 0, 0]);

        let n = Sense::invalid_field_in_parameter_list(3, 0).encode_descriptor(&mut out);
        assert_eq!(
            &out[..n],
            &[0x72, 0x05, 0x26, 0x00, 0, 0, 0, 8, 0x02, 0x06, 0, 0, 0x88, 0x00, 0x03, 0]
        );

        let n = Sense::miscompare(7).encode_descriptor(&mut out);
        assert_eq!(n, 20);
        assert_eq!(&out[8..12], &[0x00, 0x0A, 0x80, 0x00]);
        assert_eq!(&out[12..20], &7u64.to_be_bytes());
    }
}
