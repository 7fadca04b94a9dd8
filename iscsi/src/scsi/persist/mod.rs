//! SPC-4 persistent reservations (5.13): PERSISTENT RESERVE IN (READ KEYS,
//! READ RESERVATION, REPORT CAPABILITIES, READ FULL STATUS) and PERSISTENT
//! RESERVE OUT (REGISTER, RESERVE, RELEASE, CLEAR, PREEMPT, PREEMPT AND
//! ABORT, REGISTER AND IGNORE EXISTING KEY).
//!
//! ```text
//!  PR OUT / PR IN (rare) ──> LunShared::pr  Mutex<PrState>  ──> PrStore::save (APTPL)
//!                                 │ bumps
//!                                 v
//!  every command ──> LunShared::pr_version (one atomic load) ── moved? ──> lock,
//!                    refresh the nexus' cached PrView and take its unit attentions
//! ```
//!
//! The state is one [`PrState`] per logical unit, shared by every I_T nexus
//! on every core. An I_T nexus is identified as SPC-4 wants it, by initiator
//! port name (`iqn,i,0x<ISID>`) and relative target port: a registration
//! outlives the session that made it and belongs to any later session of the
//! same initiator port. Each command loads `pr_version` once; only when it
//! moved does the nexus take the lock and recompute its [`PrView`]
//! (registered? reservation type? holder?) that [`pr_conflicts`] consults.
//!
//! Unit attentions for other I_T nexuses (REGISTRATIONS PREEMPTED,
//! RESERVATIONS PREEMPTED, RESERVATIONS RELEASED) go into a bounded event
//! log in the state; each nexus picks up the ones addressed to it when it
//! next refreshes. PREEMPT AND ABORT also logs an abort event, which the
//! preempted nexus takes as "abort my tasks for this LU" ([`NexusState::take_abort`]).
//!
//! Persistence goes through the [`PrStore`] trait, called after each
//! change; this layer does no I/O of its own. The target keeps APTPL state
//! in a file (`target::pr_file`) in the text form of [`PrState::to_text`];
//! a replicated store can take its place.
//!
//! | module      | what                                                    |
//! |-------------|---------------------------------------------------------|
//! | `mod.rs`    | the state's types and the [`PrStore`] trait             |
//! | `conflict`  | which commands a reservation refuses (SPC-4 table 63)   |
//! | `command`   | the CDBs, PR IN answers, running a request on a unit    |
//! | `state`     | the service actions on [`PrState`]                      |
//! | `text`      | the saved form                                          |

mod command;
mod conflict;
mod state;
#[cfg(test)]
mod tests;
mod text;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io;

use super::ua::UnitAttention;

pub use command::{persistent_reserve, PrRequest};
pub(crate) use command::{prin_cdb, prout_cdb};
pub(crate) use conflict::pr_conflicts;
pub(crate) use text::{unword, word};

/// Events kept for nexuses that have not yet caught up.
const EVENT_LOG: usize = 256;

/// A persistent reservation type (SPC-4 table 207).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrType {
    /// Write Exclusive (1h).
    WriteExclusive,
    /// Exclusive Access (3h).
    ExclusiveAccess,
    /// Write Exclusive – Registrants Only (5h).
    WriteExclusiveRegistrantsOnly,
    /// Exclusive Access – Registrants Only (6h).
    ExclusiveAccessRegistrantsOnly,
    /// Write Exclusive – All Registrants (7h).
    WriteExclusiveAllRegistrants,
    /// Exclusive Access – All Registrants (8h).
    ExclusiveAccessAllRegistrants,
}

impl PrType {
    /// The TYPE code.
    pub fn code(self) -> u8 {
        match self {
            PrType::WriteExclusive => 1,
            PrType::ExclusiveAccess => 3,
            PrType::WriteExclusiveRegistrantsOnly => 5,
            PrType::ExclusiveAccessRegistrantsOnly => 6,
            PrType::WriteExclusiveAllRegistrants => 7,
            PrType::ExclusiveAccessAllRegistrants => 8,
        }
    }

    /// The type of TYPE code `c`.
    pub fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => PrType::WriteExclusive,
            3 => PrType::ExclusiveAccess,
            5 => PrType::WriteExclusiveRegistrantsOnly,
            6 => PrType::ExclusiveAccessRegistrantsOnly,
            7 => PrType::WriteExclusiveAllRegistrants,
            8 => PrType::ExclusiveAccessAllRegistrants,
            _ => return None,
        })
    }

    /// Every registrant holds the reservation.
    pub fn all_registrants(self) -> bool {
        matches!(
            self,
            PrType::WriteExclusiveAllRegistrants | PrType::ExclusiveAccessAllRegistrants
        )
    }

    /// Registrants only or all registrants: registered nexuses have access.
    pub(super) fn registrants_have_access(self) -> bool {
        !matches!(self, PrType::WriteExclusive | PrType::ExclusiveAccess)
    }

    /// Exclusive access: reads conflict too.
    pub(super) fn exclusive_access(self) -> bool {
        matches!(
            self,
            PrType::ExclusiveAccess
                | PrType::ExclusiveAccessRegistrantsOnly
                | PrType::ExclusiveAccessAllRegistrants
        )
    }
}

/// The identity of an I_T nexus for persistent reservations: initiator port
/// name (`<iqn>,i,0x<isid>`) and relative target port identifier.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct ItNexus {
    /// Initiator port name.
    pub initiator: String,
    /// Relative target port identifier.
    pub rel_port: u16,
}

impl ItNexus {
    /// The nexus of initiator `name` with `isid` through relative port `rel_port`.
    pub fn iscsi(name: &str, isid: [u8; 6], rel_port: u16) -> Self {
        let mut initiator = format!("{name},i,0x");
        for b in isid {
            let _ = write!(initiator, "{b:02x}");
        }
        ItNexus {
            initiator,
            rel_port,
        }
    }

    /// The iSCSI TransportID (format 01b, with ISID) of the initiator port.
    fn transport_id(&self) -> Vec<u8> {
        let mut name = self.initiator.as_bytes().to_vec();
        name.push(0);
        while !name.len().is_multiple_of(4) {
            name.push(0);
        }
        let mut t = vec![0x45, 0];
        t.extend_from_slice(&(name.len() as u16).to_be_bytes());
        t.extend_from_slice(&name);
        t
    }
}

/// The initiator port named by an iSCSI TransportID with ISID (format 01b).
fn parse_transport_id(t: &[u8]) -> Option<String> {
    if t.len() < 4 || t[0] != 0x45 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([t[2], t[3]]));
    let raw = t.get(4..4 + len)?;
    let name = raw.split(|b| *b == 0).next()?;
    let name = std::str::from_utf8(name).ok()?;
    let at = name.to_ascii_lowercase().rfind(",i,0x")?;
    let (iqn, isid) = (&name[..at], &name[at + 5..]);
    if iqn.is_empty() || isid.len() != 12 || !isid.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(format!("{iqn},i,0x{}", isid.to_ascii_lowercase()))
}

/// One registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Reservation key.
    pub key: u64,
    /// Registered I_T nexus.
    pub nexus: ItNexus,
}

/// The persistent reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Type.
    pub kind: PrType,
    /// Holder (ignored for all-registrants types: every registrant holds it).
    pub holder: ItNexus,
}

/// What happened to an I_T nexus, for it to pick up on its next command.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Ua(UnitAttention),
    Abort,
}

/// Registrations, reservation, APTPL and PRgeneration of one logical unit,
/// plus the log of events for I_T nexuses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrState {
    /// PRgeneration.
    pub generation: u32,
    /// Registrations, in order of registration.
    pub registrations: Vec<Registration>,
    /// The persistent reservation, if any.
    pub reservation: Option<Reservation>,
    /// Activate persist through power loss (last REGISTER's APTPL).
    pub aptpl: bool,
    events: VecDeque<(u64, ItNexus, Event)>,
    next_event: u64,
}

/// What one I_T nexus knows of the persistent reservation state, cached in
/// its [`NexusState`](crate::scsi::NexusState) and refreshed only when the state changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrView {
    /// Any registration exists (SPC-2 RESERVE/RELEASE then conflict).
    pub any: bool,
    /// This nexus is registered.
    pub registered: bool,
    /// The reservation type, if reserved.
    pub kind: Option<PrType>,
    /// This nexus holds the reservation.
    pub holder: bool,
}

/// Where the state of one logical unit is kept beyond the process. Called
/// under the unit's lock after every change.
pub trait PrStore: std::fmt::Debug + Send + Sync {
    /// The state saved last, if any.
    fn load(&self) -> io::Result<Option<PrState>>;
    /// Keeps `state` (a store may keep only APTPL state).
    fn save(&self, state: &PrState) -> io::Result<()>;
}
