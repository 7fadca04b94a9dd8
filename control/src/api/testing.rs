//! A single-member, in-memory [`ClusterService`]: commands are applied to a
//! [`ClusterConfig`] under a mutex, with no Raft and no disk. For tests of
//! the API and its clients, and for demos.
//!
//! Its Raft status is that of a one-node cluster led by itself, whose
//! indexes count the commands applied; tests can replace the status, the
//! peers' states, make every write fail (to act out a lost quorum), or
//! apply writes and lose their answers (a leader that committed a write
//! its client timed out on).

use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::config::once::keyed_device_uuid;
use crate::config::{ClusterConfig, Command, ReplicatedState, Response};
use crate::membership::MemberStatus;
use crate::service::{BoxFuture, ClusterService, RaftStatus, ServiceError};

#[derive(Debug, Default)]
struct Inner {
    state: ReplicatedState,
    raft: RaftStatus,
    members: Vec<MemberStatus>,
    fail_writes: Option<ServiceError>,
    lost_answers: usize,
}

/// A configuration with data members `ids`, node ids 1, 2, ... in that
/// order, each with one link (`a`), its API and a portal on loopback.
pub fn with_data_members(ids: &[&str]) -> ClusterConfig {
    let mut config = ClusterConfig::default();
    for (i, id) in ids.iter().enumerate() {
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], 7401 + i as u16).into();
        let member = crate::config::Member {
            id: crate::MemberId((*id).into()),
            node_id: i as u64 + 1,
            links: [(crate::LinkName("a".into()), addr)].into(),
            api: addr,
            portals: vec![addr],
            witness: false,
        };
        if let Err(e) = config.apply(&Command::UpsertMember(member)) {
            panic!("member {id}: {e}");
        }
    }
    config
}

/// A [`ClusterService`] holding the configuration in memory.
#[derive(Debug)]
pub struct MemoryService {
    inner: Mutex<Inner>,
    /// Stands for the cluster key in keyed device uuids: each service is
    /// a cluster of its own.
    salt: uuid::Uuid,
}

impl Default for MemoryService {
    fn default() -> Self {
        Self::new(ClusterConfig::default())
    }
}

impl MemoryService {
    /// A service starting from `config`, as Raft node 1, leader of term 1.
    pub fn new(config: ClusterConfig) -> Self {
        let raft = RaftStatus {
            node_id: 1,
            term: 1,
            leader: Some(1),
            commit_index: Some(0),
            applied_index: Some(0),
            voters: vec![1],
            learners: Vec::new(),
        };
        Self {
            inner: Mutex::new(Inner {
                state: ReplicatedState {
                    config,
                    ..ReplicatedState::default()
                },
                raft,
                ..Inner::default()
            }),
            salt: uuid::Uuid::new_v4(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the Raft status reported (applied commands still advance
    /// its indexes).
    pub fn set_raft(&self, raft: RaftStatus) {
        self.lock().raft = raft;
    }

    /// Replaces the peers' states reported.
    pub fn set_members(&self, members: Vec<MemberStatus>) {
        self.lock().members = members;
    }

    /// Makes the next `n` writes apply but answer 503 as if their answer
    /// had not come back in time.
    pub fn lose_answers(&self, n: usize) {
        self.lock().lost_answers = n;
    }

    /// How many of the answers [`MemoryService::lose_answers`] asked to
    /// lose are still to be lost.
    pub fn lost_answers(&self) -> usize {
        self.lock().lost_answers
    }

    /// How many keyed writes the replicated state remembers.
    pub fn remembered_writes(&self) -> usize {
        self.lock().state.recent_writes.len()
    }

    /// Makes every write fail with `error` (`None` to accept them again).
    pub fn fail_writes(&self, error: Option<ServiceError>) {
        self.lock().fail_writes = error;
    }
}

impl ClusterService for MemoryService {
    fn write(&self, cmd: Command) -> BoxFuture<'_, Result<Response, ServiceError>> {
        let result = {
            let mut inner = self.lock();
            match inner.fail_writes.clone() {
                Some(e) => Err(e),
                None => {
                    let r = inner.state.apply(&cmd).result.map_err(ServiceError::from);
                    let next = inner.raft.commit_index.unwrap_or(0) + 1;
                    inner.raft.commit_index = Some(next);
                    inner.raft.applied_index = Some(next);
                    if inner.lost_answers > 0 {
                        inner.lost_answers -= 1;
                        Err(ServiceError::Unavailable(
                            "not committed in time; it may still apply".to_owned(),
                        ))
                    } else {
                        r
                    }
                }
            }
        };
        Box::pin(std::future::ready(result))
    }

    fn config(&self) -> ClusterConfig {
        self.lock().state.config.clone()
    }

    fn roles(&self) -> crate::config::RoleTable {
        self.lock().state.roles.clone()
    }

    fn raft(&self) -> RaftStatus {
        self.lock().raft.clone()
    }

    fn members(&self) -> Vec<MemberStatus> {
        self.lock().members.clone()
    }

    fn keyed_device_uuid(&self, key: &str, name: &str) -> uuid::Uuid {
        keyed_device_uuid(self.salt.as_bytes(), key, name)
    }
}
