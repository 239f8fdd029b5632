//! SQS's in-flight limit: a queue holds at most about `limit` messages received and neither deleted
//! nor visible again. Each partition leader enforces its share of the queue's limit before it
//! takes more; a standard queue's receive then fails with OverLimit, a FIFO queue's finds nothing.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ferry_queue::StateStore;
use ferry_raft::MultiRaft;
use ferry_types::GroupId;

/// How long a partition found at its limit stays refused before its index is counted again: the
/// count scans the messages in flight, which a queue at its limit has many of.
const FULL_FOR: Duration = Duration::from_secs(1);
/// Partitions remembered; past this the memory starts again (queues come and go).
const REMEMBERED: usize = 10_000;

/// SQS's limit for a standard or FIFO queue.
pub const DEFAULT_IN_FLIGHT_LIMIT: u64 = 120_000;

pub(crate) struct InFlightLimit {
    limit: u64,
    partitions: Mutex<HashMap<GroupId, Partition>>,
}

#[derive(Clone, Copy)]
struct Partition {
    /// This partition's share of its queue's limit.
    limit: u64,
    /// Refused until then without counting again.
    full_until: Option<Instant>,
}

impl InFlightLimit {
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            partitions: Mutex::default(),
        }
    }

    /// Whether the partition `group`, whose applied state is `state`, holds its share of the
    /// queue's limit in flight at `now_ms`.
    pub fn is_full<S: StateStore + ?Sized>(
        &self,
        multi: &MultiRaft,
        group: GroupId,
        state: &S,
        now_ms: u64,
    ) -> Result<bool, ferry_queue::StoreError> {
        let now = Instant::now();
        let known = self.lock().get(&group).copied();
        let limit = match known {
            Some(known) if known.full_until.is_some_and(|until| now < until) => return Ok(true),
            Some(known) => known.limit,
            None => match self.share(multi, group) {
                Some(limit) => {
                    let mut partitions = self.lock();
                    if partitions.len() >= REMEMBERED {
                        partitions.clear();
                    }
                    let full_until = None;
                    partitions.insert(group, Partition { limit, full_until });
                    limit
                }
                // Not in this node's catalog yet: the whole queue's limit, for now.
                None => self.limit,
            },
        };
        let full = ferry_queue::in_flight_reaches(state, now_ms, limit)?;
        if let Some(partition) = self.lock().get_mut(&group) {
            partition.full_until = full.then_some(now + FULL_FOR);
        }
        Ok(full)
    }

    /// The partition's share of the limit: the queue's limit over its partitions, rounded up.
    fn share(&self, multi: &MultiRaft, group: GroupId) -> Option<u64> {
        let partitions = multi
            .catalog()
            .borrow()
            .queue_of_group(group)?
            .partitions
            .len() as u64;
        Some(self.limit.div_ceil(partitions.max(1)).max(1))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<GroupId, Partition>> {
        self.partitions.lock().unwrap_or_else(|e| e.into_inner())
    }
}
