//! How a message is stored: its contents, written once at the send under its sequence number, and
//! its state, which lives only in the message's visibility index entry. A receive moves that entry
//! (one deletion, one write) and a delete removes it and the contents; no other per-message key is
//! written on the way, so a message drained costs four writes into the memtable, not six.

use bytes::Bytes;
use ferry_types::MessageAttributes;
use serde::{Deserialize, Serialize};

use crate::model::{NewMessage, StoredMessage};

/// The mutable part of a message: the value of its visibility index entry, whose key holds the time
/// it becomes receivable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MessageState {
    pub sent_at_ms: u64,
    pub receive_count: u32,
    pub first_receive_at_ms: Option<u64>,
    pub last_receive_at_ms: Option<u64>,
    /// Token of the latest receive; 0 if never received.
    pub token: u64,
    /// FIFO: needed to unlink the message from its group on removal.
    pub group_id: Option<String>,
    /// The entry is not where the latest receive put it (its visibility changed since): a forward
    /// key says where it went, for the handles that receive issued.
    pub forwarded: bool,
}

/// The immutable part of a message, under its sequence number. The leading fields are what retention
/// and the message floor need ([`ContentHead`]); a receive reads the rest only to answer its caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MessageContent {
    pub sent_at_ms: u64,
    /// Where the send indexed the message: its index entry stays there until a receive moves it.
    pub first_visible_at_ms: u64,
    pub group_id: Option<String>,
    pub message_id: String,
    pub body: Bytes,
    pub attributes: MessageAttributes,
    pub trace_header: Option<String>,
    pub sender_id: String,
    pub deduplication_id: Option<String>,
    pub dead_letter_source: Option<String>,
    /// Standard queues: the fair-queue group, stored after the fields above ([`encode_content`]).
    #[serde(skip)]
    pub fair_group: Option<String>,
}

/// A message's contents as stored: the fields of [`MessageContent`], then its fair-queue group if
/// it has one. Contents written before fair groups existed end after the first part, and nodes
/// that predate them read the first part and ignore the rest.
pub(crate) fn encode_content(content: &MessageContent) -> Result<Vec<u8>, postcard::Error> {
    match &content.fair_group {
        None => ferry_types::encode_exact(content),
        // postcard writes a tuple as its fields one after the other.
        Some(group) => ferry_types::encode_exact(&(content, group)),
    }
}

/// Reads what [`encode_content`] wrote.
pub(crate) fn decode_content(bytes: &[u8]) -> Result<MessageContent, postcard::Error> {
    let (content, rest) = postcard::take_from_bytes::<MessageContent>(bytes)?;
    let fair_group = match rest {
        [] => None,
        rest => Some(postcard::from_bytes::<String>(rest)?),
    };
    Ok(MessageContent {
        fair_group,
        ..content
    })
}

/// The first fields of [`MessageContent`], decoded without the body (postcard writes fields in
/// order, so a prefix of the struct decodes from a prefix of the bytes).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct ContentHead {
    pub sent_at_ms: u64,
    pub first_visible_at_ms: u64,
    pub group_id: Option<String>,
}

/// A message's state with where its index entry is: the time it becomes receivable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub visible_at_ms: u64,
    pub state: MessageState,
}

/// Splits a message as sent into its first index entry (sent at `now_ms`) and its contents.
pub(crate) fn split(message: NewMessage, now_ms: u64) -> (Entry, MessageContent) {
    let visible_at_ms = now_ms + u64::from(message.delay_seconds) * 1000;
    let entry = Entry {
        visible_at_ms,
        state: MessageState {
            sent_at_ms: now_ms,
            receive_count: 0,
            first_receive_at_ms: None,
            last_receive_at_ms: None,
            token: 0,
            group_id: message.group_id.clone(),
            forwarded: false,
        },
    };
    let content = MessageContent {
        sent_at_ms: now_ms,
        first_visible_at_ms: visible_at_ms,
        group_id: message.group_id,
        message_id: message.message_id,
        body: message.body,
        attributes: message.attributes,
        trace_header: message.trace_header,
        sender_id: message.sender_id,
        deduplication_id: message.deduplication_id,
        dead_letter_source: message.dead_letter_source,
        fair_group: message.fair_group,
    };
    (entry, content)
}

/// The whole message, as results carry it.
pub(crate) fn join(entry: Entry, content: MessageContent) -> StoredMessage {
    let Entry {
        visible_at_ms,
        state,
    } = entry;
    StoredMessage {
        message_id: content.message_id,
        body: content.body,
        attributes: content.attributes,
        trace_header: content.trace_header,
        sender_id: content.sender_id,
        sent_at_ms: state.sent_at_ms,
        visible_at_ms,
        receive_count: state.receive_count,
        first_receive_at_ms: state.first_receive_at_ms,
        last_receive_at_ms: state.last_receive_at_ms,
        token: state.token,
        group_id: state.group_id.or(content.fair_group),
        deduplication_id: content.deduplication_id,
        dead_letter_source: content.dead_letter_source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(group_id: Option<&str>, fair_group: Option<&str>) -> NewMessage {
        NewMessage {
            message_id: "id".into(),
            body: Bytes::from_static(b"body"),
            attributes: MessageAttributes::default(),
            trace_header: None,
            sender_id: "me".into(),
            delay_seconds: 3,
            group_id: group_id.map(Into::into),
            deduplication_id: None,
            dedup_key: None,
            dead_letter_source: None,
            fair_group: fair_group.map(Into::into),
        }
    }

    #[test]
    fn the_head_decodes_from_the_whole_contents() {
        let (_, content) = split(message(Some("g"), None), 1_000);
        let bytes = encode_content(&content).unwrap();
        let (head, _) = postcard::take_from_bytes::<ContentHead>(&bytes).unwrap();
        assert_eq!(
            head,
            ContentHead {
                sent_at_ms: 1_000,
                first_visible_at_ms: 4_000,
                group_id: Some("g".into()),
            }
        );
    }

    #[test]
    fn a_fair_group_follows_the_contents_and_older_contents_have_none() {
        let (_, content) = split(message(None, Some("tenant-7")), 1_000);
        let bytes = encode_content(&content).unwrap();
        assert_eq!(decode_content(&bytes).unwrap(), content);
        // A node that predates fair groups reads the same contents, without the group.
        let old_reader: MessageContent = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(
            old_reader,
            MessageContent {
                fair_group: None,
                ..content.clone()
            }
        );
        let (head, _) = postcard::take_from_bytes::<ContentHead>(&bytes).unwrap();
        assert_eq!(head.sent_at_ms, 1_000);

        // Contents written before fair groups existed: the struct's own encoding, nothing after.
        let (_, plain) = split(message(None, None), 1_000);
        let old_bytes = postcard::to_stdvec(&plain).unwrap();
        assert_eq!(encode_content(&plain).unwrap(), old_bytes);
        assert_eq!(decode_content(&old_bytes).unwrap().fair_group, None);
        // A group that does not decode is an error, not a silently wrong message.
        let mut torn = bytes.clone();
        torn.truncate(bytes.len() - 2);
        assert!(decode_content(&torn).is_err());
    }
}
