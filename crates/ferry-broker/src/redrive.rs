//! Dead-letter queues: RedrivePolicy and RedriveAllowPolicy as SQS validates them.

use ferry_catalog::QueueRecord;
use ferry_types::{ErrorCode, FerryError};
use serde_json::Value;

const MAX_RECEIVE_COUNT: u64 = 1_000;
const MAX_ALLOWED_SOURCES: usize = 10;

/// A parsed RedrivePolicy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedrivePolicy {
    pub target_arn: String,
    pub max_receive_count: u32,
}

fn invalid(name: &str, reason: &str) -> FerryError {
    FerryError::new(
        ErrorCode::InvalidAttributeValue,
        format!("Invalid value for the parameter {name}. Reason: {reason}"),
    )
}

/// Parses a RedrivePolicy value (maxReceiveCount may be a number or a numeric string, as SQS
/// accepts both). An empty value removes the policy.
pub fn parse_redrive_policy(text: &str) -> Result<Option<RedrivePolicy>, FerryError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let json: Value = serde_json::from_str(text)
        .map_err(|_| invalid("RedrivePolicy", "Redrive policy is not a valid JSON map."))?;
    let target_arn = json
        .get("deadLetterTargetArn")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            invalid(
                "RedrivePolicy",
                "Redrive policy does not contain mandatory attribute: deadLetterTargetArn.",
            )
        })?;
    let count = match json.get("maxReceiveCount") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => {
            return Err(invalid(
                "RedrivePolicy",
                "Redrive policy does not contain mandatory attribute: maxReceiveCount.",
            ))
        }
    };
    let max_receive_count = count
        .filter(|n| (1..=MAX_RECEIVE_COUNT).contains(n))
        .ok_or_else(|| {
            invalid(
                "RedrivePolicy",
                "Invalid value for maxReceiveCount: must be an integer from 1 to 1000.",
            )
        })?;
    Ok(Some(RedrivePolicy {
        target_arn: target_arn.to_owned(),
        max_receive_count: max_receive_count as u32,
    }))
}

/// How SQS stores and shows a RedrivePolicy.
pub fn render_redrive_policy(policy: &RedrivePolicy) -> String {
    serde_json::json!({ "deadLetterTargetArn": policy.target_arn, "maxReceiveCount": policy.max_receive_count }).to_string()
}

/// The queue's RedrivePolicy, if it has a valid one.
pub fn redrive_policy(queue: &QueueRecord) -> Option<RedrivePolicy> {
    parse_redrive_policy(queue.attributes.get("RedrivePolicy")?)
        .ok()
        .flatten()
}

/// Checks a RedriveAllowPolicy value and returns it normalised.
pub fn check_allow_policy(text: &str) -> Result<String, FerryError> {
    let json: Value = serde_json::from_str(text).map_err(|_| {
        invalid(
            "RedriveAllowPolicy",
            "Redrive allow policy is not a valid JSON map.",
        )
    })?;
    let permission = json
        .get("redrivePermission")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let sources = json.get("sourceQueueArns");
    match (permission, sources) {
        ("allowAll" | "denyAll", None) => {}
        ("allowAll" | "denyAll", Some(_)) => {
            return Err(invalid(
                "RedriveAllowPolicy",
                "Only byQueue redrivePermission accepts sourceQueueArns.",
            ))
        }
        ("byQueue", Some(Value::Array(arns)))
            if (1..=MAX_ALLOWED_SOURCES).contains(&arns.len())
                && arns.iter().all(Value::is_string) => {}
        ("byQueue", _) => {
            return Err(invalid(
                "RedriveAllowPolicy",
                "byQueue needs sourceQueueArns with 1 to 10 queue ARNs.",
            ))
        }
        _ => {
            return Err(invalid(
                "RedriveAllowPolicy",
                "redrivePermission must be allowAll, denyAll or byQueue.",
            ))
        }
    }
    Ok(json.to_string())
}

/// Whether a dead-letter queue accepts `source_arn` as a source under its RedriveAllowPolicy.
pub fn allows_source(dead_letter_queue: &QueueRecord, source_arn: &str) -> bool {
    let Some(text) = dead_letter_queue.attributes.get("RedriveAllowPolicy") else {
        return true;
    };
    let Ok(json) = serde_json::from_str::<Value>(text) else {
        return true;
    };
    match json.get("redrivePermission").and_then(Value::as_str) {
        Some("denyAll") => false,
        Some("byQueue") => json
            .get("sourceQueueArns")
            .and_then(Value::as_array)
            .is_some_and(|arns| arns.iter().any(|arn| arn.as_str() == Some(source_arn))),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redrive_policies_are_checked() {
        let policy =
            parse_redrive_policy(r#"{"deadLetterTargetArn":"arn:x","maxReceiveCount":"5"}"#)
                .unwrap()
                .unwrap();
        assert_eq!(policy.max_receive_count, 5);
        assert_eq!(
            render_redrive_policy(&policy),
            r#"{"deadLetterTargetArn":"arn:x","maxReceiveCount":5}"#
        );
        assert!(
            parse_redrive_policy(r#"{"deadLetterTargetArn":"arn:x","maxReceiveCount":1001}"#)
                .is_err()
        );
        assert!(parse_redrive_policy(r#"{"maxReceiveCount":3}"#).is_err());
        assert!(parse_redrive_policy("").unwrap().is_none());
    }

    #[test]
    fn allow_policies_are_checked() {
        assert!(check_allow_policy(r#"{"redrivePermission":"allowAll"}"#).is_ok());
        assert!(
            check_allow_policy(r#"{"redrivePermission":"byQueue","sourceQueueArns":["a"]}"#)
                .is_ok()
        );
        assert!(check_allow_policy(r#"{"redrivePermission":"byQueue"}"#).is_err());
        assert!(
            check_allow_policy(r#"{"redrivePermission":"denyAll","sourceQueueArns":["a"]}"#)
                .is_err()
        );
    }
}
