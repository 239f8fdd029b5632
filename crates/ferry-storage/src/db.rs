use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, DB};

use crate::keys::{CF_LOG, CF_RAFT, CF_SM};

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
        // One WAL for the log and Raft families keeps vote and log writes in order across a crash
        // (state-machine writes skip it); the WAL is synced by the sync thread, never by a write call.
        options.set_manual_wal_flush(false);
        let families = [CF_LOG, CF_RAFT, CF_SM]
            .map(|name| ColumnFamilyDescriptor::new(name, cf_options(name)));
        let db = Arc::new(DB::open_cf_descriptors(&options, dir.join("db"), families)?);

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
        }))
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

fn cf_options(name: &str) -> Options {
    let mut options = Options::default();
    if name == CF_LOG {
        // Log entries are written once, read mostly while fresh, and deleted in ranges by purge.
        options.set_write_buffer_size(64 << 20);
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
        let result = db.flush_wal(true).map_err(|e| e.into_string());
        metrics::counter!("ferry_storage_wal_syncs_total").increment(1);
        metrics::histogram!("ferry_storage_wal_sync_waiters").record(batch.len() as f64);
        for waiter in batch {
            waiter(result.clone().map_err(io::Error::other));
        }
    }
}
