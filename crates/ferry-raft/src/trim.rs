//! Snapshots paced by the memtables, so that most of the log dies in memory.
//!
//! A log entry may go once the state it produced is durable, and the `sm` family skips the WAL, so
//! that is when the family is flushed. openraft snapshots a group every `snapshot_entries` entries:
//! under load long after RocksDB has flushed the entries to SST files and compacted them, as many
//! bytes as the state itself. Here every group that appended a good share of the log since it was
//! last snapshotted this way is snapshotted when a memtable is about to be flushed anyway (one
//! flush of the state serves them all), and each group's log is then purged up to its snapshot
//! once every follower has it. Entries purged while their memtable is in memory are dropped by its
//! flush. Groups that appended little are left to openraft's policy: with a thousand queues,
//! snapshotting every group at each cycle cost more flushes and purges than the log it freed.
//!
//! A cluster gone idle fills no memtable, and openraft snapshots only every `snapshot_entries`
//! entries, so the groups' last entries would stay until the next busy spell (megabytes per group,
//! replayed at every restart). So every few seconds the quiet groups whose log grew by more than a
//! little since their last snapshot take one too, sharing a flush.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use openraft::type_config::async_runtime::WatchReceiver;
use tokio::sync::watch;

use crate::multi::{GroupHandle, MultiRaft};
use crate::types::index_of;

/// How often the memtables are looked at.
const CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Share of a memtable's flush size at which the groups past [`SNAPSHOT_AFTER_BYTES`] are
/// snapshotted: early enough that the snapshots' flush comes before RocksDB's own.
const SNAPSHOT_AT_FILLED: f64 = 0.75;
/// Log bytes a group must have appended since its last such snapshot to take one: 1/64 of the log
/// memtable, so at most 64 groups take part in a cycle, and their snapshots share one flush.
const SNAPSHOT_AFTER_BYTES: u64 = 2 << 20;
/// How often quiet groups are looked at: at most one flush of the state per look.
const QUIET_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Log bytes a quiet group must have appended since its last such snapshot to take one.
const QUIET_SNAPSHOT_AFTER_BYTES: u64 = 64 << 10;

impl MultiRaft {
    /// Snapshots and purges as described in the module docs, until `shutdown` fires.
    pub async fn run_log_trimming(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut checks = tokio::time::interval(CHECK_INTERVAL);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Once the memtables were seen filled, not again until a flush emptied them: snapshots
        // taken meanwhile would each flush a sliver of the state.
        let mut armed = true;
        let mut quiet_checked = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = checks.tick() => {}
                _ = shutdown.changed() => return,
            }
            if self.db().memtables_filled() < SNAPSHOT_AT_FILLED {
                armed = true;
            } else if armed {
                armed = false;
                for handle in self.groups() {
                    handle.snapshot_if_log_grew(SNAPSHOT_AFTER_BYTES).await;
                }
            }
            if quiet_checked.elapsed() >= QUIET_CHECK_INTERVAL {
                quiet_checked = tokio::time::Instant::now();
                for handle in self.groups().iter().filter(|handle| handle.is_quiet()) {
                    handle
                        .snapshot_if_log_grew(QUIET_SNAPSHOT_AFTER_BYTES)
                        .await;
                }
            }
            for handle in self.groups() {
                handle.purge_to_snapshot().await;
            }
            // Purges and deletes become blob garbage: the same tick looks after it.
            self.db().balance_blob_collection();
        }
    }
}

impl GroupHandle {
    /// Snapshots the group if its log grew by `min_bytes` since it last did so here.
    async fn snapshot_if_log_grew(&self, min_bytes: u64) {
        let appended = self.log_bytes.load(Ordering::Relaxed);
        let at_snapshot = self.log_bytes_at_snapshot.load(Ordering::Relaxed);
        if appended.saturating_sub(at_snapshot) < min_bytes {
            return;
        }
        self.log_bytes_at_snapshot
            .store(appended, Ordering::Relaxed);
        // Fails only once the group is shutting down.
        let _ = self.raft.trigger().snapshot().await;
    }

    /// Purges the log up to the snapshot once every follower this replica leads holds it all: one
    /// further behind would need the snapshot sent instead of the entries.
    async fn purge_to_snapshot(&self) {
        let purge_to = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow_watched();
            let Some(snapshot) = index_of(&metrics.snapshot) else {
                return;
            };
            let followers_have_it = metrics.replication.as_ref().is_none_or(|replication| {
                replication
                    .values()
                    .all(|matched| index_of(matched) >= Some(snapshot))
            });
            (followers_have_it && index_of(&metrics.purged) < Some(snapshot)).then_some(snapshot)
        };
        if let Some(index) = purge_to {
            let _ = self.raft.trigger().purge_log(index).await;
        }
    }
}
