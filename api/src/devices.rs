//! Virtual devices: `POST /v1/devices`, `POST /v1/devices/{name}/resize`
//! and `GET /v1/devices`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Others, Policy};

/// The block size of a device created without one.
pub const DEFAULT_BLOCK_SIZE: u32 = 512;

/// `POST /v1/devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDevice {
    /// The device's name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// A path on shared storage (absolute, or relative to each member's
    /// storage directory), or `"memory"` (one copy per member, not shared:
    /// tests and demos); `NAME.img` in the storage directory when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backing: Option<String>,
    /// 512 ([`DEFAULT_BLOCK_SIZE`]) or 4096.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u32>,
    /// Whether unwritten blocks take no space.
    #[serde(default)]
    pub thin: bool,
    /// Whether writes are refused.
    #[serde(default)]
    pub read_only: bool,
    /// Its identity; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
    /// The Failover Set serving it (`default` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// Its port policy (active-passive when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// For active-passive: the non-primaries' state (standby when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub others: Option<Others>,
}

/// `POST /v1/devices/{name}/resize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The Failover Set serving it (read as `default` when missing).
    #[serde(default = "default_set")]
    pub set: String,
    /// Its port policy (read as active-passive when missing).
    #[serde(default = "default_policy")]
    pub policy: Policy,
    /// For active-passive: the non-primaries' state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub others: Option<Others>,
    /// Where it is mapped, as `(target, lun)` pairs (read as none when
    /// missing).
    #[serde(default)]
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

/// `GET /v1/devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceList {
    /// By name.
    pub devices: Vec<DeviceView>,
}

fn default_set() -> String {
    "default".to_owned()
}

fn default_policy() -> Policy {
    Policy::ActivePassive
}
