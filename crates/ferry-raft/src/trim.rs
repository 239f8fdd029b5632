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
//! little since their last snapshot take one too, sharing a flush. Their logs are purged at that
//! check only (they append nothing between), the other groups' at every tick.

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
                let grown = self.pick_groups(|handle| {
                    handle
                        .log_grew(SNAPSHOT_AFTER_BYTES)
                        .then(|| handle.clone())
                });
                for handle in grown {
                    handle.snapshot().await;
                }
            }
            // Quiet groups append nothing, so their logs are looked at for purging only here, once
            // per quiet check: at every tick they were a quarter of an idle node's CPU with 3,000
            // queues. The snapshots this check takes are purged at the next.
            let quiet_check = quiet_checked.elapsed() >= QUIET_CHECK_INTERVAL;
            if quiet_check {
                quiet_checked = tokio::time::Instant::now();
                let grown = self.pick_groups(|handle| {
                    (handle.is_quiet() && handle.log_grew(QUIET_SNAPSHOT_AFTER_BYTES))
                        .then(|| handle.clone())
                });
                for handle in grown {
                    handle.snapshot().await;
                }
            }
            let purges = self.pick_groups(|handle| {
                if handle.is_quiet() && !quiet_check {
                    return None;
                }
                let index = handle.purgeable_to()?;
                Some((handle.clone(), index))
            });
            for (handle, index) in purges {
                let _ = handle.raft.trigger().purge_log(index).await;
            }
            // Purges and deletes become blob garbage: the same tick looks after it.
            self.db().balance_blob_collection();
        }
    }
}

impl GroupHandle {
    /// Whether the group's log grew by `min_bytes` since it was last snapshotted here.
    fn log_grew(&self, min_bytes: u64) -> bool {
        let appended = self.log_bytes.load(Ordering::Relaxed);
        let at_snapshot = self.log_bytes_at_snapshot.load(Ordering::Relaxed);
        appended.saturating_sub(at_snapshot) >= min_bytes
    }

    async fn snapshot(&self) {
        self.log_bytes_at_snapshot
            .store(self.log_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
        // Fails only once the group is shutting down.
        let _ = self.raft.trigger().snapshot().await;
    }

    /// The index to purge the log up to: the snapshot's, once every follower this replica leads
    /// holds it all (one further behind would need the snapshot sent instead of the entries).
    fn purgeable_to(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let snapshot = index_of(&metrics.snapshot)?;
        let followers_have_it = metrics.replication.as_ref().is_none_or(|replication| {
            replication
                .values()
                .all(|matched| index_of(matched) >= Some(snapshot))
        });
        (followers_have_it && index_of(&metrics.purged) < Some(snapshot)).then_some(snapshot)
    }
}
