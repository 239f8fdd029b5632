//! Key encoding. All integers are big-endian so that byte order is numeric order.
//!
//! | column family | key                                 | value                       |
//! |---------------|-------------------------------------|-----------------------------|
//! | `log`         | group (8) ++ log index (8)          | postcard Raft entry         |
//! | `raft`        | (empty)                             | the data directory's format version |
//! | `raft`        | group (8) ++ kind (1)               | vote, committed, purged, last index, snapshot meta |
//! | `sm`          | group (8)                           | applied state               |
//! | `sm`          | group (8) ++ state-machine key      | state machine data          |
//!
//! The applied state lives in the `sm` family, under the group's empty state-machine key (which no
//! state machine uses), because that family is written without the WAL: only what is in one
//! family's memtables is lost together, so the applied state never claims data that is not there.

use ferry_types::GroupId;

pub const CF_LOG: &str = "log";
pub const CF_RAFT: &str = "raft";
pub const CF_SM: &str = "sm";

/// Where the on-disk format version lives in `CF_RAFT`: the empty key, before every group's range.
pub const FORMAT_KEY: &[u8] = b"";

/// Kinds of per-group Raft metadata in `CF_RAFT`.
pub mod meta {
    pub const VOTE: u8 = b'v';
    pub const COMMITTED: u8 = b'c';
    pub const PURGED: u8 = b'p';
    /// Index of the last entry written to the log (u64 BE), kept by the write that moves it: the
    /// log's end is read here, never found by a scan (see `LogStore::get_log_state`).
    pub const LAST: u8 = b'l';
    /// Meta of the group's current snapshot file.
    pub const SNAPSHOT: u8 = b's';
    /// Present while a received snapshot is being installed: restart re-installs it.
    pub const INSTALLING: u8 = b'i';
}

pub fn log_key(group: GroupId, index: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&group.0.to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

pub fn meta_key(group: GroupId, kind: u8) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[..8].copy_from_slice(&group.0.to_be_bytes());
    key[8] = kind;
    key
}

/// Where the group's applied state is kept in `CF_SM`: the key before all of its state-machine keys.
pub fn applied_key(group: GroupId) -> Vec<u8> {
    group_start(group)
}

/// The first state-machine key of the group's range in `CF_SM`, after its applied state.
pub fn sm_start(group: GroupId) -> Vec<u8> {
    sm_key(group, &[0])
}

pub fn sm_key(group: GroupId, key: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(8 + key.len());
    full.extend_from_slice(&group.0.to_be_bytes());
    full.extend_from_slice(key);
    full
}

/// The first key of the group's range in any column family.
pub fn group_start(group: GroupId) -> Vec<u8> {
    group.0.to_be_bytes().to_vec()
}

/// The first key after the group's range.
pub fn group_end(group: GroupId) -> Vec<u8> {
    match group.0.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        None => vec![0xff; 9],
    }
}
