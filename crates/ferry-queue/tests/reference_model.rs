//! Property test: the RocksDB-shaped state machine against a plain in-memory model of SQS semantics,
//! for standard and FIFO queues, with and without a receive limit (dead-lettering).

use std::collections::BTreeMap;

use bytes::Bytes;
use common::MemStore;
use ferry_queue::*;
use proptest::prelude::*;

mod common;

#[derive(Debug, Clone)]
struct ModelMessage {
    seq: u64,
    sent_at: u64,
    visible_at: u64,
    receive_count: u32,
    token: u64,
    last_receive: u64,
    group: Option<String>,
}

#[derive(Default)]
struct Model {
    next_seq: u64,
    messages: BTreeMap<u64, ModelMessage>,
    /// Dead-lettered messages (moved to the outbox, out of every count), with their send times.
    dead: BTreeMap<u64, u64>,
    fifo: bool,
    max_receive_count: Option<u32>,
}

impl Model {
    fn exhausted(&self, m: &ModelMessage) -> bool {
        self.max_receive_count
            .is_some_and(|limit| m.receive_count >= limit)
    }

    /// What a receive of `max` at `now` takes: (messages to deliver, messages to dead-letter), in
    /// the order SQS hands them out.
    fn select(&self, now: u64, max: usize) -> (Vec<u64>, Vec<u64>) {
        let (mut deliver, mut dead) = (Vec::new(), Vec::new());
        if !self.fifo {
            let mut due: Vec<_> = self
                .messages
                .values()
                .filter(|m| m.visible_at <= now)
                .map(|m| (m.visible_at, m.seq))
                .collect();
            due.sort();
            for (_, seq) in due {
                if deliver.len() == max {
                    break;
                }
                if self.exhausted(&self.messages[&seq]) {
                    dead.push(seq);
                } else {
                    deliver.push(seq);
                }
            }
            return (deliver, dead);
        }
        // Groups by their oldest message; a group with a message in flight is skipped whole; a
        // group's messages go in order up to the first that is not visible.
        let mut groups: Vec<(u64, &str)> = Vec::new();
        for m in self.messages.values() {
            let group = m.group.as_deref().unwrap();
            if !groups.iter().any(|(_, g)| *g == group) {
                groups.push((m.seq, group));
            }
        }
        for (_, group) in groups {
            let members: Vec<&ModelMessage> = self
                .messages
                .values()
                .filter(|m| m.group.as_deref() == Some(group))
                .collect();
            if members
                .iter()
                .any(|m| m.receive_count > 0 && m.visible_at > now)
            {
                continue;
            }
            for m in members {
                if m.visible_at > now || deliver.len() == max {
                    break;
                }
                if self.exhausted(m) {
                    dead.push(m.seq);
                } else {
                    deliver.push(m.seq);
                }
            }
        }
        (deliver, dead)
    }

    fn receive(&mut self, now: u64, index: u64, max: u32, vt: u32) -> Vec<(u64, u32)> {
        let (deliver, dead) = self.select(now, max as usize);
        for seq in dead {
            let m = self.messages.remove(&seq).unwrap();
            self.dead.insert(seq, m.sent_at);
        }
        deliver
            .into_iter()
            .map(|seq| {
                let m = self.messages.get_mut(&seq).unwrap();
                m.receive_count += 1;
                m.token = index;
                m.last_receive = now;
                m.visible_at = now + u64::from(vt) * 1000;
                (seq, m.receive_count)
            })
            .collect()
    }

    fn counts(&self, now: u64) -> ApproximateCounts {
        let mut counts = ApproximateCounts::default();
        for m in self.messages.values() {
            if m.visible_at <= now {
                counts.visible += 1;
            } else if m.receive_count > 0 {
                counts.in_flight += 1;
            } else {
                counts.delayed += 1;
            }
        }
        counts
    }
}

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    Send { count: usize, delay_s: u32 },
    Receive { max: u32, vt: u32 },
    Delete { pick: usize, stale: bool },
    ChangeVisibility { pick: usize, vt: u32 },
    Purge,
    Expire { retention_s: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..5_000).prop_map(Op::Advance),
        4 => (1usize..4, prop_oneof![Just(0u32), 1u32..4]).prop_map(|(count, delay_s)| Op::Send { count, delay_s }),
        4 => (1u32..4, 0u32..4).prop_map(|(max, vt)| Op::Receive { max, vt }),
        3 => (any::<usize>(), prop::bool::weighted(0.2)).prop_map(|(pick, stale)| Op::Delete { pick, stale }),
        2 => (any::<usize>(), prop_oneof![0u32..4, Just(43_200u32), Just(50_000u32)]).prop_map(|(pick, vt)| Op::ChangeVisibility { pick, vt }),
        1 => Just(Op::Purge),
        1 => (1u32..20).prop_map(|retention_s| Op::Expire { retention_s }),
    ]
}

/// FIFO messages go to one of a few groups, so groups block each other and interleave.
const GROUPS: usize = 3;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]
    #[test]
    fn machine_matches_model(
        ops in prop::collection::vec(op(), 1..80),
        fifo in any::<bool>(),
        max_receive_count in prop_oneof![Just(None), (1u32..4).prop_map(Some)],
    ) {
        let mut store = MemStore::default();
        // Shared answers about `store`, as a node's long polls ask them between commands.
        let memo = ReceivableMemo::default();
        // A follower: applies the same commands with nobody waiting for their results.
        let mut follower = MemStore::default();
        let mut model = Model { next_seq: 1, fifo, max_receive_count, ..Model::default() };
        let group_of = |index: u64, i: usize| fifo.then(|| format!("g{}", (index as usize + i) % GROUPS));
        let mut now = 1_000_000u64;
        let mut index = 0u64;
        // Every handle ever issued, so deletes and changes also use old ones.
        let mut handles: Vec<HandleRef> = Vec::new();

        for op in ops {
            index += 1;
            let ctx = ApplyContext { now_ms: now, log_index: index, reply_wanted: true };
            let command = match &op {
                Op::Advance(ms) => {
                    now += ms;
                    check_receivable(&memo, &store, &model, now)?;
                    continue;
                }
                Op::Send { count, delay_s } => QueueCommand::Send {
                    messages: (0..*count).map(|i| NewMessage {
                        message_id: format!("m{index}-{i}"),
                        body: Bytes::from(format!("body {index} {i}")),
                        attributes: Default::default(),
                        trace_header: None,
                        sender_id: "tester".into(),
                        delay_seconds: *delay_s,
                        group_id: group_of(index, i),
                        deduplication_id: None,
                        dedup_key: None,
                        dead_letter_source: None,
                        fair_group: None,
                    }).collect(),
                },
                Op::Receive { max, vt } => QueueCommand::Receive(ReceiveCommand {
                    max: *max,
                    visibility_timeout_s: *vt,
                    fifo,
                    max_receive_count,
                    attempt_id: None,
                }),
                Op::Delete { pick, stale } => {
                    if handles.is_empty() { continue; }
                    let mut handle = handles[pick % handles.len()];
                    if *stale { handle.token += 1_000_000; }
                    // What a FIFO partition leader refuses before proposing: a handle whose receive
                    // is over while its message is still there.
                    if fifo {
                        let expired = match model.messages.get(&handle.seq) {
                            Some(m) => m.token != handle.token || m.visible_at <= now,
                            None => model.dead.contains_key(&handle.seq),
                        };
                        prop_assert_eq!(receipt_expired(&store, &handle, now).unwrap(), expired);
                    }
                    QueueCommand::Delete { handles: vec![handle, handle] }
                }
                Op::ChangeVisibility { pick, vt } => {
                    if handles.is_empty() { continue; }
                    let handle = handles[pick % handles.len()];
                    QueueCommand::ChangeVisibility { changes: vec![VisibilityChange { handle, visibility_timeout_s: *vt }] }
                }
                Op::Purge => QueueCommand::Purge,
                Op::Expire { retention_s } => QueueCommand::ExpireRetention { retention_s: *retention_s, max: 2 },
            };
            apply(&mut follower, ApplyContext { reply_wanted: false, ..ctx }, command.clone()).unwrap();
            follower.commit();
            let applied = apply(&mut store, ctx, command).unwrap();
            store.commit();
            memo.applied(applied.indexed);
            let result = applied.result;
            prop_assert!(store.contents() == follower.contents(), "a follower's state differs after {:?}", op);

            match (&op, result) {
                (Op::Send { count, delay_s }, QueueResult::Sent(sent)) => {
                    prop_assert_eq!(sent.len(), *count);
                    for (i, s) in sent.into_iter().enumerate() {
                        prop_assert_eq!(s.seq, model.next_seq);
                        prop_assert!(!s.duplicate);
                        model.next_seq += 1;
                        model.messages.insert(s.seq, ModelMessage {
                            seq: s.seq, sent_at: now, visible_at: now + u64::from(*delay_s) * 1000,
                            receive_count: 0, token: 0, last_receive: 0, group: group_of(index, i),
                        });
                    }
                }
                (Op::Receive { max, vt }, QueueResult::Received(got)) => {
                    let expected = model.receive(now, index, *max, *vt);
                    handles.extend(got.iter().map(|r| r.handle));
                    prop_assert!(got.iter().all(|r| r.handle.token == index));
                    let got: Vec<_> = got.iter().map(|r| (r.handle.seq, r.message.receive_count)).collect();
                    prop_assert_eq!(&got, &expected);
                }
                (Op::Delete { pick, stale }, QueueResult::Deleted(outcomes)) => {
                    let mut handle = handles[pick % handles.len()];
                    if *stale { handle.token += 1_000_000; }
                    let first = match model.messages.get(&handle.seq) {
                        // A dead letter keeps its record (handles invalidated) until the mover acks it.
                        None if model.dead.contains_key(&handle.seq) => DeleteOutcome::StaleHandle,
                        None => DeleteOutcome::NotFound,
                        Some(m) if m.token != handle.token => DeleteOutcome::StaleHandle,
                        Some(_) => { model.messages.remove(&handle.seq); DeleteOutcome::Deleted }
                    };
                    let second = if first == DeleteOutcome::Deleted { DeleteOutcome::NotFound } else { first };
                    prop_assert_eq!(outcomes, vec![first, second]);
                }
                (Op::ChangeVisibility { pick, vt }, QueueResult::VisibilityChanged(outcomes)) => {
                    let handle = handles[pick % handles.len()];
                    let expected = match model.messages.get_mut(&handle.seq) {
                        None if model.dead.contains_key(&handle.seq) => Err(VisibilityError::NotInflight),
                        None => Err(VisibilityError::MessageNotFound),
                        Some(m) if m.token != handle.token || m.visible_at <= now => Err(VisibilityError::NotInflight),
                        Some(m) if now + u64::from(*vt) * 1000 > m.last_receive + MAX_VISIBILITY_TOTAL_MS => Err(VisibilityError::BeyondMaximum),
                        Some(m) => { m.visible_at = now + u64::from(*vt) * 1000; Ok(()) }
                    };
                    prop_assert_eq!(outcomes, vec![expected]);
                }
                (Op::Purge, QueueResult::Purged { removed }) => {
                    prop_assert_eq!(removed, model.messages.len() as u64);
                    model.messages.clear();
                    model.dead.clear();
                }
                (Op::Expire { retention_s }, QueueResult::Expired { removed }) => {
                    let cutoff = now.saturating_sub(u64::from(*retention_s) * 1000);
                    // Dead letters are the mover's: the scan passes over them.
                    let stored: BTreeMap<u64, (u64, bool)> = model.messages.values().map(|m| (m.seq, (m.sent_at, false)))
                        .chain(model.dead.iter().map(|(seq, sent_at)| (*seq, (*sent_at, true)))).collect();
                    let expired: Vec<u64> = stored.iter()
                        .take_while(|(_, (sent_at, _))| *sent_at <= cutoff)
                        .filter(|(_, (_, dead))| !dead).take(2).map(|(seq, _)| *seq).collect();
                    prop_assert_eq!(removed, expired.len() as u64);
                    for seq in expired { model.messages.remove(&seq); }
                }
                (op, result) => prop_assert!(false, "{op:?} gave {result:?}"),
            }

            let counts = model.counts(now);
            prop_assert_eq!(approximate_counts(&store, now).unwrap(), counts);
            for limit in 1..=counts.in_flight + 1 {
                prop_assert_eq!(in_flight_reaches(&store, now, limit).unwrap(), counts.in_flight >= limit);
            }
            check_receivable(&memo, &store, &model, now)?;
        }
    }
}

/// Whether something is receivable at `now` and when the next message comes due, read from the
/// state and from the memo, against the model. The memo may name an earlier due time than the
/// state (a message it remembers may have been deleted since), never a later one.
fn check_receivable(
    memo: &ReceivableMemo,
    store: &MemStore,
    model: &Model,
    now: u64,
) -> Result<(), TestCaseError> {
    let (fifo, max_receive_count) = (model.fifo, model.max_receive_count);
    let (deliver, dead) = model.select(now, 1);
    let receivable = !deliver.is_empty() || !dead.is_empty();
    prop_assert_eq!(
        has_receivable_message(store, now, fifo, max_receive_count).unwrap(),
        receivable
    );
    prop_assert_eq!(
        memo.has_receivable(store, now, fifo, max_receive_count)
            .unwrap(),
        receivable,
        "memo at {}",
        now
    );
    let next = model
        .messages
        .values()
        .map(|m| m.visible_at)
        .filter(|at| *at > now)
        .min();
    prop_assert_eq!(next_visibility_change(store, now).unwrap(), next);
    match memo.next_due(store, now).unwrap() {
        None => prop_assert_eq!(next, None, "memo knows of no message due after {}", now),
        Some(due) => prop_assert!(
            next.is_none_or(|next| next >= due),
            "memo says {due}, model {next:?}"
        ),
    }
    Ok(())
}
