//! Carrying out a write on this member's Raft: the same code serves a write
//! made here and one a follower forwarded, so both answer the same way.
//!
//! ```text
//!  Forwarded::Write(cmd)          ─> Raft::client_write      ┐
//!  Forwarded::AddLearner          ─> Raft::add_learner       ├─> Outcome
//!  Forwarded::ChangeMembership    ─> Raft::change_membership ┤
//!  Forwarded::Lease               ─> confirm leadership, grant┘
//! ```

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError as OpenRaftError};
use openraft::{BasicNode, Raft};
use serde::{Deserialize, Serialize};

use super::leases::Leases;
use crate::config::store::{NodeId, TypeConfig};
use crate::config::{Command, ConfigError, Response};

/// A write that has to be made on the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum Forwarded {
    /// A configuration command.
    Write(Command),
    /// Add a non-voting member and wait until it has caught up.
    AddLearner {
        /// Its node id.
        id: NodeId,
        /// Its Raft address.
        addr: String,
    },
    /// Replace the voters (every one already a member or learner).
    ChangeMembership(BTreeSet<NodeId>),
    /// A member renewing its lease (see `crate::lease`).
    Lease {
        /// The member.
        member: String,
    },
    /// Confirm that the leader still leads a quorum (heartbeats to a
    /// majority answered), writing nothing.
    Confirm,
}

/// How a [`Forwarded`] write ended on the member that tried it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) enum Outcome {
    /// Committed and applied.
    Applied(Response),
    /// Committed; the configuration refused the command.
    Rejected(ConfigError),
    /// That member is not the leader; the one it knows of, with its address.
    NotLeader {
        /// The leader's id and Raft address, when known.
        leader: Option<(NodeId, String)>,
    },
    /// A membership change was refused (a learner is unknown, another
    /// change is in progress...).
    Refused(String),
    /// Not committed within the write timeout; it may still be.
    TimedOut,
    /// The Raft node has stopped.
    Failed(String),
    /// A lease granted; the last epoch committed when it was.
    Leased {
        /// That epoch.
        epoch: u64,
    },
}

/// Makes `forwarded` on `raft`, which has to be the leader.
pub(super) async fn execute(
    raft: &Raft<TypeConfig>,
    leases: &Leases,
    forwarded: Forwarded,
    timeout: Duration,
) -> Outcome {
    if let Forwarded::Lease { member } = &forwarded {
        return match tokio::time::timeout(timeout, leases.grant(raft, member)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::TimedOut,
        };
    }
    if let Forwarded::Confirm = &forwarded {
        return match tokio::time::timeout(timeout, raft.get_read_log_id()).await {
            Err(_) => Outcome::TimedOut,
            Ok(Ok(_)) => Outcome::Applied(Response::Unchanged),
            Ok(Err(OpenRaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Outcome::NotLeader {
                    leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
                }
            }
            Ok(Err(OpenRaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => {
                Outcome::TimedOut
            }
            Ok(Err(OpenRaftError::Fatal(e))) => Outcome::Failed(e.to_string()),
        };
    }
    let call = async {
        match forwarded {
            Forwarded::Lease { .. } | Forwarded::Confirm => unreachable!("answered above"),
            Forwarded::Write(cmd) => raft.client_write(cmd).await.map(|r| r.data),
            Forwarded::AddLearner { id, addr } => raft
                .add_learner(id, BasicNode::new(addr), true)
                .await
                .map(|_| Ok(Response::Changed)),
            Forwarded::ChangeMembership(voters) => raft
                .change_membership(voters, false)
                .await
                .map(|_| Ok(Response::Changed)),
        }
    };
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Outcome::TimedOut,
        Ok(Ok(Ok(response))) => Outcome::Applied(response),
        Ok(Ok(Err(e))) => Outcome::Rejected(e),
        Ok(Err(OpenRaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            Outcome::NotLeader {
                leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
            }
        }
        Ok(Err(OpenRaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
            Outcome::Refused(e.to_string())
        }
        Ok(Err(OpenRaftError::Fatal(e))) => Outcome::Failed(e.to_string()),
    }
}
