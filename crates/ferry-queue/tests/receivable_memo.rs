//! The shared memo of a replica's receivable state, at the edges the reference model does not reach:
//! commands applied while a scan runs, and commands that index messages at several times.

use std::cell::Cell;

use bytes::Bytes;
use common::MemStore;
use ferry_queue::*;

mod common;

const NOW: u64 = 1_000_000;

fn message(id: &str, delay_seconds: u32) -> NewMessage {
    NewMessage {
        message_id: id.into(),
        body: Bytes::from_static(b"body"),
        attributes: Default::default(),
        trace_header: None,
        sender_id: "tester".into(),
        delay_seconds,
        group_id: None,
        deduplication_id: None,
        dedup_key: None,
        dead_letter_source: None,
        fair_group: None,
    }
}

/// Applies a send of `messages` at `now_ms` and tells `memo`, as the replica's state machine does.
fn send(store: &mut MemStore, memo: &ReceivableMemo, now_ms: u64, messages: Vec<NewMessage>) {
    let context = ApplyContext {
        now_ms,
        log_index: now_ms,
        reply_wanted: false,
    };
    let applied = apply(store, context, QueueCommand::Send { messages }).unwrap();
    store.commit();
    memo.applied(applied.indexed);
}

/// A store that, during its first scan, has `memo` told of a command the scan cannot see (as when
/// the state machine applies one while a long poll reads the index).
struct ApplyDuringScan<'a> {
    store: &'a MemStore,
    memo: &'a ReceivableMemo,
    applied: Cell<Option<Indexed>>,
}

impl StateStore for ApplyDuringScan<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.get(key)
    }
    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        if let Some(indexed) = self.applied.take() {
            self.memo.applied(Some(indexed));
        }
        self.store.scan(start, end, visit)
    }
    fn put(&mut self, _: Vec<u8>, _: Vec<u8>) {
        unreachable!("read only")
    }
    fn delete(&mut self, _: Vec<u8>) {
        unreachable!("read only")
    }
    fn delete_range(&mut self, _: Vec<u8>, _: Vec<u8>) {
        unreachable!("read only")
    }
}

#[test]
fn a_command_applied_during_a_scan_is_not_lost() {
    let (mut store, memo) = (MemStore::default(), ReceivableMemo::default());
    send(&mut store, &memo, NOW, vec![message("late", 10)]);
    let at = NOW + 5_000;
    let reader = ApplyDuringScan {
        store: &store,
        memo: &memo,
        applied: Cell::new(Some(Indexed {
            earliest: at,
            latest: at,
        })),
    };
    assert_eq!(memo.next_due(&reader, NOW).unwrap(), Some(at));
    // Kept, not read again: the reader would not report the command twice anyway.
    assert_eq!(memo.next_due(&store, NOW + 1).unwrap(), Some(at));
    assert!(!memo
        .has_receivable(&store, NOW + 4_999, false, None)
        .unwrap());
}

#[test]
fn messages_indexed_at_several_times_are_each_found() {
    let (mut store, memo) = (MemStore::default(), ReceivableMemo::default());
    assert_eq!(memo.next_due(&store, NOW).unwrap(), None);
    let batch = vec![message("soon", 2), message("later", 8)];
    send(&mut store, &memo, NOW, batch);
    assert_eq!(memo.next_due(&store, NOW).unwrap(), Some(NOW + 2_000));
    assert!(!memo
        .has_receivable(&store, NOW + 1_999, false, None)
        .unwrap());
    assert!(memo
        .has_receivable(&store, NOW + 2_000, false, None)
        .unwrap());
    // Once the first has come due the second is still known to come.
    assert_eq!(
        memo.next_due(&store, NOW + 3_000).unwrap(),
        Some(NOW + 8_000)
    );
}

#[test]
fn sends_that_are_receivable_at_once_need_no_new_scan() {
    let (mut store, memo) = (MemStore::default(), ReceivableMemo::default());
    send(&mut store, &memo, NOW, vec![message("late", 30)]);
    assert_eq!(memo.next_due(&store, NOW).unwrap(), Some(NOW + 30_000));
    for i in 1..100 {
        let now = NOW + i;
        send(&mut store, &memo, now, vec![message(&format!("m{i}"), 0)]);
        // The state is not read: an empty store would answer `None`.
        assert_eq!(
            memo.next_due(&MemStore::default(), now).unwrap(),
            Some(NOW + 30_000)
        );
    }
}

#[test]
fn something_receivable_stays_so_until_the_next_command() {
    let (mut store, memo) = (MemStore::default(), ReceivableMemo::default());
    send(&mut store, &memo, NOW, vec![message("now", 0)]);
    assert!(memo.has_receivable(&store, NOW, false, None).unwrap());
    // Not read again, later or by other callers: an empty store would answer false.
    let empty = MemStore::default();
    assert!(memo
        .has_receivable(&empty, NOW + 1_000, false, None)
        .unwrap());
    // Before the time it was seen at, and after the next command, the state is read again.
    assert!(!memo.has_receivable(&empty, NOW - 1, false, None).unwrap());
    send(&mut store, &memo, NOW + 2, vec![message("later", 10)]);
    assert!(!memo.has_receivable(&empty, NOW + 2, false, None).unwrap());
}
