//! Message move tasks: redriving a dead-letter queue's messages to their sources.
//!
//! Tasks live in the catalog, so they survive restarts and leader changes; the node that leads the
//! catalog runs them. One round takes messages from the dead-letter queue with a visibility
//! timeout, sends each to its destination with a deduplication key naming the task and the
//! message, deletes it from the dead-letter queue, and records the progress in the catalog. A crash
//! mid-round leaves the taken messages to reappear after their visibility timeout; the next run
//! sends them again and the deduplication key (5-minute window) keeps them from being stored twice.

use std::collections::BTreeMap;

use base64::Engine;
use ferry_catalog::{CatalogCommand, CatalogResult, CatalogView, MoveTask, MoveTaskStatus};
use ferry_queue::{NewMessage, QueueCommand, ReceiveCommand};
use ferry_types::{ErrorCode, FerryError, GroupId};

use crate::Broker;

/// SQS's highest MaxNumberOfMessagesPerSecond, and the rate of a task that sets none.
pub const MAX_PER_SECOND: u32 = 500;
/// How long messages taken for a move stay hidden in the dead-letter queue.
const TAKE_VISIBILITY_S: u32 = 60;

pub fn task_handle(task: &MoveTask) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("ferry-move-task:{}:{}", task.id, task.source))
}

pub fn parse_task_handle(handle: &str) -> Result<u64, FerryError> {
    let not_found = || FerryError::new(ErrorCode::ResourceNotFound, "Task does not exist.");
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(handle)
        .map_err(|_| not_found())?;
    let text = String::from_utf8(text).map_err(|_| not_found())?;
    let rest = text
        .strip_prefix("ferry-move-task:")
        .ok_or_else(not_found)?;
    rest.split(':')
        .next()
        .and_then(|id| id.parse().ok())
        .ok_or_else(not_found)
}

impl Broker {
    /// Runs one round (about a second's worth of messages) of every running task. Called on the
    /// catalog leader only.
    pub(crate) async fn run_move_tasks(&self) {
        let catalog = self.multi.catalog().borrow().clone();
        for task in catalog
            .move_tasks
            .values()
            .filter(|task| task.status == MoveTaskStatus::Running)
        {
            let (moved, outcome) = self.move_round(task, &catalog).await;
            let (status, failure_reason) = match outcome {
                Ok(true) => (MoveTaskStatus::Completed, None),
                Ok(false) => (MoveTaskStatus::Running, None),
                Err(error)
                    if error.code == ErrorCode::Unavailable
                        || error.code == ErrorCode::OutcomeUnknown =>
                {
                    // A partition without a leader for now: try again next round.
                    tracing::debug!(task = task.id, %error, "move task round deferred");
                    (MoveTaskStatus::Running, None)
                }
                Err(error) => (MoveTaskStatus::Failed, Some(error.message)),
            };
            if moved == 0 && status == MoveTaskStatus::Running {
                continue;
            }
            let command = CatalogCommand::UpdateMoveTask {
                id: task.id,
                moved: task.moved + moved,
                status,
                failure_reason,
            };
            match self.catalog_command(command).await {
                Ok(CatalogResult::MoveTask(_)) | Ok(CatalogResult::Failed(_)) => {}
                Ok(other) => {
                    tracing::warn!(task = task.id, ?other, "unexpected move task update result")
                }
                Err(error) => {
                    tracing::warn!(task = task.id, %error, "recording move task progress failed")
                }
            }
        }
    }

    /// Moves up to a second's worth of messages; `Ok(true)` once the source is empty.
    async fn move_round(
        &self,
        task: &MoveTask,
        catalog: &CatalogView,
    ) -> (u64, Result<bool, FerryError>) {
        let Some(source) = catalog.queues.get(&task.source) else {
            return (
                0,
                Err(FerryError::new(
                    ErrorCode::ResourceNotFound,
                    "The source queue was deleted.",
                )),
            );
        };
        let budget = task.max_per_second.unwrap_or(MAX_PER_SECOND) as usize;
        let mut moved = 0u64;
        let mut took_any = false;
        for partition in &source.partitions {
            while (moved as usize) < budget {
                let want = (budget - moved as usize).min(10) as u32;
                let command = ReceiveCommand {
                    max: want,
                    visibility_timeout_s: TAKE_VISIBILITY_S,
                    fifo: source.fifo,
                    max_receive_count: None,
                    attempt_id: None,
                };
                let taken = match self.receive_from(partition, command).await {
                    Ok(taken) => taken,
                    Err(error) => return (moved, Err(error)),
                };
                if taken.is_empty() {
                    break;
                }
                took_any = true;
                let count = taken.len() as u64;
                if let Err(error) = self
                    .move_messages(task, catalog, partition.group, &partition.replicas, taken)
                    .await
                {
                    return (moved, Err(error));
                }
                moved += count;
            }
        }
        if took_any {
            return (moved, Ok(false));
        }
        // Nothing visible in any partition: done once nothing is in flight or delayed either.
        match self.counts(source).await {
            Ok(counts) => (
                moved,
                Ok(counts.visible + counts.in_flight + counts.delayed == 0),
            ),
            Err(error) => (moved, Err(error)),
        }
    }

    /// Sends taken messages to their destinations, then deletes them from the dead-letter queue.
    async fn move_messages(
        &self,
        task: &MoveTask,
        catalog: &CatalogView,
        group: GroupId,
        replicas: &[u64],
        taken: Vec<ferry_queue::ReceivedMessage>,
    ) -> Result<(), FerryError> {
        let mut by_destination: BTreeMap<String, Vec<NewMessage>> = BTreeMap::new();
        let mut handles = Vec::with_capacity(taken.len());
        let from_fifo = catalog
            .queues
            .get(&task.source)
            .is_some_and(|source| source.fifo);
        for received in taken {
            let message = received.message;
            let message_id = message.message_id.clone();
            let destination = match (&task.destination, &message.dead_letter_source) {
                (Some(name), _) => name.clone(),
                (None, Some(arn)) => arn.rsplit(':').next().unwrap_or_default().to_owned(),
                (None, None) => {
                    return Err(FerryError::invalid(format!(
                    "Message {} was not dead-lettered from a queue; give the task a destination.",
                    message.message_id
                )))
                }
            };
            by_destination
                .entry(destination)
                .or_default()
                .push(message.resend(format!("move:{}:{}", task.id, message_id), None, from_fifo));
            handles.push(received.handle);
        }
        for (name, messages) in by_destination {
            let destination = catalog.queues.get(&name).ok_or_else(|| {
                FerryError::new(
                    ErrorCode::ResourceNotFound,
                    format!("Destination queue {name} does not exist."),
                )
            })?;
            self.store_messages(destination, messages).await?;
        }
        let request = crate::request::GroupRequest::Propose(ferry_raft::CommandBody::Queue(
            QueueCommand::Delete { handles },
        ));
        self.router
            .execute(group, replicas, request, self.config.request_timeout)
            .await?;
        Ok(())
    }
}
