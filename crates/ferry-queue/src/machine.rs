//! Applying [`QueueCommand`]s to a partition's stored state.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::keys;
use crate::model::*;
use crate::record::{self, ContentHead, Entry, MessageContent, MessageState};
use crate::{StateStore, StoreError};

#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
struct Meta {
    next_seq: u64,
    /// Stored messages, not counting those waiting in the dead-letter outbox.
    message_count: u64,
    /// No visibility index entry is earlier than this. Scans of the index start here rather than
    /// at its beginning, where received and deleted messages leave deletion markers that RocksDB
    /// would otherwise step over on every receive.
    visibility_floor: u64,
    /// No stored message has a lower sequence number (the same reason, for retention scans).
    message_floor: u64,
}

/// A deduplication record: the message a key stored, until the window closes.
#[derive(Debug, Serialize, Deserialize)]
struct Dedup {
    message_id: String,
    seq: u64,
    expires_at: u64,
}

/// A receive attempt: the handles it issued, until the window closes.
#[derive(Debug, Serialize, Deserialize)]
struct Attempt {
    handles: Vec<HandleRef>,
    expires_at: u64,
}

/// The visible time shown for a message in the dead-letter outbox (it is in no index).
const DEAD_LETTERED: u64 = u64::MAX;
/// Index entries a standard receive may look past to skip dead-lettered messages.
const STANDARD_SCAN_SLACK: usize = 100;
/// Unblocked FIFO groups a receive considers, oldest first, and blocked ones it takes back when
/// due; messages of each group it looks at.
const FIFO_GROUPS_SCANNED: usize = 2_000;
const FIFO_GROUP_WINDOW: usize = 200;
/// Index entries one retention command looks through for messages a receive moved.
const RETENTION_INDEX_WINDOW: usize = 4_096;
/// Expired deduplication and attempt records removed per command.
const PRUNE_PER_COMMAND: usize = 16;

/// Where a message stands, as far as the command being applied knows.
#[derive(Debug, Clone)]
enum Slot {
    Indexed(Entry),
    /// In the dead-letter outbox: its contents stay until the move is acknowledged.
    Outbox,
    Removed,
}

/// A group's oldest message, as the command being applied sees it.
#[derive(Debug, Clone, Copy)]
enum Head {
    Known(Option<u64>),
    /// The head `seq` was removed: the new one is the first message after it that the command has
    /// not removed, searched for once, when something needs it or when the command ends. A batch of
    /// deletes that takes a group's first messages in order then costs one search, not one each.
    After(u64),
}

/// The state a command works on: the store plus the command's own not-yet-committed changes, so a
/// batch that touches one message or group twice sees its first change.
struct Tx<'a, S: StateStore> {
    store: &'a mut S,
    meta: Meta,
    messages: BTreeMap<u64, Slot>,
    /// The oldest message of each group touched by this command.
    heads: HashMap<String, Head>,
    /// Until when each group this command looked at is blocked (None: not blocked).
    blocked: HashMap<String, Option<u64>>,
    /// The visible times of the index entries this command wrote.
    indexed: Option<Indexed>,
    /// How this command changed the count of indexed messages received at least once.
    received_change: i64,
}

impl<'a, S: StateStore> Tx<'a, S> {
    fn begin(store: &'a mut S) -> Result<Self, StoreError> {
        let meta = read_meta(store)?;
        Ok(Self {
            store,
            meta,
            messages: BTreeMap::new(),
            heads: HashMap::new(),
            blocked: HashMap::new(),
            indexed: None,
            received_change: 0,
        })
    }

    /// The index entry of message `seq` if it is at `indexed_at` (where a handle's receive put it)
    /// or where a visibility change forwarded it. `None` if the message has no entry there
    /// (removed, dead-lettered, or received again and moved by that receive).
    fn locate(&mut self, seq: u64, indexed_at: u64) -> Result<Option<Entry>, StoreError> {
        if let Some(slot) = self.messages.get(&seq) {
            return Ok(match slot {
                Slot::Indexed(entry) => Some(entry.clone()),
                Slot::Outbox | Slot::Removed => None,
            });
        }
        let entry = find_entry(self.store, seq, indexed_at)?;
        if let Some(entry) = &entry {
            self.messages.insert(seq, Slot::Indexed(entry.clone()));
        }
        Ok(entry)
    }

    /// Whether the message is still stored (possibly in the dead-letter outbox).
    fn is_stored(&self, seq: u64) -> Result<bool, StoreError> {
        Ok(match self.messages.get(&seq) {
            Some(Slot::Removed) => false,
            Some(_) => true,
            None => self.store.get(&keys::message(seq))?.is_some(),
        })
    }

    /// Writes a message's index entry (and, for FIFO, where its group's list finds it).
    fn index(&mut self, seq: u64, entry: Entry) -> Result<(), StoreError> {
        let at = entry.visible_at_ms;
        self.store
            .put(keys::visibility(at, seq), encode(&entry.state)?);
        if let Some(group) = &entry.state.group_id {
            self.store
                .put(keys::group_message(group, seq), at.to_be_bytes().to_vec());
        }
        self.meta.visibility_floor = self.meta.visibility_floor.min(at);
        self.indexed = Some(Indexed::with(self.indexed, at));
        self.messages.insert(seq, Slot::Indexed(entry));
        Ok(())
    }

    /// Moves a message's index entry from `old_at` to the time `entry` holds.
    fn reindex(&mut self, seq: u64, old_at: u64, entry: Entry) -> Result<(), StoreError> {
        if old_at != entry.visible_at_ms {
            self.store.delete(keys::visibility(old_at, seq));
        }
        self.index(seq, entry)
    }

    /// Gives a received message a new visible time that the handles of its latest receive, issued
    /// for `handle_at`, must still find: through a forward if the entry leaves that place.
    fn retarget(
        &mut self,
        seq: u64,
        handle_at: u64,
        mut entry: Entry,
        visible_at: u64,
    ) -> Result<Entry, StoreError> {
        let old_at = entry.visible_at_ms;
        entry.visible_at_ms = visible_at;
        if visible_at < old_at {
            // Its group may have nothing in flight any more, or less long than it was set aside for.
            if let Some(group) = entry.state.group_id.clone() {
                self.unblock_group(&group)?;
            }
        }
        if visible_at != handle_at {
            self.store
                .put(keys::forward(seq), visible_at.to_be_bytes().to_vec());
            entry.state.forwarded = true;
        } else if std::mem::take(&mut entry.state.forwarded) {
            self.store.delete(keys::forward(seq));
        }
        self.reindex(seq, old_at, entry.clone())?;
        Ok(entry)
    }

    /// Takes a message out of the index and of its group.
    fn unindex(&mut self, seq: u64, entry: &Entry) -> Result<(), StoreError> {
        // The group's head is found before the message is marked gone.
        if let Some(group) = &entry.state.group_id {
            self.group_remove(group, seq)?;
        }
        self.store
            .delete(keys::visibility(entry.visible_at_ms, seq));
        if entry.state.forwarded {
            self.store.delete(keys::forward(seq));
        }
        if entry.state.receive_count > 0 {
            self.received_change -= 1;
        }
        self.meta.message_count = self.meta.message_count.saturating_sub(1);
        Ok(())
    }

    fn remove(&mut self, seq: u64, entry: &Entry) -> Result<(), StoreError> {
        self.unindex(seq, entry)?;
        self.store.delete(keys::message(seq));
        self.messages.insert(seq, Slot::Removed);
        Ok(())
    }

    /// The oldest message of a group (None: the group is empty), seen through this command's
    /// changes.
    fn group_head(&mut self, group: &str) -> Result<Option<u64>, StoreError> {
        let head = match self.heads.get(group) {
            Some(Head::Known(head)) => return Ok(*head),
            Some(&Head::After(removed)) => {
                let next = self.next_in_group(group, removed + 1)?;
                // The group is not blocked (its removal unblocked it), so the new head is indexed.
                if let Some(next) = next {
                    self.store.put(keys::group_head(next, group), Vec::new());
                }
                next
            }
            // From the message floor: the deletion marks of the group's removed messages lie
            // before it.
            None => self.next_in_group(group, self.meta.message_floor)?,
        };
        self.heads.insert(group.to_owned(), Head::Known(head));
        Ok(head)
    }

    /// The first message of `group` at or after `from` that this command has not taken out of it.
    fn next_in_group(&self, group: &str, from: u64) -> Result<Option<u64>, StoreError> {
        let prefix = keys::group_prefix(group);
        let mut end = prefix.clone();
        end.extend_from_slice(&[0xFF; 9]);
        let mut next = None;
        self.store
            .scan(
                &keys::group_message(group, from),
                &end,
                &mut |key, _| match keys::trailing_seq(key) {
                    Some(seq)
                        if matches!(
                            self.messages.get(&seq),
                            Some(Slot::Removed | Slot::Outbox)
                        ) =>
                    {
                        true
                    }
                    found => {
                        next = found;
                        false
                    }
                },
            )?;
        Ok(next)
    }

    /// Makes a new message of `group` its head if the group had none (its index entry, written
    /// by [`Tx::index`], links it into the group's list).
    fn group_join(&mut self, group: &str, seq: u64) -> Result<(), StoreError> {
        if self.group_head(group)?.is_none() {
            self.store.put(keys::group_head(seq, group), Vec::new());
            self.heads.insert(group.to_owned(), Head::Known(Some(seq)));
        }
        Ok(())
    }

    fn group_remove(&mut self, group: &str, seq: u64) -> Result<(), StoreError> {
        // The message may have been what blocked the group, and its head key moves if it was first.
        self.unblock_group(group)?;
        self.store.delete(keys::group_message(group, seq));
        // After the head's removal, later removals leave the head to be found as it was.
        if matches!(self.heads.get(group), Some(Head::After(_))) {
            return Ok(());
        }
        if self.group_head(group)? == Some(seq) {
            self.store.delete(keys::group_head(seq, group));
            self.heads.insert(group.to_owned(), Head::After(seq));
        }
        Ok(())
    }

    /// Until when `group` is set aside among the blocked groups, seen through this command's changes.
    fn blocked_until(&mut self, group: &str) -> Result<Option<u64>, StoreError> {
        if let Some(until) = self.blocked.get(group) {
            return Ok(*until);
        }
        let until = load_at(self.store, &keys::blocked_until(group))?;
        self.blocked.insert(group.to_owned(), until);
        Ok(until)
    }

    /// Sets a group with messages in flight aside until `until`, when they may be visible again, so
    /// that receives do not look at it before then (a FIFO group with anything in flight has
    /// nothing to receive). Earlier is safe: the receive that looks at it then blocks it again.
    fn block_group(&mut self, group: &str, until: u64) -> Result<(), StoreError> {
        let Some(head) = self.group_head(group)? else {
            return Ok(());
        };
        match self.blocked_until(group)? {
            Some(previous) => self.store.delete(keys::blocked_group(previous, group)),
            None => self.store.delete(keys::group_head(head, group)),
        }
        self.store.put(
            keys::blocked_group(until, group),
            head.to_be_bytes().to_vec(),
        );
        self.store
            .put(keys::blocked_until(group), until.to_be_bytes().to_vec());
        self.blocked.insert(group.to_owned(), Some(until));
        Ok(())
    }

    /// Puts a blocked group back among those receives look at: its time has come, or a change to
    /// its messages may have ended the block early (a removal, a visibility cut short).
    fn unblock_group(&mut self, group: &str) -> Result<(), StoreError> {
        let Some(until) = self.blocked_until(group)? else {
            return Ok(());
        };
        let key = keys::blocked_group(until, group);
        if !self.heads.contains_key(group) {
            // The head when the group was blocked is still its head, since any removal unblocks it
            // first; unless a build without blocked groups removed it (checked: one read).
            if let Some(head) = load_at(self.store, &key)? {
                if self.store.get(&keys::group_message(group, head))?.is_some() {
                    self.heads.insert(group.to_owned(), Head::Known(Some(head)));
                }
            }
        }
        self.store.delete(key);
        self.store.delete(keys::blocked_until(group));
        self.blocked.insert(group.to_owned(), None);
        if let Some(head) = self.group_head(group)? {
            self.store.put(keys::group_head(head, group), Vec::new());
        }
        Ok(())
    }

    /// Moves a message into the dead-letter outbox: out of every index, handles invalidated.
    fn dead_letter(&mut self, seq: u64, entry: Entry) -> Result<(), StoreError> {
        self.unindex(seq, &entry)?;
        let mut state = entry.state;
        state.token = 0;
        state.forwarded = false;
        self.store.put(keys::dead_letter(seq), encode(&state)?);
        self.messages.insert(seq, Slot::Outbox);
        Ok(())
    }

    /// Moves the message floor to the first message left after this command's removals. The floor
    /// is kept at the oldest stored message (or at the next sequence number when there is none), so
    /// only removing that message moves it.
    fn advance_message_floor(&mut self) -> Result<(), StoreError> {
        if !matches!(
            self.messages.get(&self.meta.message_floor),
            Some(Slot::Removed)
        ) {
            return Ok(());
        }
        // Messages this command stored are not in the store yet.
        let mut floor = self
            .messages
            .iter()
            .find(|(_, slot)| !matches!(slot, Slot::Removed))
            .map_or(self.meta.next_seq, |(seq, _)| {
                (*seq).min(self.meta.next_seq)
            });
        // The run of messages this command removed from the floor on is still in the store:
        // start after it rather than step over each.
        let mut from = self.meta.message_floor;
        for (seq, slot) in self.messages.range(from..) {
            if *seq != from || !matches!(slot, Slot::Removed) {
                break;
            }
            from += 1;
        }
        self.store.scan(
            &keys::message(from),
            &[keys::MESSAGES + 1],
            &mut |key, _| match keys::trailing_seq(key) {
                Some(seq) if matches!(self.messages.get(&seq), Some(Slot::Removed)) => true,
                found => {
                    floor = found.unwrap_or(floor);
                    false
                }
            },
        )?;
        self.meta.message_floor = floor;
        Ok(())
    }

    /// Writes the partition's counters; returns the visible times the command indexed.
    fn finish(mut self) -> Result<Option<Indexed>, StoreError> {
        let unsettled: Vec<String> = self
            .heads
            .iter()
            .filter(|(_, head)| matches!(head, Head::After(_)))
            .map(|(group, _)| group.clone())
            .collect();
        for group in unsettled {
            self.group_head(&group)?;
        }
        self.advance_message_floor()?;
        if self.received_change != 0 {
            let count = received_count(self.store)?.saturating_add_signed(self.received_change);
            self.store
                .put(keys::RECEIVED_COUNT.to_vec(), count.to_be_bytes().to_vec());
        }
        self.store.put(keys::META.to_vec(), encode(&self.meta)?);
        Ok(self.indexed)
    }
}

/// Applies one command. Errors are store failures only; every outcome a client can cause is part
/// of the [`QueueResult`].
pub fn apply<S: StateStore>(
    store: &mut S,
    ctx: ApplyContext,
    command: QueueCommand,
) -> Result<Applied, StoreError> {
    let mut tx = Tx::begin(store)?;
    let result = match command {
        QueueCommand::Send { messages } | QueueCommand::SendWithFairGroups { messages } => {
            send(&mut tx, ctx, messages)?
        }
        QueueCommand::Receive(receive) => receive_messages(&mut tx, ctx, receive)?,
        QueueCommand::Delete { handles } => delete(&mut tx, handles)?,
        QueueCommand::ChangeVisibility { changes } => change_visibility(&mut tx, ctx, changes)?,
        QueueCommand::Purge => {
            let removed = tx.meta.message_count;
            // Messages, their indexes and the dead-letter outbox; deduplication records stay.
            for (start, end) in [
                (keys::MESSAGES, keys::GROUP_HEADS + 1),
                (keys::DEAD_LETTERS, keys::DEAD_LETTERS + 1),
                (keys::FORWARDS, keys::FORWARDS + 1),
                (keys::BLOCKED_GROUPS, keys::BLOCKED_UNTIL + 1),
            ] {
                tx.store.delete_range(vec![start], vec![end]);
            }
            tx.meta.message_count = 0;
            tx.received_change = 0;
            tx.store.delete(keys::RECEIVED_COUNT.to_vec());
            tx.meta.message_floor = tx.meta.next_seq;
            tx.meta.visibility_floor = ctx.now_ms;
            QueueResult::Purged { removed }
        }
        QueueCommand::ExpireRetention { retention_s, max } => {
            expire(&mut tx, ctx, retention_s, max)?
        }
        QueueCommand::AckDeadLetters { seqs } => {
            for seq in seqs {
                if tx.store.get(&keys::dead_letter(seq))?.is_some() {
                    tx.store.delete(keys::dead_letter(seq));
                    tx.store.delete(keys::message(seq));
                    tx.messages.insert(seq, Slot::Removed);
                }
            }
            QueueResult::DeadLettersAcked
        }
    };
    let indexed = tx.finish()?;
    Ok(Applied { result, indexed })
}

fn send<S: StateStore>(
    tx: &mut Tx<'_, S>,
    ctx: ApplyContext,
    messages: Vec<NewMessage>,
) -> Result<QueueResult, StoreError> {
    prune_expired(
        tx.store,
        keys::DEDUP_EXPIRY,
        ctx.now_ms,
        |rest| keys::dedup(&String::from_utf8_lossy(rest)),
        |bytes| decode::<Dedup>(bytes).map(|d| d.expires_at),
    )?;
    let mut sent = Vec::with_capacity(messages.len());
    // Keys stored by this command, which the store cannot show yet.
    let mut stored_keys: HashMap<String, (u64, String)> = HashMap::new();
    for message in messages {
        if let Some(key) = &message.dedup_key {
            let existing = match stored_keys.get(key) {
                Some((seq, id)) => Some((*seq, id.clone())),
                None => match tx.store.get(&keys::dedup(key))? {
                    Some(bytes) => {
                        let dedup: Dedup = decode(&bytes)?;
                        (dedup.expires_at > ctx.now_ms).then_some((dedup.seq, dedup.message_id))
                    }
                    None => None,
                },
            };
            if let Some((seq, message_id)) = existing {
                sent.push(SentMessage {
                    seq,
                    message_id,
                    duplicate: true,
                });
                continue;
            }
        }
        let seq = tx.meta.next_seq.max(1);
        tx.meta.next_seq = seq + 1;
        tx.meta.message_count += 1;
        if let Some(key) = &message.dedup_key {
            let expires_at = ctx.now_ms + DEDUP_WINDOW_MS;
            let record = Dedup {
                message_id: message.message_id.clone(),
                seq,
                expires_at,
            };
            tx.store.put(keys::dedup(key), encode(&record)?);
            tx.store
                .put(keys::dedup_expiry(expires_at, key), Vec::new());
            stored_keys.insert(key.clone(), (seq, message.message_id.clone()));
        }
        if let Some(group) = &message.group_id {
            tx.group_join(group, seq)?;
        }
        let (entry, content) = record::split(message, ctx.now_ms);
        let stored =
            record::encode_content(&content).map_err(|e| StoreError(format!("encode: {e}")))?;
        tx.store.put(keys::message(seq), stored);
        tx.index(seq, entry)?;
        sent.push(SentMessage {
            seq,
            message_id: content.message_id,
            duplicate: false,
        });
    }
    Ok(QueueResult::Sent(sent))
}

fn receive_messages<S: StateStore>(
    tx: &mut Tx<'_, S>,
    ctx: ApplyContext,
    receive: ReceiveCommand,
) -> Result<QueueResult, StoreError> {
    if let Some(attempt_id) = &receive.attempt_id {
        prune_expired(
            tx.store,
            keys::ATTEMPT_EXPIRY,
            ctx.now_ms,
            |rest| keys::attempt(&String::from_utf8_lossy(rest)),
            |bytes| decode::<Attempt>(bytes).map(|a| a.expires_at),
        )?;
        if let Some(bytes) = tx.store.get(&keys::attempt(attempt_id))? {
            let attempt: Attempt = decode(&bytes)?;
            if attempt.expires_at > ctx.now_ms {
                return repeat_attempt(tx, ctx, &attempt, receive.visibility_timeout_s);
            }
        }
    }
    let selection = select(
        tx.store,
        &tx.meta,
        ctx.now_ms,
        receive.max as usize,
        receive.fifo,
        receive.max_receive_count,
    )?;
    if let Some(floor) = selection.visibility_floor {
        // Raised before this command re-indexes what it takes (which may lower it again).
        tx.meta.visibility_floor = tx.meta.visibility_floor.max(floor);
    }
    for (group, head) in selection.heads {
        tx.heads.insert(group, Head::Known(head));
    }
    for group in &selection.due {
        tx.unblock_group(group)?;
    }
    if let Some(floor) = selection.blocked_floor {
        tx.store
            .put(keys::BLOCKED_FLOOR.to_vec(), floor.to_be_bytes().to_vec());
    }
    for (group, until) in &selection.in_flight {
        tx.block_group(group, *until)?;
    }
    for (seq, entry) in selection.dead {
        tx.dead_letter(seq, entry)?;
    }
    let mut received = Vec::with_capacity(selection.deliver.len());
    let visible_at = ctx.now_ms + u64::from(receive.visibility_timeout_s) * 1000;
    // FIFO groups this receive takes from, blocked while what it takes is in flight.
    let mut taken_groups = BTreeSet::new();
    for (seq, mut entry) in selection.deliver {
        let old_at = entry.visible_at_ms;
        let state = &mut entry.state;
        if state.receive_count == 0 {
            tx.received_change += 1;
        }
        state.receive_count += 1;
        state.first_receive_at_ms.get_or_insert(ctx.now_ms);
        state.last_receive_at_ms = Some(ctx.now_ms);
        state.token = ctx.log_index;
        if std::mem::take(&mut state.forwarded) {
            tx.store.delete(keys::forward(seq));
        }
        entry.visible_at_ms = visible_at;
        tx.reindex(seq, old_at, entry.clone())?;
        let handle = HandleRef {
            seq,
            token: ctx.log_index,
            indexed_at: entry.visible_at_ms,
        };
        if let Some(group) = entry
            .state
            .group_id
            .as_ref()
            .filter(|_| visible_at > ctx.now_ms)
        {
            taken_groups.insert(group.clone());
        }
        received.push((handle, entry));
    }
    for group in taken_groups {
        tx.block_group(&group, visible_at)?;
    }
    // An attempt that took nothing is not remembered: its retries (a long poll retries as it
    // waits) then take what arrived since, instead of the empty answer for the whole window.
    if let Some(attempt_id) = receive.attempt_id.as_ref().filter(|_| !received.is_empty()) {
        let expires_at = ctx.now_ms + DEDUP_WINDOW_MS;
        let attempt = Attempt {
            handles: received.iter().map(|(handle, _)| *handle).collect(),
            expires_at,
        };
        tx.store.put(keys::attempt(attempt_id), encode(&attempt)?);
        tx.store
            .put(keys::attempt_expiry(expires_at, attempt_id), Vec::new());
    }
    answer_receive(tx.store, ctx, received)
}

/// The result of a receive that took `received`: each message joined with its contents, read only
/// where a caller waits for the result.
fn answer_receive<S: StateStore + ?Sized>(
    store: &S,
    ctx: ApplyContext,
    received: Vec<(HandleRef, Entry)>,
) -> Result<QueueResult, StoreError> {
    if !ctx.reply_wanted {
        return Ok(QueueResult::Received(Vec::new()));
    }
    let mut messages = Vec::with_capacity(received.len());
    for (handle, entry) in received {
        let content = load_content(store, handle.seq)?.ok_or_else(|| missing(handle.seq))?;
        messages.push(ReceivedMessage {
            handle,
            message: record::join(entry, content),
        });
    }
    Ok(QueueResult::Received(messages))
}

/// A retried receive attempt: the messages it took that it still holds, with the same handles and
/// a fresh visibility timeout (as SQS does within the deduplication interval).
fn repeat_attempt<S: StateStore>(
    tx: &mut Tx<'_, S>,
    ctx: ApplyContext,
    attempt: &Attempt,
    visibility_timeout_s: u32,
) -> Result<QueueResult, StoreError> {
    let mut received = Vec::new();
    for handle in &attempt.handles {
        let Some(entry) = tx.locate(handle.seq, handle.indexed_at)? else {
            continue;
        };
        if entry.state.token != handle.token {
            continue;
        }
        let visible_at = ctx.now_ms + u64::from(visibility_timeout_s) * 1000;
        let entry = tx.retarget(handle.seq, handle.indexed_at, entry, visible_at)?;
        received.push((*handle, entry));
    }
    answer_receive(tx.store, ctx, received)
}

/// What a receive at `now` would do: messages to deliver, and messages past the receive limit to
/// dead-letter instead.
struct Selection {
    deliver: Vec<(u64, Entry)>,
    dead: Vec<(u64, Entry)>,
    /// A new visibility floor: no index entry is earlier (standard queues).
    visibility_floor: Option<u64>,
    /// FIFO: blocked groups whose time has come, to be looked at again from now on.
    due: Vec<String>,
    /// FIFO: where the blocked groups not yet due start, if that moved.
    blocked_floor: Option<u64>,
    /// FIFO: groups found with a message in flight, and until when that one is.
    in_flight: Vec<(String, u64)>,
    /// FIFO: the oldest message of each group looked at, which the receive need not search for.
    heads: Vec<(String, Option<u64>)>,
}

fn select<S: StateStore + ?Sized>(
    store: &S,
    meta: &Meta,
    now: u64,
    max: usize,
    fifo: bool,
    max_receive_count: Option<u32>,
) -> Result<Selection, StoreError> {
    let mut selection = Selection {
        deliver: Vec::new(),
        dead: Vec::new(),
        visibility_floor: None,
        due: Vec::new(),
        blocked_floor: None,
        in_flight: Vec::new(),
        heads: Vec::new(),
    };
    if max == 0 {
        return Ok(selection);
    }
    let exhausted =
        |entry: &Entry| max_receive_count.is_some_and(|limit| entry.state.receive_count >= limit);
    if !fifo {
        // Entries are looked at one by one and the scan stops once the receive is served, so a
        // receive of ten reads about ten entries; it looks past at most `STANDARD_SCAN_SLACK` more
        // to skip messages it dead-letters instead.
        let mut looked_at = 0;
        let mut last_at = None;
        scan_due(store, meta.visibility_floor, now, &mut |seq, entry| {
            last_at = Some(entry.visible_at_ms);
            if exhausted(&entry) {
                selection.dead.push((seq, entry));
            } else {
                selection.deliver.push((seq, entry));
            }
            looked_at += 1;
            selection.deliver.len() < max && looked_at < max + STANDARD_SCAN_SLACK
        })?;
        // Everything this receive looked at leaves the front of the index, so afterwards nothing is
        // earlier than the last entry it looked at (or than `now` if none was due).
        selection.visibility_floor = Some(last_at.unwrap_or(now + 1));
        return Ok(selection);
    }
    // FIFO: groups in the order of their oldest message; a group with anything in flight is
    // skipped whole; within a group, messages go in order and stop at the first not yet visible.
    // Groups found with something in flight are blocked until then, out of the way of later
    // receives: the groups looked at are the unblocked ones and the blocked ones now due.
    let mut groups = blocked_groups_due(store, now, &mut selection)?;
    // A group's head is one of its stored messages, so none is below the message floor.
    let mut unblocked = 0;
    store.scan(
        &keys::group_head(meta.message_floor, ""),
        &[keys::GROUP_HEADS + 1],
        &mut |key, _| {
            groups.extend(keys::parse_group_head(key));
            unblocked += 1;
            unblocked < FIFO_GROUPS_SCANNED
        },
    )?;
    groups.sort_unstable();
    let mut looked_at = HashSet::new();
    for (head, group) in groups {
        if selection.deliver.len() >= max {
            break;
        }
        // A group is listed once, unless a build without blocked groups moved the head of a group
        // that this one had blocked (nodes of both builds in one cluster): taking it twice would
        // deliver its messages twice.
        if !looked_at.insert(group.clone()) {
            continue;
        }
        let mut members = Vec::new();
        let mut failure = None;
        // From the head, not over the deletion marks of the group's removed messages before it.
        let mut end = keys::group_prefix(&group);
        end.extend_from_slice(&[0xFF; 9]);
        store.scan(
            &keys::group_message(&group, head),
            &end,
            &mut |key, value| {
                match (keys::trailing_seq(key), decode_at(value)) {
                    (Some(seq), Ok(at)) => members.push((seq, at)),
                    (_, Err(error)) => failure = Some(error),
                    (None, _) => {}
                }
                failure.is_none() && members.len() < FIFO_GROUP_WINDOW
            },
        )?;
        if let Some(error) = failure {
            return Err(error);
        }
        selection
            .heads
            .push((group.clone(), members.first().map(|(seq, _)| *seq)));
        // States are read in group order and only as far as needed: messages never received
        // follow every received one (a group is delivered in order), so once this receive has
        // what it can take from the group, the first never-received message ends the search for
        // one in flight.
        let (mut deliver, mut dead) = (Vec::new(), Vec::new());
        let mut delivering = true;
        let mut in_flight = None;
        for (seq, at) in members {
            let entry = load_entry(store, at, seq)?.ok_or_else(|| missing(seq))?;
            if entry.state.receive_count > 0 && at > now {
                in_flight = Some(at);
                break;
            }
            delivering = delivering && at <= now && selection.deliver.len() + deliver.len() < max;
            if delivering {
                if exhausted(&entry) {
                    dead.push((seq, entry));
                } else {
                    deliver.push((seq, entry));
                }
            } else if entry.state.receive_count == 0 {
                break;
            }
        }
        match in_flight {
            None => {
                selection.deliver.extend(deliver);
                selection.dead.extend(dead);
            }
            Some(until) => selection.in_flight.push((group, until)),
        }
    }
    Ok(selection)
}

/// The blocked groups due at `now` as `(head_seq, group)`, at most [`FIFO_GROUPS_SCANNED`], noted
/// in `selection` with where the rest start.
fn blocked_groups_due<S: StateStore + ?Sized>(
    store: &S,
    now: u64,
    selection: &mut Selection,
) -> Result<Vec<(u64, String)>, StoreError> {
    let floor = load_at(store, keys::BLOCKED_FLOOR)?.unwrap_or(0);
    let mut groups = Vec::new();
    if floor > now {
        // A reader whose clock is behind the last receive's: nothing blocked is due before then.
        return Ok(groups);
    }
    let mut last_until = None;
    let mut failure = None;
    store.scan(
        &keys::blocked_group(floor, ""),
        &keys::blocked_group(now.saturating_add(1), ""),
        &mut |key, value| {
            match (keys::parse_blocked_group(key), decode_at(value)) {
                (Some((until, group)), Ok(head)) => {
                    last_until = Some(until);
                    selection.due.push(group.clone());
                    groups.push((head, group));
                }
                (_, Err(error)) => failure = Some(error),
                (None, _) => {}
            }
            failure.is_none() && groups.len() < FIFO_GROUPS_SCANNED
        },
    )?;
    if let Some(error) = failure {
        return Err(error);
    }
    // Every group blocked from now on is blocked until later than now, so a scan that saw every
    // due group leaves nothing before `now + 1`; the deletion marks it left need not be crossed again.
    let next_floor = match last_until {
        Some(until) if groups.len() >= FIFO_GROUPS_SCANNED => until,
        _ => now.saturating_add(1),
    };
    selection.blocked_floor = (next_floor != floor).then_some(next_floor);
    Ok(groups)
}

fn delete<S: StateStore>(
    tx: &mut Tx<'_, S>,
    handles: Vec<HandleRef>,
) -> Result<QueueResult, StoreError> {
    let mut outcomes = Vec::with_capacity(handles.len());
    for handle in handles {
        let outcome = match tx.locate(handle.seq, handle.indexed_at)? {
            Some(entry) if entry.state.token == handle.token && entry.state.receive_count > 0 => {
                tx.remove(handle.seq, &entry)?;
                DeleteOutcome::Deleted
            }
            Some(_) => DeleteOutcome::StaleHandle,
            None if tx.is_stored(handle.seq)? => DeleteOutcome::StaleHandle,
            None => DeleteOutcome::NotFound,
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
        let handle = change.handle;
        let outcome = match tx.locate(handle.seq, handle.indexed_at)? {
            Some(entry)
                if entry.state.token != handle.token
                    || entry.state.receive_count == 0
                    || entry.visible_at_ms <= ctx.now_ms =>
            {
                Err(VisibilityError::NotInflight)
            }
            Some(entry) => {
                let received_at = entry.state.last_receive_at_ms.unwrap_or(ctx.now_ms);
                let visible_at = ctx.now_ms + u64::from(change.visibility_timeout_s) * 1000;
                if visible_at > received_at + MAX_VISIBILITY_TOTAL_MS {
                    Err(VisibilityError::BeyondMaximum)
                } else {
                    tx.retarget(handle.seq, handle.indexed_at, entry, visible_at)?;
                    Ok(())
                }
            }
            None if tx.is_stored(handle.seq)? => Err(VisibilityError::NotInflight),
            None => Err(VisibilityError::MessageNotFound),
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
    let store: &S = tx.store;
    // Sequence order is send order, and send times never decrease, so the scan stops at the first
    // message still within its retention period. Dead-lettered messages are the mover's.
    store.scan(
        &keys::message(tx.meta.message_floor),
        &[keys::MESSAGES + 1],
        &mut |key, value| {
            let found = decode_head(value).and_then(|head| {
                let Some(seq) = keys::trailing_seq(key).filter(|_| head.sent_at_ms <= cutoff)
                else {
                    return Ok(false);
                };
                if store.get(&keys::dead_letter(seq))?.is_none() {
                    expired.push((seq, head));
                }
                Ok(true)
            });
            match found {
                Ok(more) => more && expired.len() < max as usize,
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
    // Each message's index entry: where the send put it, where its group's list says, or where a
    // forward says. A standard message that a receive moved is found by the scan below.
    let mut entries = Vec::with_capacity(expired.len());
    let mut moved = BTreeSet::new();
    for (seq, head) in expired {
        let at = match &head.group_id {
            Some(group) => load_at(tx.store, &keys::group_message(group, seq))?,
            None => Some(head.first_visible_at_ms),
        };
        match at.map(|at| tx.locate(seq, at)).transpose()?.flatten() {
            Some(entry) => entries.push((seq, entry)),
            None => {
                moved.insert(seq);
            }
        }
    }
    if !moved.is_empty() {
        find_moved(tx, moved, &mut entries)?;
    }
    for (seq, entry) in &entries {
        tx.remove(*seq, entry)?;
    }
    Ok(QueueResult::Expired {
        removed: entries.len() as u64,
    })
}

/// Finds the index entries of expired standard messages that a receive moved (received, then
/// neither deleted nor received again within the retention period). They lie anywhere in the
/// index, so the search goes through at most [`RETENTION_INDEX_WINDOW`] entries, from where the
/// last search stopped to the end of the index and on from its floor; the next retention command
/// goes on from there. Every replica applies it, so a long backlog costs many short commands
/// instead of one that holds up the partition.
fn find_moved<S: StateStore>(
    tx: &mut Tx<'_, S>,
    mut moved: BTreeSet<u64>,
    entries: &mut Vec<(u64, Entry)>,
) -> Result<(), StoreError> {
    let floor = keys::visibility(tx.meta.visibility_floor, 0);
    let cursor = tx
        .store
        .get(keys::RETENTION_CURSOR)?
        .filter(|cursor| *cursor > floor)
        .unwrap_or_else(|| floor.clone());
    let mut budget = RETENTION_INDEX_WINDOW;
    let mut resume = None;
    for (from, to) in [(&cursor, &keys::visibility_end()), (&floor, &cursor)] {
        if moved.is_empty() || budget == 0 {
            break;
        }
        scan_index(tx.store, from, to, &mut |key, seq, entry| {
            budget -= 1;
            if moved.remove(&seq) {
                entries.push((seq, entry));
            }
            // The key right after this one.
            resume = Some([key, &[0]].concat());
            budget > 0 && !moved.is_empty()
        })?;
    }
    if let Some(resume) = resume {
        tx.store.put(keys::RETENTION_CURSOR.to_vec(), resume);
    }
    Ok(())
}

/// Removes up to [`PRUNE_PER_COMMAND`] records whose window closed by `now`, given their expiry index
/// `tag`, the primary key of an index entry's suffix, and the expiry stored in a primary record.
fn prune_expired<S: StateStore>(
    store: &mut S,
    tag: u8,
    now: u64,
    primary_key: impl Fn(&[u8]) -> Vec<u8>,
    expiry_of: impl Fn(&[u8]) -> Result<u64, StoreError>,
) -> Result<(), StoreError> {
    let mut due = Vec::new();
    let end = [&[tag][..], &(now + 1).to_be_bytes()].concat();
    store.scan(&[tag], &end, &mut |key, _| {
        due.push(key.to_vec());
        due.len() < PRUNE_PER_COMMAND
    })?;
    for index_key in due {
        store.delete(index_key.clone());
        let Some((_, rest)) = keys::parse_expiry(&index_key) else {
            continue;
        };
        let primary = primary_key(rest);
        // A key stored again after this entry was written has a later expiry: keep it.
        if let Some(bytes) = store.get(&primary)? {
            if expiry_of(&bytes)? <= now {
                store.delete(primary);
            }
        }
    }
    Ok(())
}

/// Calls `visit` with each `(seq, entry)` of the index receivable at `now_ms`, oldest first, until
/// it returns false.
fn scan_due<S: StateStore + ?Sized>(
    store: &S,
    floor: u64,
    now_ms: u64,
    visit: &mut dyn FnMut(u64, Entry) -> bool,
) -> Result<(), StoreError> {
    scan_index(
        store,
        &keys::visibility(floor, 0),
        &keys::visibility_after(now_ms),
        &mut |_, seq, entry| visit(seq, entry),
    )
}

/// Visits the index entries from key `from` up to (not including) key `to`, with their keys.
fn scan_index<S: StateStore + ?Sized>(
    store: &S,
    from: &[u8],
    to: &[u8],
    visit: &mut dyn FnMut(&[u8], u64, Entry) -> bool,
) -> Result<(), StoreError> {
    let mut failure = None;
    store.scan(from, to, &mut |key, value| match (
        keys::parse_visibility(key),
        decode::<MessageState>(value),
    ) {
        (Some((visible_at_ms, seq)), Ok(state)) => visit(
            key,
            seq,
            Entry {
                visible_at_ms,
                state,
            },
        ),
        (_, Err(error)) => {
            failure = Some(error);
            false
        }
        (None, _) => true,
    })?;
    failure.map_or(Ok(()), Err)
}

/// Whether a receive at `now_ms` would do anything (deliver, or dead-letter). Readers on a node ask
/// through the replica's [`crate::ReceivableMemo`], which calls this only when it cannot answer.
pub fn has_receivable_message<S: StateStore + ?Sized>(
    store: &S,
    now_ms: u64,
    fifo: bool,
    max_receive_count: Option<u32>,
) -> Result<bool, StoreError> {
    let meta = read_meta(store)?;
    if !fifo {
        // Every due index entry is either delivered or dead-lettered.
        let mut due = false;
        scan_due(store, meta.visibility_floor, now_ms, &mut |_, _| {
            due = true;
            false
        })?;
        return Ok(due);
    }
    let selection = select(store, &meta, now_ms, 1, fifo, max_receive_count)?;
    Ok(!selection.deliver.is_empty() || !selection.dead.is_empty())
}

/// The earliest time after `now_ms` at which a delayed or in-flight message becomes receivable. A
/// scan over the deletion marks of recently deleted messages: readers ask the replica's
/// [`crate::ReceivableMemo`] instead, which calls this only when what it knows has run out.
pub fn next_visibility_change<S: StateStore + ?Sized>(
    store: &S,
    now_ms: u64,
) -> Result<Option<u64>, StoreError> {
    let mut next = None;
    store.scan(
        &keys::visibility_after(now_ms),
        &keys::visibility_end(),
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
    visit_ahead(store, now_ms, &mut |state| {
        match state.receive_count {
            0 => counts.delayed += 1,
            _ => counts.in_flight += 1,
        }
        true
    })?;
    counts.visible = total.saturating_sub(counts.in_flight + counts.delayed);
    Ok(counts)
}

/// Messages the partition holds (visible, in flight or delayed): one read.
pub fn message_count<S: StateStore + ?Sized>(store: &S) -> Result<u64, StoreError> {
    Ok(read_meta(store)?.message_count)
}

/// Whether at least `limit` messages are in flight at `now_ms` (received, and neither deleted nor
/// visible again). A message in flight was received at least once and is still indexed, so while
/// fewer than `limit` are counted as such this costs one read; beyond, a scan of the index ahead
/// of `now_ms`, stopped at the `limit`th message in flight.
pub fn in_flight_reaches<S: StateStore + ?Sized>(
    store: &S,
    now_ms: u64,
    limit: u64,
) -> Result<bool, StoreError> {
    if received_count(store)? < limit {
        return Ok(false);
    }
    let mut in_flight = 0;
    visit_ahead(store, now_ms, &mut |state| {
        in_flight += u64::from(state.receive_count > 0);
        in_flight < limit
    })?;
    Ok(in_flight >= limit)
}

/// Visits the states of the index entries after `now_ms` (in flight or delayed), in order, while
/// `visit` returns true.
fn visit_ahead<S: StateStore + ?Sized>(
    store: &S,
    now_ms: u64,
    visit: &mut dyn FnMut(&MessageState) -> bool,
) -> Result<(), StoreError> {
    let mut failure = None;
    store.scan(
        &keys::visibility_after(now_ms),
        &keys::visibility_end(),
        &mut |_, state| match decode::<MessageState>(state) {
            Ok(state) => visit(&state),
            Err(error) => {
                failure = Some(error);
                false
            }
        },
    )?;
    failure.map_or(Ok(()), Err)
}

/// When the oldest stored message was sent: retention expiry proposes work only when it is due.
pub fn oldest_sent_at<S: StateStore + ?Sized>(store: &S) -> Result<Option<u64>, StoreError> {
    let mut oldest = Ok(None);
    let floor = read_meta(store)?.message_floor;
    store.scan(
        &keys::message(floor),
        &[keys::MESSAGES + 1],
        &mut |_, value| {
            oldest = decode_head(value).map(|head| Some(head.sent_at_ms));
            false
        },
    )?;
    oldest
}

/// Up to `max` messages waiting in the dead-letter outbox, oldest first.
pub fn dead_letters<S: StateStore + ?Sized>(
    store: &S,
    max: usize,
) -> Result<Vec<DeadLetter>, StoreError> {
    let mut waiting = Vec::new();
    let mut failure = None;
    store.scan(
        &[keys::DEAD_LETTERS],
        &[keys::DEAD_LETTERS + 1],
        &mut |key, value| {
            match (keys::trailing_seq(key), decode::<MessageState>(value)) {
                (Some(seq), Ok(state)) => waiting.push((seq, state)),
                (_, Err(error)) => failure = Some(error),
                (None, _) => {}
            }
            failure.is_none() && waiting.len() < max
        },
    )?;
    if let Some(error) = failure {
        return Err(error);
    }
    let mut letters = Vec::with_capacity(waiting.len());
    for (seq, state) in waiting {
        if let Some(content) = load_content(store, seq)? {
            let entry = Entry {
                visible_at_ms: DEAD_LETTERED,
                state,
            };
            letters.push(DeadLetter {
                seq,
                message: record::join(entry, content),
            });
        }
    }
    Ok(letters)
}

/// A message's index entry: where a handle saw it, or where its forward pointer says it moved.
fn find_entry<S: StateStore + ?Sized>(
    store: &S,
    seq: u64,
    indexed_at: u64,
) -> Result<Option<Entry>, StoreError> {
    if let Some(entry) = load_entry(store, indexed_at, seq)? {
        return Ok(Some(entry));
    }
    match load_at(store, &keys::forward(seq))? {
        Some(at) => load_entry(store, at, seq),
        None => Ok(None),
    }
}

/// Whether SQS would refuse a delete with `handle` on a FIFO queue as expired: the handle's
/// receive is over — its message is visible again at `now_ms`, was received since, or waits to
/// move to the dead-letter queue — so its group may already be with another consumer. A message
/// already gone is not: deleting it again succeeds.
pub fn receipt_expired<S: StateStore + ?Sized>(
    store: &S,
    handle: &HandleRef,
    now_ms: u64,
) -> Result<bool, StoreError> {
    Ok(match find_entry(store, handle.seq, handle.indexed_at)? {
        Some(entry) => entry.state.token != handle.token || entry.visible_at_ms <= now_ms,
        // Received since (the receive moved its entry) or dead-lettered.
        None => store.get(&keys::message(handle.seq))?.is_some(),
    })
}

fn load_entry<S: StateStore + ?Sized>(
    store: &S,
    visible_at_ms: u64,
    seq: u64,
) -> Result<Option<Entry>, StoreError> {
    let state = load_record(store, &keys::visibility(visible_at_ms, seq))?;
    Ok(state.map(|state| Entry {
        visible_at_ms,
        state,
    }))
}

/// Indexed messages received at least once (absent in data written before it was counted).
fn received_count<S: StateStore + ?Sized>(store: &S) -> Result<u64, StoreError> {
    Ok(load_at(store, keys::RECEIVED_COUNT)?.unwrap_or(0))
}

/// A visible time stored as a value (group lists, forwards).
fn load_at<S: StateStore + ?Sized>(store: &S, key: &[u8]) -> Result<Option<u64>, StoreError> {
    store.get(key)?.map(|bytes| decode_at(&bytes)).transpose()
}

fn decode_at(bytes: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError(format!("a visible time of {} bytes", bytes.len())))
}

fn load_content<S: StateStore + ?Sized>(
    store: &S,
    seq: u64,
) -> Result<Option<MessageContent>, StoreError> {
    store
        .get(&keys::message(seq))?
        .map(|bytes| record::decode_content(&bytes).map_err(|e| StoreError(format!("decode: {e}"))))
        .transpose()
}

/// The leading fields of a message's contents, without decoding its body.
fn decode_head(bytes: &[u8]) -> Result<ContentHead, StoreError> {
    postcard::take_from_bytes(bytes)
        .map(|(head, _)| head)
        .map_err(|e| StoreError(format!("decode: {e}")))
}

fn load_record<S: StateStore + ?Sized, T: DeserializeOwned>(
    store: &S,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    store.get(key)?.map(|bytes| decode(&bytes)).transpose()
}

fn missing(seq: u64) -> StoreError {
    StoreError(format!("an index names message {seq}, which is not stored"))
}

fn read_meta<S: StateStore + ?Sized>(store: &S) -> Result<Meta, StoreError> {
    match store.get(keys::META)? {
        Some(bytes) => decode(&bytes),
        None => Ok(Meta {
            next_seq: 1,
            message_floor: 1,
            ..Meta::default()
        }),
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    ferry_types::encode_exact(value).map_err(|e| StoreError(format!("encode: {e}")))
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError(format!("decode: {e}")))
}
