//! The JSON bodies of the management API: requests in, views out. Views
//! are built from the configuration and never carry CHAP secrets.
//!
//! Request bodies refuse unknown fields, so that a misspelt field is an
//! error naming it rather than a silently ignored option.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ApiError;
use crate::config::{
    AclEntry, Backing, ChapAuth, ChapCredentials, ClusterConfig, Device, Response, Target,
};
use crate::membership::{LinkState, MemberState, MemberStatus};
use crate::service::RaftStatus;

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong, for programs (`code`) and people (`message`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable snake_case code (`not_found`, `no_leader`...).
    pub code: String,
    /// A sentence for people.
    pub message: String,
}

/// The answer to a write that returns no object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    /// Whether the configuration changed.
    pub result: Response,
}

/// `POST /v1/devices`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDevice {
    /// The device's name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// A path on shared storage (absolute, or relative to each member's
    /// storage directory), or `"memory"` (one copy per member, not shared:
    /// tests and demos); `NAME.img` in the storage directory when absent.
    #[serde(default)]
    pub backing: Option<String>,
    /// 512 (the default) or 4096.
    #[serde(default)]
    pub block_size: Option<u32>,
    /// Whether unwritten blocks take no space.
    #[serde(default)]
    pub thin: bool,
    /// Whether writes are refused.
    #[serde(default)]
    pub read_only: bool,
    /// Its identity; generated when absent.
    #[serde(default)]
    pub uuid: Option<Uuid>,
}

/// The block size of a device created without one.
pub const DEFAULT_BLOCK_SIZE: u32 = 512;

impl CreateDevice {
    /// The device to create (validated by the configuration when applied).
    /// Without a uuid in the request it gets `keyed` (derived from the
    /// request's idempotency key, so that a resent request proposes the
    /// very same device), or else a random one.
    pub fn into_device(self, keyed: Option<Uuid>) -> Result<Device, ApiError> {
        let backing = match self.backing.as_deref() {
            None => Backing::default_for(&self.name),
            Some("memory") => Backing::Memory,
            Some("") => {
                return Err(ApiError::InvalidField {
                    field: "backing",
                    reason: "is empty: give a path or \"memory\"".to_owned(),
                })
            }
            Some(path) => Backing::Path(PathBuf::from(path)),
        };
        Ok(Device {
            name: self.name,
            uuid: self.uuid.or(keyed).unwrap_or_else(Uuid::new_v4),
            size: self.size,
            backing,
            block_size: self.block_size.unwrap_or(DEFAULT_BLOCK_SIZE),
            thin: self.thin,
            read_only: self.read_only,
        })
    }
}

/// `POST /v1/devices/{name}/resize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResizeDevice {
    /// The new size in bytes.
    pub size: u64,
}

/// A device as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceView {
    /// Name.
    pub name: String,
    /// Identity.
    pub uuid: Uuid,
    /// Size in bytes.
    pub size: u64,
    /// The backing path, or `"memory"`.
    pub backing: String,
    /// Logical block size.
    pub block_size: u32,
    /// Thin provisioned.
    pub thin: bool,
    /// Writes refused.
    pub read_only: bool,
    /// Where it is mapped, as `(target, lun)` pairs.
    pub mapped: Vec<LunRef>,
}

/// A LUN of a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LunRef {
    /// The target's IQN.
    pub target: String,
    /// The LUN.
    pub lun: u16,
}

impl DeviceView {
    /// The view of `device` within `config`.
    pub fn new(device: &Device, config: &ClusterConfig) -> Self {
        let mapped = config
            .targets
            .values()
            .flat_map(|t| {
                t.luns
                    .iter()
                    .filter(|(_, d)| **d == device.name)
                    .map(|(lun, _)| LunRef {
                        target: t.iqn.clone(),
                        lun: *lun,
                    })
            })
            .collect();
        Self {
            name: device.name.clone(),
            uuid: device.uuid,
            size: device.size,
            backing: device.backing.to_string(),
            block_size: device.block_size,
            thin: device.thin,
            read_only: device.read_only,
            mapped,
        }
    }
}

/// `GET /v1/devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceList {
    /// By name.
    pub devices: Vec<DeviceView>,
}

/// `POST /v1/targets`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTarget {
    /// Its IQN.
    pub iqn: String,
    /// Its alias.
    #[serde(default)]
    pub alias: Option<String>,
}

/// A target as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetView {
    /// IQN.
    pub iqn: String,
    /// Alias.
    pub alias: Option<String>,
    /// Its LUNs, in order.
    pub luns: Vec<LunView>,
    /// How many initiators its ACL allows.
    pub initiators: usize,
}

/// One LUN of a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LunView {
    /// The LUN.
    pub lun: u16,
    /// The device it maps.
    pub device: String,
}

impl From<&Target> for TargetView {
    fn from(t: &Target) -> Self {
        Self {
            iqn: t.iqn.clone(),
            alias: t.alias.clone(),
            luns: t
                .luns
                .iter()
                .map(|(lun, device)| LunView {
                    lun: *lun,
                    device: device.clone(),
                })
                .collect(),
            initiators: t.acl.len(),
        }
    }
}

/// `GET /v1/targets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetList {
    /// By IQN.
    pub targets: Vec<TargetView>,
}

/// `POST /v1/targets/{iqn}/luns`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapLun {
    /// The device's name.
    pub device: String,
    /// The LUN.
    pub lun: u16,
}

/// `POST /v1/targets/{iqn}/acl`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowInitiator {
    /// The initiator's name.
    pub initiator: String,
    /// The CHAP user it must log in as (with `chap_secret`).
    #[serde(default)]
    pub chap_user: Option<String>,
    /// The CHAP secret (with `chap_user`).
    #[serde(default)]
    pub chap_secret: Option<String>,
    /// For mutual CHAP, the target's user name (with `mutual_chap_secret`).
    #[serde(default)]
    pub mutual_chap_user: Option<String>,
    /// For mutual CHAP, the target's secret.
    #[serde(default)]
    pub mutual_chap_secret: Option<String>,
    /// The LUNs it sees; all mapped LUNs when absent.
    #[serde(default)]
    pub luns: Option<BTreeSet<u16>>,
}

fn credentials(
    user: Option<String>,
    secret: Option<String>,
    user_field: &'static str,
    secret_field: &'static str,
) -> Result<Option<ChapCredentials>, ApiError> {
    match (user, secret) {
        (None, None) => Ok(None),
        (Some(user), Some(secret)) => Ok(Some(ChapCredentials { user, secret })),
        (Some(_), None) => Err(ApiError::InvalidField {
            field: secret_field,
            reason: format!("required with {user_field}"),
        }),
        (None, Some(_)) => Err(ApiError::InvalidField {
            field: user_field,
            reason: format!("required with {secret_field}"),
        }),
    }
}

impl AllowInitiator {
    /// The CHAP the initiator must answer, if any.
    pub fn auth(&mut self) -> Result<Option<ChapAuth>, ApiError> {
        let chap = credentials(
            self.chap_user.take(),
            self.chap_secret.take(),
            "chap_user",
            "chap_secret",
        )?;
        let mutual = credentials(
            self.mutual_chap_user.take(),
            self.mutual_chap_secret.take(),
            "mutual_chap_user",
            "mutual_chap_secret",
        )?;
        match (chap, mutual) {
            (Some(chap), mutual) => Ok(Some(ChapAuth { chap, mutual })),
            (None, None) => Ok(None),
            (None, Some(_)) => Err(ApiError::InvalidField {
                field: "chap_user",
                reason: "mutual CHAP needs the initiator's CHAP too".to_owned(),
            }),
        }
    }
}

/// One ACL entry as the API shows it: CHAP user names, never secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclView {
    /// The initiator's name.
    pub initiator: String,
    /// The LUNs it sees; `null` for every mapped LUN.
    pub luns: Option<Vec<u16>>,
    /// The CHAP user it logs in as, if CHAP is required.
    pub chap_user: Option<String>,
    /// The target's CHAP user for mutual CHAP.
    pub mutual_chap_user: Option<String>,
}

impl From<&AclEntry> for AclView {
    fn from(e: &AclEntry) -> Self {
        Self {
            initiator: e.initiator.clone(),
            luns: e.luns.as_ref().map(|l| l.iter().copied().collect()),
            chap_user: e.auth.as_ref().map(|a| a.chap.user.clone()),
            mutual_chap_user: e
                .auth
                .as_ref()
                .and_then(|a| a.mutual.as_ref())
                .map(|m| m.user.clone()),
        }
    }
}

/// `GET /v1/targets/{iqn}/acl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclList {
    /// The target.
    pub target: String,
    /// By initiator name.
    pub acl: Vec<AclView>,
}

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

impl RaftView {
    /// The view of `raft` with member names from `config`.
    pub fn new(raft: &RaftStatus, config: &ClusterConfig) -> Self {
        Self {
            node_id: raft.node_id,
            term: raft.term,
            leader: raft.leader,
            leader_member: raft.leader.and_then(|l| member_of(config, l)),
            commit_index: raft.commit_index,
            applied_index: raft.applied_index,
            voters: raft.voters.clone(),
            learners: raft.learners.clone(),
        }
    }
}

fn member_of(config: &ClusterConfig, node_id: u64) -> Option<String> {
    config
        .members
        .values()
        .find(|m| m.node_id == node_id)
        .map(|m| m.id.0.clone())
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

impl StatusView {
    /// The summary from the service's three views.
    pub fn new(config: &ClusterConfig, raft: &RaftStatus, peers: &[MemberStatus]) -> Self {
        let mut members = MemberCounts {
            configured: config.members.len(),
            ..MemberCounts::default()
        };
        for p in peers {
            match p.state {
                MemberState::Alive => members.alive += 1,
                MemberState::Suspect => members.suspect += 1,
                MemberState::Failed => members.failed += 1,
            }
        }
        Self {
            member: member_of(config, raft.node_id),
            raft: RaftView::new(raft, config),
            members,
            devices: config.devices.len(),
            targets: config.targets.len(),
        }
    }
}

/// A member state's name in JSON and metrics.
pub fn member_state_name(state: MemberState) -> &'static str {
    match state {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Failed => "failed",
    }
}

/// A link state's name in JSON and metrics.
pub fn link_state_name(state: LinkState) -> &'static str {
    match state {
        LinkState::Up => "up",
        LinkState::Down => "down",
        LinkState::Flapping => "flapping",
    }
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
}

/// One link of a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkView {
    /// The network's name.
    pub link: String,
    /// `up`, `down` or `flapping`.
    pub state: String,
    /// Milliseconds in that state.
    pub since_ms: u64,
    /// Milliseconds since the last heartbeat on it; `null` if never heard.
    pub last_heard_ms: Option<u64>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `GET /v1/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberList {
    /// By id.
    pub members: Vec<MemberView>,
}

/// This member's own link `link` as its peers' heartbeats show it: up when
/// any peer is heard on it, else flapping when one flaps, else down; unknown
/// with no peer to hear.
fn own_link(link: &crate::LinkName, peers: &[MemberStatus]) -> LinkView {
    let on: Vec<&crate::membership::LinkStatus> = peers
        .iter()
        .flat_map(|p| p.links.iter().filter(|l| &l.link == link))
        .collect();
    let state = if on.iter().any(|l| l.state == LinkState::Up) {
        link_state_name(LinkState::Up)
    } else if on.iter().any(|l| l.state == LinkState::Flapping) {
        link_state_name(LinkState::Flapping)
    } else if on.is_empty() {
        "unknown"
    } else {
        link_state_name(LinkState::Down)
    };
    LinkView {
        link: link.0.clone(),
        state: state.to_owned(),
        since_ms: on
            .iter()
            .filter(|l| link_state_name(l.state) == state)
            .map(|l| millis(l.since))
            .min()
            .unwrap_or(0),
        last_heard_ms: on.iter().filter_map(|l| l.last_heard.map(millis)).min(),
    }
}

impl MemberList {
    /// Configured members (this one marked `local`), then peers the failure
    /// detector watches that are not configured.
    pub fn new(config: &ClusterConfig, raft: &RaftStatus, peers: &[MemberStatus]) -> Self {
        let view_of = |id: &str, status: Option<&MemberStatus>| MemberView {
            id: id.to_owned(),
            node_id: None,
            api: None,
            witness: false,
            local: false,
            state: status
                .map_or("unknown", |s| member_state_name(s.state))
                .to_owned(),
            since_ms: status.map(|s| millis(s.since)),
            incarnation: status.and_then(|s| s.incarnation),
            links: status.map_or_else(Vec::new, |s| {
                s.links
                    .iter()
                    .map(|l| LinkView {
                        link: l.link.0.clone(),
                        state: link_state_name(l.state).to_owned(),
                        since_ms: millis(l.since),
                        last_heard_ms: l.last_heard.map(millis),
                    })
                    .collect()
            }),
        };
        let mut members: Vec<MemberView> = config
            .members
            .values()
            .map(|m| {
                let status = peers.iter().find(|p| p.member == m.id);
                let local = m.node_id == raft.node_id && status.is_none();
                let mut view = view_of(&m.id.0, status);
                view.node_id = Some(m.node_id);
                view.api = Some(m.api.to_string());
                view.witness = m.witness;
                view.local = local;
                if local {
                    "alive".clone_into(&mut view.state);
                    view.links = m.links.keys().map(|l| own_link(l, peers)).collect();
                }
                view
            })
            .collect();
        members.extend(
            peers
                .iter()
                .filter(|p| !config.members.contains_key(&p.member))
                .map(|p| view_of(&p.member.0, Some(p))),
        );
        members.sort_by(|a, b| a.id.cmp(&b.id));
        Self { members }
    }
}
