//! The 23 actions: each reads its parameters (AWS names, either protocol), calls the broker and
//! shapes the result with the member names of the SQS model.

use ferry_broker::validate::{check_range, MAX_BATCH_ENTRIES};
use ferry_broker::{
    BatchOutcome, Broker, MoveTaskInfo, ReceiveInput, ReceivedMessage, SendInput, SendOutput,
};
use ferry_types::{AttributeData, FerryError, MessageAttributes};

use crate::action::Action;
use crate::auth::Caller;
use crate::output::{Fields, Value};
use crate::params::{missing, Params};
use crate::queue_url::{self, UrlBuilder};
use crate::wire_error::{wire_error, Fault};

/// Everything an action needs besides its parameters.
pub struct Context<'a> {
    pub broker: &'a Broker,
    pub urls: UrlBuilder,
    pub caller: Caller,
    /// The request's path: a queue URL's path when the request was posted to the queue itself.
    pub path: &'a str,
}

type Outcome = Result<Option<Fields>, FerryError>;

impl Context<'_> {
    /// The queue a request is about: from `QueueUrl`, else from the path it was posted to.
    fn queue(&self, params: &Params) -> Result<String, FerryError> {
        let account = self.broker.account_id();
        match params.string("QueueUrl")?.filter(|url| !url.is_empty()) {
            Some(url) => queue_url::queue_name(&url, account),
            None if self.path.trim_matches('/').is_empty() => Err(missing("QueueUrl")),
            None => queue_url::queue_name(self.path, account),
        }
    }

    fn url_list(&self, names: Vec<String>) -> Vec<Value> {
        names
            .iter()
            .map(|name| Value::Text(self.urls.url(name)))
            .collect()
    }
}

pub async fn execute(context: &Context<'_>, action: Action, params: &Params) -> Outcome {
    let broker = context.broker;
    match action {
        Action::AddPermission => {
            let queue = context.queue(params)?;
            let label = params.required("Label")?;
            let accounts = params.strings("AWSAccountIds", "AWSAccountId")?;
            let actions = params.strings("Actions", "ActionName")?;
            broker
                .add_permission(&queue, &label, accounts, actions)
                .await?;
            Ok(None)
        }
        Action::CancelMessageMoveTask => {
            let handle = params.required("TaskHandle")?;
            let moved = broker.cancel_message_move_task(&handle).await?;
            Ok(Some(
                Fields::new().number("ApproximateNumberOfMessagesMoved", moved),
            ))
        }
        Action::ChangeMessageVisibility => {
            let queue = context.queue(params)?;
            let handle = params.required("ReceiptHandle")?;
            let timeout = params
                .integer("VisibilityTimeout")?
                .ok_or_else(|| missing("VisibilityTimeout"))?;
            broker
                .change_message_visibility(&queue, &handle, timeout)
                .await?;
            Ok(None)
        }
        Action::ChangeMessageVisibilityBatch => {
            let queue = context.queue(params)?;
            let entries = params
                .entries("Entries", "ChangeMessageVisibilityBatchRequestEntry")?
                .iter()
                .map(|entry| {
                    // Required here too: defaulting to 0 would silently release the message.
                    let timeout = entry
                        .integer("VisibilityTimeout")?
                        .ok_or_else(|| missing("VisibilityTimeout"))?;
                    Ok((
                        entry.string("Id")?.unwrap_or_default(),
                        entry.string("ReceiptHandle")?.unwrap_or_default(),
                        timeout,
                    ))
                })
                .collect::<Result<Vec<_>, FerryError>>()?;
            let outcome = broker
                .change_message_visibility_batch(&queue, entries)
                .await?;
            Ok(Some(batch_result(
                outcome,
                "ChangeMessageVisibilityBatchResultEntry",
                |id, ()| Fields::new().text("Id", id),
            )))
        }
        Action::CreateQueue => {
            let name = params.required("QueueName")?;
            let attributes = params.string_map("Attributes", "Attribute", "Name")?;
            let tags = params.string_map("tags", "Tag", "Key")?;
            let queue = broker.create_queue(&name, attributes, tags, 0).await?;
            Ok(Some(
                Fields::new().text("QueueUrl", context.urls.url(&queue.name)),
            ))
        }
        Action::DeleteMessage => {
            let queue = context.queue(params)?;
            let handle = params.required("ReceiptHandle")?;
            broker.delete_message(&queue, &handle).await?;
            Ok(None)
        }
        Action::DeleteMessageBatch => {
            let queue = context.queue(params)?;
            let entries = params
                .entries("Entries", "DeleteMessageBatchRequestEntry")?
                .iter()
                .map(|entry| {
                    Ok((
                        entry.string("Id")?.unwrap_or_default(),
                        entry.string("ReceiptHandle")?.unwrap_or_default(),
                    ))
                })
                .collect::<Result<Vec<_>, FerryError>>()?;
            let outcome = broker.delete_message_batch(&queue, entries).await?;
            Ok(Some(batch_result(
                outcome,
                "DeleteMessageBatchResultEntry",
                |id, ()| Fields::new().text("Id", id),
            )))
        }
        Action::DeleteQueue => {
            broker.delete_queue(&context.queue(params)?).await?;
            Ok(None)
        }
        Action::GetQueueAttributes => {
            let queue = context.queue(params)?;
            let names = params.strings("AttributeNames", "AttributeName")?;
            let attributes = broker.get_queue_attributes(&queue, &names).await?;
            Ok(Some(Fields::new().string_map(
                "Attributes",
                "Attribute",
                "Name",
                attributes,
            )))
        }
        Action::GetQueueUrl => {
            let name = params.required("QueueName")?;
            if let Some(owner) = params.string("QueueOwnerAWSAccountId")? {
                if owner != broker.account_id() {
                    return Err(FerryError::queue_does_not_exist());
                }
            }
            let queue = broker.get_queue(&name).await?;
            Ok(Some(
                Fields::new().text("QueueUrl", context.urls.url(&queue.name)),
            ))
        }
        Action::ListDeadLetterSourceQueues => {
            let queue = context.queue(params)?;
            let token = params.string("NextToken")?;
            let page = broker
                .list_dead_letter_source_queues(
                    &queue,
                    params.integer("MaxResults")?,
                    token.as_deref(),
                )
                .await?;
            // `queueUrls` (lower case) is required in the model, so present even when empty.
            Ok(Some(
                Fields::new()
                    .list("queueUrls", "QueueUrl", context.url_list(page.names))
                    .maybe_text("NextToken", page.next_token),
            ))
        }
        Action::ListMessageMoveTasks => {
            let source = params.required("SourceArn")?;
            let tasks = broker
                .list_message_move_tasks(&source, params.integer("MaxResults")?)
                .await?;
            let results = tasks.into_iter().map(move_task).collect();
            Ok(Some(Fields::new().nonempty_list(
                "Results",
                "ListMessageMoveTasksResultEntry",
                results,
            )))
        }
        Action::ListQueueTags => {
            let tags = broker.list_queue_tags(&context.queue(params)?).await?;
            Ok(Some(Fields::new().string_map("Tags", "Tag", "Key", tags)))
        }
        Action::ListQueues => {
            let prefix = params.string("QueueNamePrefix")?.unwrap_or_default();
            let token = params.string("NextToken")?;
            let page = broker
                .list_queues(&prefix, params.integer("MaxResults")?, token.as_deref())
                .await?;
            Ok(Some(
                Fields::new()
                    .nonempty_list("QueueUrls", "QueueUrl", context.url_list(page.names))
                    .maybe_text("NextToken", page.next_token),
            ))
        }
        Action::PurgeQueue => {
            broker.purge_queue(&context.queue(params)?).await?;
            Ok(None)
        }
        Action::ReceiveMessage => {
            let queue = context.queue(params)?;
            let input = receive_input(params)?;
            let messages = broker.receive_message(&queue, input).await?;
            let messages = messages.into_iter().map(received_message).collect();
            // An empty receive has no `Messages` member at all, as in SQS.
            Ok(Some(
                Fields::new().nonempty_list("Messages", "Message", messages),
            ))
        }
        Action::RemovePermission => {
            let queue = context.queue(params)?;
            let label = params.required("Label")?;
            broker.remove_permission(&queue, &label).await?;
            Ok(None)
        }
        Action::SendMessage => {
            let queue = context.queue(params)?;
            let input = send_input(
                params,
                &context.caller,
                Some(params.required("MessageBody")?),
            )?;
            let output = broker.send_message(&queue, input).await?;
            Ok(Some(send_fields(Fields::new(), output)))
        }
        Action::SendMessageBatch => {
            let queue = context.queue(params)?;
            let entries = params
                .entries("Entries", "SendMessageBatchRequestEntry")?
                .iter()
                .map(|entry| {
                    // A missing body fails that entry alone (the broker's MissingParameter).
                    Ok((
                        entry.string("Id")?.unwrap_or_default(),
                        send_input(entry, &context.caller, entry.string("MessageBody")?)?,
                    ))
                })
                .collect::<Result<Vec<_>, FerryError>>()?;
            let outcome = broker.send_message_batch(&queue, entries).await?;
            Ok(Some(batch_result(
                outcome,
                "SendMessageBatchResultEntry",
                |id, output| send_fields(Fields::new().text("Id", id), output),
            )))
        }
        Action::SetQueueAttributes => {
            let queue = context.queue(params)?;
            let attributes = params.string_map("Attributes", "Attribute", "Name")?;
            broker.set_queue_attributes(&queue, attributes).await?;
            Ok(None)
        }
        Action::StartMessageMoveTask => {
            let source = params.required("SourceArn")?;
            let destination = params.string("DestinationArn")?;
            let handle = broker
                .start_message_move_task(
                    &source,
                    destination.as_deref(),
                    params.integer("MaxNumberOfMessagesPerSecond")?,
                )
                .await?;
            Ok(Some(Fields::new().text("TaskHandle", handle)))
        }
        Action::TagQueue => {
            let queue = context.queue(params)?;
            let tags = params.string_map("Tags", "Tag", "Key")?;
            broker.tag_queue(&queue, tags).await?;
            Ok(None)
        }
        Action::UntagQueue => {
            let queue = context.queue(params)?;
            let keys = params.strings("TagKeys", "TagKey")?;
            broker.untag_queue(&queue, keys).await?;
            Ok(None)
        }
    }
}

fn send_input(
    params: &Params,
    caller: &Caller,
    body: Option<String>,
) -> Result<SendInput, FerryError> {
    Ok(SendInput {
        body: body.unwrap_or_default(),
        delay_seconds: params.integer("DelaySeconds")?,
        attributes: params.message_attributes()?,
        trace_header: params.trace_header()?,
        message_group_id: params.string("MessageGroupId")?,
        message_deduplication_id: params.string("MessageDeduplicationId")?,
        sender_id: caller.access_key.clone(),
    })
}

fn send_fields(fields: Fields, output: SendOutput) -> Fields {
    fields
        .text("MessageId", output.message_id)
        .text("MD5OfMessageBody", output.md5_of_body)
        .maybe_text("MD5OfMessageAttributes", output.md5_of_attributes)
        .maybe_text(
            "MD5OfMessageSystemAttributes",
            output.md5_of_system_attributes,
        )
        .maybe_text("SequenceNumber", output.sequence_number)
}

fn receive_input(params: &Params) -> Result<ReceiveInput, FerryError> {
    // The broker reads 0 as "not given"; an explicit 0 is out of range in SQS.
    let max_messages = match params.integer("MaxNumberOfMessages")? {
        Some(n) => check_range("MaxNumberOfMessages", n, 1, MAX_BATCH_ENTRIES as u32)?,
        None => 0,
    };
    // The deprecated AttributeNames and its replacement MessageSystemAttributeNames both select
    // system attributes; old clients send only the first.
    let mut system_attribute_names = params.strings("AttributeNames", "AttributeName")?;
    system_attribute_names
        .extend(params.strings("MessageSystemAttributeNames", "MessageSystemAttributeName")?);
    Ok(ReceiveInput {
        max_messages,
        visibility_timeout: params.integer("VisibilityTimeout")?,
        wait_seconds: params.integer("WaitTimeSeconds")?,
        system_attribute_names,
        message_attribute_names: params.strings("MessageAttributeNames", "MessageAttributeName")?,
        attempt_id: params.string("ReceiveRequestAttemptId")?,
    })
}

fn received_message(message: ReceivedMessage) -> Value {
    Value::Struct(
        Fields::new()
            .text("MessageId", message.message_id)
            .text("ReceiptHandle", message.receipt_handle)
            .text("MD5OfBody", message.md5_of_body)
            .text("Body", message.body)
            .string_map("Attributes", "Attribute", "Name", message.attributes)
            .maybe_text("MD5OfMessageAttributes", message.md5_of_message_attributes)
            .map(
                "MessageAttributes",
                "MessageAttribute",
                "Name",
                message_attributes(message.message_attributes),
            ),
    )
}

/// Attribute values as SQS returns them: StringValue or base64 BinaryValue, then DataType.
fn message_attributes(attributes: MessageAttributes) -> Vec<(String, Value)> {
    use base64::Engine as _;
    attributes
        .into_iter()
        .map(|(name, attribute)| {
            let fields = match attribute.value {
                AttributeData::String(text) => Fields::new().text("StringValue", text),
                AttributeData::Binary(bytes) => Fields::new().text(
                    "BinaryValue",
                    base64::engine::general_purpose::STANDARD.encode(bytes),
                ),
            };
            (
                name,
                Value::Struct(fields.text("DataType", attribute.data_type)),
            )
        })
        .collect()
}

fn move_task(task: MoveTaskInfo) -> Value {
    Value::Struct(
        Fields::new()
            .maybe_text("TaskHandle", task.task_handle)
            .text("Status", task.status)
            .text("SourceArn", task.source_arn)
            .maybe_text("DestinationArn", task.destination_arn)
            .maybe_number(
                "MaxNumberOfMessagesPerSecond",
                task.max_per_second.map(u64::from),
            )
            .number("ApproximateNumberOfMessagesMoved", task.moved)
            .maybe_number("ApproximateNumberOfMessagesToMove", task.to_move)
            .maybe_text("FailureReason", task.failure_reason)
            .number("StartedTimestamp", task.started_at_ms),
    )
}

/// `Successful` and `Failed` (both always present: the model requires them) of a batch action.
fn batch_result<T>(
    outcome: BatchOutcome<T>,
    success_item: &'static str,
    success: impl Fn(String, T) -> Fields,
) -> Fields {
    let mut successful = Vec::new();
    let mut failed = Vec::new();
    for (id, result) in outcome {
        match result {
            Ok(value) => successful.push(Value::Struct(success(id, value))),
            Err(error) => {
                let wire = wire_error(error.code);
                failed.push(Value::Struct(
                    Fields::new()
                        .text("Id", id)
                        .bool("SenderFault", wire.fault == Fault::Sender)
                        .text("Code", wire.code)
                        .text("Message", error.message),
                ));
            }
        }
    }
    Fields::new()
        .list("Successful", success_item, successful)
        .list("Failed", "BatchResultErrorEntry", failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_types::{AttributeValue, ErrorCode};

    #[test]
    fn batch_results_list_successes_and_failures_with_their_fault() {
        let outcome: BatchOutcome<()> = vec![
            ("a".into(), Ok(())),
            (
                "b".into(),
                Err(FerryError::new(ErrorCode::ReceiptHandleIsInvalid, "bad")),
            ),
            ("c".into(), Err(FerryError::unavailable("later"))),
        ];
        let fields = batch_result(outcome, "DeleteMessageBatchResultEntry", |id, ()| {
            Fields::new().text("Id", id)
        });
        let failure = |id: &str, fault: bool, code: &str, message: &str| {
            Value::Struct(
                Fields::new()
                    .text("Id", id)
                    .bool("SenderFault", fault)
                    .text("Code", code)
                    .text("Message", message),
            )
        };
        assert_eq!(
            fields,
            Fields::new()
                .list(
                    "Successful",
                    "DeleteMessageBatchResultEntry",
                    vec![Value::Struct(Fields::new().text("Id", "a"))]
                )
                .list(
                    "Failed",
                    "BatchResultErrorEntry",
                    vec![
                        failure("b", true, "ReceiptHandleIsInvalid", "bad"),
                        failure("c", false, "ServiceUnavailable", "later"),
                    ]
                )
        );
    }

    #[test]
    fn received_binary_attributes_go_back_as_base64() {
        let mut attributes = MessageAttributes::new();
        attributes.insert(
            "b".into(),
            AttributeValue {
                data_type: "Binary".into(),
                value: AttributeData::Binary(bytes::Bytes::from_static(&[0, 255])),
            },
        );
        assert_eq!(
            message_attributes(attributes),
            vec![(
                "b".to_owned(),
                Value::Struct(
                    Fields::new()
                        .text("BinaryValue", "AP8=")
                        .text("DataType", "Binary")
                )
            )]
        );
    }

    #[test]
    fn receive_refuses_an_explicit_zero_and_merges_attribute_name_lists() {
        let params = |pairs: &[(&str, &str)]| {
            Params::Query(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        assert_eq!(
            receive_input(&params(&[("MaxNumberOfMessages", "0")]))
                .unwrap_err()
                .message,
            "Value 0 for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1 and 10, if provided."
        );
        let input = receive_input(&params(&[
            ("AttributeName.1", "SenderId"),
            ("MessageSystemAttributeName.1", "SentTimestamp"),
            ("MessageAttributeName.1", "All"),
        ]))
        .unwrap();
        assert_eq!(input.max_messages, 0);
        assert_eq!(input.system_attribute_names, ["SenderId", "SentTimestamp"]);
        assert_eq!(input.message_attribute_names, ["All"]);
    }
}
