//! SPC-2 reservations: RESERVE(6)/(10) and RELEASE(6)/(10) (SPC-2 7.21,
//! 7.17; kept as obsolete-but-used in SPC-4 through CRH).
//!
//! A logical unit is reserved by at most one I_T nexus, whose id sits in the
//! [`LunShared`] of the unit (one atomic; 0 = not reserved). Each nexus loads
//! it once per command ([`NexusState::observe`]); while another nexus holds
//! the reservation, commands for which [`conflicts`] is true end with
//! RESERVATION CONFLICT. RESERVE and RELEASE change it with one
//! compare-and-swap, so sessions on different cores need no lock.
//!
//! The reservation goes away on RELEASE by the holder, when the holder's
//! session ends (logout, connection loss, reinstatement), on LOGICAL UNIT
//! RESET and on TARGET WARM/COLD RESET. RELEASE from another nexus is GOOD
//! and changes nothing; RESERVE from the holder is GOOD again.

use std::sync::atomic::{AtomicU64, Ordering};

use super::opcodes::Handler;
use super::Completion;
use super::{LunShared, NexusState};

/// What RESERVE/RELEASE asks the session to do to the logical unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveOp {
    /// RESERVE(6)/(10).
    Reserve,
    /// RELEASE(6)/(10).
    Release,
}

/// Whether `handler` ends with RESERVATION CONFLICT when another I_T nexus
/// holds the reservation (SPC-2 5.5.1 table 10, SBC-2 table 4): everything
/// but INQUIRY, REQUEST SENSE, REPORT LUNS, RELEASE (GOOD with no effect),
/// READ CAPACITY, REPORT TARGET PORT GROUPS and REPORT SUPPORTED OPERATION
/// CODES. MODE SENSE and TEST UNIT READY conflict.
pub(crate) fn conflicts(handler: Handler) -> bool {
    !matches!(
        handler,
        Handler::Inquiry
            | Handler::RequestSense
            | Handler::ReportLuns
            | Handler::Release
            | Handler::ReadCapacity10
            | Handler::ReadCapacity16
            | Handler::ReportTargetPortGroups
            | Handler::ReportSupportedOpcodes
            | Handler::ReportSupportedTmf
    )
}

/// Applies RESERVE or RELEASE from `nexus` to the logical unit `lu`.
pub fn reserve_release(op: ReserveOp, lu: &LunShared, nexus: &NexusState) -> Completion {
    match op {
        ReserveOp::Reserve if !lu.reserve(nexus.spc2_id()) => Completion::reservation_conflict(),
        ReserveOp::Reserve => Completion::good(),
        ReserveOp::Release => {
            lu.release(nexus.spc2_id());
            Completion::good()
        }
    }
}

/// The id of I_T nexus `n` as the holder of an SPC-2 reservation of a
/// cluster's unit: the same on every member (never 0).
pub fn spc2_token(n: &super::ItNexus) -> u64 {
    // FNV-1a over the initiator port name and the relative port.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in n.initiator.bytes().chain(n.rel_port.to_be_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h | 1 << 63
}

/// A fresh I_T nexus id, unique in the process (never 0). Every session gets
/// its own, so a reinstated session does not inherit its predecessor's
/// reservation.
pub fn new_nexus_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::opcodes::OPS;
    use crate::scsi::Status;

    #[test]
    fn conflict_table() {
        // (opcode, service action, conflicts)
        let table: &[(u8, Option<u8>, bool)] = &[
            (0x00, None, true),        // TEST UNIT READY
            (0x03, None, false),       // REQUEST SENSE
            (0x08, None, true),        // READ(6)
            (0x0A, None, true),        // WRITE(6)
            (0x12, None, false),       // INQUIRY
            (0x15, None, true),        // MODE SELECT(6)
            (0x16, None, true),        // RESERVE(6)
            (0x17, None, false),       // RELEASE(6)
            (0x1A, None, true),        // MODE SENSE(6)
            (0x1B, None, true),        // START STOP UNIT
            (0x1E, None, true),        // PREVENT ALLOW MEDIUM REMOVAL
            (0x25, None, false),       // READ CAPACITY(10)
            (0x28, None, true),        // READ(10)
            (0x2A, None, true),        // WRITE(10)
            (0x35, None, true),        // SYNCHRONIZE CACHE(10)
            (0x42, None, true),        // UNMAP
            (0x56, None, true),        // RESERVE(10)
            (0x57, None, false),       // RELEASE(10)
            (0x5A, None, true),        // MODE SENSE(10)
            (0x5E, Some(0x00), true),  // PERSISTENT RESERVE IN
            (0x5F, Some(0x00), true),  // PERSISTENT RESERVE OUT
            (0x89, None, true),        // COMPARE AND WRITE
            (0x9E, Some(0x10), false), // READ CAPACITY(16)
            (0x9E, Some(0x12), true),  // GET LBA STATUS
            (0xA0, None, false),       // REPORT LUNS
            (0xA3, Some(0x0A), false), // REPORT TARGET PORT GROUPS
            (0xA3, Some(0x0C), false), // REPORT SUPPORTED OPERATION CODES
        ];
        for &(opcode, sa, want) in table {
            let e = OPS
                .iter()
                .find(|e| e.opcode == opcode && e.sa == sa)
                .unwrap_or_else(|| panic!("{opcode:#04x} not in the table"));
            assert_eq!(conflicts(e.handler), want, "{}", e.name);
        }
    }

    #[test]
    fn reserve_release_rules() {
        let lu = LunShared::new();
        let (a, b) = (NexusState::attached(&lu, 1), NexusState::attached(&lu, 2));
        let conflict = Status::ReservationConflict;
        // (nexus, op, status, holder after)
        let steps: &[(&NexusState, ReserveOp, Status, u64)] = &[
            (&a, ReserveOp::Reserve, Status::Good, 1),
            (&a, ReserveOp::Reserve, Status::Good, 1),
            (&b, ReserveOp::Reserve, conflict, 1),
            (&b, ReserveOp::Release, Status::Good, 1),
            (&a, ReserveOp::Release, Status::Good, 0),
            (&a, ReserveOp::Release, Status::Good, 0),
            (&b, ReserveOp::Reserve, Status::Good, 2),
            (&a, ReserveOp::Reserve, conflict, 2),
        ];
        for (i, &(n, op, status, holder)) in steps.iter().enumerate() {
            assert_eq!(reserve_release(op, &lu, n).status, status, "step {i}");
            assert_eq!(lu.holder(), holder, "step {i}");
        }
    }

    #[test]
    fn release_triggers() {
        type Trigger = fn(&LunShared);
        let triggers: &[(&str, Trigger)] = &[
            ("release by holder", |lu| lu.release(1)),
            ("session end of holder", |lu| lu.release(1)),
            ("logical unit reset", LunShared::reset),
            ("target reset", LunShared::clear_reservation),
        ];
        for (name, trigger) in triggers {
            let lu = LunShared::new();
            assert!(lu.reserve(1));
            lu.release(2);
            assert_eq!(lu.holder(), 1, "{name}: another nexus cannot release");
            trigger(&lu);
            assert_eq!(lu.holder(), 0, "{name}");
            assert!(lu.reserve(2), "{name}: free for another nexus");
        }
    }

    #[test]
    fn nexus_ids_are_unique_and_nonzero() {
        let (a, b) = (new_nexus_id(), new_nexus_id());
        assert!(a != 0 && b != 0 && a != b);
    }
}
