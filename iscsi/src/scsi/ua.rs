//! Unit attention conditions (SAM-5 5.14, SPC-4 5.13); each I_T nexus holds
//! its pending ones ([`NexusState`](super::NexusState)).
//!
//! A pending unit attention is reported as CHECK CONDITION on the next command
//! other than INQUIRY, REPORT LUNS and REQUEST SENSE, and is then cleared
//! (UA_INTLCK_CTRL = 00b). REQUEST SENSE returns it as sense data and clears
//! it; REPORT LUNS clears REPORTED LUNS DATA HAS CHANGED.

use super::sense::Sense;

/// Maximum number of distinct unit attentions queued per nexus; further
/// conditions are dropped while the queue is full (each kind appears once).
pub const UA_QUEUE_CAPACITY: usize = 16;

/// A unit attention condition established for an I_T nexus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitAttention {
    /// POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (29/00).
    PowerOnReset,
    /// BUS DEVICE RESET FUNCTION OCCURRED (29/03), after a LOGICAL UNIT RESET.
    LunReset,
    /// I_T NEXUS LOSS OCCURRED (29/07).
    ItNexusLoss,
    /// COMMANDS CLEARED BY ANOTHER INITIATOR (2F/00): a CLEAR TASK SET from
    /// another I_T nexus aborted commands of this one.
    CommandsCleared,
    /// MODE PARAMETERS CHANGED (2A/01).
    ModeParametersChanged,
    /// RESERVATIONS PREEMPTED (2A/03).
    ReservationsPreempted,
    /// RESERVATIONS RELEASED (2A/04).
    ReservationsReleased,
    /// REGISTRATIONS PREEMPTED (2A/05).
    RegistrationsPreempted,
    /// ASYMMETRIC ACCESS STATE CHANGED (2A/06).
    AsymmetricAccessStateChanged,
    /// CAPACITY DATA HAS CHANGED (2A/09).
    CapacityChanged,
    /// REPORTED LUNS DATA HAS CHANGED (3F/0E).
    ReportedLunsChanged,
}

impl UnitAttention {
    /// The sense data reporting this condition.
    pub fn sense(self) -> Sense {
        match self {
            UnitAttention::PowerOnReset => Sense::ua_power_on_reset(),
            UnitAttention::LunReset => Sense::ua_lun_reset(),
            UnitAttention::ItNexusLoss => Sense::ua_it_nexus_loss(),
            UnitAttention::CommandsCleared => Sense::ua_commands_cleared(),
            UnitAttention::ModeParametersChanged => Sense::ua_mode_parameters_changed(),
            UnitAttention::ReservationsPreempted => Sense::ua_reservations_preempted(),
            UnitAttention::ReservationsReleased => Sense::ua_reservations_released(),
            UnitAttention::RegistrationsPreempted => Sense::ua_registrations_preempted(),
            UnitAttention::AsymmetricAccessStateChanged => {
                Sense::ua_asymmetric_access_state_changed()
            }
            UnitAttention::CapacityChanged => Sense::ua_capacity_changed(),
            UnitAttention::ReportedLunsChanged => Sense::ua_reported_luns_changed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sense_codes() {
        let table = [
            (UnitAttention::PowerOnReset, (0x29, 0x00)),
            (UnitAttention::LunReset, (0x29, 0x03)),
            (UnitAttention::ItNexusLoss, (0x29, 0x07)),
            (UnitAttention::ModeParametersChanged, (0x2A, 0x01)),
            (UnitAttention::ReservationsPreempted, (0x2A, 0x03)),
            (UnitAttention::ReservationsReleased, (0x2A, 0x04)),
            (UnitAttention::RegistrationsPreempted, (0x2A, 0x05)),
            (UnitAttention::AsymmetricAccessStateChanged, (0x2A, 0x06)),
            (UnitAttention::CapacityChanged, (0x2A, 0x09)),
            (UnitAttention::ReportedLunsChanged, (0x3F, 0x0E)),
        ];
        for (ua, (asc, ascq)) in table {
            let s = ua.sense();
            assert_eq!(s.key.code(), 0x06);
            assert_eq!((s.asc, s.ascq), (asc, ascq), "{ua:?}");
        }
    }
}
