//! What the management API needs from the cluster, as a trait: the
//! Raft-backed configuration service implements it, and so do test doubles.
//! The API never sees openraft; the Raft node never sees HTTP.
//!
//! ```text
//!  HTTP request ─> api ─> ClusterService::write ─> Raft (forwarded to the leader) ─> Response
//!                     └─> ClusterService::config / raft / members (local replica, no round trip)
//! ```

use std::future::Future;
use std::pin::Pin;

use crate::config::{ClusterConfig, Command, ConfigError, Response, RoleTable};
use crate::membership::MemberStatus;
use uuid::Uuid;

/// A boxed future, for a trait usable as `dyn ClusterService`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Raft's view from this member, for `/metrics` and `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftStatus {
    /// This member's Raft node id.
    pub node_id: u64,
    /// Current term.
    pub term: u64,
    /// The leader this member knows of.
    pub leader: Option<u64>,
    /// Highest log index known committed.
    pub commit_index: Option<u64>,
    /// Highest log index applied to this replica.
    pub applied_index: Option<u64>,
    /// Voting members.
    pub voters: Vec<u64>,
    /// Non-voting members.
    pub learners: Vec<u64>,
}

/// Why a write did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The configuration refused the command (bad name, unknown device...).
    #[error(transparent)]
    Rejected(#[from] ConfigError),
    /// No leader is known right now (election in progress, no quorum).
    #[error("no Raft leader right now (election in progress or no quorum); retry")]
    NoLeader,
    /// The leader could not be reached to forward the write.
    #[error("cannot reach the Raft leader: {0}")]
    Unavailable(String),
    /// Anything else (storage failure...).
    #[error("internal error: {0}")]
    Internal(String),
}

/// The cluster as one member serves it.
pub trait ClusterService: Send + Sync + 'static {
    /// Applies `cmd` through Raft, forwarded to the leader when this member
    /// is not it; returns once it is committed and applied (linearizable).
    fn write(&self, cmd: Command) -> BoxFuture<'_, Result<Response, ServiceError>>;
    /// The configuration as this member's replica has applied it.
    fn config(&self) -> ClusterConfig;
    /// The committed role assignments as this member's replica has applied
    /// them.
    fn roles(&self) -> RoleTable;
    /// Raft's state from here.
    fn raft(&self) -> RaftStatus;
    /// The other members as the failure detector sees them (this member not
    /// included).
    fn members(&self) -> Vec<MemberStatus>;
    /// The uuid of device `name` created under idempotency key `key`
    /// without a uuid of its own: the same on every member of this cluster,
    /// another on any other cluster (see
    /// [`keyed_device_uuid`](crate::config::once::keyed_device_uuid)).
    fn keyed_device_uuid(&self, key: &str, name: &str) -> Uuid;
}
