//! The broker: the one API every transport (gRPC, SQS HTTP) calls. It validates requests exactly as
//! SQS does, keeps queues in the catalog group, places and routes partition requests to their
//! leaders, spreads sends over partitions, gathers receives from them and long-polls on all at once.
//!
//! Rule: no wire formats here (no HTTP, no protobuf types), and no storage access but through
//! `ferry-raft`'s read handles.

mod api;
pub mod attributes;
mod fifo;
mod in_flight;
mod leader;
mod merge;
mod moves;
mod permissions;
mod queue_metrics;
mod redrive;
mod request;
mod routing;
mod send_routing;
pub mod validate;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_catalog::{
    CatalogCommand, CatalogResult, MoveTaskStatus, Partition, Permission, QueueRecord, MAX_TAGS,
};
use ferry_queue::{
    DeleteOutcome, HandleRef, NewMessage, QueueCommand, QueueResult, ReceiveCommand, SentMessage,
    VisibilityChange, VisibilityError,
};
use ferry_raft::{CommandBody, CommandResult, ForwardHandler, MultiRaft};
use ferry_types::{
    md5_hex, md5_of_message_attributes, AttributeData, AttributeValue, ErrorCode, FerryError,
    GroupId, MessageAttributes, QueueName, ReceiptHandle, ReceiptKey, CATALOG_GROUP,
};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::watch;
use tokio::time::Instant;

pub use api::*;
use attributes::{
    DELAY_SECONDS, MAXIMUM_MESSAGE_SIZE, MESSAGE_RETENTION_PERIOD, RECEIVE_WAIT_TIME,
    VISIBILITY_TIMEOUT,
};
pub use in_flight::DEFAULT_IN_FLIGHT_LIMIT;
use leader::{next_wake, release_command, wall_clock_ms, LocalLeader};
use request::{GroupReply, GroupRequest};
use routing::Router;
pub use send_routing::DEFAULT_HOME_PARTITION_SENDS;
use validate::{
    check_batch_ids, check_range, Sending, MAX_BATCH_ENTRIES, MAX_DELAY_SECONDS,
    MAX_VISIBILITY_TIMEOUT, MAX_WAIT_SECONDS,
};

/// Most partitions a queue may have.
pub const MAX_PARTITIONS: u32 = 64;
const MAX_LIST_RESULTS: u32 = 1_000;
/// How often each leader looks for messages past their retention period.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);
const EXPIRE_PER_ROUND: u32 = 1_000;
/// A partition leader hands leadership to the partition's first replica (placement spreads those
/// evenly) only if that replica is at most this many entries behind.
const HAND_OVER_MAX_LAG: u64 = 64;
/// Dead-lettered messages a partition leader moves per housekeeping round.
const DEAD_LETTERS_PER_ROUND: usize = 100;
/// How long a long poll from a node without a replica waits before asking a partition at its
/// in-flight limit again (its leader counts again after as long).
const OVER_LIMIT_PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Partitions of a standard queue created without an explicit count.
    pub default_partitions: u32,
    /// Replicas of each partition (capped at the cluster size).
    pub replication_factor: u32,
    pub region: String,
    pub account_id: String,
    /// The SenderId system attribute of messages sent without a known caller identity.
    pub sender_id: String,
    /// The secret that authenticates receipt handles; the same on every node.
    pub receipt_secret: Vec<u8>,
    /// How long a request may wait for a partition leader before it fails as unavailable.
    pub request_timeout: Duration,
    /// Messages a queue may hold in flight (SQS: about 120,000), shared out over its partitions.
    pub in_flight_limit: u64,
    /// Sends of one standard queue under way from this node below which the next one goes to the
    /// queue's first partition (see [`send_routing`]); 0 spreads every send.
    pub home_partition_sends: usize,
}

pub struct Broker {
    multi: Arc<MultiRaft>,
    router: Router,
    config: BrokerConfig,
    receipts: ReceiptHandle,
    next_partition: AtomicUsize,
    send_routing: send_routing::SendRouting,
    backlog_gauges: queue_metrics::BacklogGauges,
}

impl Broker {
    pub fn new(multi: Arc<MultiRaft>, config: BrokerConfig) -> Arc<Self> {
        let leader = LocalLeader::new(multi.clone(), config.in_flight_limit);
        let router = Router::new(multi.clone(), leader);
        let receipts = ReceiptHandle::new(config.receipt_secret.clone());
        Arc::new(Self {
            multi,
            router,
            config,
            receipts,
            next_partition: AtomicUsize::new(0),
            send_routing: send_routing::SendRouting::default(),
            backlog_gauges: queue_metrics::BacklogGauges::default(),
        })
    }

    /// What the internal transport calls with requests other nodes forward to this one.
    pub fn forward_handler(&self) -> Arc<dyn ForwardHandler> {
        Arc::new(self.router.clone())
    }

    /// Whether this node should take client requests (see `MultiRaft::is_ready`).
    pub fn is_ready(&self) -> bool {
        self.multi.is_ready()
    }

    /// Sets the per-queue backlog gauges from the partitions this node leads; call before the
    /// metrics are rendered.
    pub async fn refresh_queue_gauges(&self) {
        self.backlog_gauges
            .refresh(&self.multi, queue_metrics::SCRAPE_REFRESH_AGE)
            .await;
    }

    pub fn queue_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:sqs:{}:{}:{name}",
            self.config.region, self.config.account_id
        )
    }

    pub fn account_id(&self) -> &str {
        &self.config.account_id
    }

    // ---- queue administration ----

    pub async fn create_queue(
        &self,
        name: &str,
        attributes: BTreeMap<String, String>,
        tags: BTreeMap<String, String>,
        partitions: u32,
    ) -> Result<QueueInfo, FerryError> {
        let name = QueueName::parse(name)?;
        let mut attributes = attributes::validate(&attributes, name.is_fifo(), true)?;
        self.check_redrive(name.as_str(), name.is_fifo(), &mut attributes)
            .await?;
        check_tags(&tags)?;
        let requested = match partitions {
            0 => self.config.default_partitions,
            n if n <= MAX_PARTITIONS => n,
            n => {
                return Err(FerryError::invalid(format!(
                    "Value {n} for parameter Partitions is invalid. Reason: Must be between 1 and {MAX_PARTITIONS}."
                )))
            }
        };
        // A FIFO queue deduplicating across the whole queue is one partition, so one leader orders
        // and deduplicates it all; high-throughput FIFO spreads its groups over several.
        let partitions = if name.is_fifo() && !fifo::is_high_throughput(&attributes) {
            1
        } else {
            requested
        };
        let command = CatalogCommand::CreateQueue {
            name: name.as_str().to_owned(),
            fifo: name.is_fifo(),
            attributes: attributes.clone(),
            tags,
            partitions,
            replication_factor: self.config.replication_factor,
            nodes: self.multi.members().keys().copied().collect(),
        };
        match self.catalog(command).await {
            Ok(queue) => Ok(queue_info(&queue)),
            // The catalog takes a create of an existing queue only with exactly its stored
            // attributes. SQS compares just the attributes the call names, against the queue's
            // values with defaults filled in: a create with none, or with a default the queue
            // kept, returns the queue.
            Err(error) if error.code == ErrorCode::QueueNameExists => {
                let existing = self.current_queue(name.as_str()).await?;
                match attributes::first_difference(&existing, &attributes) {
                    None => Ok(queue_info(&existing)),
                    Some(differing) => Err(FerryError::new(
                        ErrorCode::QueueNameExists,
                        format!("A queue already exists with the same name and a different value for attribute {differing}"),
                    )),
                }
            }
            Err(error) => Err(error),
        }
    }

    pub async fn get_queue(&self, name: &str) -> Result<QueueInfo, FerryError> {
        Ok(queue_info(&self.current_queue(name).await?))
    }

    /// Queues in name order, read from the catalog leader so a client sees its own creates and
    /// deletes whichever node it asks. `next_token` names the last queue of the previous page.
    pub async fn list_queues(
        &self,
        prefix: &str,
        max_results: Option<u32>,
        next_token: Option<&str>,
    ) -> Result<ListQueuesOutput, FerryError> {
        let (after, limit) = page_request(max_results, next_token)?;
        let request = GroupRequest::ListQueues {
            prefix: prefix.to_owned(),
            after,
            limit: limit + 1,
        };
        match self.execute_catalog(request).await? {
            GroupReply::Names(names) => Ok(page(names, limit, max_results.is_some())),
            other => Err(FerryError::internal(format!("list answered {other:?}"))),
        }
    }

    pub async fn delete_queue(&self, name: &str) -> Result<(), FerryError> {
        self.catalog(CatalogCommand::DeleteQueue {
            name: name.to_owned(),
        })
        .await
        .map(drop)
    }

    pub async fn get_queue_attributes(
        &self,
        name: &str,
        names: &[String],
    ) -> Result<BTreeMap<String, String>, FerryError> {
        attributes::check_names(names)?;
        let queue = self.current_queue(name).await?;
        let counts = if attributes::wants_counts(names) {
            self.counts(&queue).await?
        } else {
            Default::default()
        };
        let arn = self.queue_arn(&queue.name);
        let mut all = attributes::all(&queue, counts, &arn);
        if !all.contains_key("Policy") && !queue.permissions.is_empty() {
            all.insert("Policy".into(), permissions::policy_document(&queue, &arn));
        }
        Ok(attributes::select(all, names))
    }

    pub async fn set_queue_attributes(
        &self,
        name: &str,
        attributes: BTreeMap<String, String>,
    ) -> Result<(), FerryError> {
        let queue = self.queue(name).await?;
        let mut attributes = attributes::validate(&attributes, queue.fifo, false)?;
        self.check_redrive(&queue.name, queue.fifo, &mut attributes)
            .await?;
        self.catalog(CatalogCommand::SetAttributes {
            name: queue.name,
            attributes,
        })
        .await
        .map(drop)
    }

    /// Checks RedrivePolicy (the target exists, is of the same type, and allows this source) and
    /// RedriveAllowPolicy, and stores them in SQS's normal form.
    async fn check_redrive(
        &self,
        name: &str,
        fifo: bool,
        attributes: &mut BTreeMap<String, String>,
    ) -> Result<(), FerryError> {
        if let Some(text) = attributes.get("RedriveAllowPolicy") {
            let normalised = redrive::check_allow_policy(text)?;
            attributes.insert("RedriveAllowPolicy".into(), normalised);
        }
        let Some(text) = attributes.get("RedrivePolicy") else {
            return Ok(());
        };
        let Some(policy) = redrive::parse_redrive_policy(text)? else {
            attributes.insert("RedrivePolicy".into(), String::new());
            return Ok(());
        };
        let invalid = |reason: &str| {
            FerryError::new(
                ErrorCode::InvalidParameterValue,
                format!("Value {text} for parameter RedrivePolicy is invalid. Reason: {reason}"),
            )
        };
        let target = self
            .queue_by_arn(&policy.target_arn)
            .await
            .map_err(|_| invalid("Dead-letter target does not exist."))?;
        if target.fifo != fifo {
            return Err(invalid(
                "Dead-letter target must be the same type of queue as the source.",
            ));
        }
        if !redrive::allows_source(&target, &self.queue_arn(name)) {
            return Err(invalid(
                "Dead-letter target's RedriveAllowPolicy does not allow this queue as a source.",
            ));
        }
        attributes.insert(
            "RedrivePolicy".into(),
            redrive::render_redrive_policy(&policy),
        );
        Ok(())
    }

    /// Removes every message; one purge per queue per 60 s, as in SQS.
    pub async fn purge_queue(&self, name: &str) -> Result<(), FerryError> {
        let queue = self
            .catalog(CatalogCommand::StartPurge {
                name: name.to_owned(),
            })
            .await?;
        let purges = queue
            .partitions
            .iter()
            .map(|partition| self.apply(partition, QueueCommand::Purge));
        for result in futures::future::join_all(purges).await {
            result?;
        }
        Ok(())
    }

    pub async fn tag_queue(
        &self,
        name: &str,
        tags: BTreeMap<String, String>,
    ) -> Result<(), FerryError> {
        check_tags(&tags)?;
        let queue = self.queue(name).await?;
        self.catalog(CatalogCommand::TagQueue {
            name: queue.name,
            tags,
        })
        .await
        .map(drop)
    }

    pub async fn untag_queue(&self, name: &str, keys: Vec<String>) -> Result<(), FerryError> {
        let queue = self.queue(name).await?;
        self.catalog(CatalogCommand::UntagQueue {
            name: queue.name,
            keys,
        })
        .await
        .map(drop)
    }

    pub async fn list_queue_tags(
        &self,
        name: &str,
    ) -> Result<BTreeMap<String, String>, FerryError> {
        Ok(self.current_queue(name).await?.tags)
    }

    /// Grants accounts the right to call actions on a queue (a statement of its Policy).
    pub async fn add_permission(
        &self,
        name: &str,
        label: &str,
        account_ids: Vec<String>,
        actions: Vec<String>,
    ) -> Result<(), FerryError> {
        permissions::check_label(label)?;
        permissions::check_grant(&account_ids, &actions)?;
        let queue = self.queue(name).await?;
        let permission = Permission {
            account_ids,
            actions,
        };
        let command = CatalogCommand::AddPermission {
            name: queue.name,
            label: label.to_owned(),
            permission,
        };
        self.catalog(command).await.map(drop)
    }

    pub async fn remove_permission(&self, name: &str, label: &str) -> Result<(), FerryError> {
        let queue = self.queue(name).await?;
        self.catalog(CatalogCommand::RemovePermission {
            name: queue.name,
            label: label.to_owned(),
        })
        .await
        .map(drop)
    }

    /// Queues whose RedrivePolicy names this queue as their dead-letter queue, in name order.
    pub async fn list_dead_letter_source_queues(
        &self,
        name: &str,
        max_results: Option<u32>,
        next_token: Option<&str>,
    ) -> Result<ListQueuesOutput, FerryError> {
        let (after, limit) = page_request(max_results, next_token)?;
        let dead_letter = self.current_queue(name).await?;
        let arn = self.queue_arn(&dead_letter.name);
        let catalog = self.multi.catalog().borrow().clone();
        let names = catalog
            .queues
            .values()
            .filter(|queue| {
                after
                    .as_ref()
                    .is_none_or(|after| queue.name.as_str() > after.as_str())
            })
            .filter(|queue| permissions::dead_letter_target(queue).as_deref() == Some(arn.as_str()))
            .map(|queue| queue.name.clone())
            .take(limit + 1)
            .collect();
        Ok(page(names, limit, max_results.is_some()))
    }

    /// Starts moving a dead-letter queue's messages to their source queues, or to a destination.
    pub async fn start_message_move_task(
        &self,
        source_arn: &str,
        destination_arn: Option<&str>,
        max_per_second: Option<u32>,
    ) -> Result<String, FerryError> {
        let source = self.queue_by_arn(source_arn).await?;
        if let Some(rate) = max_per_second {
            check_range(
                "MaxNumberOfMessagesPerSecond",
                rate,
                1,
                moves::MAX_PER_SECOND,
            )?;
        }
        let destination = match destination_arn {
            Some(arn) => Some(self.queue_by_arn(arn).await?.name),
            None => None,
        };
        let arn = self.queue_arn(&source.name);
        let catalog = self.multi.catalog().borrow().clone();
        if !catalog
            .queues
            .values()
            .any(|queue| permissions::dead_letter_target(queue).as_deref() == Some(arn.as_str()))
        {
            return Err(FerryError::invalid(
                "Source queue must be configured as a Dead Letter Queue.",
            ));
        }
        let to_move = self.counts(&source).await?.visible;
        let command = CatalogCommand::StartMoveTask {
            source: source.name,
            destination,
            max_per_second,
            to_move,
        };
        match self.catalog_command(command).await? {
            CatalogResult::MoveTask(task) => Ok(moves::task_handle(&task)),
            CatalogResult::Failed(error) => Err(error),
            other => Err(FerryError::internal(format!(
                "start move task answered {other:?}"
            ))),
        }
    }

    /// Cancels a running move task; returns how many messages it had moved.
    pub async fn cancel_message_move_task(&self, task_handle: &str) -> Result<u64, FerryError> {
        let id = moves::parse_task_handle(task_handle)?;
        let command = CatalogCommand::UpdateMoveTask {
            id,
            moved: 0,
            status: MoveTaskStatus::Cancelled,
            failure_reason: None,
        };
        match self.catalog_command(command).await? {
            CatalogResult::MoveTask(task) => Ok(task.moved),
            CatalogResult::Failed(error) => Err(error),
            other => Err(FerryError::internal(format!(
                "cancel move task answered {other:?}"
            ))),
        }
    }

    /// The move tasks of a source queue, most recent first.
    pub async fn list_message_move_tasks(
        &self,
        source_arn: &str,
        max_results: Option<u32>,
    ) -> Result<Vec<MoveTaskInfo>, FerryError> {
        let max = match max_results {
            Some(max) => check_range("MaxResults", max, 1, 10)?,
            None => 1,
        };
        let source = self.queue_by_arn(source_arn).await?;
        let catalog = self.multi.catalog().borrow().clone();
        Ok(catalog
            .move_tasks
            .values()
            .rev()
            .filter(|task| task.source == source.name)
            .take(max as usize)
            .map(|task| MoveTaskInfo {
                task_handle: (task.status == MoveTaskStatus::Running)
                    .then(|| moves::task_handle(task)),
                status: task.status.as_str().to_owned(),
                source_arn: self.queue_arn(&task.source),
                destination_arn: task.destination.as_deref().map(|name| self.queue_arn(name)),
                max_per_second: task.max_per_second,
                moved: task.moved,
                to_move: Some(task.to_move),
                failure_reason: task.failure_reason.clone(),
                started_at_ms: task.started_at_ms,
            })
            .collect())
    }

    /// The queue an ARN of this cluster names.
    async fn queue_by_arn(&self, arn: &str) -> Result<QueueRecord, FerryError> {
        let not_found = || {
            FerryError::new(
                ErrorCode::ResourceNotFound,
                "The resource that you specified for the SourceArn parameter doesn't exist.",
            )
        };
        let prefix = format!(
            "arn:aws:sqs:{}:{}:",
            self.config.region, self.config.account_id
        );
        let name = arn.strip_prefix(&prefix).ok_or_else(not_found)?;
        self.current_queue(name).await.map_err(|_| not_found())
    }

    // ---- messages ----

    pub async fn send_message(
        &self,
        queue: &str,
        input: SendInput,
    ) -> Result<SendOutput, FerryError> {
        let queue = self.queue(queue).await?;
        let prepared = self.prepare_send(&queue, input, Sending::Alone)?;
        let mut outputs = self.send_prepared(&queue, vec![prepared]).await?;
        outputs
            .pop()
            .ok_or_else(|| FerryError::internal("send stored nothing"))
    }

    /// Stores the valid entries (for each partition, all or none of its entries); invalid entries
    /// fail on their own.
    pub async fn send_message_batch(
        &self,
        queue: &str,
        entries: Vec<(String, SendInput)>,
    ) -> Result<BatchOutcome<SendOutput>, FerryError> {
        check_batch_ids(entries.iter().map(|(id, _)| id.as_str()))?;
        let total: usize = entries
            .iter()
            .map(|(_, input)| message_size(input.body.len(), &input.attributes))
            .sum();
        if total > attributes::MAX_MESSAGE_BYTES {
            return Err(FerryError::new(
                ErrorCode::BatchRequestTooLong,
                format!(
                    "Batch requests cannot be longer than {} bytes. You have sent {total} bytes.",
                    attributes::MAX_MESSAGE_BYTES
                ),
            ));
        }
        let queue = self.queue(queue).await?;
        if queue.fifo {
            for (_, input) in &entries {
                fifo::check_batch_entry(&queue, input)?;
            }
        }
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut valid = Vec::with_capacity(entries.len());
        let mut positions = Vec::with_capacity(entries.len());
        for (id, input) in entries {
            match self.prepare_send(&queue, input, Sending::InBatch) {
                Ok(prepared) => {
                    positions.push(outcomes.len());
                    valid.push(prepared);
                    outcomes.push((id, Err(FerryError::internal("not stored"))));
                }
                Err(error) => outcomes.push((id, Err(error))),
            }
        }
        if !valid.is_empty() {
            let outputs = self.send_prepared(&queue, valid).await?;
            for (position, output) in positions.into_iter().zip(outputs) {
                outcomes[position].1 = Ok(output);
            }
        }
        Ok(outcomes)
    }

    fn prepare_send(
        &self,
        queue: &QueueRecord,
        input: SendInput,
        sending: Sending,
    ) -> Result<(NewMessage, SendOutput), FerryError> {
        let max_bytes = attributes::number(queue, MAXIMUM_MESSAGE_SIZE) as usize;
        validate::check_message(&input.body, &input.attributes, max_bytes, sending)?;
        let fifo = fifo::resolve(queue, &input)?;
        // A FIFO message takes the queue's delay (`resolve` let only an explicit 0 through).
        let delay_seconds = match input.delay_seconds.filter(|_| !queue.fifo) {
            Some(delay) => check_range(DELAY_SECONDS, delay, 0, MAX_DELAY_SECONDS)?,
            None => attributes::number(queue, DELAY_SECONDS) as u32,
        };
        let mut system = MessageAttributes::new();
        if let Some(trace) = &input.trace_header {
            validate::check_text(trace, "AWSTraceHeader")?;
            system.insert(
                "AWSTraceHeader".into(),
                AttributeValue {
                    data_type: "String".into(),
                    value: AttributeData::String(trace.clone()),
                },
            );
        }
        let output = SendOutput {
            message_id: uuid::Uuid::new_v4().to_string(),
            md5_of_body: md5_hex(input.body.as_bytes()),
            md5_of_attributes: md5_of_message_attributes(&input.attributes),
            md5_of_system_attributes: md5_of_message_attributes(&system),
            sequence_number: None,
        };
        let message = NewMessage {
            message_id: output.message_id.clone(),
            body: Bytes::from(input.body),
            attributes: input.attributes,
            trace_header: input.trace_header,
            sender_id: input
                .sender_id
                .unwrap_or_else(|| self.config.sender_id.clone()),
            delay_seconds,
            group_id: fifo.group_id,
            deduplication_id: fifo.deduplication_id,
            dedup_key: fifo.dedup_key,
            dead_letter_source: None,
            fair_group: fifo.fair_group,
        };
        Ok((message, output))
    }

    /// Stores messages, in order, in their partitions: a FIFO group's own partition, or for a
    /// standard queue the next partition in turn among those this node leads (no forwarding hop;
    /// clients spread over the nodes spread the load over the partitions), or among all if it leads
    /// none. Returns what each message became (the original's id and sequence for a deduplicated
    /// send).
    async fn store_messages(
        &self,
        queue: &QueueRecord,
        mut messages: Vec<NewMessage>,
    ) -> Result<Vec<SentMessage>, FerryError> {
        // During a rolling upgrade a node of an earlier build could not read a send that keeps
        // fair-queue groups: the messages go without them (they order nothing) until it is gone.
        if messages.iter().any(|message| message.fair_group.is_some())
            && !self.multi.members_decode(ferry_queue::FAIR_GROUPS_FORMAT)
        {
            tracing::debug!(queue = %queue.name, "a member does not read fair-queue groups yet; sending without them");
            for message in &mut messages {
                message.fair_group = None;
            }
        }
        let count = queue.partitions.len().max(1);
        // Counted for standard queues only: a FIFO message's group picks its partition.
        let under_way = (!queue.fifo).then(|| self.send_routing.begin(queue.id));
        let turn = if under_way
            .as_ref()
            .is_some_and(|under_way| self.sends_home(queue, under_way.before))
        {
            0
        } else {
            self.local_first(queue)[0]
        };
        let total = messages.len();
        let mut by_partition: BTreeMap<usize, (Vec<usize>, Vec<NewMessage>)> = BTreeMap::new();
        for (position, message) in messages.into_iter().enumerate() {
            let index = match &message.group_id {
                Some(group) if queue.fifo => fifo::partition_of(group, count),
                _ => turn,
            };
            let entry = by_partition.entry(index).or_default();
            entry.0.push(position);
            entry.1.push(message);
        }
        let sends = by_partition
            .into_iter()
            .map(|(index, (positions, messages))| async move {
                let partition = queue
                    .partitions
                    .get(index)
                    .ok_or_else(|| FerryError::internal("queue has no partitions"))?;
                match self.apply(partition, QueueCommand::send(messages)).await? {
                    QueueResult::Sent(sent) if sent.len() == positions.len() => {
                        Ok((positions, sent))
                    }
                    other => Err(FerryError::internal(format!("send answered {other:?}"))),
                }
            });
        let mut stored: Vec<Option<SentMessage>> = vec![None; total];
        for result in futures::future::join_all(sends).await {
            let (positions, sent) = result?;
            for (position, sent) in positions.into_iter().zip(sent) {
                stored[position] = Some(sent);
            }
        }
        stored
            .into_iter()
            .map(|sent| sent.ok_or_else(|| FerryError::internal("a message was not stored")))
            .collect()
    }

    /// Whether a send of a standard queue, begun with `before` others of the queue under way
    /// from this node, goes to the queue's first partition (see [`send_routing`]).
    fn sends_home(&self, queue: &QueueRecord, before: usize) -> bool {
        let Some(home) = queue.partitions.first() else {
            return false;
        };
        // Only while this node's replica knows the home's leader and hears from it: from a leader
        // that died or is cut off, the sends go elsewhere within 0.6 s instead of waiting for the
        // home's election (1.5–3 s), or for a forwarded call's timeout.
        let home_messages = || {
            self.multi
                .lively_leader(home.group)
                .and_then(|_| ferry_queue::message_count(&self.multi.read_state(home.group)).ok())
        };
        let share = self
            .config
            .in_flight_limit
            .div_ceil(queue.partitions.len() as u64);
        send_routing::goes_home(
            before,
            self.config.home_partition_sends,
            home_messages,
            share,
        )
    }

    /// Stores prepared sends and completes their outputs.
    async fn send_prepared(
        &self,
        queue: &QueueRecord,
        prepared: Vec<(NewMessage, SendOutput)>,
    ) -> Result<Vec<SendOutput>, FerryError> {
        let (messages, mut outputs): (Vec<_>, Vec<_>) = prepared.into_iter().unzip();
        let bytes = messages
            .iter()
            .map(|message| message_size(message.body.len(), &message.attributes))
            .sum();
        let stored = self.store_messages(queue, messages).await?;
        queue_metrics::count_sent(&queue.name, stored.len(), bytes);
        for (output, sent) in outputs.iter_mut().zip(stored) {
            output.message_id = sent.message_id;
            output.sequence_number = queue.fifo.then(|| fifo::sequence_number(sent.seq));
        }
        Ok(outputs)
    }

    pub async fn receive_message(
        &self,
        queue: &str,
        input: ReceiveInput,
    ) -> Result<Vec<ReceivedMessage>, FerryError> {
        let max = match input.max_messages {
            0 => 1,
            n => check_range("MaxNumberOfMessages", n, 1, MAX_BATCH_ENTRIES as u32)?,
        };
        let queue = self.queue(queue).await?;
        let visibility_timeout = match input.visibility_timeout {
            Some(timeout) => check_range(VISIBILITY_TIMEOUT, timeout, 0, MAX_VISIBILITY_TIMEOUT)?,
            None => attributes::number(&queue, VISIBILITY_TIMEOUT) as u32,
        };
        let wait_seconds = match input.wait_seconds {
            Some(wait) => check_range("WaitTimeSeconds", wait, 0, MAX_WAIT_SECONDS)?,
            None => attributes::number(&queue, RECEIVE_WAIT_TIME) as u32,
        };
        if let Some(attempt) = &input.attempt_id {
            fifo::check_attempt_id(attempt)?;
        }
        let template = ReceiveCommand {
            max,
            visibility_timeout_s: visibility_timeout,
            fifo: queue.fifo,
            max_receive_count: redrive::redrive_policy(&queue)
                .map(|policy| policy.max_receive_count),
            // Only FIFO queues honour attempt ids, as in SQS.
            attempt_id: input.attempt_id.clone().filter(|_| queue.fifo),
        };
        let count = queue.partitions.len();
        let order: Vec<&Partition> = self
            .local_first(&queue)
            .into_iter()
            .map(|i| &queue.partitions[i])
            .collect();

        // First sweep every partition without waiting, until the request is full. Partitions whose
        // replica here shows nothing receivable are skipped: asking their leaders would cost a
        // round trip each, mostly for nothing, and the long poll below still asks them.
        let mut received = Vec::new();
        let mut failures = 0;
        let mut last_error = None;
        let mut over_limit = None;
        for partition in &order {
            let want = max - received.len() as u32;
            if want == 0 {
                break;
            }
            if self
                .router
                .replica_shows_nothing(partition.group, &template)
            {
                continue;
            }
            let command = ReceiveCommand {
                max: want,
                ..template.clone()
            };
            match self.receive_from(partition, command).await {
                Ok(messages) => received.extend(messages.into_iter().map(|m| (partition.group, m))),
                Err(error) if error.code == ErrorCode::OverLimit => over_limit = Some(error),
                Err(error) => {
                    failures += 1;
                    last_error = Some(error);
                }
            }
        }
        if failures == count {
            return Err(
                last_error.unwrap_or_else(|| FerryError::unavailable("no partition answered"))
            );
        }
        // SQS: a short poll of a queue at its in-flight limit fails, a long poll waits.
        if let Some(error) = over_limit.filter(|_| received.is_empty() && wait_seconds == 0) {
            return Err(error);
        }
        // Nothing yet: long-poll every partition at once. The first to take messages stops the
        // others' waiting, but every poll runs to its end: one dropped after its partition handed
        // it messages would leave them in flight, seen by no one, for the visibility timeout.
        if received.is_empty() && wait_seconds > 0 {
            let wait_ms = u64::from(wait_seconds) * 1000;
            let (stop, stopped) = watch::channel(false);
            let mut polls: FuturesUnordered<_> = order
                .iter()
                .map(|partition| {
                    let command = template.clone();
                    let stopped = stopped.clone();
                    async move {
                        let result = self.long_poll(partition, command, wait_ms, stopped).await;
                        (*partition, result)
                    }
                })
                .collect();
            let mut surplus = Vec::new();
            while let Some((partition, result)) = polls.next().await {
                let Ok(messages) = result else { continue };
                if !messages.is_empty() {
                    stop.send_replace(true);
                }
                for message in messages {
                    if received.len() < max as usize {
                        received.push((partition.group, message));
                    } else {
                        surplus.push((partition, message));
                    }
                }
            }
            self.release(surplus).await;
        }
        queue_metrics::count_received(&queue.name, received.len());
        Ok(received
            .into_iter()
            .map(|(group, message)| self.present(&queue, group, message, &input))
            .collect())
    }

    /// Makes messages that two partitions' polls took at once, beyond what the caller asked for,
    /// receivable again now.
    async fn release(&self, messages: Vec<(&Partition, ferry_queue::ReceivedMessage)>) {
        let mut by_partition: HashMap<GroupId, (&Partition, Vec<ferry_queue::ReceivedMessage>)> =
            HashMap::new();
        for (partition, message) in messages {
            by_partition
                .entry(partition.group)
                .or_insert_with(|| (partition, Vec::new()))
                .1
                .push(message);
        }
        for (partition, messages) in by_partition.into_values() {
            if let Err(error) = self.apply(partition, release_command(&messages)).await {
                tracing::debug!(group = %partition.group, %error, "releasing surplus messages failed; they reappear after their timeout");
            }
        }
    }

    /// The queue's partition indexes in the order to try them: those this node leads first, each
    /// part rotated by a turn so that successive requests start at different partitions.
    fn local_first(&self, queue: &QueueRecord) -> Vec<usize> {
        let count = queue.partitions.len();
        if count == 0 {
            return vec![0];
        }
        let turn = self.next_partition.fetch_add(1, Ordering::Relaxed);
        let (mut local, mut remote): (Vec<usize>, Vec<usize>) =
            (0..count).partition(|&i| self.router.leads(queue.partitions[i].group));
        for part in [&mut local, &mut remote] {
            let len = part.len();
            if len > 0 {
                part.rotate_left(turn % len);
            }
        }
        local.extend(remote);
        local
    }

    /// Long-polls one partition until it takes messages, the wait is over, or `stopped` turns true
    /// (another partition answered the caller). The wait takes nothing, so stopping it loses
    /// nothing; a receive is sent to the leader only once the partition shows something to take,
    /// and is never stopped. Where this node hosts a replica, the wait is on it (a follower applies
    /// what the leader commits about one append later), so a waiting receive costs no network call;
    /// elsewhere the leader waits. (A retried receive attempt got its earlier messages back in the
    /// caller's first sweep.)
    async fn long_poll(
        &self,
        partition: &Partition,
        command: ReceiveCommand,
        wait_ms: u64,
        mut stopped: watch::Receiver<bool>,
    ) -> Result<Vec<ferry_queue::ReceivedMessage>, FerryError> {
        let deadline = Instant::now() + Duration::from_millis(wait_ms);
        let stop = async |stopped: &mut watch::Receiver<bool>| {
            let _ = stopped.wait_for(|stopped| *stopped).await;
        };
        loop {
            let Some(replica) = self.multi.group(partition.group) else {
                let ready = tokio::select! {
                    ready = self.await_receivable(partition, &command, deadline) => ready?,
                    _ = stop(&mut stopped) => return Ok(Vec::new()),
                };
                if ready {
                    match self.receive_from(partition, command.clone()).await {
                        Ok(taken) if !taken.is_empty() => return Ok(taken),
                        Ok(_) => {}
                        // The leader shows messages it may not hand out yet: ask again later.
                        Err(error) if error.code == ErrorCode::OverLimit => {
                            let pause = Instant::now() + OVER_LIMIT_PAUSE;
                            tokio::select! {
                                _ = tokio::time::sleep_until(pause.min(deadline)) => {}
                                _ = stop(&mut stopped) => return Ok(Vec::new()),
                            }
                        }
                        Err(error) => return Err(error),
                    }
                }
                if Instant::now() >= deadline {
                    return Ok(Vec::new());
                }
                continue;
            };
            if *stopped.borrow() {
                return Ok(Vec::new());
            }
            // Registered before the check, so an apply during the check or the call still wakes us.
            let applied = replica.signals.applied.notified();
            tokio::pin!(applied);
            applied.as_mut().enable();
            let state = self.multi.read_state(partition.group);
            let now = wall_clock_ms();
            let internal = |e: ferry_queue::StoreError| FerryError::internal(e.to_string());
            if replica
                .signals
                .receivable
                .has_receivable(&state, now, command.fifo, command.max_receive_count)
                .map_err(internal)?
            {
                // On a follower one poll per node asks (a send wakes every poll of the partition on
                // every node); the others look again at the next apply, or as soon as this one got
                // messages, in case there are more. On the leader the receives merge into one round.
                let leads = replica.current_leader() == Some(self.multi.node_id());
                let turn = (!leads).then(|| replica.signals.leader_ask.try_lock());
                if !matches!(turn, Some(Err(_))) {
                    let taken = self.receive_from(partition, command.clone()).await;
                    drop(turn);
                    // At its in-flight limit: look again at the next apply (a delete, say).
                    let taken = match taken {
                        Err(error) if error.code == ErrorCode::OverLimit => Vec::new(),
                        taken => taken?,
                    };
                    if !taken.is_empty() {
                        replica.signals.applied.notify_waiters();
                        return Ok(taken);
                    }
                }
                // Another receive was first: look again after the replica applies it.
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            let wake = next_wake(&replica.signals, &state, now, deadline);
            tokio::select! {
                _ = &mut applied => {}
                _ = tokio::time::sleep_until(wake) => {}
                _ = stop(&mut stopped) => return Ok(Vec::new()),
            }
        }
    }

    /// Whether the partition's leader shows something `command` could take before `deadline`.
    async fn await_receivable(
        &self,
        partition: &Partition,
        command: &ReceiveCommand,
        deadline: Instant,
    ) -> Result<bool, FerryError> {
        let wait = deadline.saturating_duration_since(Instant::now());
        let request = GroupRequest::AwaitReceivable {
            command: command.clone(),
            wait_ms: wait.as_millis() as u64,
        };
        let budget = self.config.request_timeout + wait;
        match self
            .router
            .execute(partition.group, &partition.replicas, request, budget)
            .await?
        {
            GroupReply::Receivable(receivable) => Ok(receivable),
            other => Err(FerryError::internal(format!("wait answered {other:?}"))),
        }
    }

    async fn receive_from(
        &self,
        partition: &Partition,
        command: ReceiveCommand,
    ) -> Result<Vec<ferry_queue::ReceivedMessage>, FerryError> {
        let request = GroupRequest::Receive(command);
        match self
            .router
            .execute(
                partition.group,
                &partition.replicas,
                request,
                self.config.request_timeout,
            )
            .await?
        {
            GroupReply::Applied(CommandResult::Queue(QueueResult::Received(messages))) => {
                Ok(messages)
            }
            other => Err(FerryError::internal(format!("receive answered {other:?}"))),
        }
    }

    /// A received message as the caller asked to see it.
    fn present(
        &self,
        queue: &QueueRecord,
        group: GroupId,
        received: ferry_queue::ReceivedMessage,
        input: &ReceiveInput,
    ) -> ReceivedMessage {
        let message = received.message;
        let receipt_handle = self.receipts.encode(&ReceiptKey {
            queue_id: queue.id,
            group,
            seq: received.handle.seq,
            token: received.handle.token,
            indexed_at: received.handle.indexed_at,
        });
        let mut system = BTreeMap::new();
        system.insert("SenderId".to_owned(), message.sender_id.clone());
        system.insert("SentTimestamp".to_owned(), message.sent_at_ms.to_string());
        system.insert(
            "ApproximateReceiveCount".to_owned(),
            message.receive_count.to_string(),
        );
        if let Some(first) = message.first_receive_at_ms {
            system.insert(
                "ApproximateFirstReceiveTimestamp".to_owned(),
                first.to_string(),
            );
        }
        if let Some(trace) = &message.trace_header {
            system.insert("AWSTraceHeader".to_owned(), trace.clone());
        }
        // A FIFO queue's message group, or a standard queue's fair-queue group.
        if let Some(group) = &message.group_id {
            system.insert("MessageGroupId".to_owned(), group.clone());
        }
        if queue.fifo {
            system.insert(
                "SequenceNumber".to_owned(),
                fifo::sequence_number(received.handle.seq),
            );
            system.extend(
                message
                    .deduplication_id
                    .clone()
                    .map(|id| ("MessageDeduplicationId".to_owned(), id)),
            );
        }
        if let Some(source) = &message.dead_letter_source {
            system.insert("DeadLetterQueueSourceArn".to_owned(), source.clone());
        }
        let wanted = &input.system_attribute_names;
        let attributes = if wanted.iter().any(|name| name == "All") {
            system
        } else {
            system
                .into_iter()
                .filter(|(name, _)| wanted.contains(name))
                .collect()
        };
        let message_attributes: MessageAttributes = message
            .attributes
            .into_iter()
            .filter(|(name, _)| attribute_wanted(name, &input.message_attribute_names))
            .collect();
        ReceivedMessage {
            message_id: message.message_id,
            receipt_handle,
            md5_of_body: md5_hex(&message.body),
            body: String::from_utf8_lossy(&message.body).into_owned(),
            md5_of_message_attributes: md5_of_message_attributes(&message_attributes),
            attributes,
            message_attributes,
        }
    }

    pub async fn delete_message(
        &self,
        queue: &str,
        receipt_handle: &str,
    ) -> Result<(), FerryError> {
        let outcome = self
            .delete_message_batch_inner(queue, vec![("0".into(), receipt_handle.to_owned())])
            .await?;
        outcome
            .into_iter()
            .next()
            .map_or(Ok(()), |(_, result)| result)
    }

    pub async fn delete_message_batch(
        &self,
        queue: &str,
        entries: Vec<(String, String)>,
    ) -> Result<BatchOutcome<()>, FerryError> {
        check_batch_ids(entries.iter().map(|(id, _)| id.as_str()))?;
        self.delete_message_batch_inner(queue, entries).await
    }

    async fn delete_message_batch_inner(
        &self,
        queue: &str,
        entries: Vec<(String, String)>,
    ) -> Result<BatchOutcome<()>, FerryError> {
        let queue = self.queue(queue).await?;
        let entries = entries
            .into_iter()
            .map(|(id, handle)| (id, handle, ()))
            .collect();
        let outcome = self.per_partition(
            &queue,
            entries,
            |handles| QueueCommand::Delete {
                handles: handles.iter().map(|(h, _)| *h).collect(),
            },
            |result, index, handle| match result {
                QueueResult::Deleted(outcomes) => match outcomes.get(index) {
                    // SQS answers success for a stale handle or a message already gone.
                    Some(
                        DeleteOutcome::Deleted
                        | DeleteOutcome::StaleHandle
                        | DeleteOutcome::NotFound,
                    ) => Ok(()),
                    Some(DeleteOutcome::Expired) => Err(FerryError::invalid(format!(
                        "Value {handle} for parameter ReceiptHandle is invalid. Reason: The receipt handle has expired."
                    ))),
                    None => Err(FerryError::internal("delete result is missing an entry")),
                },
                other => Err(FerryError::internal(format!("delete answered {other:?}"))),
            },
        )
        .await?;
        let deleted = outcome.iter().filter(|(_, result)| result.is_ok()).count();
        queue_metrics::count_deleted(&queue.name, deleted);
        Ok(outcome)
    }

    pub async fn change_message_visibility(
        &self,
        queue: &str,
        receipt_handle: &str,
        visibility_timeout: u32,
    ) -> Result<(), FerryError> {
        let entries = vec![(
            "0".to_owned(),
            receipt_handle.to_owned(),
            visibility_timeout,
        )];
        let outcome = self.change_visibility_inner(queue, entries).await?;
        outcome
            .into_iter()
            .next()
            .map_or(Ok(()), |(_, result)| result)
    }

    pub async fn change_message_visibility_batch(
        &self,
        queue: &str,
        entries: Vec<(String, String, u32)>,
    ) -> Result<BatchOutcome<()>, FerryError> {
        check_batch_ids(entries.iter().map(|(id, _, _)| id.as_str()))?;
        self.change_visibility_inner(queue, entries).await
    }

    async fn change_visibility_inner(
        &self,
        queue: &str,
        entries: Vec<(String, String, u32)>,
    ) -> Result<BatchOutcome<()>, FerryError> {
        let queue = self.queue(queue).await?;
        let mut checked = Vec::with_capacity(entries.len());
        let mut invalid = Vec::new();
        for (id, handle, timeout) in entries {
            match check_range(VISIBILITY_TIMEOUT, timeout, 0, MAX_VISIBILITY_TIMEOUT) {
                Ok(_) => checked.push((id, handle, timeout)),
                Err(error) => invalid.push((id, Err(error))),
            }
        }
        let mut outcomes = self
            .per_partition(
                &queue,
                checked,
                |entries| QueueCommand::ChangeVisibility {
                    changes: entries
                        .iter()
                        .map(|(handle, timeout)| VisibilityChange {
                            handle: *handle,
                            visibility_timeout_s: *timeout,
                        })
                        .collect(),
                },
                |result, index, _| match result {
                    QueueResult::VisibilityChanged(outcomes) => match outcomes.get(index) {
                        Some(Ok(())) => Ok(()),
                        Some(Err(error)) => Err(visibility_error(*error)),
                        None => Err(FerryError::internal(
                            "visibility result is missing an entry",
                        )),
                    },
                    other => Err(FerryError::internal(format!(
                        "change visibility answered {other:?}"
                    ))),
                },
            )
            .await?;
        outcomes.extend(invalid);
        Ok(outcomes)
    }

    /// Decodes each entry's receipt handle, runs one command per partition for its entries, and
    /// answers every entry from its partition's result (at `index` within that command).
    async fn per_partition<T: Copy>(
        &self,
        queue: &QueueRecord,
        entries: Vec<(String, String, T)>,
        command: impl Fn(&[(HandleRef, T)]) -> QueueCommand,
        answer: impl Fn(&QueueResult, usize, &str) -> Result<(), FerryError>,
    ) -> Result<BatchOutcome<()>, FerryError> {
        let mut outcomes: BatchOutcome<()> = Vec::with_capacity(entries.len());
        // Per partition: (entry position in outcomes, handle, value, the handle as given).
        let mut by_group: HashMap<GroupId, Vec<(usize, HandleRef, T, String)>> = HashMap::new();
        for (id, handle, value) in entries {
            match self.receipts.decode(&handle) {
                Ok(key)
                    if key.queue_id == queue.id
                        && queue.partitions.iter().any(|p| p.group == key.group) =>
                {
                    by_group.entry(key.group).or_default().push((
                        outcomes.len(),
                        HandleRef {
                            seq: key.seq,
                            token: key.token,
                            indexed_at: key.indexed_at,
                        },
                        value,
                        handle,
                    ));
                    outcomes.push((id, Ok(())));
                }
                Ok(_) => outcomes.push((id, Err(invalid_handle(&handle)))),
                Err(error) => outcomes.push((id, Err(error))),
            }
        }
        let runs = by_group.into_iter().map(|(group, items)| {
            let partition = queue.partitions.iter().find(|p| p.group == group).cloned();
            let cmd = command(
                &items
                    .iter()
                    .map(|(_, handle, value, _)| (*handle, *value))
                    .collect::<Vec<_>>(),
            );
            async move {
                let result = match partition {
                    Some(partition) => self.apply(&partition, cmd).await,
                    None => Err(FerryError::internal("partition vanished")),
                };
                (items, result)
            }
        });
        for (items, result) in futures::future::join_all(runs).await {
            for (index, (position, _, _, handle)) in items.iter().enumerate() {
                outcomes[*position].1 = match &result {
                    Ok(result) => answer(result, index, handle),
                    Err(error) => Err(error.clone()),
                };
            }
        }
        Ok(outcomes)
    }

    // ---- plumbing ----

    /// A queue by name, for the data path: from this node's catalog replica, or, if it does not
    /// know it yet, from the catalog leader.
    async fn queue(&self, name: &str) -> Result<QueueRecord, FerryError> {
        if let Some(queue) = self.multi.catalog().borrow().queues.get(name) {
            return Ok(QueueRecord::clone(queue));
        }
        self.current_queue(name).await
    }

    /// A queue by name as the catalog leader has it now: admin reads see every committed change.
    async fn current_queue(&self, name: &str) -> Result<QueueRecord, FerryError> {
        if QueueName::parse(name).is_err() {
            return Err(FerryError::queue_does_not_exist());
        }
        match self
            .execute_catalog(GroupRequest::LookupQueue(name.to_owned()))
            .await?
        {
            GroupReply::Queue(Some(queue)) => Ok(queue),
            GroupReply::Queue(None) => Err(FerryError::queue_does_not_exist()),
            other => Err(FerryError::internal(format!("lookup answered {other:?}"))),
        }
    }

    async fn catalog(&self, command: CatalogCommand) -> Result<QueueRecord, FerryError> {
        match self.catalog_command(command).await? {
            CatalogResult::Queue(queue) => Ok(queue),
            CatalogResult::Failed(error) => Err(error),
            other => Err(FerryError::internal(format!("catalog answered {other:?}"))),
        }
    }

    async fn catalog_command(&self, command: CatalogCommand) -> Result<CatalogResult, FerryError> {
        match self
            .execute_catalog(GroupRequest::Propose(CommandBody::Catalog(command)))
            .await?
        {
            GroupReply::Applied(CommandResult::Catalog(result)) => Ok(result),
            other => Err(FerryError::internal(format!("catalog answered {other:?}"))),
        }
    }

    async fn execute_catalog(&self, request: GroupRequest) -> Result<GroupReply, FerryError> {
        let members: Vec<_> = self.multi.members().keys().copied().collect();
        self.router
            .execute(
                CATALOG_GROUP,
                &members,
                request,
                self.config.request_timeout,
            )
            .await
    }

    /// Proposes a command to a partition and returns its result.
    async fn apply(
        &self,
        partition: &Partition,
        command: QueueCommand,
    ) -> Result<QueueResult, FerryError> {
        let request = GroupRequest::Propose(CommandBody::Queue(command));
        match self
            .router
            .execute(
                partition.group,
                &partition.replicas,
                request,
                self.config.request_timeout,
            )
            .await?
        {
            GroupReply::Applied(CommandResult::Queue(result)) => Ok(result),
            other => Err(FerryError::internal(format!(
                "partition answered {other:?}"
            ))),
        }
    }

    /// Sums the approximate counters of every partition (each read on its leader).
    async fn counts(
        &self,
        queue: &QueueRecord,
    ) -> Result<ferry_queue::ApproximateCounts, FerryError> {
        let reads = queue.partitions.iter().map(|partition| {
            self.router.execute(
                partition.group,
                &partition.replicas,
                GroupRequest::Counts,
                self.config.request_timeout,
            )
        });
        let mut total = ferry_queue::ApproximateCounts::default();
        for reply in futures::future::join_all(reads).await {
            match reply? {
                GroupReply::Counts(counts) => {
                    total.visible += counts.visible;
                    total.in_flight += counts.in_flight;
                    total.delayed += counts.delayed;
                }
                other => return Err(FerryError::internal(format!("counts answered {other:?}"))),
            }
        }
        Ok(total)
    }

    /// Expires messages past their queue's retention period, on every partition this node leads,
    /// and keeps the per-queue backlog gauges recent, until `shutdown` fires.
    pub async fn run_housekeeping(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut surveys: HashMap<GroupId, PartitionSurvey> = HashMap::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if self
                .multi
                .group(CATALOG_GROUP)
                .is_some_and(|handle| handle.leads())
            {
                self.run_move_tasks().await;
            }
            self.backlog_gauges
                .refresh(&self.multi, queue_metrics::BACKGROUND_REFRESH_AGE)
                .await;
            let catalog = self.multi.catalog().borrow().clone();
            let mut surveyed = HashMap::with_capacity(surveys.len());
            for (group, handle) in self.multi.led_groups() {
                let Some(queue) = catalog.queue_of_group(group) else {
                    continue;
                };
                let retention_s = attributes::number(queue, MESSAGE_RETENTION_PERIOD) as u32;
                for partition in queue.partitions.iter().filter(|p| p.group == group) {
                    if let Some(&preferred) = partition.replicas.first() {
                        if handle
                            .hand_over(self.multi.node_id(), preferred, HAND_OVER_MAX_LAG)
                            .await
                        {
                            tracing::info!(group = %partition.group, to = preferred, "handing leadership to the preferred replica");
                            continue;
                        }
                    }
                    let survey = PartitionSurvey::of(
                        &self.multi,
                        &handle,
                        surveys.get(&partition.group).copied(),
                    );
                    if survey.is_current() {
                        surveyed.insert(partition.group, survey);
                    }
                    if survey.dead_letters {
                        if let Err(error) = self.move_dead_letters(queue, partition, &handle).await
                        {
                            tracing::warn!(queue = %queue.name, group = %partition.group, %error, "moving dead letters deferred");
                        }
                    }
                    let due = survey.oldest_sent_at_ms.is_some_and(|sent| {
                        sent + u64::from(retention_s) * 1000 <= wall_clock_ms()
                    });
                    if due {
                        let body = CommandBody::Queue(QueueCommand::ExpireRetention {
                            retention_s,
                            max: EXPIRE_PER_ROUND,
                        });
                        if let Err(error) = leader::propose(&handle, body).await {
                            tracing::debug!(group = %partition.group, ?error, "retention expiry deferred");
                        }
                    }
                }
            }
            surveys = surveyed;
        }
    }
}

/// What housekeeping reads of a partition it leads each second: whether dead letters wait to be
/// moved, and when its oldest message was sent. The reads are two RocksDB seeks, and with 3,000
/// idle queues they were a third of a node's CPU (docs/benchmarks.md, twenty-ninth pass), so they
/// are made again only once the replica's state changed (`GroupSignals::state_changes`).
#[derive(Clone, Copy)]
struct PartitionSurvey {
    /// `state_changes` before the reads; None if a read failed (then nothing is kept).
    state_changes: Option<u64>,
    dead_letters: bool,
    oldest_sent_at_ms: Option<u64>,
}

impl PartitionSurvey {
    fn of(multi: &MultiRaft, handle: &ferry_raft::GroupHandle, last: Option<Self>) -> Self {
        let changes = handle.signals.state_changes.load(Ordering::Acquire);
        if let Some(last) = last.filter(|last| last.state_changes == Some(changes)) {
            return last;
        }
        let state = multi.read_state(handle.group);
        let dead_letters = ferry_queue::dead_letters(&state, 1).map(|letters| !letters.is_empty());
        let oldest = ferry_queue::oldest_sent_at(&state);
        Self {
            state_changes: (dead_letters.is_ok() && oldest.is_ok()).then_some(changes),
            // A failed read is left to the move, which reports it.
            dead_letters: dead_letters.unwrap_or(true),
            oldest_sent_at_ms: oldest.ok().flatten(),
        }
    }

    fn is_current(&self) -> bool {
        self.state_changes.is_some()
    }
}

impl Broker {
    /// Moves a partition's dead-lettered messages to the queue's dead-letter queue, then forgets them.
    ///
    /// Each message is sent with a deduplication key naming its source partition and sequence number,
    /// so if this node dies between the send and the acknowledgement, the next leader's retry is
    /// recognised as a duplicate (within the 5-minute window) instead of stored twice.
    async fn move_dead_letters(
        &self,
        queue: &QueueRecord,
        partition: &Partition,
        handle: &ferry_raft::GroupHandle,
    ) -> Result<(), FerryError> {
        // A state that lags this leader's log could list letters already moved, or messages
        // deleted since; the next round looks again.
        if !handle.await_current_state(leader::CURRENT_STATE_WAIT).await {
            return Ok(());
        }
        let state = self.multi.read_state(partition.group);
        let letters = ferry_queue::dead_letters(&state, DEAD_LETTERS_PER_ROUND)
            .map_err(|e| FerryError::internal(e.to_string()))?;
        if letters.is_empty() {
            return Ok(());
        }
        let policy = redrive::redrive_policy(queue).ok_or_else(|| {
            FerryError::invalid(
                "messages wait for a dead-letter queue, but the queue has no RedrivePolicy",
            )
        })?;
        let target = self.queue_by_arn(&policy.target_arn).await?;
        let source_arn = self.queue_arn(&queue.name);
        let seqs = letters.iter().map(|letter| letter.seq).collect();
        let messages = letters
            .into_iter()
            .map(|letter| {
                let key = format!("dlq:{}:{}:{}", queue.id, partition.group.0, letter.seq);
                letter
                    .message
                    .resend(key, Some(source_arn.clone()), queue.fifo)
            })
            .collect();
        let stored = self.store_messages(&target, messages).await?;
        queue_metrics::count_dead_lettered(&queue.name, stored.len());
        let body = CommandBody::Queue(QueueCommand::AckDeadLetters { seqs });
        leader::propose(handle, body)
            .await
            .map_err(|error| FerryError::unavailable(format!("{error:?}")))?;
        Ok(())
    }
}

fn queue_info(queue: &QueueRecord) -> QueueInfo {
    QueueInfo {
        name: queue.name.clone(),
        id: queue.id,
        fifo: queue.fifo,
        partitions: queue.partitions.len() as u32,
    }
}

/// Bytes a message counts against the size and batch limits: its body and its attributes' names,
/// types and values.
fn message_size(body_bytes: usize, attributes: &MessageAttributes) -> usize {
    body_bytes
        + attributes
            .iter()
            .map(|(name, value)| {
                name.len()
                    + value.data_type.len()
                    + match &value.value {
                        AttributeData::String(text) => text.len(),
                        AttributeData::Binary(bytes) => bytes.len(),
                    }
            })
            .sum::<usize>()
}

/// Whether a message attribute matches a receive's MessageAttributeNames (`All`, `.*`, `prefix.*`,
/// or the exact name).
fn attribute_wanted(name: &str, wanted: &[String]) -> bool {
    wanted.iter().any(|pattern| {
        pattern == "All"
            || pattern == ".*"
            || pattern == name
            || pattern.strip_suffix(".*").is_some_and(|prefix| {
                name.strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('.'))
            })
    })
}

fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), FerryError> {
    if tags.len() > MAX_TAGS {
        return Err(ferry_catalog::too_many_tags());
    }
    for (key, value) in tags {
        if key.is_empty() || key.len() > 128 || value.len() > 256 {
            return Err(FerryError::invalid(
                "Tag keys must be 1-128 characters and tag values at most 256 characters.",
            ));
        }
    }
    Ok(())
}

fn invalid_handle(handle: &str) -> FerryError {
    let shown: String = handle.chars().take(32).collect();
    FerryError::new(
        ErrorCode::ReceiptHandleIsInvalid,
        format!("The input receipt handle \"{shown}\" is not a valid receipt handle."),
    )
}

fn visibility_error(error: VisibilityError) -> FerryError {
    match error {
        VisibilityError::MessageNotFound => FerryError::invalid(
            "Value for parameter ReceiptHandle is invalid. Reason: Message does not exist or is not available for visibility timeout change.",
        ),
        VisibilityError::NotInflight => FerryError::new(ErrorCode::MessageNotInflight, "Message is not in flight."),
        VisibilityError::BeyondMaximum => FerryError::invalid(
            "Value for parameter VisibilityTimeout is invalid. Reason: Total VisibilityTimeout for the message is beyond the limit [43200 seconds]",
        ),
    }
}

/// Checks a list call's MaxResults and NextToken: the name to continue after, and the page size.
fn page_request(
    max_results: Option<u32>,
    next_token: Option<&str>,
) -> Result<(Option<String>, usize), FerryError> {
    if let Some(max) = max_results {
        check_range("MaxResults", max, 1, MAX_LIST_RESULTS)?;
    }
    let after = next_token.map(decode_token).transpose()?;
    Ok((after, max_results.unwrap_or(MAX_LIST_RESULTS) as usize))
}

/// A page of names from up to `limit + 1` of them; a NextToken comes back only if MaxResults was
/// given, as in SQS.
fn page(mut names: Vec<String>, limit: usize, paged: bool) -> ListQueuesOutput {
    let more = names.len() > limit;
    names.truncate(limit);
    let next_token = (more && paged)
        .then(|| names.last().map(|name| encode_token(name)))
        .flatten();
    ListQueuesOutput { names, next_token }
}

fn encode_token(name: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(name)
}

fn decode_token(token: &str) -> Result<String, FerryError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| FerryError::invalid("Invalid NextToken."))
}

/// A queue record as the catalog would hold it, for unit tests of the broker's rules.
#[cfg(test)]
pub(crate) fn test_queue(fifo: bool, attributes: &[(&str, &str)], partitions: u64) -> QueueRecord {
    QueueRecord {
        id: 1,
        name: if fifo { "q.fifo" } else { "q" }.to_owned(),
        fifo,
        attributes: attributes
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
        tags: BTreeMap::new(),
        created_at_ms: 0,
        modified_at_ms: 0,
        last_purge_at_ms: None,
        partitions: (1..=partitions)
            .map(|group| ferry_catalog::Partition {
                group: GroupId(group),
                replicas: vec![1, 2, 3],
            })
            .collect(),
        permissions: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::attribute_wanted;

    #[test]
    fn attribute_name_filters_follow_sqs() {
        let wanted = |patterns: &[&str], name: &str| {
            attribute_wanted(
                name,
                &patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            )
        };
        assert!(wanted(&["All"], "a"));
        assert!(wanted(&[".*"], "a"));
        assert!(wanted(&["bar.*"], "bar.baz"));
        assert!(!wanted(&["bar.*"], "barbaz"));
        assert!(wanted(&["a"], "a"));
        assert!(!wanted(&[], "a"));
    }
}
