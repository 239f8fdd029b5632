//! RocksDB storage for every Raft group on a node: the Raft logs, votes and membership, and the state
//! machines' data, in one database with one write-ahead log.
//!
//! Layout: three column families by kind of data (see `keys`), every key prefixed with the big-endian
//! group id, so one database holds thousands of groups without a memtable per group.
//!
//! Durability: a log append is written at once (readable) and acknowledged to openraft only after one
//! shared sync thread has fsynced the WAL ([`NodeDb`]'s group commit), so many concurrent appends of
//! many groups share one fsync. State-machine writes bypass the WAL: each carries the group's applied
//! log id in the same family, so a crash rewinds a group's state to a consistent earlier point (or
//! behind a snapshot file it installed), from which openraft re-applies the synced log. A snapshot
//! is a flush of the state ([`NodeDb::flush_state`]): the log is purged only up to flushed state.
//!
//! Each group's log also keeps its newest entries in memory, as encoded for RocksDB, until they are
//! applied: openraft reads every entry back right after appending it (see `recent`).
//!
//! Rule: the only crate that depends on `rocksdb`.

mod db;
mod group_state;
mod keys;
mod log_store;
mod recent;
mod snapshot;

pub use db::{NodeDb, StorageError};
pub use group_state::GroupState;
pub use keys::meta;
pub use log_store::LogStore;
pub use snapshot::{
    SnapshotData, SnapshotFile, SnapshotReader, SnapshotWriter, SNAPSHOT_CHUNK_BYTES,
};
