//! The openraft type configuration shared by every group, and the commands its log carries.

use ferry_catalog::{CatalogCommand, CatalogResult};
use ferry_queue::{QueueCommand, QueueResult};
use ferry_storage::SnapshotData;
use openraft::alias::{LogIdOf, StoredMembershipOf};
use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// One type configuration for the catalog and every partition, so one transport serves all.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = openraft::BasicNode,
);

pub type Raft = openraft::Raft<TypeConfig, crate::state_machine::GroupStateMachine>;
pub type LogId = LogIdOf<TypeConfig>;
pub type StoredMembership = StoredMembershipOf<TypeConfig>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotData>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;

/// The index of a log id, if there is one.
pub(crate) fn index_of(log_id: &Option<LogId>) -> Option<u64> {
    log_id.as_ref().map(|log_id| log_id.index)
}

/// A log entry's payload: the leader's time stamp and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Leader clock, ms since the epoch. Apply uses max(this, the group's last applied time), so time
    /// never goes backwards within a group, even across leader changes.
    pub now_ms: u64,
    pub body: CommandBody,
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Logged by openraft per entry: name the command, never dump message bodies.
        let name = match &self.body {
            CommandBody::Queue(
                QueueCommand::Send { messages } | QueueCommand::SendWithFairGroups { messages },
            ) => return write!(f, "send({})", messages.len()),
            CommandBody::Queue(QueueCommand::Receive(receive)) => {
                return write!(f, "receive({})", receive.max)
            }
            CommandBody::Queue(QueueCommand::Delete { handles }) => {
                return write!(f, "delete({})", handles.len())
            }
            CommandBody::Queue(QueueCommand::ChangeVisibility { changes }) => {
                return write!(f, "change_visibility({})", changes.len())
            }
            CommandBody::Queue(QueueCommand::Purge) => "purge",
            CommandBody::Queue(QueueCommand::ExpireRetention { .. }) => "expire_retention",
            CommandBody::Queue(QueueCommand::AckDeadLetters { .. }) => "ack_dead_letters",
            CommandBody::Catalog(_) => "catalog",
        };
        f.write_str(name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandBody {
    Queue(QueueCommand),
    Catalog(CatalogCommand),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Queue(QueueResult),
    Catalog(CatalogResult),
    /// A command sent to a group of the wrong kind (a catalog command to a partition, say).
    WrongGroup,
    /// Blank and membership entries.
    None,
}

/// Written atomically with every applied entry: where the state machine is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedState {
    pub last_log_id: Option<LogId>,
    pub membership: StoredMembership,
    /// The time of the last applied command.
    pub last_time_ms: u64,
}

/// A group's snapshot meta together with the file holding its data; an empty path when the state
/// flushed in the database is the data (no file is kept).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub meta: SnapshotMeta,
    pub path: String,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, std::io::Error> {
    ferry_types::encode_exact(value)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, std::io::Error> {
    postcard::from_bytes(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
