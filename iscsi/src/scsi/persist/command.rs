//! PERSISTENT RESERVE IN and OUT CDBs, PR IN answers, and running a
//! request against a logical unit's state.

use super::PrState;
use crate::scsi::cdb::{be, be16, Cdb};
use crate::scsi::sense::Sense;
use crate::scsi::Completion;
use crate::scsi::{LunShared, NexusState};

/// A PERSISTENT RESERVE IN or OUT the session runs against the unit's
/// shared state with [`persistent_reserve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrRequest {
    /// PERSISTENT RESERVE IN.
    In {
        /// Service action.
        sa: u8,
        /// Allocation length.
        alloc: u16,
    },
    /// PERSISTENT RESERVE OUT with its parameter list.
    Out {
        /// Service action.
        sa: u8,
        /// SCOPE and TYPE (CDB byte 2).
        scope_type: u8,
        /// Parameter list.
        params: Vec<u8>,
    },
}

/// Longest REGISTER AND MOVE parameter list: 24 bytes and an iSCSI
/// TransportID (an iSCSI name is at most 223 bytes).
const MAX_MOVE_LEN: u32 = 24 + 4 + 256;

/// PERSISTENT RESERVE OUT CDB checks before the parameter list is collected:
/// the PARAMETER LIST LENGTH must be 24 (no SPEC_I_PT), or 24 plus a
/// TransportID for REGISTER AND MOVE.
pub(crate) fn prout_cdb(c: &Cdb) -> Result<u32, Sense> {
    let len = be(c, 5, 4) as u32;
    let ok = if c[1] & 0x1F == 0x07 {
        (24 + 24..=MAX_MOVE_LEN).contains(&len)
    } else {
        len == 24
    };
    if !ok {
        return Err(Sense::parameter_list_length_error());
    }
    Ok(len)
}

/// The request for PERSISTENT RESERVE IN `c`.
pub(crate) fn prin_cdb(c: &Cdb) -> PrRequest {
    PrRequest::In {
        sa: c[1] & 0x1F,
        alloc: be16(c, 7),
    }
}

/// Runs `req` from `nexus` against the logical unit `lu`.
pub fn persistent_reserve(req: &PrRequest, lu: &LunShared, nexus: &mut NexusState) -> Completion {
    let me = nexus.pr_identity();
    lu.with_pr(|s| match req {
        PrRequest::In { sa, alloc } => Ok((prin(s, *sa, usize::from(*alloc)), false)),
        PrRequest::Out {
            sa,
            scope_type,
            params,
        } => s
            .prout(me, *sa, *scope_type, params)
            .map(|changed| (Completion::good(), changed)),
    })
}

pub(super) fn prin(s: &PrState, sa: u8, alloc: usize) -> Completion {
    let mut d = Vec::new();
    d.extend_from_slice(&s.generation.to_be_bytes());
    d.extend_from_slice(&[0; 4]);
    match sa {
        0 => {
            for r in &s.registrations {
                d.extend_from_slice(&r.key.to_be_bytes());
            }
        }
        1 => {
            if let Some(res) = &s.reservation {
                let key = if res.kind.all_registrants() {
                    0
                } else {
                    s.key_of(&res.holder).unwrap_or(0)
                };
                d.extend_from_slice(&key.to_be_bytes());
                d.extend_from_slice(&[0; 5]);
                d.push(res.kind.code());
                d.extend_from_slice(&[0; 2]);
            }
        }
        2 => {
            // REPORT CAPABILITIES: CRH 0, SIP_C 0, ATP_C 0, PTPL_C 1;
            // TMV 0; PTPL_A; every type.
            d = vec![0, 8, 0x01, u8::from(s.aptpl), 0xEA, 0x01, 0, 0];
            d.truncate(alloc);
            return Completion::with_data(d);
        }
        _ => {
            for r in &s.registrations {
                let holder = s.holds(&r.nexus);
                d.extend_from_slice(&r.key.to_be_bytes());
                d.extend_from_slice(&[0; 4]);
                d.push(u8::from(holder));
                d.push(match (&s.reservation, holder) {
                    (Some(res), true) => res.kind.code(),
                    _ => 0,
                });
                d.extend_from_slice(&[0; 4]);
                d.extend_from_slice(&r.nexus.rel_port.to_be_bytes());
                let tid = r.nexus.transport_id();
                d.extend_from_slice(&(tid.len() as u32).to_be_bytes());
                d.extend_from_slice(&tid);
            }
        }
    }
    let add = (d.len() - 8) as u32;
    d[4..8].copy_from_slice(&add.to_be_bytes());
    d.truncate(alloc);
    Completion::with_data(d)
}
