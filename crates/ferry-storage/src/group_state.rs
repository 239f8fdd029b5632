//! One group's state-machine key space, as `ferry_queue::StateStore` sees it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ferry_queue::{StateStore, StoreError};
use ferry_types::GroupId;
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch, WriteOptions};

use crate::db::{NodeDb, StorageError};
use crate::keys::{self, CF_LOG, CF_RAFT, CF_SM};

/// Reads see the committed state of the group; writes are buffered until [`GroupState::commit`],
/// which stores them atomically with the group's applied state.
pub struct GroupState {
    db: Arc<NodeDb>,
    group: GroupId,
    /// In a mutex only so the state machine is `Sync`; `&mut self` access never contends.
    pending: Mutex<PendingWrites>,
}

/// A command's writes, put in key order before they reach RocksDB. A command touches a few regions
/// of its partition (the contents, states and index entries of consecutive messages); the memtable
/// skiplist remembers where its last insert went, so keys that follow each other are inserted
/// without a search from the top, where interleaved ones each cost a full descent.
#[derive(Default)]
struct PendingWrites {
    /// Writes before the last range deletion, already in order.
    batch: WriteBatch,
    /// The last write to each key since then; `None` deletes it.
    sorted: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl PendingWrites {
    /// Moves the sorted writes into the batch, so that what follows lands after them.
    fn seal(&mut self, cf: &rocksdb::ColumnFamily) {
        for (key, value) in std::mem::take(&mut self.sorted) {
            match value {
                Some(value) => self.batch.put_cf(cf, key, value),
                None => self.batch.delete_cf(cf, key),
            }
        }
    }
}

impl GroupState {
    pub fn new(db: Arc<NodeDb>, group: GroupId) -> Self {
        Self {
            db,
            group,
            pending: Mutex::default(),
        }
    }

    fn pending(&mut self) -> &mut PendingWrites {
        self.pending.get_mut().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the sorted writes into the batch and returns the batch, with the state family, for
    /// writes that must land after them.
    fn sealed_batch(&mut self) -> (&rocksdb::ColumnFamily, &mut WriteBatch) {
        let cf = self.db.cf(CF_SM);
        let pending = self.pending.get_mut().unwrap_or_else(|e| e.into_inner());
        pending.seal(cf);
        (cf, &mut pending.batch)
    }

    pub fn group(&self) -> GroupId {
        self.group
    }

    /// Writes the buffered changes and the applied state (opaque bytes of the Raft layer) in one
    /// batch, without the WAL: the synced log is the durable record. A crash loses the state family's
    /// unflushed memtables whole, so the group restarts from an earlier applied state (or from a
    /// snapshot file it installed) and openraft re-applies the committed entries after it. The log
    /// is purged only up to flushed state ([`NodeDb::flush_state`]). Keeping state writes
    /// out of the WAL halves the bytes every log fsync waits for (a send's body would be in it twice).
    pub fn commit(&mut self, applied: &[u8]) -> Result<(), StorageError> {
        let applied_key = keys::applied_key(self.group);
        let (cf, batch) = self.sealed_batch();
        let mut batch = std::mem::take(batch);
        batch.put_cf(cf, applied_key, applied);
        let mut options = WriteOptions::default();
        options.disable_wal(true);
        self.db.db().write_opt(batch, &options)?;
        Ok(())
    }

    /// Drops buffered changes (the command that made them failed).
    pub fn discard(&mut self) {
        *self.pending() = PendingWrites::default();
    }

    /// The applied state last committed, as given to [`GroupState::commit`].
    pub fn applied(&self) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .db
            .db()
            .get_cf(self.db.cf(CF_SM), keys::applied_key(self.group))?)
    }

    /// Removes every key of the group: its log, Raft metadata and state. Used when a queue is
    /// deleted or a replica leaves this node.
    pub fn destroy(db: &NodeDb, group: GroupId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        for cf in [CF_LOG, CF_RAFT, CF_SM] {
            batch.delete_range_cf(db.cf(cf), keys::group_start(group), keys::group_end(group));
        }
        db.db().write(batch)?;
        Ok(())
    }
}

impl NodeDb {
    pub fn group_meta(&self, group: GroupId, kind: u8) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .db()
            .get_cf(self.cf(CF_RAFT), keys::meta_key(group, kind))?)
    }

    pub fn put_group_meta(
        &self,
        group: GroupId,
        kind: u8,
        value: &[u8],
    ) -> Result<(), StorageError> {
        Ok(self
            .db()
            .put_cf(self.cf(CF_RAFT), keys::meta_key(group, kind), value)?)
    }

    /// Every group with any Raft metadata on this node (the groups to restart after a reboot).
    pub fn groups_on_disk(&self) -> Result<Vec<GroupId>, StorageError> {
        let mut groups = Vec::new();
        // From the first group's range: the format version sorts before it.
        let mut from = keys::group_start(GroupId(0));
        loop {
            let mut iter = self.db().iterator_cf(
                self.cf(CF_RAFT),
                IteratorMode::From(&from, Direction::Forward),
            );
            let Some(item) = iter.next() else { break };
            let (key, _) = item?;
            let Some(prefix) = key.get(..8) else { break };
            let group = GroupId(u64::from_be_bytes(prefix.try_into().expect("8 bytes")));
            groups.push(group);
            from = keys::group_end(group);
            if from.len() > 8 {
                break;
            }
        }
        Ok(groups)
    }
}

fn store_error(err: rocksdb::Error) -> StoreError {
    StoreError(err.into_string())
}

impl StateStore for GroupState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .db()
            .get_cf(self.db.cf(CF_SM), keys::sm_key(self.group, key))
            .map_err(store_error)
    }

    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(keys::sm_key(self.group, end));
        // The raw iterator lends keys and values in place; the boxed one copied every value (a
        // message's whole contents, for scans that look only at keys).
        let mut iter = self.db.db().raw_iterator_cf_opt(self.db.cf(CF_SM), options);
        iter.seek(keys::sm_key(self.group, start));
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            if !visit(&key[8..], value) {
                return Ok(());
            }
            iter.next();
        }
        iter.status().map_err(store_error)
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        let key = keys::sm_key(self.group, &key);
        self.pending().sorted.insert(key, Some(value));
    }

    fn delete(&mut self, key: Vec<u8>) {
        let key = keys::sm_key(self.group, &key);
        self.pending().sorted.insert(key, None);
    }

    fn delete_range(&mut self, start: Vec<u8>, end: Vec<u8>) {
        let (start, end) = (
            keys::sm_key(self.group, &start),
            keys::sm_key(self.group, &end),
        );
        let (cf, batch) = self.sealed_batch();
        batch.delete_range_cf(cf, start, end);
    }
}
