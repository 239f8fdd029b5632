//! Multi-raft for Ferry: every queue partition and the catalog is an openraft group; all groups of a
//! node share one RocksDB (`ferry-storage`) and one gRPC transport (the internal service of
//! `proto/ferry/internal`), with the group id in every RPC and the cluster key (see [`ClusterKey`]) on
//! every call.
//!
//! The log carries [`Command`]s stamped with the leader's clock; the state machine applies them with
//! `ferry-queue` or `ferry-catalog` and never reads a clock of its own.
//!
//! Rule: knows Raft, storage and transport; knows nothing of SQS or of the public API.

mod cluster_key;
mod multi;
mod network;
mod quiet;
mod service;
mod state_machine;
mod trim;
mod types;

pub use cluster_key::{AttachClusterKey, ClusterKey, RequireClusterKey};
pub use multi::{GroupHandle, GroupStatus, MultiRaft, DEFAULT_SNAPSHOT_ENTRIES};
pub use network::{ForwardError, RaftRouter, MAX_INTERNAL_MESSAGE_BYTES};
pub use service::{ForwardHandler, InternalService};
pub use state_machine::{Catalog, GroupSignals, GroupStateMachine};
pub use types::{Command, CommandBody, CommandResult, Raft, TypeConfig};
