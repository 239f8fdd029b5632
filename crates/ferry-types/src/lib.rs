//! Domain types shared by every Ferry crate: identifiers, the closed [`ErrorCode`] set, queue names,
//! receipt handles, SQS digests, and the exact-size postcard encoding the storage and Raft layers share.
//!
//! Rule: this crate does no IO and depends on no other Ferry crate.

mod digest;
mod encoding;
mod error;
mod ids;
mod queue_name;
mod receipt;

pub use digest::{md5_hex, md5_of_message_attributes};
pub use encoding::encode_exact;
pub use error::{ErrorCode, FerryError};
pub use ids::{GroupId, NodeId, CATALOG_GROUP};
pub use queue_name::QueueName;
pub use receipt::{ReceiptHandle, ReceiptKey};

/// A user-defined message attribute value as SQS defines it: a data type (`String`, `Number`,
/// `Binary`, optionally with a `.label`) and a string or binary value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttributeValue {
    pub data_type: String,
    pub value: AttributeData,
}

/// How an attribute's value travels: Strings and Numbers as text, Binary as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AttributeData {
    String(String),
    Binary(bytes::Bytes),
}

/// Message attributes sorted by name (the order SQS digests them in).
pub type MessageAttributes = std::collections::BTreeMap<String, AttributeValue>;
