use std::fmt;

/// A node of the cluster. Stable across restarts (the StatefulSet ordinal on Kubernetes).
pub type NodeId = u64;

/// A Raft group: the catalog, or one queue partition. Keys of every group are prefixed with its id.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct GroupId(pub u64);

/// The catalog group: queues, their attributes, and partition placement.
pub const CATALOG_GROUP: GroupId = GroupId(0);

impl GroupId {
    pub fn is_catalog(self) -> bool {
        self == CATALOG_GROUP
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "g{}", self.0)
    }
}
