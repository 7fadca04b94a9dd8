//! What the replicated log decides, in two parts kept apart: the user's
//! configuration ([`ClusterConfig`]: members, devices, targets, access)
//! and the log's own state (the idempotency table of keyed writes, and the
//! role assignments of the Failover Sets). Only a change of the first is a
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
use super::once::RecentWrites;
use super::roles::RoleTable;
use super::ClusterConfig;

/// The replicated state: the configuration and the log's own state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicatedState {
    /// The user's configuration.
    #[serde(flatten)]
    pub config: ClusterConfig,
    /// The keyed writes applied lately, so that a resent one is not
    /// applied twice.
    #[serde(default, skip_serializing_if = "RecentWrites::is_empty")]
    pub recent_writes: RecentWrites,
    /// The committed role assignment of each Failover Set.
    #[serde(default, skip_serializing_if = "RoleTable::is_empty")]
    pub roles: RoleTable,
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
            _ => {
                let result = self.config.apply(command);
                let config_changed = result == Ok(Response::Changed);
                if config_changed {
                    self.roles.prune(&self.config);
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
