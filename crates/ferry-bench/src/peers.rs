//! The durable replicated peers the benchmark issue compares Ferry with, driven by the same
//! scenarios: a RabbitMQ quorum queue over AMQP 0-9-1 (persistent messages, publisher confirms,
//! manual acks) and a NATS JetStream stream with 3 replicas (publish acknowledgements, a durable
//! pull consumer with explicit acks). A "batch" is the messages a worker publishes before it waits
//! for their confirmations: 1 is a synchronous producer, more is pipelining.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use async_nats::jetstream;
use bytes::Bytes;
use futures::{FutureExt, Stream, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use crate::client::Received;

/// Deliveries a RabbitMQ consumer may hold unacknowledged (its prefetch).
const AMQP_PREFETCH: u16 = 100;
/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;
/// Messages a NATS consumer's pull stream asks for ahead (its prefetch).
const NATS_PREFETCH: usize = 100;

/// A worker's index and a queue's name.
type WorkerQueue = (usize, String);

/// A state per worker and queue (its consumer), made on first use and kept between calls.
struct PerWorker<T>(Mutex<HashMap<WorkerQueue, Arc<Mutex<T>>>>);

impl<T> PerWorker<T> {
    fn new() -> Self {
        Self(Mutex::new(HashMap::new()))
    }

    async fn get_or_make<F>(
        &self,
        worker: usize,
        queue: &str,
        make: impl FnOnce() -> F,
    ) -> anyhow::Result<Arc<Mutex<T>>>
    where
        F: Future<Output = anyhow::Result<T>>,
    {
        let mut states = self.0.lock().await;
        let key = (worker, queue.to_owned());
        if let Some(state) = states.get(&key) {
            return Ok(state.clone());
        }
        let state = Arc::new(Mutex::new(make().await?));
        states.insert(key, state.clone());
        Ok(state)
    }
}

/// Waits up to `wait` for the first item of `stream`, then takes what else is ready, up to `max`:
/// a long poll over a consumer that the broker keeps fed.
async fn take_ready<S: Stream + Unpin>(stream: &mut S, max: usize, wait: Duration) -> Vec<S::Item> {
    let mut items = Vec::new();
    if let Ok(Some(first)) = tokio::time::timeout(wait, stream.next()).await {
        items.push(first);
        while items.len() < max {
            match stream.next().now_or_never().flatten() {
                Some(item) => items.push(item),
                None => break,
            }
        }
    }
    items
}

/// One consumer of a queue, kept between a worker's receive and its delete.
struct AmqpConsumer {
    channel: lapin::Channel,
    deliveries: lapin::Consumer,
}

/// A 3-node RabbitMQ cluster: one connection per node, one confirming channel per sender.
pub struct Amqp {
    connections: Vec<Connection>,
    publishers: Vec<lapin::Channel>,
    consumers: PerWorker<AmqpConsumer>,
}

impl Amqp {
    pub async fn connect(endpoints: &[String], senders: usize) -> anyhow::Result<Self> {
        let mut connections = Vec::new();
        for endpoint in endpoints {
            let connection = Connection::connect(endpoint, ConnectionProperties::default())
                .await
                .with_context(|| format!("connecting to {endpoint}"))?;
            connections.push(connection);
        }
        let mut publishers = Vec::with_capacity(senders);
        for sender in 0..senders {
            let channel = connections[sender % connections.len()]
                .create_channel()
                .await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            publishers.push(channel);
        }
        Ok(Self {
            connections,
            publishers,
            consumers: PerWorker::new(),
        })
    }

    pub async fn create_queue(&self, queue: &str) -> anyhow::Result<()> {
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        self.publishers[0]
            .queue_declare(queue.into(), QueueDeclareOptions::durable(), arguments)
            .await?;
        Ok(())
    }

    /// Publishes every body, then waits until the broker has confirmed each one.
    pub async fn send(&self, worker: usize, queue: &str, bodies: &[String]) -> anyhow::Result<()> {
        let channel = &self.publishers[worker % self.publishers.len()];
        let mut confirms = Vec::with_capacity(bodies.len());
        for body in bodies {
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    BasicProperties::default().with_delivery_mode(PERSISTENT),
                )
                .await?;
            confirms.push(confirm);
        }
        for confirm in confirms {
            if !confirm.await?.is_ack() {
                bail!("the broker refused a message (nack)");
            }
        }
        Ok(())
    }

    /// Waits up to `wait` for a delivery, then takes what else is already here, up to `max`.
    pub async fn receive(
        &self,
        worker: usize,
        queue: &str,
        max: u32,
        wait: Duration,
    ) -> anyhow::Result<Vec<Received>> {
        let consumer = self.consumer(worker, queue).await?;
        let mut consumer = consumer.lock().await;
        take_ready(&mut consumer.deliveries, max as usize, wait)
            .await
            .into_iter()
            .map(|delivery| {
                let delivery = delivery?;
                Ok(Received {
                    body: String::from_utf8_lossy(&delivery.data).into_owned(),
                    receipt_handle: delivery.delivery_tag.to_string(),
                })
            })
            .collect()
    }

    /// Acknowledges every delivery up to the highest of `handles` at once.
    pub async fn delete(
        &self,
        worker: usize,
        queue: &str,
        handles: &[String],
    ) -> anyhow::Result<()> {
        let Some(last) = handles.iter().filter_map(|h| h.parse::<u64>().ok()).max() else {
            return Ok(());
        };
        let consumer = self.consumer(worker, queue).await?;
        let consumer = consumer.lock().await;
        consumer
            .channel
            .basic_ack(last, BasicAckOptions { multiple: true })
            .await?;
        Ok(())
    }

    async fn consumer(
        &self,
        worker: usize,
        queue: &str,
    ) -> anyhow::Result<Arc<Mutex<AmqpConsumer>>> {
        let connection = &self.connections[worker % self.connections.len()];
        self.consumers
            .get_or_make(worker, queue, async || {
                let channel = connection.create_channel().await?;
                channel
                    .basic_qos(AMQP_PREFETCH, BasicQosOptions::default())
                    .await?;
                let deliveries = channel
                    .basic_consume(
                        queue.into(),
                        format!("bench-{worker}").into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                Ok(AmqpConsumer {
                    channel,
                    deliveries,
                })
            })
            .await
    }
}

/// A 3-node NATS cluster with JetStream: one client per node.
pub struct Nats {
    contexts: Vec<jetstream::Context>,
    /// Each worker's pull stream of a queue, which keeps up to [`NATS_PREFETCH`] messages coming.
    consumers: PerWorker<jetstream::consumer::pull::Stream>,
    /// Messages received and not yet acknowledged, by their stream sequence.
    pending: Mutex<HashMap<String, jetstream::Message>>,
}

impl Nats {
    pub async fn connect(endpoints: &[String]) -> anyhow::Result<Self> {
        let mut contexts = Vec::new();
        for endpoint in endpoints {
            let client = async_nats::connect(endpoint.as_str())
                .await
                .with_context(|| format!("connecting to {endpoint}"))?;
            contexts.push(jetstream::new(client));
        }
        Ok(Self {
            contexts,
            consumers: PerWorker::new(),
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// A work-queue stream on file storage with 3 replicas, and a durable pull consumer.
    pub async fn create_queue(&self, queue: &str) -> anyhow::Result<()> {
        let stream = self.contexts[0]
            .get_or_create_stream(jetstream::stream::Config {
                name: queue.to_owned(),
                subjects: vec![queue.to_owned()],
                retention: jetstream::stream::RetentionPolicy::WorkQueue,
                storage: jetstream::stream::StorageType::File,
                num_replicas: 3,
                ..Default::default()
            })
            .await?;
        stream
            .get_or_create_consumer(
                queue,
                jetstream::consumer::pull::Config {
                    durable_name: Some(queue.to_owned()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ..Default::default()
                },
            )
            .await?;
        Ok(())
    }

    /// Publishes every body, then waits for each one's acknowledgement (stored on a majority).
    pub async fn send(&self, worker: usize, queue: &str, bodies: &[String]) -> anyhow::Result<()> {
        let context = &self.contexts[worker % self.contexts.len()];
        let mut acks = Vec::with_capacity(bodies.len());
        for body in bodies {
            let ack = context
                .publish(queue.to_owned(), Bytes::copy_from_slice(body.as_bytes()))
                .await?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await?;
        }
        Ok(())
    }

    /// Waits up to `wait` for a message, then takes what else is already here, up to `max`.
    pub async fn receive(
        &self,
        worker: usize,
        queue: &str,
        max: u32,
        wait: Duration,
    ) -> anyhow::Result<Vec<Received>> {
        let stream = self.consumer(worker, queue).await?;
        let mut stream = stream.lock().await;
        let mut received = Vec::new();
        let mut pending = Vec::new();
        for message in take_ready(&mut *stream, max as usize, wait).await {
            let message = message.map_err(|e| anyhow::anyhow!("pull: {e}"))?;
            let handle = message
                .info()
                .map_err(|e| anyhow::anyhow!("message info: {e}"))?
                .stream_sequence
                .to_string();
            received.push(Received {
                body: String::from_utf8_lossy(&message.payload).into_owned(),
                receipt_handle: handle.clone(),
            });
            pending.push((handle, message));
        }
        self.pending.lock().await.extend(pending);
        Ok(received)
    }

    /// Acknowledges the messages at once, each waiting for the server to confirm it.
    pub async fn delete(&self, handles: &[String]) -> anyhow::Result<()> {
        let messages: Vec<_> = {
            let mut pending = self.pending.lock().await;
            handles.iter().filter_map(|h| pending.remove(h)).collect()
        };
        futures::future::try_join_all(messages.iter().map(|m| m.double_ack()))
            .await
            .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        Ok(())
    }

    async fn consumer(
        &self,
        worker: usize,
        queue: &str,
    ) -> anyhow::Result<Arc<Mutex<jetstream::consumer::pull::Stream>>> {
        let context = &self.contexts[worker % self.contexts.len()];
        self.consumers
            .get_or_make(worker, queue, async || {
                let consumer: jetstream::consumer::PullConsumer =
                    context.get_consumer_from_stream(queue, queue).await?;
                Ok(consumer
                    .stream()
                    .max_messages_per_batch(NATS_PREFETCH)
                    .messages()
                    .await?)
            })
            .await
    }
}
