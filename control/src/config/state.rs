//! What the replicated log decides, in two parts kept apart: the user's
//! configuration ([`ClusterConfig`]: members, devices, targets, access)
//! and the log's own state (the idempotency table of keyed writes, the
//! role assignments of the Failover Sets, and each device's data-path
//! state). Only a change of the first is a
//! configuration change: trellisd's exports applier follows
//! [`Applied::config_index`](super::store) alone, so bookkeeping of the log
//! does not look like a new configuration to it.
//!
//! The serialized form (snapshots, the applied state on disk) is the
//! configuration's fields with the log's state beside them, the form
//! [`ClusterConfig`] had when it held the idempotency table: snapshots of
//! either form load.

use serde::{Deserialize, Serialize};

use super::command::{Command, ConfigError, Response};
use super::devstate::DeviceStates;
use super::once::RecentWrites;
use super::roles::RoleTable;
use super::ClusterConfig;

/// The replicated state: the configuration and the log's own state.
/// Serialized as one JSON object: the configuration's fields, and beside
/// them `recent_writes` and `roles` when not empty. (Not with serde's
/// `flatten`, which cannot read the configuration's integer map keys.)
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplicatedState {
    /// The user's configuration.
    pub config: ClusterConfig,
    /// The keyed writes applied lately, so that a resent one is not
    /// applied twice.
    pub recent_writes: RecentWrites,
    /// The committed role assignment of each Failover Set.
    pub roles: RoleTable,
    /// The data path's state of each device (SCSI state every member
    /// shares), opaque here.
    pub device_states: DeviceStates,
}

const RECENT_WRITES: &str = "recent_writes";
const ROLES: &str = "roles";
const DEVICE_STATES: &str = "device_states";

impl Serialize for ReplicatedState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let mut v = serde_json::to_value(&self.config).map_err(S::Error::custom)?;
        let Some(obj) = v.as_object_mut() else {
            return Err(S::Error::custom("the configuration is not an object"));
        };
        if !self.recent_writes.is_empty() {
            let w = serde_json::to_value(&self.recent_writes).map_err(S::Error::custom)?;
            obj.insert(RECENT_WRITES.into(), w);
        }
        if !self.roles.is_empty() {
            let r = serde_json::to_value(&self.roles).map_err(S::Error::custom)?;
            obj.insert(ROLES.into(), r);
        }
        if !self.device_states.is_empty() {
            let d = serde_json::to_value(&self.device_states).map_err(S::Error::custom)?;
            obj.insert(DEVICE_STATES.into(), d);
        }
        v.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ReplicatedState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut v = serde_json::Value::deserialize(d)?;
        let Some(obj) = v.as_object_mut() else {
            return Err(D::Error::custom("the replicated state is not an object"));
        };
        let take = |obj: &mut serde_json::Map<String, serde_json::Value>, k: &str| obj.remove(k);
        let recent_writes = match take(obj, RECENT_WRITES) {
            Some(w) => serde_json::from_value(w).map_err(D::Error::custom)?,
            None => RecentWrites::default(),
        };
        let roles = match take(obj, ROLES) {
            Some(r) => serde_json::from_value(r).map_err(D::Error::custom)?,
            None => RoleTable::default(),
        };
        let device_states = match take(obj, DEVICE_STATES) {
            Some(d) => serde_json::from_value(d).map_err(D::Error::custom)?,
            None => DeviceStates::default(),
        };
        let config = serde_json::from_value(v).map_err(D::Error::custom)?;
        Ok(ReplicatedState {
            config,
            recent_writes,
            roles,
            device_states,
        })
    }
}

/// What applying one command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What the client of the write gets.
    pub result: Result<Response, ConfigError>,
    /// Whether the user's configuration changed.
    pub config_changed: bool,
}

impl ReplicatedState {
    /// Applies one command: a keyed write ([`Command::Once`]) answers what
    /// it answered before when it is remembered, else applies its command
    /// and is remembered; a configuration command changes the
    /// configuration only when it is valid.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        match command {
            Command::Once { command, .. } if matches!(**command, Command::Once { .. }) => Outcome {
                result: Err(ConfigError::NestedOnce),
                config_changed: false,
            },
            Command::Once { key, command } => {
                if let Some(result) = self.recent_writes.replay(key, command) {
                    return Outcome {
                        result,
                        config_changed: false,
                    };
                }
                let outcome = self.apply(command);
                self.recent_writes.record(key, command, &outcome.result);
                outcome
            }
            Command::AssignRoles { proposals } => Outcome {
                result: self.roles.assign(&self.config, proposals),
                config_changed: false,
            },
            Command::SetDeviceState {
                device,
                expect,
                state,
            } => Outcome {
                result: self
                    .device_states
                    .set(&self.config, device, *expect, state.as_deref()),
                config_changed: false,
            },
            _ => {
                let result = self.config.apply(command);
                let config_changed = result == Ok(Response::Changed);
                if config_changed {
                    self.roles.prune(&self.config);
                    self.device_states.prune(&self.config);
                }
                Outcome {
                    result,
                    config_changed,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_snapshots_load_and_the_form_is_unchanged() {
        let mut s = ReplicatedState::default();
        let create = Command::CreateTarget {
            iqn: "iqn.2024-01.org.example:t1".into(),
            alias: None,
        };
        let keyed = Command::Once {
            key: "k1".into(),
            command: Box::new(create.clone()),
        };
        let first = s.apply(&keyed);
        assert_eq!(first.result, Ok(Response::Changed));
        assert!(first.config_changed);
        // A resend answers the same and changes nothing.
        let again = s.apply(&keyed);
        assert_eq!(again.result, Ok(Response::Changed));
        assert!(!again.config_changed);
        // A refused write changes nothing either.
        assert!(!s.apply(&create).config_changed);
        // Integer map keys (LUNs) and the role table travel too.
        for cmd in [
            Command::CreateDevice(crate::config::Device {
                name: "d1".into(),
                uuid: uuid::Uuid::from_u128(1),
                size: 4096,
                backing: crate::config::Backing::Memory,
                block_size: 512,
                thin: false,
                read_only: false,
                set: crate::config::DEFAULT_SET.into(),
                policy: Default::default(),
            }),
            Command::MapLun {
                target: "iqn.2024-01.org.example:t1".into(),
                lun: 3,
                device: "d1".into(),
            },
            Command::AssignRoles {
                proposals: vec![crate::config::Proposal {
                    set: crate::config::DEFAULT_SET.into(),
                    expect: 0,
                    roles: Default::default(),
                    since_ms: 1,
                    why: "test".into(),
                }],
            },
        ] {
            assert_eq!(s.apply(&cmd).result, Ok(Response::Changed), "{cmd:?}");
        }
        assert_eq!(s.roles.last_epoch, 1);
        let json = serde_json::to_value(&s).unwrap();
        assert!(json.get("targets").is_some());
        assert_eq!(json["recent_writes"].as_array().map(Vec::len), Some(1));
        let back: ReplicatedState = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, s);
        // A snapshot written by a configuration without a log state.
        let plain = serde_json::to_value(&s.config).unwrap();
        let old: ReplicatedState = serde_json::from_value(plain).unwrap();
        assert_eq!(old.config, s.config);
        assert!(old.recent_writes.is_empty());
    }
}
