//! Queue policies as AddPermission/RemovePermission build them, and reading RedrivePolicy.

use ferry_catalog::QueueRecord;
use ferry_types::{ErrorCode, FerryError};
use serde_json::json;

/// Actions a grant may name (the batch forms come with their single forms, as in SQS).
const GRANTABLE: &[&str] = &[
    "*",
    "SendMessage",
    "ReceiveMessage",
    "DeleteMessage",
    "ChangeMessageVisibility",
    "GetQueueAttributes",
    "GetQueueUrl",
    "ListDeadLetterSourceQueues",
    "PurgeQueue",
    "ListQueueTags",
];
const MAX_ACTIONS: usize = 7;

pub fn check_label(label: &str) -> Result<(), FerryError> {
    let valid = !label.is_empty()
        && label.len() <= 80
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(FerryError::invalid(format!(
            "Value {label} for parameter Label is invalid. Reason: Must be 1 to 80 alphanumeric characters, hyphens or underscores."
        )))
    }
}

pub fn check_grant(account_ids: &[String], actions: &[String]) -> Result<(), FerryError> {
    if account_ids.is_empty() {
        return Err(FerryError::new(
            ErrorCode::MissingParameter,
            "The request must contain the parameter AWSAccountIds.",
        ));
    }
    if actions.is_empty() {
        return Err(FerryError::new(
            ErrorCode::MissingParameter,
            "The request must contain the parameter Actions.",
        ));
    }
    if actions.len() > MAX_ACTIONS {
        return Err(FerryError::new(
            ErrorCode::OverLimit,
            format!(
                "{} Actions were found, maximum allowed is {MAX_ACTIONS}.",
                actions.len()
            ),
        ));
    }
    if let Some(action) = actions
        .iter()
        .find(|action| !GRANTABLE.contains(&action.as_str()))
    {
        return Err(FerryError::invalid(format!("Value SQS:{action} for parameter ActionName is invalid. Reason: Please refer to the appropriate WSDL for a list of valid actions.")));
    }
    if let Some(account) = account_ids
        .iter()
        .find(|id| id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(FerryError::invalid(format!(
            "Value [{account}] for parameter PrincipalId is invalid. Reason: Unable to verify."
        )));
    }
    Ok(())
}

/// The queue's Policy document made of its AddPermission statements.
pub fn policy_document(queue: &QueueRecord, arn: &str) -> String {
    let statements: Vec<_> = queue
        .permissions
        .iter()
        .map(|(label, permission)| {
            let principals: Vec<String> = permission
                .account_ids
                .iter()
                .map(|account| format!("arn:aws:iam::{account}:root"))
                .collect();
            let actions: Vec<String> = permission
                .actions
                .iter()
                .map(|action| format!("SQS:{action}"))
                .collect();
            json!({
                "Sid": label,
                "Effect": "Allow",
                "Principal": { "AWS": principals },
                "Action": actions,
                "Resource": arn,
            })
        })
        .collect();
    json!({ "Version": "2012-10-17", "Id": format!("{arn}/SQSDefaultPolicy"), "Statement": statements }).to_string()
}

/// The ARN a queue's RedrivePolicy sends its dead letters to, if it has one.
pub fn dead_letter_target(queue: &QueueRecord) -> Option<String> {
    let policy: serde_json::Value =
        serde_json::from_str(queue.attributes.get("RedrivePolicy")?).ok()?;
    policy
        .get("deadLetterTargetArn")?
        .as_str()
        .map(str::to_owned)
}
