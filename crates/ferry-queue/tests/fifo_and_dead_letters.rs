//! FIFO delivery, deduplication, receive attempts and dead-lettering in the partition machine.

use bytes::Bytes;
use common::MemStore;
use ferry_queue::*;

mod common;

struct Partition {
    store: MemStore,
    /// Applies every command too, with nobody waiting for results: must reach the same state.
    follower: MemStore,
    now: u64,
    index: u64,
}

fn new_message(group: Option<&str>, body: &str, dedup_key: Option<&str>) -> NewMessage {
    NewMessage {
        message_id: format!("id-{body}"),
        body: Bytes::from(body.to_owned()),
        attributes: Default::default(),
        trace_header: None,
        sender_id: "tester".into(),
        delay_seconds: 0,
        group_id: group.map(str::to_owned),
        deduplication_id: dedup_key.map(str::to_owned),
        dedup_key: dedup_key.map(str::to_owned),
        dead_letter_source: None,
        fair_group: None,
    }
}

impl Partition {
    fn new() -> Self {
        Self {
            store: MemStore::default(),
            follower: MemStore::default(),
            now: 1_000_000,
            index: 0,
        }
    }

    fn run(&mut self, command: QueueCommand) -> QueueResult {
        self.index += 1;
        let ctx = ApplyContext {
            now_ms: self.now,
            log_index: self.index,
            reply_wanted: true,
        };
        let follower_ctx = ApplyContext {
            reply_wanted: false,
            ..ctx
        };
        apply(&mut self.follower, follower_ctx, command.clone()).unwrap();
        self.follower.commit();
        let result = apply(&mut self.store, ctx, command).unwrap().result;
        self.store.commit();
        assert!(self.store.contents() == self.follower.contents());
        result
    }

    fn send(&mut self, group: Option<&str>, body: &str, dedup_key: Option<&str>) -> SentMessage {
        match self.run(QueueCommand::Send {
            messages: vec![new_message(group, body, dedup_key)],
        }) {
            QueueResult::Sent(mut sent) => sent.remove(0),
            other => panic!("send gave {other:?}"),
        }
    }

    fn receive(
        &mut self,
        max: u32,
        fifo: bool,
        max_receive_count: Option<u32>,
        attempt: Option<&str>,
    ) -> Vec<ReceivedMessage> {
        let command = ReceiveCommand {
            max,
            visibility_timeout_s: 30,
            fifo,
            max_receive_count,
            attempt_id: attempt.map(str::to_owned),
        };
        match self.run(QueueCommand::Receive(command)) {
            QueueResult::Received(received) => received,
            other => panic!("receive gave {other:?}"),
        }
    }

    fn delete(&mut self, message: &ReceivedMessage) {
        let handles = vec![message.handle];
        assert_eq!(
            self.run(QueueCommand::Delete { handles }),
            QueueResult::Deleted(vec![DeleteOutcome::Deleted])
        );
    }
}

fn bodies(received: &[ReceivedMessage]) -> Vec<String> {
    received
        .iter()
        .map(|r| String::from_utf8_lossy(&r.message.body).into_owned())
        .collect()
}

#[test]
fn fifo_delivers_groups_in_order_and_blocks_a_group_in_flight() {
    let mut p = Partition::new();
    for (group, body) in [
        ("a", "a1"),
        ("b", "b1"),
        ("a", "a2"),
        ("a", "a3"),
        ("b", "b2"),
    ] {
        p.send(Some(group), body, None);
    }
    // The oldest group first, as many of it as fit, then the next group.
    let first = p.receive(2, true, None, None);
    assert_eq!(bodies(&first), ["a1", "a2"]);
    // Group a has messages in flight: only b can be received.
    let second = p.receive(10, true, None, None);
    assert_eq!(bodies(&second), ["b1", "b2"]);
    assert!(p.receive(10, true, None, None).is_empty());
    // Deleting a1 is not enough while a2 is in flight.
    p.delete(&first[0]);
    assert!(p.receive(10, true, None, None).is_empty());
    p.delete(&first[1]);
    assert_eq!(bodies(&p.receive(10, true, None, None)), ["a3"]);
    // After the visibility timeout the group's in-flight message comes back first.
    p.now += 31_000;
    let again = p.receive(10, true, None, None);
    assert_eq!(
        bodies(&again),
        ["b1", "b2", "a3"],
        "groups by their oldest message"
    );
    assert!(again.iter().all(|r| r.message.receive_count == 2));
}

#[test]
fn deduplication_holds_for_the_window_even_after_delete() {
    let mut p = Partition::new();
    let original = p.send(Some("g"), "x", Some("key"));
    assert!(!original.duplicate);
    let received = p.receive(1, true, None, None);
    p.delete(&received[0]);
    let duplicate = p.send(Some("g"), "x", Some("key"));
    assert!(duplicate.duplicate);
    assert_eq!(
        (duplicate.seq, duplicate.message_id.as_str()),
        (original.seq, original.message_id.as_str())
    );
    assert!(
        p.receive(1, true, None, None).is_empty(),
        "a duplicate is not delivered"
    );
    p.now += DEDUP_WINDOW_MS;
    let fresh = p.send(Some("g"), "x", Some("key"));
    assert!(!fresh.duplicate, "the window has closed");
    assert_ne!(fresh.seq, original.seq);
}

#[test]
fn a_retried_attempt_returns_the_same_messages_and_handles() {
    let mut p = Partition::new();
    p.send(Some("g"), "m1", None);
    p.send(Some("g"), "m2", None);
    let first = p.receive(10, true, None, Some("attempt-1"));
    assert_eq!(bodies(&first), ["m1", "m2"]);
    p.now += 5_000;
    let retry = p.receive(10, true, None, Some("attempt-1"));
    assert!(retry
        .iter()
        .all(|r| r.message.visible_at_ms == p.now + 30_000));
    assert_eq!(
        retry.iter().map(|r| r.handle).collect::<Vec<_>>(),
        first.iter().map(|r| r.handle).collect::<Vec<_>>()
    );
    assert!(
        p.receive(10, true, None, Some("attempt-2")).is_empty(),
        "a new attempt sees the group in flight"
    );
    // The retry moved the messages' index entries; the handles of the first try still find them.
    for message in &first {
        p.delete(message);
    }
    assert!(p.receive(10, true, None, None).is_empty());
}

/// An attempt that took nothing is not remembered: a long poll retries its attempt id as it waits,
/// and must get the messages that arrive meanwhile, not the empty answer again for five minutes.
#[test]
fn an_attempt_that_took_nothing_takes_what_arrives_later() {
    let mut p = Partition::new();
    assert!(p.receive(10, true, None, Some("attempt-1")).is_empty());
    p.send(Some("g"), "m1", None);
    let later = p.receive(10, true, None, Some("attempt-1"));
    assert_eq!(bodies(&later), ["m1"]);
    let retry = p.receive(10, true, None, Some("attempt-1"));
    assert_eq!(
        retry.iter().map(|r| r.handle).collect::<Vec<_>>(),
        later.iter().map(|r| r.handle).collect::<Vec<_>>(),
        "the attempt that took a message is remembered"
    );
}

#[test]
fn a_message_past_its_receive_limit_is_dead_lettered_once() {
    let mut p = Partition::new();
    p.send(None, "poison", None);
    for count in 1..=2 {
        let received = p.receive(1, false, Some(2), None);
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].message.receive_count, count);
        p.now += 31_000;
    }
    // The third receive moves it to the outbox instead of delivering it.
    assert!(p.receive(1, false, Some(2), None).is_empty());
    let letters = dead_letters(&p.store, 10).unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].message.receive_count, 2);
    assert_eq!(
        approximate_counts(&p.store, p.now).unwrap(),
        ApproximateCounts::default()
    );
    p.run(QueueCommand::AckDeadLetters {
        seqs: vec![letters[0].seq],
    });
    assert!(dead_letters(&p.store, 10).unwrap().is_empty());
    assert!(p.receive(1, false, Some(2), None).is_empty());
}

#[test]
fn a_dead_lettered_fifo_head_lets_the_group_continue() {
    let mut p = Partition::new();
    p.send(Some("g"), "bad", None);
    p.send(Some("g"), "good", None);
    assert_eq!(bodies(&p.receive(1, true, Some(1), None)), ["bad"]);
    p.now += 31_000;
    assert_eq!(bodies(&p.receive(10, true, Some(1), None)), ["good"]);
    assert_eq!(dead_letters(&p.store, 10).unwrap().len(), 1);
}

/// Retention finds each expired message's index entry: where the send put it, through its group's
/// list, where a visibility change forwarded it, or (a standard message a receive moved) by a pass
/// over the index.
#[test]
fn retention_expires_messages_wherever_their_index_entries_are() {
    for fifo in [false, true] {
        let mut p = Partition::new();
        let group = fifo.then_some("g");
        for body in ["m1", "m2", "m3", "m4"] {
            p.send(group, body, None);
        }
        let taken = p.receive(2, fifo, None, None);
        assert_eq!(bodies(&taken), ["m1", "m2"]);
        let change = VisibilityChange {
            handle: taken[1].handle,
            visibility_timeout_s: 100,
        };
        assert_eq!(
            p.run(QueueCommand::ChangeVisibility {
                changes: vec![change]
            }),
            QueueResult::VisibilityChanged(vec![Ok(())])
        );
        p.now += 60_000;
        assert_eq!(
            p.run(QueueCommand::ExpireRetention {
                retention_s: 60,
                max: 10
            }),
            QueueResult::Expired { removed: 4 },
            "fifo: {fifo}"
        );
        p.now += 200_000;
        assert!(p.receive(10, fifo, None, None).is_empty());
        assert_eq!(
            approximate_counts(&p.store, p.now).unwrap(),
            ApproximateCounts::default()
        );
    }
}

/// A received message left to expire is searched for a window of the index at a time: a command
/// looks through a bounded number of entries and the next one goes on from where it stopped.
#[test]
fn retention_searches_for_moved_messages_a_window_at_a_time() {
    let mut p = Partition::new();
    p.send(None, "old", None);
    // The receive moves its entry 30 s on, behind everything sent in the next 30 s.
    assert_eq!(bodies(&p.receive(1, false, None, None)), ["old"]);
    p.now += 1_000;
    for batch in 0..10 {
        let messages = (0..500)
            .map(|i| new_message(None, &format!("new-{batch}-{i}"), None))
            .collect();
        assert!(matches!(
            p.run(QueueCommand::Send { messages }),
            QueueResult::Sent(_)
        ));
    }
    // "old" is past a 60 s retention period, the 5,000 newer messages are not.
    p.now += 59_500;
    let expire = QueueCommand::ExpireRetention {
        retention_s: 60,
        max: 10,
    };
    assert_eq!(
        p.run(expire.clone()),
        QueueResult::Expired { removed: 0 },
        "the first command's window ends among the 5,000 newer entries"
    );
    assert_eq!(p.run(expire.clone()), QueueResult::Expired { removed: 1 });
    assert_eq!(p.run(expire), QueueResult::Expired { removed: 0 });
    let counts = approximate_counts(&p.store, p.now).unwrap();
    assert_eq!((counts.visible, counts.in_flight), (5_000, 0));
}

#[test]
fn groups_in_flight_do_not_hide_the_groups_behind_them() {
    // More groups in flight than one receive looks at (2,000): each receive must still find the
    // groups that have something to receive, however many blocked ones come before them.
    const BUSY: usize = 2_500;
    let mut p = Partition::new();
    let messages = (0..BUSY)
        .map(|g| new_message(Some(&format!("busy{g:04}")), &format!("m{g:04}"), None))
        .collect();
    assert!(
        matches!(p.run(QueueCommand::Send { messages }), QueueResult::Sent(sent) if sent.len() == BUSY)
    );
    let mut received = Vec::new();
    for _ in 0..BUSY / 10 {
        let taken = p.receive(10, true, None, None);
        assert_eq!(taken.len(), 10, "after {} received", received.len());
        received.extend(bodies(&taken));
    }
    let expected: Vec<String> = (0..BUSY).map(|g| format!("m{g:04}")).collect();
    assert_eq!(received, expected, "every group once, oldest first");
    p.send(Some("late"), "late1", None);
    assert_eq!(bodies(&p.receive(10, true, None, None)), ["late1"]);
    assert!(p.receive(10, true, None, None).is_empty());
    // When their visibility times out the blocked groups come back, oldest first.
    p.now += 31_000;
    assert_eq!(
        bodies(&p.receive(3, true, None, None)),
        ["m0000", "m0001", "m0002"]
    );
}

#[test]
fn a_fair_group_on_a_standard_queue_is_returned_and_orders_nothing() {
    let mut p = Partition::new();
    let messages = ["t1", "t2", "t3"]
        .map(|body| NewMessage {
            fair_group: Some("tenant".into()),
            ..new_message(None, body, None)
        })
        .to_vec();
    let sent = p.run(QueueCommand::send(messages));
    assert!(matches!(sent, QueueResult::Sent(sent) if sent.len() == 3));
    // Standard delivery: the tenant's messages in flight hold back none of the others.
    let mut received = Vec::new();
    for _ in 0..3 {
        received.extend(p.receive(1, false, None, None));
    }
    assert_eq!(bodies(&received), ["t1", "t2", "t3"]);
    for message in &received {
        assert_eq!(message.message.group_id.as_deref(), Some("tenant"));
    }
    // A move to another queue (dead-lettering, redrive) keeps it, as a fair group.
    let moved = received.remove(0).message.resend("key".into(), None, false);
    assert_eq!(moved.fair_group.as_deref(), Some("tenant"));
    assert_eq!(moved.group_id, None);
}
