//! Per-queue metrics, labelled with the queue's name: what SQS reports to CloudWatch, for
//! Prometheus. Every node counts the messages of the requests it answers, and reports the
//! backlog of the partitions it leads, so a queue's figures are the sum over the nodes (its oldest
//! message's age the maximum). The backlog is read from the leaders' applied state when the
//! metrics are scraped (and every few seconds besides), not kept up to date on every command; a
//! partition none of whose messages waits for a time is read again only after its state changed.
//! Each reading also touches every queue's counters: they exist, at zero, from the queue's first
//! reading (so that the first dead-letter shows as an increase), and a series nothing touches any
//! more — a deleted queue's — leaves `/metrics` after the recorder's idle timeout.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_queue::{ApproximateCounts, StoreError};
use ferry_raft::{GroupHandle, MultiRaft};
use ferry_types::GroupId;
use metrics::{counter, gauge};
use tokio::sync::Mutex;

use crate::leader;

/// Scrapes closer together than this see the previous reading: each one reads every led
/// partition's index ahead of now.
pub(crate) const SCRAPE_REFRESH_AGE: Duration = Duration::from_secs(1);
/// Without scrapes the gauges are refreshed this often, so that in `ferry dev`, whose nodes share
/// one registry, a scrape of one node's port also sees the others' shares of recent date.
pub(crate) const BACKGROUND_REFRESH_AGE: Duration = Duration::from_secs(10);

/// Every per-queue counter.
const COUNTERS: [&str; 6] = [
    "ferry_queue_messages_sent_total",
    "ferry_queue_sent_message_bytes_total",
    "ferry_queue_messages_received_total",
    "ferry_queue_empty_receives_total",
    "ferry_queue_messages_deleted_total",
    "ferry_queue_messages_dead_lettered_total",
];

/// Messages a send or batch stored (SQS's NumberOfMessagesSent; dead-lettering and redrives are
/// not sends), and their size as SQS measures SentMessageSize.
pub(crate) fn count_sent(queue: &str, messages: usize, bytes: usize) {
    counter!("ferry_queue_messages_sent_total", "queue" => queue.to_owned())
        .increment(messages as u64);
    counter!("ferry_queue_sent_message_bytes_total", "queue" => queue.to_owned())
        .increment(bytes as u64);
}

/// Messages moved from `queue` to its dead-letter queue after too many receives.
pub(crate) fn count_dead_lettered(queue: &str, messages: usize) {
    counter!("ferry_queue_messages_dead_lettered_total", "queue" => queue.to_owned())
        .increment(messages as u64);
}

/// Messages a receive returned, and receives that returned none (NumberOfMessagesReceived,
/// NumberOfEmptyReceives).
pub(crate) fn count_received(queue: &str, messages: usize) {
    if messages == 0 {
        counter!("ferry_queue_empty_receives_total", "queue" => queue.to_owned()).increment(1);
    } else {
        counter!("ferry_queue_messages_received_total", "queue" => queue.to_owned())
            .increment(messages as u64);
    }
}

/// Delete entries that succeeded, stale handles included, as SQS counts NumberOfMessagesDeleted.
pub(crate) fn count_deleted(queue: &str, entries: usize) {
    counter!("ferry_queue_messages_deleted_total", "queue" => queue.to_owned())
        .increment(entries as u64);
}

/// The backlog gauges of the partitions this node leads.
#[derive(Default)]
pub(crate) struct BacklogGauges {
    last: Mutex<LastRefresh>,
}

#[derive(Default)]
struct LastRefresh {
    at: Option<Instant>,
    /// What this node added to each queue's message gauges. The gauges are moved by differences
    /// rather than set, so that the nodes of `ferry dev`, which share one process's registry, add
    /// up there as they do across processes; a deleted queue's share is taken back once.
    shares: HashMap<String, ApproximateCounts>,
    /// The readings that still hold until their partition's state changes.
    readings: HashMap<GroupId, PartitionReading>,
}

/// A partition's backlog as read. Counts depend on the time when a message waits for one (in
/// flight or delayed); without such messages they move only when the replica's state does, so
/// the reading is kept until its `state_changes` moves, and idle queues cost no reads.
#[derive(Clone, Copy)]
struct PartitionReading {
    /// `GroupSignals::state_changes` before the reads.
    state_changes: u64,
    counts: ApproximateCounts,
    oldest_sent_at_ms: Option<u64>,
}

impl PartitionReading {
    fn depends_on_time(&self) -> bool {
        self.counts.in_flight > 0 || self.counts.delayed > 0
    }
}

/// One queue's backlog over the partitions this node leads.
#[derive(Default)]
struct Backlog {
    counts: ApproximateCounts,
    oldest_sent_at_ms: Option<u64>,
}

impl BacklogGauges {
    /// Sets every queue's gauges from the partitions this node leads now, unless they were set
    /// less than `max_age` ago.
    pub(crate) async fn refresh(&self, multi: &Arc<MultiRaft>, max_age: Duration) {
        let mut last = self.last.lock().await;
        if last.at.is_some_and(|at| at.elapsed() < max_age) {
            return;
        }
        let reader = multi.clone();
        let kept = std::mem::take(&mut last.readings);
        // RocksDB reads block; a node with many queues must not hold a runtime worker for them.
        let read = tokio::task::spawn_blocking(move || led_backlogs(&reader, &kept)).await;
        let backlogs = match read {
            Ok((backlogs, readings)) => {
                last.readings = readings;
                backlogs
            }
            Err(error) => {
                tracing::warn!(%error, "reading the queues' backlog failed");
                return;
            }
        };
        let now_ms = leader::wall_clock_ms();
        let mut shares = HashMap::with_capacity(backlogs.len());
        for (queue, backlog) in backlogs {
            for name in COUNTERS {
                counter!(name, "queue" => queue.clone()).increment(0);
            }
            let previous = last.shares.remove(&queue).unwrap_or_default();
            move_counts(&queue, &previous, &backlog.counts);
            let age_ms = backlog
                .oldest_sent_at_ms
                .map_or(0, |sent| now_ms.saturating_sub(sent));
            gauge!("ferry_queue_oldest_message_age_seconds", "queue" => queue.clone())
                .set(age_ms as f64 / 1000.0);
            shares.insert(queue, backlog.counts);
        }
        for (gone, previous) in last.shares.drain() {
            move_counts(&gone, &previous, &ApproximateCounts::default());
            gauge!("ferry_queue_oldest_message_age_seconds", "queue" => gone).set(0.0);
        }
        last.shares = shares;
        last.at = Some(Instant::now());
    }
}

/// Moves a queue's message gauges by what this node's share changed from `previous` to `now`.
fn move_counts(queue: &str, previous: &ApproximateCounts, now: &ApproximateCounts) {
    for (state, before, after) in [
        ("visible", previous.visible, now.visible),
        ("not_visible", previous.in_flight, now.in_flight),
        ("delayed", previous.delayed, now.delayed),
    ] {
        gauge!("ferry_queue_messages", "queue" => queue.to_owned(), "state" => state)
            .increment(after as f64 - before as f64);
    }
}

/// Every queue of the applied catalog, with the backlog of its partitions this node leads (none:
/// zero), and the readings to keep for the next time. A partition read in `kept` is not read again
/// if its state has not changed since.
fn led_backlogs(
    multi: &MultiRaft,
    kept: &HashMap<GroupId, PartitionReading>,
) -> (
    BTreeMap<String, Backlog>,
    HashMap<GroupId, PartitionReading>,
) {
    let catalog = multi.catalog().borrow().clone();
    let led = multi.led_groups();
    let mut backlogs = BTreeMap::new();
    let mut readings = HashMap::new();
    for queue in catalog.queues.values() {
        let mut backlog = Backlog::default();
        for partition in &queue.partitions {
            let Some(handle) = led.get(&partition.group) else {
                continue;
            };
            let state_changes = handle.signals.state_changes.load(Ordering::Acquire);
            let reading = match kept
                .get(&partition.group)
                .filter(|kept| kept.state_changes == state_changes)
            {
                Some(kept) => Ok(*kept),
                None => read_partition(multi, handle, state_changes),
            };
            match reading {
                Ok(reading) => {
                    backlog.counts.visible += reading.counts.visible;
                    backlog.counts.in_flight += reading.counts.in_flight;
                    backlog.counts.delayed += reading.counts.delayed;
                    backlog.oldest_sent_at_ms =
                        [backlog.oldest_sent_at_ms, reading.oldest_sent_at_ms]
                            .into_iter()
                            .flatten()
                            .min();
                    if !reading.depends_on_time() {
                        readings.insert(partition.group, reading);
                    }
                }
                Err(error) => {
                    tracing::warn!(queue = %queue.name, group = %partition.group, %error, "reading a partition's backlog failed");
                }
            }
        }
        backlogs.insert(queue.name.clone(), backlog);
    }
    (backlogs, readings)
}

fn read_partition(
    multi: &MultiRaft,
    handle: &GroupHandle,
    state_changes: u64,
) -> Result<PartitionReading, StoreError> {
    let state = multi.read_state(handle.group);
    Ok(PartitionReading {
        state_changes,
        counts: ferry_queue::approximate_counts(&state, leader::leader_now(handle))?,
        oldest_sent_at_ms: ferry_queue::oldest_sent_at(&state)?,
    })
}
