//! Executing group requests on this node when it leads the group: proposals (concurrent sends,
//! receives, deletes and visibility changes merged into one log entry per round), receives and the
//! waits of long polls from nodes without a replica, leader-local reads.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_queue::{
    DeleteOutcome, HandleRef, QueueCommand, QueueResult, ReceiveCommand, VisibilityChange,
};
use ferry_raft::{Command, CommandBody, CommandResult, GroupHandle, GroupSignals, MultiRaft};
use ferry_types::{ErrorCode, FerryError, GroupId};
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::in_flight::InFlightLimit;
use crate::merge::{self, MergeKey, Part};
use crate::request::{ExecError, GroupReply, GroupRequest};

/// How long a proposal may take before its outcome is reported unknown.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a new or restarted leader's requests wait for it to apply the rest of its log; beyond
/// it they fail over as if this node did not lead.
pub(crate) const CURRENT_STATE_WAIT: Duration = Duration::from_secs(5);
/// A merged round carries at most this many entries (messages, handles) or body bytes.
const MAX_BATCH_MESSAGES: usize = 1_000;
const MAX_BATCH_BYTES: usize = 8 << 20;
/// Rounds of one partition and kind in flight at once (the log pipelines them).
const MAX_ROUNDS_IN_FLIGHT: usize = 8;
/// Receive rounds of one partition in flight at once. One: receives that arrive meanwhile (long
/// polls woken by the same send, say) merge into the next round, which is skipped if the first one
/// left nothing to take, instead of each proposing a round that finds nothing.
const RECEIVE_ROUNDS_IN_FLIGHT: usize = 1;
/// Parts waiting for a round, per partition and kind; callers wait when it is full.
const SEND_QUEUE_BOUND: usize = 4_096;
/// A batcher stops after this long without work.
const BATCHER_IDLE: Duration = Duration::from_secs(60);

pub(crate) fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The time a leader stamps on a command: its clock, but never before the group's last applied time.
pub(crate) fn leader_now(handle: &GroupHandle) -> u64 {
    wall_clock_ms().max(handle.signals.last_time_ms.load(Ordering::Acquire))
}

/// A caller's part waiting for the next round.
struct Pending {
    part: Part,
    reply: oneshot::Sender<Result<QueueResult, ExecError>>,
}

type BatcherKey = (GroupId, MergeKey);

pub(crate) struct LocalLeader {
    multi: Arc<MultiRaft>,
    batchers: Mutex<HashMap<BatcherKey, mpsc::Sender<Pending>>>,
    in_flight: InFlightLimit,
}

impl LocalLeader {
    pub fn new(multi: Arc<MultiRaft>, in_flight_limit: u64) -> Arc<Self> {
        Arc::new(Self {
            multi,
            batchers: Mutex::new(HashMap::new()),
            in_flight: InFlightLimit::new(in_flight_limit),
        })
    }

    pub async fn execute(
        self: &Arc<Self>,
        group: GroupId,
        request: GroupRequest,
    ) -> Result<GroupReply, ExecError> {
        let handle = self.multi.group(group).ok_or(ExecError::NotHosted)?;
        ensure_leader(&handle)?;
        // FIFO deletes, receives, counts and catalog reads are judged on this leader's applied
        // state, which must hold everything acknowledged before (see `await_current_state`).
        if !handle.await_current_state(CURRENT_STATE_WAIT).await {
            return Err(ExecError::NotLeader(None));
        }
        match request {
            GroupRequest::Propose(CommandBody::Queue(QueueCommand::Delete { handles }))
                if self.is_fifo(handle.group) =>
            {
                self.delete_fifo(&handle, handles)
                    .await
                    .map(|result| GroupReply::Applied(CommandResult::Queue(result)))
            }
            GroupRequest::Propose(CommandBody::Queue(command)) => self
                .propose_queue(&handle, command)
                .await
                .map(|result| GroupReply::Applied(CommandResult::Queue(result))),
            GroupRequest::Propose(body) => propose(&handle, body).await.map(GroupReply::Applied),
            GroupRequest::Receive(command) => {
                let (reply_tx, reply_rx) = oneshot::channel();
                // The receive runs on its own task so that messages it takes after the caller has
                // gone are released rather than left invisible.
                tokio::spawn(self.clone().take(handle, command, reply_tx));
                reply_rx.await.unwrap_or(Err(ExecError::NotLeader(None)))
            }
            GroupRequest::AwaitReceivable { command, wait_ms } => self
                .await_receivable(&handle, &command, wait_ms)
                .await
                .map(GroupReply::Receivable),
            GroupRequest::Counts => {
                let state = self.multi.read_state(group);
                ferry_queue::approximate_counts(&state, leader_now(&handle))
                    .map(GroupReply::Counts)
                    .map_err(|e| ExecError::Failed(FerryError::internal(e.to_string())))
            }
            GroupRequest::LookupQueue(name) => {
                let catalog = self.read_catalog(&handle).await?;
                Ok(GroupReply::Queue(
                    catalog.queues.get(&name).map(|queue| (**queue).clone()),
                ))
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

    /// Receives what the partition has now and answers `reply`; releases what it took if the
    /// caller has gone by then.
    async fn take(
        self: Arc<Self>,
        handle: GroupHandle,
        command: ReceiveCommand,
        reply: oneshot::Sender<Result<GroupReply, ExecError>>,
    ) {
        let result = async {
            // A retried attempt must get its earlier messages back even though they are in flight.
            if command.attempt_id.is_none() && !self.shows_receivable(&handle, &command)? {
                return Ok(QueueResult::Received(Vec::new()));
            }
            if self.in_flight_full(&handle)? {
                metrics::counter!("ferry_broker_in_flight_limit_refusals_total").increment(1);
                // As in SQS: a FIFO queue at its limit returns nothing, a standard one an error.
                return match command.fifo {
                    true => Ok(QueueResult::Received(Vec::new())),
                    false => Err(ExecError::Failed(FerryError::new(
                        ErrorCode::OverLimit,
                        "Too many messages in flight: the queue holds its limit of received messages not yet deleted or visible again.",
                    ))),
                };
            }
            self.propose_queue(&handle, QueueCommand::Receive(command))
                .await
        }
        .await
        .map(|result| GroupReply::Applied(CommandResult::Queue(result)));
        if let Err(Ok(GroupReply::Applied(CommandResult::Queue(QueueResult::Received(messages))))) =
            reply.send(result)
        {
            release(&handle, &messages).await;
        }
    }

    /// Waits up to `wait_ms` until the partition shows something `command` could take: on an
    /// apply, or when the next delayed or in-flight message comes due. Takes nothing, so a caller
    /// may give up at any moment.
    async fn await_receivable(
        &self,
        handle: &GroupHandle,
        command: &ReceiveCommand,
        wait_ms: u64,
    ) -> Result<bool, ExecError> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
        loop {
            // Registered before the check, so an apply between the check and the wait still wakes us.
            let applied = handle.signals.applied.notified();
            tokio::pin!(applied);
            applied.as_mut().enable();
            if self.shows_receivable(handle, command)? {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            let state = self.multi.read_state(handle.group);
            let wake = next_wake(&handle.signals, &state, leader_now(handle), deadline);
            tokio::select! {
                _ = &mut applied => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Whether this leader's applied state holds something `command` could take now.
    fn shows_receivable(
        &self,
        handle: &GroupHandle,
        command: &ReceiveCommand,
    ) -> Result<bool, ExecError> {
        ensure_leader(handle)?;
        let state = self.multi.read_state(handle.group);
        handle
            .signals
            .receivable
            .has_receivable(
                &state,
                leader_now(handle),
                command.fifo,
                command.max_receive_count,
            )
            .map_err(|e| ExecError::Failed(FerryError::internal(e.to_string())))
    }

    /// Whether `group` is a partition of a FIFO queue, as this node's catalog replica has it.
    fn is_fifo(&self, group: GroupId) -> bool {
        self.multi
            .catalog()
            .borrow()
            .queue_of_group(group)
            .is_some_and(|queue| queue.fifo)
    }

    /// A FIFO queue's delete: handles whose receive is over are answered `Expired`, the rest are
    /// proposed, and those of them the delete found received again meanwhile are `Expired` too.
    /// Decided here on the leader's applied state, so that applying a delete stays the same on
    /// every replica whatever build it runs.
    async fn delete_fifo(
        self: &Arc<Self>,
        handle: &GroupHandle,
        handles: Vec<HandleRef>,
    ) -> Result<QueueResult, ExecError> {
        let failed =
            |e: ferry_queue::StoreError| ExecError::Failed(FerryError::internal(e.to_string()));
        let expired = {
            let state = self.multi.read_state(handle.group);
            let now_ms = leader_now(handle);
            handles
                .iter()
                .map(|h| ferry_queue::receipt_expired(&state, h, now_ms))
                .collect::<Result<Vec<bool>, _>>()
                .map_err(failed)?
        };
        let live: Vec<HandleRef> = handles
            .iter()
            .zip(&expired)
            .filter(|(_, expired)| !**expired)
            .map(|(h, _)| *h)
            .collect();
        let mut applied = Vec::new().into_iter();
        if !live.is_empty() {
            match self
                .propose_queue(handle, QueueCommand::Delete { handles: live })
                .await?
            {
                QueueResult::Deleted(outcomes) => applied = outcomes.into_iter(),
                other => return Ok(other),
            }
        }
        let outcomes = expired
            .into_iter()
            .map(|expired| match expired {
                true => Some(DeleteOutcome::Expired),
                false => applied.next().map(DeleteOutcome::on_fifo_queue),
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ExecError::Failed(FerryError::internal("delete result is missing an entry"))
            })?;
        Ok(QueueResult::Deleted(outcomes))
    }

    /// Whether the partition holds its share of its queue's in-flight limit.
    fn in_flight_full(&self, handle: &GroupHandle) -> Result<bool, ExecError> {
        let state = self.multi.read_state(handle.group);
        self.in_flight
            .is_full(&self.multi, handle.group, &state, leader_now(handle))
            .map_err(|e| ExecError::Failed(FerryError::internal(e.to_string())))
    }

    /// The catalog as of everything committed before this call (a ReadIndex barrier on the leader).
    async fn read_catalog(&self, handle: &GroupHandle) -> Result<ferry_raft::Catalog, ExecError> {
        // The barrier's heartbeats wake a quiet group's followers, so its leader must tick again
        // too, or they would stop hearing from it and start an election.
        handle.touch();
        handle
            .raft
            .ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex)
            .await
            .map_err(|_| ExecError::NotLeader(None))?;
        // The barrier alone may not cover changes acknowledged just before a restart of this
        // leader (its saved commit lags), but `execute` has waited for this leader's whole log.
        Ok(self.multi.catalog().borrow().clone())
    }

    /// Proposes a partition command, merged with concurrent ones of its kind where that is allowed.
    async fn propose_queue(
        self: &Arc<Self>,
        handle: &GroupHandle,
        command: QueueCommand,
    ) -> Result<QueueResult, ExecError> {
        let (key, part) = match Part::of(command) {
            Ok(merging) => merging,
            Err(command) => {
                return match propose(handle, CommandBody::Queue(command)).await? {
                    CommandResult::Queue(result) => Ok(result),
                    other => Err(ExecError::Failed(FerryError::internal(format!(
                        "partition answered {other:?}"
                    )))),
                }
            }
        };
        let (reply, result) = oneshot::channel();
        let mut pending = Pending { part, reply };
        // A batcher that has just stopped for idleness is replaced once.
        for _ in 0..2 {
            let sender = self.batcher((handle.group, key));
            match sender.send(pending).await {
                Ok(()) => return result.await.unwrap_or(Err(ExecError::NotLeader(None))),
                Err(mpsc::error::SendError(returned)) => {
                    pending = returned;
                    let mut batchers = self.batchers.lock().unwrap_or_else(|e| e.into_inner());
                    if batchers
                        .get(&(handle.group, key))
                        .is_some_and(|current| current.same_channel(&sender))
                    {
                        batchers.remove(&(handle.group, key));
                    }
                }
            }
        }
        Err(ExecError::NotLeader(None))
    }

    fn batcher(self: &Arc<Self>, key: BatcherKey) -> mpsc::Sender<Pending> {
        let mut batchers = self.batchers.lock().unwrap_or_else(|e| e.into_inner());
        batchers
            .entry(key)
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(SEND_QUEUE_BOUND);
                tokio::spawn(self.clone().run_batcher(key, rx));
                tx
            })
            .clone()
    }

    /// Turns the parts that queue up while earlier rounds are in flight into one log entry a round.
    async fn run_batcher(self: Arc<Self>, key: BatcherKey, mut queue: mpsc::Receiver<Pending>) {
        let (group, merge_key) = key;
        let rounds = Arc::new(Semaphore::new(match merge_key {
            MergeKey::Receive { .. } => RECEIVE_ROUNDS_IN_FLIGHT,
            _ => MAX_ROUNDS_IN_FLIGHT,
        }));
        loop {
            let first = match tokio::time::timeout(BATCHER_IDLE, queue.recv()).await {
                Ok(Some(first)) => first,
                _ => break,
            };
            let Ok(permit) = rounds.clone().acquire_owned().await else {
                break;
            };
            let mut count = first.part.len();
            let mut bytes = first.part.bytes();
            let mut round = vec![first];
            while count < MAX_BATCH_MESSAGES && bytes < MAX_BATCH_BYTES {
                let Ok(next) = queue.try_recv() else { break };
                count += next.part.len();
                bytes += next.part.bytes();
                round.push(next);
            }
            let Some(handle) = self.multi.group(group) else {
                for pending in round {
                    let _ = pending.reply.send(Err(ExecError::NotHosted));
                }
                continue;
            };
            let multi = self.multi.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if nothing_to_receive(&multi, &handle, merge_key) {
                    for pending in round {
                        let _ = pending.reply.send(Ok(QueueResult::Received(Vec::new())));
                    }
                    return;
                }
                metrics::histogram!("ferry_broker_round_entries", "kind" => merge_key.name())
                    .record(count as f64);
                let mut lengths = Vec::with_capacity(round.len());
                let mut parts = Vec::with_capacity(round.len());
                let mut replies = Vec::with_capacity(round.len());
                for pending in round {
                    lengths.push(pending.part.len());
                    parts.push(pending.part);
                    replies.push(pending.reply);
                }
                let command = merge::merge(merge_key, parts);
                let results = match propose(&handle, CommandBody::Queue(command)).await {
                    Ok(CommandResult::Queue(result)) => merge::split(result, &lengths)
                        .map(|results| results.into_iter().map(Ok).collect::<Vec<_>>())
                        .ok_or_else(|| {
                            ExecError::Failed(FerryError::internal(
                                "a merged result does not split",
                            ))
                        }),
                    Ok(other) => Err(ExecError::Failed(FerryError::internal(format!(
                        "partition answered {other:?}"
                    )))),
                    Err(error) => Err(error),
                };
                match results {
                    Ok(results) => {
                        for (reply, result) in replies.into_iter().zip(results) {
                            if let Err(Ok(QueueResult::Received(messages))) = reply.send(result) {
                                // The caller has gone: make its messages receivable again.
                                release(&handle, &messages).await;
                            }
                        }
                    }
                    Err(error) => {
                        for reply in replies {
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                }
            });
        }
        // Parts that raced with the close are dropped; their callers see NotLeader and retry.
        queue.close();
        let mut batchers = self.batchers.lock().unwrap_or_else(|e| e.into_inner());
        if batchers.get(&key).is_some_and(mpsc::Sender::is_closed) {
            batchers.remove(&key);
        }
    }
}

/// Whether a merged receive round would find nothing on this leader's applied state: then it is
/// answered empty without a log entry. (A deposed leader's state may be stale; an empty answer is
/// then merely early, which a receive may always be.)
fn nothing_to_receive(multi: &MultiRaft, handle: &GroupHandle, key: MergeKey) -> bool {
    let MergeKey::Receive {
        max_receive_count, ..
    } = key
    else {
        return false;
    };
    let state = multi.read_state(handle.group);
    let receivable = handle.signals.receivable.has_receivable(
        &state,
        leader_now(handle),
        false,
        max_receive_count,
    );
    matches!(receivable, Ok(false))
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
    handle.touch();
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
        // Raft stopped (shutdown or a fatal storage error) after taking the entry, maybe after
        // appending it.
        Ok(Err(error)) => Err(ExecError::Unknown(format!(
            "partition {}: {error}",
            handle.group
        ))),
        Err(_) => Err(ExecError::Unknown(format!(
            "not committed within {PROPOSE_TIMEOUT:?}; the partition may have lost its quorum"
        ))),
    }
}

/// When a long poll should wake at the latest, given the partition's `state` at `now_ms`: when the
/// next delayed or in-flight message comes due, or at the deadline. The due time is shared by all
/// the partition's long polls on this node and read from the index only when no apply since the
/// last read could have told it (see [`ferry_queue::ReceivableMemo`]); a command that makes a
/// message receivable now wakes the polls at its apply.
pub(crate) fn next_wake<S: ferry_queue::StateStore + ?Sized>(
    signals: &GroupSignals,
    state: &S,
    now_ms: u64,
    deadline: tokio::time::Instant,
) -> tokio::time::Instant {
    // A failed read wakes the poll at its deadline, as if nothing were due.
    let due = signals.receivable.next_due(state, now_ms).ok().flatten();
    let instant_now = tokio::time::Instant::now();
    due.map_or(deadline, |at| {
        (instant_now + Duration::from_millis(at.saturating_sub(now_ms))).min(deadline)
    })
}

/// Makes messages received for a caller that has gone visible again at once.
async fn release(handle: &GroupHandle, messages: &[ferry_queue::ReceivedMessage]) {
    let body = CommandBody::Queue(release_command(messages));
    if let Err(error) = propose(handle, body).await {
        tracing::debug!(group = %handle.group, ?error, "releasing messages of an abandoned receive failed; they reappear after their timeout");
    }
}

/// The command that makes received messages visible again at once.
pub(crate) fn release_command<'a>(
    messages: impl IntoIterator<Item = &'a ferry_queue::ReceivedMessage>,
) -> QueueCommand {
    let changes = messages
        .into_iter()
        .map(|m| VisibilityChange {
            handle: m.handle,
            visibility_timeout_s: 0,
        })
        .collect();
    QueueCommand::ChangeVisibility { changes }
}
