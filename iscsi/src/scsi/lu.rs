//! The state of a logical unit that every I_T nexus on every core shares:
//! resets, task-set clears, the SPC-2 reservation, software write protect,
//! the persistent reservation state, and the block locks of COMPARE AND
//! WRITE. Commands read it with atomic loads; each nexus catches up with it
//! through [`NexusState::observe`](super::nexus::NexusState::observe).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::alua::PortStates;
use super::blocklock::BlockLocks;
use super::persist::{unword, word, ItNexus, PrRequest, PrState, PrStore};
use super::Completion;

/// Called with a command's completion, from any thread.
pub type Done = Box<dyn FnOnce(Completion) + Send>;

/// A change of a logical unit's state that every member exporting it
/// must make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitChange {
    /// PERSISTENT RESERVE OUT (a [`PrRequest::Out`]).
    Prout(PrRequest),
    /// LOGICAL UNIT RESET: every nexus on every member aborts its tasks for
    /// the unit and gets the unit attention; the SPC-2 reservation goes.
    Reset,
    /// CLEAR TASK SET: every nexus on every member aborts its tasks for the
    /// unit; those of other nexuses than the one asking get COMMANDS
    /// CLEARED BY ANOTHER INITIATOR.
    ClearTaskSet,
    /// RESERVE(6)/(10) (SPC-2).
    Reserve,
    /// RELEASE(6)/(10) (SPC-2), also made when the holding nexus goes.
    Release,
    /// MODE SELECT: software write protect (Control mode page SWP) on or
    /// off; the other nexuses get MODE PARAMETERS CHANGED.
    Mode {
        /// SWP.
        swp: bool,
    },
    /// A sanitize operation started or ended on the member asking (or it
    /// left failure mode): every member reports it as its own.
    Sanitize {
        /// The phase on that member now.
        phase: super::SanitizePhase,
    },
    /// COMPARE AND WRITE, sent to the member that serialises them for the
    /// unit (the owner): atomic against every other member's.
    CompareAndWrite {
        /// First logical block.
        lba: u64,
        /// Blocks.
        blocks: u32,
        /// Force unit access.
        fua: bool,
        /// The compare blocks, then the write blocks.
        data: Vec<u8>,
    },
}

/// The state of a logical unit every member exporting it shares: the
/// persistent reservations and the count of LOGICAL UNIT RESETs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    /// Persistent reservations.
    pub pr: PrState,
    /// LOGICAL UNIT RESETs made through any member.
    pub resets: u64,
    /// CLEAR TASK SETs made through any member.
    pub clears: u64,
    /// The I_T nexus that made the last one.
    pub clearer: Option<ItNexus>,
    /// The I_T nexus holding the SPC-2 reservation, if any.
    pub spc2: Option<ItNexus>,
    /// Software write protect (Control mode page SWP).
    pub swp: bool,
    /// The I_T nexus that set SWP last (it gets no MODE PARAMETERS
    /// CHANGED for its own change).
    pub swp_by: Option<ItNexus>,
    /// A sanitize operation running (or failed) on a member, and which one
    /// (the cluster's number for it); `Idle` when none.
    pub sanitize: super::SanitizePhase,
    /// The member of `sanitize`.
    pub sanitize_by: u64,
}

impl UnitState {
    /// The text form: the shared form of the reservations, and the resets.
    pub fn to_text(&self) -> String {
        let mut t = format!("{}resets {}\n", self.pr.to_shared_text(), self.resets);
        match &self.clearer {
            Some(by) => t.push_str(&format!(
                "clears {} {} {}\n",
                self.clears,
                by.rel_port,
                word(&by.initiator)
            )),
            None if self.clears > 0 => t.push_str(&format!("clears {}\n", self.clears)),
            None => {}
        }
        if let Some(h) = &self.spc2 {
            t.push_str(&format!("spc2 {} {}\n", h.rel_port, word(&h.initiator)));
        }
        let code = match self.sanitize {
            super::SanitizePhase::Idle => 0,
            super::SanitizePhase::Running { .. } => 1,
            super::SanitizePhase::Failed { ause: false } => 2,
            super::SanitizePhase::Failed { ause: true } => 3,
        };
        if code != 0 {
            t.push_str(&format!("sanitize {code} {}\n", self.sanitize_by));
        }
        match (&self.swp_by, self.swp) {
            (Some(by), swp) => t.push_str(&format!(
                "swp {} {} {}\n",
                u8::from(swp),
                by.rel_port,
                word(&by.initiator)
            )),
            (None, true) => t.push_str("swp 1\n"),
            (None, false) => {}
        }
        t
    }

    /// The state written as `text`; None if it is not one.
    pub fn from_text(text: &str) -> Option<Self> {
        let mut resets = 0;
        let mut spc2 = None;
        let (mut swp, mut swp_by) = (false, None);
        let (mut clears, mut clearer) = (0, None);
        let (mut sanitize, mut sanitize_by) = (super::SanitizePhase::Idle, 0);
        let mut pr = String::new();
        for line in text.lines() {
            if let Some(n) = line.strip_prefix("resets ") {
                resets = n.parse().ok()?;
            } else if let Some(h) = line.strip_prefix("spc2 ") {
                let (port, initiator) = h.split_once(' ')?;
                spc2 = Some(ItNexus {
                    initiator: unword(initiator)?,
                    rel_port: port.parse().ok()?,
                });
            } else if let Some(w) = line.strip_prefix("sanitize ") {
                let (code, by) = w.split_once(' ')?;
                sanitize = match code {
                    "1" => super::SanitizePhase::Running { progress: 0 },
                    "2" => super::SanitizePhase::Failed { ause: false },
                    "3" => super::SanitizePhase::Failed { ause: true },
                    _ => return None,
                };
                sanitize_by = by.parse().ok()?;
            } else if let Some(w) = line.strip_prefix("clears ") {
                let mut w = w.splitn(3, ' ');
                clears = w.next()?.parse().ok()?;
                if let Some(port) = w.next() {
                    clearer = Some(ItNexus {
                        rel_port: port.parse().ok()?,
                        initiator: unword(w.next()?)?,
                    });
                }
            } else if let Some(w) = line.strip_prefix("swp ") {
                let mut w = w.splitn(3, ' ');
                swp = w.next()? == "1";
                if let Some(port) = w.next() {
                    swp_by = Some(ItNexus {
                        rel_port: port.parse().ok()?,
                        initiator: unword(w.next()?)?,
                    });
                }
            } else {
                pr.push_str(line);
                pr.push('\n');
            }
        }
        Some(UnitState {
            pr: PrState::from_text(&pr)?,
            resets,
            clears,
            clearer,
            spc2,
            swp,
            swp_by,
            sanitize,
            sanitize_by,
        })
    }
}

/// Where the state of a logical unit that several members export is
/// decided: a cluster member's control plane, which orders the changes of
/// every member. The target hands it what changes that state and answers
/// the command (or task management function) when `done` is called; each
/// member then installs the decided state ([`LunShared::install`]).
pub trait ClusterUnit: Send + Sync + std::fmt::Debug {
    /// Decides `change` asked by `nexus` for the whole cluster and calls
    /// `done` with its completion.
    fn change(&self, nexus: ItNexus, change: UnitChange, done: Done);

    /// The state decided so far and its version, if any (a unit made now
    /// starts from it).
    fn state(&self) -> Option<(u64, UnitState)>;
}

/// State of a logical unit shared by every I_T nexus on every core: the
/// number of LOGICAL UNIT RESETs so far and the I_T nexus holding its SPC-2
/// reservation (0: none). A reset bumps the count; each nexus compares it
/// with the count it last saw before running a command
/// ([`NexusState::observe`](super::NexusState::observe)) and establishes BUS DEVICE RESET FUNCTION
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
    cluster: Option<Arc<dyn ClusterUnit>>,
    /// The cluster's LOGICAL UNIT RESET count this unit has made.
    cluster_resets: AtomicU64,
    /// The version of the cluster's state installed last: an older one
    /// (from an installer that read it before this unit was made) is not
    /// installed over it. Held while installing.
    installed: Mutex<u64>,
    /// The cluster's CLEAR TASK SET count this unit has made.
    cluster_clears: AtomicU64,
    /// Another member runs this unit's COMPARE AND WRITEs (its owner).
    caw_elsewhere: AtomicBool,
    locks: BlockLocks,
    ports: PortStates,
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

    /// This unit as one of a cluster's: its shared state is decided by
    /// `cluster` and installed from there, not kept here.
    pub fn with_cluster(mut self, cluster: Arc<dyn ClusterUnit>) -> Self {
        self.cluster = Some(cluster);
        self.pr_store = None;
        self
    }

    /// Whether another member runs this unit's COMPARE AND WRITEs: a
    /// session then hands each one to the cluster ([`UnitChange::CompareAndWrite`]).
    pub fn caw_elsewhere(&self) -> bool {
        self.cluster.is_some() && self.caw_elsewhere.load(Ordering::Acquire)
    }

    /// Sets whether another member runs this unit's COMPARE AND WRITEs.
    pub fn set_caw_elsewhere(&self, elsewhere: bool) {
        self.caw_elsewhere.store(elsewhere, Ordering::Release);
    }

    /// Where the unit's shared state is decided, in a cluster.
    pub fn cluster(&self) -> Option<&Arc<dyn ClusterUnit>> {
        self.cluster.as_ref()
    }

    /// Starts from the state the cluster decided so far (at `version`):
    /// its reservations, its resets counted as made.
    pub fn start_from(&self, version: u64, state: UnitState) {
        let mut installed = self
            .installed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *installed = version;
        self.cluster_resets.store(state.resets, Ordering::Release);
        self.cluster_clears.store(state.clears, Ordering::Release);
        self.install_spc2(state.spc2.as_ref());
        self.swp.store(state.swp, Ordering::Release);
        self.install_pr(state.pr);
    }

    /// Installs the state the cluster decided at `version`: the
    /// reservations (see [`LunShared::install_pr`]), and a reset when the
    /// cluster made one this unit has not. A version older than the one
    /// installed changes nothing; false then.
    pub fn install(&self, version: u64, state: UnitState) -> bool {
        let mut installed = self
            .installed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if version < *installed {
            return false;
        }
        *installed = version;
        self.install_pr(state.pr);
        if self
            .cluster_resets
            .fetch_max(state.resets, Ordering::AcqRel)
            < state.resets
        {
            self.reset();
        }
        if self
            .cluster_clears
            .fetch_max(state.clears, Ordering::AcqRel)
            < state.clears
        {
            self.clear_task_set(state.clearer.as_ref().map_or(0, super::spc2_token));
        }
        self.install_spc2(state.spc2.as_ref());
        let by = state.swp_by.as_ref().map_or(0, super::spc2_token);
        self.set_software_write_protect(state.swp, by);
        true
    }

    /// The SPC-2 reservation the cluster decided: held by `holder`.
    fn install_spc2(&self, holder: Option<&ItNexus>) {
        self.holder
            .store(holder.map_or(0, super::spc2_token), Ordering::Release);
    }

    /// Installs the persistent reservation state the cluster decided:
    /// every nexus refreshes its view, and takes the events addressed to
    /// it, before its next command.
    pub fn install_pr(&self, state: PrState) {
        let mut s = self.pr_lock();
        if *s == state {
            return;
        }
        *s = state;
        self.pr_version.fetch_add(1, Ordering::AcqRel);
    }

    /// This unit with `notify` called when a block lock someone waits for
    /// is released (the target wakes every core with it).
    pub fn with_notifier(mut self, notify: Box<dyn Fn() + Send + Sync>) -> Self {
        self.locks.set_notifier(notify);
        self
    }

    /// This unit with its own target port group starting in `state`
    /// (before arbitration has set its table).
    pub fn with_port_state(mut self, state: super::AluaState) -> Self {
        self.ports = PortStates::new(state);
        self
    }

    /// The unit's port-state table (ALUA).
    pub fn ports(&self) -> &PortStates {
        &self.ports
    }

    /// The block locks that make COMPARE AND WRITE atomic across sessions.
    pub fn locks(&self) -> &BlockLocks {
        &self.locks
    }

    pub(super) fn pr_lock(&self) -> MutexGuard<'_, PrState> {
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

    /// CLEAR TASK SETs so far.
    pub(super) fn clears(&self) -> u64 {
        self.clears.load(Ordering::Acquire)
    }

    /// The nexus that made the last CLEAR TASK SET.
    pub(super) fn clearer(&self) -> u64 {
        self.clearer.load(Ordering::Acquire)
    }

    /// Mode parameter changes so far.
    pub(super) fn mode_changes(&self) -> u64 {
        self.mode_changes.load(Ordering::Acquire)
    }

    /// The nexus that made the last mode parameter change.
    pub(super) fn mode_changer(&self) -> u64 {
        self.mode_changer.load(Ordering::Acquire)
    }
}
