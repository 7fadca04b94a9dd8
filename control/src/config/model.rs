//! The configuration itself: what every member holds in memory, in the same
//! state after applying the same commands in the same order.
//!
//! Everything here is plain data with serde, so a snapshot is one
//! serialized [`ClusterConfig`] and a log entry one serialized
//! [`Command`](super::Command). Validation rules for single fields (names,
//! IQNs, CHAP secrets, sizes) live next to the types; rules across objects
//! live in [`ClusterConfig::apply`](super::ClusterConfig::apply).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use super::sets::{default_set_name, FailoverSet, PortPolicy};
use super::ConfigError;
use crate::{LinkName, MemberId};

/// The whole replicated configuration of a cluster.
///
/// Maps are ordered so that two members holding the same configuration
/// serialize it to the same bytes.
///
/// Still to come, each as a new field with `#[serde(default)]` so that
/// snapshots written before it still decode: failover sets (composition,
/// priorities, the devices of each set), role assignments per set with
/// their epoch (the fencing token), and persistent-reservation state per
/// device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// Members by id.
    #[serde(default)]
    pub members: BTreeMap<MemberId, Member>,
    /// Virtual devices by name.
    #[serde(default)]
    pub devices: BTreeMap<String, Device>,
    /// iSCSI targets by IQN.
    #[serde(default)]
    pub targets: BTreeMap<String, Target>,
    /// CHAP required of discovery sessions (SendTargets), if any.
    #[serde(default)]
    pub discovery_auth: Option<ChapAuth>,
    /// Failover Sets by name, besides the built-in
    /// [`DEFAULT_SET`](super::sets::DEFAULT_SET).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sets: BTreeMap<String, FailoverSet>,
    /// Members an operator drained: their roles move away (planned).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub drained: BTreeSet<MemberId>,
}

/// A member of the cluster as configured (its live state is membership's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's configured name.
    pub id: MemberId,
    /// Its Raft node id, unique in the cluster.
    pub node_id: u64,
    /// Its control address on each redundant network.
    pub links: BTreeMap<LinkName, SocketAddr>,
    /// Where its management API listens.
    pub api: SocketAddr,
    /// Its iSCSI portals (empty for a witness).
    #[serde(default)]
    pub portals: Vec<SocketAddr>,
    /// A witness votes in Raft but serves no data.
    #[serde(default)]
    pub witness: bool,
}

/// A virtual device exported through targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Its name, unique in the cluster.
    pub name: String,
    /// Its identity, unique in the cluster (the SCSI NAA/EUI designators
    /// are derived from it, so it never changes).
    pub uuid: Uuid,
    /// Its size in bytes, a multiple of `block_size`.
    pub size: u64,
    /// What holds its blocks.
    pub backing: Backing,
    /// The logical block size: 512 or 4096.
    pub block_size: u32,
    /// Whether unwritten blocks take no space (UNMAP is honoured).
    #[serde(default)]
    pub thin: bool,
    /// Whether writes are refused.
    #[serde(default)]
    pub read_only: bool,
    /// The Failover Set whose members serve it.
    #[serde(default = "default_set_name")]
    pub set: String,
    /// How its ports are used by the set's members.
    #[serde(default)]
    pub policy: PortPolicy,
}

/// What holds a device's blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backing {
    /// A file or block device reachable from every member that serves the
    /// device (shared storage): an absolute path, or a path relative to
    /// each member's storage directory (`[cluster] storage_dir`).
    Path(PathBuf),
    /// Memory of each serving member, one copy per member, not shared:
    /// lost when the member stops; for tests and demos only.
    Memory,
}

impl Backing {
    /// The backing of a device created without one: `NAME.img` in the
    /// members' storage directory.
    pub fn default_for(device: &str) -> Backing {
        Backing::Path(PathBuf::from(format!("{device}.img")))
    }
}

/// As the API and the CLI show it: the path, or `memory`.
impl std::fmt::Display for Backing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backing::Path(p) => write!(f, "{}", p.display()),
            Backing::Memory => f.write_str("memory"),
        }
    }
}

/// An iSCSI target and what it exposes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Its IQN (`iqn.2024-01.org.example:disk1`).
    pub iqn: String,
    /// A human name reported as TargetAlias.
    #[serde(default)]
    pub alias: Option<String>,
    /// LUN -> device name.
    #[serde(default)]
    pub luns: BTreeMap<u16, String>,
    /// Initiators allowed to log in, by initiator name. An empty map admits
    /// no one.
    #[serde(default)]
    pub acl: BTreeMap<String, AclEntry>,
}

/// One initiator allowed on a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclEntry {
    /// The initiator's name (IQN, EUI or NAA form).
    pub initiator: String,
    /// The LUNs it sees; `None` means every mapped LUN.
    #[serde(default)]
    pub luns: Option<BTreeSet<u16>>,
    /// CHAP it must answer, if any.
    #[serde(default)]
    pub auth: Option<ChapAuth>,
}

/// CHAP for a login: what the initiator must prove and, for mutual CHAP,
/// what the target proves back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChapAuth {
    /// The initiator's credentials.
    pub chap: ChapCredentials,
    /// The target's credentials for mutual CHAP.
    #[serde(default)]
    pub mutual: Option<ChapCredentials>,
}

/// A CHAP user name and secret. `Debug` does not print the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChapCredentials {
    /// The CHAP name.
    pub user: String,
    /// The shared secret.
    pub secret: String,
}

impl fmt::Debug for ChapCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChapCredentials")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The largest LUN in SAM's flat addressing.
pub const MAX_LUN: u16 = 16383;
/// The longest iSCSI name (RFC 7143 §4.2.7.1).
pub const MAX_ISCSI_NAME: usize = 223;
/// The shortest CHAP secret accepted, in bytes (96 bits, RFC 7143 §12.1.3).
pub const MIN_CHAP_SECRET: usize = 12;
/// The longest CHAP secret accepted, in bytes.
pub const MAX_CHAP_SECRET: usize = 255;
/// Block sizes a device may have.
pub const BLOCK_SIZES: [u32; 2] = [512, 4096];

/// What kind of object a [`ConfigError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Object {
    /// A member.
    Member,
    /// A device.
    Device,
    /// A target.
    Target,
    /// An initiator in a target's ACL.
    Initiator,
    /// A LUN of a target.
    Lun,
    /// A link of a member.
    Link,
    /// A Failover Set.
    Set,
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Object::Member => "member",
            Object::Device => "device",
            Object::Target => "target",
            Object::Initiator => "initiator",
            Object::Lun => "LUN",
            Object::Link => "link",
            Object::Set => "set",
        })
    }
}

/// Checks a member, device or link name: 1 to 64 of `[A-Za-z0-9._-]`,
/// starting with a letter or digit.
pub fn check_name(object: Object, name: &str) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::InvalidName {
        object,
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() || name.len() > 64 {
        return Err(bad("must be 1 to 64 characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(bad("must start with a letter or digit"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(bad("may hold only letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

/// Checks an iSCSI name (RFC 7143 §4.2.7): `iqn.yyyy-mm.naming-authority[:unique]`
/// in lower case, `eui.` and 16 hex digits, or `naa.` and 16 or 32 hex
/// digits; at most 223 bytes.
pub fn check_iscsi_name(object: Object, name: &str) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::InvalidName {
        object,
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.len() > MAX_ISCSI_NAME {
        return Err(bad("longer than 223 bytes"));
    }
    let hex = |s: &str| s.chars().all(|c| c.is_ascii_hexdigit());
    if let Some(rest) = name.strip_prefix("iqn.") {
        let date_ok = rest.len() > 8
            && rest.as_bytes()[..7].iter().enumerate().all(|(i, b)| {
                if i == 4 {
                    *b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            })
            && rest.as_bytes()[7] == b'.';
        if !date_ok {
            return Err(bad(
                "an iqn name needs a date (yyyy-mm.) and a naming authority",
            ));
        }
        if !rest
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | ':'))
        {
            return Err(bad(
                "an iqn name holds only lower-case letters, digits, '-', '.' and ':'",
            ));
        }
        Ok(())
    } else if let Some(rest) = name.strip_prefix("eui.") {
        if rest.len() == 16 && hex(rest) {
            Ok(())
        } else {
            Err(bad("an eui name has 16 hex digits"))
        }
    } else if let Some(rest) = name.strip_prefix("naa.") {
        if (rest.len() == 16 || rest.len() == 32) && hex(rest) {
            Ok(())
        } else {
            Err(bad("a naa name has 16 or 32 hex digits"))
        }
    } else {
        Err(bad("must start with iqn., eui. or naa."))
    }
}

impl ChapCredentials {
    /// Checks the user name (non-empty, printable) and the secret length.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.user.is_empty() || self.user.chars().any(|c| c.is_control()) {
            return Err(ConfigError::InvalidChapUser {
                user: self.user.clone(),
            });
        }
        let len = self.secret.len();
        if !(MIN_CHAP_SECRET..=MAX_CHAP_SECRET).contains(&len) {
            return Err(ConfigError::ChapSecretLength { len });
        }
        Ok(())
    }
}

impl ChapAuth {
    /// Checks both credentials, and that mutual CHAP does not reuse the
    /// initiator's secret (RFC 7143 §12.1.3 forbids one secret both ways).
    pub fn check(&self) -> Result<(), ConfigError> {
        self.chap.check()?;
        if let Some(mutual) = &self.mutual {
            mutual.check()?;
            if mutual.secret == self.chap.secret {
                return Err(ConfigError::MutualSecretReused);
            }
        }
        Ok(())
    }
}

impl Member {
    /// Checks the member on its own: names, at least one link, no portals
    /// on a witness.
    pub fn check(&self) -> Result<(), ConfigError> {
        check_name(Object::Member, &self.id.0)?;
        if self.links.is_empty() {
            return Err(ConfigError::NoLinks {
                member: self.id.0.clone(),
            });
        }
        for link in self.links.keys() {
            check_name(Object::Link, &link.0)?;
        }
        if self.witness && !self.portals.is_empty() {
            return Err(ConfigError::WitnessWithPortals {
                member: self.id.0.clone(),
            });
        }
        if !self.witness && self.port_id().is_none() {
            return Err(ConfigError::NodeIdRange {
                member: self.id.0.clone(),
                node_id: self.node_id,
            });
        }
        Ok(())
    }

    /// The member's target port group id, which is also its relative target
    /// port id and its portals' target portal group tag: its node id, when
    /// that fits in 16 bits and is not 0. Unique in the cluster because
    /// node ids are.
    pub fn port_id(&self) -> Option<u16> {
        u16::try_from(self.node_id).ok().filter(|&id| id != 0)
    }
}

impl Device {
    /// Checks the device on its own: name, block size, size, and that a
    /// relative backing path stays inside the storage directory.
    pub fn check(&self) -> Result<(), ConfigError> {
        check_name(Object::Device, &self.name)?;
        if let Backing::Path(path) = &self.backing {
            let bad = |reason: &str| ConfigError::InvalidBacking {
                device: self.name.clone(),
                path: path.display().to_string(),
                reason: reason.to_owned(),
            };
            if path.as_os_str().is_empty() {
                return Err(bad("is empty"));
            }
            if path.is_relative()
                && !path
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)))
            {
                return Err(bad(
                    "leaves the storage directory (a relative path may hold no '..' or '.')",
                ));
            }
        }
        if !BLOCK_SIZES.contains(&self.block_size) {
            return Err(ConfigError::InvalidBlockSize {
                device: self.name.clone(),
                block_size: self.block_size,
            });
        }
        check_size(&self.name, self.size, self.block_size)
    }
}

/// The largest device size: the largest file offset Linux takes (`off_t`),
/// rounded down to 4096-byte blocks. A member's filesystem or block device
/// may hold less; the member taking the request checks that.
pub const MAX_DEVICE_SIZE: u64 = (i64::MAX as u64) & !4095;

/// Checks that `size` is a non-zero multiple of `block_size`, and not
/// larger than [`MAX_DEVICE_SIZE`].
pub(super) fn check_size(device: &str, size: u64, block_size: u32) -> Result<(), ConfigError> {
    if size > MAX_DEVICE_SIZE {
        return Err(ConfigError::SizeTooLarge {
            device: device.to_owned(),
            size,
            max: MAX_DEVICE_SIZE,
        });
    }
    if size == 0 || !size.is_multiple_of(u64::from(block_size)) {
        return Err(ConfigError::InvalidSize {
            device: device.to_owned(),
            size,
            block_size,
        });
    }
    Ok(())
}

// `MemberId` and `LinkName` are plain strings on the wire and in snapshots
// (map keys included).
macro_rules! serde_as_string {
    ($($t:ident),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map($t)
            }
        }
    )*};
}
serde_as_string!(MemberId, LinkName);
