//! A seeded simulation of a three-member cluster serving one
//! active-passive device through kills, restarts and partitions: the
//! arbiter ([`decide`]), leases ([`Holder`], [`Granter`]) and path swap
//! ([`device_table`], [`own_state`]) driven together, with Raft reduced to
//! what they rely on (one leader per majority, commits only with a
//! quorum, members applying what they hear later).
//!
//! Checked at every simulated instant: at most one member serves the
//! device Active/Optimized. Checked after every quiet spell with a quorum
//! connected: exactly one does.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::api::testing::with_data_members;
use crate::config::{Device, PortPolicy, Proposal, RoleTable, DEFAULT_SET};
use crate::lease::{Granter, Holder, LeaseTimers};
use crate::paths::{device_table, own_state, Access};

const TICK: Duration = Duration::from_millis(10);
const MEMBERS: [&str; 3] = ["m1", "m2", "m3"];

struct Member {
    id: MemberId,
    up: bool,
    /// Partition component; members talk only within one.
    component: u8,
    holder: Holder,
    /// The role table this member has applied.
    applied: RoleTable,
    /// Since when the leader has not heard it (None: connected).
    lost_since: Option<Instant>,
    /// Since when it has been eligible without a break.
    up_since: Instant,
}

struct Sim {
    rng: StdRng,
    t0: Instant,
    now: Instant,
    timers: LeaseTimers,
    members: Vec<Member>,
    config: ClusterConfig,
    device: Device,
    committed: RoleTable,
    leader: Option<(usize, Granter)>,
    leaderless_since: Option<Instant>,
    /// Lease requests on their way: (due, from, seq, phase 0 = to the
    /// leader, 1 = leader confirming with the quorum).
    requests: Vec<(Instant, usize, u64, u8, usize)>,
    /// Grants on their way: (due, to, seq, epoch).
    grants: Vec<(Instant, usize, u64, u64)>,
    /// Role tables on their way: (due, to, table).
    replication: Vec<(Instant, usize, RoleTable)>,
    last_event: Instant,
    next_arbitration: Instant,
    quiet_checks: u32,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let t0 = Instant::now();
        let timers = LeaseTimers::default();
        let config = with_data_members(&MEMBERS);
        let device = Device {
            name: "d".into(),
            uuid: uuid::Uuid::from_u128(1),
            size: 4096,
            backing: crate::config::Backing::Memory,
            block_size: 512,
            thin: false,
            read_only: false,
            set: DEFAULT_SET.into(),
            policy: PortPolicy::default(),
        };
        Sim {
            rng: StdRng::seed_from_u64(seed),
            t0,
            now: t0,
            timers,
            members: MEMBERS
                .iter()
                .map(|id| Member {
                    id: MemberId((*id).into()),
                    up: true,
                    component: 0,
                    holder: Holder::new(timers),
                    applied: RoleTable::default(),
                    lost_since: None,
                    up_since: t0,
                })
                .collect(),
            config,
            device,
            committed: RoleTable::default(),
            leader: None,
            leaderless_since: Some(t0),
            requests: vec![],
            grants: vec![],
            replication: vec![],
            last_event: t0,
            next_arbitration: t0,
            quiet_checks: 0,
        }
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        let (x, y) = (&self.members[a], &self.members[b]);
        x.up && y.up && x.component == y.component
    }

    fn has_quorum(&self, a: usize) -> bool {
        (0..self.members.len())
            .filter(|b| self.connected(a, *b))
            .count()
            * 2
            > self.members.len()
    }

    fn delay(&mut self) -> Duration {
        Duration::from_millis(self.rng.gen_range(5..=40))
    }

    fn chaos(&mut self) {
        let n = self.members.len();
        let roll: f64 = self.rng.gen();
        let who = self.rng.gen_range(0..n);
        let now = self.now;
        if roll < 0.0004 && self.members[who].up {
            // SIGKILL: everything in memory is gone, leadership too.
            self.members[who].up = false;
            if self.leader.as_ref().is_some_and(|(l, _)| *l == who) {
                self.leader = None;
            }
            self.last_event = now;
        } else if roll < 0.0016 && !self.members[who].up {
            let m = &mut self.members[who];
            m.up = true;
            m.holder = Holder::new(self.timers);
            m.applied = RoleTable::default();
            m.up_since = now;
            self.last_event = now;
        } else if roll < 0.0020 {
            for i in 0..n {
                let c = self.rng.gen_range(0..2);
                self.members[i].component = c;
            }
            self.last_event = now;
        } else if roll < 0.0028 {
            for m in &mut self.members {
                m.component = 0;
            }
            self.last_event = now;
        }
    }

    fn elect(&mut self) {
        let leading = self
            .leader
            .as_ref()
            .is_some_and(|(l, _)| self.has_quorum(*l));
        if leading {
            self.leaderless_since = None;
            return;
        }
        let since = *self.leaderless_since.get_or_insert(self.now);
        // An election takes a moment; the deposed leader grants and
        // commits nothing meanwhile (it has no quorum).
        if self.now.duration_since(since) < Duration::from_millis(300) {
            return;
        }
        if let Some(l) = (0..self.members.len()).find(|i| self.has_quorum(*i)) {
            self.leader = Some((l, Granter::new(self.timers, self.now)));
            self.leaderless_since = None;
            // The new leader's log holds every committed entry.
            self.members[l].applied = self.committed.clone();
        }
    }

    fn leases(&mut self) {
        let now = self.now;
        // Members ask.
        for i in 0..self.members.len() {
            if !self.members[i].up || !self.members[i].holder.due(now) {
                continue;
            }
            let seq = self.members[i].holder.request(now);
            if let Some((l, _)) = &self.leader {
                let l = *l;
                if self.connected(i, l) {
                    let due = now + self.delay();
                    self.requests.push((due, i, seq, 0, l));
                }
            }
        }
        // Requests reach the leader, which confirms with a quorum, then
        // grants.
        let (due, later): (Vec<_>, Vec<_>) = self.requests.drain(..).partition(|r| r.0 <= now);
        self.requests = later;
        for (_, from, seq, phase, to) in due {
            let Some((l, _)) = &self.leader else { continue };
            let l = *l;
            if l != to || !self.connected(from, l) || !self.has_quorum(l) {
                continue;
            }
            if phase == 0 {
                let d = self.delay();
                self.requests.push((now + d, from, seq, 1, l));
            } else {
                let id = self.members[from].id.clone();
                if let Some((_, g)) = &mut self.leader {
                    g.grant(&id, now);
                }
                let d = self.delay();
                self.grants
                    .push((now + d, from, seq, self.committed.last_epoch));
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = self.grants.drain(..).partition(|g| g.0 <= now);
        self.grants = later;
        for (_, to, seq, epoch) in due {
            if self.members[to].up {
                self.members[to].holder.granted(seq, epoch);
            }
        }
    }

    fn arbitrate(&mut self) {
        let now = self.now;
        let Some((l, granter)) = &self.leader else {
            return;
        };
        let l = *l;
        if now < self.next_arbitration || !self.has_quorum(l) {
            return;
        }
        self.next_arbitration = now + Duration::from_millis(100);
        let mut facts = BTreeMap::new();
        for i in 0..self.members.len() {
            let connected = self.connected(i, l);
            let m = &mut self.members[i];
            if connected {
                m.lost_since = None;
            } else if m.lost_since.is_none() {
                m.lost_since = Some(now);
            }
            let lost = m.lost_since.map(|s| now.duration_since(s));
            let liveness = match lost {
                None => Liveness::Alive,
                Some(d) if d < Duration::from_secs(3) => Liveness::Suspect,
                Some(_) => Liveness::Failed,
            };
            facts.insert(
                m.id.clone(),
                MemberFacts {
                    liveness,
                    eligible_for: now.duration_since(m.up_since),
                    renewing: granter.renewing(&m.id, now),
                    lease_may_hold: granter.may_hold(&m.id, now),
                    ..MemberFacts::up(Duration::ZERO)
                },
            );
        }
        let decisions = decide(&Inputs {
            config: &self.config,
            facts: &facts,
            current: &self.committed.sets,
            now_ms: now.duration_since(self.t0).as_millis() as u64,
            settled: now.duration_since(self.t0) > Duration::from_secs(2),
        });
        let proposals: Vec<Proposal> = decisions
            .into_iter()
            .filter_map(|(set, d)| match d {
                Decision::Assign { roles, why } => Some(Proposal {
                    expect: self.committed.sets.get(&set).map_or(0, |a| a.epoch),
                    set,
                    roles,
                    since_ms: 0,
                    why,
                }),
                _ => None,
            })
            .collect();
        if !proposals.is_empty() {
            self.committed
                .assign(&self.config, &proposals)
                .expect("the leader's own proposal commits");
            self.members[l].applied = self.committed.clone();
        }
    }

    fn replicate(&mut self) {
        let now = self.now;
        if let Some((l, _)) = &self.leader {
            let l = *l;
            if self.has_quorum(l) && self.rng.gen_bool(0.2) {
                for i in 0..self.members.len() {
                    if i != l && self.connected(i, l) {
                        let d = self.delay();
                        self.replication.push((now + d, i, self.committed.clone()));
                    }
                }
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = self.replication.drain(..).partition(|r| r.0 <= now);
        self.replication = later;
        for (_, to, table) in due {
            let m = &mut self.members[to];
            if m.up && table.last_epoch >= m.applied.last_epoch {
                m.applied = table;
            }
        }
    }

    fn dump(&self) -> String {
        let mut s = format!(
            "leader {:?}\ncommitted {:?}\n",
            self.leader.as_ref().map(|l| l.0),
            self.committed
        );
        for m in &self.members {
            s += &format!(
                "{} up {} comp {} lease {:?} applied {:?}\n",
                m.id,
                m.up,
                m.component,
                m.holder.state(self.now),
                m.applied.sets.get(DEFAULT_SET).map(|a| (a.epoch, &a.roles))
            );
        }
        s
    }

    /// The members serving the device Active/Optimized now.
    fn optimized(&self) -> Vec<MemberId> {
        self.members
            .iter()
            .filter(|m| m.up)
            .filter(|m| {
                let a = m.applied.sets.get(DEFAULT_SET);
                let table = device_table(&self.config, &self.device, a);
                let mine = table
                    .groups
                    .iter()
                    .find(|g| g.member == m.id)
                    .map_or(Access::Unavailable, |g| g.state);
                let lease = m.holder.state(self.now);
                own_state(mine, self.device.policy, lease, m.applied.last_epoch)
                    == Access::Optimized
            })
            .map(|m| m.id.clone())
            .collect()
    }

    fn step(&mut self, chaos: bool) {
        self.now += TICK;
        if chaos {
            self.chaos();
        }
        self.elect();
        self.leases();
        self.arbitrate();
        self.replicate();
        let ao = self.optimized();
        assert!(
            ao.len() <= 1,
            "two writers at {:?}: {ao:?}",
            self.now.duration_since(self.t0)
        );
        // A quiet spell with a quorum connected: exactly one serves.
        let quorum = (0..self.members.len()).any(|i| self.has_quorum(i));
        if quorum && self.now.duration_since(self.last_event) > Duration::from_secs(8) {
            assert_eq!(
                ao.len(),
                1,
                "no Primary {:?} after a quiet spell\n{}",
                self.now.duration_since(self.t0),
                self.dump()
            );
            self.quiet_checks += 1;
        }
    }
}

#[test]
fn never_two_writers_and_one_primary_once_quiet() {
    let mut quiet = 0;
    for seed in 0..40 {
        let mut sim = Sim::new(seed);
        // Five simulated minutes of kills, restarts and partitions.
        for _ in 0..30_000 {
            sim.step(true);
        }
        // Then everyone back, connected: one Primary within seconds.
        for i in 0..sim.members.len() {
            if !sim.members[i].up {
                sim.members[i].up = true;
                sim.members[i].holder = Holder::new(sim.timers);
                sim.members[i].applied = RoleTable::default();
                sim.members[i].up_since = sim.now;
            }
            sim.members[i].component = 0;
        }
        sim.last_event = sim.now;
        for _ in 0..1_000 {
            sim.step(false);
        }
        assert_eq!(sim.optimized().len(), 1, "seed {seed}");
        quiet += sim.quiet_checks;
    }
    // The quiet-spell check ran, often.
    assert!(quiet > 40_000, "{quiet}");
}
