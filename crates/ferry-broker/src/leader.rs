//! Executing group requests on this node when it leads the group: proposals (sends batched into one
//! log entry per round), long-polling receives, leader-local reads.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_queue::{
    HandleRef, NewMessage, QueueCommand, QueueResult, ReceiveCommand, SentMessage, VisibilityChange,
};
use ferry_raft::{Command, CommandBody, CommandResult, GroupHandle, MultiRaft};
use ferry_types::{FerryError, GroupId};
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::request::{ExecError, GroupReply, GroupRequest};

/// How long a proposal may take before its outcome is reported unknown.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(8);
/// A round of batched sends carries at most this many messages or bytes in one log entry.
const MAX_BATCH_MESSAGES: usize = 1_000;
const MAX_BATCH_BYTES: usize = 8 << 20;
/// Send rounds of one partition in flight at once (the log pipelines them).
const MAX_ROUNDS_IN_FLIGHT: usize = 8;
/// Sends waiting for a round, per partition; senders wait when it is full.
const SEND_QUEUE_BOUND: usize = 4_096;
/// A partition's batcher stops after this long without sends.
const BATCHER_IDLE: Duration = Duration::from_secs(60);

pub(crate) fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The time a leader stamps on a command: its clock, but never before the group's last applied time.
fn leader_now(handle: &GroupHandle) -> u64 {
    wall_clock_ms().max(handle.signals.last_time_ms.load(Ordering::Acquire))
}

struct PendingSend {
    messages: Vec<NewMessage>,
    bytes: usize,
    reply: oneshot::Sender<Result<Vec<SentMessage>, ExecError>>,
}

pub(crate) struct LocalLeader {
    multi: Arc<MultiRaft>,
    batchers: Mutex<HashMap<GroupId, mpsc::Sender<PendingSend>>>,
}

impl LocalLeader {
    pub fn new(multi: Arc<MultiRaft>) -> Arc<Self> {
        Arc::new(Self {
            multi,
            batchers: Mutex::new(HashMap::new()),
        })
    }

    pub async fn execute(
        self: &Arc<Self>,
        group: GroupId,
        request: GroupRequest,
    ) -> Result<GroupReply, ExecError> {
        let handle = self.multi.group(group).ok_or(ExecError::NotHosted)?;
        ensure_leader(&handle)?;
        match request {
            GroupRequest::Propose(CommandBody::Queue(QueueCommand::Send { messages })) => {
                let sent = self.send(&handle, messages).await?;
                Ok(GroupReply::Applied(CommandResult::Queue(
                    QueueResult::Sent(sent),
                )))
            }
            GroupRequest::Propose(body) => propose(&handle, body).await.map(GroupReply::Applied),
            GroupRequest::Receive { command, wait_ms } => {
                let (reply_tx, reply_rx) = oneshot::channel();
                let poll = LongPoll {
                    multi: self.multi.clone(),
                    handle,
                    command,
                    wait_ms,
                };
                // The poll runs on its own task so that messages it takes after the caller has gone
                // are released rather than left invisible.
                tokio::spawn(poll.run(reply_tx));
                reply_rx.await.unwrap_or(Err(ExecError::NotLeader(None)))
            }
            GroupRequest::Counts => {
                let state = self.multi.read_state(group);
                ferry_queue::approximate_counts(&state, leader_now(&handle))
                    .map(GroupReply::Counts)
                    .map_err(|e| ExecError::Failed(FerryError::internal(e.to_string())))
            }
            GroupRequest::LookupQueue(name) => {
                let catalog = self.read_catalog(&handle).await?;
                Ok(GroupReply::Queue(catalog.queues.get(&name).cloned()))
            }
            GroupRequest::ListQueues {
                prefix,
                after,
                limit,
            } => {
                let catalog = self.read_catalog(&handle).await?;
                let names = catalog
                    .queues
                    .keys()
                    .filter(|name| name.starts_with(&prefix))
                    .filter(|name| {
                        after
                            .as_ref()
                            .is_none_or(|after| name.as_str() > after.as_str())
                    })
                    .take(limit)
                    .cloned()
                    .collect();
                Ok(GroupReply::Names(names))
            }
        }
    }

    /// The catalog as of everything committed before this call (a ReadIndex barrier on the leader).
    async fn read_catalog(&self, handle: &GroupHandle) -> Result<ferry_raft::Catalog, ExecError> {
        handle
            .raft
            .ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex)
            .await
            .map_err(|_| ExecError::NotLeader(None))?;
        Ok(self.multi.catalog().borrow().clone())
    }

    /// Queues messages for the partition's next send round and waits for their result.
    async fn send(
        self: &Arc<Self>,
        handle: &GroupHandle,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<SentMessage>, ExecError> {
        let bytes = messages.iter().map(|m| m.body.len()).sum();
        let (reply, result) = oneshot::channel();
        let mut pending = PendingSend {
            messages,
            bytes,
            reply,
        };
        // A batcher that has just stopped for idleness is replaced once.
        for _ in 0..2 {
            let sender = self.batcher(handle.group);
            match sender.send(pending).await {
                Ok(()) => return result.await.unwrap_or(Err(ExecError::NotLeader(None))),
                Err(mpsc::error::SendError(returned)) => {
                    pending = returned;
                    let mut batchers = self.batchers.lock().unwrap_or_else(|e| e.into_inner());
                    if batchers
                        .get(&handle.group)
                        .is_some_and(|current| current.same_channel(&sender))
                    {
                        batchers.remove(&handle.group);
                    }
                }
            }
        }
        Err(ExecError::NotLeader(None))
    }

    fn batcher(self: &Arc<Self>, group: GroupId) -> mpsc::Sender<PendingSend> {
        let mut batchers = self.batchers.lock().unwrap_or_else(|e| e.into_inner());
        batchers
            .entry(group)
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(SEND_QUEUE_BOUND);
                tokio::spawn(self.clone().run_batcher(group, rx));
                tx
            })
            .clone()
    }

    /// Turns the sends that queue up while earlier rounds are in flight into one log entry each round.
    async fn run_batcher(self: Arc<Self>, group: GroupId, mut queue: mpsc::Receiver<PendingSend>) {
        let rounds = Arc::new(Semaphore::new(MAX_ROUNDS_IN_FLIGHT));
        loop {
            let first = match tokio::time::timeout(BATCHER_IDLE, queue.recv()).await {
                Ok(Some(first)) => first,
                _ => break,
            };
            let Ok(permit) = rounds.clone().acquire_owned().await else {
                break;
            };
            let mut count = first.messages.len();
            let mut bytes = first.bytes;
            let mut round = vec![first];
            while count < MAX_BATCH_MESSAGES && bytes < MAX_BATCH_BYTES {
                let Ok(next) = queue.try_recv() else { break };
                count += next.messages.len();
                bytes += next.bytes;
                round.push(next);
            }
            let Some(handle) = self.multi.group(group) else {
                answer_all(round, Err(ExecError::NotHosted));
                continue;
            };
            tokio::spawn(async move {
                let _permit = permit;
                metrics::histogram!("ferry_broker_send_round_messages").record(count as f64);
                let mut senders = Vec::with_capacity(round.len());
                let mut messages = Vec::with_capacity(count);
                for pending in round {
                    senders.push((pending.messages.len(), pending.reply));
                    messages.extend(pending.messages);
                }
                let body = CommandBody::Queue(QueueCommand::Send { messages });
                match propose(&handle, body).await {
                    Ok(CommandResult::Queue(QueueResult::Sent(sent))) => {
                        let mut sent = sent.into_iter();
                        for (n, reply) in senders {
                            let _ = reply.send(Ok(sent.by_ref().take(n).collect()));
                        }
                    }
                    Ok(other) => {
                        let error = ExecError::Failed(FerryError::internal(format!(
                            "send answered {other:?}"
                        )));
                        for (_, reply) in senders {
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                    Err(error) => {
                        for (_, reply) in senders {
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                }
            });
        }
        // Sends that raced with the close are dropped; their callers see NotLeader and retry.
        queue.close();
        let mut batchers = self.batchers.lock().unwrap_or_else(|e| e.into_inner());
        if batchers.get(&group).is_some_and(mpsc::Sender::is_closed) {
            batchers.remove(&group);
        }
    }
}

fn answer_all(round: Vec<PendingSend>, result: Result<Vec<SentMessage>, ExecError>) {
    for pending in round {
        let _ = pending.reply.send(result.clone());
    }
}

fn ensure_leader(handle: &GroupHandle) -> Result<(), ExecError> {
    handle
        .raft
        .as_leader()
        .map(|_| ())
        .map_err(|forward| ExecError::NotLeader(forward.leader_id))
}

/// Proposes one command and waits until it is committed on a majority and applied here.
pub(crate) async fn propose(
    handle: &GroupHandle,
    body: CommandBody,
) -> Result<CommandResult, ExecError> {
    let command = Command {
        now_ms: leader_now(handle),
        body,
    };
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(PROPOSE_TIMEOUT, handle.raft.client_write(command)).await;
    metrics::histogram!("ferry_raft_propose_seconds").record(started.elapsed().as_secs_f64());
    match outcome {
        Ok(Ok(response)) => Ok(response.data),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
            Err(ExecError::NotLeader(forward.leader_id))
        }
        Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)))) => Err(
            ExecError::Unknown("the leader changed while the request was being replicated".into()),
        ),
        Ok(Err(error)) => Err(ExecError::Failed(FerryError::unavailable(format!(
            "partition {}: {error}",
            handle.group
        )))),
        Err(_) => Err(ExecError::Unknown(format!(
            "not committed within {PROPOSE_TIMEOUT:?}; the partition may have lost its quorum"
        ))),
    }
}

/// A receive that waits on the leader until a message is visible or its time is up.
struct LongPoll {
    multi: Arc<MultiRaft>,
    handle: GroupHandle,
    command: ReceiveCommand,
    wait_ms: u64,
}

impl LongPoll {
    async fn run(self, mut reply: oneshot::Sender<Result<GroupReply, ExecError>>) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.wait_ms);
        let empty = || {
            Ok(GroupReply::Applied(CommandResult::Queue(
                QueueResult::Received(Vec::new()),
            )))
        };
        let mut first = true;
        let result = loop {
            // Registered before the check, so an apply between the check and the wait still wakes us.
            let applied = self.handle.signals.applied.notified();
            tokio::pin!(applied);
            applied.as_mut().enable();
            if let Err(error) = ensure_leader(&self.handle) {
                break Err(error);
            }
            let now = leader_now(&self.handle);
            let state = self.multi.read_state(self.handle.group);
            // A retried attempt must get its earlier messages back even though they are in flight.
            let retried_attempt = first && self.command.attempt_id.is_some();
            first = false;
            let receivable = ferry_queue::has_receivable_message(
                &state,
                now,
                self.command.fifo,
                self.command.max_receive_count,
            );
            match receivable {
                Err(error) => {
                    break Err(ExecError::Failed(FerryError::internal(error.to_string())))
                }
                Ok(receivable) if receivable || retried_attempt => {
                    let command = QueueCommand::Receive(self.command.clone());
                    match propose(&self.handle, CommandBody::Queue(command)).await {
                        Ok(CommandResult::Queue(QueueResult::Received(messages)))
                            if messages.is_empty() => {}
                        Ok(result) => break Ok(GroupReply::Applied(result)),
                        Err(error) => break Err(error),
                    }
                }
                Ok(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                break empty();
            }
            // Wake for an apply (a send), for the next delayed or in-flight message to come due, or
            // at the deadline; stop early if the caller is gone.
            let next_due = ferry_queue::next_visibility_change(&state, now)
                .ok()
                .flatten();
            let wake = next_due
                .map(|at| {
                    tokio::time::Instant::now() + Duration::from_millis(at.saturating_sub(now))
                })
                .map_or(deadline, |at| at.min(deadline));
            tokio::select! {
                _ = &mut applied => {}
                _ = tokio::time::sleep_until(wake) => {}
                _ = reply.closed() => return,
            }
        };
        if let Err(Ok(GroupReply::Applied(CommandResult::Queue(QueueResult::Received(messages))))) =
            reply.send(result)
        {
            self.release(
                messages
                    .iter()
                    .map(|m| HandleRef {
                        seq: m.seq,
                        token: m.token,
                    })
                    .collect(),
            )
            .await;
        }
    }

    /// Makes messages received for a caller that has gone visible again at once.
    async fn release(&self, handles: Vec<HandleRef>) {
        let changes = handles
            .into_iter()
            .map(|handle| VisibilityChange {
                handle,
                visibility_timeout_s: 0,
            })
            .collect();
        let body = CommandBody::Queue(QueueCommand::ChangeVisibility { changes });
        if let Err(error) = propose(&self.handle, body).await {
            tracing::debug!(group = %self.handle.group, ?error, "releasing messages of an abandoned receive failed; they reappear after their timeout");
        }
    }
}
