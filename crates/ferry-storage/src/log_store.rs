//! The openraft log store of one group: entries, vote, committed and purged log ids in RocksDB.

use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ferry_types::GroupId;
use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader, RaftTypeConfig};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::db::{NodeDb, StorageError};
use crate::keys::{self, meta, CF_LOG, CF_RAFT};
use crate::recent::RecentEntries;

/// The log of one group. Cheap to clone: every clone reads and writes the same group's keys.
pub struct LogStore<C> {
    db: Arc<NodeDb>,
    group: GroupId,
    /// The newest entries, which openraft reads right after appending them.
    recent: Arc<Mutex<RecentEntries>>,
    /// Bytes of entries appended since the store was opened.
    appended_bytes: Arc<AtomicU64>,
    /// The newest committed log id openraft reported, encoded and not yet written: it goes into
    /// the group's next append batch rather than costing a RocksDB write of its own per commit.
    unsaved_committed: Arc<Mutex<Option<Vec<u8>>>>,
    _config: PhantomData<fn() -> C>,
}

impl<C> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            group: self.group,
            recent: self.recent.clone(),
            appended_bytes: self.appended_bytes.clone(),
            unsaved_committed: self.unsaved_committed.clone(),
            _config: PhantomData,
        }
    }
}

impl<C: RaftTypeConfig> LogStore<C> {
    pub fn new(db: Arc<NodeDb>, group: GroupId) -> Self {
        let recent = Arc::new(Mutex::new(db.recent_entries()));
        Self {
            db,
            group,
            recent,
            appended_bytes: Arc::default(),
            unsaved_committed: Arc::default(),
            _config: PhantomData,
        }
    }

    /// Bytes of entries appended since the store was opened, counted as they are appended.
    pub fn appended_bytes(&self) -> Arc<AtomicU64> {
        self.appended_bytes.clone()
    }

    /// The state machine has applied the entries up to `index`: only a follower far behind still
    /// reads them (from RocksDB), so memory need not keep them.
    pub fn forget_applied(&self, index: u64) {
        self.recent().purge_through(index);
    }

    /// Whether this replica holds nothing of the group yet: no entry, no vote, no purge point.
    pub fn is_pristine(&self) -> Result<bool, StorageError> {
        Ok(self.last_index()?.is_none()
            && self.get_meta::<VoteOf<C>>(meta::VOTE, "vote")?.is_none()
            && self
                .get_meta::<LogIdOf<C>>(meta::PURGED, "purged log id")?
                .is_none())
    }

    /// Writes a pristine replica's first entry before openraft runs the group, which then starts
    /// from it. Not synced: a replica that loses it is pristine again and writes the same entry,
    /// and whatever it does next for the group (a vote, an append) syncs the WAL with it.
    pub fn write_first_entry(&self, entry: &EntryOf<C>) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.db.cf(CF_LOG),
            keys::log_key(self.group, entry.index()),
            encode_entry::<C>(entry)?,
        );
        self.record_last_index(&mut batch, Some(entry.index()));
        self.db.db().write(batch)?;
        Ok(())
    }

    fn recent(&self) -> MutexGuard<'_, RecentEntries> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get_meta<T: DeserializeOwned>(
        &self,
        kind: u8,
        what: &'static str,
    ) -> Result<Option<T>, StorageError> {
        let Some(bytes) = self
            .db
            .db()
            .get_cf(self.db.cf(CF_RAFT), keys::meta_key(self.group, kind))?
        else {
            return Ok(None);
        };
        decode_meta(what, &bytes).map(Some)
    }

    fn put_meta<T: Serialize>(
        &self,
        kind: u8,
        what: &'static str,
        value: &T,
    ) -> Result<(), StorageError> {
        self.db.db().put_cf(
            self.db.cf(CF_RAFT),
            keys::meta_key(self.group, kind),
            encode_meta(what, value)?,
        )?;
        Ok(())
    }

    /// The index of the last entry written, entries at or below the purge point included.
    fn last_index(&self) -> Result<Option<u64>, StorageError> {
        let Some(bytes) = self
            .db
            .db()
            .get_cf(self.db.cf(CF_RAFT), keys::meta_key(self.group, meta::LAST))?
        else {
            return Ok(None);
        };
        let index = <[u8; 8]>::try_from(bytes.as_slice()).map_err(|_| StorageError::Corrupt {
            what: "last log index",
            detail: format!("{} bytes", bytes.len()),
        })?;
        Ok(Some(u64::from_be_bytes(index)))
    }

    /// Adds the write of the log's new last index (`None`: the log is empty) to `batch`, which
    /// writes or deletes the entries that move it.
    fn record_last_index(&self, batch: &mut WriteBatch, index: Option<u64>) {
        let key = keys::meta_key(self.group, meta::LAST);
        match index {
            Some(index) => batch.put_cf(self.db.cf(CF_RAFT), key, index.to_be_bytes()),
            None => batch.delete_cf(self.db.cf(CF_RAFT), key),
        }
    }

    fn take_unsaved_committed(&self) -> Option<Vec<u8>> {
        self.unsaved_committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    fn read_range(
        &self,
        start: u64,
        end_inclusive: Option<u64>,
    ) -> Result<Vec<EntryOf<C>>, StorageError> {
        if let Some(end) = end_inclusive {
            if let Some(values) = self.recent().range(start, end) {
                return values.map(decode_entry::<C>).collect();
            }
        }
        let mut options = ReadOptions::default();
        let upper = match end_inclusive.and_then(|end| end.checked_add(1)) {
            Some(end) => keys::log_key(self.group, end).to_vec(),
            None => keys::group_end(self.group),
        };
        options.set_iterate_upper_bound(upper);
        let from = keys::log_key(self.group, start);
        let iter = self.db.db().iterator_cf_opt(
            self.db.cf(CF_LOG),
            options,
            IteratorMode::From(&from, Direction::Forward),
        );
        let mut entries = Vec::new();
        for item in iter {
            let (_, value) = item?;
            entries.push(decode_entry::<C>(&value)?);
        }
        Ok(entries)
    }

    fn entry_at(&self, index: u64) -> Result<EntryOf<C>, StorageError> {
        let value = self
            .db
            .db()
            .get_cf(self.db.cf(CF_LOG), keys::log_key(self.group, index))?
            .ok_or_else(|| StorageError::Corrupt {
                what: "log",
                detail: format!("{} has no entry at its last index {index}", self.group),
            })?;
        decode_entry::<C>(&value)
    }
}

fn encode_meta<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StorageError> {
    postcard::to_allocvec(value).map_err(|source| StorageError::Encode { what, source })
}

fn decode_meta<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StorageError> {
    postcard::from_bytes(bytes).map_err(|source| StorageError::Decode { what, source })
}

fn encode_entry<C: RaftTypeConfig>(entry: &EntryOf<C>) -> Result<Vec<u8>, StorageError> {
    ferry_types::encode_exact(entry).map_err(|source| StorageError::Encode {
        what: "log entry",
        source,
    })
}

fn decode_entry<C: RaftTypeConfig>(value: &[u8]) -> Result<EntryOf<C>, StorageError> {
    postcard::from_bytes(value).map_err(|source| StorageError::Decode {
        what: "log entry",
        source,
    })
}

impl<C: RaftTypeConfig> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<C>>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(&x) => x,
            Bound::Excluded(&x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end_inclusive = match range.end_bound() {
            Bound::Included(&x) => Some(x),
            Bound::Excluded(&0) => return Ok(Vec::new()),
            Bound::Excluded(&x) => Some(x - 1),
            Bound::Unbounded => None,
        };
        Ok(self.read_range(start, end_inclusive)?)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        Ok(self.get_meta(meta::VOTE, "vote")?)
    }
}

impl<C: RaftTypeConfig> RaftLogStorage<C> for LogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let last_purged_log_id: Option<LogIdOf<C>> =
            self.get_meta(meta::PURGED, "purged log id")?;
        let purged_to = last_purged_log_id.as_ref().map(|id| id.index());
        // The last index is recorded rather than found: a scan back from the end of the group's
        // keys stepped over every entry deleted below them, other groups' purged logs included.
        let last_log_id = match self.last_index()? {
            Some(last) if purged_to.is_none_or(|purged| last > purged) => {
                Some(self.entry_at(last)?.log_id())
            }
            _ => last_purged_log_id.clone(),
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        self.put_meta(meta::VOTE, "vote", vote)?;
        // A vote must be durable before it is granted or used.
        self.db.sync().await
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        // Kept for the next append: it only lets a restart apply committed entries before an
        // election, so an older one is safe, and a write per commit cost 2% of a busy node.
        let bytes = encode_meta("committed log id", &committed)?;
        *self
            .unsaved_committed
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(bytes);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        let unsaved = self
            .unsaved_committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let committed = match unsaved {
            Some(bytes) => Some(decode_meta("committed log id", &bytes)?),
            None => self.get_meta::<Option<LogIdOf<C>>>(meta::COMMITTED, "committed log id")?,
        };
        Ok(committed.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = self.db.cf(CF_LOG);
        let mut batch = WriteBatch::default();
        let mut encoded = Vec::new();
        let mut bytes = 0usize;
        let mut last = None;
        for entry in entries {
            last = Some(entry.index());
            let value = encode_entry::<C>(&entry)?;
            bytes += value.len();
            batch.put_cf(cf, keys::log_key(self.group, entry.index()), &value);
            encoded.push((entry.index(), value));
        }
        if last.is_some() {
            self.record_last_index(&mut batch, last);
        }
        if let Some(committed) = self.take_unsaved_committed() {
            batch.put_cf(
                self.db.cf(CF_RAFT),
                keys::meta_key(self.group, meta::COMMITTED),
                committed,
            );
        }
        metrics::counter!("ferry_storage_log_appended_bytes_total").increment(bytes as u64);
        self.appended_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        // Written now so that the entries are readable when this returns; acknowledged once the
        // shared sync thread has the WAL on disk.
        self.db.db().write(batch).map_err(StorageError::from)?;
        // Kept only once in RocksDB: a read meanwhile finds its last entries missing here and reads
        // RocksDB. Appends, truncations and purges of a group come one at a time from its core.
        let mut recent = self.recent();
        for (index, value) in encoded {
            recent.push(index, value);
        }
        drop(recent);
        self.db
            .after_sync(Box::new(move |result| callback.io_completed(result)));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let keep_to = last_log_id.map(|id| id.index());
        let start = keep_to.map_or(0, |index| index + 1);
        // openraft may ask to keep entries past the log's end.
        let last = self
            .last_index()?
            .zip(keep_to)
            .map(|(last, keep_to)| last.min(keep_to));
        self.recent().truncate_from(start);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.db.cf(CF_LOG),
            keys::log_key(self.group, start).to_vec(),
            keys::group_end(self.group),
        );
        self.record_last_index(&mut batch, last);
        self.db.db().write(batch).map_err(StorageError::from)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        // Record the purge point first: entries at or below it are ignored even if a crash leaves
        // some of them behind. The last index stays: the purge point covers it once it is passed.
        let end = log_id.index() + 1;
        self.put_meta(meta::PURGED, "purged log id", &log_id)?;
        self.recent().purge_through(log_id.index());
        self.db
            .db()
            .delete_range_cf(
                self.db.cf(CF_LOG),
                keys::log_key(self.group, 0),
                keys::log_key(self.group, end),
            )
            .map_err(StorageError::from)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use openraft::alias::LeaderIdOf;
    use openraft::vote::RaftLeaderId;
    use rocksdb::perf::{PerfContext, PerfMetric, PerfStatsLevel};

    use super::*;

    openraft::declare_raft_types!(TestConfig);

    /// Reading where a group's log ends costs a few lookups, whatever other groups deleted. A scan
    /// back from the end of the group's keys stepped over every purged entry still in the memtable
    /// below them, one skiplist search each: on a node where one queue had just drained 100,000
    /// messages, each replica of a new queue took a worker for tens of milliseconds as it started,
    /// and the new queue's first sends waited up to 600 ms.
    // Synchronous: RocksDB counts comparisons per thread, and every call here must run on this one.
    #[test]
    fn finding_the_log_end_does_not_walk_other_groups_purged_entries() {
        let dir = tempfile::tempdir().unwrap();
        let db = NodeDb::open(dir.path()).unwrap();
        let leader = LeaderIdOf::<TestConfig>::new(1, 1).to_committed();
        let log_id = |index| LogIdOf::<TestConfig>::new(leader, index);
        let entry = |index| EntryOf::<TestConfig>::new_blank(log_id(index));

        let mut drained = LogStore::<TestConfig>::new(db.clone(), GroupId(3));
        for first in (1..=20_000u64).step_by(10) {
            block_on(drained.append((first..first + 10).map(entry), IOFlushed::noop())).unwrap();
            if (first + 9) % 500 == 0 {
                block_on(drained.purge(log_id(first + 9))).unwrap();
            }
        }

        rocksdb::perf::set_perf_stats(PerfStatsLevel::EnableCount);
        let mut context = PerfContext::default();
        let mut comparisons = |store: &mut LogStore<TestConfig>| {
            context.reset();
            let pristine = store.is_pristine().unwrap();
            let state = block_on(store.get_log_state()).unwrap();
            let count = context.metric(PerfMetric::UserKeyComparisonCount);
            (pristine, state.last_log_id, count)
        };
        let fresh = comparisons(&mut LogStore::new(db.clone(), GroupId(9)));
        let reopened = comparisons(&mut LogStore::new(db.clone(), GroupId(3)));
        rocksdb::perf::set_perf_stats(PerfStatsLevel::Disable);

        assert_eq!((fresh.0, fresh.1), (true, None));
        assert_eq!((reopened.0, reopened.1), (false, Some(log_id(20_000))));
        // The scan took about 1,600,000 comparisons per read here; the lookups take 100 to 250.
        assert!(
            fresh.2 < 1_000 && reopened.2 < 1_000,
            "key comparisons: {} for a new group, {} for the drained one",
            fresh.2,
            reopened.2
        );
    }
}
