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
//!                   ─> the roles this member announces in its heartbeats, and
//!                      crosscheck of what the others announce (a set some peer
//!                      applies a newer epoch of stops serving here until this
//!                      replica catches up)
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
use trellis_control::crosscheck::{self, Disagreement};
use trellis_control::lease::{Holder, LeaseState};
use trellis_control::membership::{MemberState, MemberStatus};
use trellis_control::node::{Announcements, Announcer};
use trellis_control::paths::{device_table, own_state, Access};
use trellis_control::watch::Watch;
use trellis_control::wire::{DataState, SetRole};
use trellis_control::MemberId;
use trellis_iscsi::scsi::{AluaState, PortGroup, PortTable};
use trellis_iscsi::target::Registry;

/// How long after this member became the leader its arbiter waits, before
/// giving a set with no roles yet its first ones, for every member of the
/// set to be eligible (cold boot: the members come up over a while, and
/// the preferred member, not the first one up, should become Primary).
pub const BOOT_WINDOW: Duration = Duration::from_secs(10);

/// How often the arbiter looks again without a change.
const ARBITER_EVERY: Duration = Duration::from_millis(100);

/// How often port states are recomputed without a change (a lease runs
/// out by the clock alone).
const PATHS_EVERY: Duration = Duration::from_millis(25);

/// How long a peer may announce a newer epoch than this replica applied
/// before this member's ports of that set stop serving (a healthy replica
/// applies a commit within milliseconds of the member that announced it).
const LAG_GRACE: Duration = Duration::from_millis(250);

/// How long another disagreement may last before it is logged.
const DISAGREEMENT_GRACE: Duration = Duration::from_secs(2);

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
    /// Disagreements between what a peer announced and the applied roles
    /// that lasted past their grace.
    pub disagreements: AtomicU64,
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
    /// Changes to wait for (replica applied, member states, announced roles).
    pub changes: Watch,
    /// Where this member's announced roles go (its heartbeats).
    pub announcer: Announcer,
    /// What the other members announce.
    pub announced: Arc<dyn Fn() -> Announcements + Send + Sync>,
    /// On a data member, the devices it cannot serve (any makes it
    /// unhealthy: it takes no new role and hands a Primary role over).
    pub unserved: Option<crate::exports::Unserved>,
    /// On a data member, set once its exports first followed the
    /// replicated configuration (boot finished: it may take a role).
    pub booted: Option<Arc<AtomicBool>>,
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
            cache: StateCache::default(),
            announcer: src.announcer.clone(),
            announced: Arc::clone(&src.announced),
            announcing: Vec::new(),
            lag_since: BTreeMap::new(),
            seen: BTreeMap::new(),
            unserved: src.unserved.clone().unwrap_or_default(),
            booted: src.booted.clone().unwrap_or_default(),
            boot_told: false,
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

/// The replicated state as of an applied index, copied again only when
/// the replica applied more (the failover threads look often; a copy holds
/// the whole state, the idempotency table included).
#[derive(Default)]
struct StateCache(Option<(Option<u64>, Arc<trellis_control::config::ReplicatedState>)>);

impl StateCache {
    fn get(&mut self, service: &ConfigService) -> Arc<trellis_control::config::ReplicatedState> {
        let reader = service.reader();
        let index = reader.applied_index();
        match &self.0 {
            Some((at, s)) if *at == index => Arc::clone(s),
            _ => {
                let s = Arc::new(reader.state());
                self.0 = Some((index, Arc::clone(&s)));
                s
            }
        }
    }
}

struct Arbiter {
    service: Arc<ConfigService>,
    members: Arc<dyn Fn() -> Vec<MemberStatus> + Send + Sync>,
    changes: Watch,
    me: MemberId,
    stop: Arc<AtomicBool>,
    /// The term this member leads in, and since when (the boot window runs
    /// from there: a cold boot has a leader only once a quorum is up).
    leading: Option<(u64, Instant)>,
    /// Since when each member has been eligible without a break.
    eligible_since: BTreeMap<MemberId, Instant>,
    /// The waits last logged, by set.
    waits: BTreeMap<String, String>,
    /// What this member announces (its own health).
    announcer: Announcer,
    /// Restarts seen per member (quarantine).
    restarts: trellis_control::quarantine::RestartWatch,
    /// The replicated state (it looks every 100 ms).
    cache: StateCache,
}

impl Arbiter {
    fn new(src: &Sources) -> Self {
        Arbiter {
            service: Arc::clone(&src.service),
            members: Arc::clone(&src.members),
            changes: src.changes.clone(),
            me: src.me.clone(),
            stop: Arc::clone(&src.stop),
            leading: None,
            eligible_since: BTreeMap::new(),
            waits: BTreeMap::new(),
            announcer: src.announcer.clone(),
            restarts: Default::default(),
            cache: StateCache::default(),
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
            let peer = peers.iter().find(|p| p.member == m.id);
            let (liveness, data) = if m.id == self.me {
                (Liveness::Alive, self.announcer.state())
            } else {
                let liveness = match peer.map(|p| p.state) {
                    Some(MemberState::Alive) => Liveness::Alive,
                    Some(MemberState::Suspect) => Liveness::Suspect,
                    Some(MemberState::Failed) => Liveness::Failed,
                    None => Liveness::Unknown,
                };
                if self
                    .restarts
                    .observe(&m.id, peer.and_then(|p| p.incarnation), now)
                {
                    tracing::warn!(member = %m.id, "quarantined: restarted {} times within {:?}; it takes no role until fewer restarts fall in that window", trellis_control::quarantine::RESTARTS, trellis_control::quarantine::WINDOW);
                }
                (liveness, peer.and_then(|p| p.data))
            };
            let (renewing, lease_may_hold) = self.service.lease_facts(term, &m.id, now);
            let mut f = MemberFacts {
                liveness,
                renewing,
                lease_may_hold,
                drained: config.drained.contains(&m.id),
                // What its heartbeats say (a member that says nothing, of
                // protocol 1.0, counts as healthy).
                healthy: data.is_none_or(|d| d.healthy),
                booted: data.is_none_or(|d| d.booted),
                quarantined: self.restarts.quarantined(&m.id, now),
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
        let state = self.cache.get(&self.service);
        if self.leading.is_none_or(|(t, _)| t != term) {
            self.leading = Some((term, Instant::now()));
        }
        let settled = self
            .leading
            .is_some_and(|(_, since)| since.elapsed() >= BOOT_WINDOW);
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
    /// The replicated state (this thread looks every 25 ms).
    cache: StateCache,
    announcer: Announcer,
    announced: Arc<dyn Fn() -> Announcements + Send + Sync>,
    /// What this member announces now.
    announcing: Vec<SetRole>,
    /// Sets some peer applies a newer epoch of: since when, the epoch, and
    /// whether this member has stepped down for it (logged).
    lag_since: BTreeMap<String, (Instant, u64, bool)>,
    /// Other disagreements: since when, and whether logged.
    seen: BTreeMap<String, (Instant, bool)>,
    /// The devices this member cannot serve.
    unserved: crate::exports::Unserved,
    /// Set once its exports followed the replicated configuration.
    booted: Arc<AtomicBool>,
    /// Whether the boot type was logged.
    boot_told: bool,
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

    /// Announces this member's roles and checks the others'; the sets
    /// this replica lags in (past the grace), whose ports must not serve.
    fn cross_check(
        &mut self,
        state: &trellis_control::config::ReplicatedState,
    ) -> BTreeMap<String, u64> {
        let mine = crosscheck::announcement(&state.roles, &self.me);
        if mine != self.announcing {
            self.announcer.set(mine.clone());
            self.announcing = mine;
        }
        let found = crosscheck::cross_check(&state.roles, &(self.announced)());
        let now = Instant::now();
        let ahead = crosscheck::lagging_sets(&found);
        for (set, &epoch) in &ahead {
            let since = self
                .lag_since
                .entry(set.clone())
                .or_insert((now, epoch, false));
            if since.1 != epoch {
                *since = (now, epoch, false);
            }
        }
        let mut lagging = BTreeMap::new();
        let (me, stats) = (&self.me, &self.stats);
        self.lag_since.retain(|set, (since, epoch, stepped_down)| {
            if !ahead.contains_key(set) {
                if *stepped_down {
                    tracing::info!(member = %me, %set, "this replica caught up with the announced roles");
                }
                return false;
            }
            if now.duration_since(*since) >= LAG_GRACE {
                if !*stepped_down {
                    *stepped_down = true;
                    tracing::warn!(member = %me, %set, epoch = *epoch, "a peer applies a newer assignment of this set than this replica: its ports here stop serving until the replica catches up");
                    stats.disagreements.fetch_add(1, Ordering::Relaxed);
                }
                lagging.insert(set.clone(), *epoch);
            }
            true
        });
        // Behind and wrong roles: logged once each when they last.
        let others: Vec<String> = found
            .iter()
            .filter(|d| !matches!(d, Disagreement::Ahead { .. }))
            .map(ToString::to_string)
            .collect();
        self.seen.retain(|k, _| others.contains(k));
        for d in others {
            let (since, logged) = self.seen.entry(d.clone()).or_insert((now, false));
            if !*logged && now.duration_since(*since) >= DISAGREEMENT_GRACE {
                *logged = true;
                self.stats.disagreements.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(member = %self.me, "announced roles disagree with the committed assignment: {d}");
            }
        }
        lagging
    }

    /// Drains this member's portals while the configuration says so, and
    /// announces its sessions and health.
    fn data_state(&mut self, state: &trellis_control::config::ReplicatedState) {
        let drained = state.config.drained.contains(&self.me);
        if self.registry.set_draining(drained) {
            if drained {
                tracing::info!(member = %self.me, "drained: hosts asked to log out, new logins refused (0x0301) until undrained");
            } else {
                tracing::info!(member = %self.me, "undrained: logins accepted again");
            }
        }
        let unserved = self
            .unserved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        let sessions = u32::try_from(self.registry.session_count()).unwrap_or(u32::MAX);
        let booted = self.booted.load(Ordering::SeqCst);
        if booted && !self.boot_told {
            self.boot_told = true;
            self.tell_boot(state);
        }
        self.announcer.set_state(DataState {
            sessions,
            healthy: unserved == 0,
            booted,
            devices: 0,
        });
    }

    /// Logs how this member booted, once it has: a cold boot (its sets
    /// have no roles yet: they start together) or a rejoin of running sets
    /// (it takes the role arbitration gives it, never the Primary's).
    fn tell_boot(&self, state: &trellis_control::config::ReplicatedState) {
        let running: Vec<String> = state
            .roles
            .sets
            .iter()
            .filter(|(set, _)| state.config.set_members(set).contains(&self.me))
            .map(|(set, a)| {
                let primary = a
                    .roles
                    .primary
                    .as_ref()
                    .map_or("none".to_owned(), ToString::to_string);
                format!("{set} (epoch {}, Primary {primary})", a.epoch)
            })
            .collect();
        if running.is_empty() {
            tracing::info!(member = %self.me, "booted: cold boot, no roles yet; arbitration assigns them once the set's members are up");
        } else {
            tracing::info!(member = %self.me, sets = %running.join(", "), "booted: rejoining running sets; this member takes the role arbitration gives it");
        }
    }

    fn apply(&mut self) {
        let state = self.cache.get(&self.service);
        let lease = self.lease();
        self.count(&state, lease);
        self.data_state(&state);
        let lagging = self.cross_check(&state);
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
            let behind = lagging.get(&device.set);
            let fence = if behind.is_some() {
                Instant::now()
            } else {
                fence
            };
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
                        if behind.is_some()
                            && matches!(access, Access::Optimized | Access::NonOptimized)
                        {
                            access = Access::Transitioning;
                        }
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
            "trellis_role_disagreements_total",
            "counter",
            "Announced roles that disagreed with the committed assignment past their grace (a lagging replica, a wrong role).",
            stats.disagreements.load(Ordering::Relaxed),
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
