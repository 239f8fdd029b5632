//! The queue state machine of one partition: commands in, results out, deterministic.
//!
//! Every replica of a partition applies the same commands in the same order and must reach the same
//! state byte for byte, so nothing here reads a clock, a random source or anything but the command,
//! its [`ApplyContext`] (the leader's time stamp and the log index) and the stored state.
//!
//! Rule: no tokio, tonic or rocksdb here. State lives behind the [`StateStore`] trait, whose keys are
//! relative to the partition; `ferry-storage` maps them into RocksDB under the group's prefix.

mod keys;
mod machine;
mod memo;
mod model;
mod record;

pub use machine::{
    apply, approximate_counts, dead_letters, has_receivable_message, in_flight_reaches,
    message_count, next_visibility_change, oldest_sent_at, receipt_expired,
};
pub use memo::ReceivableMemo;
pub use model::*;

/// Why a store operation failed (IO or corrupt data); the node stops applying on such an error.
#[derive(Debug, thiserror::Error)]
#[error("state store: {0}")]
pub struct StoreError(pub String);

/// A partition's key space, as the state machine sees it. Reads see every write of earlier commands;
/// writes of the command being applied are buffered by the caller and committed atomically with the
/// applied log index.
pub trait StateStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Visits `(key, value)` pairs with `start <= key < end` in ascending key order until `visit`
    /// returns `false`.
    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError>;
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>);
    fn delete(&mut self, key: Vec<u8>);
    /// Deletes every key with `start <= key < end`.
    fn delete_range(&mut self, start: Vec<u8>, end: Vec<u8>);
}
