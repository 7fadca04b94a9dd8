//! openraft 0.9's storage (v2: [`RaftLogStorage`] and [`RaftStateMachine`])
//! on one redb database per member.
//!
//! ```text
//!  redb file
//!  ├─ raft_log       index -> Entry (JSON)            LogStore: append, truncate, purge, read
//!  ├─ raft_meta      vote, committed, last_purged     LogStore
//!  └─ state_machine  applied, snapshot_meta,          StateMachineStore: apply, build and
//!                    snapshot_data                    install snapshots
//! ```
//!
//! The state machine lives in memory (the [`ReplicatedState`]: the
//! configuration and the log's own state; plus the last applied log id
//! and membership) and is written back to `applied` with each applied
//! batch, so a member restarts with the state it had. A snapshot is the
//! whole replicated state serialized as one blob; the
//! latest is kept in the same file. Every write is one redb transaction,
//! durable when it commits, and the calls do their (small, local) I/O
//! inline rather than on a blocking pool.
//!
//! Only the Raft node wiring should use this module; the rest of the crate
//! goes through [`ConfigStore`](super::ConfigStore).

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Command, ConfigError, ReplicatedState, Response};
use crate::watch::Watch;

/// The result of applying one entry: what the client of a write gets.
pub type CommandResult = Result<Response, ConfigError>;

openraft::declare_raft_types!(
    /// openraft's types for the configuration database.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = BasicNode,
);

/// A Raft node id.
pub type NodeId = u64;
type StoreResult<T> = Result<T, StorageError<NodeId>>;

const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("raft_meta");
const SM: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("state_machine");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
const APPLIED: &str = "applied";
const SNAPSHOT_META: &str = "snapshot_meta";
const SNAPSHOT_DATA: &str = "snapshot_data";

/// Why the configuration database could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The redb file could not be opened or created.
    #[error("cannot open the configuration database {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: Box<redb::DatabaseError>,
    },
    /// A redb transaction, table access or commit failed.
    #[error("configuration database I/O failed")]
    Db(#[source] Box<redb::Error>),
    /// A value could not be serialized.
    #[error("cannot encode {what}")]
    Encode {
        /// What was being stored.
        what: &'static str,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// A stored value could not be deserialized.
    #[error("cannot decode {what}")]
    Decode {
        /// What was being read.
        what: &'static str,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
}

macro_rules! from_redb {
    ($($e:ty),*) => {$(
        impl From<$e> for StoreError {
            fn from(e: $e) -> Self {
                StoreError::Db(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode { what, source })
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode { what, source })
}

/// The state machine's state: what has been applied, and the result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Applied {
    /// The last log entry applied.
    pub(crate) last_applied: Option<LogId<NodeId>>,
    /// The last membership applied.
    pub(crate) membership: StoredMembership<NodeId, BasicNode>,
    /// The replicated state after applying up to `last_applied` (named
    /// `config` on disk, as when it was the configuration alone).
    #[serde(rename = "config")]
    pub(crate) state: ReplicatedState,
    /// The index of the last entry that changed the configuration.
    #[serde(default)]
    pub(crate) config_index: Option<u64>,
}

/// The state machine shared between the Raft core and readers.
pub(crate) type SharedApplied = Arc<RwLock<Applied>>;

pub(crate) fn read(state: &SharedApplied) -> RwLockReadGuard<'_, Applied> {
    // The state is replaced whole or mutated by `apply`, which cannot
    // panic half-way; a poisoned lock still holds a consistent value.
    state.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(state: &SharedApplied) -> RwLockWriteGuard<'_, Applied> {
    state.write().unwrap_or_else(PoisonError::into_inner)
}

/// Opens (creating if needed) the database at `path` and returns its log
/// store and state machine.
/// The database file is private to the member (0600: it holds CHAP
/// secrets); one found with wider permissions is narrowed.
pub(crate) fn open(path: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |e: std::io::Error| StoreError::Open {
        path: path.to_owned(),
        source: Box::new(redb::DatabaseError::Storage(redb::StorageError::Io(e))),
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        tracing::info!(path = %path.display(), old = format!("{mode:o}"), "configuration database narrowed to mode 600 (it holds CHAP secrets)");
    }
    let db = Database::builder()
        .create_file(file)
        .map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
    split(db)
}

/// Like [`open`], on a database held in memory.
pub(crate) fn open_in_memory() -> Result<(LogStore, StateMachineStore), StoreError> {
    let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?;
    split(db)
}

fn split(db: Database) -> Result<(LogStore, StateMachineStore), StoreError> {
    let txn = db.begin_write()?;
    txn.open_table(LOG)?;
    txn.open_table(META)?;
    let applied = match txn.open_table(SM)?.get(APPLIED)? {
        Some(v) => decode("the applied state", v.value())?,
        None => Applied::default(),
    };
    let committed = match txn.open_table(META)?.get(COMMITTED)? {
        Some(v) => decode::<Option<LogId<NodeId>>>(COMMITTED, v.value())?,
        None => None,
    };
    txn.commit()?;
    let db = Arc::new(db);
    Ok((
        LogStore {
            db: db.clone(),
            committed: Arc::new(AtomicU64::new(committed.map_or(0, |c| c.index + 1))),
        },
        StateMachineStore {
            db,
            state: Arc::new(RwLock::new(applied)),
            snapshots_built: Arc::new(AtomicU64::new(0)),
            changes: Watch::new(),
        },
    ))
}

/// The Raft log and vote; also its own log reader.
#[derive(Debug, Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// The highest index known committed, plus one (0: none), as last
    /// saved: for metrics.
    committed: Arc<AtomicU64>,
}

impl LogStore {
    /// The highest log index known committed, as last saved.
    pub fn committed_index(&self) -> Option<u64> {
        self.committed.load(Ordering::Acquire).checked_sub(1)
    }

    fn meta<T: DeserializeOwned>(&self, key: &'static str) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        let value = table.get(key)?;
        value.map(|v| decode(key, v.value())).transpose()
    }

    fn set_meta<T: Serialize>(
        &self,
        key: &'static str,
        value: Option<&T>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(META)?;
            match value {
                Some(v) => {
                    table.insert(key, encode(key, v)?.as_slice())?;
                }
                None => {
                    table.remove(key)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn entries<RB: RangeBounds<u64>>(
        &self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LOG)?;
        let mut entries = Vec::new();
        for item in table.range(range)? {
            let (_, value) = item?;
            entries.push(decode("a log entry", value.value())?);
        }
        Ok(entries)
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>, StoreError> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.meta(LAST_PURGED)?;
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LOG)?;
        let last = match table.last()? {
            Some((_, v)) => Some(decode::<Entry<TypeConfig>>("a log entry", v.value())?.log_id),
            None => None,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    fn append_all(
        &self,
        entries: impl IntoIterator<Item = Entry<TypeConfig>>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(LOG)?;
            for entry in entries {
                table.insert(
                    entry.log_id.index,
                    encode("a log entry", &entry)?.as_slice(),
                )?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn truncate_from(&self, index: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(LOG)?.retain_in(index.., |_, _| false)?;
        txn.commit()?;
        Ok(())
    }

    fn purge_upto(&self, log_id: &LogId<NodeId>) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(META)?
            .insert(LAST_PURGED, encode(LAST_PURGED, log_id)?.as_slice())?;
        txn.open_table(LOG)?
            .retain_in(..=log_id.index, |_, _| false)?;
        txn.commit()?;
        Ok(())
    }

    /// How many log entries are stored (for tests and metrics).
    pub fn len(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(LOG)?.len()?)
    }

    /// Whether no log entry is stored.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }
}

fn read_logs(e: StoreError) -> StorageError<NodeId> {
    StorageIOError::read_logs(&e).into()
}

fn write_logs(e: StoreError) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<TypeConfig>>> {
        self.entries(range).map_err(read_logs)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StoreResult<LogState<TypeConfig>> {
        self.log_state().map_err(read_logs)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StoreResult<()> {
        self.set_meta(VOTE, Some(vote))
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<NodeId>>> {
        self.meta(VOTE)
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StoreResult<()> {
        self.set_meta(COMMITTED, committed.as_ref())
            .map_err(write_logs)?;
        self.committed
            .store(committed.map_or(0, |c| c.index + 1), Ordering::Release);
        Ok(())
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<NodeId>>> {
        self.meta(COMMITTED).map_err(read_logs)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // The commit is durable, so the entries are on disk when it returns.
        self.append_all(entries).map_err(write_logs)?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        self.truncate_from(log_id.index).map_err(write_logs)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        self.purge_upto(&log_id).map_err(write_logs)
    }
}

/// The state machine: the applied configuration and its snapshots.
#[derive(Debug, Clone)]
pub struct StateMachineStore {
    db: Arc<Database>,
    state: SharedApplied,
    snapshots_built: Arc<AtomicU64>,
    /// Notified after each applied batch and installed snapshot.
    changes: Watch,
}

impl StateMachineStore {
    /// A handle on the applied state for readers outside Raft.
    pub(crate) fn shared(&self) -> SharedApplied {
        self.state.clone()
    }

    /// Notified after each applied batch and installed snapshot.
    pub(crate) fn changes(&self) -> Watch {
        self.changes.clone()
    }

    fn apply_all(
        &self,
        entries: impl IntoIterator<Item = Entry<TypeConfig>>,
    ) -> Result<Vec<CommandResult>, StoreError> {
        // The batch is applied in memory, then written back. A failed write
        // is a StorageError, on which openraft stops the node; on restart
        // the state is read back from disk and the batch applied again.
        let mut results = Vec::new();
        let bytes = {
            let mut state = write(&self.state);
            for entry in entries {
                state.last_applied = Some(entry.log_id);
                let result = match &entry.payload {
                    EntryPayload::Blank => Ok(Response::Unchanged),
                    EntryPayload::Normal(command) => {
                        let outcome = state.state.apply(command);
                        if outcome.config_changed {
                            state.config_index = Some(entry.log_id.index);
                        }
                        outcome.result
                    }
                    EntryPayload::Membership(m) => {
                        state.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        Ok(Response::Unchanged)
                    }
                };
                results.push(result);
            }
            encode("the applied state", &*state)?
        };
        let txn = self.db.begin_write()?;
        txn.open_table(SM)?.insert(APPLIED, bytes.as_slice())?;
        txn.commit()?;
        self.changes.notify();
        Ok(results)
    }

    fn current_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SM)?;
        let (Some(meta), Some(data)) = (table.get(SNAPSHOT_META)?, table.get(SNAPSHOT_DATA)?)
        else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            meta: decode("the snapshot meta", meta.value())?,
            snapshot: Box::new(Cursor::new(data.value().to_vec())),
        }))
    }

    fn install(
        &self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        data: &[u8],
    ) -> Result<(), StoreError> {
        let applied = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state: decode("the snapshot", data)?,
            config_index: meta.last_log_id.map(|l| l.index),
        };
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(SM)?;
            table.insert(APPLIED, encode("the applied state", &applied)?.as_slice())?;
            table.insert(SNAPSHOT_META, encode("the snapshot meta", meta)?.as_slice())?;
            table.insert(SNAPSHOT_DATA, data)?;
        }
        txn.commit()?;
        *write(&self.state) = applied;
        self.changes.notify();
        Ok(())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> StoreResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let state = read(&self.state);
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StoreResult<Vec<CommandResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.apply_all(entries)
            .map_err(|e| StorageIOError::write_state_machine(&e).into())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            applied: read(&self.state).clone(),
            seq: self.snapshots_built.fetch_add(1, Ordering::Relaxed),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StoreResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StoreResult<()> {
        self.install(meta, snapshot.get_ref())
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e).into())
    }

    async fn get_current_snapshot(&mut self) -> StoreResult<Option<Snapshot<TypeConfig>>> {
        self.current_snapshot()
            .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}

/// Builds a snapshot from a copy of the state taken when it was asked for,
/// so the state machine keeps applying meanwhile.
#[derive(Debug)]
pub struct SnapshotBuilder {
    db: Arc<Database>,
    applied: Applied,
    seq: u64,
}

impl SnapshotBuilder {
    fn build(&self) -> Result<Snapshot<TypeConfig>, StoreError> {
        let data = encode("the snapshot", &self.applied.state)?;
        let last = self.applied.last_applied.map_or_else(
            || "none".to_owned(),
            |l| format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
        );
        let meta = SnapshotMeta {
            last_log_id: self.applied.last_applied,
            last_membership: self.applied.membership.clone(),
            snapshot_id: format!("{last}-{}", self.seq),
        };
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(SM)?;
            // A snapshot installed meanwhile may be newer: keep it.
            let stored: Option<SnapshotMeta<NodeId, BasicNode>> = table
                .get(SNAPSHOT_META)?
                .map(|v| decode("the snapshot meta", v.value()))
                .transpose()?;
            if stored.is_none_or(|s| s.last_log_id <= meta.last_log_id) {
                table.insert(
                    SNAPSHOT_META,
                    encode("the snapshot meta", &meta)?.as_slice(),
                )?;
                table.insert(SNAPSHOT_DATA, data.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StoreResult<Snapshot<TypeConfig>> {
        self.build()
            .map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, Membership};
    use tempfile::TempDir;

    use super::*;

    struct OnDisk;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for OnDisk {
        async fn build(&self) -> StoreResult<(TempDir, LogStore, StateMachineStore)> {
            let dir = TempDir::new().map_err(|e| StorageIOError::write(&e))?;
            let (log, sm) =
                open(&dir.path().join("config.redb")).map_err(|e| StorageIOError::write(&e))?;
            Ok((dir, log, sm))
        }
    }

    struct InMemory;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore> for InMemory {
        async fn build(&self) -> StoreResult<((), LogStore, StateMachineStore)> {
            let (log, sm) = open_in_memory().map_err(|e| StorageIOError::write(&e))?;
            Ok(((), log, sm))
        }
    }

    #[test]
    fn openraft_suite_on_disk() {
        Suite::test_all(OnDisk).expect("openraft storage suite");
    }

    #[test]
    fn openraft_suite_in_memory() {
        Suite::test_all(InMemory).expect("openraft storage suite");
    }

    fn log_id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn entry(term: u64, index: u64, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
        Entry {
            log_id: log_id(term, index),
            payload,
        }
    }

    fn create_target(n: u32) -> EntryPayload<TypeConfig> {
        EntryPayload::Normal(Command::CreateTarget {
            iqn: format!("iqn.2024-01.org.example:t{n}"),
            alias: None,
        })
    }

    #[tokio::test]
    async fn reopen_keeps_log_vote_state_and_snapshot() {
        let dir = TempDir::new().expect("tempdir");
        let path = dir.path().join("config.redb");
        let membership = Membership::new(vec![BTreeSet::from([1, 2, 3])], None);
        let vote = Vote::new_committed(2, 1);

        let (before_log, before_applied, before_snapshot) = {
            let (mut log, mut sm) = open(&path).expect("open");
            let entries = vec![
                entry(1, 1, EntryPayload::Membership(membership.clone())),
                entry(1, 2, create_target(1)),
                entry(2, 3, create_target(2)),
                entry(2, 4, create_target(1)),
                entry(2, 5, create_target(3)),
            ];
            log.save_vote(&vote).await.expect("vote");
            log.append_all(entries.clone()).expect("append");
            log.save_committed(Some(log_id(2, 5)))
                .await
                .expect("committed");
            let results = sm.apply(entries[..3].to_vec()).await.expect("apply");
            assert_eq!(
                results,
                vec![
                    Ok(Response::Unchanged),
                    Ok(Response::Changed),
                    Ok(Response::Changed)
                ]
            );
            let snapshot = sm
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .expect("snapshot");
            assert_eq!(snapshot.meta.last_log_id, Some(log_id(2, 3)));
            log.purge(log_id(1, 2)).await.expect("purge");
            let results = sm.apply(entries[3..].to_vec()).await.expect("apply");
            assert!(matches!(results[0], Err(ConfigError::AlreadyExists { .. })));
            assert_eq!(results[1], Ok(Response::Changed));
            let applied = read(&sm.state).clone();
            assert_eq!(applied.state.config.targets.len(), 3);
            (log.entries(..).expect("entries"), applied, snapshot.meta)
        };

        let (mut log, mut sm) = open(&path).expect("reopen");
        assert_eq!(log.read_vote().await.expect("vote"), Some(vote));
        assert_eq!(
            log.read_committed().await.expect("committed"),
            Some(log_id(2, 5))
        );
        assert_eq!(
            log.get_log_state().await.expect("log state"),
            LogState {
                last_purged_log_id: Some(log_id(1, 2)),
                last_log_id: Some(log_id(2, 5)),
            }
        );
        let after_log = log.try_get_log_entries(0..100).await.expect("entries");
        assert_eq!(after_log, before_log);
        assert_eq!(after_log.len(), 3);
        assert_eq!(*read(&sm.state), before_applied);
        assert_eq!(
            sm.applied_state().await.expect("applied"),
            (
                Some(log_id(2, 5)),
                StoredMembership::new(Some(log_id(1, 1)), membership)
            )
        );
        let snapshot = sm
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("a snapshot");
        assert_eq!(snapshot.meta, before_snapshot);
        let config: crate::config::ClusterConfig =
            serde_json::from_slice(snapshot.snapshot.get_ref()).expect("decode");
        assert_eq!(config.targets.len(), 2);
    }

    #[tokio::test]
    async fn installed_snapshot_replaces_the_state_and_survives_reopen() {
        let dir = TempDir::new().expect("tempdir");
        let path = dir.path().join("config.redb");
        let (_, mut leader) = open_in_memory().expect("leader");
        // The second write is keyed: its key travels in the snapshot.
        let keyed = |n: u32| {
            let EntryPayload::Normal(command) = create_target(n) else {
                unreachable!()
            };
            EntryPayload::Normal(Command::Once {
                key: "k2".to_owned(),
                command: Box::new(command),
            })
        };
        leader
            .apply(vec![entry(1, 1, create_target(1)), entry(1, 2, keyed(2))])
            .await
            .expect("apply");
        let built = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");
        {
            let (_, mut follower) = open(&path).expect("open");
            follower
                .apply(vec![entry(1, 1, create_target(9))])
                .await
                .expect("apply");
            let mut data = follower.begin_receiving_snapshot().await.expect("begin");
            *data = *built.snapshot;
            follower
                .install_snapshot(&built.meta, data)
                .await
                .expect("install");
            assert_eq!(read(&follower.state).state, read(&leader.state).state);
        }
        let (_, mut follower) = open(&path).expect("reopen");
        assert_eq!(read(&follower.state).state, read(&leader.state).state);
        assert_eq!(
            follower.applied_state().await.expect("applied").0,
            Some(log_id(1, 2))
        );
        let current = follower
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("a snapshot");
        assert_eq!(current.meta, built.meta);
        // The keyed write resent after the snapshot is answered, not applied.
        let results = follower
            .apply(vec![entry(1, 3, keyed(2))])
            .await
            .expect("apply");
        assert_eq!(results, vec![Ok(Response::Changed)]);
        assert_eq!(read(&follower.state).state.config.targets.len(), 2);
        assert_eq!(read(&follower.state).state.recent_writes.len(), 1);
    }

    #[tokio::test]
    async fn only_configuration_changes_move_the_config_index_and_every_batch_notifies() {
        let (_, mut sm) = open_in_memory().expect("open");
        let mut changes = sm.changes().subscribe();
        changes.wait(std::time::Duration::ZERO);
        let keyed = EntryPayload::Normal(Command::Once {
            key: "k1".to_owned(),
            command: Box::new(Command::CreateTarget {
                iqn: "iqn.2024-01.org.example:t1".to_owned(),
                alias: None,
            }),
        });
        sm.apply(vec![
            entry(1, 1, EntryPayload::Blank),
            entry(1, 2, keyed.clone()),
        ])
        .await
        .expect("apply");
        assert_eq!(read(&sm.state).config_index, Some(2));
        assert!(changes.changed());
        changes.wait(std::time::Duration::ZERO);
        // A resent keyed write, a refused write, a blank entry: the log
        // moved, the configuration did not.
        sm.apply(vec![
            entry(1, 3, keyed),
            entry(1, 4, create_target(1)),
            entry(1, 5, EntryPayload::Blank),
        ])
        .await
        .expect("apply");
        let applied = read(&sm.state).clone();
        assert_eq!(applied.last_applied, Some(log_id(1, 5)));
        assert_eq!(applied.config_index, Some(2));
        assert!(changes.changed());
        sm.apply(vec![entry(1, 6, create_target(2))])
            .await
            .expect("apply");
        assert_eq!(read(&sm.state).config_index, Some(6));
    }
}
