//! Which partition of a standard queue takes a send.
//!
//! A Raft round costs about the same whether it carries one send or many, and a queue's receives
//! and deletes merge into fewer rounds when its messages sit in fewer partitions. So while a node
//! has only a few sends of a queue under way, they go to the queue's first partition, its home,
//! where concurrent sends from every node merge into shared rounds; beyond that, or once the home
//! holds many messages (its in-flight share and the parallelism of a drain both want them spread),
//! the node spreads its sends over the partitions it leads. At 1,000 single sends a second this
//! cut the send-to-receive p99 from about 50 to about 12 ms on the benchmark machine
//! (docs/benchmarks.md, twenty-fifth pass); full-speed batched sends spread as before.

use std::collections::HashMap;
use std::sync::Mutex;

/// Sends of one queue under way from a node below which the next one goes home, by default.
pub const DEFAULT_HOME_PARTITION_SENDS: usize = 8;
/// Messages the home partition may hold and still take the sends of a quiet node. Small: under
/// overload the home's surplus is the oldest backlog, and receives reach it no sooner than the
/// other partitions' (with 10,000 the mixed benchmark's send-to-receive p99 doubled).
const HOME_MESSAGES: u64 = 1_000;

/// Counts each queue's sends under way from this node.
#[derive(Default)]
pub(crate) struct SendRouting {
    under_way: Mutex<HashMap<u64, usize>>,
}

/// One send under way; counted until dropped, however the send ends.
pub(crate) struct SendUnderWay<'a> {
    routing: &'a SendRouting,
    queue_id: u64,
    /// Sends of the queue that were under way when this one began.
    pub before: usize,
}

impl SendRouting {
    pub fn begin(&self, queue_id: u64) -> SendUnderWay<'_> {
        let mut under_way = self.lock();
        let count = under_way.entry(queue_id).or_default();
        let before = *count;
        *count += 1;
        SendUnderWay {
            routing: self,
            queue_id,
            before,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, usize>> {
        // The map holds plain counts: one left by a panicking holder is still a count.
        self.under_way
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for SendUnderWay<'_> {
    fn drop(&mut self) {
        let mut under_way = self.routing.lock();
        if let Some(count) = under_way.get_mut(&self.queue_id) {
            *count -= 1;
            // Only queues with sends under way stay in the map.
            if *count == 0 {
                under_way.remove(&self.queue_id);
            }
        }
    }
}

/// Whether a send that began with `before` others of its queue under way (fewer than
/// `home_sends` go home) goes to the home partition, which holds `home_messages()` (None: this
/// node cannot tell) of a per-partition in-flight share of `in_flight_share`. The count is a read
/// of the state, made only for a send that passes the cheap check first.
pub(crate) fn goes_home(
    before: usize,
    home_sends: usize,
    home_messages: impl FnOnce() -> Option<u64>,
    in_flight_share: u64,
) -> bool {
    let room = HOME_MESSAGES.min(in_flight_share / 2);
    before < home_sends && home_messages().is_some_and(|messages| messages < room)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_under_way_are_counted_until_they_end() {
        let routing = SendRouting::default();
        let first = routing.begin(7);
        let second = routing.begin(7);
        let other = routing.begin(8);
        assert_eq!((first.before, second.before, other.before), (0, 1, 0));
        drop(first);
        assert_eq!(routing.begin(7).before, 1);
        drop((second, other));
        assert!(
            routing.lock().is_empty(),
            "a queue without sends leaves the map"
        );
    }

    #[test]
    fn only_a_quiet_node_sends_home_and_only_while_home_has_room() {
        let holds = |messages| move || Some(messages);
        assert!(goes_home(0, 8, holds(0), 30_000));
        assert!(goes_home(7, 8, holds(HOME_MESSAGES - 1), 30_000));
        assert!(!goes_home(8, 8, holds(0), 30_000), "a busy node spreads");
        assert!(!goes_home(0, 0, holds(0), 30_000), "0 always spreads");
        assert!(
            !goes_home(0, 8, holds(HOME_MESSAGES), 30_000),
            "a full home spreads"
        );
        assert!(!goes_home(0, 8, || None, 30_000), "cannot tell: spread");
        // A small in-flight limit: half of the partition's share.
        assert!(goes_home(0, 8, holds(9), 20));
        assert!(!goes_home(0, 8, holds(10), 20));
    }

    #[test]
    fn a_busy_node_does_not_read_the_home_count() {
        let unread = || -> Option<u64> { panic!("read the home's count for a busy node") };
        assert!(!goes_home(8, 8, unread, 30_000));
        assert!(!goes_home(0, 0, unread, 30_000));
    }
}
