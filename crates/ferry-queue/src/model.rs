//! Commands, results and stored records of the queue state machine.

use bytes::Bytes;
use ferry_types::MessageAttributes;
use serde::{Deserialize, Serialize};

/// What the leader stamps on every command, and where the command sits in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyContext {
    /// The leader's clock in milliseconds since the epoch, never lower than the previous command's.
    pub now_ms: u64,
    /// The Raft log index of the command: unique per command, so it also serves as receipt token.
    pub log_index: u64,
}

/// A message as the leader prepared it for sending: ids and delays already resolved and validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMessage {
    pub message_id: String,
    pub body: Bytes,
    pub attributes: MessageAttributes,
    /// The `AWSTraceHeader` system attribute, if sent.
    pub trace_header: Option<String>,
    pub sender_id: String,
    /// Per-message delay, or the queue's default delay, already resolved.
    pub delay_seconds: u32,
}

/// Names a message and the receive that issued a handle for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandleRef {
    pub seq: u64,
    pub token: u64,
}

/// A command of the partition state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueCommand {
    /// Enqueue messages in order (SendMessage is a batch of one).
    Send {
        messages: Vec<NewMessage>,
    },
    /// Take up to `max` visible messages in (visible-at, seq) order and hide them for
    /// `visibility_timeout_s`.
    Receive {
        max: u32,
        visibility_timeout_s: u32,
    },
    Delete {
        handles: Vec<HandleRef>,
    },
    ChangeVisibility {
        changes: Vec<VisibilityChange>,
    },
    /// Remove every message, in flight or not.
    Purge,
    /// Remove up to `max` messages sent at least `retention_s` seconds ago.
    ExpireRetention {
        retention_s: u32,
        max: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisibilityChange {
    pub handle: HandleRef,
    pub visibility_timeout_s: u32,
}

/// The result of applying one command; the variant matches the command's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueResult {
    Sent(Vec<SentMessage>),
    Received(Vec<ReceivedMessage>),
    Deleted(Vec<DeleteOutcome>),
    VisibilityChanged(Vec<Result<(), VisibilityError>>),
    Purged { removed: u64 },
    Expired { removed: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentMessage {
    pub seq: u64,
    pub message_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedMessage {
    pub seq: u64,
    /// The token of this receive: with `seq`, what the receipt handle carries.
    pub token: u64,
    pub message: StoredMessage,
}

/// What a delete did. SQS answers success for all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeleteOutcome {
    Deleted,
    /// The handle is from an older receive; the message stays (SQS: "succeeds, but the message might
    /// not be deleted").
    StaleHandle,
    /// Already deleted, expired or purged.
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VisibilityError {
    /// Deleted, expired or purged.
    MessageNotFound,
    /// Not in flight under this handle: its visibility expired, or a later receive took it.
    NotInflight,
    /// The new timeout would keep it hidden longer than 12 h after the receive that issued the handle.
    BeyondMaximum,
}

/// Maximum total time a message stays invisible after one receive (SQS: 43,200 s).
pub const MAX_VISIBILITY_TOTAL_MS: u64 = 43_200_000;

/// A message record as stored under its sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub message_id: String,
    pub body: Bytes,
    pub attributes: MessageAttributes,
    pub trace_header: Option<String>,
    pub sender_id: String,
    pub sent_at_ms: u64,
    /// When the message becomes (or became) receivable: after its delay, or when the current
    /// visibility timeout ends.
    pub visible_at_ms: u64,
    pub receive_count: u32,
    pub first_receive_at_ms: Option<u64>,
    /// Time of the latest receive (the 12 h visibility cap counts from it).
    pub last_receive_at_ms: Option<u64>,
    /// Token of the latest receive; 0 if never received.
    pub token: u64,
}

/// Approximate counters as SQS reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApproximateCounts {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}
