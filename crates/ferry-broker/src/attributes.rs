//! Queue attributes exactly as SQS defines them: names, ranges, defaults, and the computed ones.

use std::collections::BTreeMap;

use ferry_catalog::QueueRecord;
use ferry_queue::ApproximateCounts;
use ferry_types::{ErrorCode, FerryError};

pub const DELAY_SECONDS: &str = "DelaySeconds";
pub const MAXIMUM_MESSAGE_SIZE: &str = "MaximumMessageSize";
pub const MESSAGE_RETENTION_PERIOD: &str = "MessageRetentionPeriod";
pub const RECEIVE_WAIT_TIME: &str = "ReceiveMessageWaitTimeSeconds";
pub const VISIBILITY_TIMEOUT: &str = "VisibilityTimeout";
pub const FIFO_QUEUE: &str = "FifoQueue";

/// The largest message, and the largest batch, SQS accepts.
pub const MAX_MESSAGE_BYTES: usize = 1_048_576;

/// How a settable attribute's value is checked, and its default (None: absent unless set).
enum Rule {
    Range {
        min: u64,
        max: u64,
        default: u64,
    },
    Boolean {
        default: Option<bool>,
    },
    OneOf {
        values: &'static [&'static str],
        default: Option<&'static str>,
    },
    /// Free text up to a length (policies, KMS key ids), stored as given.
    Text {
        max_len: usize,
    },
}

/// Every settable attribute, in the order GetQueueAttributes lists them.
const SETTABLE: &[(&str, Rule)] = &[
    (
        DELAY_SECONDS,
        Rule::Range {
            min: 0,
            max: 900,
            default: 0,
        },
    ),
    (
        MAXIMUM_MESSAGE_SIZE,
        Rule::Range {
            min: 1_024,
            max: MAX_MESSAGE_BYTES as u64,
            default: MAX_MESSAGE_BYTES as u64,
        },
    ),
    (
        MESSAGE_RETENTION_PERIOD,
        Rule::Range {
            min: 60,
            max: 1_209_600,
            default: 345_600,
        },
    ),
    (
        RECEIVE_WAIT_TIME,
        Rule::Range {
            min: 0,
            max: 20,
            default: 0,
        },
    ),
    (
        VISIBILITY_TIMEOUT,
        Rule::Range {
            min: 0,
            max: 43_200,
            default: 30,
        },
    ),
    ("Policy", Rule::Text { max_len: 8_192 }),
    ("RedrivePolicy", Rule::Text { max_len: 8_192 }),
    ("RedriveAllowPolicy", Rule::Text { max_len: 8_192 }),
    ("KmsMasterKeyId", Rule::Text { max_len: 2_048 }),
    (
        "KmsDataKeyReusePeriodSeconds",
        Rule::Range {
            min: 60,
            max: 86_400,
            default: 300,
        },
    ),
    (
        "SqsManagedSseEnabled",
        Rule::Boolean {
            default: Some(false),
        },
    ),
    (FIFO_QUEUE, Rule::Boolean { default: None }),
    ("ContentBasedDeduplication", Rule::Boolean { default: None }),
    (
        "DeduplicationScope",
        Rule::OneOf {
            values: &["messageGroup", "queue"],
            default: None,
        },
    ),
    (
        "FifoThroughputLimit",
        Rule::OneOf {
            values: &["perQueue", "perMessageGroupId"],
            default: None,
        },
    ),
];

/// Attributes that exist only on FIFO queues.
const FIFO_ONLY: &[&str] = &[
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
];
const FIFO_DEFAULTS: &[(&str, &str)] = &[
    ("ContentBasedDeduplication", "false"),
    ("DeduplicationScope", "queue"),
    ("FifoThroughputLimit", "perQueue"),
];

/// Read-only attributes, computed on read.
const COMPUTED: &[&str] = &[
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "QueueArn",
];

fn invalid_value(name: &str, reason: &str) -> FerryError {
    FerryError::new(
        ErrorCode::InvalidAttributeValue,
        format!("Invalid value for the parameter {name}. Reason: {reason}"),
    )
}

fn unknown(name: &str) -> FerryError {
    FerryError::new(
        ErrorCode::InvalidAttributeName,
        format!("Unknown Attribute {name}."),
    )
}

/// A new queue's FifoQueue attribute must match its name (`.fifo` or not), checked before any other
/// attribute: SQS answers InvalidParameterValue either way (recorded against AWS by LocalStack).
fn check_queue_type(attributes: &BTreeMap<String, String>, fifo: bool) -> Result<(), FerryError> {
    let asks_fifo = attributes
        .get(FIFO_QUEUE)
        .is_some_and(|value| value.eq_ignore_ascii_case("true"));
    match (asks_fifo, fifo) {
        (true, false) => Err(FerryError::invalid("The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, must end with .fifo suffix and be 1 to 80 in length.")),
        (false, true) => Err(FerryError::invalid("Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length")),
        _ => Ok(()),
    }
}

/// Checks attributes given to CreateQueue (`creating`) or SetQueueAttributes, for a queue of the
/// given type. Returns them normalised as they will be stored.
pub fn validate(
    attributes: &BTreeMap<String, String>,
    fifo: bool,
    creating: bool,
) -> Result<BTreeMap<String, String>, FerryError> {
    if creating {
        check_queue_type(attributes, fifo)?;
    }
    let mut normalised = BTreeMap::new();
    for (name, value) in attributes {
        let Some((_, rule)) = SETTABLE.iter().find(|(known, _)| known == name) else {
            return Err(unknown(name));
        };
        if name == FIFO_QUEUE && !creating {
            // As SQS: unknown on a standard queue; on a FIFO queue, repeating its type changes
            // nothing (tools write back every attribute they read) and changing it is refused.
            if !fifo {
                return Err(unknown(name));
            }
            if value.eq_ignore_ascii_case("true") {
                continue;
            }
            return Err(invalid_value(
                name,
                "Modifying queue type is not supported.",
            ));
        }
        if FIFO_ONLY.contains(&name.as_str()) && !fifo {
            return Err(unknown(name));
        }
        let value = match rule {
            Rule::Range { min, max, .. } => match value.trim().parse::<u64>() {
                Ok(n) if (*min..=*max).contains(&n) => n.to_string(),
                _ => {
                    return Err(invalid_value(
                        name,
                        &format!("Must be between {min} and {max}, if provided."),
                    ))
                }
            },
            Rule::Boolean { .. } => match value.to_ascii_lowercase().as_str() {
                "true" | "false" => value.to_ascii_lowercase(),
                _ => return Err(invalid_value(name, "Must be true or false.")),
            },
            Rule::OneOf { values, .. } => match values.iter().find(|v| **v == value.as_str()) {
                Some(v) => (*v).to_owned(),
                None => {
                    return Err(invalid_value(
                        name,
                        &format!("Must be one of {}.", values.join(", ")),
                    ))
                }
            },
            Rule::Text { max_len } if value.len() <= *max_len => value.clone(),
            Rule::Text { max_len } => {
                return Err(invalid_value(
                    name,
                    &format!("Must be at most {max_len} bytes."),
                ))
            }
        };
        normalised.insert(name.clone(), value);
    }
    // Standard queues do not store FifoQueue=false: SQS treats it as absent.
    if creating && !fifo {
        normalised.remove(FIFO_QUEUE);
    }
    if normalised.get("FifoThroughputLimit").map(String::as_str) == Some("perMessageGroupId")
        && normalised.get("DeduplicationScope").map(String::as_str) == Some("queue")
    {
        return Err(invalid_value(
            "FifoThroughputLimit",
            "perMessageGroupId is allowed only with DeduplicationScope messageGroup.",
        ));
    }
    Ok(normalised)
}

/// The value of a numeric attribute: as set, or its default.
pub fn number(queue: &QueueRecord, name: &str) -> u64 {
    if let Some(value) = queue.attributes.get(name).and_then(|v| v.parse().ok()) {
        return value;
    }
    match SETTABLE.iter().find(|(known, _)| *known == name) {
        Some((_, Rule::Range { default, .. })) => *default,
        _ => 0,
    }
}

/// The first of `requested` (as [`validate`] normalised them) whose value differs from the
/// queue's, defaults counted: a CreateQueue of an existing queue succeeds only without one.
pub fn first_difference<'a>(
    queue: &QueueRecord,
    requested: &'a BTreeMap<String, String>,
) -> Option<&'a str> {
    let current = settable(queue);
    requested
        .iter()
        .find(|(name, value)| current.get(*name) != Some(value))
        .map(|(name, _)| name.as_str())
}

/// The settable attributes of a queue: as set, or their defaults.
fn settable(queue: &QueueRecord) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, rule) in SETTABLE {
        let default = match rule {
            Rule::Range { default, .. } => Some(default.to_string()),
            Rule::Boolean { default } => default.map(|b| b.to_string()),
            Rule::OneOf { default, .. } => default.map(str::to_owned),
            Rule::Text { .. } => None,
        };
        if let Some(value) = queue.attributes.get(*name).cloned().or(default) {
            out.insert((*name).to_owned(), value);
        }
    }
    if queue.fifo {
        out.insert(FIFO_QUEUE.into(), "true".into());
        for (name, default) in FIFO_DEFAULTS {
            out.entry((*name).to_owned())
                .or_insert_with(|| (*default).to_owned());
        }
    }
    out
}

/// Every attribute of a queue with defaults filled in; `counts` supplies the computed counters.
pub fn all(queue: &QueueRecord, counts: ApproximateCounts, arn: &str) -> BTreeMap<String, String> {
    let mut out = settable(queue);
    out.insert(
        "ApproximateNumberOfMessages".into(),
        counts.visible.to_string(),
    );
    out.insert(
        "ApproximateNumberOfMessagesNotVisible".into(),
        counts.in_flight.to_string(),
    );
    out.insert(
        "ApproximateNumberOfMessagesDelayed".into(),
        counts.delayed.to_string(),
    );
    out.insert(
        "CreatedTimestamp".into(),
        (queue.created_at_ms / 1000).to_string(),
    );
    out.insert(
        "LastModifiedTimestamp".into(),
        (queue.modified_at_ms / 1000).to_string(),
    );
    out.insert("QueueArn".into(), arn.to_owned());
    out
}

/// Checks the names a GetQueueAttributes call asks for; `All` selects everything.
pub fn check_names(names: &[String]) -> Result<(), FerryError> {
    for name in names {
        let known = name == "All"
            || COMPUTED.contains(&name.as_str())
            || SETTABLE.iter().any(|(known, _)| known == name);
        if !known {
            return Err(unknown(name));
        }
    }
    Ok(())
}

/// Whether a GetQueueAttributes call needs the message counters (they cost a read of a partition).
pub fn wants_counts(names: &[String]) -> bool {
    names
        .iter()
        .any(|name| name == "All" || name.starts_with("ApproximateNumberOfMessages"))
}

/// Keeps the attributes `names` asks for.
pub fn select(all: BTreeMap<String, String>, names: &[String]) -> BTreeMap<String, String> {
    if names.iter().any(|name| name == "All") {
        return all;
    }
    all.into_iter()
        .filter(|(name, _)| names.contains(name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ranges_and_names_are_checked() {
        assert!(validate(&attrs(&[("VisibilityTimeout", "43200")]), false, true).is_ok());
        let err = validate(&attrs(&[("VisibilityTimeout", "43201")]), false, true).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidAttributeValue);
        let err = validate(&attrs(&[("Visibility", "1")]), false, true).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidAttributeName);
        let err = validate(&attrs(&[("MaximumMessageSize", "1023")]), false, false).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidAttributeValue);
    }

    #[test]
    fn fifo_attributes_follow_the_queue_type() {
        // The name and FifoQueue disagree, either way.
        let err = validate(&attrs(&[("FifoQueue", "true")]), false, true).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidParameterValue);
        let err = validate(&attrs(&[]), true, true).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidParameterValue);
        let err = validate(
            &attrs(&[("ContentBasedDeduplication", "true"), ("FifoQueue", "true")]),
            false,
            true,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidParameterValue);
        assert!(validate(
            &attrs(&[("FifoQueue", "true"), ("ContentBasedDeduplication", "true")]),
            true,
            true
        )
        .is_ok());
        let err = validate(
            &attrs(&[("ContentBasedDeduplication", "true")]),
            false,
            true,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidAttributeName);
        // SetQueueAttributes: unknown on a standard queue, a no-op repeated on a FIFO queue.
        let err = validate(&attrs(&[("FifoQueue", "true")]), false, false).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidAttributeName);
        assert_eq!(
            validate(&attrs(&[("FifoQueue", "true")]), true, false).unwrap(),
            BTreeMap::new()
        );
        let err = validate(&attrs(&[("FifoQueue", "false")]), true, false).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidAttributeValue);
        assert_eq!(
            validate(&attrs(&[("FifoQueue", "false")]), false, true).unwrap(),
            BTreeMap::new()
        );
    }

    #[test]
    fn an_existing_queue_matches_the_attributes_a_create_names_defaults_counted() {
        let queue = crate::test_queue(false, &[("VisibilityTimeout", "40")], 1);
        let differs = |pairs: &[(&str, &str)]| {
            let requested = validate(&attrs(pairs), false, true).unwrap();
            first_difference(&queue, &requested).map(str::to_owned)
        };
        assert_eq!(differs(&[]), None);
        assert_eq!(differs(&[("VisibilityTimeout", "40")]), None);
        assert_eq!(
            differs(&[("VisibilityTimeout", "40"), ("DelaySeconds", "0")]),
            None
        );
        assert_eq!(
            differs(&[("VisibilityTimeout", "30")]).as_deref(),
            Some("VisibilityTimeout")
        );
        assert_eq!(
            differs(&[("DelaySeconds", "1")]).as_deref(),
            Some("DelaySeconds")
        );
        let fifo = crate::test_queue(true, &[("FifoQueue", "true")], 1);
        let requested = validate(&attrs(&[("FifoQueue", "true")]), true, true).unwrap();
        assert_eq!(first_difference(&fifo, &requested), None);
        let requested = validate(
            &attrs(&[("FifoQueue", "true"), ("DeduplicationScope", "queue")]),
            true,
            true,
        )
        .unwrap();
        assert_eq!(first_difference(&fifo, &requested), None);
    }
}
