//! Implicit ALUA (SPC-4 5.15): each logical unit's port-state table, REPORT
//! TARGET PORT GROUPS and the gate that refuses commands a target port
//! group's access state does not allow.
//!
//! ```text
//!  trellisd ── Registry::set_port_states(device, PortTable) ──> PortStates::set
//!                                                                 │ one atomic word:
//!                                                                 │ version << 8 | own state
//!  every command ── NexusState::observe ── one load ── moved? ──> cache the own state,
//!                                                     ASYMMETRIC ACCESS STATE CHANGED
//!  REPORT TARGET PORT GROUPS ── reads the whole table (read lock, rare)
//! ```
//!
//! The table holds every target port group of the unit (one per member of
//! a cluster) with its state, all from one arbitration epoch. It changes
//! without a LUN-table rebuild: the session's LUN table is untouched, each
//! nexus catches up before its next command.
//!
//! | state                | processed                                    | otherwise  |
//! |----------------------|----------------------------------------------|------------|
//! | active (optimized or not) | everything                              |            |
//! | standby              | `Always`, `Management`, `Capacity` commands  | 02/04/0B   |
//! | unavailable          | `Always`, `Management`                       | 02/04/0C   |
//! | transitioning        | `Always`                                     | 02/04/0A   |
//! | offline              | `Always`                                     | 02/04/12   |
//!
//! READ CAPACITY and TEST UNIT READY in standby are deliberate (as in LIO
//! and SCST) so hosts can probe standby paths: TEST UNIT READY on a Standby
//! port answers GOOD, never 04/0C.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use super::cdb::{be, Cdb};
use super::opcodes::Access;
use super::sense::Sense;
use super::{AluaState, Completion, PortContext, PortGroup};

/// IMPLICIT TRANSITION TIME reported in the extended header, in seconds.
pub(crate) const IMPLICIT_TRANSITION_SECS: u8 = 10;

/// Supported states: T_SUP, O_SUP, U_SUP, S_SUP, AN_SUP, AO_SUP.
const SUPPORTED_STATES: u8 = 0x80 | 0x40 | 0x08 | 0x04 | 0x02 | 0x01;

/// The target port groups of one logical unit and their access states, as
/// arbitration last set them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortTable {
    /// The arbitration epoch every state here comes from (0: not managed).
    pub epoch: u64,
    /// Every group of the unit; REPORT TARGET PORT GROUPS lists them in
    /// this order.
    pub groups: Vec<PortGroup>,
}

/// A logical unit's port-state table: the whole table for REPORT TARGET
/// PORT GROUPS, and this member's own state with a version in one atomic
/// word that every command loads.
#[derive(Debug)]
pub struct PortStates {
    /// `version << 8 | state code` of this member's own group.
    word: AtomicU64,
    table: RwLock<Arc<PortTable>>,
    /// The write fence: nanoseconds after [`clock_base`] from which writes
    /// are refused; `u64::MAX`: none.
    fence: AtomicU64,
}

/// The instant write fences are counted from (the first use).
fn clock_base() -> std::time::Instant {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(std::time::Instant::now)
}

fn since_base(t: std::time::Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(clock_base()).as_nanos()).unwrap_or(u64::MAX - 1)
}

impl Default for PortStates {
    fn default() -> Self {
        Self::new(AluaState::ActiveOptimized)
    }
}

impl PortStates {
    /// A unit whose own group starts in `state`, with an empty table (REPORT
    /// TARGET PORT GROUPS then lists the port's own group alone).
    pub fn new(state: AluaState) -> Self {
        PortStates {
            word: AtomicU64::new(u64::from(state.code())),
            table: RwLock::new(Arc::new(PortTable::default())),
            fence: AtomicU64::new(u64::MAX),
        }
    }

    /// Refuses writes from `until` on (None: no fence, a member on its
    /// own). A cluster member sets it to the end of its lease, and to now
    /// when it may not write at all; the data path checks it when each
    /// write is submitted ([`PortStates::writable_at`]).
    pub fn set_write_fence(&self, until: Option<std::time::Instant>) {
        let v = until.map_or(u64::MAX, since_base);
        self.fence.store(v, Ordering::Release);
    }

    /// Whether a write submitted at `now` may reach the disk.
    pub fn writable_at(&self, now: std::time::Instant) -> bool {
        let fence = self.fence.load(Ordering::Acquire);
        fence == u64::MAX || since_base(now) < fence
    }

    /// The version (moves on every change of any group's state) and this
    /// member's own state: one atomic load.
    pub fn own(&self) -> (u64, AluaState) {
        let w = self.word.load(Ordering::Acquire);
        (w >> 8, AluaState::from_code(w as u8))
    }

    /// The table as last set.
    pub fn table(&self) -> Arc<PortTable> {
        Arc::clone(&self.table.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Sets the table; `own_group` is this member's group (a table that
    /// does not list it leaves the member Unavailable). Returns whether any
    /// state changed (then every nexus gets ASYMMETRIC ACCESS STATE CHANGED
    /// before its next command); a new epoch with the same states is kept
    /// without a unit attention.
    pub fn set(&self, table: PortTable, own_group: u16) -> bool {
        let own = table
            .groups
            .iter()
            .find(|g| g.id == own_group)
            .map_or(AluaState::Unavailable, |g| g.state);
        let mut slot = self.table.write().unwrap_or_else(PoisonError::into_inner);
        let (version, old_own) = self.own();
        let states = |t: &PortTable| -> Vec<(u16, AluaState)> {
            t.groups.iter().map(|g| (g.id, g.state)).collect()
        };
        let changed = own != old_own || states(&slot) != states(&table);
        *slot = Arc::new(table);
        if changed {
            let next = (version + 1) << 8 | u64::from(own.code());
            self.word.store(next, Ordering::Release);
        }
        changed
    }
}

/// Refuses a command of class `access` if the port's access state `state`
/// forbids it.
pub(crate) fn check_access(access: Access, state: AluaState) -> Result<(), Sense> {
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
/// (000b) or extended (001b) header, from the unit's table `ports`; an empty
/// table reports the port's own group, active/optimized.
pub(crate) fn report_target_port_groups(
    c: &Cdb,
    port: &PortContext,
    ports: &PortStates,
) -> Result<Completion, Sense> {
    let extended = match c[1] >> 5 {
        0 => false,
        1 => true,
        _ => return Err(Sense::invalid_field_in_cdb(1, 7)),
    };
    let alloc = be(c, 6, 4) as usize;
    let table = ports.table();
    let alone;
    let groups = if table.groups.is_empty() {
        alone = [PortGroup {
            id: port.tpg_id,
            state: ports.own().1,
            preferred: false,
            relative_ports: vec![port.relative_port_id],
        }];
        &alone[..]
    } else {
        &table.groups[..]
    };
    let mut out = Vec::with_capacity(8 + groups.len() * 12);
    out.extend_from_slice(&[0u8; 4]);
    if extended {
        out.extend_from_slice(&[0x10, IMPLICIT_TRANSITION_SECS, 0, 0]);
    }
    for g in groups {
        // PREF only on an active/optimized group: a host must not prefer a
        // path it cannot use at its best.
        let pref = g.preferred && g.state == AluaState::ActiveOptimized;
        out.push(if pref { 0x80 } else { 0 } | g.state.code());
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
    use crate::scsi::dispatch::tests::{port, table, unit};
    use crate::scsi::{LunShared, NexusState, UnitAttention};

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
        let lu = unit();
        let rtpg = |c: &Cdb| report_target_port_groups(c, &p, lu.ports());
        let d = rtpg(&cdb(0, 1024)).unwrap().data;
        assert_eq!(
            d,
            [
                0, 0, 0, 28, //
                0x80, 0xCF, 0, 7, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3, //
                0x02, 0xCF, 0, 8, 0, 0, 0, 1, 0, 0, 0, 9,
            ]
        );
        let e = rtpg(&cdb(1, 1024)).unwrap().data;
        assert_eq!(
            &e[0..8],
            &[0, 0, 0, 32, 0x10, IMPLICIT_TRANSITION_SECS, 0, 0]
        );
        assert_eq!(&e[8..], &d[4..]);
        let t = rtpg(&cdb(1, 6)).unwrap().data;
        assert_eq!(t.len(), 6);
        assert_eq!(rtpg(&cdb(2, 1024)), Err(Sense::invalid_field_in_cdb(1, 7)));
    }

    #[test]
    fn rtpg_without_a_table_reports_the_own_group() {
        let lu = LunShared::new();
        let d = report_target_port_groups(&cdb(0, 1024), &port(), lu.ports())
            .unwrap()
            .data;
        assert_eq!(d, [0, 0, 0, 12, 0x00, 0xCF, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2]);
        let standby = LunShared::new().with_port_state(AluaState::Standby);
        let d = report_target_port_groups(&cdb(0, 1024), &port(), standby.ports())
            .unwrap()
            .data;
        assert_eq!(d[4], 0x02);
    }

    #[test]
    fn preferred_only_on_an_optimized_group() {
        let lu = LunShared::new();
        let mut t = table();
        t.groups[0].state = AluaState::Standby;
        t.groups[1].preferred = true;
        t.groups[1].state = AluaState::ActiveNonOptimized;
        lu.ports().set(t, 7);
        let d = report_target_port_groups(&cdb(0, 1024), &port(), lu.ports())
            .unwrap()
            .data;
        assert_eq!((d[4], d[20]), (0x02, 0x01));
    }

    #[test]
    fn table_changes_reach_every_nexus_once() {
        let lu = unit();
        let mut a = NexusState::attached(&lu, 1);
        let mut b = NexusState::attached(&lu, 2);
        for n in [&mut a, &mut b] {
            n.next_ua();
            n.observe(&lu);
            assert_eq!(n.pending(), &[]);
            assert_eq!(n.access_state(), AluaState::ActiveOptimized);
        }
        // A new epoch with the same states: nothing to report.
        let mut same = table();
        same.epoch = 2;
        assert!(!lu.ports().set(same, 7));
        assert_eq!(lu.ports().table().epoch, 2);
        a.observe(&lu);
        assert_eq!(a.pending(), &[]);
        // Another group's state moved: every nexus is told, once.
        let mut other = table();
        other.groups[1].state = AluaState::Unavailable;
        assert!(lu.ports().set(other, 7));
        // The own group moved too, before the nexuses looked.
        let mut own = table();
        own.groups[0].state = AluaState::Standby;
        assert!(lu.ports().set(own, 7));
        for n in [&mut a, &mut b] {
            n.observe(&lu);
            n.observe(&lu);
            assert_eq!(n.pending(), &[UnitAttention::AsymmetricAccessStateChanged]);
            assert_eq!(n.access_state(), AluaState::Standby);
        }
        // A table that does not list this member's group: Unavailable.
        let mut gone = table();
        gone.groups.remove(0);
        assert!(lu.ports().set(gone, 7));
        a.observe(&lu);
        assert_eq!(a.access_state(), AluaState::Unavailable);
        assert_eq!(lu.ports().own().1, AluaState::Unavailable);
    }

    #[test]
    fn the_write_fence_refuses_writes_from_its_instant_on() {
        let lu = LunShared::new();
        let now = std::time::Instant::now();
        let later = now + std::time::Duration::from_secs(1);
        assert!(lu.ports().writable_at(later), "no fence by default");
        lu.ports().set_write_fence(Some(later));
        assert!(lu.ports().writable_at(now));
        assert!(!lu.ports().writable_at(later));
        lu.ports().set_write_fence(Some(now));
        assert!(!lu.ports().writable_at(now));
        lu.ports().set_write_fence(None);
        assert!(lu
            .ports()
            .writable_at(later + std::time::Duration::from_secs(3600)));
    }

    #[test]
    fn access_gate() {
        use Access::*;
        let table = [
            (AluaState::ActiveOptimized, Media, None),
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
            let got = check_access(access, state).err();
            assert_eq!(got, want, "{state:?} {access:?}");
        }
        for code in 0..16u8 {
            let s = AluaState::from_code(code);
            if matches!(code, 0 | 1 | 2 | 3 | 0xE | 0xF) {
                assert_eq!(s.code(), code);
            } else {
                assert_eq!(s, AluaState::Unavailable);
            }
        }
    }
}
