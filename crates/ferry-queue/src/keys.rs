//! Key layout of a partition (relative to the group prefix that `ferry-storage` adds).
//!
//! ```text
//! [0x00]                          -> Meta { next_seq, message_count }
//! [0x01] seq:u64be                -> StoredMessage (postcard)
//! [0x02] visible_at:u64be seq:u64be -> [kind]  (index of when each message becomes receivable)
//! ```
//! The visibility index sorts by time first, so "what can be received now" is one range scan from
//! the start of the index up to `now`.

pub const META: &[u8] = &[0x00];
pub const MESSAGES: u8 = 0x01;
pub const VISIBILITY: u8 = 0x02;

/// Index value of a message never received (delayed or visible).
pub const KIND_NEW: u8 = 0;
/// Index value of a message received at least once (in flight, or visible again).
pub const KIND_RECEIVED: u8 = 1;

pub fn message(seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(MESSAGES);
    key.extend_from_slice(&seq.to_be_bytes());
    key
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
        None => vec![VISIBILITY + 1],
    }
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
