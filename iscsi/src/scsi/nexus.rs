//! What the SCSI layer keeps per I_T nexus and LUN: pending unit attentions
//! and what the nexus last saw of its logical unit's shared state
//! ([`LunShared`]), which it catches up with before each command.

use super::lu::LunShared;
use super::persist::{ItNexus, PrView};
use super::ua::{UnitAttention, UA_QUEUE_CAPACITY};
use super::xcopy::{CopyResult, HELD_RESULTS};
use super::AluaState;

/// State the SCSI layer keeps per I_T nexus and LUN: pending unit attentions,
/// oldest first, the reset count of the logical unit it has seen, the id of
/// this I_T nexus and the reservation holder seen before the current command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NexusState {
    pending: Vec<UnitAttention>,
    resets_seen: u64,
    clears_seen: u64,
    cleared: bool,
    swp: bool,
    mode_seen: u64,
    alua_seen: u64,
    alua: AluaState,
    id: u64,
    /// The id an SPC-2 reservation holder is known by: `id` on a lone
    /// gateway; on a cluster's unit, the token of `pr_id` (the same on
    /// every member, see [`spc2_token`](super::spc2_token)).
    spc2_id: u64,
    /// Attached to a unit whose state the cluster decides.
    cluster: bool,
    holder: u64,
    pr_id: ItNexus,
    pr_seen: u64,
    pr_events_seen: u64,
    pr: PrView,
    abort: bool,
    copies: Vec<CopyResult>,
}

impl Default for NexusState {
    fn default() -> Self {
        Self::new()
    }
}

impl NexusState {
    /// A fresh nexus: POWER ON, RESET OCCURRED is pending (SAM-5 6.3.2).
    pub fn new() -> Self {
        let mut pending = Vec::with_capacity(4);
        pending.push(UnitAttention::PowerOnReset);
        NexusState {
            pending,
            ..Self::empty()
        }
    }

    /// A fresh nexus `id` (from [`new_nexus_id`](super::new_nexus_id)) of the
    /// logical unit `lu`: POWER ON, RESET OCCURRED is pending, and resets
    /// before now are not reported again.
    pub fn attached(lu: &LunShared, id: u64) -> Self {
        NexusState {
            resets_seen: lu.resets(),
            clears_seen: lu.clears(),
            swp: lu.software_write_protect(),
            mode_seen: lu.mode_changes(),
            alua_seen: lu.ports().own().0,
            alua: lu.ports().own().1,
            id,
            spc2_id: id,
            cluster: lu.cluster().is_some(),
            holder: lu.holder(),
            pr_events_seen: lu.pr_lock().last_event(),
            ..Self::new()
        }
    }

    /// This nexus known to persistent reservations as `who` (initiator
    /// port and relative target port).
    pub fn with_pr_identity(mut self, who: ItNexus) -> Self {
        if self.cluster {
            self.spc2_id = super::spc2_token(&who);
        }
        self.pr_id = who;
        self.pr_seen = u64::MAX;
        self
    }

    /// The persistent reservation identity of this nexus.
    pub fn pr_identity(&self) -> &ItNexus {
        &self.pr_id
    }

    /// The persistent reservation state as this nexus last saw it.
    pub fn pr_view(&self) -> &PrView {
        &self.pr
    }

    /// Whether a LOGICAL UNIT RESET, a CLEAR TASK SET or a PREEMPT AND
    /// ABORT asked this nexus' tasks to be aborted since the last call.
    pub fn take_abort(&mut self) -> bool {
        std::mem::take(&mut self.abort)
    }

    /// The access state of this member's target port group for the unit,
    /// as last observed.
    pub fn access_state(&self) -> AluaState {
        self.alua
    }

    /// Catches up with the unit's port states: ASYMMETRIC ACCESS STATE
    /// CHANGED when any group's state changed since the last call.
    fn observe_ports(&mut self, lu: &LunShared) {
        let (version, state) = lu.ports().own();
        self.alua = state;
        if version != self.alua_seen {
            self.alua_seen = version;
            self.push(UnitAttention::AsymmetricAccessStateChanged);
        }
    }

    /// Whether software write protect was on when last observed.
    pub fn software_write_protect(&self) -> bool {
        self.swp
    }

    /// Catches up with mode parameters changed through any nexus: MODE
    /// PARAMETERS CHANGED unless this nexus made the change.
    pub fn observe_mode(&mut self, lu: &LunShared) {
        self.swp = lu.software_write_protect();
        let changes = lu.mode_changes();
        if changes != self.mode_seen {
            self.mode_seen = changes;
            if lu.mode_changer() != self.spc2_id {
                self.push(UnitAttention::ModeParametersChanged);
            }
        }
    }

    /// Whether the abort came from another nexus's CLEAR TASK SET (so the
    /// nexus gets COMMANDS CLEARED BY ANOTHER INITIATOR if it lost tasks).
    pub fn take_cleared(&mut self) -> bool {
        std::mem::take(&mut self.cleared)
    }

    /// A nexus with no pending unit attention.
    pub fn empty() -> Self {
        NexusState {
            pending: Vec::new(),
            resets_seen: 0,
            clears_seen: 0,
            cleared: false,
            swp: false,
            mode_seen: 0,
            alua_seen: 0,
            alua: AluaState::ActiveOptimized,
            id: 0,
            spc2_id: 0,
            cluster: false,
            holder: 0,
            pr_id: ItNexus::default(),
            pr_seen: 0,
            pr_events_seen: 0,
            pr: PrView::default(),
            abort: false,
            copies: Vec::new(),
        }
    }

    /// The id of this I_T nexus (0 for a nexus not attached to a unit).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The id this nexus holds an SPC-2 reservation under.
    pub fn spc2_id(&self) -> u64 {
        self.spc2_id
    }

    /// Whether another I_T nexus held the reservation of the logical unit
    /// when last observed.
    pub fn reserved_elsewhere(&self) -> bool {
        self.holder != 0 && self.holder != self.spc2_id
    }

    /// Catches up with the logical unit as changed through any nexus: notes
    /// the reservation holder, and establishes one LOGICAL UNIT RESET unit
    /// attention if there were resets since the last call. Resets and
    /// CLEAR TASK SETs since the last call also ask for an abort
    /// ([`take_abort`](Self::take_abort)).
    pub fn observe(&mut self, lu: &LunShared) {
        self.holder = lu.holder();
        let v = lu.pr_version();
        if v != self.pr_seen {
            self.pr_seen = v;
            self.refresh_pr(lu);
        }
        let now = lu.resets();
        if now != self.resets_seen {
            self.resets_seen = now;
            self.abort = true;
            self.push(UnitAttention::LunReset);
        }
        self.observe_mode(lu);
        self.observe_ports(lu);
        let clears = lu.clears();
        if clears != self.clears_seen {
            self.clears_seen = clears;
            self.abort = true;
            self.cleared |= lu.clearer() != self.spc2_id;
        }
    }

    /// Recomputes the cached persistent reservation view and takes the
    /// unit attentions and aborts addressed to this nexus.
    fn refresh_pr(&mut self, lu: &LunShared) {
        let (uas, abort) = {
            let s = lu.pr_lock();
            self.pr = s.view(&self.pr_id);
            let ev = s.events_for(&self.pr_id, self.pr_events_seen);
            self.pr_events_seen = s.last_event();
            ev
        };
        self.abort |= abort;
        for ua in uas {
            self.push(ua);
        }
    }

    /// Establishes `ua` unless it is already pending or the queue is full.
    /// A reset supersedes everything queued before it.
    pub fn push(&mut self, ua: UnitAttention) {
        if matches!(ua, UnitAttention::PowerOnReset | UnitAttention::LunReset) {
            self.pending.clear();
        }
        if self.pending.contains(&ua) || self.pending.len() >= UA_QUEUE_CAPACITY {
            return;
        }
        self.pending.push(ua);
    }

    /// Takes the oldest pending unit attention, clearing it.
    pub fn next_ua(&mut self) -> Option<UnitAttention> {
        if self.pending.is_empty() {
            None
        } else {
            Some(self.pending.remove(0))
        }
    }

    /// The oldest pending unit attention without clearing it.
    pub fn peek_ua(&self) -> Option<UnitAttention> {
        self.pending.first().copied()
    }

    /// Holds the result of a finished EXTENDED COPY for RECEIVE COPY
    /// RESULTS, replacing one of the same list identifier; the oldest of
    /// more than a few is dropped.
    pub fn record_copy(&mut self, result: CopyResult) {
        self.copies.retain(|c| c.list_id != result.list_id);
        if self.copies.len() == HELD_RESULTS {
            self.copies.remove(0);
        }
        self.copies.push(result);
    }

    /// The held result of the copy with list identifier `list_id`.
    pub fn copy_result(&self, list_id: u8) -> Option<CopyResult> {
        self.copies.iter().find(|c| c.list_id == list_id).copied()
    }

    /// Clears `ua` if pending.
    pub fn clear(&mut self, ua: UnitAttention) {
        self.pending.retain(|p| *p != ua);
    }

    /// All pending unit attentions, oldest first.
    pub fn pending(&self) -> &[UnitAttention] {
        &self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_with_power_on_reset() {
        let mut n = NexusState::new();
        assert_eq!(n.next_ua(), Some(UnitAttention::PowerOnReset));
        assert_eq!(n.next_ua(), None);
    }

    #[test]
    fn fifo_without_duplicates() {
        let mut n = NexusState::empty();
        n.push(UnitAttention::CapacityChanged);
        n.push(UnitAttention::ReportedLunsChanged);
        n.push(UnitAttention::CapacityChanged);
        assert_eq!(
            n.pending(),
            &[
                UnitAttention::CapacityChanged,
                UnitAttention::ReportedLunsChanged
            ]
        );
        n.clear(UnitAttention::CapacityChanged);
        assert_eq!(n.next_ua(), Some(UnitAttention::ReportedLunsChanged));
    }

    #[test]
    fn reset_supersedes() {
        let mut n = NexusState::empty();
        n.push(UnitAttention::CapacityChanged);
        n.push(UnitAttention::LunReset);
        assert_eq!(n.pending(), &[UnitAttention::LunReset]);
    }

    #[test]
    fn lun_reset_reaches_every_nexus_once() {
        let lu = LunShared::new();
        lu.reset();
        let mut a = NexusState::attached(&lu, 1);
        a.next_ua();
        let mut b = NexusState::empty();
        b.observe(&lu);
        assert_eq!(b.pending(), &[UnitAttention::LunReset]);
        b.next_ua();
        // Earlier resets are not reported to a nexus made after them.
        a.observe(&lu);
        assert_eq!(a.pending(), &[]);
        // Two resets before the next command: one unit attention each nexus.
        lu.reset();
        lu.reset();
        for n in [&mut a, &mut b] {
            n.observe(&lu);
            n.observe(&lu);
            assert_eq!(n.pending(), &[UnitAttention::LunReset]);
        }
    }
}
