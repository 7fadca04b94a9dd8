//! Raft nodes in one process on loopback TCP, stores in a temporary
//! directory: election, forwarded writes, failover, catch-up and restart.
//! Every wait is a poll with a deadline; no timing is asserted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::*;
use crate::config::{ClusterConfig, ConfigError};

/// Generous: elections take 1-2 s, and the machine may be busy.
const PATIENCE: Duration = Duration::from_secs(30);

fn settings() -> RaftSettings {
    RaftSettings {
        worker_threads: 1,
        ..RaftSettings::default()
    }
}

/// The cluster key of the test clusters.
fn key() -> ClusterKey {
    ClusterKey::new(b"raft-test-cluster-key").expect("key")
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn create_target(n: u32) -> Command {
    Command::CreateTarget {
        iqn: format!("iqn.2024-01.org.example:t{n}"),
        alias: None,
    }
}

fn has_target(config: &ClusterConfig, n: u32) -> bool {
    config
        .targets
        .contains_key(&format!("iqn.2024-01.org.example:t{n}"))
}

fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Writes through `node`, retrying while the cluster has no reachable
/// leader (failover in progress).
fn write_eventually(node: &ConfigService, cmd: Command) -> Result<Response, ServiceError> {
    wait_until("a write to be accepted", || {
        match node.write_blocking(cmd.clone()) {
            Err(ServiceError::NoLeader | ServiceError::Unavailable(_)) => None,
            other => Some(other),
        }
    })
}

struct Cluster {
    dir: TempDir,
    addrs: BTreeMap<u64, SocketAddr>,
    nodes: BTreeMap<u64, ConfigService>,
}

impl Cluster {
    fn path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("m{id}.redb"))
    }

    fn start(&mut self, id: u64, addr: SocketAddr) {
        let store = ConfigStore::open(self.path(id)).expect("open store");
        let node = ConfigService::start(id, addr, store, key(), settings()).expect("start");
        self.addrs.insert(id, node.raft_addr());
        self.nodes.insert(id, node);
    }

    fn new(ids: &[u64]) -> Cluster {
        let mut cluster = Cluster {
            dir: TempDir::new().expect("tempdir"),
            addrs: BTreeMap::new(),
            nodes: BTreeMap::new(),
        };
        for &id in ids {
            cluster.start(id, loopback());
        }
        cluster
    }

    fn restart(&mut self, id: u64) {
        let addr = self.addrs[&id];
        self.start(id, addr);
    }

    fn stop(&mut self, id: u64) {
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown().expect("clean shutdown");
        }
    }

    fn initialize_all(&self) {
        for node in self.nodes.values() {
            node.initialize(self.addrs.clone()).expect("initialize");
        }
    }

    /// The leader once every running node agrees on it.
    fn leader(&self) -> u64 {
        wait_until("the running nodes to agree on a leader", || {
            let leaders: Vec<Option<u64>> = self.nodes.values().map(|n| n.raft().leader).collect();
            let first = leaders[0]?;
            (self.nodes.contains_key(&first) && leaders.iter().all(|&l| l == Some(first)))
                .then_some(first)
        })
    }

    fn follower(&self, leader: u64) -> &ConfigService {
        self.nodes
            .values()
            .find(|n| n.node_id() != leader)
            .expect("a follower")
    }

    fn wait_all_have(&self, targets: &[u32]) {
        wait_until("every replica to apply the writes", || {
            self.nodes
                .values()
                .all(|n| {
                    let config = n.config();
                    targets.iter().all(|&t| has_target(&config, t))
                })
                .then_some(())
        });
    }
}

#[test]
fn three_nodes_elect_forward_fail_over_catch_up_and_restart() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    cluster.initialize_all();
    // A second initialize of a formed cluster is harmless.
    cluster.initialize_all();

    let leader = cluster.leader();
    let status = cluster.nodes[&leader].raft();
    assert_eq!(status.leader, Some(leader));
    assert_eq!(status.voters, vec![1, 2, 3]);
    assert!(status.learners.is_empty());

    // A write through a follower is forwarded and applied everywhere.
    let follower = cluster.follower(leader);
    assert_eq!(
        follower.write_blocking(create_target(1)),
        Ok(Response::Changed)
    );
    cluster.wait_all_have(&[1]);
    // The leader's verdict on a bad command comes back through the follower.
    assert!(matches!(
        follower.write_blocking(create_target(1)),
        Err(ServiceError::Rejected(ConfigError::AlreadyExists { .. }))
    ));
    // The async write works from another executor.
    let other = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    assert_eq!(
        other.block_on(follower.write(create_target(2))),
        Ok(Response::Changed)
    );
    cluster.wait_all_have(&[1, 2]);

    // The leader stops: the other two elect a new one and take writes.
    cluster.stop(leader);
    let new_leader = cluster.leader();
    assert_ne!(new_leader, leader);
    let follower = cluster.follower(new_leader);
    assert_eq!(
        write_eventually(follower, create_target(3)),
        Ok(Response::Changed)
    );
    cluster.wait_all_have(&[1, 2, 3]);

    // The old leader comes back on its store and catches up.
    cluster.restart(leader);
    cluster.wait_all_have(&[1, 2, 3]);
    assert_eq!(
        write_eventually(&cluster.nodes[&leader], create_target(4)),
        Ok(Response::Changed)
    );
    cluster.wait_all_have(&[1, 2, 3, 4]);

    // Everyone stops and comes back: the configuration is intact.
    let before = cluster.nodes[&leader].config();
    for id in [1, 2, 3] {
        cluster.stop(id);
    }
    for id in [1, 2, 3] {
        cluster.restart(id);
    }
    for node in cluster.nodes.values() {
        assert_eq!(node.config(), before);
    }
    cluster.initialize_all();
    let leader = cluster.leader();
    assert_eq!(
        write_eventually(cluster.follower(leader), create_target(5)),
        Ok(Response::Changed)
    );
    cluster.wait_all_have(&[1, 2, 3, 4, 5]);
    for id in [1, 2, 3] {
        cluster.stop(id);
    }
}

#[test]
fn a_learner_joins_and_becomes_a_voter() {
    let mut cluster = Cluster::new(&[1]);
    cluster.initialize_all();
    let leader = cluster.leader();
    assert_eq!(leader, 1);
    assert_eq!(
        cluster.nodes[&1].write_blocking(create_target(1)),
        Ok(Response::Changed)
    );

    cluster.start(2, loopback());
    cluster.start(3, loopback());
    let node1 = &cluster.nodes[&1];
    node1.add_learner(2, cluster.addrs[&2]).expect("learner 2");
    node1.add_learner(3, cluster.addrs[&3]).expect("learner 3");
    assert_eq!(node1.raft().learners, vec![2, 3]);
    cluster.wait_all_have(&[1]);
    // From a learner, which forwards to the leader.
    cluster.nodes[&2]
        .change_membership([1, 2, 3].into())
        .expect("change membership");
    wait_until("all three to be voters everywhere", || {
        cluster
            .nodes
            .values()
            .all(|n| n.raft().voters == vec![1, 2, 3] && n.raft().learners.is_empty())
            .then_some(())
    });
    assert_eq!(
        cluster.nodes[&3].write_blocking(create_target(2)),
        Ok(Response::Changed)
    );
    cluster.wait_all_have(&[1, 2]);
    for id in [1, 2, 3] {
        cluster.stop(id);
    }
}

#[test]
fn a_new_node_joins_as_a_learner_through_any_member() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    cluster.initialize_all();
    let leader = cluster.leader();
    assert_eq!(
        write_eventually(&cluster.nodes[&leader], create_target(1)),
        Ok(Response::Changed)
    );
    // Asked through a follower (and a dead address first): the follower
    // passes it to the leader.
    let follower = *cluster
        .addrs
        .keys()
        .find(|&&id| id != leader)
        .expect("a follower");
    cluster.start(4, loopback());
    let node4 = &cluster.nodes[&4];
    assert!(!node4.is_member());
    let dead = SocketAddr::from(([127, 0, 0, 1], 1));
    node4
        .join(&[dead, cluster.addrs[&follower]])
        .expect("join as a learner");
    assert!(node4.is_member());
    wait_until("node 4 to be a learner everywhere", || {
        cluster
            .nodes
            .values()
            .all(|n| n.raft().learners == vec![4] && n.raft().voters == vec![1, 2, 3])
            .then_some(())
    });
    cluster.wait_all_have(&[1]);
    // A learner's writes go to the leader; it applies what others write.
    assert_eq!(
        cluster.nodes[&4].write_blocking(create_target(2)),
        Ok(Response::Changed)
    );
    cluster.wait_all_have(&[1, 2]);
    // Every replica knows what is committed (the log store saves it), at
    // least as far as it has applied.
    wait_until("the commit index everywhere", || {
        cluster
            .nodes
            .values()
            .all(|n| {
                let r = n.raft();
                r.commit_index.is_some() && r.commit_index >= r.applied_index
            })
            .then_some(())
    });
    // Joining again is a no-op; with no reachable peer it says so.
    cluster.nodes[&4].join(&[dead]).expect("a member already");
    cluster.start(5, loopback());
    let err = cluster.nodes[&5]
        .join(&[dead])
        .expect_err("no peer answers");
    assert!(matches!(err, ServiceError::Unavailable(_)), "{err:?}");
    for id in [1, 2, 3, 4, 5] {
        cluster.stop(id);
    }
}

#[test]
fn a_node_with_another_cluster_key_is_refused() {
    let mut cluster = Cluster::new(&[1]);
    cluster.initialize_all();
    cluster.leader();
    let store = ConfigStore::open(cluster.path(9)).expect("open store");
    let other = ClusterKey::new(b"not-the-cluster-key").expect("key");
    let intruder = ConfigService::start(9, loopback(), store, other, settings()).expect("start");
    let err = intruder
        .join(&[cluster.addrs[&1]])
        .expect_err("a wrong key cannot join");
    assert!(
        matches!(&err, ServiceError::Unavailable(why) if why.contains("authentication failed")),
        "{err:?}"
    );
    assert!(!intruder.is_member());
    assert_eq!(intruder.config(), ClusterConfig::default());
    intruder.shutdown().expect("clean shutdown");
    cluster.stop(1);
}

#[test]
fn a_new_member_far_behind_gets_a_snapshot() {
    let mut cluster = Cluster::new(&[]);
    let store = ConfigStore::open(cluster.path(1)).expect("open store");
    let eager = RaftSettings {
        snapshot_every: 3,
        logs_kept_after_snapshot: 0,
        ..settings()
    };
    let node = ConfigService::start(1, loopback(), store, key(), eager).expect("start");
    cluster.addrs.insert(1, node.raft_addr());
    cluster.nodes.insert(1, node);
    cluster.initialize_all();
    cluster.leader();
    let node1 = &cluster.nodes[&1];
    for n in 1..=10 {
        assert_eq!(
            node1.write_blocking(create_target(n)),
            Ok(Response::Changed)
        );
    }
    wait_until("the log to be purged behind a snapshot", || {
        let metrics = node1.shared.raft.metrics();
        let m = metrics.borrow();
        (m.snapshot.is_some() && m.purged.is_some()).then_some(())
    });

    cluster.start(2, loopback());
    let node1 = &cluster.nodes[&1];
    node1.add_learner(2, cluster.addrs[&2]).expect("learner 2");
    cluster.wait_all_have(&(1..=10).collect::<Vec<_>>());
    let node2 = &cluster.nodes[&2];
    assert!(node2.shared.raft.metrics().borrow().snapshot.is_some());
    assert_eq!(node2.config(), cluster.nodes[&1].config());
    for id in [1, 2] {
        cluster.stop(id);
    }
}

#[test]
fn an_uninitialized_node_has_no_leader_and_lists_its_members_source() {
    let store = ConfigStore::in_memory().expect("store");
    let settings = RaftSettings {
        leader_wait: Duration::from_millis(50),
        ..settings()
    };
    let node = ConfigService::start(7, loopback(), store, key(), settings)
        .expect("start")
        .with_members(Arc::new(Vec::new));
    assert_eq!(
        node.write_blocking(create_target(1)),
        Err(ServiceError::NoLeader)
    );
    let status = node.raft();
    assert_eq!(status.node_id, 7);
    assert_eq!(status.leader, None);
    assert!(status.voters.is_empty());
    assert!(node.members().is_empty());
    assert_eq!(node.config(), ClusterConfig::default());
    let err = node
        .initialize(BTreeMap::from([(8, loopback())]))
        .expect_err("7 is not among the voters");
    assert!(matches!(err, RaftError::Initialize(_)));
    // Dropped rather than shut down: the runtime still stops.
    drop(node);
}

#[test]
fn settings_are_checked() {
    let bad = RaftSettings {
        election_timeout_min: Duration::from_millis(2000),
        election_timeout_max: Duration::from_millis(1000),
        ..settings()
    };
    let err = ConfigService::start(
        1,
        loopback(),
        ConfigStore::in_memory().expect("store"),
        key(),
        bad,
    )
    .expect_err("min above max");
    assert!(matches!(err, RaftError::Settings(_)));
}

#[test]
fn leases_are_granted_by_the_leader_with_a_quorum_and_outwaited_by_a_new_one() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    cluster.initialize_all();
    let leader = cluster.leader();
    let term = cluster.nodes[&leader].leading().expect("the leader leads");
    let follower = cluster.follower(leader).node_id();
    let m = |id: u64| MemberId(format!("m{id}"));
    // Through a follower (forwarded) and on the leader itself.
    let renew = |node: u64| {
        wait_until("a lease", || {
            cluster.nodes[&node]
                .renew_lease(&m(node), Duration::from_secs(2))
                .ok()
        })
    };
    assert_eq!(renew(follower), 0);
    assert_eq!(renew(leader), 0);
    let now = std::time::Instant::now();
    let l = &cluster.nodes[&leader];
    assert_eq!(l.lease_facts(term, &m(follower), now), (true, true));
    let timers = l.lease_timers();
    // Past the lease and the drift without renewing: it may not hold it.
    let later = now + timers.duration + timers.drift;
    assert_eq!(l.lease_facts(term, &m(follower), later), (false, false));
    // The epoch granted is the last committed.
    write_eventually(
        l,
        Command::AssignRoles {
            proposals: vec![crate::config::Proposal {
                set: "default".into(),
                expect: 0,
                roles: Default::default(),
                since_ms: 0,
                why: "test".into(),
            }],
        },
    )
    .expect("assign");
    assert_eq!(renew(follower), 1);
    // The leader goes: the new one assumes every member may hold a lease
    // for a lease and the drift from its own first look.
    cluster.stop(leader);
    let new_leader = cluster.leader();
    let new_term = wait_until("the new leader to lead", || {
        cluster.nodes[&new_leader].leading()
    });
    assert!(new_term > term);
    let t = std::time::Instant::now();
    let n = &cluster.nodes[&new_leader];
    assert_eq!(n.lease_facts(new_term, &m(leader), t), (false, true));
    assert!(
        !n.lease_facts(new_term, &m(leader), t + timers.duration + timers.drift)
            .1
    );
    for id in [1, 2, 3] {
        cluster.stop(id);
    }
}

/// A member reached on two networks, the first of which is silent (a
/// listener that never accepts stands for a network whose packets are
/// lost, the second for one that works): Raft forms, replicates and
/// forwards through the second; and a node given two addresses serves on
/// both.
#[test]
fn a_member_with_a_silent_network_is_reached_on_its_other_one() {
    // Its backlog holds the connection, but nothing ever answers on it.
    let silent = std::net::TcpListener::bind(loopback()).expect("silent listener");
    let silent_addr = silent.local_addr().expect("address");
    let dir = TempDir::new().expect("tempdir");
    let start = |id: u64, addr: RaftAddress| {
        let store = ConfigStore::open(dir.path().join(format!("m{id}.redb"))).expect("store");
        ConfigService::start(id, addr, store, key(), settings()).expect("start")
    };
    let one = start(1, RaftAddress::from(loopback()));
    let two = start(
        2,
        RaftAddress::new(vec![loopback(), loopback()]).expect("two addresses"),
    );
    let served = two.raft_address().addrs().to_vec();
    assert_eq!(served.len(), 2, "{served:?}");
    assert_ne!(served[0], served[1]);
    // Node 2 as the others see it: the silent address first.
    let voters = BTreeMap::from([
        (1, RaftAddress::from(one.raft_addr())),
        (
            2,
            RaftAddress::new(vec![silent_addr, served[1]]).expect("two addresses"),
        ),
    ]);
    for n in [&one, &two] {
        n.initialize(voters.clone()).expect("initialize");
    }
    // Both vote and replicate: a write through either commits on both.
    write_eventually(&one, create_target(1)).expect("write through 1");
    write_eventually(&two, create_target(2)).expect("write through 2");
    wait_until("both replicas to apply both writes", || {
        [&one, &two]
            .iter()
            .all(|n| has_target(&n.config(), 1) && has_target(&n.config(), 2))
            .then_some(())
    });
    // Node 2 serves on its first address too.
    std::net::TcpStream::connect(served[0]).expect("connect to the first address");
    drop(silent);
}

#[test]
fn the_data_path_calls_another_member_over_the_authenticated_transport() {
    let mut cluster = Cluster::new(&[1, 2]);
    cluster.initialize_all();
    cluster.leader();
    // Node 2's data path answers; node 1 has none.
    cluster.nodes[&2].set_data_path_handler(Arc::new(|request: String| {
        Box::pin(async move {
            match request.strip_prefix("echo ") {
                Some(rest) => Ok(format!("node 2: {rest}")),
                None => Err(format!("unknown request {request:?}")),
            }
        })
    }));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let n1 = &cluster.nodes[&1];
    let ttl = Duration::from_secs(5);
    rt.block_on(async {
        // Twice: the second call reuses the kept connection.
        for i in 0..2 {
            assert_eq!(
                n1.call_member(2, format!("echo {i}"), ttl).await,
                Ok(format!("node 2: {i}"))
            );
        }
        assert!(matches!(
            n1.call_member(2, "other".into(), ttl).await,
            Err(ServiceError::Internal(e)) if e.contains("unknown request")
        ));
        assert!(matches!(
            cluster.nodes[&2].call_member(1, "echo x".into(), ttl).await,
            Err(ServiceError::Internal(e)) if e.contains("no data path")
        ));
        assert!(matches!(
            n1.call_member(9, "echo x".into(), ttl).await,
            Err(ServiceError::Unavailable(_))
        ));
    });
    for id in [1, 2] {
        cluster.stop(id);
    }
}

#[test]
fn a_quorum_is_confirmed_only_while_a_majority_answers() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    cluster.initialize_all();
    let leader = cluster.leader();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Through the leader and through a follower (forwarded).
    assert_eq!(rt.block_on(cluster.nodes[&leader].confirm_quorum()), Ok(()));
    assert_eq!(
        rt.block_on(cluster.follower(leader).confirm_quorum()),
        Ok(())
    );
    // The two others gone: the one left confirms nothing, and writes
    // nothing doing so.
    let left = leader;
    let before = cluster.nodes[&left].raft().commit_index;
    for id in [1, 2, 3].into_iter().filter(|&id| id != left) {
        cluster.stop(id);
    }
    assert!(rt.block_on(cluster.nodes[&left].confirm_quorum()).is_err());
    assert_eq!(cluster.nodes[&left].raft().commit_index, before);
    cluster.stop(left);
}
