//! FIFO send rules: message groups, deduplication ids and keys, and which partition owns a group.

use ferry_catalog::QueueRecord;
use ferry_types::{ErrorCode, FerryError};
use sha2::{Digest, Sha256};

use crate::SendInput;

/// Longest MessageGroupId, MessageDeduplicationId or ReceiveRequestAttemptId.
const MAX_ID_LEN: usize = 128;

/// What a send's group and deduplication parameters add to a message.
#[derive(Debug, Default)]
pub struct FifoFields {
    pub group_id: Option<String>,
    /// Standard queues: the MessageGroupId of SQS fair queues, kept to be returned on receive.
    pub fair_group: Option<String>,
    pub deduplication_id: Option<String>,
    /// The deduplication id within its scope: the whole queue, or the message group.
    pub dedup_key: Option<String>,
}

fn flag(queue: &QueueRecord, name: &str) -> Option<String> {
    queue.attributes.get(name).cloned()
}

/// Whether the queue has several partitions with a message group in exactly one of them (SQS
/// high-throughput FIFO: DeduplicationScope=messageGroup and FifoThroughputLimit=perMessageGroupId).
pub fn is_high_throughput(attributes: &std::collections::BTreeMap<String, String>) -> bool {
    attributes.get("DeduplicationScope").map(String::as_str) == Some("messageGroup")
        && attributes.get("FifoThroughputLimit").map(String::as_str) == Some("perMessageGroupId")
}

const MISSING_GROUP: &str = "The request must contain the parameter MessageGroupId.";
const MISSING_DEDUPLICATION: &str = "The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly";

/// Checks what SQS refuses for a whole FIFO batch rather than for the entry (recorded against AWS by
/// LocalStack): an entry without a group id, or without a deduplication id the queue cannot derive.
/// Both fail the request with InvalidParameterValue (a single send without a group id fails with
/// MissingParameter instead).
pub fn check_batch_entry(queue: &QueueRecord, input: &SendInput) -> Result<(), FerryError> {
    if input.message_group_id.is_none() {
        return Err(FerryError::invalid(MISSING_GROUP));
    }
    if input.message_deduplication_id.is_none() && !content_based(queue) {
        return Err(FerryError::invalid(MISSING_DEDUPLICATION));
    }
    Ok(())
}

fn content_based(queue: &QueueRecord) -> bool {
    flag(queue, "ContentBasedDeduplication").as_deref() == Some("true")
}

/// Checks a send against the queue type and works out its group and deduplication key.
pub fn resolve(queue: &QueueRecord, input: &SendInput) -> Result<FifoFields, FerryError> {
    if !queue.fifo {
        if input.message_deduplication_id.is_some() {
            return Err(not_for_queue_type("MessageDeduplicationId", None));
        }
        if let Some(group) = &input.message_group_id {
            // Accepted on standard queues (SQS fair queues); it does not order anything here.
            check_id("MessageGroupId", group)?;
        }
        return Ok(FifoFields {
            fair_group: input.message_group_id.clone(),
            ..FifoFields::default()
        });
    }
    // Only the queue's delay applies to FIFO messages; SQS accepts an explicit 0 all the same.
    if let Some(delay) = input.delay_seconds.filter(|delay| *delay != 0) {
        return Err(not_for_queue_type("DelaySeconds", Some(&delay.to_string())));
    }
    let group = input
        .message_group_id
        .clone()
        .ok_or_else(|| FerryError::new(ErrorCode::MissingParameter, MISSING_GROUP))?;
    check_id("MessageGroupId", &group)?;
    let deduplication_id = match &input.message_deduplication_id {
        Some(id) => {
            check_id("MessageDeduplicationId", id)?;
            id.clone()
        }
        None if content_based(queue) => hex::encode(Sha256::digest(input.body.as_bytes())),
        None => return Err(FerryError::invalid(MISSING_DEDUPLICATION)),
    };
    // A queue created for high throughput keeps its groups in several partitions, each of which
    // deduplicates only what it holds, so it keeps group scope even if DeduplicationScope is set to
    // `queue` later (changing the scope after creation does not change deduplication on SQS either,
    // as recorded against AWS by LocalStack).
    let group_scope = queue.partitions.len() > 1
        || flag(queue, "DeduplicationScope").as_deref() == Some("messageGroup");
    let dedup_key = if group_scope {
        format!("g:{}:{group}:{deduplication_id}", group.len())
    } else {
        format!("q:{deduplication_id}")
    };
    Ok(FifoFields {
        group_id: Some(group),
        fair_group: None,
        deduplication_id: Some(deduplication_id),
        dedup_key: Some(dedup_key),
    })
}

/// Checks a ReceiveRequestAttemptId.
pub fn check_attempt_id(id: &str) -> Result<(), FerryError> {
    check_id("ReceiveRequestAttemptId", id)
}

fn check_id(name: &str, id: &str) -> Result<(), FerryError> {
    let valid =
        !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic());
    if valid {
        Ok(())
    } else {
        Err(FerryError::invalid(format!(
            "Value {id} for parameter {name} is invalid. Reason: It must be 1 to 128 alphanumeric or punctuation characters."
        )))
    }
}

/// SQS's refusal of a parameter the queue type does not take, naming the value when it has one.
fn not_for_queue_type(parameter: &str, value: Option<&str>) -> FerryError {
    let value = value.map(|value| format!(" {value}")).unwrap_or_default();
    FerryError::invalid(format!(
        "Value{value} for parameter {parameter} is invalid. Reason: The request include parameter that is not valid for this queue type."
    ))
}

/// The partition that owns a message group: a stable hash, so one leader orders each group.
pub fn partition_of(group: &str, partitions: usize) -> usize {
    let digest = Sha256::digest(group.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % partitions.max(1) as u64) as usize
}

/// The SequenceNumber SQS shows for a FIFO message: a decimal string of at least 20 digits that grows
/// with every message of the partition (and so of every group in it).
pub fn sequence_number(seq: u64) -> String {
    format!("{seq:020}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_spread_over_partitions_and_stay_put() {
        let mut counts = [0usize; 4];
        for i in 0..4_000 {
            let group = format!("group-{i}");
            let partition = partition_of(&group, 4);
            assert_eq!(partition, partition_of(&group, 4));
            counts[partition] += 1;
        }
        assert!(
            counts.iter().all(|count| (800..1_200).contains(count)),
            "{counts:?}"
        );
    }

    #[test]
    fn sequence_numbers_have_twenty_digits_and_sort_numerically() {
        assert_eq!(sequence_number(7), "00000000000000000007");
        assert!(sequence_number(10) > sequence_number(9));
    }

    fn fifo_send(delay_seconds: Option<u32>) -> SendInput {
        SendInput {
            body: "body".into(),
            delay_seconds,
            message_group_id: Some("g".into()),
            message_deduplication_id: Some("d".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_fifo_send_may_name_delay_zero_only() {
        let queue = crate::test_queue(true, &[("FifoQueue", "true")], 1);
        assert!(resolve(&queue, &fifo_send(None)).is_ok());
        assert!(resolve(&queue, &fifo_send(Some(0))).is_ok());
        let err = resolve(&queue, &fifo_send(Some(5))).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidParameterValue);
        assert!(err
            .message
            .starts_with("Value 5 for parameter DelaySeconds"));
    }

    #[test]
    fn a_partitioned_queue_deduplicates_per_group_whatever_its_scope_says() {
        let key = |attributes: &[(&str, &str)], partitions| {
            let queue = crate::test_queue(true, attributes, partitions);
            resolve(&queue, &fifo_send(None))
                .unwrap()
                .dedup_key
                .unwrap()
        };
        assert_eq!(key(&[], 1), "q:d");
        assert_eq!(key(&[("DeduplicationScope", "messageGroup")], 1), "g:1:g:d");
        assert_eq!(key(&[("DeduplicationScope", "queue")], 4), "g:1:g:d");
    }
}
