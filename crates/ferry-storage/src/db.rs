use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ferry_types::GroupId;
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};

use crate::keys::{self, meta, CF_LOG, CF_RAFT, CF_SM, FORMAT_KEY};
use crate::recent::RecentEntries;

/// The layout of keys and values this build writes (keys, log entries, state-machine records,
/// snapshot files). Raised whenever any of them changes incompatibly: a node refuses to start on a
/// data directory of another version rather than misread it. Format 2: a message's state lives
/// only in its visibility index entry (receipt handles say where). Format 3: each group's last log
/// index is recorded in its Raft metadata; a format 2 directory gets it at open
/// ([`record_last_log_indexes`]). Older formats have no migration.
pub const FORMAT_VERSION: u32 = 3;

/// The format [`record_last_log_indexes`] upgrades from.
const FORMAT_WITHOUT_LAST_INDEXES: u32 = 2;

/// Errors of the storage layer. Any of them means the node cannot trust its disk: openraft stops the
/// group that hit it.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: postcard::Error,
    },
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("encode {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: postcard::Error,
    },
    #[error("snapshot file {path}: {source}")]
    SnapshotIo {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{dir} holds on-disk format {found}, but this build reads format {FORMAT_VERSION}; \
         there is no migration between formats: run the build that wrote it"
    )]
    Format { dir: PathBuf, found: String },
    #[error("storage is closed")]
    Closed,
}

impl From<StorageError> for io::Error {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::SnapshotIo { source, .. } => source,
            other => io::Error::other(other),
        }
    }
}

/// Called once the WAL holding a write is on disk.
type SyncWaiter = Box<dyn FnOnce(io::Result<()>) + Send>;

/// How many unsynced appends may queue for the sync thread before appenders wait. Enough for every
/// group of a busy node to have a few appends in flight.
const SYNC_QUEUE_BOUND: usize = 16_384;

/// The node's one RocksDB instance and its group-commit sync thread.
pub struct NodeDb {
    db: Arc<DB>,
    dir: PathBuf,
    sync_tx: Mutex<Option<SyncSender<SyncWaiter>>>,
    sync_thread: Mutex<Option<JoinHandle<()>>>,
    /// Bytes of log entries all the groups' logs keep in memory (see `recent`).
    recent_log_bytes: Arc<AtomicUsize>,
    /// State flushes asked for and done, counted: callers that ask while a flush runs share the next.
    state_flushes: Mutex<StateFlushes>,
    /// Held by the one caller running a state flush.
    state_flush_running: Mutex<()>,
    /// Whether compactions of the state family collect blob garbage now.
    collecting_blobs: AtomicBool,
}

#[derive(Default)]
struct StateFlushes {
    asked: u64,
    /// The number of requests the last finished flush covered: every one asked before it began.
    covered: u64,
}

impl NodeDb {
    pub fn open(dir: &Path) -> Result<Arc<Self>, StorageError> {
        std::fs::create_dir_all(dir.join("snapshots")).map_err(|source| {
            StorageError::SnapshotIo {
                path: dir.to_owned(),
                source,
            }
        })?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.increase_parallelism(2);
        // Writers waiting for a write group block instead of spinning on sched_yield (2.4 calls per
        // message at 1,000 msg/s): with more threads than cores the spin takes the CPU from the
        // thread it waits for. Without the spin, a group's leader inserts its followers' batches
        // itself rather than waiting for them to insert in parallel.
        options.set_enable_write_thread_adaptive_yield(false);
        options.set_allow_concurrent_memtable_write(false);
        // This RocksDB defaults to DEBUG, which writes a LOG line at every WAL sync.
        options.set_log_level(rocksdb::LogLevel::Info);
        // One WAL for the log and Raft families keeps vote and log writes in order across a crash
        // (state-machine writes skip it); the WAL is synced by the sync thread, never by a write call.
        options.set_manual_wal_flush(false);
        let families = [CF_LOG, CF_RAFT, CF_SM]
            .map(|name| ColumnFamilyDescriptor::new(name, cf_options(name)));
        let db = Arc::new(DB::open_cf_descriptors(&options, dir.join("db"), families)?);
        check_format(&db, dir)?;

        let (sync_tx, sync_rx) = sync_channel(SYNC_QUEUE_BOUND);
        let sync_db = db.clone();
        let thread = std::thread::Builder::new()
            .name("ferry-wal-sync".into())
            .spawn(move || run_sync_loop(&sync_db, sync_rx))
            .map_err(|source| StorageError::SnapshotIo {
                path: dir.to_owned(),
                source,
            })?;
        Ok(Arc::new(Self {
            db,
            dir: dir.to_owned(),
            sync_tx: Mutex::new(Some(sync_tx)),
            sync_thread: Mutex::new(Some(thread)),
            recent_log_bytes: Arc::default(),
            state_flushes: Mutex::default(),
            state_flush_running: Mutex::new(()),
            collecting_blobs: AtomicBool::new(false),
        }))
    }

    /// An empty memory of a group log's newest entries, within this node's budget.
    pub(crate) fn recent_entries(&self) -> RecentEntries {
        RecentEntries::new(self.recent_log_bytes.clone())
    }

    pub fn db(&self) -> &DB {
        &self.db
    }

    pub fn snapshot_dir(&self) -> PathBuf {
        self.dir.join("snapshots")
    }

    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created at open")
    }

    /// Calls `done` once everything written so far is durable. Shares the fsync with every other
    /// waiter queued at the same time.
    pub(crate) fn after_sync(&self, done: SyncWaiter) {
        let sender = self
            .sync_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match sender {
            Some(sender) => {
                if let Err(failed) = sender.send(done) {
                    (failed.0)(Err(StorageError::Closed.into()));
                }
            }
            None => done(Err(StorageError::Closed.into())),
        }
    }

    /// Waits until everything written so far is durable.
    pub(crate) async fn sync(&self) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.after_sync(Box::new(move |result| {
            let _ = tx.send(result);
        }));
        rx.await
            .unwrap_or_else(|_| Err(StorageError::Closed.into()))
    }

    /// Returns once every state-machine write made before the call is in SST files, so a crash no
    /// longer loses it (the `sm` family skips the WAL). Blocks; callers that ask while a flush runs
    /// share the next one, and a flush waits [`STATE_FLUSH_GATHERING`] for the callers of a burst
    /// (every group snapshotted at once), so checkpoints of many groups cost one flush.
    pub fn flush_state(&self) -> Result<(), StorageError> {
        let flushes = || self.state_flushes.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = {
            let mut flushes = flushes();
            flushes.asked += 1;
            flushes.asked
        };
        let _running = self
            .state_flush_running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if flushes().covered >= ticket {
            return Ok(());
        }
        std::thread::sleep(STATE_FLUSH_GATHERING);
        let covering = flushes().asked;
        self.db.flush_cf(self.cf(CF_SM))?;
        metrics::counter!("ferry_storage_state_flushes_total").increment(1);
        flushes().covered = covering;
        Ok(())
    }

    /// How full the fuller of the state and log families' active memtables is, as a share of the
    /// size at which RocksDB flushes it on its own. Snapshots taken shortly before the state's
    /// memtable is flushed anyway cost no extra flush, and let the log behind them go while it is
    /// still in its memtable: a purged entry is then never written to an SST file.
    pub fn memtables_filled(&self) -> f64 {
        [(CF_SM, STATE_WRITE_BUFFER), (CF_LOG, LOG_WRITE_BUFFER)]
            .into_iter()
            .map(|(name, flushed_at)| {
                let bytes = self
                    .db
                    .property_int_value_cf(self.cf(name), "rocksdb.cur-size-active-mem-table")
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                bytes as f64 / flushed_at as f64
            })
            .fold(0.0, f64::max)
    }

    /// Turns the state family's blob garbage collection on once deleted bodies are half of its
    /// blob files' bytes, and off again below a quarter. Collection moves the bodies still alive
    /// out of the oldest quarter of the files as compactions pass them: always on, it moved half
    /// the bodies of a growing backlog, freeing nothing; never on, a few long-kept messages would
    /// keep files full of deleted ones on disk.
    pub fn balance_blob_collection(&self) {
        let state = self.cf(CF_SM);
        let property = |name| {
            self.db
                .property_int_value_cf(state, name)
                .ok()
                .flatten()
                .unwrap_or(0)
        };
        let garbage = property("rocksdb.live-blob-file-garbage-size");
        let total = property("rocksdb.live-blob-file-size");
        metrics::gauge!("ferry_storage_blob_bytes").set(total as f64);
        metrics::gauge!("ferry_storage_blob_garbage_bytes").set(garbage as f64);
        let collecting = self.collecting_blobs.load(Ordering::Relaxed);
        let wanted = if collecting {
            garbage * 4 > total
        } else {
            garbage * 2 > total
        };
        if wanted == collecting {
            return;
        }
        let value = if wanted { "true" } else { "false" };
        match self
            .db
            .set_options_cf(state, &[("enable_blob_garbage_collection", value)])
        {
            Ok(()) => self.collecting_blobs.store(wanted, Ordering::Relaxed),
            Err(error) => tracing::warn!(%error, "could not switch blob garbage collection"),
        }
    }

    /// Stops the sync thread after it has served every queued waiter. Call before dropping the last
    /// handle at shutdown.
    pub fn close(&self) {
        self.sync_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = self
            .sync_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = thread.join();
        }
    }
}

impl Drop for NodeDb {
    fn drop(&mut self) {
        self.close();
    }
}

/// Records [`FORMAT_VERSION`] in a new database, and refuses one written in another format
/// (including data of builds from before versions were recorded).
fn check_format(db: &DB, dir: &Path) -> Result<(), StorageError> {
    let raft = db
        .cf_handle(CF_RAFT)
        .expect("column families are created at open");
    let found = match db.get_cf(raft, FORMAT_KEY)? {
        Some(bytes) => match <[u8; 4]>::try_from(bytes.as_slice()) {
            Ok(version) if u32::from_be_bytes(version) == FORMAT_VERSION => return Ok(()),
            Ok(version) if u32::from_be_bytes(version) == FORMAT_WITHOUT_LAST_INDEXES => {
                return record_last_log_indexes(db);
            }
            Ok(version) => u32::from_be_bytes(version).to_string(),
            Err(_) => format!("(unreadable: {bytes:02x?})"),
        },
        None => {
            let holds_data = [CF_LOG, CF_RAFT, CF_SM].into_iter().any(|name| {
                let cf = db
                    .cf_handle(name)
                    .expect("column families are created at open");
                db.iterator_cf(cf, IteratorMode::Start).next().is_some()
            });
            if !holds_data {
                let mut sync = WriteOptions::default();
                sync.set_sync(true);
                db.put_cf_opt(raft, FORMAT_KEY, FORMAT_VERSION.to_be_bytes(), &sync)?;
                return Ok(());
            }
            "0 (written before formats were recorded)".to_owned()
        }
    };
    Err(StorageError::Format {
        dir: dir.to_owned(),
        found,
    })
}

/// Upgrades a format 2 directory: records each group's last log index, found by one pass over the
/// log family (keys sort by group, then index), and the new format, in one synced batch. A crash
/// before it leaves format 2, and the next start does it again.
fn record_last_log_indexes(db: &DB) -> Result<(), StorageError> {
    let raft = db
        .cf_handle(CF_RAFT)
        .expect("column families are created at open");
    let log = db
        .cf_handle(CF_LOG)
        .expect("column families are created at open");
    let mut batch = WriteBatch::default();
    let mut groups = 0usize;
    let mut last: Option<[u8; 16]> = None;
    let mut record = |key: [u8; 16]| {
        let (group, index) = key.split_at(8);
        let group = GroupId(u64::from_be_bytes(group.try_into().expect("8 bytes")));
        batch.put_cf(raft, keys::meta_key(group, meta::LAST), index);
        groups += 1;
    };
    let mut iter = db.raw_iterator_cf(log);
    iter.seek_to_first();
    while let Some(key) = iter.key() {
        let key = <[u8; 16]>::try_from(key).map_err(|_| StorageError::Corrupt {
            what: "log key",
            detail: format!("{} bytes", key.len()),
        })?;
        if let Some(previous) = last.filter(|previous| previous[..8] != key[..8]) {
            record(previous);
        }
        last = Some(key);
        iter.next();
    }
    iter.status()?;
    if let Some(previous) = last {
        record(previous);
    }
    batch.put_cf(raft, FORMAT_KEY, FORMAT_VERSION.to_be_bytes());
    let mut sync = WriteOptions::default();
    sync.set_sync(true);
    db.write_opt(batch, &sync)?;
    tracing::info!(
        groups,
        "recorded the last log index of every group: format {FORMAT_WITHOUT_LAST_INDEXES} upgraded to {FORMAT_VERSION}"
    );
    Ok(())
}

/// How long a state flush waits for more callers before it begins.
const STATE_FLUSH_GATHERING: Duration = Duration::from_millis(50);
/// Memtable size of the state family: RocksDB's default, named because the log's pacing reads it.
const STATE_WRITE_BUFFER: usize = 64 << 20;
/// Memtable size of the log family: twice the state's, so that the entries a flush of the state
/// lets go are mostly still in it when they are purged (see [`NodeDb::memtables_filled`]).
const LOG_WRITE_BUFFER: usize = 128 << 20;

/// State values at least this long (message bodies, in practice) live in blob files: the state
/// family's compactions then move keys and blob references, not bodies.
const MIN_BLOB_SIZE: u64 = 512;

fn cf_options(name: &str) -> Options {
    let mut options = Options::default();
    // Levels 0 and 1 hold what was written last, which the log's purges and the queues' deletes
    // mostly remove before it goes deeper: flushes and the first compaction do not compress it.
    // Below, LZ4, cheaper than the default Snappy (docs/benchmarks.md, fourteenth pass).
    use rocksdb::DBCompressionType::{Lz4, None as Plain};
    options.set_compression_per_level(&[Plain, Plain, Lz4, Lz4, Lz4, Lz4, Lz4]);
    match name {
        // Log entries are written once, read mostly while fresh, and deleted in ranges by purge.
        CF_LOG => options.set_write_buffer_size(LOG_WRITE_BUFFER),
        // Every partition's new messages interleave in one key space, so each level-0 file spans
        // all of level 1 and leveled compaction rewrote the whole backlog at every level-0
        // compaction (4.3 GB written per node for a 1,000,000-message backlog). Universal
        // compaction merges runs of similar size instead, and bodies kept in blob files are not
        // rewritten with their keys: 0.12 GB (docs/benchmarks.md, twentieth pass). Blob garbage
        // collection is switched on and off by [`NodeDb::balance_blob_collection`].
        CF_SM => {
            options.set_write_buffer_size(STATE_WRITE_BUFFER);
            options.set_compaction_style(rocksdb::DBCompactionStyle::Universal);
            options.set_enable_blob_files(true);
            options.set_min_blob_size(MIN_BLOB_SIZE);
        }
        _ => {}
    }
    options
}

/// Drains all waiting callers, fsyncs the WAL once, and answers them all.
fn run_sync_loop(db: &DB, waiters: Receiver<SyncWaiter>) {
    while let Ok(first) = waiters.recv() {
        let mut batch = vec![first];
        while let Ok(next) = waiters.try_recv() {
            batch.push(next);
        }
        let started = std::time::Instant::now();
        let result = db.flush_wal(true).map_err(|e| e.into_string());
        metrics::histogram!("ferry_storage_wal_sync_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("ferry_storage_wal_syncs_total").increment(1);
        metrics::histogram!("ferry_storage_wal_sync_waiters").record(batch.len() as f64);
        for waiter in batch {
            waiter(result.clone().map_err(io::Error::other));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `key` = `value` to the `family` of the closed database in `dir`.
    fn write_raw(dir: &Path, family: &str, key: &[u8], value: Option<&[u8]>) {
        let families = [CF_LOG, CF_RAFT, CF_SM]
            .map(|name| ColumnFamilyDescriptor::new(name, cf_options(name)));
        let db = DB::open_cf_descriptors(&Options::default(), dir.join("db"), families).unwrap();
        let cf = db.cf_handle(family).unwrap();
        match value {
            Some(value) => db.put_cf(cf, key, value).unwrap(),
            None => db.delete_cf(cf, key).unwrap(),
        }
    }

    fn reopen(dir: &Path) -> Result<(), StorageError> {
        NodeDb::open(dir).map(|db| db.close())
    }

    #[test]
    fn a_new_directory_gets_the_format_and_opens_again_with_its_groups() {
        let dir = tempfile::tempdir().unwrap();
        let db = NodeDb::open(dir.path()).unwrap();
        let group = ferry_types::GroupId(3);
        db.put_group_meta(group, crate::keys::meta::VOTE, b"vote")
            .unwrap();
        db.close();
        drop(db);
        let db = NodeDb::open(dir.path()).unwrap();
        assert_eq!(db.groups_on_disk().unwrap(), vec![group]);
    }

    /// RocksDB writes which CRC32C it chose into its LOG at open; the build script links one built
    /// for this CPU in place of the system library's portable one.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn checksums_use_the_cpu_crc32c_instruction() {
        if !std::arch::is_x86_feature_detected!("sse4.2") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        NodeDb::open(dir.path()).unwrap().close();
        let log = std::fs::read_to_string(dir.path().join("db/LOG")).unwrap();
        let chosen = log
            .lines()
            .find_map(|line| line.split_once("Fast CRC32 supported: "))
            .map(|(_, chosen)| chosen);
        assert_eq!(chosen, Some("Supported on x86"));
    }

    #[test]
    fn memtables_fill_with_writes_and_empty_with_a_state_flush() {
        let dir = tempfile::tempdir().unwrap();
        let db = NodeDb::open(dir.path()).unwrap();
        let empty = db.memtables_filled();
        let value = vec![7u8; 1 << 20];
        for key in 0u32..16 {
            db.db()
                .put_cf(db.cf(CF_SM), key.to_be_bytes(), &value)
                .unwrap();
        }
        let filled = db.memtables_filled();
        // 16 MiB of a 64 MiB memtable, plus the memtable's own overhead.
        assert!(
            (0.25..0.3).contains(&(filled - empty)),
            "{empty} then {filled}"
        );
        db.flush_state().unwrap();
        assert!(db.memtables_filled() < 0.01, "{}", db.memtables_filled());
        db.close();
    }

    #[test]
    fn long_kept_bodies_do_not_pin_blob_files_of_deleted_ones() {
        let dir = tempfile::tempdir().unwrap();
        let db = NodeDb::open(dir.path()).unwrap();
        let state = db.cf(CF_SM);
        let blob_bytes = || {
            db.db()
                .property_int_value_cf(state, "rocksdb.total-blob-file-size")
                .unwrap()
                .unwrap()
        };
        let body = |key: u32| vec![(key % 251) as u8; 1024];
        const ROUNDS: u32 = 16;
        const PER_ROUND: u32 = 200;
        let mut largest = 0;
        // Each round's flush writes one blob file of 200 bodies, of which all but the first are
        // deleted again: without garbage collection every file stays, pinned by its first body.
        // The balance turns collection on for the compactions that follow.
        for round in 0..ROUNDS {
            let first = round * PER_ROUND;
            for key in first..first + PER_ROUND {
                db.db().put_cf(state, key.to_be_bytes(), body(key)).unwrap();
            }
            db.flush_state().unwrap();
            largest = largest.max(blob_bytes());
            for key in first + 1..first + PER_ROUND {
                db.db().delete_cf(state, key.to_be_bytes()).unwrap();
            }
            db.flush_state().unwrap();
            db.balance_blob_collection();
            db.db()
                .compact_range_cf(state, None::<&[u8]>, None::<&[u8]>);
        }
        let one_file = u64::from(PER_ROUND) * 1024;
        assert!(largest > one_file, "{largest}");
        assert!(blob_bytes() < 6 * one_file, "{} bytes", blob_bytes());
        for round in 0..ROUNDS {
            let kept = db.db().get_cf(state, (round * PER_ROUND).to_be_bytes());
            assert_eq!(kept.unwrap(), Some(body(round * PER_ROUND)));
        }
        db.close();
    }

    #[test]
    fn a_growing_backlog_is_not_collected() {
        let dir = tempfile::tempdir().unwrap();
        let db = NodeDb::open(dir.path()).unwrap();
        let state = db.cf(CF_SM);
        for round in 0u32..8 {
            for key in round * 200..(round + 1) * 200 {
                db.db()
                    .put_cf(state, key.to_be_bytes(), [1u8; 1024])
                    .unwrap();
            }
            db.flush_state().unwrap();
            db.balance_blob_collection();
            db.db()
                .compact_range_cf(state, None::<&[u8]>, None::<&[u8]>);
            assert!(!db.collecting_blobs.load(Ordering::Relaxed));
        }
        // Deleting three bodies in four of every file makes garbage worth collecting (a file
        // with nothing alive goes without it).
        for key in (0u32..1600).filter(|key| key % 4 != 0) {
            db.db().delete_cf(state, key.to_be_bytes()).unwrap();
        }
        db.flush_state().unwrap();
        db.db()
            .compact_range_cf(state, None::<&[u8]>, None::<&[u8]>);
        db.balance_blob_collection();
        assert!(db.collecting_blobs.load(Ordering::Relaxed));
        db.close();
    }

    /// A closed database in a new directory that says it has `version`'s format.
    fn directory_of_format(version: u32) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        reopen(dir.path()).unwrap();
        write_raw(
            dir.path(),
            CF_RAFT,
            FORMAT_KEY,
            Some(&version.to_be_bytes()),
        );
        dir
    }

    #[test]
    fn format_2_gets_each_groups_last_log_index() {
        let dir = directory_of_format(FORMAT_WITHOUT_LAST_INDEXES);
        let (logged, purged_whole, unlogged) = (GroupId(3), GroupId(5), GroupId(7));
        for (group, index) in [(logged, 4), (logged, 9), (purged_whole, 1)] {
            write_raw(
                dir.path(),
                CF_LOG,
                &keys::log_key(group, index),
                Some(b"entry"),
            );
        }
        write_raw(dir.path(), CF_LOG, &keys::log_key(purged_whole, 1), None);
        write_raw(
            dir.path(),
            CF_RAFT,
            &keys::meta_key(unlogged, meta::VOTE),
            Some(b"vote"),
        );

        let db = NodeDb::open(dir.path()).unwrap();
        let raft = db.cf(CF_RAFT);
        let last = |group| {
            db.db()
                .get_cf(raft, keys::meta_key(group, meta::LAST))
                .unwrap()
        };
        assert_eq!(last(logged), Some(9u64.to_be_bytes().to_vec()));
        assert_eq!(last(purged_whole), None);
        assert_eq!(last(unlogged), None);
        assert_eq!(
            db.db().get_cf(raft, FORMAT_KEY).unwrap(),
            Some(FORMAT_VERSION.to_be_bytes().to_vec())
        );
        db.close();
    }

    #[test]
    fn another_format_is_refused() {
        let dir = directory_of_format(FORMAT_VERSION + 1);
        let error = reopen(dir.path()).unwrap_err();
        assert!(
            matches!(&error, StorageError::Format { found, .. } if *found == (FORMAT_VERSION + 1).to_string()),
            "{error}"
        );
    }

    #[test]
    fn data_without_a_recorded_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        reopen(dir.path()).unwrap();
        write_raw(dir.path(), CF_RAFT, FORMAT_KEY, None);
        write_raw(
            dir.path(),
            CF_RAFT,
            &crate::keys::meta_key(ferry_types::GroupId(7), crate::keys::meta::VOTE),
            Some(b"vote"),
        );
        let error = reopen(dir.path()).unwrap_err();
        assert!(
            matches!(&error, StorageError::Format { found, .. } if found.starts_with("0 ")),
            "{error}"
        );
    }
}
