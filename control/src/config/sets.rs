//! Failover Sets (SPEC.md §3, seed claims): which members serve a device
//! and in what order of preference, and each device's port policy.
//!
//! | composition    | members                          | roles                                   |
//! |----------------|----------------------------------|-----------------------------------------|
//! | `single`       | one member                       | it is Primary; no failover              |
//! | `n-way`        | members, in priority order       | Primary, Secondary, the rest Alternates |
//! | `hierarchical` | sets (single or n-way), in order | a failure is handled inside the child   |
//! |                |                                  | set first; roles move to a sibling set  |
//! |                |                                  | only when the whole child set is down   |
//!
//! The set [`DEFAULT_SET`] always exists: an n-way set of every data
//! member in node-id order (members joining later join it). Devices
//! created before sets existed, and devices created without `--set`,
//! belong to it, so older configurations and snapshots need no migration.
//!
//! Failback (whether a recovered member of higher priority takes the
//! Primary role back) is a property of the set, not of each device: roles
//! are decided per set, and devices of one set share its Primary.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::command::{changed, not_found, ConfigError, Response};
use super::model::{check_name, ClusterConfig, Object};
use crate::MemberId;

/// The set every data member belongs to, and every device unless told.
pub const DEFAULT_SET: &str = "default";

/// The longest failback delay accepted, in seconds (a day).
pub const MAX_FAILBACK_DELAY_SECS: u64 = 86_400;

/// How a set is composed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Composition {
    /// One member, no failover.
    Single,
    /// Members in priority order: Primary, Secondary, Alternates.
    NWay,
    /// Sets in priority order (each `single` or `n-way`).
    Hierarchical,
}

impl std::fmt::Display for Composition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Composition::Single => "single",
            Composition::NWay => "n-way",
            Composition::Hierarchical => "hierarchical",
        })
    }
}

/// Whether a recovered member of higher priority takes the Primary role
/// back from a healthy Primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum Failback {
    /// Never by itself: an operator moves the role (`member drain`).
    #[default]
    Manual,
    /// Once the member has been eligible for `delay_secs` without a break.
    Auto {
        /// Seconds of stable eligibility first.
        delay_secs: u64,
    },
}

/// A Failover Set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverSet {
    /// Its name, unique among sets.
    pub name: String,
    /// How it is composed.
    pub composition: Composition,
    /// Member ids (`single`, `n-way`) or set names (`hierarchical`), in
    /// priority order: the first is the preferred Primary.
    pub members: Vec<String>,
    /// Failback.
    #[serde(default)]
    pub failback: Failback,
}

/// The access state of the members that are not Primary, for an
/// active-passive device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Others {
    /// Standby: hosts keep the path but send no I/O.
    #[default]
    Standby,
    /// Active/Non-optimized: hosts may use the path, at a lower priority.
    NonOptimized,
}

/// How a device's ports are used by the members of its set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum PortPolicy {
    /// One writer: the Primary is Active/Optimized, the others `others`.
    ActivePassive {
        /// The others' state.
        #[serde(default)]
        others: Others,
    },
    /// Every healthy member holding a lease is Active/Optimized.
    ActiveActive,
}

impl Default for PortPolicy {
    fn default() -> Self {
        PortPolicy::ActivePassive {
            others: Others::Standby,
        }
    }
}

impl std::fmt::Display for PortPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PortPolicy::ActivePassive {
                others: Others::Standby,
            } => "active-passive",
            PortPolicy::ActivePassive {
                others: Others::NonOptimized,
            } => "active-passive (others non-optimized)",
            PortPolicy::ActiveActive => "active-active",
        })
    }
}

/// The name of the set a device belongs to when none is given.
pub fn default_set_name() -> String {
    DEFAULT_SET.to_owned()
}

fn invalid(set: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidSet {
        set: set.to_owned(),
        reason: reason.into(),
    }
}

impl ClusterConfig {
    /// The set `name` as it is now: [`DEFAULT_SET`] holds every data
    /// member in node-id order.
    pub fn failover_set(&self, name: &str) -> Option<FailoverSet> {
        if name == DEFAULT_SET {
            let mut data: Vec<_> = self.members.values().filter(|m| !m.witness).collect();
            data.sort_by_key(|m| m.node_id);
            return Some(FailoverSet {
                name: DEFAULT_SET.to_owned(),
                composition: Composition::NWay,
                members: data.iter().map(|m| m.id.0.clone()).collect(),
                failback: Failback::Manual,
            });
        }
        self.sets.get(name).cloned()
    }

    /// Every set, [`DEFAULT_SET`] first.
    pub fn failover_sets(&self) -> Vec<FailoverSet> {
        let mut all: Vec<FailoverSet> = self.failover_set(DEFAULT_SET).into_iter().collect();
        all.extend(self.sets.values().cloned());
        all
    }

    /// The members of set `name` in priority order (through its child sets
    /// for a hierarchical one).
    pub fn set_members(&self, name: &str) -> Vec<MemberId> {
        let Some(set) = self.failover_set(name) else {
            return Vec::new();
        };
        match set.composition {
            Composition::Hierarchical => set
                .members
                .iter()
                .flat_map(|child| self.set_members(child))
                .collect(),
            _ => set.members.iter().map(|m| MemberId(m.clone())).collect(),
        }
    }

    /// Checks `set` against the configuration: its name, composition and
    /// members (data members or, for a hierarchical set, single or n-way
    /// sets; no member twice in one hierarchy).
    fn check_set(&self, set: &FailoverSet) -> Result<(), ConfigError> {
        check_name(Object::Set, &set.name)?;
        let name = &set.name;
        if let Failback::Auto { delay_secs } = set.failback {
            if delay_secs > MAX_FAILBACK_DELAY_SECS {
                return Err(invalid(
                    name,
                    format!(
                        "a failback delay of {delay_secs} s is longer than a day ({MAX_FAILBACK_DELAY_SECS} s)"
                    ),
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for m in &set.members {
            if !seen.insert(m) {
                return Err(invalid(name, format!("{m} is listed twice")));
            }
        }
        match set.composition {
            Composition::Single if set.members.len() != 1 => {
                return Err(invalid(
                    name,
                    format!(
                        "a single set has exactly one member, not {}",
                        set.members.len()
                    ),
                ))
            }
            _ if set.members.is_empty() => {
                return Err(invalid(name, "a set needs at least one member"))
            }
            Composition::Hierarchical => {
                for child in &set.members {
                    if child == name {
                        return Err(invalid(name, "a set cannot hold itself"));
                    }
                    let c = self
                        .failover_set(child)
                        .ok_or_else(|| not_found(Object::Set, child))?;
                    if c.composition == Composition::Hierarchical {
                        return Err(invalid(
                            name,
                            format!("{child} is hierarchical; a hierarchical set holds single or n-way sets"),
                        ));
                    }
                }
                let mut owner: BTreeMap<MemberId, &String> = BTreeMap::new();
                for child in &set.members {
                    for m in self.set_members(child) {
                        if let Some(first) = owner.insert(m.clone(), child) {
                            return Err(invalid(
                                name,
                                format!("member {m} is in both {first} and {child}; a member may be in one set of a hierarchy"),
                            ));
                        }
                    }
                }
            }
            _ => {
                for m in &set.members {
                    let member = self
                        .members
                        .get(&MemberId(m.clone()))
                        .ok_or_else(|| not_found(Object::Member, m))?;
                    if member.witness {
                        return Err(invalid(
                            name,
                            format!("{m} is a witness; it serves no data"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The hierarchical sets holding `set`.
    fn parents_of(&self, set: &str) -> Vec<String> {
        self.sets
            .values()
            .filter(|s| s.composition == Composition::Hierarchical)
            .filter(|s| s.members.iter().any(|c| c == set))
            .map(|s| s.name.clone())
            .collect()
    }

    /// Checks every hierarchical set holding `set` as if `set` were
    /// `changed`.
    fn check_parents(&self, changed: &FailoverSet) -> Result<(), ConfigError> {
        let mut next = self.clone();
        next.sets.insert(changed.name.clone(), changed.clone());
        for parent in self.parents_of(&changed.name) {
            if let Some(p) = next.sets.get(&parent) {
                next.check_set(p)?;
            }
        }
        Ok(())
    }

    pub(super) fn create_set(&mut self, set: &FailoverSet) -> Result<Response, ConfigError> {
        if set.name == DEFAULT_SET || self.sets.contains_key(&set.name) {
            return Err(ConfigError::AlreadyExists {
                object: Object::Set,
                name: set.name.clone(),
            });
        }
        self.check_set(set)?;
        self.sets.insert(set.name.clone(), set.clone());
        Ok(Response::Changed)
    }

    pub(super) fn delete_set(&mut self, name: &str) -> Result<Response, ConfigError> {
        if name == DEFAULT_SET {
            return Err(invalid(name, "the default set cannot be deleted"));
        }
        if !self.sets.contains_key(name) {
            return Err(not_found(Object::Set, name));
        }
        if let Some(d) = self.devices.values().find(|d| d.set == name) {
            return Err(invalid(
                name,
                format!("device {} belongs to it; move the device first", d.name),
            ));
        }
        if let Some(p) = self.parents_of(name).first() {
            return Err(invalid(
                name,
                format!("it is a member of set {p}; remove it from there first"),
            ));
        }
        self.sets.remove(name);
        Ok(Response::Changed)
    }

    /// Adds `member` (a member id, or a set for a hierarchical set) at
    /// `position` in the priority order (the end when None).
    pub(super) fn add_set_member(
        &mut self,
        set: &str,
        member: &str,
        position: Option<usize>,
    ) -> Result<Response, ConfigError> {
        let mut s = self.editable_set(set)?;
        if s.members.iter().any(|m| m == member) {
            return Ok(Response::Unchanged);
        }
        let at = position.unwrap_or(s.members.len()).min(s.members.len());
        s.members.insert(at, member.to_owned());
        self.check_set(&s)?;
        self.check_parents(&s)?;
        self.sets.insert(s.name.clone(), s);
        Ok(Response::Changed)
    }

    pub(super) fn remove_set_member(
        &mut self,
        set: &str,
        member: &str,
    ) -> Result<Response, ConfigError> {
        let mut s = self.editable_set(set)?;
        let before = s.members.len();
        s.members.retain(|m| m != member);
        if s.members.len() == before {
            return Err(invalid(set, format!("{member} is not a member of it")));
        }
        self.check_set(&s)?;
        self.sets.insert(s.name.clone(), s);
        Ok(Response::Changed)
    }

    pub(super) fn set_failback(
        &mut self,
        set: &str,
        failback: Failback,
    ) -> Result<Response, ConfigError> {
        let mut s = self.editable_set(set)?;
        let did = s.failback != failback;
        s.failback = failback;
        self.check_set(&s)?;
        self.sets.insert(s.name.clone(), s);
        Ok(changed(did))
    }

    fn editable_set(&self, set: &str) -> Result<FailoverSet, ConfigError> {
        if set == DEFAULT_SET {
            return Err(invalid(
                set,
                "the default set holds every data member; create a set to choose members or failback",
            ));
        }
        self.sets
            .get(set)
            .cloned()
            .ok_or_else(|| not_found(Object::Set, set))
    }

    /// Moves device `name` to set `set` and/or gives it `policy`.
    pub(super) fn set_device_policy(
        &mut self,
        name: &str,
        set: Option<&str>,
        policy: Option<PortPolicy>,
    ) -> Result<Response, ConfigError> {
        if let Some(s) = set {
            if self.failover_set(s).is_none() {
                return Err(not_found(Object::Set, s));
            }
        }
        let device = self
            .devices
            .get_mut(name)
            .ok_or_else(|| not_found(Object::Device, name))?;
        let before = (device.set.clone(), device.policy);
        if let Some(s) = set {
            device.set = s.to_owned();
        }
        if let Some(p) = policy {
            device.policy = p;
        }
        Ok(changed((device.set.clone(), device.policy) != before))
    }

    /// Refuses to remove `member` from the cluster while a set names it.
    pub(super) fn check_member_unused(&self, member: &MemberId) -> Result<(), ConfigError> {
        match self
            .sets
            .values()
            .find(|s| s.composition != Composition::Hierarchical && s.members.contains(&member.0))
        {
            Some(s) => Err(invalid(
                &s.name,
                format!("member {member} is in it; remove it from the set first"),
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::config::{Backing, Command, Device, Member};

    fn member(id: &str, node_id: u64, witness: bool) -> Command {
        let addr: SocketAddr = format!("127.0.0.1:{}", 7000 + node_id).parse().unwrap();
        Command::UpsertMember(Member {
            id: MemberId(id.into()),
            node_id,
            links: [(crate::LinkName("a".into()), addr)].into(),
            api: addr,
            portals: if witness { vec![] } else { vec![addr] },
            witness,
        })
    }

    fn set(name: &str, composition: Composition, members: &[&str]) -> FailoverSet {
        FailoverSet {
            name: name.into(),
            composition,
            members: members.iter().map(|m| (*m).to_owned()).collect(),
            failback: Failback::Manual,
        }
    }

    fn device(name: &str, set: &str) -> Command {
        Command::CreateDevice(Device {
            name: name.into(),
            uuid: uuid::Uuid::new_v4(),
            size: 1 << 20,
            backing: Backing::Memory,
            block_size: 512,
            thin: false,
            read_only: false,
            set: set.into(),
            policy: PortPolicy::default(),
        })
    }

    /// Members m1..m6 (node ids 6..1: the default set orders by node id),
    /// witness w; sets c1 = {m1, m2}, c2 = {m3, m4}.
    fn base() -> ClusterConfig {
        let mut c = ClusterConfig::default();
        for (i, m) in ["m1", "m2", "m3", "m4", "m5", "m6"].iter().enumerate() {
            c.apply(&member(m, 6 - i as u64, false)).unwrap();
        }
        c.apply(&member("w", 9, true)).unwrap();
        for s in [
            set("c1", Composition::NWay, &["m1", "m2"]),
            set("c2", Composition::NWay, &["m3", "m4"]),
        ] {
            c.apply(&Command::CreateSet(s)).unwrap();
        }
        c
    }

    fn reason(r: Result<Response, ConfigError>) -> String {
        match r {
            Err(e) => e.to_string(),
            Ok(r) => panic!("accepted: {r:?}"),
        }
    }

    #[test]
    fn the_default_set_holds_every_data_member_by_node_id() {
        let c = base();
        let d = c.failover_set(DEFAULT_SET).unwrap();
        assert_eq!(d.composition, Composition::NWay);
        assert_eq!(d.members, ["m6", "m5", "m4", "m3", "m2", "m1"]);
        assert_eq!(c.failover_sets()[0].name, DEFAULT_SET);
        // A device from before sets: the default set, active-passive.
        let old: Device = serde_json::from_value(serde_json::json!({
            "name": "d0", "uuid": "00000000-0000-4000-8000-000000000001",
            "size": 4096, "backing": "memory", "block_size": 512
        }))
        .unwrap();
        assert_eq!(old.set, DEFAULT_SET);
        assert_eq!(old.policy, PortPolicy::default());
        // A configuration from before sets has none but the default.
        let json = serde_json::to_value(ClusterConfig::default()).unwrap();
        assert!(json.get("sets").is_none());
    }

    #[test]
    fn bad_sets_are_refused_and_change_nothing() {
        let c = base();
        let table: Vec<(&str, Command, &str)> = vec![
            (
                "unknown member",
                Command::CreateSet(set("s", Composition::NWay, &["m1", "m9"])),
                "no member m9",
            ),
            (
                "witness",
                Command::CreateSet(set("s", Composition::NWay, &["m1", "w"])),
                "w is a witness",
            ),
            (
                "twice",
                Command::CreateSet(set("s", Composition::NWay, &["m1", "m1"])),
                "m1 is listed twice",
            ),
            (
                "empty",
                Command::CreateSet(set("s", Composition::NWay, &[])),
                "at least one member",
            ),
            (
                "single of two",
                Command::CreateSet(set("s", Composition::Single, &["m1", "m2"])),
                "exactly one member, not 2",
            ),
            (
                "bad name",
                Command::CreateSet(set("-s", Composition::NWay, &["m1"])),
                "must start with a letter or digit",
            ),
            (
                "exists",
                Command::CreateSet(set("c1", Composition::NWay, &["m5"])),
                "set c1 already exists",
            ),
            (
                "default exists",
                Command::CreateSet(set(DEFAULT_SET, Composition::NWay, &["m5"])),
                "set default already exists",
            ),
            (
                "unknown child",
                Command::CreateSet(set("h", Composition::Hierarchical, &["c1", "c9"])),
                "no set c9",
            ),
            (
                "member in two children",
                Command::CreateSet(set("h", Composition::Hierarchical, &["c1", DEFAULT_SET])),
                "a member may be in one set of a hierarchy",
            ),
            (
                "child holds itself",
                Command::CreateSet(set("h", Composition::Hierarchical, &["h"])),
                "cannot hold itself",
            ),
            (
                "delete default",
                Command::DeleteSet {
                    name: DEFAULT_SET.into(),
                },
                "cannot be deleted",
            ),
            (
                "delete unknown",
                Command::DeleteSet { name: "s9".into() },
                "no set s9",
            ),
            (
                "edit default",
                Command::AddSetMember {
                    set: DEFAULT_SET.into(),
                    member: "m1".into(),
                    position: None,
                },
                "holds every data member",
            ),
            (
                "remove absent",
                Command::RemoveSetMember {
                    set: "c1".into(),
                    member: "m5".into(),
                },
                "m5 is not a member of it",
            ),
            (
                "remove last",
                Command::RemoveSetMember {
                    set: "c1".into(),
                    member: "m1".into(),
                },
                "",
            ),
            (
                "long failback",
                Command::SetFailback {
                    set: "c1".into(),
                    failback: Failback::Auto {
                        delay_secs: 100_000,
                    },
                },
                "longer than a day",
            ),
            ("device in unknown set", device("d9", "s9"), "no set s9"),
            (
                "policy of unknown device",
                Command::SetDevicePolicy {
                    name: "d9".into(),
                    set: None,
                    policy: Some(PortPolicy::ActiveActive),
                },
                "no device d9",
            ),
            (
                "device to unknown set",
                Command::SetDevicePolicy {
                    name: "d9".into(),
                    set: Some("s9".into()),
                    policy: None,
                },
                "no set s9",
            ),
            (
                "remove member in a set",
                Command::RemoveMember {
                    id: MemberId("m1".into()),
                },
                "member m1 is in it",
            ),
        ];
        for (what, cmd, want) in table {
            let mut after = c.clone();
            if what == "remove last" {
                after
                    .apply(&Command::RemoveSetMember {
                        set: "c1".into(),
                        member: "m2".into(),
                    })
                    .unwrap();
                let before = after.clone();
                let why = reason(after.apply(&cmd));
                assert!(why.contains("at least one member"), "{what}: {why}");
                assert_eq!(after, before, "{what}");
                continue;
            }
            let why = reason(after.apply(&cmd));
            assert!(why.contains(want), "{what}: {why}");
            assert_eq!(after, c, "{what} changed the configuration");
        }
    }

    #[test]
    fn hierarchies_keep_each_member_in_one_child() {
        let mut c = base();
        c.apply(&Command::CreateSet(set(
            "h",
            Composition::Hierarchical,
            &["c1", "c2"],
        )))
        .unwrap();
        assert_eq!(
            c.set_members("h"),
            ["m1", "m2", "m3", "m4"].map(|m| MemberId(m.into()))
        );
        // A hierarchy of hierarchies is refused.
        let why = reason(c.clone().apply(&Command::CreateSet(set(
            "hh",
            Composition::Hierarchical,
            &["h"],
        ))));
        assert!(why.contains("h is hierarchical"), "{why}");
        // Adding m3 to c1 would put it in both children of h.
        let before = c.clone();
        let why = reason(c.apply(&Command::AddSetMember {
            set: "c1".into(),
            member: "m3".into(),
            position: None,
        }));
        assert!(why.contains("member m3 is in both c1 and c2"), "{why}");
        assert_eq!(c, before);
        // A child of a hierarchy cannot be deleted; a set with devices neither.
        let why = reason(c.clone().apply(&Command::DeleteSet { name: "c1".into() }));
        assert!(why.contains("it is a member of set h"), "{why}");
        c.apply(&device("d1", "h")).unwrap();
        let why = reason(c.clone().apply(&Command::DeleteSet { name: "h".into() }));
        assert!(why.contains("device d1 belongs to it"), "{why}");
        // Moved away, the set goes.
        c.apply(&Command::SetDevicePolicy {
            name: "d1".into(),
            set: Some("c2".into()),
            policy: Some(PortPolicy::ActiveActive),
        })
        .unwrap();
        assert_eq!(
            (c.devices["d1"].set.as_str(), c.devices["d1"].policy),
            ("c2", PortPolicy::ActiveActive)
        );
        assert_eq!(
            c.apply(&Command::DeleteSet { name: "h".into() }),
            Ok(Response::Changed)
        );
        assert_eq!(
            c.apply(&Command::DeleteSet { name: "c1".into() }),
            Ok(Response::Changed)
        );
    }

    #[test]
    fn members_are_added_in_priority_order() {
        let mut c = base();
        let add = |m: &str, position| Command::AddSetMember {
            set: "c1".into(),
            member: m.into(),
            position,
        };
        assert_eq!(c.apply(&add("m5", Some(0))), Ok(Response::Changed));
        assert_eq!(c.apply(&add("m6", None)), Ok(Response::Changed));
        assert_eq!(c.apply(&add("m6", Some(0))), Ok(Response::Unchanged));
        assert_eq!(c.sets["c1"].members, ["m5", "m1", "m2", "m6"]);
        let fb = Command::SetFailback {
            set: "c1".into(),
            failback: Failback::Auto { delay_secs: 30 },
        };
        assert_eq!(c.apply(&fb), Ok(Response::Changed));
        assert_eq!(c.apply(&fb), Ok(Response::Unchanged));
        let json = serde_json::to_value(&c.sets["c1"]).unwrap();
        assert_eq!(json["composition"], "n-way");
        assert_eq!(
            json["failback"],
            serde_json::json!({"mode": "auto", "delay_secs": 30})
        );
    }
}
