//! What one node asks of a group's leader, locally or forwarded over the internal transport.

use ferry_catalog::QueueRecord;
use ferry_queue::{ApproximateCounts, ReceiveCommand};
use ferry_raft::{CommandBody, CommandResult};
use ferry_types::{FerryError, NodeId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum GroupRequest {
    /// Propose a command; the leader stamps the time. Sends go through the leader's batcher.
    Propose(CommandBody),
    /// Receive from a partition what it has now.
    Receive(ReceiveCommand),
    /// Wait up to `wait_ms` until a partition shows something the receive could take; takes nothing.
    AwaitReceivable {
        command: ReceiveCommand,
        wait_ms: u64,
    },
    /// A partition's approximate counters, read on its leader.
    Counts,
    /// A queue as the catalog leader knows it, after a read barrier.
    LookupQueue(String),
    /// Queue names in order, as the catalog leader knows them, after a read barrier.
    ListQueues {
        prefix: String,
        after: Option<String>,
        limit: usize,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum GroupReply {
    Applied(CommandResult),
    Counts(ApproximateCounts),
    Queue(Option<QueueRecord>),
    Names(Vec<String>),
    Receivable(bool),
}

/// Why a node did not execute a group request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ExecError {
    /// This node is not the leader; the leader if known. Nothing was written.
    NotLeader(Option<NodeId>),
    /// This node does not host the group (not started yet, or the queue is gone).
    NotHosted,
    /// The request may have been proposed, but its outcome is unknown (leader changed or timed
    /// out mid-proposal). Retrying may apply it twice.
    Unknown(String),
    /// The request was executed and failed, or is invalid: final.
    Failed(FerryError),
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain data types into a Vec cannot fail.
    postcard::to_allocvec(value).unwrap_or_default()
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, FerryError> {
    postcard::from_bytes(bytes)
        .map_err(|e| FerryError::internal(format!("undecodable internal reply: {e}")))
}
