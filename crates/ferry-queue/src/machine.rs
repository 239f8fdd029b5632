//! Applying [`QueueCommand`]s to a partition's stored state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::keys;
use crate::model::*;
use crate::{StateStore, StoreError};

#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
struct Meta {
    next_seq: u64,
    message_count: u64,
}

/// The state a command works on: the store plus the command's own not-yet-committed changes, so a
/// batch that touches one message twice sees its first change.
struct Tx<'a, S: StateStore> {
    store: &'a mut S,
    meta: Meta,
    messages: BTreeMap<u64, Option<StoredMessage>>,
}

impl<'a, S: StateStore> Tx<'a, S> {
    fn begin(store: &'a mut S) -> Result<Self, StoreError> {
        let meta = read_meta(store)?;
        Ok(Self {
            store,
            meta,
            messages: BTreeMap::new(),
        })
    }

    fn load(&mut self, seq: u64) -> Result<Option<StoredMessage>, StoreError> {
        if let Some(cached) = self.messages.get(&seq) {
            return Ok(cached.clone());
        }
        let record = match self.store.get(&keys::message(seq))? {
            Some(bytes) => Some(decode::<StoredMessage>(&bytes)?),
            None => None,
        };
        self.messages.insert(seq, record.clone());
        Ok(record)
    }

    fn insert(&mut self, seq: u64, record: StoredMessage) -> Result<(), StoreError> {
        let kind = if record.receive_count == 0 {
            keys::KIND_NEW
        } else {
            keys::KIND_RECEIVED
        };
        self.store
            .put(keys::visibility(record.visible_at_ms, seq), vec![kind]);
        self.store.put(keys::message(seq), encode(&record)?);
        self.messages.insert(seq, Some(record));
        Ok(())
    }

    /// Rewrites a message whose visibility (and possibly other fields) changed.
    fn update(
        &mut self,
        seq: u64,
        old_visible_at: u64,
        record: StoredMessage,
    ) -> Result<(), StoreError> {
        self.store.delete(keys::visibility(old_visible_at, seq));
        self.insert(seq, record)
    }

    fn remove(&mut self, seq: u64, record: &StoredMessage) {
        self.store
            .delete(keys::visibility(record.visible_at_ms, seq));
        self.store.delete(keys::message(seq));
        self.messages.insert(seq, None);
        self.meta.message_count = self.meta.message_count.saturating_sub(1);
    }

    fn finish(self) -> Result<(), StoreError> {
        self.store.put(keys::META.to_vec(), encode(&self.meta)?);
        Ok(())
    }
}

/// Applies one command. Errors are store failures only; every outcome a client can cause is part
/// of the [`QueueResult`].
pub fn apply<S: StateStore>(
    store: &mut S,
    ctx: ApplyContext,
    command: QueueCommand,
) -> Result<QueueResult, StoreError> {
    let mut tx = Tx::begin(store)?;
    let result = match command {
        QueueCommand::Send { messages } => send(&mut tx, ctx, messages)?,
        QueueCommand::Receive {
            max,
            visibility_timeout_s,
        } => receive(&mut tx, ctx, max, visibility_timeout_s)?,
        QueueCommand::Delete { handles } => delete(&mut tx, handles)?,
        QueueCommand::ChangeVisibility { changes } => change_visibility(&mut tx, ctx, changes)?,
        QueueCommand::Purge => {
            let removed = tx.meta.message_count;
            tx.store
                .delete_range(vec![keys::MESSAGES], vec![keys::VISIBILITY + 1]);
            tx.meta.message_count = 0;
            QueueResult::Purged { removed }
        }
        QueueCommand::ExpireRetention { retention_s, max } => {
            expire(&mut tx, ctx, retention_s, max)?
        }
    };
    tx.finish()?;
    Ok(result)
}

fn send<S: StateStore>(
    tx: &mut Tx<'_, S>,
    ctx: ApplyContext,
    messages: Vec<NewMessage>,
) -> Result<QueueResult, StoreError> {
    let mut sent = Vec::with_capacity(messages.len());
    for message in messages {
        let seq = tx.meta.next_seq.max(1);
        tx.meta.next_seq = seq + 1;
        tx.meta.message_count += 1;
        let record = StoredMessage {
            message_id: message.message_id.clone(),
            body: message.body,
            attributes: message.attributes,
            trace_header: message.trace_header,
            sender_id: message.sender_id,
            sent_at_ms: ctx.now_ms,
            visible_at_ms: ctx.now_ms + u64::from(message.delay_seconds) * 1000,
            receive_count: 0,
            first_receive_at_ms: None,
            last_receive_at_ms: None,
            token: 0,
        };
        tx.insert(seq, record)?;
        sent.push(SentMessage {
            seq,
            message_id: message.message_id,
        });
    }
    Ok(QueueResult::Sent(sent))
}

fn receive<S: StateStore>(
    tx: &mut Tx<'_, S>,
    ctx: ApplyContext,
    max: u32,
    visibility_timeout_s: u32,
) -> Result<QueueResult, StoreError> {
    let due = visible_now(tx.store, ctx.now_ms, max as usize)?;
    let mut received = Vec::with_capacity(due.len());
    for (visible_at, seq) in due {
        let Some(mut record) = tx.load(seq)? else {
            return Err(StoreError(format!(
                "index names message {seq} that is not stored"
            )));
        };
        record.receive_count += 1;
        record.first_receive_at_ms.get_or_insert(ctx.now_ms);
        record.last_receive_at_ms = Some(ctx.now_ms);
        record.token = ctx.log_index;
        record.visible_at_ms = ctx.now_ms + u64::from(visibility_timeout_s) * 1000;
        tx.update(seq, visible_at, record.clone())?;
        received.push(ReceivedMessage {
            seq,
            token: ctx.log_index,
            message: record,
        });
    }
    Ok(QueueResult::Received(received))
}

fn delete<S: StateStore>(
    tx: &mut Tx<'_, S>,
    handles: Vec<HandleRef>,
) -> Result<QueueResult, StoreError> {
    let mut outcomes = Vec::with_capacity(handles.len());
    for handle in handles {
        let outcome = match tx.load(handle.seq)? {
            None => DeleteOutcome::NotFound,
            Some(record) if record.token != handle.token || record.receive_count == 0 => {
                DeleteOutcome::StaleHandle
            }
            Some(record) => {
                tx.remove(handle.seq, &record);
                DeleteOutcome::Deleted
            }
        };
        outcomes.push(outcome);
    }
    Ok(QueueResult::Deleted(outcomes))
}

fn change_visibility<S: StateStore>(
    tx: &mut Tx<'_, S>,
    ctx: ApplyContext,
    changes: Vec<VisibilityChange>,
) -> Result<QueueResult, StoreError> {
    let mut outcomes = Vec::with_capacity(changes.len());
    for change in changes {
        let seq = change.handle.seq;
        let outcome = match tx.load(seq)? {
            None => Err(VisibilityError::MessageNotFound),
            Some(record)
                if record.token != change.handle.token
                    || record.receive_count == 0
                    || record.visible_at_ms <= ctx.now_ms =>
            {
                Err(VisibilityError::NotInflight)
            }
            Some(mut record) => {
                let received_at = record.last_receive_at_ms.unwrap_or(ctx.now_ms);
                let visible_at = ctx.now_ms + u64::from(change.visibility_timeout_s) * 1000;
                if visible_at > received_at + MAX_VISIBILITY_TOTAL_MS {
                    Err(VisibilityError::BeyondMaximum)
                } else {
                    let old = record.visible_at_ms;
                    record.visible_at_ms = visible_at;
                    tx.update(seq, old, record)?;
                    Ok(())
                }
            }
        };
        outcomes.push(outcome);
    }
    Ok(QueueResult::VisibilityChanged(outcomes))
}

fn expire<S: StateStore>(
    tx: &mut Tx<'_, S>,
    ctx: ApplyContext,
    retention_s: u32,
    max: u32,
) -> Result<QueueResult, StoreError> {
    let cutoff = ctx.now_ms.saturating_sub(u64::from(retention_s) * 1000);
    let mut expired = Vec::new();
    let mut failure = None;
    // Sequence order is send order, and send times never decrease, so the scan stops at the first
    // message still within its retention period.
    tx.store.scan(
        &[keys::MESSAGES],
        &[keys::MESSAGES + 1],
        &mut |key, value| {
            if expired.len() >= max as usize {
                return false;
            }
            match decode::<StoredMessage>(value) {
                Ok(record) if record.sent_at_ms <= cutoff => {
                    let seq = u64::from_be_bytes(key[1..9].try_into().unwrap_or_default());
                    expired.push((seq, record));
                    true
                }
                Ok(_) => false,
                Err(error) => {
                    failure = Some(error);
                    false
                }
            }
        },
    )?;
    if let Some(error) = failure {
        return Err(error);
    }
    for (seq, record) in &expired {
        tx.remove(*seq, record);
    }
    Ok(QueueResult::Expired {
        removed: expired.len() as u64,
    })
}

/// Up to `max` `(visible_at, seq)` index entries that are receivable at `now_ms`, oldest first.
fn visible_now<S: StateStore + ?Sized>(
    store: &S,
    now_ms: u64,
    max: usize,
) -> Result<Vec<(u64, u64)>, StoreError> {
    let mut due = Vec::new();
    if max == 0 {
        return Ok(due);
    }
    store.scan(
        &[keys::VISIBILITY],
        &keys::visibility_after(now_ms),
        &mut |key, _| {
            if let Some(entry) = keys::parse_visibility(key) {
                due.push(entry);
            }
            due.len() < max
        },
    )?;
    Ok(due)
}

/// Whether a receive at `now_ms` would return anything (long polls check this before proposing).
pub fn has_visible_message<S: StateStore + ?Sized>(
    store: &S,
    now_ms: u64,
) -> Result<bool, StoreError> {
    Ok(!visible_now(store, now_ms, 1)?.is_empty())
}

/// The earliest time after `now_ms` at which a delayed or in-flight message becomes receivable.
pub fn next_visibility_change<S: StateStore + ?Sized>(
    store: &S,
    now_ms: u64,
) -> Result<Option<u64>, StoreError> {
    let mut next = None;
    store.scan(
        &keys::visibility_after(now_ms),
        &[keys::VISIBILITY + 1],
        &mut |key, _| {
            next = keys::parse_visibility(key).map(|(at, _)| at);
            false
        },
    )?;
    Ok(next)
}

/// Counts as of `now_ms`. Costs a scan of the messages not yet visible (in flight or delayed), not
/// of the whole queue.
pub fn approximate_counts<S: StateStore + ?Sized>(
    store: &S,
    now_ms: u64,
) -> Result<ApproximateCounts, StoreError> {
    let total = read_meta(store)?.message_count;
    let mut counts = ApproximateCounts::default();
    store.scan(
        &keys::visibility_after(now_ms),
        &[keys::VISIBILITY + 1],
        &mut |_, kind| {
            if kind.first() == Some(&keys::KIND_RECEIVED) {
                counts.in_flight += 1;
            } else {
                counts.delayed += 1;
            }
            true
        },
    )?;
    counts.visible = total.saturating_sub(counts.in_flight + counts.delayed);
    Ok(counts)
}

/// When the oldest stored message was sent: retention expiry proposes work only when it is due.
pub fn oldest_sent_at<S: StateStore + ?Sized>(store: &S) -> Result<Option<u64>, StoreError> {
    let mut oldest = Ok(None);
    store.scan(&[keys::MESSAGES], &[keys::MESSAGES + 1], &mut |_, value| {
        oldest = decode::<StoredMessage>(value).map(|record| Some(record.sent_at_ms));
        false
    })?;
    oldest
}

fn read_meta<S: StateStore + ?Sized>(store: &S) -> Result<Meta, StoreError> {
    match store.get(keys::META)? {
        Some(bytes) => decode(&bytes),
        None => Ok(Meta {
            next_seq: 1,
            message_count: 0,
        }),
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(|e| StoreError(format!("encode: {e}")))
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError(format!("decode: {e}")))
}
