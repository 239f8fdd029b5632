//! The newest entries of a group's log, kept in memory as they were encoded for RocksDB.
//!
//! openraft reads every entry back right after appending it: the leader to replicate it, every
//! replica to apply it. From RocksDB each read is an iterator, a seek through the memtable and every
//! level-0 file, and a copy of each value (~7% of a node's time with 1,000 busy queues). From here
//! it is a slice of a queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// At most this many bytes of encoded entries per group: a group that appends faster than it
/// applies reads the older ones from RocksDB.
const GROUP_BUDGET: usize = 1 << 20;
/// At most this many bytes over all the groups of a node (a node may host a thousand groups).
pub(crate) const NODE_BUDGET: usize = 64 << 20;

/// Consecutive entries `first..first + entries.len()` of a log, the newest appended (the log's own
/// last ones, except while an append is between RocksDB and here).
pub(crate) struct RecentEntries {
    first: u64,
    entries: VecDeque<Vec<u8>>,
    bytes: usize,
    /// Bytes held by every group of the node, against [`NODE_BUDGET`].
    node_bytes: Arc<AtomicUsize>,
}

impl RecentEntries {
    pub(crate) fn new(node_bytes: Arc<AtomicUsize>) -> Self {
        Self {
            first: 0,
            entries: VecDeque::new(),
            bytes: 0,
            node_bytes,
        }
    }

    /// Keeps the entry just appended at `index`, after the log's previous last entry.
    pub(crate) fn push(&mut self, index: u64, value: Vec<u8>) {
        if self.entries.is_empty() || index != self.end() {
            self.clear();
            self.first = index;
        }
        let len = value.len();
        while !self.entries.is_empty() && self.bytes + len > GROUP_BUDGET {
            self.pop_front();
        }
        let node_total = self.node_bytes.fetch_add(len, Ordering::Relaxed) + len;
        if len > GROUP_BUDGET || node_total > NODE_BUDGET {
            self.node_bytes.fetch_sub(len, Ordering::Relaxed);
            // Not kept, so nothing older may be either: the entries must be the newest.
            self.clear();
            return;
        }
        self.entries.push_back(value);
        self.bytes += len;
    }

    /// The encoded entries `start..=end`, if all are here.
    pub(crate) fn range(&self, start: u64, end: u64) -> Option<impl Iterator<Item = &[u8]>> {
        if self.entries.is_empty() || start < self.first || end >= self.end() {
            return None;
        }
        let skip = (start - self.first) as usize;
        let take = (end + 1).saturating_sub(start) as usize;
        Some(self.entries.iter().skip(skip).take(take).map(Vec::as_slice))
    }

    /// Forgets the entries from `index` on (the log was truncated there).
    pub(crate) fn truncate_from(&mut self, index: u64) {
        while !self.entries.is_empty() && self.end() > index {
            let value = self.entries.pop_back().expect("not empty");
            self.release(value.len());
        }
    }

    /// Forgets the entries up to `index` inclusive (the log was purged up to there).
    pub(crate) fn purge_through(&mut self, index: u64) {
        while !self.entries.is_empty() && self.first <= index {
            self.pop_front();
        }
    }

    /// One past the index of the last entry kept.
    fn end(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    fn pop_front(&mut self) {
        if let Some(value) = self.entries.pop_front() {
            self.first += 1;
            self.release(value.len());
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.release(self.bytes);
    }

    fn release(&mut self, len: usize) {
        self.bytes -= len;
        self.node_bytes.fetch_sub(len, Ordering::Relaxed);
    }
}

impl Drop for RecentEntries {
    fn drop(&mut self) {
        self.node_bytes.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(recent: &RecentEntries, start: u64, end: u64) -> Option<Vec<u8>> {
        recent
            .range(start, end)
            .map(|values| values.map(|value| value[0]).collect())
    }

    #[test]
    fn serves_only_ranges_it_holds_whole() {
        let node = Arc::new(AtomicUsize::new(0));
        let mut recent = RecentEntries::new(node.clone());
        assert_eq!(entries(&recent, 1, 1), None, "empty");
        for index in 5..=8 {
            recent.push(index, vec![index as u8; 10]);
        }
        assert_eq!(entries(&recent, 5, 8), Some(vec![5, 6, 7, 8]));
        assert_eq!(entries(&recent, 6, 7), Some(vec![6, 7]));
        assert_eq!(entries(&recent, 7, 6), Some(vec![]));
        assert_eq!(entries(&recent, 4, 6), None, "starts before");
        assert_eq!(entries(&recent, 6, 9), None, "ends after the last");
        assert_eq!(node.load(Ordering::Relaxed), 40);

        recent.truncate_from(7);
        assert_eq!(entries(&recent, 5, 6), Some(vec![5, 6]));
        assert_eq!(entries(&recent, 5, 7), None);
        recent.push(7, vec![17; 10]);
        assert_eq!(entries(&recent, 6, 7), Some(vec![6, 17]));
        recent.purge_through(5);
        assert_eq!(entries(&recent, 5, 7), None);
        assert_eq!(entries(&recent, 6, 7), Some(vec![6, 17]));

        recent.push(20, vec![20; 10]);
        assert_eq!(
            entries(&recent, 20, 20),
            Some(vec![20]),
            "a gap starts over"
        );
        assert_eq!(entries(&recent, 7, 7), None);
        assert_eq!(node.load(Ordering::Relaxed), 10);
        drop(recent);
        assert_eq!(node.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn stays_within_its_budgets() {
        let node = Arc::new(AtomicUsize::new(0));
        let mut recent = RecentEntries::new(node.clone());
        let size = GROUP_BUDGET / 4;
        for index in 1..=6 {
            recent.push(index, vec![index as u8; size]);
        }
        assert_eq!(entries(&recent, 3, 6), Some(vec![3, 4, 5, 6]));
        assert_eq!(
            entries(&recent, 2, 6),
            None,
            "dropped for the group's budget"
        );
        assert_eq!(node.load(Ordering::Relaxed), GROUP_BUDGET);

        recent.push(7, vec![7; GROUP_BUDGET + 1]);
        assert_eq!(entries(&recent, 7, 7), None, "too large to keep");
        assert_eq!(
            entries(&recent, 6, 6),
            None,
            "older ones would not end at the last"
        );
        assert_eq!(node.load(Ordering::Relaxed), 0);

        node.store(NODE_BUDGET, Ordering::Relaxed);
        recent.push(8, vec![8; 10]);
        assert_eq!(entries(&recent, 8, 8), None, "the node's budget is spent");
        assert_eq!(node.load(Ordering::Relaxed), NODE_BUDGET);
    }
}
