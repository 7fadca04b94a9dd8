//! iSCSI targets, their LUNs and their ACLs: `/v1/targets`,
//! `/v1/targets/{iqn}/luns` and `/v1/targets/{iqn}/acl`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// `POST /v1/targets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTarget {
    /// Its IQN.
    pub iqn: String,
    /// Its alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// `GET /v1/targets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetList {
    /// By IQN.
    pub targets: Vec<TargetView>,
}

/// `POST /v1/targets/{iqn}/luns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapLun {
    /// The device's name.
    pub device: String,
    /// The LUN.
    pub lun: u16,
}

/// `POST /v1/targets/{iqn}/acl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowInitiator {
    /// The initiator's name.
    pub initiator: String,
    /// The CHAP user it must log in as (with `chap_secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap_user: Option<String>,
    /// The CHAP secret (with `chap_user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap_secret: Option<String>,
    /// For mutual CHAP, the target's user name (with `mutual_chap_secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutual_chap_user: Option<String>,
    /// For mutual CHAP, the target's secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutual_chap_secret: Option<String>,
    /// The LUNs it sees; all mapped LUNs when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub luns: Option<BTreeSet<u16>>,
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

/// `GET /v1/targets/{iqn}/acl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclList {
    /// The target.
    pub target: String,
    /// By initiator name.
    pub acl: Vec<AclView>,
}
