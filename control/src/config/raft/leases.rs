//! The leader's side of leases ([`crate::lease`]) on this Raft node: a
//! request is granted only after the leader has confirmed, with a quorum,
//! that it still leads (`Raft::ensure_linearizable`); the grant is noted
//! in a [`Granter`] that starts afresh with every term this node leads, so
//! a new leader outwaits whatever its predecessors granted.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use openraft::error::{CheckIsLeaderError, RaftError as OpenRaftError};
use openraft::Raft;

use super::execute::Outcome;
use crate::config::store::{NodeId, TypeConfig};
use crate::config::ConfigReader;
use crate::lease::{Granter, LeaseTimers};
use crate::MemberId;

/// This node's record of the leases it granted while leading.
#[derive(Debug)]
pub(super) struct Leases {
    timers: LeaseTimers,
    reader: ConfigReader,
    /// The term the granter belongs to, and the granter.
    book: Mutex<Option<(u64, Granter)>>,
}

impl Leases {
    pub(super) fn new(timers: LeaseTimers, reader: ConfigReader) -> Self {
        Leases {
            timers,
            reader,
            book: Mutex::new(None),
        }
    }

    pub(super) fn timers(&self) -> LeaseTimers {
        self.timers
    }

    /// Runs `f` on the granter of `term`, a new one (started `now`) if the
    /// term moved.
    pub(super) fn with<R>(&self, term: u64, now: Instant, f: impl FnOnce(&mut Granter) -> R) -> R {
        let mut book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
        if book.as_ref().is_none_or(|(t, _)| *t != term) {
            *book = Some((term, Granter::new(self.timers, now)));
        }
        match book.as_mut() {
            Some((_, g)) => f(g),
            None => unreachable!("set above"),
        }
    }

    /// Grants `member` a lease once this node has confirmed its leadership
    /// with a quorum: the last epoch committed, or why not.
    pub(super) async fn grant(&self, raft: &Raft<TypeConfig>, member: &str) -> Outcome {
        match raft.ensure_linearizable().await {
            Ok(_) => {
                let term = raft.metrics().borrow().current_term;
                let now = Instant::now();
                self.with(term, now, |g| g.grant(&MemberId(member.to_owned()), now));
                Outcome::Leased {
                    epoch: self.reader.last_epoch(),
                }
            }
            Err(OpenRaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Outcome::NotLeader {
                    leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
                }
            }
            Err(OpenRaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                Outcome::Refused(format!("no quorum to grant a lease: {e}"))
            }
            Err(OpenRaftError::Fatal(e)) => Outcome::Failed(e.to_string()),
        }
    }
}

/// Whether `id` leads in `term` by this node's metrics.
pub(super) fn leads(raft: &Raft<TypeConfig>, id: NodeId) -> Option<u64> {
    let m = raft.metrics();
    let m = m.borrow();
    (m.current_leader == Some(id)).then_some(m.current_term)
}
