//! Inputs and outputs of the broker's operations, independent of any wire format.

use std::collections::BTreeMap;

use ferry_types::{FerryError, MessageAttributes};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    pub name: String,
    pub id: u64,
    pub fifo: bool,
    pub partitions: u32,
}

#[derive(Debug, Clone, Default)]
pub struct SendInput {
    pub body: String,
    pub delay_seconds: Option<u32>,
    pub attributes: MessageAttributes,
    /// The `AWSTraceHeader` system attribute.
    pub trace_header: Option<String>,
    pub message_group_id: Option<String>,
    pub message_deduplication_id: Option<String>,
    /// The caller's identity for the SenderId system attribute; the configured default if absent.
    pub sender_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendOutput {
    pub message_id: String,
    pub md5_of_body: String,
    pub md5_of_attributes: Option<String>,
    pub md5_of_system_attributes: Option<String>,
    pub sequence_number: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ReceiveInput {
    /// 1–10; 0 means the SQS default of 1.
    pub max_messages: u32,
    pub visibility_timeout: Option<u32>,
    pub wait_seconds: Option<u32>,
    /// System attributes to return: names or `All`.
    pub system_attribute_names: Vec<String>,
    /// Message attributes to return: names, `All`, `.*` or `prefix.*`.
    pub message_attribute_names: Vec<String>,
    /// FIFO: a retry with the same id within 5 minutes returns the same messages and handles.
    pub attempt_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub md5_of_body: String,
    pub attributes: BTreeMap<String, String>,
    pub message_attributes: MessageAttributes,
    pub md5_of_message_attributes: Option<String>,
}

/// One entry's outcome in a batch: its id and its result.
pub type BatchOutcome<T> = Vec<(String, Result<T, FerryError>)>;

#[derive(Debug, Clone)]
pub struct ListQueuesOutput {
    pub names: Vec<String>,
    pub next_token: Option<String>,
}

/// A message move task as ListMessageMoveTasks reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveTaskInfo {
    /// Present while the task is RUNNING.
    pub task_handle: Option<String>,
    pub status: String,
    pub source_arn: String,
    pub destination_arn: Option<String>,
    pub max_per_second: Option<u32>,
    pub moved: u64,
    pub to_move: Option<u64>,
    pub failure_reason: Option<String>,
    pub started_at_ms: u64,
}
