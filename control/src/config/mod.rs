//! The configuration database (SPEC.md §3): every member holds the whole
//! configuration; changes are [`Command`]s replicated with Raft (openraft),
//! persisted in redb, and applied in the same order everywhere.
//!
//! ```text
//!  Command ──> Raft log (store::LogStore, redb) ──commit──> ReplicatedState::apply
//!                                                              │ config │ log state
//!        ConfigReader::config() <── applied state (store::StateMachineStore, redb)
//!        ConfigReader::changes() ── notified after each applied batch
//! ```
//!
//! - [`model`]: the data — [`ClusterConfig`] and what it holds.
//! - [`command`]: the writes — [`Command`], validated by
//!   [`ClusterConfig::apply`] into a [`Response`] or a [`ConfigError`].
//! - [`once`]: idempotency keys, so that a write sent twice applies once.
//! - [`sets`]: Failover Sets and each device's port policy.
//! - [`roles`]: the committed role assignment of each set, with epochs.
//! - [`devstate`]: each device's data-path state (shared SCSI state),
//!   opaque, changed by compare-and-set.
//! - [`state`]: the replicated state — the configuration and, apart from
//!   it, the log's own state (the idempotency table).
//! - [`store`]: openraft's storage traits on redb.
//! - [`raft`]: the Raft node on that store, its TCP transport, and
//!   [`ConfigService`], the cluster service built on them.
//!
//! openraft stays behind [`ConfigStore`]: the rest of the code opens a
//! member's database with [`ConfigStore::open`] and reads the applied
//! configuration through a [`ConfigReader`]; only the Raft node wiring takes
//! the openraft halves with [`ConfigStore::into_raft_parts`].

pub mod command;
pub mod devstate;
pub mod model;
pub mod once;
pub mod raft;
pub mod roles;
pub mod sets;
pub mod state;
pub mod store;

use std::path::Path;

pub use command::{Command, ConfigError, Response};
pub use devstate::{DeviceState, DeviceStates};
pub use model::{
    AclEntry, Backing, ChapAuth, ChapCredentials, ClusterConfig, Device, Member, Object, Target,
    MAX_DEVICE_SIZE,
};
pub use raft::{ConfigService, MembersSource, RaftAddress, RaftError, RaftSettings};
pub use roles::{Assignment, Proposal, RoleTable, Roles};
pub use sets::{Composition, Failback, FailoverSet, Others, PortPolicy, DEFAULT_SET};
pub use state::{Outcome, ReplicatedState};
pub use store::StoreError;

use crate::watch::Watch;
use store::{LogStore, SharedApplied, StateMachineStore};

/// A member's configuration database: one redb file holding the Raft log,
/// the vote and the applied configuration with its latest snapshot.
#[derive(Debug)]
pub struct ConfigStore {
    log: LogStore,
    state_machine: StateMachineStore,
}

impl ConfigStore {
    /// Opens the database at `path`, creating it if it does not exist. The
    /// applied configuration is the one the member had when it stopped.
    pub fn open(path: impl AsRef<Path>) -> Result<ConfigStore, StoreError> {
        let (log, state_machine) = store::open(path.as_ref())?;
        Ok(ConfigStore { log, state_machine })
    }

    /// Opens an empty database held in memory (tests, simulations).
    pub fn in_memory() -> Result<ConfigStore, StoreError> {
        let (log, state_machine) = store::open_in_memory()?;
        Ok(ConfigStore { log, state_machine })
    }

    /// A reader of the applied configuration, which stays current as Raft
    /// applies commands.
    pub fn reader(&self) -> ConfigReader {
        ConfigReader {
            state: self.state_machine.shared(),
            changes: self.state_machine.changes(),
        }
    }

    /// The openraft log store and state machine, for `openraft::Raft::new`.
    pub fn into_raft_parts(self) -> (LogStore, StateMachineStore) {
        (self.log, self.state_machine)
    }
}

/// Reads the applied configuration; cheap to clone.
#[derive(Debug, Clone)]
pub struct ConfigReader {
    state: SharedApplied,
    changes: Watch,
}

impl ConfigReader {
    /// A copy of the configuration as applied so far.
    pub fn config(&self) -> ClusterConfig {
        store::read(&self.state).state.config.clone()
    }

    /// The last role-assignment epoch applied (0: none).
    pub fn last_epoch(&self) -> u64 {
        store::read(&self.state).state.roles.last_epoch
    }

    /// The counter of device-state changes applied so far
    /// ([`DeviceStates::seq`]).
    pub fn device_seq(&self) -> u64 {
        store::read(&self.state).state.device_states.seq
    }

    /// A copy of one device's data-path state, if it ever changed.
    pub fn device_state(&self, device: &uuid::Uuid) -> Option<DeviceState> {
        store::read(&self.state)
            .state
            .device_states
            .get(device)
            .cloned()
    }

    /// A copy of every device's data-path state.
    pub fn device_states(&self) -> DeviceStates {
        store::read(&self.state).state.device_states.clone()
    }

    /// A copy of the whole replicated state as applied so far.
    pub fn state(&self) -> ReplicatedState {
        store::read(&self.state).state.clone()
    }

    /// The index of the last applied log entry, `None` before any.
    pub fn applied_index(&self) -> Option<u64> {
        store::read(&self.state).last_applied.map(|l| l.index)
    }

    /// The index of the last applied entry that changed the configuration
    /// (a snapshot installed counts as one), `None` before any: the log's
    /// own bookkeeping does not move it.
    pub fn config_index(&self) -> Option<u64> {
        store::read(&self.state).config_index
    }

    /// Notified after every batch of entries applied and every snapshot
    /// installed.
    pub fn changes(&self) -> Watch {
        self.changes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_store_reads_an_empty_config() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let store = ConfigStore::open(dir.path().join("config.redb")).expect("open");
        let reader = store.reader();
        assert_eq!(reader.config(), ClusterConfig::default());
        assert_eq!(reader.applied_index(), None);
        let err = ConfigStore::open(dir.path().join("missing/config.redb"))
            .expect_err("no such directory");
        assert!(matches!(err, StoreError::Open { .. }));
        assert!(ConfigStore::in_memory().is_ok());
    }
}
