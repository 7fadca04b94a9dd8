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
//! Persistence goes through the [`PrStore`] trait: [`FilePrStore`] writes the
//! state atomically (temp file, fsync, rename) while APTPL is set and removes
//! it when APTPL is cleared; a replicated store can take its place later.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::PathBuf;

use super::cdb::{be, be16, Cdb};
use super::opcodes::Handler;
use super::sense::{Sense, SenseKey};
use super::ua::{LunShared, NexusState, UnitAttention};
use super::Completion;

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
    fn registrants_have_access(self) -> bool {
        !matches!(self, PrType::WriteExclusive | PrType::ExclusiveAccess)
    }

    /// Exclusive access: reads conflict too.
    fn exclusive_access(self) -> bool {
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
/// its [`NexusState`] and refreshed only when the state changed.
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

/// How a command is treated in the presence of a persistent reservation
/// (SPC-4 table 63, SBC-3 table 13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Allowed from every I_T nexus.
    Allowed,
    /// Reads: allowed under write-exclusive types.
    Read,
    /// Writes and everything that changes state.
    Write,
    /// SPC-2 RESERVE/RELEASE: conflict whenever a registration exists.
    Spc2,
}

fn class(h: Handler) -> Class {
    match h {
        Handler::Inquiry
        | Handler::RequestSense
        | Handler::ReportLuns
        | Handler::ReadCapacity10
        | Handler::ReadCapacity16
        | Handler::ReportTargetPortGroups
        | Handler::ReportSupportedOpcodes
        | Handler::ReportSupportedTmf
        | Handler::TestUnitReady
        | Handler::PrIn
        | Handler::PrOut => Class::Allowed,
        Handler::Read(_)
        | Handler::Verify(_)
        | Handler::Prefetch(_)
        | Handler::ModeSense
        | Handler::GetLbaStatus
        | Handler::ReadDefectData10
        | Handler::ReadDefectData12
        | Handler::ReceiveCopyResults => Class::Read,
        Handler::Reserve | Handler::Release => Class::Spc2,
        Handler::Write(_)
        | Handler::WriteVerify(_)
        | Handler::SyncCache(_)
        | Handler::WriteSame(_)
        | Handler::Unmap
        | Handler::OrWrite
        | Handler::CompareAndWrite
        | Handler::WriteAtomic
        | Handler::ExtendedCopy
        | Handler::Sanitize
        | Handler::ModeSelect
        | Handler::StartStopUnit
        | Handler::PreventAllow => Class::Write,
    }
}

/// Whether `handler` from a nexus that sees `view` ends with RESERVATION
/// CONFLICT.
pub(crate) fn pr_conflicts(handler: Handler, view: &PrView) -> bool {
    let c = class(handler);
    if c == Class::Spc2 {
        return view.any || view.kind.is_some();
    }
    let Some(kind) = view.kind else { return false };
    if view.holder || c == Class::Allowed {
        return false;
    }
    if view.registered && kind.registrants_have_access() {
        return false;
    }
    match c {
        Class::Read => kind.exclusive_access(),
        _ => true,
    }
}

/// Where the state of one logical unit is kept beyond the process. Called
/// under the unit's lock after every change.
pub trait PrStore: std::fmt::Debug + Send + Sync {
    /// The state saved last, if any.
    fn load(&self) -> io::Result<Option<PrState>>;
    /// Keeps `state` (a store may keep only APTPL state).
    fn save(&self, state: &PrState) -> io::Result<()>;
}

/// Keeps APTPL state in one file, written atomically; the file is removed
/// when APTPL is clear.
#[derive(Debug, Clone)]
pub struct FilePrStore {
    path: PathBuf,
}

impl FilePrStore {
    /// A store at `path`.
    pub fn new(path: PathBuf) -> Self {
        FilePrStore { path }
    }
}

impl PrStore for FilePrStore {
    fn load(&self) -> io::Result<Option<PrState>> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => decode(&text).map(Some).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "bad reservation state file")
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn save(&self, state: &PrState) -> io::Result<()> {
        if !state.aptpl {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let tmp = self.path.with_extension("pr.tmp");
        {
            use std::os::unix::fs::OpenOptionsExt;
            // Registration keys are the initiators' business: private.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(encode(state).as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

/// The text form of `s` (one item a line; initiator port names hold no
/// whitespace).
fn encode(s: &PrState) -> String {
    let mut t = String::from("trellis-pr 1\n");
    let _ = writeln!(t, "generation {}", s.generation);
    for r in &s.registrations {
        let _ = writeln!(
            t,
            "reg {:016x} {} {}",
            r.key, r.nexus.rel_port, r.nexus.initiator
        );
    }
    if let Some(r) = &s.reservation {
        let _ = writeln!(
            t,
            "res {} {} {}",
            r.kind.code(),
            r.holder.rel_port,
            r.holder.initiator
        );
    }
    t
}

fn decode(text: &str) -> Option<PrState> {
    let mut lines = text.lines();
    if lines.next()? != "trellis-pr 1" {
        return None;
    }
    let mut s = PrState {
        aptpl: true,
        ..PrState::default()
    };
    for line in lines {
        let mut w = line.split_whitespace();
        match w.next()? {
            "generation" => s.generation = w.next()?.parse().ok()?,
            "reg" => {
                let key = u64::from_str_radix(w.next()?, 16).ok()?;
                let rel_port = w.next()?.parse().ok()?;
                let initiator = w.next()?.to_string();
                s.registrations.push(Registration {
                    key,
                    nexus: ItNexus {
                        initiator,
                        rel_port,
                    },
                });
            }
            "res" => {
                let kind = PrType::from_code(w.next()?.parse().ok()?)?;
                let rel_port = w.next()?.parse().ok()?;
                let initiator = w.next()?.to_string();
                s.reservation = Some(Reservation {
                    kind,
                    holder: ItNexus {
                        initiator,
                        rel_port,
                    },
                });
            }
            _ => return None,
        }
    }
    Some(s)
}

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

fn prin(s: &PrState, sa: u8, alloc: usize) -> Completion {
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

impl PrState {
    fn key_of(&self, n: &ItNexus) -> Option<u64> {
        self.registrations
            .iter()
            .find(|r| r.nexus == *n)
            .map(|r| r.key)
    }

    /// Whether `n` holds the reservation.
    pub fn holds(&self, n: &ItNexus) -> bool {
        match &self.reservation {
            None => false,
            Some(r) if r.kind.all_registrants() => self.key_of(n).is_some(),
            Some(r) => r.holder == *n,
        }
    }

    /// The view of nexus `n`.
    pub fn view(&self, n: &ItNexus) -> PrView {
        PrView {
            any: !self.registrations.is_empty(),
            registered: self.key_of(n).is_some(),
            kind: self.reservation.as_ref().map(|r| r.kind),
            holder: self.holds(n),
        }
    }

    /// Whether nothing is registered or reserved.
    pub fn is_empty(&self) -> bool {
        self.registrations.is_empty() && self.reservation.is_none()
    }

    fn event(&mut self, to: &ItNexus, e: Event) {
        self.next_event += 1;
        if self.events.len() >= EVENT_LOG {
            self.events.pop_front();
        }
        self.events.push_back((self.next_event, to.clone(), e));
    }

    /// The sequence number of the last event.
    pub(crate) fn last_event(&self) -> u64 {
        self.next_event
    }

    /// Events for `n` after `seen`: unit attentions, and whether its tasks
    /// are to be aborted.
    pub(crate) fn events_for(&self, n: &ItNexus, seen: u64) -> (Vec<UnitAttention>, bool) {
        let mut uas = Vec::new();
        let mut abort = false;
        for (seq, to, e) in &self.events {
            if *seq > seen && to == n {
                match e {
                    Event::Ua(u) => uas.push(*u),
                    Event::Abort => abort = true,
                }
            }
        }
        (uas, abort)
    }

    /// Removes the registration of `n`, and the reservation it held alone,
    /// or (all registrants) once the last registrant goes. Returns whether
    /// a reservation went.
    fn unregister(&mut self, n: &ItNexus) -> bool {
        self.registrations.retain(|r| r.nexus != *n);
        let gone = match &self.reservation {
            Some(r) if r.kind.all_registrants() => self.registrations.is_empty(),
            Some(r) => r.holder == *n,
            None => false,
        };
        if gone {
            let kind = self.reservation.take().map(|r| r.kind);
            if kind.is_some_and(|k| k.registrants_have_access()) {
                self.notify_registrants(n, UnitAttention::ReservationsReleased);
            }
        }
        gone
    }

    fn notify_registrants(&mut self, except: &ItNexus, ua: UnitAttention) {
        let to: Vec<ItNexus> = self
            .registrations
            .iter()
            .filter(|r| r.nexus != *except)
            .map(|r| r.nexus.clone())
            .collect();
        for n in to {
            self.event(&n, Event::Ua(ua));
        }
    }

    /// Removes every registration with `key` except `me`'s, with a unit
    /// attention (and, `abort`, an abort) to each; false if there was none.
    fn preempt_key(&mut self, me: &ItNexus, key: u64, abort: bool) -> bool {
        let gone: Vec<ItNexus> = self
            .registrations
            .iter()
            .filter(|r| r.key == key && r.nexus != *me)
            .map(|r| r.nexus.clone())
            .collect();
        let matched = self.registrations.iter().any(|r| r.key == key);
        self.registrations
            .retain(|r| r.key != key || r.nexus == *me);
        for n in &gone {
            self.event(n, Event::Ua(UnitAttention::RegistrationsPreempted));
            if abort {
                self.event(n, Event::Abort);
            }
        }
        matched
    }

    /// REGISTER AND MOVE from `me` (SPC-4 5.13.8): registers the I_T nexus
    /// of the TransportID with the SERVICE ACTION RESERVATION KEY and moves
    /// `me`'s reservation to it; UNREG also unregisters `me`.
    fn register_and_move(
        &mut self,
        me: &ItNexus,
        scope_type: u8,
        p: &[u8],
    ) -> Result<bool, Completion> {
        let check = |s: Sense| Err(Completion::check(s));
        if p.len() < 24 || 24 + be(p, 20, 4) as usize != p.len() {
            return check(Sense::parameter_list_length_error());
        }
        let (key, sark) = (be(p, 0, 8), be(p, 8, 8));
        let (unreg, aptpl) = (p[17] & 0x02 != 0, p[17] & 0x01 != 0);
        if self.key_of(me) != Some(key) {
            return Err(Completion::reservation_conflict());
        }
        match &self.reservation {
            Some(r) if !r.kind.all_registrants() && r.holder == *me => {}
            _ => return Err(Completion::reservation_conflict()),
        }
        if scope_type >> 4 != 0 {
            return check(Sense::invalid_field_in_cdb(2, 7));
        }
        let Some(kind) = PrType::from_code(scope_type & 0x0F) else {
            return check(Sense::invalid_field_in_cdb(2, 3));
        };
        if sark == 0 {
            return check(Sense::invalid_field_in_parameter_list(8, None));
        }
        let Some(initiator) = parse_transport_id(&p[24..]) else {
            return check(Sense::invalid_field_in_parameter_list(24, None));
        };
        let dest = ItNexus {
            initiator,
            rel_port: be16(p, 18),
        };
        if dest == *me {
            return check(Sense::invalid_field_in_parameter_list(24, None));
        }
        match self.registrations.iter_mut().find(|r| r.nexus == dest) {
            Some(r) => r.key = sark,
            None => self.registrations.push(Registration {
                key: sark,
                nexus: dest.clone(),
            }),
        }
        self.reservation = Some(Reservation { kind, holder: dest });
        if unreg {
            self.registrations.retain(|r| r.nexus != *me);
        }
        self.aptpl = aptpl;
        self.generation = self.generation.wrapping_add(1);
        Ok(true)
    }

    /// PERSISTENT RESERVE OUT from `me`. Ok(true) when the state changed.
    pub fn prout(
        &mut self,
        me: &ItNexus,
        sa: u8,
        scope_type: u8,
        p: &[u8],
    ) -> Result<bool, Completion> {
        let check = |s: Sense| Completion::check(s);
        if sa == 0x07 {
            return self.register_and_move(me, scope_type, p);
        }
        if p.len() != 24 {
            return Err(check(Sense::parameter_list_length_error()));
        }
        let key = be(p, 0, 8);
        let sark = be(p, 8, 8);
        let flags = p[20];
        if flags & 0x08 != 0 {
            return Err(check(Sense::invalid_field_in_parameter_list(20, 3)));
        }
        if flags & 0x04 != 0 {
            return Err(check(Sense::invalid_field_in_parameter_list(20, 2)));
        }
        let aptpl = flags & 0x01 != 0;
        let mine = self.key_of(me);
        let conflict = Completion::reservation_conflict;
        match sa {
            // REGISTER, REGISTER AND IGNORE EXISTING KEY.
            0x00 | 0x06 => {
                if sa == 0x00 && mine.unwrap_or(0) != key {
                    return Err(conflict());
                }
                match (mine, sark) {
                    (None, 0) => return Ok(false),
                    (None, k) => self.registrations.push(Registration {
                        key: k,
                        nexus: me.clone(),
                    }),
                    (Some(_), 0) => {
                        self.unregister(me);
                    }
                    (Some(_), k) => {
                        if let Some(r) = self.registrations.iter_mut().find(|r| r.nexus == *me) {
                            r.key = k;
                        }
                    }
                }
                self.aptpl = aptpl;
                self.generation = self.generation.wrapping_add(1);
                return Ok(true);
            }
            0x01..=0x05 => {}
            _ => return Err(check(Sense::invalid_field_in_cdb(1, 4))),
        }
        if mine != Some(key) {
            return Err(conflict());
        }
        let scope = scope_type >> 4;
        let kind = PrType::from_code(scope_type & 0x0F);
        let typed = || -> Result<PrType, Completion> {
            if scope != 0 {
                return Err(check(Sense::invalid_field_in_cdb(2, 7)));
            }
            kind.ok_or_else(|| check(Sense::invalid_field_in_cdb(2, 3)))
        };
        match sa {
            // RESERVE.
            0x01 => {
                let kind = typed()?;
                match &self.reservation {
                    Some(r) if self.holds(me) && r.kind == kind => Ok(false),
                    Some(_) => Err(conflict()),
                    None => {
                        self.reservation = Some(Reservation {
                            kind,
                            holder: me.clone(),
                        });
                        Ok(true)
                    }
                }
            }
            // RELEASE.
            0x02 => {
                let Some(r) = &self.reservation else {
                    return Ok(false);
                };
                if !self.holds(me) {
                    return Ok(false);
                }
                let kind = r.kind;
                if scope != 0 {
                    return Err(check(Sense::invalid_field_in_cdb(2, 7)));
                }
                if Some(kind) != PrType::from_code(scope_type & 0x0F) {
                    return Err(check(Sense::new(SenseKey::IllegalRequest, 0x26, 0x04)));
                }
                self.reservation = None;
                if kind.registrants_have_access() {
                    self.notify_registrants(me, UnitAttention::ReservationsReleased);
                }
                Ok(true)
            }
            // CLEAR.
            0x03 => {
                self.reservation = None;
                self.notify_registrants(me, UnitAttention::ReservationsPreempted);
                self.registrations.clear();
                self.generation = self.generation.wrapping_add(1);
                Ok(true)
            }
            // PREEMPT, PREEMPT AND ABORT.
            _ => {
                let abort = sa == 0x05;
                let kind = typed()?;
                let res = self.reservation.clone();
                match res {
                    None => {
                        if sark == 0 {
                            return Err(check(Sense::invalid_field_in_parameter_list(8, None)));
                        }
                        if !self.preempt_key(me, sark, abort) {
                            return Err(conflict());
                        }
                    }
                    Some(r) if r.kind.all_registrants() && sark == 0 => {
                        let others: Vec<u64> = self
                            .registrations
                            .iter()
                            .filter(|x| x.nexus != *me)
                            .map(|x| x.key)
                            .collect();
                        for k in others {
                            self.preempt_key(me, k, abort);
                        }
                        self.reservation = Some(Reservation {
                            kind,
                            holder: me.clone(),
                        });
                    }
                    Some(r)
                        if !r.kind.all_registrants() && self.key_of(&r.holder) == Some(sark) =>
                    {
                        self.preempt_key(me, sark, abort);
                        self.reservation = Some(Reservation {
                            kind,
                            holder: me.clone(),
                        });
                        if kind != r.kind {
                            self.notify_registrants(me, UnitAttention::ReservationsReleased);
                        }
                    }
                    Some(_) => {
                        if sark == 0 {
                            return Err(check(Sense::invalid_field_in_parameter_list(8, None)));
                        }
                        if !self.preempt_key(me, sark, abort) {
                            return Err(conflict());
                        }
                    }
                }
                self.generation = self.generation.wrapping_add(1);
                Ok(true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::opcodes::OPS;
    use crate::scsi::Status;

    fn nx(i: u8) -> ItNexus {
        ItNexus::iscsi("iqn.2026-01.test:ini", [0x80, 0, 0, 0, 0, i], 1)
    }

    fn params(key: u64, sark: u64, flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 24];
        p[..8].copy_from_slice(&key.to_be_bytes());
        p[8..16].copy_from_slice(&sark.to_be_bytes());
        p[20] = flags;
        p
    }

    fn out(s: &mut PrState, n: u8, sa: u8, t: u8, key: u64, sark: u64) -> Status {
        match s.prout(&nx(n), sa, t, &params(key, sark, 0)) {
            Ok(_) => Status::Good,
            Err(c) => c.status,
        }
    }

    const CONFLICT: Status = Status::ReservationConflict;
    const GOOD: Status = Status::Good;
    const CHECK: Status = Status::CheckCondition;

    #[test]
    fn transport_id_and_name() {
        let n = nx(1);
        assert_eq!(n.initiator, "iqn.2026-01.test:ini,i,0x800000000001");
        let t = n.transport_id();
        assert_eq!(t[0], 0x45);
        assert_eq!(t.len() % 4, 0);
        assert_eq!(usize::from(u16::from_be_bytes([t[2], t[3]])), t.len() - 4);
    }

    /// Per type: (read, write) conflicts for (holder, registered, unregistered).
    #[test]
    fn conflict_table_per_type() {
        use PrType::*;
        let read = Handler::Read(crate::scsi::cdb::RwLayout::Ten);
        let write = Handler::Write(crate::scsi::cdb::RwLayout::Ten);
        // (type, registered non-holder (read, write), unregistered (read, write))
        let table = [
            (WriteExclusive, (false, true), (false, true)),
            (ExclusiveAccess, (true, true), (true, true)),
            (WriteExclusiveRegistrantsOnly, (false, false), (false, true)),
            (ExclusiveAccessRegistrantsOnly, (false, false), (true, true)),
            (WriteExclusiveAllRegistrants, (false, false), (false, true)),
            (ExclusiveAccessAllRegistrants, (false, false), (true, true)),
        ];
        for (kind, reg, unreg) in table {
            let mut s = PrState::default();
            assert_eq!(out(&mut s, 1, 0, 0, 0, 0xA), GOOD);
            assert_eq!(out(&mut s, 2, 0, 0, 0, 0xB), GOOD);
            assert_eq!(out(&mut s, 1, 1, kind.code(), 0xA, 0), GOOD);
            let holder = s.view(&nx(1));
            assert!(holder.holder);
            for h in [read, write, Handler::ModeSelect, Handler::TestUnitReady] {
                assert!(!pr_conflicts(h, &holder), "{kind:?} holder {h:?}");
            }
            let v = s.view(&nx(2));
            assert_eq!(v.holder, kind.all_registrants());
            assert_eq!(
                (pr_conflicts(read, &v), pr_conflicts(write, &v)),
                reg,
                "{kind:?}"
            );
            let v = s.view(&nx(3));
            assert_eq!(
                (pr_conflicts(read, &v), pr_conflicts(write, &v)),
                unreg,
                "{kind:?}"
            );
            for h in [
                Handler::Inquiry,
                Handler::TestUnitReady,
                Handler::ReportLuns,
                Handler::ReadCapacity10,
                Handler::PrIn,
                Handler::PrOut,
                Handler::RequestSense,
            ] {
                assert!(!pr_conflicts(h, &v), "{kind:?} {h:?}");
            }
            assert!(pr_conflicts(Handler::Reserve, &v));
            assert!(pr_conflicts(Handler::Release, &v));
        }
    }

    #[test]
    fn every_handler_is_classified() {
        // Without registrations nothing conflicts; SPC-2 ones do with one.
        let none = PrView::default();
        let reg = PrView {
            any: true,
            ..PrView::default()
        };
        for e in OPS {
            assert!(!pr_conflicts(e.handler, &none), "{}", e.name);
            let spc2 = matches!(e.handler, Handler::Reserve | Handler::Release);
            assert_eq!(pr_conflicts(e.handler, &reg), spc2, "{}", e.name);
        }
    }

    /// (nexus, service action, type, key, SARK, status, keys after).
    type Step = (u8, u8, u8, u64, u64, Status, &'static [u64]);

    #[test]
    fn register_sequences() {
        let mut s = PrState::default();
        let steps: &[Step] = &[
            (1, 0, 0, 5, 7, CONFLICT, &[]),
            (1, 0, 0, 0, 0, GOOD, &[]),
            (1, 0, 0, 0, 7, GOOD, &[7]),
            (1, 0, 0, 8, 9, CONFLICT, &[7]),
            (1, 0, 0, 7, 9, GOOD, &[9]),
            (1, 6, 0, 0, 10, GOOD, &[10]),
            (2, 6, 0, 123, 11, GOOD, &[10, 11]),
            (2, 1, 1, 10, 0, CONFLICT, &[10, 11]),
            (3, 1, 1, 0, 0, CONFLICT, &[10, 11]),
            (2, 1, 2, 11, 0, CHECK, &[10, 11]),
            (2, 1, 1, 11, 0, GOOD, &[10, 11]),
            (1, 1, 1, 10, 0, CONFLICT, &[10, 11]),
            (2, 1, 1, 11, 0, GOOD, &[10, 11]),
            (1, 2, 1, 10, 0, GOOD, &[10, 11]),
            (2, 2, 3, 11, 0, CHECK, &[10, 11]),
            (2, 0, 0, 11, 0, GOOD, &[10]),
            (1, 3, 0, 10, 0, GOOD, &[]),
            (1, 7, 0, 0, 0, CONFLICT, &[]),
        ];
        for (i, &(n, sa, t, key, sark, status, keys)) in steps.iter().enumerate() {
            assert_eq!(out(&mut s, n, sa, t, key, sark), status, "step {i}");
            let got: Vec<u64> = s.registrations.iter().map(|r| r.key).collect();
            assert_eq!(got, keys, "step {i}");
        }
        // Unregistering the holder released the reservation.
        assert!(s.reservation.is_none());
    }

    #[test]
    fn preempt_and_unit_attentions() {
        let mut s = PrState::default();
        for n in 1..=3 {
            assert_eq!(out(&mut s, n, 0, 0, 0, u64::from(n)), GOOD);
        }
        assert_eq!(out(&mut s, 2, 1, 5, 2, 0), GOOD);
        let seen = s.last_event();
        // Preempt the holder: its registration goes, 1 holds now (type 1).
        assert_eq!(out(&mut s, 1, 5, 1, 1, 2), GOOD);
        assert!(s.holds(&nx(1)));
        assert_eq!(s.key_of(&nx(2)), None);
        assert_eq!(
            s.events_for(&nx(2), seen),
            (vec![UnitAttention::RegistrationsPreempted], true)
        );
        assert_eq!(
            s.events_for(&nx(3), seen),
            (vec![UnitAttention::ReservationsReleased], false)
        );
        // Preempting a key nobody has conflicts; SARK 0 is invalid here.
        assert_eq!(out(&mut s, 1, 4, 1, 1, 99), CONFLICT);
        assert_eq!(out(&mut s, 1, 4, 1, 1, 0), CHECK);
        // Preempt a non-holder: reservation stays.
        assert_eq!(out(&mut s, 1, 4, 1, 1, 3), GOOD);
        assert_eq!(s.registrations.len(), 1);
        assert!(s.holds(&nx(1)));
        // CLEAR: everyone else gets RESERVATIONS PREEMPTED.
        assert_eq!(out(&mut s, 2, 0, 0, 0, 4), GOOD);
        let seen = s.last_event();
        assert_eq!(out(&mut s, 1, 3, 0, 1, 0), GOOD);
        assert!(s.is_empty());
        assert_eq!(
            s.events_for(&nx(2), seen).0,
            vec![UnitAttention::ReservationsPreempted]
        );
    }

    #[test]
    fn all_registrants_preempt_with_zero_key() {
        let mut s = PrState::default();
        for n in 1..=3 {
            assert_eq!(out(&mut s, n, 0, 0, 0, u64::from(n)), GOOD);
        }
        assert_eq!(out(&mut s, 2, 1, 8, 2, 0), GOOD);
        assert!(s.holds(&nx(3)));
        assert_eq!(out(&mut s, 1, 4, 3, 1, 0), GOOD);
        assert_eq!(s.registrations.len(), 1);
        assert_eq!(
            s.reservation.as_ref().map(|r| r.kind),
            Some(PrType::ExclusiveAccess)
        );
        assert!(s.holds(&nx(1)));
    }

    #[test]
    fn prin_data() {
        let mut s = PrState::default();
        assert_eq!(out(&mut s, 1, 0, 0, 0, 0x1122), GOOD);
        assert_eq!(out(&mut s, 1, 1, 3, 0x1122, 0), GOOD);
        let keys = prin(&s, 0, 100).data;
        assert_eq!(&keys[..8], &[0, 0, 0, 1, 0, 0, 0, 8]);
        assert_eq!(be(&keys, 8, 8), 0x1122);
        assert_eq!(prin(&s, 0, 4).data.len(), 4);
        let res = prin(&s, 1, 100).data;
        assert_eq!(res.len(), 24);
        assert_eq!((be(&res, 8, 8), res[21]), (0x1122, 3));
        let caps = prin(&s, 2, 100).data;
        assert_eq!(&caps[..2], &[0, 8]);
        let full = prin(&s, 3, 200).data;
        assert_eq!(full[20], 0x01);
        assert_eq!(full[21], 3);
        assert_eq!(be(&full, 4, 4) as usize, full.len() - 8);
    }

    #[test]
    fn register_and_move() {
        let mut s = PrState::default();
        assert_eq!(out(&mut s, 1, 0, 0, 0, 1), GOOD);
        let mv = |key: u64, sark: u64, unreg: bool, tid: &[u8]| {
            let mut p = params(key, sark, 0);
            p[17] = if unreg { 0x02 } else { 0 };
            p[18..20].copy_from_slice(&1u16.to_be_bytes());
            p[20..24].copy_from_slice(&(tid.len() as u32).to_be_bytes());
            p.extend_from_slice(tid);
            p
        };
        let tid = nx(2).transport_id();
        // Not the holder yet: conflict.
        assert_eq!(
            s.prout(&nx(1), 7, 1, &mv(1, 5, false, &tid)),
            Err(Completion::reservation_conflict())
        );
        assert_eq!(out(&mut s, 1, 1, 1, 1, 0), GOOD);
        assert!(s.prout(&nx(1), 7, 1, &mv(1, 0, false, &tid)).is_err());
        assert!(s
            .prout(
                &nx(1),
                7,
                1,
                &mv(1, 5, false, &[0x05, 0, 0, 4, b'x', 0, 0, 0])
            )
            .is_err());
        assert!(s
            .prout(&nx(1), 7, 1, &mv(1, 5, false, &nx(1).transport_id()))
            .is_err());
        assert_eq!(s.prout(&nx(1), 7, 3, &mv(1, 5, true, &tid)), Ok(true));
        assert!(s.holds(&nx(2)));
        assert_eq!(s.key_of(&nx(2)), Some(5));
        assert_eq!(s.key_of(&nx(1)), None);
        assert_eq!(
            s.reservation.as_ref().map(|r| r.kind),
            Some(PrType::ExclusiveAccess)
        );
        assert_eq!(
            parse_transport_id(&{
                let mut t = vec![0x45, 0, 0, 24];
                t.extend_from_slice(b"iqn.x:y,I,0X80000000ABCD\0\0\0");
                t
            }),
            Some("iqn.x:y,i,0x80000000abcd".into())
        );
    }

    #[test]
    fn aptpl_round_trip() {
        let dir = std::env::temp_dir().join(format!("trellis-pr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = FilePrStore::new(dir.join("disk0.pr"));
        let mut s = PrState::default();
        assert!(s.prout(&nx(1), 0, 0, &params(0, 42, 1)).unwrap());
        assert_eq!(out(&mut s, 2, 0, 0, 0, 43), GOOD);
        assert_eq!(s.prout(&nx(2), 0, 0, &params(43, 44, 1)), Ok(true));
        assert_eq!(out(&mut s, 1, 1, 6, 42, 0), GOOD);
        store.save(&s).unwrap();
        let back = store.load().unwrap().unwrap();
        assert_eq!(back.registrations, s.registrations);
        assert_eq!(back.reservation, s.reservation);
        assert_eq!(back.generation, s.generation);
        assert!(back.aptpl);
        // APTPL cleared: the file goes.
        assert_eq!(s.prout(&nx(1), 0, 0, &params(42, 42, 0)), Ok(true));
        store.save(&s).unwrap();
        assert_eq!(store.load().unwrap(), None);
        assert_eq!(decode("garbage"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn shared_state_reaches_other_nexus() {
        let lu = LunShared::new();
        let mut a = NexusState::attached(&lu, 1).with_pr_identity(nx(1));
        let mut b = NexusState::attached(&lu, 2).with_pr_identity(nx(2));
        let reg = |k| PrRequest::Out {
            sa: 0,
            scope_type: 0,
            params: params(0, k, 0),
        };
        assert_eq!(persistent_reserve(&reg(1), &lu, &mut a).status, GOOD);
        assert_eq!(persistent_reserve(&reg(2), &lu, &mut b).status, GOOD);
        let reserve = PrRequest::Out {
            sa: 1,
            scope_type: 3,
            params: params(2, 0, 0),
        };
        assert_eq!(persistent_reserve(&reserve, &lu, &mut b).status, GOOD);
        a.observe(&lu);
        assert_eq!(a.pr_view().kind, Some(PrType::ExclusiveAccess));
        assert!(!a.pr_view().holder);
        let preempt = PrRequest::Out {
            sa: 5,
            scope_type: 1,
            params: params(1, 2, 0),
        };
        assert_eq!(persistent_reserve(&preempt, &lu, &mut a).status, GOOD);
        b.observe(&lu);
        assert!(b.pending().contains(&UnitAttention::RegistrationsPreempted));
        assert!(b.take_abort());
        assert!(!b.take_abort());
        assert!(!b.pr_view().registered);
    }
}
