//! Getting a group request to the group's leader: locally if this node leads, else forwarded, with
//! retries that follow leader hints until a deadline.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_catalog::CatalogCommand;
use ferry_queue::{QueueCommand, ReceiveCommand};
use ferry_raft::{CommandBody, ForwardHandler, MultiRaft};
use ferry_types::{ErrorCode, FerryError, GroupId, NodeId};
use futures::future::BoxFuture;
use tokio::time::Instant;

use crate::leader::{wall_clock_ms, LocalLeader};
use crate::request::{decode, encode, ExecError, GroupReply, GroupRequest};

/// Extra time a forwarded call gets beyond the work it asks for (a long poll's wait).
const CALL_MARGIN: Duration = Duration::from_secs(10);
const BACKOFF_START: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub(crate) struct Router {
    multi: Arc<MultiRaft>,
    leader: Arc<LocalLeader>,
}

impl Router {
    pub fn new(multi: Arc<MultiRaft>, leader: Arc<LocalLeader>) -> Self {
        Self { multi, leader }
    }

    /// Executes `request` on the leader of `group` (whose replicas are `replicas`), retrying while
    /// there is no leader until `budget` has passed.
    pub async fn execute(
        &self,
        group: GroupId,
        replicas: &[NodeId],
        request: GroupRequest,
        budget: Duration,
    ) -> Result<GroupReply, FerryError> {
        let deadline = Instant::now() + budget;
        let call_timeout = match &request {
            GroupRequest::AwaitReceivable { wait_ms, .. } => {
                Duration::from_millis(*wait_ms) + CALL_MARGIN
            }
            _ => CALL_MARGIN,
        };
        // Encoded once, and only if the request has to travel.
        let mut payload: Option<Bytes> = None;
        let mut hint = None;
        let mut backoff = BACKOFF_START;
        let mut attempt = 0usize;
        let mut last_problem;
        let mut outcome_unknown = false;
        loop {
            // The leader this node's replica believed in when the attempt began: a change from it
            // ends the wait before the next one.
            let believed = self.local_leader_hint(group);
            let target = hint.take().or(believed).unwrap_or_else(|| {
                attempt += 1;
                replicas
                    .get(attempt % replicas.len().max(1))
                    .copied()
                    .unwrap_or(self.multi.node_id())
            });
            let mut unreachable = None;
            let result = if target == self.multi.node_id() {
                // Bounded like a forwarded call, so that nothing a leader waits on can hold the
                // caller forever.
                tokio::time::timeout(call_timeout, self.leader.execute(group, request.clone()))
                    .await
                    .unwrap_or_else(|_| {
                        Err(ExecError::Unknown(format!(
                            "node {target} did not finish within {call_timeout:?}"
                        )))
                    })
            } else {
                let timeout = call_timeout.min(
                    deadline
                        .saturating_duration_since(Instant::now())
                        .max(BACKOFF_START),
                );
                match self
                    .multi
                    .router()
                    .forward(
                        target,
                        group,
                        payload
                            .get_or_insert_with(|| Bytes::from(encode(&request)))
                            .clone(),
                        timeout,
                    )
                    .await
                {
                    Ok(reply) => decode::<Result<GroupReply, ExecError>>(&reply)?,
                    Err(error) if error.surely_not_delivered() => {
                        unreachable = Some(error.to_string());
                        Err(ExecError::NotLeader(None))
                    }
                    Err(error) => Err(ExecError::Unknown(error.to_string())),
                }
            };
            match result {
                Ok(reply) => return Ok(reply),
                Err(ExecError::Failed(error)) => return Err(error),
                Err(ExecError::NotLeader(Some(leader))) if leader != target => {
                    hint = Some(leader);
                    continue;
                }
                Err(ExecError::NotLeader(_)) => {
                    last_problem = unreachable
                        .unwrap_or_else(|| format!("node {target} knows no leader of {group}"));
                }
                Err(ExecError::NotHosted) => {
                    last_problem = format!("node {target} does not host {group}")
                }
                Err(ExecError::Unknown(problem)) => {
                    // The command may have been committed. Running it again is harmless only for
                    // what may happen twice; anything else would answer for the second run (a
                    // visibility change finding the message already visible, say), so it ends here.
                    if !safe_to_repeat(&request) {
                        return Err(FerryError::new(
                            ErrorCode::OutcomeUnknown,
                            format!("the outcome on partition {group} is unknown: {problem}"),
                        ));
                    }
                    outcome_unknown = true;
                    last_problem = problem;
                }
            }
            if Instant::now() + backoff >= deadline {
                let code = if outcome_unknown {
                    ErrorCode::OutcomeUnknown
                } else {
                    ErrorCode::Unavailable
                };
                return Err(FerryError::new(
                    code,
                    format!("partition {group} is unavailable (no leader with a quorum within {budget:?}): {last_problem}"),
                ));
            }
            match self.multi.group(group) {
                // This node is campaigning (a candidate names itself the leader) or has just won
                // and refuses work until its election commits: look again soon.
                Some(_) if believed == Some(self.multi.node_id()) => {
                    tokio::time::sleep(BACKOFF_START).await
                }
                // A replica here hears of a new leader as soon as it is elected: go on at once then.
                Some(replica) => replica.leader_changes_from(believed, backoff).await,
                None => tokio::time::sleep(backoff).await,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Whether this node's follower replica of `group` shows nothing `command` could take now (false
    /// if the node hosts no replica or leads the group — its leader checks the same state before
    /// it proposes, so a second look here is waste —, or for a retried receive attempt, which takes
    /// messages in flight). A follower's replica trails its leader by about one append, so a short
    /// poll that trusts it may miss a message sent a moment ago, as SQS's sampling short polls may.
    pub fn replica_shows_nothing(&self, group: GroupId, command: &ReceiveCommand) -> bool {
        let Some(replica) = self
            .multi
            .group(group)
            .filter(|replica| replica.current_leader() != Some(self.multi.node_id()))
            .filter(|_| command.attempt_id.is_none())
        else {
            return false;
        };
        let state = self.multi.read_state(group);
        let receivable = replica.signals.receivable.has_receivable(
            &state,
            wall_clock_ms(),
            command.fifo,
            command.max_receive_count,
        );
        matches!(receivable, Ok(false))
    }

    /// Whether this node leads `group` as far as it knows: a request for it needs no forwarding.
    pub fn leads(&self, group: GroupId) -> bool {
        self.local_leader_hint(group) == Some(self.multi.node_id())
    }

    /// The leader this node's replica of the group believes in, if it hosts one.
    fn local_leader_hint(&self, group: GroupId) -> Option<NodeId> {
        self.multi.group(group)?.current_leader()
    }
}

/// Requests that may run twice after an unknown outcome: a send may be stored twice (standard queues
/// are at-least-once; FIFO sends carry a deduplication key), a delete of a deleted message succeeds,
/// reads change nothing, and creating a queue or setting its attributes or tags again answers the
/// same.
fn safe_to_repeat(request: &GroupRequest) -> bool {
    match request {
        GroupRequest::Propose(CommandBody::Queue(command)) => {
            matches!(
                command,
                QueueCommand::Send { .. }
                    | QueueCommand::SendWithFairGroups { .. }
                    | QueueCommand::Delete { .. }
                    | QueueCommand::AckDeadLetters { .. }
            )
        }
        GroupRequest::Propose(CommandBody::Catalog(command)) => matches!(
            command,
            CatalogCommand::CreateQueue { .. }
                | CatalogCommand::SetAttributes { .. }
                | CatalogCommand::TagQueue { .. }
                | CatalogCommand::UntagQueue { .. }
        ),
        GroupRequest::Receive(_) => false,
        GroupRequest::AwaitReceivable { .. }
        | GroupRequest::Counts
        | GroupRequest::LookupQueue(_)
        | GroupRequest::ListQueues { .. } => true,
    }
}

impl ForwardHandler for Router {
    fn handle(
        &self,
        group: GroupId,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, tonic::Status>> {
        let leader = self.leader.clone();
        Box::pin(async move {
            let request: GroupRequest =
                decode(&payload).map_err(|e| tonic::Status::invalid_argument(e.message))?;
            let result = leader.execute(group, request).await;
            Ok(Bytes::from(encode(&result)))
        })
    }
}
