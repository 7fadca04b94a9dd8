//! Failover Sets and device port policies: `GET/POST /v1/sets`,
//! `DELETE /v1/sets/{name}`, `POST /v1/sets/{name}/members`,
//! `DELETE /v1/sets/{name}/members/{member}`, `POST /v1/sets/{name}/failback`
//! and `POST /v1/devices/{name}/policy`.

use serde::{Deserialize, Serialize};

/// How a set is composed: `"single"`, `"n-way"` or `"hierarchical"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Composition {
    /// One member, no failover.
    Single,
    /// Members in priority order: Primary, Secondary, Alternates.
    NWay,
    /// Sets in priority order.
    Hierarchical,
}

/// A device's port policy: `"active-passive"` or `"active-active"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// One writer: the Primary Active/Optimized.
    ActivePassive,
    /// Every healthy member Active/Optimized.
    ActiveActive,
}

/// The state of an active-passive device's non-primary members:
/// `"standby"` or `"non-optimized"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Others {
    /// Standby.
    Standby,
    /// Active/Non-optimized.
    NonOptimized,
}

/// Failback: `"manual"` or `"auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailbackMode {
    /// An operator moves the role back.
    Manual,
    /// A recovered member of higher priority takes it back after a delay.
    Auto,
}

/// `POST /v1/sets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSet {
    /// The set's name.
    pub name: String,
    /// Its composition.
    pub composition: Composition,
    /// Member ids (single, n-way) or set names (hierarchical), in priority
    /// order.
    pub members: Vec<String>,
    /// Failback; manual when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failback: Option<FailbackMode>,
    /// Seconds a recovered member must stay eligible before an automatic
    /// failback (60 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failback_delay_secs: Option<u64>,
}

/// `POST /v1/sets/{name}/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddSetMember {
    /// The member id (a set name, for a hierarchical set).
    pub member: String,
    /// Its place in the priority order, 0 first; the end when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<usize>,
}

/// `POST /v1/sets/{name}/failback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetFailback {
    /// The mode.
    pub failback: FailbackMode,
    /// For `auto`: seconds of stable eligibility first (60 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_secs: Option<u64>,
}

/// `POST /v1/devices/{name}/policy`: what is given changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetDevicePolicy {
    /// The set the device moves to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// Its port policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// For active-passive: the others' state (standby when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub others: Option<Others>,
}

/// A set as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetView {
    /// Name.
    pub name: String,
    /// Composition.
    pub composition: Composition,
    /// Members (or child sets) in priority order.
    pub members: Vec<String>,
    /// Failback.
    pub failback: FailbackMode,
    /// Seconds before an automatic failback (absent for manual).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failback_delay_secs: Option<u64>,
    /// The built-in set of every data member.
    #[serde(default)]
    pub builtin: bool,
    /// The devices that belong to it.
    #[serde(default)]
    pub devices: Vec<String>,
}

/// `GET /v1/sets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetList {
    /// The built-in set first, then by name.
    pub sets: Vec<SetView>,
}

/// The roles of one set as committed (`GET /v1/roles`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleView {
    /// The set.
    pub set: String,
    /// The epoch of the assignment (0: none committed yet).
    pub epoch: u64,
    /// The Primary.
    #[serde(default)]
    pub primary: Option<String>,
    /// The Secondary.
    #[serde(default)]
    pub secondary: Option<String>,
    /// The Alternates, in the order they would be promoted.
    #[serde(default)]
    pub alternates: Vec<String>,
    /// During a planned handover, the former Primary still serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outgoing: Option<String>,
    /// When it was decided (Unix milliseconds; 0: never).
    #[serde(default)]
    pub since_ms: u64,
    /// Why.
    #[serde(default)]
    pub why: String,
}

/// `GET /v1/events`: the history of committed role assignments (every set,
/// the last 256, oldest first), each as the roles it gave and why. It is
/// replicated: every member answers the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventList {
    /// Oldest first.
    pub events: Vec<RoleView>,
}

/// `GET /v1/roles`: every set, the built-in one first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleList {
    /// By set.
    pub roles: Vec<RoleView>,
}
