//! The openraft state machine of one group: decodes entries, applies them to the queue or catalog
//! state machine over RocksDB, takes snapshots (points up to which the state is durable, written
//! to a file only for a follower) and installs snapshot files.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferry_catalog::{CatalogView, Written};
use ferry_queue::{ApplyContext, Indexed, ReceivableMemo};
use ferry_storage::{GroupState, LogStore, NodeDb, SnapshotData, SnapshotFile};
use ferry_types::GroupId;
use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{
    EntryPayload, OptionalSend, RaftSnapshotBuilder, StoredMembership as RaftStoredMembership,
};
use tokio::sync::{watch, Notify};

use crate::types::{
    decode, encode, AppliedState, Command, CommandBody, CommandResult, LogId, Snapshot,
    SnapshotMeta, SnapshotRecord, StoredMembership, TypeConfig,
};

/// The catalog as of the last applied catalog entry.
pub type Catalog = Arc<CatalogView>;

/// What a group's replica tells the rest of the node after applying entries.
#[derive(Default)]
pub struct GroupSignals {
    /// Woken after every applied batch of entries; long polls wait on it.
    pub applied: Notify,
    /// Time of the last applied command: a new leader stamps no earlier time.
    pub last_time_ms: AtomicU64,
    /// Counts the applied batches and installed snapshots, each counted once its writes are made:
    /// what was read of the state after this count was read stays current while the count does.
    pub state_changes: AtomicU64,
    /// Held by the one long poll on this node that asks the group's leader for what this follower
    /// replica shows; the others wait instead of all asking at once.
    pub leader_ask: tokio::sync::Mutex<()>,
    /// Whether the replica holds something to receive, and when the next message comes due: one
    /// answer for all the group's long polls and receive rounds on this node, told of every apply.
    pub receivable: ReceivableMemo,
}

pub struct GroupStateMachine {
    db: Arc<NodeDb>,
    group: GroupId,
    state: GroupState,
    applied: AppliedState,
    signals: Arc<GroupSignals>,
    /// Set on the catalog group only.
    catalog: Option<watch::Sender<Catalog>>,
    /// Catalog keys written since the catalog was last published.
    catalog_written: Written,
    /// The group's log, told what is applied so it stops keeping those entries in memory.
    log: LogStore<TypeConfig>,
    /// Held while the current snapshot record changes: an install and a snapshot being taken may
    /// both set it.
    snapshot_record: Arc<Mutex<()>>,
}

impl GroupStateMachine {
    pub fn open(
        db: Arc<NodeDb>,
        group: GroupId,
        signals: Arc<GroupSignals>,
        catalog: Option<watch::Sender<Catalog>>,
        log: LogStore<TypeConfig>,
    ) -> io::Result<Self> {
        SnapshotFile::resume_install(&db, group)?;
        let state = GroupState::new(db.clone(), group);
        let applied = decode_applied(&state.applied()?.unwrap_or_default())?;
        signals
            .last_time_ms
            .store(applied.last_time_ms, Ordering::Release);
        let mut machine = Self {
            db,
            group,
            state,
            applied,
            signals,
            catalog,
            catalog_written: Written::everything(),
            log,
            snapshot_record: Arc::default(),
        };
        machine.publish_catalog()?;
        Ok(machine)
    }

    /// Applies one command; `reply_wanted` says whether a caller waits for its result here. Also
    /// returns the visible times of the messages it indexed (queue commands).
    fn apply_command(
        &mut self,
        command: Command,
        log_id: &LogId,
        reply_wanted: bool,
    ) -> io::Result<(CommandResult, Option<Indexed>)> {
        let now_ms = command.now_ms.max(self.applied.last_time_ms);
        self.applied.last_time_ms = now_ms;
        let result = match (command.body, self.group.is_catalog()) {
            (CommandBody::Queue(command), false) => {
                let context = ApplyContext {
                    now_ms,
                    log_index: log_id.index,
                    reply_wanted,
                };
                ferry_queue::apply(&mut self.state, context, command)
                    .map(|applied| (CommandResult::Queue(applied.result), applied.indexed))
            }
            (CommandBody::Catalog(command), true) => {
                ferry_catalog::apply(&mut self.state, now_ms, &command, &mut self.catalog_written)
                    .map(|result| (CommandResult::Catalog(result), None))
            }
            _ => Ok((CommandResult::WrongGroup, None)),
        };
        result.map_err(|e| {
            self.state.discard();
            self.catalog_written = Written::everything();
            io::Error::other(e)
        })
    }

    /// Publishes the catalog as applied, if a command changed it: the published view refreshed
    /// from the keys written since, or read whole after an open or a snapshot install.
    fn publish_catalog(&mut self) -> io::Result<()> {
        let written = std::mem::take(&mut self.catalog_written);
        if let Some(catalog) = &self.catalog {
            if written.is_empty() {
                return Ok(());
            }
            let mut view = CatalogView::clone(&catalog.borrow());
            view.refresh(&self.state, &written)
                .map_err(io::Error::other)?;
            catalog.send_replace(Arc::new(view));
        }
        Ok(())
    }

    fn current_snapshot_record(&self) -> io::Result<Option<SnapshotRecord>> {
        match self
            .db
            .group_meta(self.group, ferry_storage::meta::SNAPSHOT)?
        {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Makes `record` the group's current snapshot and removes the file it replaces, if any —
    /// unless the current one is newer: a snapshot taken from the state as it was before an install
    /// finished must not replace the installed one, whose log is purged. Returns the current one.
    fn set_current_snapshot(
        db: &NodeDb,
        group: GroupId,
        lock: &Mutex<()>,
        record: SnapshotRecord,
    ) -> io::Result<SnapshotRecord> {
        let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
        let previous = match db.group_meta(group, ferry_storage::meta::SNAPSHOT)? {
            Some(bytes) => Some(decode::<SnapshotRecord>(&bytes)?),
            None => None,
        };
        if let Some(previous) = previous {
            if previous.meta.last_log_id > record.meta.last_log_id {
                return Ok(previous);
            }
            if !previous.path.is_empty() && previous.path != record.path {
                SnapshotFile {
                    path: previous.path.into(),
                }
                .remove();
            }
        }
        db.put_group_meta(group, ferry_storage::meta::SNAPSHOT, &encode(&record)?)?;
        Ok(record)
    }
}

/// The snapshot a record names: its file, or (empty path) the group's state in the database.
fn recorded_snapshot(db: &Arc<NodeDb>, group: GroupId, record: SnapshotRecord) -> Snapshot {
    Snapshot {
        snapshot: if record.path.is_empty() {
            SnapshotData::Durable(db.clone(), group)
        } else {
            SnapshotData::File(SnapshotFile {
                path: record.path.into(),
            })
        },
        meta: record.meta,
    }
}

impl RaftStateMachine<TypeConfig> for GroupStateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = GroupSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.applied.last_log_id, self.applied.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            self.applied.last_log_id = Some(entry.log_id);
            let (result, indexed) = match entry.payload {
                EntryPayload::Blank => (CommandResult::None, None),
                EntryPayload::Membership(membership) => {
                    self.applied.membership =
                        RaftStoredMembership::new(Some(entry.log_id), membership);
                    (CommandResult::None, None)
                }
                EntryPayload::Normal(command) => {
                    self.apply_command(command, &entry.log_id, responder.is_some())?
                }
            };
            self.state.commit(&encode(&self.applied)?)?;
            // Before the caller hears of it: its next request must not get an answer from before.
            self.signals.receivable.applied(indexed);
            if let Some(responder) = responder {
                responder.send(result);
            }
        }
        self.signals
            .last_time_ms
            .store(self.applied.last_time_ms, Ordering::Release);
        self.signals.state_changes.fetch_add(1, Ordering::Release);
        if let Some(applied) = self.applied.last_log_id {
            self.log.forget_applied(applied.index);
        }
        self.publish_catalog()?;
        self.signals.applied.notify_waiters();
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        GroupSnapshotBuilder {
            db: self.db.clone(),
            group: self.group,
            snapshot_record: self.snapshot_record.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let snapshot = match snapshot {
            SnapshotData::File(file) => file,
            // A durable state handed over within the process (openraft's storage suite does; a
            // restart would only if this state lost flushed writes): installed only if it still
            // holds exactly `meta`.
            SnapshotData::Durable(db, group) => {
                let (file, written) = write_snapshot_file(db, group).await?;
                if written.last_log_id != meta.last_log_id {
                    file.remove();
                    return Err(io::Error::other(format!(
                        "group {}: snapshot {:?} to install, but its state holds {:?}",
                        self.group, meta.last_log_id, written.last_log_id
                    )));
                }
                file
            }
        };
        let db = self.db.clone();
        let group = self.group;
        let file = snapshot.clone();
        let applied_bytes = tokio::task::spawn_blocking(move || file.install(&db, group))
            .await
            .map_err(io::Error::other)??;
        self.applied = decode_applied(&applied_bytes)?;
        // The snapshot's meta is authoritative for where the state machine now is.
        self.applied.last_log_id = meta.last_log_id;
        self.applied.membership = meta.last_membership.clone();
        self.state.commit(&encode(&self.applied)?)?;
        let record = SnapshotRecord {
            meta: meta.clone(),
            path: snapshot.path.to_string_lossy().into_owned(),
        };
        let current =
            Self::set_current_snapshot(&self.db, self.group, &self.snapshot_record, record)?;
        if Path::new(&current.path) != snapshot.path {
            // A newer snapshot is recorded already: this file would be kept for nothing.
            snapshot.remove();
        }
        self.signals.receivable.replaced();
        self.signals
            .last_time_ms
            .store(self.applied.last_time_ms, Ordering::Release);
        self.signals.state_changes.fetch_add(1, Ordering::Release);
        self.catalog_written = Written::everything();
        self.publish_catalog()?;
        self.signals.applied.notify_waiters();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self
            .current_snapshot_record()?
            .map(|record| recorded_snapshot(&self.db, self.group, record)))
    }
}

/// Takes a group's snapshot, off the apply path: makes the state durable up to a point and records
/// that point, so openraft may purge the log before it. No file is written: the state lives in
/// RocksDB already, and a follower that needs it gets a file written then (`network`). Until the
/// state is flushed, the log is all that holds the latest applies (the `sm` family skips the WAL).
pub struct GroupSnapshotBuilder {
    db: Arc<NodeDb>,
    group: GroupId,
    snapshot_record: Arc<Mutex<()>>,
}

impl RaftSnapshotBuilder<TypeConfig> for GroupSnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let db = self.db.clone();
        let group = self.group;
        // Read before the flush, so the flush holds at least this much.
        let applied_bytes = tokio::task::spawn_blocking(move || {
            let applied = GroupState::new(db.clone(), group).applied()?;
            db.flush_state()?;
            Ok::<_, io::Error>(applied.unwrap_or_default())
        })
        .await
        .map_err(io::Error::other)??;
        let meta = snapshot_meta(&applied_bytes)?;
        // An empty path: the state in the database is the snapshot.
        let record = SnapshotRecord {
            meta: meta.clone(),
            path: String::new(),
        };
        let current = GroupStateMachine::set_current_snapshot(
            &self.db,
            self.group,
            &self.snapshot_record,
            record,
        )?;
        tracing::debug!(group = %self.group, last_log_id = ?meta.last_log_id, "state durable: snapshot taken");
        Ok(recorded_snapshot(&self.db, self.group, current))
    }
}

/// Writes a file of the group's state as it is now, with the snapshot meta of what it holds.
pub(crate) async fn write_snapshot_file(
    db: Arc<NodeDb>,
    group: GroupId,
) -> io::Result<(SnapshotFile, SnapshotMeta)> {
    let (file, applied) = tokio::task::spawn_blocking(move || SnapshotFile::build(&db, group))
        .await
        .map_err(io::Error::other)??;
    match snapshot_meta(&applied) {
        Ok(meta) => Ok((file, meta)),
        Err(err) => {
            file.remove();
            Err(err)
        }
    }
}

/// The snapshot meta of a group whose applied state is `applied_bytes`.
fn snapshot_meta(applied_bytes: &[u8]) -> io::Result<SnapshotMeta> {
    let applied = decode_applied(applied_bytes)?;
    Ok(SnapshotMeta {
        last_log_id: applied.last_log_id,
        last_membership: applied.membership,
    })
}

/// A group that has applied nothing has no stored applied state (and its snapshot carries none).
fn decode_applied(bytes: &[u8]) -> io::Result<AppliedState> {
    if bytes.is_empty() {
        Ok(AppliedState::default())
    } else {
        decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use openraft::alias::LeaderIdOf;
    use openraft::vote::RaftLeaderId;

    use super::*;

    fn record_at(index: u64, path: &Path) -> SnapshotRecord {
        let leader = LeaderIdOf::<TypeConfig>::new(1, 1);
        SnapshotRecord {
            meta: SnapshotMeta {
                last_log_id: Some(LogId::new(leader.to_committed(), index)),
                last_membership: StoredMembership::default(),
            },
            path: path.to_string_lossy().into_owned(),
        }
    }

    #[test]
    fn an_older_snapshot_never_replaces_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = NodeDb::open(dir.path()).unwrap();
        let group = GroupId(5);
        let lock = Mutex::new(());
        let installed = dir.path().join("installed.snap");
        std::fs::write(&installed, b"state").unwrap();
        let set = |record| GroupStateMachine::set_current_snapshot(&db, group, &lock, record);
        let at = |record: &SnapshotRecord| {
            (
                record.meta.last_log_id.map(|id| id.index),
                record.path.clone(),
            )
        };
        let stored = || {
            let bytes = db
                .group_meta(group, ferry_storage::meta::SNAPSHOT)
                .unwrap()
                .unwrap();
            at(&decode::<SnapshotRecord>(&bytes).unwrap())
        };
        let installed_path = installed.to_string_lossy().into_owned();

        set(record_at(10, &installed)).unwrap();
        // Taken from state read before the install finished: the install stays, file and all.
        let current = set(record_at(7, Path::new(""))).unwrap();
        assert_eq!(at(&current), (Some(10), installed_path.clone()));
        assert_eq!(stored(), (Some(10), installed_path));
        assert!(installed.exists());
        // Taken after it: the flushed state is the snapshot now, and the file goes.
        let current = set(record_at(12, Path::new(""))).unwrap();
        assert_eq!(at(&current), (Some(12), String::new()));
        assert_eq!(stored(), (Some(12), String::new()));
        assert!(!installed.exists());
        db.close();
    }
}
