//! Failover on a cluster member: the threads that drive the control
//! plane's sans-IO failover pieces.
//!
//! ```text
//!  trellis-lease    every renew interval: ConfigService::renew_lease ─> Holder (this member's lease)
//!  trellis-arbiter  on the Raft leader, on changes and every 100 ms:
//!                   facts (failure detector, lease record) ─> arbitration::decide
//!                   ─> Command::AssignRoles (next epoch) ─> Raft
//!  trellis-paths    on changes and every 25 ms (leases run out by the clock):
//!                   committed roles + this member's lease ─> paths::device_table / own_state
//!                   ─> Registry::set_port_states (ALUA, unit attentions)
//!                   ─> Registry::set_write_fence (the lease's end: no write
//!                      reaches the disk after it, whatever the port state says)
//! ```
//!
//! A member serves nothing Active/Optimized before a role is committed for
//! its device's set (the target starts every unit Transitioning), nor
//! without a valid lease for the epoch it has applied.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use trellis_control::arbitration::{decide, Decision, Inputs, Liveness, MemberFacts};
use trellis_control::config::{ClusterConfig, Command, ConfigService, Proposal};
use trellis_control::lease::{Holder, LeaseState};
use trellis_control::membership::{MemberState, MemberStatus};
use trellis_control::paths::{device_table, own_state, Access};
use trellis_control::watch::Watch;
use trellis_control::MemberId;
use trellis_iscsi::scsi::{AluaState, PortGroup, PortTable};
use trellis_iscsi::target::Registry;

/// How long after its start the arbiter assigns a set some of whose
/// members it has never heard from (cold boot: the preferred member, not
/// the first to start, should become Primary).
pub const BOOT_WINDOW: Duration = Duration::from_secs(10);

/// How often the arbiter looks again without a change.
const ARBITER_EVERY: Duration = Duration::from_millis(100);

/// How often port states are recomputed without a change (a lease runs
/// out by the clock alone).
const PATHS_EVERY: Duration = Duration::from_millis(25);

/// The failover threads of one member.
pub struct Failover {
    threads: Vec<JoinHandle<()>>,
    stats: Arc<Stats>,
}

/// What the failover threads count, for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Lease renewals granted.
    pub renewals: AtomicU64,
    /// Lease renewals that failed (no leader, no quorum, timeout).
    pub renewal_failures: AtomicU64,
    /// Times this member's lease ran out while it held one.
    pub losses: AtomicU64,
    /// Whether the lease is held now.
    pub lease_valid: AtomicBool,
    /// Changes of a set's Primary this member's replica applied (a first
    /// assignment is not one).
    pub failovers: AtomicU64,
    /// This member's own ALUA state per device, as last set.
    pub own: Mutex<BTreeMap<String, Access>>,
}

impl Failover {
    /// The counters, for `/metrics`.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Waits for the threads (after `stop` was set and `wake` notified).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Where the failover threads get their inputs.
pub struct Sources {
    /// The Raft node.
    pub service: Arc<ConfigService>,
    /// The failure detector's view of the other members.
    pub members: Arc<dyn Fn() -> Vec<MemberStatus> + Send + Sync>,
    /// Changes to wait for (replica applied, member states).
    pub changes: Watch,
    /// This member.
    pub me: MemberId,
    /// Stops the threads.
    pub stop: Arc<AtomicBool>,
}

/// Starts the arbiter, and on a data member (`registry`) the lease and
/// port-state threads.
pub fn start(src: Sources, registry: Option<Arc<Registry>>) -> Result<Failover> {
    let mut threads = Vec::new();
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .context("cannot start a thread")
    };
    let stats = Arc::new(Stats::default());
    let arbiter = Arbiter::new(&src);
    threads.push(spawn("trellis-arbiter", Box::new(move || arbiter.run()))?);
    if let Some(registry) = registry {
        let holder = Arc::new(Mutex::new(Holder::new(src.service.lease_timers())));
        let lease = LeaseThread {
            service: Arc::clone(&src.service),
            holder: Arc::clone(&holder),
            me: src.me.clone(),
            stop: Arc::clone(&src.stop),
            changes: src.changes.clone(),
            stats: Arc::clone(&stats),
        };
        threads.push(spawn("trellis-lease", Box::new(move || lease.run()))?);
        let paths = Paths {
            service: Arc::clone(&src.service),
            holder,
            registry,
            me: src.me.clone(),
            stop: Arc::clone(&src.stop),
            changes: src.changes.clone(),
            last: BTreeMap::new(),
            stats: Arc::clone(&stats),
            primaries: BTreeMap::new(),
            serving: false,
            cached: None,
        };
        threads.push(spawn("trellis-paths", Box::new(move || paths.run()))?);
    }
    Ok(Failover { threads, stats })
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

struct LeaseThread {
    service: Arc<ConfigService>,
    holder: Arc<Mutex<Holder>>,
    me: MemberId,
    stop: Arc<AtomicBool>,
    changes: Watch,
    stats: Arc<Stats>,
}

impl LeaseThread {
    fn run(self) {
        let timers = self.service.lease_timers();
        let mut said = String::new();
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let due = self.lock().due(now);
            if !due {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            let seq = self.lock().request(now);
            match self.service.renew_lease(&self.me, timers.renew_every) {
                Ok(epoch) => {
                    self.stats.renewals.fetch_add(1, Ordering::Relaxed);
                    let was = self.lock().state(Instant::now()).serves();
                    self.lock().granted(seq, epoch);
                    if !said.is_empty() {
                        tracing::info!(member = %self.me, "lease renewed again");
                        said.clear();
                    }
                    if !was {
                        // The port states may turn active now.
                        self.changes.notify();
                    }
                }
                Err(e) => {
                    self.stats.renewal_failures.fetch_add(1, Ordering::Relaxed);
                    let why = e.to_string();
                    if why != said {
                        tracing::warn!(member = %self.me, error = %why, "cannot renew the lease; ports step down when it runs out");
                        said = why;
                    }
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Holder> {
        self.holder.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Arbiter {
    service: Arc<ConfigService>,
    members: Arc<dyn Fn() -> Vec<MemberStatus> + Send + Sync>,
    changes: Watch,
    me: MemberId,
    stop: Arc<AtomicBool>,
    started: Instant,
    /// Since when each member has been eligible without a break.
    eligible_since: BTreeMap<MemberId, Instant>,
    /// The waits last logged, by set.
    waits: BTreeMap<String, String>,
}

impl Arbiter {
    fn new(src: &Sources) -> Self {
        Arbiter {
            service: Arc::clone(&src.service),
            members: Arc::clone(&src.members),
            changes: src.changes.clone(),
            me: src.me.clone(),
            stop: Arc::clone(&src.stop),
            started: Instant::now(),
            eligible_since: BTreeMap::new(),
            waits: BTreeMap::new(),
        }
    }

    fn run(mut self) {
        let mut changes = self.changes.subscribe();
        while !self.stop.load(Ordering::Relaxed) {
            if let Some(term) = self.service.leading() {
                self.round(term);
            } else {
                self.waits.clear();
            }
            changes.wait(ARBITER_EVERY);
        }
    }

    fn facts(&mut self, config: &ClusterConfig, term: u64) -> BTreeMap<MemberId, MemberFacts> {
        let now = Instant::now();
        let peers = (self.members)();
        let mut facts = BTreeMap::new();
        for m in config.members.values().filter(|m| !m.witness) {
            let liveness = if m.id == self.me {
                Liveness::Alive
            } else {
                match peers.iter().find(|p| p.member == m.id).map(|p| p.state) {
                    Some(MemberState::Alive) => Liveness::Alive,
                    Some(MemberState::Suspect) => Liveness::Suspect,
                    Some(MemberState::Failed) => Liveness::Failed,
                    None => Liveness::Unknown,
                }
            };
            let (renewing, lease_may_hold) = self.service.lease_facts(term, &m.id, now);
            let mut f = MemberFacts {
                liveness,
                renewing,
                lease_may_hold,
                drained: config.drained.contains(&m.id),
                eligible_for: Duration::ZERO,
                ..MemberFacts::up(Duration::ZERO)
            };
            if f.eligible() {
                let since = *self.eligible_since.entry(m.id.clone()).or_insert(now);
                f.eligible_for = now.duration_since(since);
            } else {
                self.eligible_since.remove(&m.id);
            }
            facts.insert(m.id.clone(), f);
        }
        facts
    }

    fn round(&mut self, term: u64) {
        let state = self.service.reader().state();
        let settled = self.started.elapsed() >= BOOT_WINDOW;
        if !settled {
            // Cold boot: until every Raft member has registered, the sets
            // do not know all their members yet (the default set grows as
            // members register), and the first to register would become
            // Primary.
            let raft = trellis_control::service::ClusterService::raft(&*self.service);
            let unregistered: Vec<u64> = raft
                .voters
                .iter()
                .chain(&raft.learners)
                .copied()
                .filter(|id| !state.config.members.values().any(|m| m.node_id == *id))
                .collect();
            if !unregistered.is_empty() {
                let why = format!("cold boot: waiting for nodes {unregistered:?} to register");
                if self.waits.get("*") != Some(&why) {
                    tracing::info!("arbitration waits: {why}");
                    self.waits.insert("*".into(), why);
                }
                return;
            }
        }
        let facts = self.facts(&state.config, term);
        let decisions = decide(&Inputs {
            config: &state.config,
            facts: &facts,
            current: &state.roles.sets,
            now_ms: unix_ms(),
            settled,
        });
        let mut proposals = Vec::new();
        for (set, d) in decisions {
            match d {
                Decision::Keep => {
                    self.waits.remove(&set);
                }
                Decision::Wait { why } => {
                    if self.waits.get(&set) != Some(&why) {
                        tracing::info!(set = %set, "arbitration waits: {why}");
                        self.waits.insert(set, why);
                    }
                }
                Decision::Assign { roles, why } => {
                    self.waits.remove(&set);
                    proposals.push(Proposal {
                        expect: state.roles.sets.get(&set).map_or(0, |a| a.epoch),
                        set,
                        roles,
                        since_ms: unix_ms(),
                        why,
                    });
                }
            }
        }
        if proposals.is_empty() {
            return;
        }
        let whys: Vec<String> = proposals.iter().map(|p| p.why.clone()).collect();
        match self
            .service
            .write_blocking(Command::AssignRoles { proposals })
        {
            Ok(_) => {
                let epoch = self.service.reader().last_epoch();
                for why in whys {
                    tracing::info!(epoch, "roles committed: {why}");
                }
            }
            Err(e) => tracing::warn!(error = %e, "role assignment not committed; deciding again"),
        }
    }
}

struct Paths {
    service: Arc<ConfigService>,
    holder: Arc<Mutex<Holder>>,
    registry: Arc<Registry>,
    me: MemberId,
    stop: Arc<AtomicBool>,
    changes: Watch,
    /// The table last set, by device.
    last: BTreeMap<uuid::Uuid, PortTable>,
    stats: Arc<Stats>,
    /// Each set's Primary as last applied, with its epoch.
    primaries: BTreeMap<String, (u64, Option<MemberId>)>,
    /// Whether the lease was held at the last look.
    serving: bool,
    /// The replicated state as of an applied index: copied again only when
    /// the replica applied more (this thread looks every 25 ms).
    cached: Option<(Option<u64>, Arc<trellis_control::config::ReplicatedState>)>,
}

fn alua(a: Access) -> AluaState {
    match a {
        Access::Optimized => AluaState::ActiveOptimized,
        Access::NonOptimized => AluaState::ActiveNonOptimized,
        Access::Standby => AluaState::Standby,
        Access::Unavailable => AluaState::Unavailable,
        Access::Transitioning => AluaState::Transitioning,
    }
}

impl Paths {
    fn run(mut self) {
        let mut changes = self.changes.subscribe();
        while !self.stop.load(Ordering::Relaxed) {
            self.apply();
            changes.wait(PATHS_EVERY);
        }
    }

    fn lease(&self) -> LeaseState {
        self.holder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .state(Instant::now())
    }

    /// Counts lease losses and changes of Primary.
    fn count(&mut self, state: &trellis_control::config::ReplicatedState, lease: LeaseState) {
        let serving = lease.serves();
        if self.serving && !serving {
            self.stats.losses.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(member = %self.me, "lease ran out: this member's ports step down");
        }
        self.serving = serving;
        self.stats.lease_valid.store(serving, Ordering::Relaxed);
        for (set, a) in &state.roles.sets {
            let now = (a.epoch, a.roles.primary.clone());
            match self.primaries.insert(set.clone(), now.clone()) {
                Some((epoch, Some(before))) if epoch < now.0 && now.1.as_ref() != Some(&before) => {
                    self.stats.failovers.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    }

    /// The replicated state, copied only when the replica moved on.
    fn state(&mut self) -> Arc<trellis_control::config::ReplicatedState> {
        let reader = self.service.reader();
        let index = reader.applied_index();
        match &self.cached {
            Some((at, s)) if *at == index => Arc::clone(s),
            _ => {
                let s = Arc::new(reader.state());
                self.cached = Some((index, Arc::clone(&s)));
                s
            }
        }
    }

    fn apply(&mut self) {
        let state = self.state();
        let lease = self.lease();
        self.count(&state, lease);
        // Writes stop at the lease's end, and at once while the lease was
        // granted at an epoch this member has not applied yet.
        let fence = match lease {
            LeaseState::Valid { until, epoch } | LeaseState::Expiring { until, epoch }
                if epoch <= state.roles.last_epoch =>
            {
                until
            }
            _ => Instant::now(),
        };
        for device in state.config.devices.values() {
            self.registry.set_write_fence(device.uuid, Some(fence));
            let assignment = state.roles.sets.get(&device.set);
            let t = device_table(&state.config, device, assignment);
            let groups = t
                .groups
                .iter()
                .map(|g| {
                    let mut access = g.state;
                    if g.member == self.me {
                        access = own_state(access, device.policy, lease, state.roles.last_epoch);
                        self.stats
                            .own
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(device.name.clone(), access);
                    }
                    PortGroup {
                        id: g.id,
                        state: alua(access),
                        preferred: g.preferred && access == Access::Optimized,
                        relative_ports: vec![g.relative_port],
                    }
                })
                .collect();
            let table = PortTable {
                epoch: t.epoch,
                groups,
            };
            if self.last.get(&device.uuid) == Some(&table) {
                continue;
            }
            if let Some(changed) = self.registry.set_port_states(device.uuid, table.clone()) {
                if changed {
                    let mine = table
                        .groups
                        .iter()
                        .find(|g| g.id == self.registry.config().tpg_id)
                        .map(|g| g.state);
                    tracing::info!(device = %device.name, epoch = table.epoch, state = ?mine, "port states changed");
                }
                self.last.insert(device.uuid, table);
            }
        }
        self.last
            .retain(|u, _| state.config.devices.values().any(|d| d.uuid == *u));
    }
}

/// Prometheus text: roles per set and member, each set's epoch, this
/// member's ALUA state per device, failovers, lease renewals and losses.
pub fn render(stats: &Stats, state: &trellis_control::config::ReplicatedState) -> String {
    use std::fmt::Write;
    let mut out = String::from(
        "# HELP trellis_role A member's role in a Failover Set (1), as committed.\n# TYPE trellis_role gauge\n",
    );
    for (set, a) in &state.roles.sets {
        for m in state.config.set_members(set) {
            if let Some(role) = a.roles.role_of(&m) {
                let _ = writeln!(
                    out,
                    "trellis_role{{set=\"{set}\",member=\"{m}\",role=\"{role}\"}} 1"
                );
            }
        }
    }
    out.push_str("# HELP trellis_set_epoch The epoch of a set's committed roles.\n# TYPE trellis_set_epoch gauge\n");
    for (set, a) in &state.roles.sets {
        let _ = writeln!(out, "trellis_set_epoch{{set=\"{set}\"}} {}", a.epoch);
    }
    out.push_str("# HELP trellis_alua_state This member's ALUA state per device (1).\n# TYPE trellis_alua_state gauge\n");
    for (device, access) in stats
        .own
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
    {
        let _ = writeln!(
            out,
            "trellis_alua_state{{device=\"{device}\",state=\"{}\"}} 1",
            access.name()
        );
    }
    let counters = [
        (
            "trellis_failovers_total",
            "counter",
            "Changes of a set's Primary this member applied.",
            stats.failovers.load(Ordering::Relaxed),
        ),
        (
            "trellis_lease_renewals_total",
            "counter",
            "Lease renewals granted to this member.",
            stats.renewals.load(Ordering::Relaxed),
        ),
        (
            "trellis_lease_renewal_failures_total",
            "counter",
            "Lease renewals that failed (no leader, no quorum, no answer in time).",
            stats.renewal_failures.load(Ordering::Relaxed),
        ),
        (
            "trellis_lease_losses_total",
            "counter",
            "Times this member's lease ran out while it held one.",
            stats.losses.load(Ordering::Relaxed),
        ),
        (
            "trellis_lease_valid",
            "gauge",
            "Whether this member holds its lease now.",
            u64::from(stats.lease_valid.load(Ordering::Relaxed)),
        ),
    ];
    for (name, kind, help, v) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
    out
}
