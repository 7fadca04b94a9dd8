//! The write operations on the configuration and how each is applied.
//!
//! ```text
//!  API request ──> Command ──> Raft log ──> ClusterConfig::apply ──> Ok(Response) | Err(ConfigError)
//! ```
//!
//! `apply` is deterministic and validates before it changes anything: a
//! rejected command leaves the configuration as it was, on every member,
//! and its error is the answer the client gets.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::model::{
    check_iscsi_name, check_size, AclEntry, Backing, ChapAuth, ClusterConfig, Device, Member,
    Object, Target, MAX_LUN,
};
use super::roles::Proposal;
use super::sets::{Failback, FailoverSet, PortPolicy};
use crate::MemberId;

/// A change to the configuration, as replicated in the Raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Add a member, or replace one with the same id.
    UpsertMember(Member),
    /// Remove a member.
    RemoveMember {
        /// Its id.
        id: MemberId,
    },
    /// Create a device (its uuid chosen by the proposer, never by apply).
    CreateDevice(Device),
    /// Grow a device.
    ResizeDevice {
        /// Its name.
        name: String,
        /// The new size in bytes; never smaller than the current one.
        size: u64,
    },
    /// Make a device read-only or writable again.
    SetDeviceReadOnly {
        /// Its name.
        name: String,
        /// Whether writes are refused.
        read_only: bool,
    },
    /// Delete a device that no target maps.
    DeleteDevice {
        /// Its name.
        name: String,
    },
    /// Create a target with no LUNs and an empty ACL.
    CreateTarget {
        /// Its IQN.
        iqn: String,
        /// Its alias.
        alias: Option<String>,
    },
    /// Delete a target with its LUN map and ACL.
    DeleteTarget {
        /// Its IQN.
        iqn: String,
    },
    /// Expose a device as a LUN of a target.
    MapLun {
        /// The target's IQN.
        target: String,
        /// The LUN, at most [`MAX_LUN`].
        lun: u16,
        /// The device's name.
        device: String,
    },
    /// Remove a LUN from a target (and from every ACL mask of it).
    UnmapLun {
        /// The target's IQN.
        target: String,
        /// The LUN.
        lun: u16,
    },
    /// Allow an initiator on a target, or replace its entry.
    AllowInitiator {
        /// The target's IQN.
        target: String,
        /// The initiator's name.
        initiator: String,
        /// The LUNs it sees (each mapped now); `None` for all.
        luns: Option<BTreeSet<u16>>,
        /// CHAP it must answer.
        auth: Option<ChapAuth>,
    },
    /// Remove an initiator from a target's ACL.
    DenyInitiator {
        /// The target's IQN.
        target: String,
        /// The initiator's name.
        initiator: String,
    },
    /// Set or clear CHAP for discovery sessions.
    SetDiscoveryAuth {
        /// The credentials; `None` lets discovery in without CHAP.
        auth: Option<ChapAuth>,
    },
    /// Create a Failover Set.
    CreateSet(FailoverSet),
    /// Delete a set no device and no hierarchical set uses.
    DeleteSet {
        /// Its name.
        name: String,
    },
    /// Add a member (a set, to a hierarchical set) to a set.
    AddSetMember {
        /// The set.
        set: String,
        /// The member id or set name.
        member: String,
        /// Where in the priority order (0 first); the end when absent.
        #[serde(default)]
        position: Option<usize>,
    },
    /// Remove a member from a set.
    RemoveSetMember {
        /// The set.
        set: String,
        /// The member id or set name.
        member: String,
    },
    /// Change a set's failback.
    SetFailback {
        /// The set.
        set: String,
        /// The failback.
        failback: Failback,
    },
    /// Move a device to another set and/or change its port policy.
    SetDevicePolicy {
        /// The device.
        name: String,
        /// The set, if it moves.
        #[serde(default)]
        set: Option<String>,
        /// The policy, if it changes.
        #[serde(default)]
        policy: Option<PortPolicy>,
    },
    /// Drain a member (its roles move away in a planned handover) or
    /// undrain it.
    DrainMember {
        /// The member.
        member: MemberId,
        /// Drained (true) or not.
        drained: bool,
    },
    /// Commit role assignments (the Raft leader's arbiter): all, or none
    /// when one is stale.
    AssignRoles {
        /// One per set whose roles change.
        proposals: Vec<Proposal>,
    },
    /// Set a device's data-path state (see [`devstate`](super::devstate)):
    /// to `state` if its version is still `expect`; with no state, only
    /// check that it is.
    SetDeviceState {
        /// The device's uuid.
        device: Uuid,
        /// The version the new state was computed from.
        expect: u64,
        /// The new state's text; `None` to check the version only.
        #[serde(default)]
        state: Option<String>,
    },
    /// `command`, applied at most once under the client's idempotency key:
    /// sent again, it answers what it answered the first time (see
    /// [`once`](super::once)).
    Once {
        /// The client's name for this write (checked by
        /// [`check_key`](super::once::check_key)).
        key: String,
        /// The write.
        command: Box<Command>,
    },
}

/// What an applied command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// The configuration changed.
    Changed,
    /// The command asked for what was already there (and for Raft's own
    /// entries: blank and membership).
    Unchanged,
}

/// Why a command was rejected. Errors travel in Raft responses, so they are
/// plain data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum ConfigError {
    /// A name breaks the naming rules.
    #[error("invalid {object} name {name:?}: {reason}")]
    InvalidName {
        /// What the name is of.
        object: Object,
        /// The name.
        name: String,
        /// The rule it breaks.
        reason: String,
    },
    /// An object with this name exists already.
    #[error("{object} {name} already exists")]
    AlreadyExists {
        /// What kind.
        object: Object,
        /// Its name.
        name: String,
    },
    /// No object with this name exists.
    #[error("no {object} {name}")]
    NotFound {
        /// What kind.
        object: Object,
        /// The name asked for.
        name: String,
    },
    /// Another member has this Raft node id.
    #[error("node id {node_id} is taken by member {member}")]
    NodeIdTaken {
        /// The id.
        node_id: u64,
        /// Who has it.
        member: String,
    },
    /// A member needs at least one link.
    #[error("member {member} has no link")]
    NoLinks {
        /// The member.
        member: String,
    },
    /// A witness serves no data.
    #[error("witness {member} cannot have portals")]
    WitnessWithPortals {
        /// The member.
        member: String,
    },
    /// Another device has this uuid.
    #[error("uuid {uuid} is taken by device {device}")]
    UuidTaken {
        /// The uuid.
        uuid: Uuid,
        /// Who has it.
        device: String,
    },
    /// The block size is neither 512 nor 4096.
    #[error("device {device}: block size {block_size} is not 512 or 4096")]
    InvalidBlockSize {
        /// The device.
        device: String,
        /// The size asked for.
        block_size: u32,
    },
    /// A size is zero or not a multiple of the block size.
    #[error("device {device}: size {size} is not a non-zero multiple of {block_size}")]
    InvalidSize {
        /// The device.
        device: String,
        /// The size asked for.
        size: u64,
        /// Its block size.
        block_size: u32,
    },
    /// A size past the largest a device may have.
    #[error("device {device}: size {size} is larger than the largest a device may have ({max} bytes, 8 EiB)")]
    SizeTooLarge {
        /// The device.
        device: String,
        /// The size asked for.
        size: u64,
        /// The largest size.
        max: u64,
    },
    /// Devices only grow.
    #[error("device {device}: cannot shrink from {size} to {requested} bytes")]
    Shrink {
        /// The device.
        device: String,
        /// Its size.
        size: u64,
        /// The size asked for.
        requested: u64,
    },
    /// A mapped device cannot be deleted.
    #[error("device {device} is mapped as LUN {lun} of {target}")]
    DeviceMapped {
        /// The device.
        device: String,
        /// A target mapping it.
        target: String,
        /// The LUN there.
        lun: u16,
    },
    /// The LUN is past [`MAX_LUN`].
    #[error("LUN {lun} is out of range (0..={MAX_LUN})")]
    LunOutOfRange {
        /// The LUN.
        lun: u16,
    },
    /// The LUN maps another device already.
    #[error("LUN {lun} of {target} already maps device {device}")]
    LunTaken {
        /// The target.
        target: String,
        /// The LUN.
        lun: u16,
        /// The device it maps.
        device: String,
    },
    /// An ACL mask names a LUN the target does not map.
    #[error("LUN {lun} is not mapped on {target}")]
    LunNotMapped {
        /// The target.
        target: String,
        /// The LUN.
        lun: u16,
    },
    /// A CHAP user name is empty or holds control characters.
    #[error("invalid CHAP user name {user:?}")]
    InvalidChapUser {
        /// The name.
        user: String,
    },
    /// A CHAP secret is too short or too long.
    #[error("CHAP secret of {len} bytes; 12 to 255 are accepted")]
    ChapSecretLength {
        /// Its length.
        len: usize,
    },
    /// Mutual CHAP must use another secret than the initiator's.
    #[error("mutual CHAP reuses the initiator's secret")]
    MutualSecretReused,
    /// A backing path is empty, or a relative one leaves the storage
    /// directory; or (refused by the API before any write) the member
    /// taking the request cannot use it.
    #[error("device {device}: backing path {path:?} {reason}")]
    InvalidBacking {
        /// The device.
        device: String,
        /// The path given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Another device has these blocks already.
    #[error("backing {path:?} is used by device {device} already")]
    BackingTaken {
        /// The path.
        path: String,
        /// Who has it.
        device: String,
    },
    /// A role assignment was decided from an epoch that is no longer the
    /// set's.
    #[error("set {set}: roles decided at epoch {expected}, but the set is at epoch {current}")]
    StaleEpoch {
        /// The set.
        set: String,
        /// The epoch the proposal was decided from.
        expected: u64,
        /// The set's epoch now.
        current: u64,
    },
    /// A witness holds no roles (nothing to drain).
    #[error("member {member} is a witness: it serves no data and holds no roles")]
    Witness {
        /// The member.
        member: String,
    },
    /// A Failover Set breaks a rule.
    #[error("set {set}: {reason}")]
    InvalidSet {
        /// The set.
        set: String,
        /// What is wrong.
        reason: String,
    },
    /// An idempotency key came back with another request than the one it
    /// named first.
    #[error(
        "idempotency key {key:?} was used for another request; use a new key for each request"
    )]
    KeyReused {
        /// The key.
        key: String,
    },
    /// A keyed write holds another keyed write.
    #[error("a keyed write cannot hold another keyed write")]
    NestedOnce,
    /// A device's state changed since the version a write was computed
    /// from: decide again from the current one.
    #[error("device {device}: state moved from version {expect} to {version}")]
    DeviceStateMoved {
        /// The device's uuid.
        device: Uuid,
        /// The version the write expected.
        expect: u64,
        /// The version now.
        version: u64,
    },
    /// A device's state text is over [`MAX_DEVICE_STATE`](super::devstate::MAX_DEVICE_STATE).
    #[error("device {device}: a state of {len} bytes is too large")]
    DeviceStateTooLarge {
        /// The device's uuid.
        device: Uuid,
        /// Its length.
        len: usize,
    },
    /// A data member's node id is also its target port group id and
    /// relative target port id, 16-bit in SCSI.
    #[error("member {member}: node id {node_id} must be 1..=65535 (it is also the member's target port group id)")]
    NodeIdRange {
        /// The member.
        member: String,
        /// The id given.
        node_id: u64,
    },
}

pub(super) fn not_found(object: Object, name: &str) -> ConfigError {
    ConfigError::NotFound {
        object,
        name: name.to_owned(),
    }
}

pub(super) fn changed(did: bool) -> Response {
    if did {
        Response::Changed
    } else {
        Response::Unchanged
    }
}

impl ClusterConfig {
    /// Applies one command: validates it against the current configuration
    /// and changes the configuration only when it is valid.
    pub fn apply(&mut self, command: &Command) -> Result<Response, ConfigError> {
        match command {
            // Keyed writes are remembered by the replicated state
            // (`ReplicatedState::apply`); the configuration alone applies
            // the command each time.
            Command::Once { command, .. } if matches!(**command, Command::Once { .. }) => {
                Err(ConfigError::NestedOnce)
            }
            Command::Once { command, .. } => self.apply(command),
            Command::UpsertMember(member) => self.upsert_member(member),
            Command::CreateSet(set) => self.create_set(set),
            Command::DeleteSet { name } => self.delete_set(name),
            Command::AddSetMember {
                set,
                member,
                position,
            } => self.add_set_member(set, member, *position),
            Command::RemoveSetMember { set, member } => self.remove_set_member(set, member),
            Command::SetFailback { set, failback } => self.set_failback(set, *failback),
            Command::SetDevicePolicy { name, set, policy } => {
                self.set_device_policy(name, set.as_deref(), *policy)
            }
            Command::DrainMember { member, drained } => {
                let m = self
                    .members
                    .get(member)
                    .ok_or_else(|| not_found(Object::Member, &member.0))?;
                if m.witness {
                    return Err(ConfigError::Witness {
                        member: member.0.clone(),
                    });
                }
                let did = if *drained {
                    self.drained.insert(member.clone())
                } else {
                    self.drained.remove(member)
                };
                Ok(changed(did))
            }
            // Role assignments are the replicated log's state
            // (`ReplicatedState::apply`), not the configuration's.
            Command::AssignRoles { .. } | Command::SetDeviceState { .. } => Ok(Response::Unchanged),
            Command::RemoveMember { id } => {
                self.check_member_unused(id)?;
                self.drained.remove(id);
                self.members
                    .remove(id)
                    .ok_or_else(|| not_found(Object::Member, &id.0))?;
                Ok(Response::Changed)
            }
            Command::CreateDevice(device) => self.create_device(device),
            Command::ResizeDevice { name, size } => {
                let device = self.device_mut(name)?;
                check_size(name, *size, device.block_size)?;
                if *size < device.size {
                    return Err(ConfigError::Shrink {
                        device: name.clone(),
                        size: device.size,
                        requested: *size,
                    });
                }
                let did = device.size != *size;
                device.size = *size;
                Ok(changed(did))
            }
            Command::SetDeviceReadOnly { name, read_only } => {
                let device = self.device_mut(name)?;
                let did = device.read_only != *read_only;
                device.read_only = *read_only;
                Ok(changed(did))
            }
            Command::DeleteDevice { name } => {
                if !self.devices.contains_key(name) {
                    return Err(not_found(Object::Device, name));
                }
                if let Some((target, lun)) = self.mapping_of(name) {
                    return Err(ConfigError::DeviceMapped {
                        device: name.clone(),
                        target,
                        lun,
                    });
                }
                self.devices.remove(name);
                Ok(Response::Changed)
            }
            Command::CreateTarget { iqn, alias } => {
                check_iscsi_name(Object::Target, iqn)?;
                if self.targets.contains_key(iqn) {
                    return Err(ConfigError::AlreadyExists {
                        object: Object::Target,
                        name: iqn.clone(),
                    });
                }
                let target = Target {
                    iqn: iqn.clone(),
                    alias: alias.clone(),
                    luns: Default::default(),
                    acl: Default::default(),
                };
                self.targets.insert(iqn.clone(), target);
                Ok(Response::Changed)
            }
            Command::DeleteTarget { iqn } => {
                self.targets
                    .remove(iqn)
                    .ok_or_else(|| not_found(Object::Target, iqn))?;
                Ok(Response::Changed)
            }
            Command::MapLun {
                target,
                lun,
                device,
            } => self.map_lun(target, *lun, device),
            Command::UnmapLun { target, lun } => {
                let t = self.target_mut(target)?;
                if t.luns.remove(lun).is_none() {
                    return Err(ConfigError::LunNotMapped {
                        target: target.clone(),
                        lun: *lun,
                    });
                }
                for entry in t.acl.values_mut() {
                    if let Some(mask) = &mut entry.luns {
                        mask.remove(lun);
                    }
                }
                Ok(Response::Changed)
            }
            Command::AllowInitiator {
                target,
                initiator,
                luns,
                auth,
            } => self.allow_initiator(target, initiator, luns, auth),
            Command::DenyInitiator { target, initiator } => {
                self.target_mut(target)?
                    .acl
                    .remove(initiator)
                    .ok_or_else(|| not_found(Object::Initiator, initiator))?;
                Ok(Response::Changed)
            }
            Command::SetDiscoveryAuth { auth } => {
                if let Some(auth) = auth {
                    auth.check()?;
                }
                let did = self.discovery_auth != *auth;
                self.discovery_auth = auth.clone();
                Ok(changed(did))
            }
        }
    }

    fn upsert_member(&mut self, member: &Member) -> Result<Response, ConfigError> {
        member.check()?;
        if let Some(other) = self
            .members
            .values()
            .find(|m| m.node_id == member.node_id && m.id != member.id)
        {
            return Err(ConfigError::NodeIdTaken {
                node_id: member.node_id,
                member: other.id.0.clone(),
            });
        }
        let old = self.members.insert(member.id.clone(), member.clone());
        Ok(changed(old.as_ref() != Some(member)))
    }

    fn create_device(&mut self, device: &Device) -> Result<Response, ConfigError> {
        device.check()?;
        if self.failover_set(&device.set).is_none() {
            return Err(not_found(Object::Set, &device.set));
        }
        if self.devices.contains_key(&device.name) {
            return Err(ConfigError::AlreadyExists {
                object: Object::Device,
                name: device.name.clone(),
            });
        }
        if let Some(other) = self.devices.values().find(|d| d.uuid == device.uuid) {
            return Err(ConfigError::UuidTaken {
                uuid: device.uuid,
                device: other.name.clone(),
            });
        }
        if let Backing::Path(path) = &device.backing {
            if let Some(other) = self.devices.values().find(|d| d.backing == device.backing) {
                return Err(ConfigError::BackingTaken {
                    path: path.display().to_string(),
                    device: other.name.clone(),
                });
            }
        }
        self.devices.insert(device.name.clone(), device.clone());
        Ok(Response::Changed)
    }

    fn map_lun(&mut self, target: &str, lun: u16, device: &str) -> Result<Response, ConfigError> {
        if lun > MAX_LUN {
            return Err(ConfigError::LunOutOfRange { lun });
        }
        if !self.devices.contains_key(device) {
            return Err(not_found(Object::Device, device));
        }
        let t = self.target_mut(target)?;
        match t.luns.get(&lun) {
            Some(existing) if existing == device => Ok(Response::Unchanged),
            Some(existing) => Err(ConfigError::LunTaken {
                target: target.to_owned(),
                lun,
                device: existing.clone(),
            }),
            None => {
                t.luns.insert(lun, device.to_owned());
                Ok(Response::Changed)
            }
        }
    }

    fn allow_initiator(
        &mut self,
        target: &str,
        initiator: &str,
        luns: &Option<BTreeSet<u16>>,
        auth: &Option<ChapAuth>,
    ) -> Result<Response, ConfigError> {
        check_iscsi_name(Object::Initiator, initiator)?;
        if let Some(auth) = auth {
            auth.check()?;
        }
        let t = self.target_mut(target)?;
        if let Some(mask) = luns {
            if let Some(lun) = mask.iter().find(|l| !t.luns.contains_key(l)) {
                return Err(ConfigError::LunNotMapped {
                    target: target.to_owned(),
                    lun: *lun,
                });
            }
        }
        let entry = AclEntry {
            initiator: initiator.to_owned(),
            luns: luns.clone(),
            auth: auth.clone(),
        };
        let old = t.acl.insert(initiator.to_owned(), entry.clone());
        Ok(changed(old != Some(entry)))
    }

    fn device_mut(&mut self, name: &str) -> Result<&mut Device, ConfigError> {
        self.devices
            .get_mut(name)
            .ok_or_else(|| not_found(Object::Device, name))
    }

    fn target_mut(&mut self, iqn: &str) -> Result<&mut Target, ConfigError> {
        self.targets
            .get_mut(iqn)
            .ok_or_else(|| not_found(Object::Target, iqn))
    }

    /// The first (target, LUN) that maps `device`, if any.
    fn mapping_of(&self, device: &str) -> Option<(String, u16)> {
        self.targets.values().find_map(|t| {
            t.luns
                .iter()
                .find(|(_, d)| d.as_str() == device)
                .map(|(lun, _)| (t.iqn.clone(), *lun))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;

    use super::*;
    use crate::config::model::{Backing, ChapCredentials, MAX_DEVICE_SIZE};
    use crate::LinkName;

    const T1: &str = "iqn.2024-01.org.example:t1";
    const I1: &str = "iqn.1998-01.com.vmware:host1";

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn member(id: &str, node_id: u64) -> Member {
        Member {
            id: MemberId(id.into()),
            node_id,
            links: BTreeMap::from([(LinkName("a".into()), addr("10.0.0.1:7400"))]),
            api: addr("10.0.0.1:8080"),
            portals: vec![addr("10.0.0.1:3260")],
            witness: false,
        }
    }

    fn device(name: &str, uuid: u128, size: u64) -> Device {
        Device {
            name: name.into(),
            uuid: Uuid::from_u128(uuid),
            size,
            backing: Backing::Memory,
            block_size: 512,
            thin: false,
            read_only: false,
            set: crate::config::DEFAULT_SET.into(),
            policy: Default::default(),
        }
    }

    fn chap(user: &str, secret: &str) -> ChapCredentials {
        ChapCredentials {
            user: user.into(),
            secret: secret.into(),
        }
    }

    fn auth(secret: &str, mutual: Option<&str>) -> Option<ChapAuth> {
        Some(ChapAuth {
            chap: chap("host1", secret),
            mutual: mutual.map(|s| chap("target", s)),
        })
    }

    /// A configuration with member m1, device d1 (1 MiB) and d2, target T1
    /// mapping d1 at LUN 0 and allowing I1.
    fn base() -> ClusterConfig {
        let mut c = ClusterConfig::default();
        for cmd in [
            Command::UpsertMember(member("m1", 1)),
            Command::CreateDevice(device("d1", 1, 1 << 20)),
            Command::CreateDevice(Device {
                backing: Backing::default_for("d2"),
                ..device("d2", 2, 1 << 20)
            }),
            Command::CreateTarget {
                iqn: T1.into(),
                alias: None,
            },
            Command::MapLun {
                target: T1.into(),
                lun: 0,
                device: "d1".into(),
            },
            Command::AllowInitiator {
                target: T1.into(),
                initiator: I1.into(),
                luns: Some(BTreeSet::from([0])),
                auth: None,
            },
        ] {
            c.apply(&cmd).expect("base config applies");
        }
        c
    }

    fn name_err(object: Object) -> impl Fn(&Result<Response, ConfigError>) -> bool {
        move |r| matches!(r, Err(ConfigError::InvalidName { object: o, .. }) if *o == object)
    }

    #[test]
    fn commands_are_validated() {
        type Check = Box<dyn Fn(&Result<Response, ConfigError>) -> bool>;
        let ok: fn(&Result<Response, ConfigError>) -> bool = |r| r == &Ok(Response::Changed);
        let same: fn(&Result<Response, ConfigError>) -> bool = |r| r == &Ok(Response::Unchanged);
        let err = |e: ConfigError| -> Check { Box::new(move |r| r == &Err(e.clone())) };
        let nf = |object: Object, name: &str| err(not_found(object, name));
        let witness = Member {
            portals: vec![],
            witness: true,
            ..member("w", 9)
        };
        let mut bad_witness = witness.clone();
        bad_witness.portals = vec![addr("10.0.0.9:3260")];
        let mut no_links = member("m3", 3);
        no_links.links.clear();
        let mut big_block = device("d4", 4, 1 << 20);
        big_block.block_size = 1024;

        #[rustfmt::skip]
        let table: Vec<(&str, Command, Check)> = vec![
            ("add member", Command::UpsertMember(member("m2", 2)), Box::new(ok)),
            ("same member again", Command::UpsertMember(member("m1", 1)), Box::new(same)),
            ("member changes address", Command::UpsertMember(Member { api: addr("10.0.0.1:9090"), ..member("m1", 1) }), Box::new(ok)),
            ("node id taken", Command::UpsertMember(member("m2", 1)), err(ConfigError::NodeIdTaken { node_id: 1, member: "m1".into() })),
            ("bad member name", Command::UpsertMember(member("-m", 2)), Box::new(name_err(Object::Member))),
            ("member without links", Command::UpsertMember(no_links), err(ConfigError::NoLinks { member: "m3".into() })),
            ("node id beyond port ids", Command::UpsertMember(member("m3", 65536)), err(ConfigError::NodeIdRange { member: "m3".into(), node_id: 65536 })),
            ("node id 0", Command::UpsertMember(member("m3", 0)), err(ConfigError::NodeIdRange { member: "m3".into(), node_id: 0 })),
            ("witness", Command::UpsertMember(witness), Box::new(ok)),
            ("witness with portals", Command::UpsertMember(bad_witness), err(ConfigError::WitnessWithPortals { member: "w".into() })),
            ("remove member", Command::RemoveMember { id: MemberId("m1".into()) }, Box::new(ok)),
            ("remove unknown member", Command::RemoveMember { id: MemberId("m9".into()) }, nf(Object::Member, "m9")),
            ("create device", Command::CreateDevice(device("d3", 3, 4096)), Box::new(ok)),
            ("device name taken", Command::CreateDevice(device("d1", 3, 4096)), err(ConfigError::AlreadyExists { object: Object::Device, name: "d1".into() })),
            ("device uuid taken", Command::CreateDevice(device("d3", 1, 4096)), err(ConfigError::UuidTaken { uuid: Uuid::from_u128(1), device: "d1".into() })),
            ("bad device name", Command::CreateDevice(device("a b", 3, 4096)), Box::new(name_err(Object::Device))),
            ("zero size", Command::CreateDevice(device("d3", 3, 0)), err(ConfigError::InvalidSize { device: "d3".into(), size: 0, block_size: 512 })),
            ("unaligned size", Command::CreateDevice(device("d3", 3, 1000)), err(ConfigError::InvalidSize { device: "d3".into(), size: 1000, block_size: 512 })),
            ("odd block size", Command::CreateDevice(big_block), err(ConfigError::InvalidBlockSize { device: "d4".into(), block_size: 1024 })),
            ("file device", Command::CreateDevice(Device { backing: Backing::default_for("d3"), ..device("d3", 3, 4096) }), Box::new(ok)),
            ("absolute path", Command::CreateDevice(Device { backing: Backing::Path("/srv/d3.img".into()), ..device("d3", 3, 4096) }), Box::new(ok)),
            ("path leaves the storage dir", Command::CreateDevice(Device { backing: Backing::Path("a/../../d3.img".into()), ..device("d3", 3, 4096) }), err(ConfigError::InvalidBacking { device: "d3".into(), path: "a/../../d3.img".into(), reason: "leaves the storage directory (a relative path may hold no '..' or '.')".into() })),
            ("empty path", Command::CreateDevice(Device { backing: Backing::Path("".into()), ..device("d3", 3, 4096) }), err(ConfigError::InvalidBacking { device: "d3".into(), path: "".into(), reason: "is empty".into() })),
            ("backing taken", Command::CreateDevice(Device { backing: Backing::default_for("d2"), ..device("d3", 3, 4096) }), err(ConfigError::BackingTaken { path: "d2.img".into(), device: "d2".into() })),
            ("grow", Command::ResizeDevice { name: "d1".into(), size: 2 << 20 }, Box::new(ok)),
            ("same size", Command::ResizeDevice { name: "d1".into(), size: 1 << 20 }, Box::new(same)),
            ("shrink", Command::ResizeDevice { name: "d1".into(), size: 512 }, err(ConfigError::Shrink { device: "d1".into(), size: 1 << 20, requested: 512 })),
            ("absurd size", Command::CreateDevice(device("d3", 3, 1 << 63)), err(ConfigError::SizeTooLarge { device: "d3".into(), size: 1 << 63, max: MAX_DEVICE_SIZE })),
            ("absurd grow", Command::ResizeDevice { name: "d1".into(), size: u64::MAX - 511 }, err(ConfigError::SizeTooLarge { device: "d1".into(), size: u64::MAX - 511, max: MAX_DEVICE_SIZE })),
            ("unaligned grow", Command::ResizeDevice { name: "d1".into(), size: (1 << 20) + 1 }, err(ConfigError::InvalidSize { device: "d1".into(), size: (1 << 20) + 1, block_size: 512 })),
            ("resize unknown", Command::ResizeDevice { name: "dx".into(), size: 4096 }, nf(Object::Device, "dx")),
            ("read-only", Command::SetDeviceReadOnly { name: "d1".into(), read_only: true }, Box::new(ok)),
            ("writable already", Command::SetDeviceReadOnly { name: "d1".into(), read_only: false }, Box::new(same)),
            ("delete unmapped device", Command::DeleteDevice { name: "d2".into() }, Box::new(ok)),
            ("delete mapped device", Command::DeleteDevice { name: "d1".into() }, err(ConfigError::DeviceMapped { device: "d1".into(), target: T1.into(), lun: 0 })),
            ("delete unknown device", Command::DeleteDevice { name: "dx".into() }, nf(Object::Device, "dx")),
            ("create target", Command::CreateTarget { iqn: "iqn.2024-01.org.example:t2".into(), alias: Some("two".into()) }, Box::new(ok)),
            ("eui target", Command::CreateTarget { iqn: "eui.0123456789abcdef".into(), alias: None }, Box::new(ok)),
            ("target exists", Command::CreateTarget { iqn: T1.into(), alias: None }, err(ConfigError::AlreadyExists { object: Object::Target, name: T1.into() })),
            ("upper-case iqn", Command::CreateTarget { iqn: "iqn.2024-01.org.Example:t".into(), alias: None }, Box::new(name_err(Object::Target))),
            ("iqn without date", Command::CreateTarget { iqn: "iqn.example:t".into(), alias: None }, Box::new(name_err(Object::Target))),
            ("not an iscsi name", Command::CreateTarget { iqn: "disk1".into(), alias: None }, Box::new(name_err(Object::Target))),
            ("short naa", Command::CreateTarget { iqn: "naa.1234".into(), alias: None }, Box::new(name_err(Object::Target))),
            ("delete target", Command::DeleteTarget { iqn: T1.into() }, Box::new(ok)),
            ("delete unknown target", Command::DeleteTarget { iqn: "iqn.2024-01.org.example:tx".into() }, nf(Object::Target, "iqn.2024-01.org.example:tx")),
            ("map lun", Command::MapLun { target: T1.into(), lun: 1, device: "d2".into() }, Box::new(ok)),
            ("device on a second lun", Command::MapLun { target: T1.into(), lun: 1, device: "d1".into() }, Box::new(ok)),
            ("same mapping again", Command::MapLun { target: T1.into(), lun: 0, device: "d1".into() }, Box::new(same)),
            ("lun taken", Command::MapLun { target: T1.into(), lun: 0, device: "d2".into() }, err(ConfigError::LunTaken { target: T1.into(), lun: 0, device: "d1".into() })),
            ("lun out of range", Command::MapLun { target: T1.into(), lun: MAX_LUN + 1, device: "d2".into() }, err(ConfigError::LunOutOfRange { lun: MAX_LUN + 1 })),
            ("map unknown device", Command::MapLun { target: T1.into(), lun: 1, device: "dx".into() }, nf(Object::Device, "dx")),
            ("map on unknown target", Command::MapLun { target: "iqn.2024-01.org.example:tx".into(), lun: 1, device: "d2".into() }, nf(Object::Target, "iqn.2024-01.org.example:tx")),
            ("unmap", Command::UnmapLun { target: T1.into(), lun: 0 }, Box::new(ok)),
            ("unmap unmapped", Command::UnmapLun { target: T1.into(), lun: 5 }, err(ConfigError::LunNotMapped { target: T1.into(), lun: 5 })),
            ("allow with chap", Command::AllowInitiator { target: T1.into(), initiator: "iqn.1991-05.com.microsoft:h2".into(), luns: None, auth: auth("0123456789ab", Some("ba9876543210")) }, Box::new(ok)),
            ("allow same again", Command::AllowInitiator { target: T1.into(), initiator: I1.into(), luns: Some(BTreeSet::from([0])), auth: None }, Box::new(same)),
            ("mask with unmapped lun", Command::AllowInitiator { target: T1.into(), initiator: I1.into(), luns: Some(BTreeSet::from([0, 3])), auth: None }, err(ConfigError::LunNotMapped { target: T1.into(), lun: 3 })),
            ("short chap secret", Command::AllowInitiator { target: T1.into(), initiator: I1.into(), luns: None, auth: auth("short", None) }, err(ConfigError::ChapSecretLength { len: 5 })),
            ("mutual reuses secret", Command::AllowInitiator { target: T1.into(), initiator: I1.into(), luns: None, auth: auth("0123456789ab", Some("0123456789ab")) }, err(ConfigError::MutualSecretReused)),
            ("empty chap user", Command::AllowInitiator { target: T1.into(), initiator: I1.into(), luns: None, auth: Some(ChapAuth { chap: chap("", "0123456789ab"), mutual: None }) }, err(ConfigError::InvalidChapUser { user: String::new() })),
            ("bad initiator name", Command::AllowInitiator { target: T1.into(), initiator: "host1".into(), luns: None, auth: None }, Box::new(name_err(Object::Initiator))),
            ("deny", Command::DenyInitiator { target: T1.into(), initiator: I1.into() }, Box::new(ok)),
            ("deny unknown", Command::DenyInitiator { target: T1.into(), initiator: "iqn.2000-01.x:y".into() }, nf(Object::Initiator, "iqn.2000-01.x:y")),
            ("discovery chap", Command::SetDiscoveryAuth { auth: auth("0123456789ab", None) }, Box::new(ok)),
            ("no discovery chap already", Command::SetDiscoveryAuth { auth: None }, Box::new(same)),
            ("bad discovery chap", Command::SetDiscoveryAuth { auth: auth("x", None) }, err(ConfigError::ChapSecretLength { len: 1 })),
        ];

        for (name, cmd, check) in table {
            let before = base();
            let mut after = before.clone();
            let got = after.apply(&cmd);
            assert!(check(&got), "{name}: got {got:?}");
            match got {
                Ok(Response::Changed) => assert_ne!(after, before, "{name}: said changed"),
                _ => assert_eq!(after, before, "{name}: must leave the config as it was"),
            }
        }
    }

    #[test]
    fn unmap_strips_acl_masks_and_deletes_follow() {
        let mut c = base();
        c.apply(&Command::UnmapLun {
            target: T1.into(),
            lun: 0,
        })
        .expect("unmap");
        let t = &c.targets[T1];
        assert_eq!(t.acl[I1].luns, Some(BTreeSet::new()));
        c.apply(&Command::DeleteDevice { name: "d1".into() })
            .expect("unmapped device deletes");
        c.apply(&Command::DeleteTarget { iqn: T1.into() })
            .expect("delete target");
        assert!(c.targets.is_empty());
    }

    #[test]
    fn commands_and_config_round_trip_through_json() {
        let c = base();
        let json = serde_json::to_vec(&c).expect("encode");
        let back: ClusterConfig = serde_json::from_slice(&json).expect("decode");
        assert_eq!(back, c);
        let cmd = Command::AllowInitiator {
            target: T1.into(),
            initiator: I1.into(),
            luns: None,
            auth: auth("0123456789ab", Some("ba9876543210")),
        };
        let json = serde_json::to_string(&cmd).expect("encode");
        assert_eq!(serde_json::from_str::<Command>(&json).expect("decode"), cmd);
        let e: Result<Response, ConfigError> = Err(ConfigError::LunTaken {
            target: T1.into(),
            lun: 1,
            device: "d".into(),
        });
        let json = serde_json::to_string(&e).expect("encode");
        assert_eq!(
            serde_json::from_str::<Result<Response, ConfigError>>(&json).expect("decode"),
            e
        );
    }

    #[test]
    fn chap_secret_is_not_in_debug_output() {
        let c = chap("user", "supersecret123");
        assert!(!format!("{c:?}").contains("supersecret"));
    }
}
