//! How this member fills the management API's bodies ([`trellis_api`],
//! shared with the CLI): views built from its replica of the configuration
//! and the failure detector (never carrying CHAP secrets), and requests
//! checked and turned into the configuration's types.
//!
//! ```text
//!  ClusterConfig, RaftStatus, [MemberStatus] ─> device_view, status_view, member_list, ... ─> trellis_api views
//!  trellis_api requests ─> into_device, chap_auth ─> Device, ChapAuth (or ApiError naming the field)
//! ```

use std::path::PathBuf;
use std::time::Duration;

use trellis_api::{
    AclView, AllowInitiator, AnnouncedRole, CreateDevice, DeviceView, LinkView, LunRef, LunView,
    MemberCounts, MemberList, MemberView, Outcome, RaftView, StatusView, TargetView,
    DEFAULT_BLOCK_SIZE,
};
use uuid::Uuid;

use super::failover::{policy_view, port_policy};
use super::ApiError;
use crate::config::{
    AclEntry, Backing, ChapAuth, ChapCredentials, ClusterConfig, Device, PortPolicy, Response,
    Target, DEFAULT_SET,
};
use crate::membership::{LinkState, MemberState, MemberStatus};
use crate::service::RaftStatus;

impl From<Response> for Outcome {
    fn from(r: Response) -> Self {
        match r {
            Response::Changed => Outcome::Changed,
            Response::Unchanged => Outcome::Unchanged,
        }
    }
}

/// The device `req` creates (validated by the configuration when
/// applied). Without a uuid in the request it gets `keyed` (derived from
/// the request's idempotency key, so that a resent request proposes the
/// very same device), or else a random one.
pub fn into_device(req: CreateDevice, keyed: Option<Uuid>) -> Result<Device, ApiError> {
    let backing = match req.backing.as_deref() {
        None => Backing::default_for(&req.name),
        Some("memory") => Backing::Memory,
        Some("") => {
            return Err(ApiError::InvalidField {
                field: "backing",
                reason: "is empty: give a path or \"memory\"".to_owned(),
            })
        }
        Some(path) => Backing::Path(PathBuf::from(path)),
    };
    let policy = match (req.policy, req.others) {
        (None, None) => PortPolicy::default(),
        (p, o) => port_policy(p.unwrap_or(trellis_api::Policy::ActivePassive), o)?,
    };
    Ok(Device {
        name: req.name,
        uuid: req.uuid.or(keyed).unwrap_or_else(Uuid::new_v4),
        size: req.size,
        backing,
        block_size: req.block_size.unwrap_or(DEFAULT_BLOCK_SIZE),
        thin: req.thin,
        read_only: req.read_only,
        set: req.set.unwrap_or_else(|| DEFAULT_SET.to_owned()),
        policy,
    })
}

/// The view of `device` within `config`.
pub fn device_view(device: &Device, config: &ClusterConfig) -> DeviceView {
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
    DeviceView {
        name: device.name.clone(),
        uuid: device.uuid,
        size: device.size,
        backing: device.backing.to_string(),
        block_size: device.block_size,
        thin: device.thin,
        read_only: device.read_only,
        set: device.set.clone(),
        policy: policy_view(device.policy).0,
        others: policy_view(device.policy).1,
        mapped,
    }
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

/// The CHAP the initiator of `req` must answer, if any (taking the
/// credentials out of `req`).
pub fn chap_auth(req: &mut AllowInitiator) -> Result<Option<ChapAuth>, ApiError> {
    let chap = credentials(
        req.chap_user.take(),
        req.chap_secret.take(),
        "chap_user",
        "chap_secret",
    )?;
    let mutual = credentials(
        req.mutual_chap_user.take(),
        req.mutual_chap_secret.take(),
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

/// The view of `raft` with member names from `config`.
pub fn raft_view(raft: &RaftStatus, config: &ClusterConfig) -> RaftView {
    RaftView {
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

fn member_of(config: &ClusterConfig, node_id: u64) -> Option<String> {
    config
        .members
        .values()
        .find(|m| m.node_id == node_id)
        .map(|m| m.id.0.clone())
}

/// The summary from the service's three views.
pub fn status_view(
    config: &ClusterConfig,
    raft: &RaftStatus,
    peers: &[MemberStatus],
) -> StatusView {
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
    StatusView {
        member: member_of(config, raft.node_id),
        raft: raft_view(raft, config),
        members,
        devices: config.devices.len(),
        targets: config.targets.len(),
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

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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

/// The members: configured ones (this one marked `local`), then peers the
/// failure detector watches that are not configured.
pub fn member_list(
    config: &ClusterConfig,
    raft: &RaftStatus,
    peers: &[MemberStatus],
    own: Option<crate::wire::DataState>,
) -> MemberList {
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
        drained: false,
        sessions: status.and_then(|s| s.data).map(|d| u64::from(d.sessions)),
        healthy: status.and_then(|s| s.data).map(|d| d.healthy),
        announced: status.map_or_else(Vec::new, |s| {
            s.announced
                .iter()
                .map(|(set, role, epoch)| AnnouncedRole {
                    set: set.clone(),
                    role: role.name().to_owned(),
                    epoch: *epoch,
                })
                .collect()
        }),
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
            view.drained = config.drained.contains(&m.id);
            view.local = local;
            if local {
                "alive".clone_into(&mut view.state);
                view.sessions = own.map(|d| u64::from(d.sessions));
                view.healthy = own.map(|d| d.healthy);
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
    MemberList { members }
}
