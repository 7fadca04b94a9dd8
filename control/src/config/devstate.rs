//! Device state the log keeps for the data path: one opaque text per device
//! (trellisd keeps a logical unit's SCSI state there — persistent
//! reservations and what else every member must share), changed only by
//! compare-and-set ([`Command::SetDeviceState`]).
//!
//! Control never reads the text: the member that takes a SCSI command
//! computes the new state from the one its replica applied, and proposes it
//! with the version it started from. When another change was committed in
//! between, the write is refused ([`ConfigError::DeviceStateMoved`]) and the
//! member decides again from the newer state. A write without a new text
//! only checks that the version is still current: committed in log order,
//! it proves that an answer computed from that version (a refused
//! reservation, say) was computed from the state of the moment.
//!
//! Like the role table this is the log's own state, not the configuration:
//! it does not wake the exports applier, and a deleted device's state goes
//! with it.
//!
//! [`Command::SetDeviceState`]: super::Command::SetDeviceState
//! [`ConfigError::DeviceStateMoved`]: super::ConfigError::DeviceStateMoved

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::command::{ConfigError, Response};
use super::model::Object;
use super::ClusterConfig;

/// The longest state text of one device.
pub const MAX_DEVICE_STATE: usize = 256 * 1024;

/// One device's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    /// [`DeviceStates::seq`] when it last changed (0: never).
    pub version: u64,
    /// The data path's text.
    pub text: String,
}

/// Every device's state, with one counter for all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStates {
    /// Moves on with every change of any device's state; a member that has
    /// applied the states up to `seq` has applied every change so far.
    pub seq: u64,
    /// By device uuid; a device never changed has none.
    #[serde(default)]
    pub devices: BTreeMap<Uuid, DeviceState>,
}

impl DeviceStates {
    /// Whether no device has a state.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty() && self.seq == 0
    }

    /// The state of `device`, if it ever changed.
    pub fn get(&self, device: &Uuid) -> Option<&DeviceState> {
        self.devices.get(device)
    }

    /// The version of `device`'s state (0: never changed).
    pub fn version(&self, device: &Uuid) -> u64 {
        self.devices.get(device).map_or(0, |s| s.version)
    }

    /// Sets `device`'s state to `text` if its version is `expect`; with no
    /// text, only checks the version.
    pub(super) fn set(
        &mut self,
        config: &ClusterConfig,
        device: &Uuid,
        expect: u64,
        text: Option<&str>,
    ) -> Result<Response, ConfigError> {
        if !config.devices.values().any(|d| d.uuid == *device) {
            return Err(ConfigError::NotFound {
                object: Object::Device,
                name: device.to_string(),
            });
        }
        let version = self.version(device);
        if version != expect {
            return Err(ConfigError::DeviceStateMoved {
                device: *device,
                expect,
                version,
            });
        }
        let Some(text) = text else {
            return Ok(Response::Unchanged);
        };
        if text.len() > MAX_DEVICE_STATE {
            return Err(ConfigError::DeviceStateTooLarge {
                device: *device,
                len: text.len(),
            });
        }
        self.seq += 1;
        self.devices.insert(
            *device,
            DeviceState {
                version: self.seq,
                text: text.to_owned(),
            },
        );
        Ok(Response::Changed)
    }

    /// Forgets the states of devices no longer configured.
    pub(super) fn prune(&mut self, config: &ClusterConfig) {
        self.devices
            .retain(|uuid, _| config.devices.values().any(|d| d.uuid == *uuid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backing, Command, Device, ReplicatedState};

    fn device(name: &str, uuid: u128) -> Command {
        Command::CreateDevice(Device {
            name: name.into(),
            uuid: Uuid::from_u128(uuid),
            size: 4096,
            backing: Backing::Memory,
            block_size: 512,
            thin: false,
            read_only: false,
            set: crate::config::DEFAULT_SET.into(),
            policy: Default::default(),
        })
    }

    fn set(uuid: u128, expect: u64, text: Option<&str>) -> Command {
        Command::SetDeviceState {
            device: Uuid::from_u128(uuid),
            expect,
            state: text.map(str::to_owned),
        }
    }

    #[test]
    fn compare_and_set_orders_writers() {
        let mut s = ReplicatedState::default();
        assert!(s.apply(&device("d1", 1)).config_changed);
        assert!(s.apply(&device("d2", 2)).config_changed);
        // An unknown device is refused.
        assert!(matches!(
            s.apply(&set(9, 0, Some("x"))).result,
            Err(ConfigError::NotFound { .. })
        ));
        // The first writer wins; a second one from the same version is told
        // the version moved and changes nothing.
        let first = s.apply(&set(1, 0, Some("a")));
        assert_eq!(first.result, Ok(Response::Changed));
        assert!(!first.config_changed, "not a configuration change");
        assert_eq!(
            s.apply(&set(1, 0, Some("b"))).result,
            Err(ConfigError::DeviceStateMoved {
                device: Uuid::from_u128(1),
                expect: 0,
                version: 1
            })
        );
        assert_eq!(s.device_states.get(&Uuid::from_u128(1)).unwrap().text, "a");
        // A check of the current version passes and changes nothing; of an
        // old one, fails.
        assert_eq!(s.apply(&set(1, 1, None)).result, Ok(Response::Unchanged));
        assert!(s.apply(&set(1, 0, None)).result.is_err());
        // One counter for all devices.
        assert_eq!(s.apply(&set(2, 0, Some("c"))).result, Ok(Response::Changed));
        assert_eq!(s.device_states.version(&Uuid::from_u128(2)), 2);
        assert_eq!(s.device_states.seq, 2);
        // Too large a state is refused.
        let big = "x".repeat(MAX_DEVICE_STATE + 1);
        assert!(matches!(
            s.apply(&set(2, 2, Some(&big))).result,
            Err(ConfigError::DeviceStateTooLarge { .. })
        ));
        // It travels with the replicated state, and goes with its device.
        let json = serde_json::to_value(&s).unwrap();
        let back: ReplicatedState = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
        let delete = Command::DeleteDevice { name: "d1".into() };
        assert!(s.apply(&delete).config_changed);
        assert!(s.device_states.get(&Uuid::from_u128(1)).is_none());
        assert_eq!(s.device_states.seq, 2, "the counter never goes back");
    }
}
