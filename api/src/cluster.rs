//! The cluster as one member sees it: `GET /v1/status` and
//! `GET /v1/members`.

use serde::{Deserialize, Serialize};

/// Raft's state as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftView {
    /// This member's node id.
    pub node_id: u64,
    /// Current term.
    pub term: u64,
    /// The leader's node id, if known.
    pub leader: Option<u64>,
    /// The leader's member id, if known and configured.
    pub leader_member: Option<String>,
    /// Highest committed log index.
    pub commit_index: Option<u64>,
    /// Highest applied log index.
    pub applied_index: Option<u64>,
    /// Voting node ids.
    pub voters: Vec<u64>,
    /// Non-voting node ids.
    pub learners: Vec<u64>,
}

/// Peers by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberCounts {
    /// Members in the configuration (this one included).
    pub configured: usize,
    /// Peers heard recently.
    pub alive: usize,
    /// Peers silent on every link.
    pub suspect: usize,
    /// Peers silent past the grace period.
    pub failed: usize,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    /// The member answering, if it is in the configuration.
    pub member: Option<String>,
    /// Raft from here.
    pub raft: RaftView,
    /// Members by state.
    pub members: MemberCounts,
    /// How many devices.
    pub devices: usize,
    /// How many targets.
    pub targets: usize,
}

/// One member as the API shows it: its configuration merged with what the
/// failure detector sees of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Its id.
    pub id: String,
    /// Its Raft node id, if configured.
    pub node_id: Option<u64>,
    /// Its management API address, if configured.
    pub api: Option<String>,
    /// Whether it is a witness.
    pub witness: bool,
    /// Whether it is the member answering.
    pub local: bool,
    /// `alive`, `suspect`, `failed`, or `unknown` for a configured member
    /// the failure detector does not watch (yet).
    pub state: String,
    /// Milliseconds in that state, when known.
    pub since_ms: Option<u64>,
    /// Its incarnation, once heard.
    pub incarnation: Option<u64>,
    /// Its links as seen from here.
    pub links: Vec<LinkView>,
    /// Drained by an operator: it takes no roles.
    #[serde(default)]
    pub drained: bool,
    /// Its role and epoch per Failover Set, as its heartbeats announce them
    /// (what it applies; empty for the answering member and for members
    /// not heard lately).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub announced: Vec<AnnouncedRole>,
    /// Normal iSCSI sessions logged in to it, as its heartbeats (or, for
    /// the answering member, its own data path) tell; null when unknown.
    #[serde(default)]
    pub sessions: Option<u64>,
    /// Whether it serves every device (false: some device's backing is out
    /// of its reach, and it takes no new role); null when unknown.
    #[serde(default)]
    pub healthy: Option<bool>,
}

/// A member's role in one set, as its heartbeats announce it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnouncedRole {
    /// The set.
    pub set: String,
    /// `primary`, `secondary`, `alternate`, `witness` or `none`.
    pub role: String,
    /// The epoch of the assignment it applies.
    pub epoch: u64,
}

/// One link of a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkView {
    /// The network's name.
    pub link: String,
    /// `up`, `down`, `flapping`, or `unknown` for the answering member's
    /// own link with no peer to hear it.
    pub state: String,
    /// Milliseconds in that state.
    pub since_ms: u64,
    /// Milliseconds since the last heartbeat on it; `null` if never heard.
    pub last_heard_ms: Option<u64>,
}

/// `GET /v1/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberList {
    /// By id.
    pub members: Vec<MemberView>,
}
