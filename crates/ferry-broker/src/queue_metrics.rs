//! Per-queue metrics, labelled with the queue's name: what SQS reports to CloudWatch, for
//! Prometheus. Every node counts the messages of the requests it answers, and reports the
//! backlog of the partitions it leads, so a queue's figures are the sum over the nodes (its oldest
//! message's age the maximum). The backlog is read from the leaders' applied state when the
//! metrics are scraped, not kept up to date on every command.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_queue::ApproximateCounts;
use ferry_raft::MultiRaft;
use metrics::{counter, gauge};
use tokio::sync::Mutex;

use crate::leader;

/// Scrapes closer together than this see the previous reading: each one reads every led
/// partition's index ahead of now.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

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
    /// Queues whose gauges were set, so that those of a deleted queue go to zero once.
    queues: HashSet<String>,
}

/// One queue's backlog over the partitions this node leads.
#[derive(Default)]
struct Backlog {
    counts: ApproximateCounts,
    oldest_sent_at_ms: Option<u64>,
}

impl BacklogGauges {
    /// Sets every queue's gauges from the partitions this node leads now.
    pub(crate) async fn refresh(&self, multi: &Arc<MultiRaft>) {
        let mut last = self.last.lock().await;
        if last
            .at
            .is_some_and(|at| at.elapsed() < MIN_REFRESH_INTERVAL)
        {
            return;
        }
        let reader = multi.clone();
        // RocksDB reads block; a node with many queues must not hold a runtime worker for them.
        let backlogs = match tokio::task::spawn_blocking(move || led_backlogs(&reader)).await {
            Ok(backlogs) => backlogs,
            Err(error) => {
                tracing::warn!(%error, "reading the queues' backlog failed");
                return;
            }
        };
        let now_ms = leader::wall_clock_ms();
        for (queue, backlog) in &backlogs {
            set_backlog(queue, backlog, now_ms);
        }
        for gone in last.queues.iter().filter(|q| !backlogs.contains_key(*q)) {
            set_backlog(gone, &Backlog::default(), now_ms);
        }
        last.queues = backlogs.into_keys().collect();
        last.at = Some(Instant::now());
    }
}

fn set_backlog(queue: &str, backlog: &Backlog, now_ms: u64) {
    let counts = &backlog.counts;
    for (state, value) in [
        ("visible", counts.visible),
        ("not_visible", counts.in_flight),
        ("delayed", counts.delayed),
    ] {
        gauge!("ferry_queue_messages", "queue" => queue.to_owned(), "state" => state)
            .set(value as f64);
    }
    let age_ms = backlog
        .oldest_sent_at_ms
        .map_or(0, |sent| now_ms.saturating_sub(sent));
    gauge!("ferry_queue_oldest_message_age_seconds", "queue" => queue.to_owned())
        .set(age_ms as f64 / 1000.0);
}

/// Every queue of the applied catalog, with the backlog of its partitions this node leads (none:
/// zero).
fn led_backlogs(multi: &MultiRaft) -> BTreeMap<String, Backlog> {
    let catalog = multi.catalog().borrow().clone();
    let mut backlogs = BTreeMap::new();
    for queue in catalog.queues.values() {
        let mut backlog = Backlog::default();
        for partition in &queue.partitions {
            let Some(handle) = multi.group(partition.group) else {
                continue;
            };
            if handle.raft.as_leader().is_err() {
                continue;
            }
            let state = multi.read_state(partition.group);
            let read = ferry_queue::approximate_counts(&state, leader::leader_now(&handle))
                .and_then(|counts| Ok((counts, ferry_queue::oldest_sent_at(&state)?)));
            match read {
                Ok((counts, oldest)) => {
                    backlog.counts.visible += counts.visible;
                    backlog.counts.in_flight += counts.in_flight;
                    backlog.counts.delayed += counts.delayed;
                    backlog.oldest_sent_at_ms = [backlog.oldest_sent_at_ms, oldest]
                        .into_iter()
                        .flatten()
                        .min();
                }
                Err(error) => {
                    tracing::warn!(queue = %queue.name, group = %partition.group, %error, "reading a partition's backlog failed");
                }
            }
        }
        backlogs.insert(queue.name.clone(), backlog);
    }
    backlogs
}
