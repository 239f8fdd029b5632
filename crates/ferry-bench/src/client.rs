//! The two ways the benchmark talks to Ferry: the public gRPC API, and the SQS JSON 1.0 protocol over
//! a pool of keep-alive HTTP connections; and the two peers it compares Ferry with (`peers`). All
//! expose the same few calls.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use ferry_proto::v1 as pb;
use ferry_proto::v1::ferry_client::FerryClient;
use serde_json::{json, Value};
use tonic::transport::{Channel, Endpoint};

use crate::peers::{Amqp, Nats};

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const ACCOUNT: &str = "000000000000";

/// A received message: its body and the handle that deletes it.
pub struct Received {
    pub body: String,
    pub receipt_handle: String,
}

#[derive(Clone)]
pub enum Client {
    Grpc(Vec<FerryClient<Channel>>),
    Sqs {
        http: reqwest::Client,
        endpoints: Vec<String>,
    },
    Amqp(Arc<Amqp>),
    Nats(Arc<Nats>),
}

impl Client {
    pub async fn grpc(endpoints: &[String]) -> anyhow::Result<Self> {
        let mut clients = Vec::new();
        for endpoint in endpoints {
            let channel = Endpoint::from_shared(endpoint.clone())?
                .connect_timeout(Duration::from_secs(2))
                .timeout(CALL_TIMEOUT)
                .tcp_nodelay(true)
                .connect()
                .await
                .with_context(|| format!("connecting to {endpoint}"))?;
            clients.push(FerryClient::new(channel).max_decoding_message_size(16 << 20));
        }
        Ok(Self::Grpc(clients))
    }

    pub fn sqs(endpoints: &[String], connections: usize) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(connections)
            .tcp_nodelay(true)
            .timeout(CALL_TIMEOUT)
            .build()?;
        Ok(Self::Sqs {
            http,
            endpoints: endpoints.to_vec(),
        })
    }

    async fn sqs_call(&self, worker: usize, action: &str, body: Value) -> anyhow::Result<Value> {
        let Self::Sqs { http, endpoints } = self else {
            bail!("not an SQS client")
        };
        let endpoint = &endpoints[worker % endpoints.len()];
        let response = http
            .post(endpoint)
            .header("X-Amz-Target", format!("AmazonSQS.{action}"))
            .header("Content-Type", "application/x-amz-json-1.0")
            .body(body.to_string())
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{action}: HTTP {status}: {text}");
        }
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        })
    }

    fn queue_url(&self, worker: usize, queue: &str) -> String {
        match self {
            Self::Sqs { endpoints, .. } => format!(
                "{}/{ACCOUNT}/{queue}",
                endpoints[worker % endpoints.len()].trim_end_matches('/')
            ),
            _ => queue.to_owned(),
        }
    }

    fn grpc_client(&self, worker: usize) -> FerryClient<Channel> {
        match self {
            Self::Grpc(clients) => clients[worker % clients.len()].clone(),
            _ => unreachable!("gRPC call on another transport's client"),
        }
    }

    pub async fn create_queue(
        &self,
        queue: &str,
        fifo: bool,
        partitions: u32,
    ) -> anyhow::Result<()> {
        let mut attributes = std::collections::HashMap::new();
        if fifo {
            attributes.insert("FifoQueue".to_owned(), "true".to_owned());
            attributes.insert("ContentBasedDeduplication".to_owned(), "true".to_owned());
            attributes.insert("DeduplicationScope".to_owned(), "messageGroup".to_owned());
            attributes.insert(
                "FifoThroughputLimit".to_owned(),
                "perMessageGroupId".to_owned(),
            );
        }
        match self {
            Self::Grpc(_) => {
                let request = pb::CreateQueueRequest {
                    queue_name: queue.to_owned(),
                    attributes,
                    partitions,
                    ..Default::default()
                };
                self.grpc_client(0).create_queue(request).await?;
            }
            _ if partitions != 0 => {
                anyhow::bail!("--partitions needs the gRPC transport (SQS has no such attribute)")
            }
            Self::Amqp(_) | Self::Nats(_) if fifo => {
                anyhow::bail!("the FIFO scenario is Ferry's only")
            }
            Self::Amqp(amqp) => peer_call(amqp.create_queue(queue)).await?,
            Self::Nats(nats) => peer_call(nats.create_queue(queue)).await?,
            Self::Sqs { .. } => {
                self.sqs_call(
                    0,
                    "CreateQueue",
                    json!({ "QueueName": queue, "Attributes": attributes }),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Sends bodies in one call (SendMessage for one, SendMessageBatch for more).
    pub async fn send(
        &self,
        worker: usize,
        queue: &str,
        bodies: &[String],
        group: Option<&str>,
    ) -> anyhow::Result<()> {
        match self {
            Self::Grpc(_) => {
                let mut client = self.grpc_client(worker);
                if let [body] = bodies {
                    let request = pb::SendMessageRequest {
                        queue_name: queue.to_owned(),
                        body: body.clone(),
                        message_group_id: group.map(str::to_owned),
                        ..Default::default()
                    };
                    client.send_message(request).await?;
                } else {
                    let entries = bodies
                        .iter()
                        .enumerate()
                        .map(|(i, body)| pb::SendMessageBatchEntry {
                            id: i.to_string(),
                            body: body.clone(),
                            message_group_id: group.map(str::to_owned),
                            ..Default::default()
                        })
                        .collect();
                    let reply = client
                        .send_message_batch(pb::SendMessageBatchRequest {
                            queue_name: queue.to_owned(),
                            entries,
                        })
                        .await?;
                    if !reply.get_ref().failed.is_empty() {
                        bail!("batch entries failed: {:?}", reply.get_ref().failed);
                    }
                }
            }
            Self::Amqp(amqp) => peer_call(amqp.send(worker, queue, bodies)).await?,
            Self::Nats(nats) => peer_call(nats.send(worker, queue, bodies)).await?,
            Self::Sqs { .. } => {
                let url = self.queue_url(worker, queue);
                if let [body] = bodies {
                    let mut request = json!({ "QueueUrl": url, "MessageBody": body });
                    if let Some(group) = group {
                        request["MessageGroupId"] = json!(group);
                    }
                    self.sqs_call(worker, "SendMessage", request).await?;
                } else {
                    let entries: Vec<Value> = bodies
                        .iter()
                        .enumerate()
                        .map(|(i, body)| {
                            let mut entry = json!({ "Id": i.to_string(), "MessageBody": body });
                            if let Some(group) = group {
                                entry["MessageGroupId"] = json!(group);
                            }
                            entry
                        })
                        .collect();
                    let reply = self
                        .sqs_call(
                            worker,
                            "SendMessageBatch",
                            json!({ "QueueUrl": url, "Entries": entries }),
                        )
                        .await?;
                    if reply
                        .get("Failed")
                        .and_then(Value::as_array)
                        .is_some_and(|failed| !failed.is_empty())
                    {
                        bail!("batch entries failed: {reply}");
                    }
                }
            }
        }
        Ok(())
    }

    pub async fn receive(
        &self,
        worker: usize,
        queue: &str,
        max: u32,
        wait_seconds: u32,
    ) -> anyhow::Result<Vec<Received>> {
        match self {
            Self::Grpc(_) => {
                let request = pb::ReceiveMessageRequest {
                    queue_name: queue.to_owned(),
                    max_number_of_messages: max,
                    wait_time_seconds: Some(wait_seconds),
                    ..Default::default()
                };
                let reply = self
                    .grpc_client(worker)
                    .receive_message(request)
                    .await?
                    .into_inner();
                Ok(reply
                    .messages
                    .into_iter()
                    .map(|m| Received {
                        body: m.body,
                        receipt_handle: m.receipt_handle,
                    })
                    .collect())
            }
            Self::Amqp(amqp) => {
                let wait = Duration::from_secs(wait_seconds.into());
                peer_call(amqp.receive(worker, queue, max, wait)).await
            }
            Self::Nats(nats) => {
                let wait = Duration::from_secs(wait_seconds.into());
                peer_call(nats.receive(worker, queue, max, wait)).await
            }
            Self::Sqs { .. } => {
                let request = json!({
                    "QueueUrl": self.queue_url(worker, queue),
                    "MaxNumberOfMessages": max,
                    "WaitTimeSeconds": wait_seconds,
                });
                let reply = self.sqs_call(worker, "ReceiveMessage", request).await?;
                let messages = reply
                    .get("Messages")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                Ok(messages
                    .into_iter()
                    .map(|m| Received {
                        body: m["Body"].as_str().unwrap_or_default().to_owned(),
                        receipt_handle: m["ReceiptHandle"].as_str().unwrap_or_default().to_owned(),
                    })
                    .collect())
            }
        }
    }

    pub async fn delete(
        &self,
        worker: usize,
        queue: &str,
        handles: Vec<String>,
    ) -> anyhow::Result<()> {
        if handles.is_empty() {
            return Ok(());
        }
        match self {
            Self::Grpc(_) => {
                let entries = handles
                    .into_iter()
                    .enumerate()
                    .map(|(i, receipt_handle)| pb::DeleteMessageBatchEntry {
                        id: i.to_string(),
                        receipt_handle,
                    })
                    .collect();
                self.grpc_client(worker)
                    .delete_message_batch(pb::DeleteMessageBatchRequest {
                        queue_name: queue.to_owned(),
                        entries,
                    })
                    .await?;
            }
            Self::Amqp(amqp) => peer_call(amqp.delete(worker, queue, &handles)).await?,
            Self::Nats(nats) => peer_call(nats.delete(&handles)).await?,
            Self::Sqs { .. } => {
                let entries: Vec<Value> = handles
                    .iter()
                    .enumerate()
                    .map(|(i, handle)| json!({ "Id": i.to_string(), "ReceiptHandle": handle }))
                    .collect();
                let request =
                    json!({ "QueueUrl": self.queue_url(worker, queue), "Entries": entries });
                self.sqs_call(worker, "DeleteMessageBatch", request).await?;
            }
        }
        Ok(())
    }
}

/// Bounds a call to a peer as the HTTP and gRPC clients' own timeouts bound calls to Ferry.
pub async fn peer_call<T>(call: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .context("the peer did not answer in time")?
}
