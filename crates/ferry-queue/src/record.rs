//! How a message is stored: the state that receives rewrite, apart from the contents a send wrote
//! once. A receive, a visibility change or a delete then reads and writes a few dozen bytes instead
//! of the whole body, on every replica.

use bytes::Bytes;
use ferry_types::MessageAttributes;
use serde::{Deserialize, Serialize};

use crate::model::{NewMessage, StoredMessage};

/// The mutable part of a message, under its sequence number in the message key range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MessageState {
    pub sent_at_ms: u64,
    /// When the message becomes (or became) receivable; `DEAD_LETTERED` while in the outbox.
    pub visible_at_ms: u64,
    pub receive_count: u32,
    pub first_receive_at_ms: Option<u64>,
    pub last_receive_at_ms: Option<u64>,
    /// Token of the latest receive; 0 if never received.
    pub token: u64,
    /// FIFO: needed to unlink the message from its group on removal.
    pub group_id: Option<String>,
}

/// The immutable part of a message, read only to answer a receive or to move a dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MessageContent {
    pub message_id: String,
    pub body: Bytes,
    pub attributes: MessageAttributes,
    pub trace_header: Option<String>,
    pub sender_id: String,
    pub deduplication_id: Option<String>,
    pub dead_letter_source: Option<String>,
}

/// Splits a message as sent into its first state (sent at `now_ms`) and its contents.
pub(crate) fn split(message: NewMessage, now_ms: u64) -> (MessageState, MessageContent) {
    let state = MessageState {
        sent_at_ms: now_ms,
        visible_at_ms: now_ms + u64::from(message.delay_seconds) * 1000,
        receive_count: 0,
        first_receive_at_ms: None,
        last_receive_at_ms: None,
        token: 0,
        group_id: message.group_id,
    };
    let content = MessageContent {
        message_id: message.message_id,
        body: message.body,
        attributes: message.attributes,
        trace_header: message.trace_header,
        sender_id: message.sender_id,
        deduplication_id: message.deduplication_id,
        dead_letter_source: message.dead_letter_source,
    };
    (state, content)
}

/// The whole message, as results carry it.
pub(crate) fn join(state: MessageState, content: MessageContent) -> StoredMessage {
    StoredMessage {
        message_id: content.message_id,
        body: content.body,
        attributes: content.attributes,
        trace_header: content.trace_header,
        sender_id: content.sender_id,
        sent_at_ms: state.sent_at_ms,
        visible_at_ms: state.visible_at_ms,
        receive_count: state.receive_count,
        first_receive_at_ms: state.first_receive_at_ms,
        last_receive_at_ms: state.last_receive_at_ms,
        token: state.token,
        group_id: state.group_id,
        deduplication_id: content.deduplication_id,
        dead_letter_source: content.dead_letter_source,
    }
}
