//! Key layout of a partition (relative to the group prefix that `ferry-storage` adds).
//!
//! ```text
//! [0x00]                          -> Meta { next_seq, message_count, visibility_floor, message_floor }
//! [0x01] seq:u64be                -> MessageContent (postcard: written once by the send), then
//!                                     a fair-queue group if the message has one
//! [0x02] visible_at:u64be seq:u64be -> MessageState (the visibility index: every stored message
//!                                        not dead-lettered has exactly one entry, and its state
//!                                        lives there)
//! [0x03] group_len:u16be group seq:u64be  -> visible_at:u64be (FIFO: a group's messages in order,
//!                                            with where each one's index entry is)
//! [0x04] head_seq:u64be group             -> []   (FIFO: every group with messages that is not
//!                                            blocked, by its oldest)
//! [0x05] dedup key                        -> Dedup (postcard)
//! [0x06] expires_at:u64be dedup key       -> []   (deduplication records by expiry)
//! [0x07] seq:u64be                        -> MessageState (dead-letter outbox: messages to move)
//! [0x08] attempt id                       -> Attempt (postcard)
//! [0x09] expires_at:u64be attempt id      -> []   (receive attempts by expiry)
//! [0x0A] seq:u64be                        -> visible_at:u64be (forward: where the index entry of a
//!                                            message went when its visibility changed)
//! [0x0B]                          -> index key (where retention's search for moved messages
//!                                    goes on)
//! [0x0C] until:u64be group        -> head_seq:u64be (FIFO: blocked groups, which have messages in
//!                                    flight and so nothing to receive before `until`; a group's
//!                                    head key is here or under 0x04, never both)
//! [0x0D] group                    -> until:u64be (where each blocked group is under 0x0C)
//! [0x0E]                          -> until:u64be (no blocked group is due earlier)
//! [0x0F]                          -> count:u64be (indexed messages received at least once: in
//!                                    flight, or visible again after their timeout)
//! ```
//! The visibility index sorts by time first, so "what can be received now" is one range scan from
//! the start of the index up to `now`. A receipt handle carries the visible time its receive gave
//! the message, which finds the entry unless a visibility change moved it (then the forward does).

pub const META: &[u8] = &[0x00];
pub const MESSAGES: u8 = 0x01;
pub const VISIBILITY: u8 = 0x02;
pub const GROUP_MESSAGES: u8 = 0x03;
pub const GROUP_HEADS: u8 = 0x04;
pub const DEDUP: u8 = 0x05;
pub const DEDUP_EXPIRY: u8 = 0x06;
pub const DEAD_LETTERS: u8 = 0x07;
pub const ATTEMPTS: u8 = 0x08;
pub const ATTEMPT_EXPIRY: u8 = 0x09;
pub const FORWARDS: u8 = 0x0A;
pub const RETENTION_CURSOR: &[u8] = &[0x0B];
pub const BLOCKED_GROUPS: u8 = 0x0C;
pub const BLOCKED_UNTIL: u8 = 0x0D;
pub const BLOCKED_FLOOR: &[u8] = &[0x0E];
pub const RECEIVED_COUNT: &[u8] = &[0x0F];

pub fn message(seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(MESSAGES);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub fn forward(seq: u64) -> Vec<u8> {
    tagged(FORWARDS, &[&seq.to_be_bytes()])
}

pub fn visibility(visible_at_ms: u64, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(VISIBILITY);
    key.extend_from_slice(&visible_at_ms.to_be_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The first index key with a visible time after `ms`.
pub fn visibility_after(ms: u64) -> Vec<u8> {
    match ms.checked_add(1) {
        Some(next) => visibility(next, 0),
        None => visibility_end(),
    }
}

/// The first key after the whole index.
pub fn visibility_end() -> Vec<u8> {
    vec![VISIBILITY + 1]
}

/// Splits an index key into `(visible_at_ms, seq)`.
pub fn parse_visibility(key: &[u8]) -> Option<(u64, u64)> {
    if key.len() != 17 || key[0] != VISIBILITY {
        return None;
    }
    let at = u64::from_be_bytes(key[1..9].try_into().ok()?);
    let seq = u64::from_be_bytes(key[9..17].try_into().ok()?);
    Some((at, seq))
}

fn tagged(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
    key.push(tag);
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

/// The prefix of a group's message index entries.
pub fn group_prefix(group: &str) -> Vec<u8> {
    let len = (group.len().min(u16::MAX as usize) as u16).to_be_bytes();
    tagged(GROUP_MESSAGES, &[&len, group.as_bytes()])
}

pub fn group_message(group: &str, seq: u64) -> Vec<u8> {
    let mut key = group_prefix(group);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub fn group_head(head_seq: u64, group: &str) -> Vec<u8> {
    tagged(GROUP_HEADS, &[&head_seq.to_be_bytes(), group.as_bytes()])
}

/// Splits a group-head key into `(head_seq, group)`.
pub fn parse_group_head(key: &[u8]) -> Option<(u64, String)> {
    parse_number_and_group(GROUP_HEADS, key)
}

/// Splits a key of `tag` followed by a `u64be` and a group name.
fn parse_number_and_group(tag: u8, key: &[u8]) -> Option<(u64, String)> {
    if key.len() < 9 || key[0] != tag {
        return None;
    }
    let number = u64::from_be_bytes(key[1..9].try_into().ok()?);
    Some((number, String::from_utf8(key[9..].to_vec()).ok()?))
}

pub fn blocked_group(until: u64, group: &str) -> Vec<u8> {
    tagged(BLOCKED_GROUPS, &[&until.to_be_bytes(), group.as_bytes()])
}

/// Splits a blocked-group key into `(until, group)`.
pub fn parse_blocked_group(key: &[u8]) -> Option<(u64, String)> {
    parse_number_and_group(BLOCKED_GROUPS, key)
}

pub fn blocked_until(group: &str) -> Vec<u8> {
    tagged(BLOCKED_UNTIL, &[group.as_bytes()])
}

/// The sequence number at the end of a group-message or outbox key.
pub fn trailing_seq(key: &[u8]) -> Option<u64> {
    let start = key.len().checked_sub(8)?;
    Some(u64::from_be_bytes(key[start..].try_into().ok()?))
}

pub fn dedup(key: &str) -> Vec<u8> {
    tagged(DEDUP, &[key.as_bytes()])
}

pub fn dedup_expiry(expires_at: u64, key: &str) -> Vec<u8> {
    tagged(DEDUP_EXPIRY, &[&expires_at.to_be_bytes(), key.as_bytes()])
}

pub fn dead_letter(seq: u64) -> Vec<u8> {
    tagged(DEAD_LETTERS, &[&seq.to_be_bytes()])
}

pub fn attempt(id: &str) -> Vec<u8> {
    tagged(ATTEMPTS, &[id.as_bytes()])
}

pub fn attempt_expiry(expires_at: u64, id: &str) -> Vec<u8> {
    tagged(ATTEMPT_EXPIRY, &[&expires_at.to_be_bytes(), id.as_bytes()])
}

/// `[tag] expires_at:u64be rest` → `(expires_at, rest)`.
pub fn parse_expiry(key: &[u8]) -> Option<(u64, &[u8])> {
    let at = u64::from_be_bytes(key.get(1..9)?.try_into().ok()?);
    Some((at, &key[9..]))
}
