//! Unit attention conditions (SAM-5 5.14, SPC-4 5.13) and the per I_T nexus,
//! per LUN state that holds them.
//!
//! A pending unit attention is reported as CHECK CONDITION on the next command
//! other than INQUIRY, REPORT LUNS and REQUEST SENSE, and is then cleared
//! (UA_INTLCK_CTRL = 00b). REQUEST SENSE returns it as sense data and clears
//! it; REPORT LUNS clears REPORTED LUNS DATA HAS CHANGED.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::blocklock::BlockLocks;
use super::persist::{ItNexus, PrState, PrStore, PrView};
use super::sense::Sense;
use super::xcopy::{CopyResult, HELD_RESULTS};
use super::Completion;

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

/// State of a logical unit shared by every I_T nexus on every core: the
/// number of LOGICAL UNIT RESETs so far and the I_T nexus holding its SPC-2
/// reservation (0: none). A reset bumps the count; each nexus compares it
/// with the count it last saw before running a command
/// ([`NexusState::observe`]) and establishes BUS DEVICE RESET FUNCTION
/// OCCURRED when it moved, and notes the reservation holder. It also holds
/// the persistent reservation state ([`PrState`], behind a lock taken only
/// by PERSISTENT RESERVE IN/OUT and by a nexus catching up) and its version,
/// which every command loads. Three atomic loads per command; no lock and no
/// cross-core message while nothing changes.
#[derive(Debug, Default)]
pub struct LunShared {
    resets: AtomicU64,
    clears: AtomicU64,
    clearer: AtomicU64,
    swp: AtomicBool,
    mode_changes: AtomicU64,
    mode_changer: AtomicU64,
    holder: AtomicU64,
    pr_version: AtomicU64,
    pr: Mutex<PrState>,
    pr_store: Option<Box<dyn PrStore>>,
    locks: BlockLocks,
}

impl LunShared {
    /// A logical unit never reset.
    pub fn new() -> Self {
        Self::default()
    }

    /// A logical unit whose persistent reservation state is kept in `store`,
    /// starting from what it holds (APTPL state saved before a restart).
    pub fn with_pr_store(store: Box<dyn PrStore>) -> Self {
        let state = match store.load() {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot load persistent reservations; starting empty");
                PrState::default()
            }
        };
        let version = u64::from(!state.is_empty());
        LunShared {
            pr_version: AtomicU64::new(version),
            pr: Mutex::new(state),
            pr_store: Some(store),
            ..Self::default()
        }
    }

    /// This unit with `notify` called when a block lock someone waits for
    /// is released (the target wakes every core with it).
    pub fn with_notifier(mut self, notify: Box<dyn Fn() + Send + Sync>) -> Self {
        self.locks.set_notifier(notify);
        self
    }

    /// The block locks that make COMPARE AND WRITE atomic across sessions.
    pub fn locks(&self) -> &BlockLocks {
        &self.locks
    }

    fn pr_lock(&self) -> MutexGuard<'_, PrState> {
        self.pr.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Version of the persistent reservation state: moves on every change.
    pub fn pr_version(&self) -> u64 {
        self.pr_version.load(Ordering::Acquire)
    }

    /// Runs `f` on the persistent reservation state under its lock; when it
    /// reports a change, saves the state and bumps the version.
    pub(crate) fn with_pr(
        &self,
        f: impl FnOnce(&mut PrState) -> Result<(Completion, bool), Completion>,
    ) -> Completion {
        let mut s = self.pr_lock();
        match f(&mut s) {
            Ok((c, changed)) => {
                if changed {
                    if let Some(store) = &self.pr_store {
                        if let Err(e) = store.save(&s) {
                            tracing::warn!(error = %e, "cannot save persistent reservations");
                        }
                    }
                    self.pr_version.fetch_add(1, Ordering::AcqRel);
                }
                c
            }
            Err(c) => c,
        }
    }

    /// A copy of the persistent reservation state.
    pub fn pr_state(&self) -> PrState {
        self.pr_lock().clone()
    }

    /// Records a LOGICAL UNIT RESET: every nexus (this one included) gets a
    /// unit attention before its next command, and the reservation goes.
    pub fn reset(&self) {
        self.clear_reservation();
        self.resets.fetch_add(1, Ordering::AcqRel);
    }

    /// Records a CLEAR TASK SET from nexus `by`: every nexus aborts its
    /// tasks for the unit before its next command (the task set is shared,
    /// TST 000b), and those that lost commands get COMMANDS CLEARED BY
    /// ANOTHER INITIATOR.
    pub fn clear_task_set(&self, by: u64) {
        self.clearer.store(by, Ordering::Release);
        self.clears.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether software write protect (SWP, Control mode page) is on.
    pub fn software_write_protect(&self) -> bool {
        self.swp.load(Ordering::Acquire)
    }

    /// Sets software write protect from nexus `by`; true if it changed (the
    /// other nexuses then get MODE PARAMETERS CHANGED).
    pub fn set_software_write_protect(&self, on: bool, by: u64) -> bool {
        if self.swp.swap(on, Ordering::AcqRel) == on {
            return false;
        }
        self.mode_changer.store(by, Ordering::Release);
        self.mode_changes.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// The I_T nexus holding the SPC-2 reservation; 0 when not reserved.
    pub fn holder(&self) -> u64 {
        self.holder.load(Ordering::Acquire)
    }

    /// Reserves the logical unit for `nexus` (a nonzero id); true if it now
    /// holds the reservation (also when it already did).
    pub fn reserve(&self, nexus: u64) -> bool {
        match self
            .holder
            .compare_exchange(0, nexus, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(held) => held == nexus,
        }
    }

    /// Releases the reservation if `nexus` holds it; otherwise nothing.
    pub fn release(&self, nexus: u64) {
        let _ = self
            .holder
            .compare_exchange(nexus, 0, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Releases the reservation whoever holds it (TARGET RESET).
    pub fn clear_reservation(&self) {
        self.holder.store(0, Ordering::Release);
    }

    /// LOGICAL UNIT RESETs so far.
    pub fn resets(&self) -> u64 {
        self.resets.load(Ordering::Acquire)
    }
}

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
    id: u64,
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
            clears_seen: lu.clears.load(Ordering::Acquire),
            swp: lu.software_write_protect(),
            mode_seen: lu.mode_changes.load(Ordering::Acquire),
            id,
            holder: lu.holder(),
            pr_events_seen: lu.pr_lock().last_event(),
            ..Self::new()
        }
    }

    /// This nexus known to persistent reservations as `who` (initiator
    /// port and relative target port).
    pub fn with_pr_identity(mut self, who: ItNexus) -> Self {
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

    /// Whether software write protect was on when last observed.
    pub fn software_write_protect(&self) -> bool {
        self.swp
    }

    /// Catches up with mode parameters changed through any nexus: MODE
    /// PARAMETERS CHANGED unless this nexus made the change.
    pub fn observe_mode(&mut self, lu: &LunShared) {
        self.swp = lu.software_write_protect();
        let changes = lu.mode_changes.load(Ordering::Acquire);
        if changes != self.mode_seen {
            self.mode_seen = changes;
            if lu.mode_changer.load(Ordering::Acquire) != self.id {
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
            id: 0,
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

    /// Whether another I_T nexus held the reservation of the logical unit
    /// when last observed.
    pub fn reserved_elsewhere(&self) -> bool {
        self.holder != 0 && self.holder != self.id
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
        let clears = lu.clears.load(Ordering::Acquire);
        if clears != self.clears_seen {
            self.clears_seen = clears;
            self.abort = true;
            self.cleared |= lu.clearer.load(Ordering::Acquire) != self.id;
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
