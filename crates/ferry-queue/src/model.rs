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
    /// Whether a caller waits for the result on this replica (the leader that proposed the
    /// command). Where none does (followers, replay after a restart) a receive's result lists no
    /// messages, which spares reading their bodies; the state every replica reaches is the same.
    pub reply_wanted: bool,
}

/// What applying a command did: its result, and what a replica's readers need to know of it.
#[derive(Debug)]
pub struct Applied {
    pub result: QueueResult,
    /// The visible times of the visibility index entries the command wrote, if it wrote any.
    /// Commands add index entries only this way, and removals only make the next due time later,
    /// so readers told of every command know when to look again without scanning the index.
    pub indexed: Option<Indexed>,
}

/// The visible times of a command's new index entries all lie in `earliest..=latest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Indexed {
    pub earliest: u64,
    pub latest: u64,
}

impl Indexed {
    /// The span widened to take in `at`.
    pub fn with(span: Option<Self>, at: u64) -> Self {
        span.map_or(
            Self {
                earliest: at,
                latest: at,
            },
            |span| Self {
                earliest: span.earliest.min(at),
                latest: span.latest.max(at),
            },
        )
    }
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
    /// FIFO: the message group, delivered in order, one receiver at a time.
    pub group_id: Option<String>,
    /// FIFO: the MessageDeduplicationId as sent (or the body hash), returned as a system attribute.
    pub deduplication_id: Option<String>,
    /// Sends with the same key within [`DEDUP_WINDOW_MS`] store one message. The broker folds the
    /// deduplication scope into it; dead-letter moves use it to be idempotent.
    pub dedup_key: Option<String>,
    /// The ARN of the queue this message was dead-lettered from.
    pub dead_letter_source: Option<String>,
    /// Standard queues: the MessageGroupId sent (SQS fair queues), kept to be returned; it orders
    /// nothing. Not in this struct's own encoding, which logs written before fair groups existed
    /// use: a send that carries one is a [`QueueCommand::SendWithFairGroups`].
    #[serde(skip)]
    pub fair_group: Option<String>,
}

/// How long a deduplication key or a receive attempt id is remembered (SQS: 5 minutes).
pub const DEDUP_WINDOW_MS: u64 = 300_000;

/// Names a message and the receive that issued a handle for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandleRef {
    pub seq: u64,
    pub token: u64,
    /// The visible time that receive gave the message: where its index entry is, unless a
    /// visibility change moved it since.
    pub indexed_at: u64,
}

/// The newest form of [`QueueCommand`] this build reads, announced to the other nodes so that a
/// leader writes a newer form only once every node reads it: 0 for builds that announced none,
/// 1 adds [`QueueCommand::SendWithFairGroups`].
pub const COMMAND_FORMAT: u32 = 1;
/// The format that brought fair-queue groups.
pub const FAIR_GROUPS_FORMAT: u32 = 1;

/// A command of the partition state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueCommand {
    /// Enqueue messages in order (SendMessage is a batch of one).
    Send {
        messages: Vec<NewMessage>,
    },
    /// Take up to `max` receivable messages and hide them for `visibility_timeout_s`.
    Receive(ReceiveCommand),
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
    /// Forget dead-lettered messages once the dead-letter queue has them.
    AckDeadLetters {
        seqs: Vec<u64>,
    },
    /// A send in which some message carries a fair-queue group. A variant of its own, so that a
    /// send without one is encoded as before and old logs decode unchanged.
    SendWithFairGroups {
        #[serde(with = "with_fair_groups")]
        messages: Vec<NewMessage>,
    },
}

impl QueueCommand {
    /// The command that stores `messages`, in order.
    pub fn send(messages: Vec<NewMessage>) -> Self {
        if messages.iter().any(|message| message.fair_group.is_some()) {
            Self::SendWithFairGroups { messages }
        } else {
            Self::Send { messages }
        }
    }
}

/// Each message followed by its fair-queue group.
mod with_fair_groups {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::NewMessage;

    pub fn serialize<S: Serializer>(messages: &[NewMessage], out: S) -> Result<S::Ok, S::Error> {
        let mut seq = out.serialize_seq(Some(messages.len()))?;
        for message in messages {
            seq.serialize_element(&(message, &message.fair_group))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<Vec<NewMessage>, D::Error> {
        let pairs = Vec::<(NewMessage, Option<String>)>::deserialize(input)?;
        Ok(pairs
            .into_iter()
            .map(|(message, fair_group)| NewMessage {
                fair_group,
                ..message
            })
            .collect())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiveCommand {
    pub max: u32,
    pub visibility_timeout_s: u32,
    /// FIFO delivery: by group, in order, nothing from a group with a message in flight.
    pub fifo: bool,
    /// A message already received this many times is dead-lettered instead of delivered.
    pub max_receive_count: Option<u32>,
    /// FIFO: a retry with the same id within the window returns the same messages and handles.
    pub attempt_id: Option<String>,
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
    DeadLettersAcked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentMessage {
    pub seq: u64,
    pub message_id: String,
    /// A duplicate of a message sent within the deduplication window: `seq` and `message_id` are
    /// the original's, and nothing new was stored.
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedMessage {
    /// What the receipt handle carries. A retried receive attempt returns the handles of its first
    /// try, whose `indexed_at` is no longer the message's visible time.
    pub handle: HandleRef,
    pub message: StoredMessage,
}

/// What a delete did. SQS answers success for the first three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeleteOutcome {
    Deleted,
    /// The handle is from an older receive; the message stays (SQS: "succeeds, but the message might
    /// not be deleted").
    StaleHandle,
    /// Already deleted, expired or purged.
    NotFound,
    /// On a FIFO queue, the receive the handle is from is over: the message is visible again, was
    /// received since or waits to be dead-lettered. SQS refuses such a delete ("The receipt handle
    /// has expired"). Found by the partition leader before it proposes
    /// ([`crate::receipt_expired`]), or after, from what applying the delete found
    /// ([`DeleteOutcome::on_fifo_queue`]); applying a command never answers it.
    Expired,
}

impl DeleteOutcome {
    /// What an applied delete means on a FIFO queue. A handle that was current when the leader
    /// checked it and stale when the delete applied was received again in between (its receive
    /// ended meanwhile): as SQS, the FIFO queue refuses it rather than answer success for a message
    /// another consumer now holds.
    pub fn on_fifo_queue(self) -> Self {
        match self {
            Self::StaleHandle => Self::Expired,
            other => other,
        }
    }
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
    /// The MessageGroupId sent: a FIFO queue's message group, or a standard queue's fair-queue
    /// group. (One field for both keeps this record's encoding, which nodes exchange, unchanged.)
    pub group_id: Option<String>,
    pub deduplication_id: Option<String>,
    pub dead_letter_source: Option<String>,
}

impl StoredMessage {
    /// This message as a send to another queue (a dead-letter move or a redrive): same id, body,
    /// attributes and group, visible at once, deduplicated under `dedup_key`. `from_fifo`: whether
    /// it comes from a FIFO queue, where its group is a message group rather than a fair one.
    pub fn resend(
        self,
        dedup_key: String,
        dead_letter_source: Option<String>,
        from_fifo: bool,
    ) -> NewMessage {
        let (group_id, fair_group) = if from_fifo {
            (self.group_id, None)
        } else {
            (None, self.group_id)
        };
        NewMessage {
            message_id: self.message_id,
            body: self.body,
            attributes: self.attributes,
            trace_header: self.trace_header,
            sender_id: self.sender_id,
            delay_seconds: 0,
            group_id,
            deduplication_id: self.deduplication_id,
            dedup_key: Some(dedup_key),
            dead_letter_source,
            fair_group,
        }
    }
}

/// A message waiting to be moved to its dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub seq: u64,
    pub message: StoredMessage,
}

/// Approximate counters as SQS reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApproximateCounts {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(fair_group: Option<&str>) -> NewMessage {
        NewMessage {
            message_id: "m".into(),
            body: Bytes::from_static(b"hi"),
            attributes: MessageAttributes::default(),
            trace_header: None,
            sender_id: "s".into(),
            delay_seconds: 0,
            group_id: None,
            deduplication_id: None,
            dedup_key: None,
            dead_letter_source: None,
            fair_group: fair_group.map(Into::into),
        }
    }

    #[test]
    fn a_fifo_queue_refuses_what_applying_found_stale_and_nothing_else() {
        use DeleteOutcome::*;
        let on_fifo = [Deleted, StaleHandle, NotFound, Expired].map(DeleteOutcome::on_fifo_queue);
        assert_eq!(on_fifo, [Deleted, Expired, NotFound, Expired]);
    }

    #[test]
    fn a_send_without_fair_groups_is_encoded_as_logs_before_them_hold_it() {
        let command = QueueCommand::send(vec![message(None)]);
        let bytes = postcard::to_stdvec(&command).unwrap();
        // Variant 0, one message: id "m", body "hi", no attributes, no trace header, sender "s",
        // no delay, then four empty options.
        assert_eq!(
            bytes,
            [0, 1, 1, b'm', 2, b'h', b'i', 0, 0, 1, b's', 0, 0, 0, 0, 0]
        );
        assert_eq!(
            postcard::from_bytes::<QueueCommand>(&bytes).unwrap(),
            command
        );
    }

    #[test]
    fn a_send_with_a_fair_group_keeps_it_through_the_log() {
        let command = QueueCommand::send(vec![message(None), message(Some("tenant"))]);
        assert!(matches!(command, QueueCommand::SendWithFairGroups { .. }));
        let bytes = postcard::to_stdvec(&command).unwrap();
        let QueueCommand::SendWithFairGroups { messages } = postcard::from_bytes(&bytes).unwrap()
        else {
            panic!("decoded as another command");
        };
        assert_eq!(messages[0].fair_group, None);
        assert_eq!(messages[1].fair_group.as_deref(), Some("tenant"));
        assert_eq!(messages, [message(None), message(Some("tenant"))]);
    }
}
