//! Trellis control plane: the services every member runs (SPEC.md §3).
//!
//! Deciding code is sans-IO: state machines take events and a `now`, and
//! return what to send and what happened; drivers own the sockets and
//! clocks.
//!
//! ```text
//!  UDP on each link ──> wire (decode, HMAC) ──> discovery  (candidates ─ hello/ack per link ─> admitted)
//!                                          └──> membership (heartbeats ─> link up/down/flapping,
//!                                                                       member alive/suspect/failed)
//! ```
//!
//! - `config`: the replicated configuration — its data model, the commands
//!   that change it, openraft storage on redb, and the Raft node
//!   (`config::raft::ConfigService`: TCP transport, writes forwarded to the
//!   leader).
//! - `service`: the [`service::ClusterService`] trait the management API is
//!   written against; `api`: the HTTP/JSON management API (axum, bearer
//!   token, `/metrics`, `/health`).
//! - `watch`: changes pushed to trellisd's threads (the replica applied an
//!   entry, a member's state moved) instead of polled.
//!
//! Still to come: the failover services (`arbitration`, `failover`,
//! `boot`, `policy`).
#![forbid(unsafe_code)]

pub mod api;
pub mod arbitration;
pub mod config;
pub mod crosscheck;
pub mod discovery;
pub mod lease;
pub mod mdns;
pub mod membership;
pub mod node;
pub mod paths;
pub mod quarantine;
pub mod service;
#[cfg(test)]
mod sim;
pub mod watch;
pub mod wire;

use std::fmt;

/// A member of the cluster, by its configured name (`m1`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId(pub String);

/// The cluster a member belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterId(pub String);

/// One of the redundant networks, by name (`a`, `b`): link `a` of every
/// member is on the same network.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkName(pub String);

macro_rules! display_inner {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}
display_inner!(MemberId, ClusterId, LinkName);

/// The control protocol version: members talk when their majors match and
/// the peer's minor is one this member understands or newer features are
/// optional (see [`ProtocolVersion::compatible_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion {
    /// Incompatible changes.
    pub major: u16,
    /// Compatible additions.
    pub minor: u16,
}

impl ProtocolVersion {
    /// The version this build speaks.
    pub const CURRENT: ProtocolVersion = ProtocolVersion { major: 1, minor: 2 };

    /// Whether a member speaking `self` can share a cluster with one
    /// speaking `other`: same major version (minors only add optional
    /// fields, which both ignore when unknown).
    pub fn compatible_with(self, other: ProtocolVersion) -> bool {
        self.major == other.major
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}
