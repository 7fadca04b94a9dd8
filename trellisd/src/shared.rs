//! One SCSI device across members: the persistent reservation state of
//! each device is one state for the whole cluster, kept in the replicated
//! log ([`DeviceStates`]) and
//! installed into every member's logical unit.
//!
//! ```text
//!  PR OUT on any member (core thread)
//!    ─> DiskOp::Shared ─> SharedScsi (this module, its own runtime):
//!         read the device's state from the local replica (version v)
//!         ─> PrState::prout, as on a lone gateway ─> answer + new state
//!         ─> Command::SetDeviceState { expect: v, state } ─> Raft
//!              moved meanwhile? decide again from the newer state
//!         ─> wait: the local replica applied it, this member's units hold
//!            it, and every live peer's heartbeats say its units do too
//!    ─> answer through the core's mailbox
//!  trellis-shared (thread): on each applied batch, install changed device
//!    states into the units (LunShared::install_pr: one version bump; the
//!    per-command check stays one atomic load) ─> announce the count
//! ```
//!
//! Through the log rather than a per-device owner: every member must apply
//! the same changes in the same order anyway (its own nexuses' checks and
//! unit attentions), the log already orders, persists and survives the
//! loss of any member and a restart of all, and a member joining later
//! gets it with its snapshot. A PR OUT costs one commit; PR IN and the
//! per-command checks read the local unit.
//!
//! A PR OUT that is refused (a key that does not match, a conflict) is
//! committed too, as a check that the version it was decided from is
//! still current, so its answer is the one the cluster's state gives.
//! When no commit is possible (no quorum, no leader), the command gets
//! NOT READY, ASYMMETRIC ACCESS STATE TRANSITION (02/04/0A), which hosts'
//! multipath layers retry, and the state does not change (unless the
//! write was already in the leader's log and a quorum comes back before
//! another leader is elected, which Raft cannot rule out).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use trellis_control::config::raft::MembersSource;
use trellis_control::config::{Command, ConfigError, ConfigService, DeviceStates, ReplicatedState};
use trellis_control::membership::MemberState;
use trellis_control::node::Announcer;
use trellis_control::service::{ClusterService, ServiceError};
use trellis_control::watch::{merged, Watch};
use trellis_control::MemberId;
use trellis_iscsi::scsi::{
    ClusterUnit, Completion, Done, ItNexus, PrRequest, SanitizePhase, Sense, UnitChange, UnitState,
};
use trellis_iscsi::target::{ClusterUnits, Registry};
use uuid::Uuid;

/// How long a change may take, commit and every live member applying it
/// included, before it is answered anyway (committed: GOOD; not: NOT READY).
const DECIDE_TIMEOUT: Duration = Duration::from_secs(8);

/// COMPARE AND WRITEs a member has in flight to owners at once.
const FORWARDING: usize = 8;

/// How long a COMPARE AND WRITE sent to its owner may take.
const CAW_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a waiting decision looks again.
const POLL: Duration = Duration::from_millis(1);

/// How often the installer looks without being woken.
const INSTALL_EVERY: Duration = Duration::from_millis(500);

/// The deciders of a member's units, and what they need from the control
/// plane (set once it runs; a change asked before is answered NOT READY).
#[derive(Debug, Clone)]
pub struct SharedScsi {
    inner: Arc<Inner>,
}

struct Inner {
    /// Taken only on drop.
    runtime: Option<tokio::runtime::Runtime>,
    service: OnceLock<Arc<ConfigService>>,
    members: OnceLock<MembersSource>,
    registry: OnceLock<Arc<Registry>>,
    /// Runs the COMPARE AND WRITEs this member owns that others send.
    executor: OnceLock<crate::caw::Executor>,
    /// Per device, the node id of the member that runs its COMPARE AND
    /// WRITEs (the Primary of its set), if it has one.
    owners: Mutex<HashMap<Uuid, Option<u64>>>,
    /// COMPARE AND WRITEs in flight to owners at once (each holds one kept
    /// connection; more wait here rather than open connections).
    forwarding: tokio::sync::Semaphore,
    /// The device-state changes this member's units hold (a `seq`).
    installed: AtomicU64,
    /// One decision at a time per device on this member.
    locks: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Possibly on one of its own threads (a decision's task holding
        // the last reference): never block there.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedScsi")
            .field("installed", &self.installed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SharedScsi {
    /// Deciders with a runtime of their own, not yet connected.
    pub fn new() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("trellis-scsi")
            .enable_all()
            .build()
            .context("cannot start the shared SCSI state runtime")?;
        Ok(SharedScsi {
            inner: Arc::new(Inner {
                runtime: Some(runtime),
                service: OnceLock::new(),
                members: OnceLock::new(),
                registry: OnceLock::new(),
                executor: OnceLock::new(),
                owners: Mutex::new(HashMap::new()),
                forwarding: tokio::sync::Semaphore::new(FORWARDING),
                installed: AtomicU64::new(0),
                locks: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Connects the deciders to the Raft node and the failure detector's
    /// view of the peers, and starts the thread that installs decided
    /// states into `registry`'s units and announces how far it got.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &self,
        service: Arc<ConfigService>,
        members: MembersSource,
        registry: Arc<Registry>,
        announcer: Announcer,
        me: MemberId,
        wake: Watch,
        stop: Arc<AtomicBool>,
    ) -> Result<JoinHandle<()>> {
        let reader = service.reader();
        let me_node = service.node_id();
        // COMPARE AND WRITEs other members send while this one owns the
        // device (its thread ends with the service that holds its sender).
        let (executor, _detached) = crate::caw::Executor::start(Arc::clone(&registry))?;
        let exec = executor.clone();
        service.set_data_path_handler(Arc::new(move |request: String| {
            let exec = exec.clone();
            Box::pin(async move {
                match crate::caw::Request::decode(&request) {
                    Some(req) => Ok(exec.run(req).await.encode()),
                    None => Err("not a data path request this member knows".to_owned()),
                }
            })
        }));
        let _ = self.inner.executor.set(executor);
        let _ = self.inner.service.set(service);
        let _ = self.inner.members.set(members);
        let _ = self.inner.registry.set(Arc::clone(&registry));
        let inner = Arc::clone(&self.inner);
        let changes = merged(&[&reader.changes(), &wake]);
        std::thread::Builder::new()
            .name("trellis-shared".into())
            .spawn(move || {
                let mut changes = changes.subscribe();
                let mut installer = Installer::default();
                let mut first_seen = std::collections::HashSet::new();
                while !stop.load(Ordering::Relaxed) {
                    // One read of the replicated state serves both.
                    let state = reader.state();
                    let seq = installer.round(&state.device_states, &registry, me_node);
                    inner.place_caw(&state, &registry, &me, &mut first_seen);
                    inner.installed.store(seq, Ordering::Release);
                    announcer.set_devices(seq);
                    changes.wait(INSTALL_EVERY);
                }
            })
            .context("cannot start a thread")
    }
}

impl ClusterUnits for SharedScsi {
    fn unit(&self, uuid: Uuid) -> Arc<dyn ClusterUnit> {
        Arc::new(Unit {
            device: uuid,
            inner: Arc::clone(&self.inner),
        })
    }
}

/// The decider of one device.
#[derive(Debug)]
struct Unit {
    device: Uuid,
    inner: Arc<Inner>,
}

/// Answers its command once: with what was decided, or NOT READY if the
/// decision is dropped unanswered (its task panicked, the runtime stopped),
/// so no task waits for ever.
struct Answer(Option<Done>);

impl Answer {
    fn send(mut self, c: Completion) {
        if let Some(done) = self.0.take() {
            done(c);
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            done(not_now());
        }
    }
}

impl ClusterUnit for Unit {
    fn change(&self, nexus: ItNexus, change: UnitChange, done: Done) {
        let answer = Answer(Some(done));
        let Some(runtime) = &self.inner.runtime else {
            return answer.send(not_now());
        };
        let (inner, device) = (Arc::clone(&self.inner), self.device);
        runtime.spawn(async move {
            let c = inner.decide(device, &nexus, &change).await;
            answer.send(c);
        });
    }

    fn state(&self) -> Option<(u64, UnitState)> {
        let state = self
            .inner
            .service
            .get()?
            .reader()
            .device_state(&self.device)?;
        Some((state.version, UnitState::from_text(&state.text)?))
    }
}

/// The answer when the cluster cannot decide now: hosts retry it.
fn not_now() -> Completion {
    Completion::check(Sense::not_ready_alua_transitioning())
}

impl Inner {
    fn lock(&self, device: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(locks.entry(device).or_default())
    }

    /// Notes each device's COMPARE AND WRITE owner (the Primary of its
    /// set) and tells its unit here whether it is another member. Then
    /// cleans up after members that are gone: see [`Inner::abandoned`].
    fn place_caw(
        self: &Arc<Self>,
        state: &ReplicatedState,
        reg: &Registry,
        me: &MemberId,
        first_seen: &mut std::collections::HashSet<Uuid>,
    ) {
        {
            let mut owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
            owners.clear();
            for d in state.config.devices.values() {
                let owner = state
                    .roles
                    .sets
                    .get(&d.set)
                    .and_then(|a| a.roles.primary.clone());
                let node = owner
                    .as_ref()
                    .and_then(|m| state.config.members.get(m))
                    .map(|m| m.node_id);
                if let Some(unit) = reg.unit(d.uuid) {
                    // No Primary (no member can serve the set): each runs its own.
                    unit.set_caw_elsewhere(owner.as_ref().is_some_and(|o| o != me));
                }
                owners.insert(d.uuid, node);
            }
        }
        let Some(service) = self.service.get() else {
            return;
        };
        let me_node = service.node_id();
        // Members the failure detector declared failed, by node id.
        let members = self.members.get().map(|m| m()).unwrap_or_default();
        let failed: Vec<u64> = members
            .iter()
            .filter(|m| m.state == MemberState::Failed)
            .filter_map(|m| state.config.members.get(&m.member).map(|c| c.node_id))
            .collect();
        for (uuid, d) in &state.device_states.devices {
            let first = first_seen.insert(*uuid);
            // Nothing can be gone but failed members, or this member's own
            // past the first sight of the device.
            if !first && failed.is_empty() {
                continue;
            }
            let Some(unit) = UnitState::from_text(&d.text) else {
                continue;
            };
            let mut gone: Vec<u64> = failed.clone();
            // Started again: this member's sessions and sanitize of before
            // are gone (a nexus of now holds its reservation again itself).
            let spc2_here_gone = unit.spc2.as_ref().is_some_and(|h| {
                u64::from(h.rel_port) == me_node && !reg.has_initiator_port(&h.initiator)
            });
            let sanitize_here_gone = unit.sanitize_by == me_node
                && matches!(unit.sanitize, SanitizePhase::Running { .. })
                && !matches!(
                    reg.sanitize_state(*uuid).map(|s| s.own_phase()),
                    Some(SanitizePhase::Running { .. })
                );
            if first && (spc2_here_gone || sanitize_here_gone) {
                gone.push(me_node);
            }
            let holds = |n: u64| {
                unit.spc2
                    .as_ref()
                    .is_some_and(|h| u64::from(h.rel_port) == n)
                    || (unit.sanitize_by == n
                        && matches!(unit.sanitize, SanitizePhase::Running { .. }))
            };
            for node in gone.into_iter().filter(|&n| holds(n)) {
                let (inner, device) = (Arc::clone(self), *uuid);
                if let Some(rt) = &self.runtime {
                    rt.spawn(async move { inner.abandoned(device, node).await });
                }
            }
        }
    }

    /// Member `node` is gone (failed, or this member restarted): the SPC-2
    /// reservation held through it goes (its I_T nexus is lost), and a
    /// sanitize it ran ends in failure mode (SBC: an operation that does not
    /// complete).
    async fn abandoned(&self, device: Uuid, node: u64) {
        let Some(service) = self.service.get() else {
            return;
        };
        let lock = self.lock(device);
        let _one_at_a_time = lock.lock().await;
        let reader = service.reader();
        let Some(current) = reader.device_state(&device) else {
            return;
        };
        let Some(mut state) = UnitState::from_text(&current.text) else {
            return;
        };
        let mut changed = false;
        // Through this member: only a nexus with no session here now.
        let here = |h: &ItNexus| {
            node == service.node_id()
                && self
                    .registry
                    .get()
                    .is_some_and(|r| r.has_initiator_port(&h.initiator))
        };
        if state
            .spc2
            .as_ref()
            .is_some_and(|h| u64::from(h.rel_port) == node && !here(h))
        {
            state.spc2 = None;
            changed = true;
        }
        let running_here = node == service.node_id()
            && self
                .registry
                .get()
                .and_then(|r| r.sanitize_state(device))
                .is_some_and(|s| matches!(s.own_phase(), SanitizePhase::Running { .. }));
        if state.sanitize_by == node
            && matches!(state.sanitize, SanitizePhase::Running { .. })
            && !running_here
        {
            state.sanitize = SanitizePhase::Failed { ause: false };
            changed = true;
        }
        if !changed {
            return;
        }
        let cmd = Command::SetDeviceState {
            device,
            expect: current.version,
            state: Some(state.to_text()),
        };
        match service.write(cmd).await {
            Ok(_) => {
                tracing::info!(%device, member_node = node, "SPC-2 reservation or sanitize of a member that is gone ended")
            }
            Err(e) => {
                tracing::debug!(%device, error = %e, "cleanup after a member that is gone not committed (tried again)")
            }
        }
    }

    /// Sends COMPARE AND WRITE `change` of `device` to its owner, or runs
    /// it here when this member became the owner meanwhile.
    async fn compare_and_write(&self, device: Uuid, change: &UnitChange) -> Completion {
        let UnitChange::CompareAndWrite {
            lba,
            blocks,
            fua,
            data,
        } = change
        else {
            return Completion::check(Sense::internal_target_failure());
        };
        let req = crate::caw::Request {
            device,
            lba: *lba,
            blocks: *blocks,
            fua: *fua,
            data: data.clone(),
        };
        let (Some(service), Some(executor)) = (self.service.get(), self.executor.get()) else {
            return not_now();
        };
        let owner = self
            .owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&device)
            .copied()
            .flatten();
        let answer = match owner {
            Some(node) if node != service.node_id() => {
                let Ok(_slot) = self.forwarding.acquire().await else {
                    return not_now();
                };
                match service.call_member(node, req.encode(), CAW_TIMEOUT).await {
                    Ok(text) => crate::caw::Answer::decode(&text),
                    Err(e) => {
                        tracing::warn!(%device, owner = node, error = %e, "COMPARE AND WRITE not sent to its owner; answered NOT READY (hosts retry)");
                        crate::caw::Answer::NotReady
                    }
                }
            }
            _ => executor.run(req).await,
        };
        answer.completion()
    }

    /// Decides `change` from `nexus` for `device`.
    async fn decide(&self, device: Uuid, nexus: &ItNexus, change: &UnitChange) -> Completion {
        if let UnitChange::CompareAndWrite { .. } = change {
            return self.compare_and_write(device, change).await;
        }
        let answer = self.decide_in_cluster(device, nexus, change).await;
        let local = matches!(change, UnitChange::Reset | UnitChange::ClearTaskSet);
        if local && answer.status != Completion::good().status {
            // Task management is not refused: without the cluster, it is
            // made on this member at least.
            if let Some(unit) = self.registry.get().and_then(|r| r.unit(device)) {
                match change {
                    UnitChange::Reset => unit.reset(),
                    _ => unit.clear_task_set(trellis_iscsi::scsi::spc2_token(nexus)),
                }
            }
            return Completion::good();
        }
        answer
    }

    async fn decide_in_cluster(
        &self,
        device: Uuid,
        nexus: &ItNexus,
        change: &UnitChange,
    ) -> Completion {
        let Some(service) = self.service.get() else {
            return not_now();
        };
        let lock = self.lock(device);
        let _one_at_a_time = lock.lock().await;
        let deadline = Instant::now() + DECIDE_TIMEOUT;
        let reader = service.reader();
        loop {
            let (version, mut state) = match reader.device_state(&device) {
                None => (0, UnitState::default()),
                Some(s) => match UnitState::from_text(&s.text) {
                    Some(state) => (s.version, state),
                    None => {
                        tracing::error!(%device, "the replicated unit state does not parse");
                        return Completion::check(Sense::internal_target_failure());
                    }
                },
            };
            let outcome = match change {
                UnitChange::Prout(PrRequest::Out {
                    sa,
                    scope_type,
                    params,
                }) => state.pr.prout(nexus, *sa, *scope_type, params),
                UnitChange::Prout(PrRequest::In { .. }) | UnitChange::CompareAndWrite { .. } => {
                    return Completion::check(Sense::internal_target_failure())
                }
                UnitChange::Reset => {
                    state.resets += 1;
                    state.spc2 = None;
                    Ok(true)
                }
                UnitChange::ClearTaskSet => {
                    state.clears += 1;
                    state.clearer = Some(nexus.clone());
                    Ok(true)
                }
                UnitChange::Reserve => match &state.spc2 {
                    Some(h) if h == nexus => Ok(false),
                    Some(_) => Err(Completion::reservation_conflict()),
                    // SPC-4 5.13.3: no RESERVE while registrations exist.
                    None if !state.pr.registrations.is_empty() => {
                        Err(Completion::reservation_conflict())
                    }
                    None => {
                        state.spc2 = Some(nexus.clone());
                        Ok(true)
                    }
                },
                UnitChange::Sanitize { phase } => {
                    let by = match phase {
                        SanitizePhase::Idle => 0,
                        _ => service.node_id(),
                    };
                    let phase = match phase {
                        SanitizePhase::Running { .. } => SanitizePhase::Running { progress: 0 },
                        other => *other,
                    };
                    if (state.sanitize, state.sanitize_by) == (phase, by) {
                        Ok(false)
                    } else {
                        state.sanitize = phase;
                        state.sanitize_by = by;
                        Ok(true)
                    }
                }
                UnitChange::Mode { swp } if state.swp == *swp => Ok(false),
                UnitChange::Mode { swp } => {
                    state.swp = *swp;
                    state.swp_by = Some(nexus.clone());
                    Ok(true)
                }
                UnitChange::Release => match &state.spc2 {
                    Some(h) if h == nexus => {
                        state.spc2 = None;
                        Ok(true)
                    }
                    _ => Ok(false),
                },
            };
            let (text, answer) = match outcome {
                Ok(true) => (Some(state.to_text()), Completion::good()),
                Ok(false) => (None, Completion::good()),
                Err(c) => (None, c),
            };
            let changed = text.is_some();
            // A change is proposed only to a leader that leads a quorum
            // now: one cut off would keep it uncommitted and could commit
            // it after the host was told NOT READY.
            if changed {
                if let Err(e) = service.confirm_quorum().await {
                    tracing::warn!(%device, error = %e, "shared SCSI state change not proposed: no quorum; answered NOT READY (hosts retry)");
                    return not_now();
                }
            }
            let cmd = Command::SetDeviceState {
                device,
                expect: version,
                state: text,
            };
            let result = service.write(cmd).await;
            tracing::info!(%device, nexus = %format!("{},{}", nexus.initiator, nexus.rel_port), change = ?kind(change), changed, status = ?answer.status, ok = result.is_ok(), "shared SCSI state change decided");
            match result {
                Ok(_) => {
                    if changed {
                        self.until_everywhere(service, device, version, deadline)
                            .await;
                    }
                    return answer;
                }
                Err(ServiceError::Rejected(ConfigError::DeviceStateMoved {
                    version: now, ..
                })) => {
                    // Another member's change came first: decide again
                    // from it once this replica has it.
                    let applied = || reader.device_state(&device).map_or(0, |s| s.version) >= now;
                    if !until(deadline, applied).await {
                        return not_now();
                    }
                }
                Err(ServiceError::Rejected(ConfigError::NotFound { .. })) => {
                    return Completion::check(Sense::lun_not_supported());
                }
                Err(e) => {
                    tracing::warn!(%device, error = %e, "shared SCSI state change not committed; answered NOT READY (hosts retry)");
                    return not_now();
                }
            }
            if Instant::now() >= deadline {
                return not_now();
            }
        }
    }

    /// Waits until the change of `device` from `version` is applied here,
    /// held by this member's units, and announced by every live peer.
    async fn until_everywhere(
        &self,
        service: &ConfigService,
        device: Uuid,
        version: u64,
        deadline: Instant,
    ) {
        let reader = service.reader();
        let mut now = 0;
        let here = until(deadline, || {
            now = reader.device_state(&device).map_or(0, |s| s.version);
            now > version
        })
        .await;
        let installed =
            here && until(deadline, || self.installed.load(Ordering::Acquire) >= now).await;
        let lagging = || -> Vec<String> {
            let members = self.members.get().map(|m| m()).unwrap_or_default();
            members
                .iter()
                .filter(|m| m.state != MemberState::Failed)
                .filter_map(|m| m.data.map(|d| (m, d)))
                .filter(|(_, d)| d.booted && d.devices < now)
                .map(|(m, _)| m.member.to_string())
                .collect()
        };
        let peers = installed && until(deadline, || lagging().is_empty()).await;
        if !peers {
            tracing::warn!(%device, here, installed, lagging = ?lagging(), "a committed reservation change is answered before every member applied it");
        }
    }
}

/// What `change` is, for the log.
fn kind(change: &UnitChange) -> &'static str {
    match change {
        UnitChange::Prout(_) => "PERSISTENT RESERVE OUT",
        UnitChange::Reset => "LOGICAL UNIT RESET",
        UnitChange::ClearTaskSet => "CLEAR TASK SET",
        UnitChange::Reserve => "RESERVE",
        UnitChange::Release => "RELEASE",
        UnitChange::Mode { .. } => "MODE SELECT",
        UnitChange::Sanitize { .. } => "SANITIZE",
        UnitChange::CompareAndWrite { .. } => "COMPARE AND WRITE",
    }
}

/// Polls `f` until it holds (true) or `deadline` passes (false).
async fn until(deadline: Instant, mut f: impl FnMut() -> bool) -> bool {
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Installs the decided states into the units, remembering what each
/// unit got.
#[derive(Default)]
struct Installer {
    /// Per device: the version installed and into which unit.
    done: HashMap<Uuid, (u64, usize)>,
    /// Devices whose installed state says this member's sanitize failed.
    own_failure: std::collections::HashSet<Uuid>,
}

impl Installer {
    /// One pass; returns the `seq` of the states the units now hold.
    fn round(&mut self, states: &DeviceStates, reg: &Registry, me: u64) -> u64 {
        for (uuid, state) in &states.devices {
            let Some(unit) = reg.unit(*uuid) else {
                continue;
            };
            let key = (state.version, Arc::as_ptr(&unit) as usize);
            if self.done.get(uuid) == Some(&key) {
                continue;
            }
            match UnitState::from_text(&state.text) {
                Some(decided) => {
                    // Another member's sanitize is reported here as well.
                    if let Some(s) = reg.sanitize_state(*uuid) {
                        let theirs = decided.sanitize_by != me;
                        s.set_shared(if theirs {
                            decided.sanitize
                        } else {
                            SanitizePhase::Idle
                        });
                        // This member's failed one, ended for the cluster (EXIT
                        // FAILURE MODE, or a sanitize, through another).
                        let own_failure =
                            matches!(decided.sanitize, SanitizePhase::Failed { .. }) && !theirs;
                        if own_failure {
                            self.own_failure.insert(*uuid);
                        } else if self.own_failure.remove(uuid) {
                            s.clear_failure();
                        }
                    }
                    unit.install(state.version, decided);
                    self.done.insert(*uuid, key);
                }
                None => {
                    tracing::error!(device = %uuid, "the replicated unit state does not parse; not installed")
                }
            }
        }
        self.done
            .retain(|uuid, _| states.devices.contains_key(uuid));
        states.seq
    }
}
