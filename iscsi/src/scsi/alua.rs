//! Implicit ALUA (SPC-4 5.15): REPORT TARGET PORT GROUPS and the gate that
//! refuses commands a target port group's access state does not allow.
//!
//! | state                | processed                                    | otherwise  |
//! |----------------------|----------------------------------------------|------------|
//! | active (optimized or not) | everything                              |            |
//! | standby              | `Always`, `Management`, `Capacity` commands  | 02/04/0B   |
//! | unavailable          | `Always`, `Management`                       | 02/04/0C   |
//! | transitioning        | `Always`                                     | 02/04/0A   |
//! | offline              | `Always`                                     | 02/04/12   |
//!
//! READ CAPACITY in standby is a deliberate extension (as in LIO) so hosts can
//! probe standby paths.

use super::cdb::{be, Cdb};
use super::opcodes::Access;
use super::sense::Sense;
use super::{AluaState, Completion, PortContext};

/// IMPLICIT TRANSITION TIME reported in the extended header, in seconds.
pub(crate) const IMPLICIT_TRANSITION_SECS: u8 = 10;

/// Supported states: T_SUP, O_SUP, U_SUP, S_SUP, AN_SUP, AO_SUP.
const SUPPORTED_STATES: u8 = 0x80 | 0x40 | 0x08 | 0x04 | 0x02 | 0x01;

/// The access state of the port's own target port group; active/optimized
/// when the port reports no groups.
fn own_state(port: &PortContext) -> AluaState {
    port.groups
        .iter()
        .find(|g| g.id == port.tpg_id)
        .map_or(AluaState::ActiveOptimized, |g| g.state)
}

/// Refuses a command of class `access` if the port's access state forbids it.
pub(crate) fn check_access(access: Access, port: &PortContext) -> Result<(), Sense> {
    let state = own_state(port);
    let allowed = match state {
        AluaState::ActiveOptimized | AluaState::ActiveNonOptimized => true,
        AluaState::Standby => access != Access::Media,
        AluaState::Unavailable => matches!(access, Access::Always | Access::Management),
        AluaState::Transitioning | AluaState::Offline => access == Access::Always,
    };
    if allowed {
        return Ok(());
    }
    Err(match state {
        AluaState::Standby => Sense::not_ready_alua_standby(),
        AluaState::Unavailable => Sense::not_ready_alua_unavailable(),
        AluaState::Transitioning => Sense::not_ready_alua_transitioning(),
        _ => Sense::not_ready_offline(),
    })
}

/// REPORT TARGET PORT GROUPS (MAINTENANCE IN, service action 0Ah), length-only
/// (000b) or extended (001b) header.
pub(crate) fn report_target_port_groups(c: &Cdb, port: &PortContext) -> Result<Completion, Sense> {
    let extended = match c[1] >> 5 {
        0 => false,
        1 => true,
        _ => return Err(Sense::invalid_field_in_cdb(1, 7)),
    };
    let alloc = be(c, 6, 4) as usize;
    let mut out = Vec::with_capacity(8 + port.groups.len() * 12);
    out.extend_from_slice(&[0u8; 4]);
    if extended {
        out.extend_from_slice(&[0x10, IMPLICIT_TRANSITION_SECS, 0, 0]);
    }
    for g in &port.groups {
        out.push(if g.preferred { 0x80 } else { 0 } | g.state.code());
        out.push(SUPPORTED_STATES);
        out.extend_from_slice(&g.id.to_be_bytes());
        out.push(0);
        out.push(0); // STATUS CODE: no status available
        out.push(0);
        out.push(g.relative_ports.len().min(255) as u8);
        for rp in g.relative_ports.iter().take(255) {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&rp.to_be_bytes());
        }
    }
    let len = (out.len() - 4) as u32;
    out[0..4].copy_from_slice(&len.to_be_bytes());
    out.truncate(alloc);
    Ok(Completion::with_data(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::dispatch::tests::port;
    use crate::scsi::PortGroup;

    fn cdb(format: u8, alloc: u32) -> Cdb {
        let mut c = [0u8; 16];
        c[0] = 0xA3;
        c[1] = (format << 5) | 0x0A;
        c[6..10].copy_from_slice(&alloc.to_be_bytes());
        c
    }

    #[test]
    fn rtpg_length_only_and_extended() {
        let p = port();
        let d = report_target_port_groups(&cdb(0, 1024), &p).unwrap().data;
        assert_eq!(
            d,
            [
                0, 0, 0, 28, //
                0x80, 0xCF, 0, 7, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3, //
                0x02, 0xCF, 0, 8, 0, 0, 0, 1, 0, 0, 0, 9,
            ]
        );
        let e = report_target_port_groups(&cdb(1, 1024), &p).unwrap().data;
        assert_eq!(
            &e[0..8],
            &[0, 0, 0, 32, 0x10, IMPLICIT_TRANSITION_SECS, 0, 0]
        );
        assert_eq!(&e[8..], &d[4..]);
        let t = report_target_port_groups(&cdb(1, 6), &p).unwrap().data;
        assert_eq!(t.len(), 6);
        assert_eq!(
            report_target_port_groups(&cdb(2, 1024), &p),
            Err(Sense::invalid_field_in_cdb(1, 7))
        );
    }

    #[test]
    fn access_gate() {
        use Access::*;
        let with = |state| PortContext {
            groups: vec![PortGroup {
                id: 7,
                state,
                preferred: false,
                relative_ports: vec![2],
            }],
            ..port()
        };
        let table = [
            (AluaState::ActiveNonOptimized, Media, None),
            (
                AluaState::Standby,
                Media,
                Some(Sense::not_ready_alua_standby()),
            ),
            (AluaState::Standby, Capacity, None),
            (AluaState::Standby, Management, None),
            (
                AluaState::Unavailable,
                Capacity,
                Some(Sense::not_ready_alua_unavailable()),
            ),
            (AluaState::Unavailable, Management, None),
            (
                AluaState::Transitioning,
                Management,
                Some(Sense::not_ready_alua_transitioning()),
            ),
            (AluaState::Transitioning, Always, None),
            (AluaState::Offline, Media, Some(Sense::not_ready_offline())),
            (AluaState::Offline, Always, None),
        ];
        for (state, access, want) in table {
            let got = check_access(access, &with(state)).err();
            assert_eq!(got, want, "{state:?} {access:?}");
        }
        // No groups: no gating.
        let none = PortContext {
            groups: vec![],
            ..port()
        };
        assert_eq!(check_access(Media, &none), Ok(()));
    }
}
