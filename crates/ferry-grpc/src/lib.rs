//! The public gRPC service `ferry.v1.Ferry`: converts protobuf messages to broker calls and broker
//! errors to gRPC statuses carrying the stable Ferry error code (in an `ErrorDetail` in the status
//! details, and in the `ferry-error-code` metadata entry).
//!
//! Rule: no semantics here; every check and decision is the broker's.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use ferry_broker::{BatchOutcome, Broker, QueueInfo, ReceiveInput, SendInput, SendOutput};
use ferry_proto::v1 as pb;
use ferry_proto::v1::ferry_server::Ferry;
use ferry_types::{AttributeData, AttributeValue, ErrorCode, FerryError, MessageAttributes};
use prost::Message;
use tonic::{Request, Response, Status};

/// The metadata key that carries the Ferry error code of a failed call.
pub const ERROR_CODE_METADATA: &str = "ferry-error-code";

pub struct FerryService {
    broker: Arc<Broker>,
}

impl FerryService {
    pub fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
    }

    pub fn into_server(self) -> pb::ferry_server::FerryServer<Self> {
        pb::ferry_server::FerryServer::new(self)
            .max_decoding_message_size(4 << 20)
            .max_encoding_message_size(16 << 20)
    }
}

/// The gRPC status of a Ferry error.
pub fn status(error: FerryError) -> Status {
    let code = match error.code {
        ErrorCode::QueueDoesNotExist | ErrorCode::ResourceNotFound => tonic::Code::NotFound,
        ErrorCode::QueueNameExists => tonic::Code::AlreadyExists,
        ErrorCode::QueueDeletedRecently
        | ErrorCode::PurgeQueueInProgress
        | ErrorCode::MessageNotInflight => tonic::Code::FailedPrecondition,
        ErrorCode::OverLimit => tonic::Code::ResourceExhausted,
        ErrorCode::UnsupportedOperation => tonic::Code::Unimplemented,
        ErrorCode::Unavailable => tonic::Code::Unavailable,
        // The request may or may not have taken effect: the caller must not assume either.
        ErrorCode::OutcomeUnknown => tonic::Code::Unknown,
        ErrorCode::Internal => tonic::Code::Internal,
        _ => tonic::Code::InvalidArgument,
    };
    let detail = pb::ErrorDetail {
        code: error.code.as_str().to_owned(),
    }
    .encode_to_vec();
    let mut status = Status::with_details(code, error.message, Bytes::from(detail));
    if let Ok(value) = error.code.as_str().parse() {
        status.metadata_mut().insert(ERROR_CODE_METADATA, value);
    }
    status
}

type Reply<T> = Result<Response<T>, Status>;

fn reply<T>(result: Result<T, FerryError>) -> Reply<T> {
    result.map(Response::new).map_err(status)
}

fn queue_info(queue: QueueInfo) -> pb::QueueInfo {
    pb::QueueInfo {
        name: queue.name,
        id: queue.id,
        fifo: queue.fifo,
        partitions: queue.partitions,
    }
}

fn attributes_in(
    attributes: std::collections::HashMap<String, pb::MessageAttributeValue>,
) -> Result<MessageAttributes, FerryError> {
    attributes
        .into_iter()
        .map(|(name, value)| {
            let data = match value.value {
                Some(pb::message_attribute_value::Value::StringValue(text)) => {
                    AttributeData::String(text)
                }
                Some(pb::message_attribute_value::Value::BinaryValue(bytes)) => {
                    AttributeData::Binary(Bytes::from(bytes))
                }
                None => {
                    return Err(FerryError::invalid(format!(
                        "The message attribute '{name}' must contain a non-empty value."
                    )))
                }
            };
            Ok((
                name,
                AttributeValue {
                    data_type: value.data_type,
                    value: data,
                },
            ))
        })
        .collect()
}

fn attributes_out(
    attributes: MessageAttributes,
) -> std::collections::HashMap<String, pb::MessageAttributeValue> {
    attributes
        .into_iter()
        .map(|(name, value)| {
            let value_out = match value.value {
                AttributeData::String(text) => {
                    pb::message_attribute_value::Value::StringValue(text)
                }
                AttributeData::Binary(bytes) => {
                    pb::message_attribute_value::Value::BinaryValue(bytes.to_vec())
                }
            };
            (
                name,
                pb::MessageAttributeValue {
                    data_type: value.data_type,
                    value: Some(value_out),
                },
            )
        })
        .collect()
}

fn sorted(map: std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    map.into_iter().collect()
}

fn batch_errors<T>(outcome: BatchOutcome<T>) -> (Vec<(String, T)>, Vec<pb::BatchResultErrorEntry>) {
    let mut successful = Vec::new();
    let mut failed = Vec::new();
    for (id, result) in outcome {
        match result {
            Ok(value) => successful.push((id, value)),
            Err(error) => failed.push(pb::BatchResultErrorEntry {
                id,
                sender_fault: error.code.is_sender_fault(),
                code: error.code.as_str().to_owned(),
                message: error.message,
            }),
        }
    }
    (successful, failed)
}

fn plain_batch(outcome: BatchOutcome<()>) -> pb::BatchResponse {
    let (successful, failed) = batch_errors(outcome);
    pb::BatchResponse {
        successful: successful
            .into_iter()
            .map(|(id, ())| pb::BatchResultEntry { id })
            .collect(),
        failed,
    }
}

fn send_response(output: SendOutput) -> pb::SendMessageResponse {
    pb::SendMessageResponse {
        message_id: output.message_id,
        md5_of_message_body: output.md5_of_body,
        md5_of_message_attributes: output.md5_of_attributes,
        md5_of_message_system_attributes: output.md5_of_system_attributes,
        sequence_number: output.sequence_number,
    }
}

#[tonic::async_trait]
impl Ferry for FerryService {
    async fn create_queue(
        &self,
        request: Request<pb::CreateQueueRequest>,
    ) -> Reply<pb::CreateQueueResponse> {
        let r = request.into_inner();
        let result = self
            .broker
            .create_queue(
                &r.queue_name,
                sorted(r.attributes),
                sorted(r.tags),
                r.partitions,
            )
            .await;
        reply(result.map(|queue| pb::CreateQueueResponse {
            queue: Some(queue_info(queue)),
        }))
    }

    async fn get_queue(
        &self,
        request: Request<pb::GetQueueRequest>,
    ) -> Reply<pb::GetQueueResponse> {
        let result = self
            .broker
            .get_queue(&request.into_inner().queue_name)
            .await;
        reply(result.map(|queue| pb::GetQueueResponse {
            queue: Some(queue_info(queue)),
        }))
    }

    async fn list_queues(
        &self,
        request: Request<pb::ListQueuesRequest>,
    ) -> Reply<pb::ListQueuesResponse> {
        let r = request.into_inner();
        let result = self
            .broker
            .list_queues(&r.queue_name_prefix, r.max_results, r.next_token.as_deref())
            .await;
        reply(result.map(|list| pb::ListQueuesResponse {
            queue_names: list.names,
            next_token: list.next_token,
        }))
    }

    async fn delete_queue(&self, request: Request<pb::DeleteQueueRequest>) -> Reply<pb::Empty> {
        reply(
            self.broker
                .delete_queue(&request.into_inner().queue_name)
                .await
                .map(|()| pb::Empty {}),
        )
    }

    async fn get_queue_attributes(
        &self,
        request: Request<pb::GetQueueAttributesRequest>,
    ) -> Reply<pb::GetQueueAttributesResponse> {
        let r = request.into_inner();
        let result = self
            .broker
            .get_queue_attributes(&r.queue_name, &r.attribute_names)
            .await;
        reply(result.map(|attributes| pb::GetQueueAttributesResponse {
            attributes: attributes.into_iter().collect(),
        }))
    }

    async fn set_queue_attributes(
        &self,
        request: Request<pb::SetQueueAttributesRequest>,
    ) -> Reply<pb::Empty> {
        let r = request.into_inner();
        reply(
            self.broker
                .set_queue_attributes(&r.queue_name, sorted(r.attributes))
                .await
                .map(|()| pb::Empty {}),
        )
    }

    async fn purge_queue(&self, request: Request<pb::PurgeQueueRequest>) -> Reply<pb::Empty> {
        reply(
            self.broker
                .purge_queue(&request.into_inner().queue_name)
                .await
                .map(|()| pb::Empty {}),
        )
    }

    async fn tag_queue(&self, request: Request<pb::TagQueueRequest>) -> Reply<pb::Empty> {
        let r = request.into_inner();
        reply(
            self.broker
                .tag_queue(&r.queue_name, sorted(r.tags))
                .await
                .map(|()| pb::Empty {}),
        )
    }

    async fn untag_queue(&self, request: Request<pb::UntagQueueRequest>) -> Reply<pb::Empty> {
        let r = request.into_inner();
        reply(
            self.broker
                .untag_queue(&r.queue_name, r.tag_keys)
                .await
                .map(|()| pb::Empty {}),
        )
    }

    async fn list_queue_tags(
        &self,
        request: Request<pb::ListQueueTagsRequest>,
    ) -> Reply<pb::ListQueueTagsResponse> {
        let result = self
            .broker
            .list_queue_tags(&request.into_inner().queue_name)
            .await;
        reply(result.map(|tags| pb::ListQueueTagsResponse {
            tags: tags.into_iter().collect(),
        }))
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Reply<pb::SendMessageResponse> {
        let r = request.into_inner();
        let result = async {
            let input = SendInput {
                body: r.body,
                delay_seconds: r.delay_seconds,
                attributes: attributes_in(r.message_attributes)?,
                trace_header: r.trace_header,
                message_group_id: r.message_group_id,
                message_deduplication_id: r.message_deduplication_id,
                sender_id: None,
            };
            self.broker.send_message(&r.queue_name, input).await
        };
        reply(result.await.map(send_response))
    }

    async fn send_message_batch(
        &self,
        request: Request<pb::SendMessageBatchRequest>,
    ) -> Reply<pb::SendMessageBatchResponse> {
        let r = request.into_inner();
        let mut entries = Vec::with_capacity(r.entries.len());
        let mut malformed = Vec::new();
        for entry in r.entries {
            match attributes_in(entry.message_attributes) {
                Ok(attributes) => entries.push((
                    entry.id,
                    SendInput {
                        body: entry.body,
                        delay_seconds: entry.delay_seconds,
                        attributes,
                        trace_header: entry.trace_header,
                        message_group_id: entry.message_group_id,
                        message_deduplication_id: entry.message_deduplication_id,
                        sender_id: None,
                    },
                )),
                Err(error) => malformed.push((entry.id, Err(error))),
            }
        }
        let result = self
            .broker
            .send_message_batch(&r.queue_name, entries)
            .await
            .map(|mut outcome| {
                outcome.extend(malformed);
                let (successful, failed) = batch_errors(outcome);
                pb::SendMessageBatchResponse {
                    successful: successful
                        .into_iter()
                        .map(|(id, output)| pb::SendMessageBatchResultEntry {
                            id,
                            message_id: output.message_id,
                            md5_of_message_body: output.md5_of_body,
                            md5_of_message_attributes: output.md5_of_attributes,
                            md5_of_message_system_attributes: output.md5_of_system_attributes,
                            sequence_number: output.sequence_number,
                        })
                        .collect(),
                    failed,
                }
            });
        reply(result)
    }

    async fn receive_message(
        &self,
        request: Request<pb::ReceiveMessageRequest>,
    ) -> Reply<pb::ReceiveMessageResponse> {
        let r = request.into_inner();
        let input = ReceiveInput {
            max_messages: r.max_number_of_messages,
            visibility_timeout: r.visibility_timeout,
            wait_seconds: r.wait_time_seconds,
            system_attribute_names: r.message_system_attribute_names,
            message_attribute_names: r.message_attribute_names,
            attempt_id: r.receive_request_attempt_id,
        };
        let result = self
            .broker
            .receive_message(&r.queue_name, input)
            .await
            .map(|messages| pb::ReceiveMessageResponse {
                messages: messages
                    .into_iter()
                    .map(|m| pb::Message {
                        message_id: m.message_id,
                        receipt_handle: m.receipt_handle,
                        body: m.body,
                        md5_of_body: m.md5_of_body,
                        attributes: m.attributes.into_iter().collect(),
                        message_attributes: attributes_out(m.message_attributes),
                        md5_of_message_attributes: m.md5_of_message_attributes,
                    })
                    .collect(),
            });
        reply(result)
    }

    async fn delete_message(&self, request: Request<pb::DeleteMessageRequest>) -> Reply<pb::Empty> {
        let r = request.into_inner();
        reply(
            self.broker
                .delete_message(&r.queue_name, &r.receipt_handle)
                .await
                .map(|()| pb::Empty {}),
        )
    }

    async fn delete_message_batch(
        &self,
        request: Request<pb::DeleteMessageBatchRequest>,
    ) -> Reply<pb::BatchResponse> {
        let r = request.into_inner();
        let entries = r
            .entries
            .into_iter()
            .map(|e| (e.id, e.receipt_handle))
            .collect();
        reply(
            self.broker
                .delete_message_batch(&r.queue_name, entries)
                .await
                .map(plain_batch),
        )
    }

    async fn change_message_visibility(
        &self,
        request: Request<pb::ChangeMessageVisibilityRequest>,
    ) -> Reply<pb::Empty> {
        let r = request.into_inner();
        let result = self
            .broker
            .change_message_visibility(&r.queue_name, &r.receipt_handle, r.visibility_timeout)
            .await;
        reply(result.map(|()| pb::Empty {}))
    }

    async fn change_message_visibility_batch(
        &self,
        request: Request<pb::ChangeMessageVisibilityBatchRequest>,
    ) -> Reply<pb::BatchResponse> {
        let r = request.into_inner();
        let entries = r
            .entries
            .into_iter()
            .map(|e| (e.id, e.receipt_handle, e.visibility_timeout))
            .collect();
        reply(
            self.broker
                .change_message_visibility_batch(&r.queue_name, entries)
                .await
                .map(plain_batch),
        )
    }

    async fn add_permission(&self, request: Request<pb::AddPermissionRequest>) -> Reply<pb::Empty> {
        let r = request.into_inner();
        let result = self
            .broker
            .add_permission(&r.queue_name, &r.label, r.aws_account_ids, r.actions)
            .await;
        reply(result.map(|()| pb::Empty {}))
    }

    async fn remove_permission(
        &self,
        request: Request<pb::RemovePermissionRequest>,
    ) -> Reply<pb::Empty> {
        let r = request.into_inner();
        reply(
            self.broker
                .remove_permission(&r.queue_name, &r.label)
                .await
                .map(|()| pb::Empty {}),
        )
    }

    async fn list_dead_letter_source_queues(
        &self,
        request: Request<pb::ListDeadLetterSourceQueuesRequest>,
    ) -> Reply<pb::ListQueuesResponse> {
        let r = request.into_inner();
        let result = self
            .broker
            .list_dead_letter_source_queues(&r.queue_name, r.max_results, r.next_token.as_deref())
            .await;
        reply(result.map(|list| pb::ListQueuesResponse {
            queue_names: list.names,
            next_token: list.next_token,
        }))
    }

    async fn start_message_move_task(
        &self,
        request: Request<pb::StartMessageMoveTaskRequest>,
    ) -> Reply<pb::StartMessageMoveTaskResponse> {
        let r = request.into_inner();
        let result = self
            .broker
            .start_message_move_task(
                &r.source_arn,
                r.destination_arn.as_deref(),
                r.max_number_of_messages_per_second,
            )
            .await;
        reply(result.map(|task_handle| pb::StartMessageMoveTaskResponse { task_handle }))
    }

    async fn cancel_message_move_task(
        &self,
        request: Request<pb::CancelMessageMoveTaskRequest>,
    ) -> Reply<pb::CancelMessageMoveTaskResponse> {
        let result = self
            .broker
            .cancel_message_move_task(&request.into_inner().task_handle)
            .await;
        reply(result.map(|moved| pb::CancelMessageMoveTaskResponse {
            approximate_number_of_messages_moved: moved,
        }))
    }

    async fn list_message_move_tasks(
        &self,
        request: Request<pb::ListMessageMoveTasksRequest>,
    ) -> Reply<pb::ListMessageMoveTasksResponse> {
        let r = request.into_inner();
        let result = self
            .broker
            .list_message_move_tasks(&r.source_arn, r.max_results)
            .await
            .map(|tasks| pb::ListMessageMoveTasksResponse {
                results: tasks
                    .into_iter()
                    .map(|task| pb::MessageMoveTask {
                        task_handle: task.task_handle,
                        status: task.status,
                        source_arn: task.source_arn,
                        destination_arn: task.destination_arn,
                        max_number_of_messages_per_second: task.max_per_second,
                        approximate_number_of_messages_moved: task.moved,
                        approximate_number_of_messages_to_move: task.to_move,
                        failure_reason: task.failure_reason,
                        started_timestamp: task.started_at_ms,
                    })
                    .collect(),
            });
        reply(result)
    }
}
