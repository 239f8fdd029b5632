//! The groups hosted by one node: starting, finding, reconciling with the catalog, stopping.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ferry_catalog::CatalogView;
use ferry_storage::{GroupState, LogStore, NodeDb};
use ferry_types::{GroupId, NodeId, CATALOG_GROUP};
use openraft::error::InitializeError;
use openraft::{BasicNode, Config, SnapshotPolicy};
use tokio::sync::{watch, Mutex};

use crate::network::{GroupNetwork, RaftRouter};
use crate::state_machine::{Catalog, GroupSignals, GroupStateMachine};
use crate::types::Raft;

/// Timing of every group. Elections are slow enough that a loaded 2-core machine running three nodes
/// does not flap, and fast enough that a killed leader is replaced within a few seconds. Every group
/// ticks at 13/64 of the heartbeat interval and heartbeats each follower, so an idle node's CPU grows
/// with its group count: at 200 ms, 1,100 groups kept three nodes on one machine at 60% of a core
/// each, doing nothing.
const HEARTBEAT_MS: u64 = 500;
/// A follower that acknowledged a replication this recently needs no heartbeat.
const HEARTBEAT_SUPPRESS_MS: u64 = 500;
const ELECTION_MIN_MS: u64 = 1_500;
const ELECTION_MAX_MS: u64 = 3_000;
/// How long a replica other than the first waits for a new group to reach it before starting the
/// group itself.
const INITIALIZE_FALLBACK: Duration = Duration::from_secs(3);
/// Entries between snapshots, by default; behind a snapshot only a tail of a fifth as many entries is
/// kept, so a replica further behind catches up from the snapshot. A snapshot copies the whole
/// partition, so with a large backlog frequent ones cost more than the log they free: at 5,000 a
/// 150,000-message drain spent 15% of a node's CPU writing snapshots and ran a third slower.
pub const DEFAULT_SNAPSHOT_ENTRIES: u64 = 20_000;

/// A running group on this node.
#[derive(Clone)]
pub struct GroupHandle {
    pub group: GroupId,
    pub raft: Raft,
    pub signals: Arc<GroupSignals>,
}

impl GroupHandle {
    /// The leader this replica believes in (may be stale by an election).
    pub fn current_leader(&self) -> Option<NodeId> {
        use openraft::type_config::async_runtime::WatchReceiver;
        self.raft.metrics().borrow_watched().current_leader
    }

    /// Hands leadership to `preferred` if this replica (`me`) leads the group, `preferred` is another
    /// member, and its log is within `max_lag` entries of ours. Spreading leaders by placement puts
    /// each node's share of the work on it, instead of wherever elections happened to land.
    pub async fn hand_over(&self, me: NodeId, preferred: NodeId, max_lag: u64) -> bool {
        use openraft::type_config::async_runtime::WatchReceiver;
        let caught_up = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow_watched();
            let last = metrics.last_log_index.unwrap_or(0);
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|replication| replication.get(&preferred).cloned().flatten())
                .map(|log_id| log_id.index);
            metrics.current_leader == Some(me)
                && preferred != me
                && matched.is_some_and(|matched| last.saturating_sub(matched) <= max_lag)
        };
        caught_up && self.raft.trigger().transfer_leader(preferred).await.is_ok()
    }

    /// Raft status for operators: (leader, last applied index).
    pub fn status(&self) -> (Option<NodeId>, Option<u64>) {
        use openraft::type_config::async_runtime::WatchReceiver;
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        (
            metrics.current_leader,
            metrics.last_applied.map(|id| id.index),
        )
    }
}

/// Every Raft group on this node, over one RocksDB and one transport.
pub struct MultiRaft {
    node_id: NodeId,
    db: Arc<NodeDb>,
    router: RaftRouter,
    /// gRPC address of every cluster member.
    members: BTreeMap<NodeId, String>,
    config: Arc<Config>,
    groups: RwLock<HashMap<GroupId, GroupHandle>>,
    /// Serialises starts and stops so a group is never opened twice.
    lifecycle: Mutex<()>,
    catalog_tx: watch::Sender<Catalog>,
}

impl MultiRaft {
    pub fn new(
        node_id: NodeId,
        db: Arc<NodeDb>,
        router: RaftRouter,
        members: BTreeMap<NodeId, String>,
        snapshot_entries: u64,
    ) -> io::Result<Arc<Self>> {
        for (node, addr) in &members {
            router.set_address(*node, addr);
        }
        let config = Config {
            cluster_name: "ferry".into(),
            heartbeat_interval: HEARTBEAT_MS,
            heartbeat_min_interval: Some(HEARTBEAT_SUPPRESS_MS),
            election_timeout_min: ELECTION_MIN_MS,
            election_timeout_max: ELECTION_MAX_MS,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_entries),
            max_in_snapshot_log_to_keep: snapshot_entries / 5,
            max_payload_entries: 256,
            enable_pre_vote: Some(true),
            ..Config::default()
        };
        let config = Arc::new(config.validate().map_err(io::Error::other)?);
        let (catalog_tx, _) = watch::channel(Catalog::default());
        Ok(Arc::new(Self {
            node_id,
            db,
            router,
            members,
            config,
            groups: RwLock::new(HashMap::new()),
            lifecycle: Mutex::new(()),
            catalog_tx,
        }))
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn members(&self) -> &BTreeMap<NodeId, String> {
        &self.members
    }

    pub fn router(&self) -> &RaftRouter {
        &self.router
    }

    pub fn db(&self) -> &Arc<NodeDb> {
        &self.db
    }

    /// The catalog as this node has applied it.
    pub fn catalog(&self) -> watch::Receiver<Catalog> {
        self.catalog_tx.subscribe()
    }

    pub fn group(&self, group: GroupId) -> Option<GroupHandle> {
        self.groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&group)
            .cloned()
    }

    /// Every group running on this node, in id order.
    pub fn groups(&self) -> Vec<GroupHandle> {
        let mut groups: Vec<GroupHandle> = self
            .groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        groups.sort_by_key(|handle| handle.group);
        groups
    }

    /// Read access to a group's applied state on this node.
    pub fn read_state(&self, group: GroupId) -> GroupState {
        GroupState::new(self.db.clone(), group)
    }

    /// Starts the catalog group, replicated on every member.
    pub async fn start_catalog(&self) -> io::Result<GroupHandle> {
        let members = self.members.keys().copied().collect::<Vec<_>>();
        self.start_group(CATALOG_GROUP, &members).await
    }

    /// Starts `group` on this node if it is not running. A group that has never run anywhere is
    /// initialised by every replica with the same membership (openraft allows that; the vote picks
    /// one leader).
    pub async fn start_group(
        &self,
        group: GroupId,
        replicas: &[NodeId],
    ) -> io::Result<GroupHandle> {
        let _guard = self.lifecycle.lock().await;
        if let Some(handle) = self.group(group) {
            return Ok(handle);
        }
        let signals = Arc::new(GroupSignals::default());
        let catalog = group.is_catalog().then(|| self.catalog_tx.clone());
        let machine = GroupStateMachine::open(self.db.clone(), group, signals.clone(), catalog)?;
        let network = GroupNetwork {
            router: self.router.clone(),
            group,
        };
        let log = LogStore::new(self.db.clone(), group);
        let raft = Raft::new(self.node_id, self.config.clone(), network, log, machine)
            .await
            .map_err(io::Error::other)?;
        if !raft.is_initialized().await.map_err(io::Error::other)? {
            let members: BTreeMap<NodeId, BasicNode> = replicas
                .iter()
                .map(|node| {
                    (
                        *node,
                        BasicNode::new(self.members.get(node).cloned().unwrap_or_default()),
                    )
                })
                .collect();
            // The first replica starts the group at once and so usually becomes its first leader
            // (placement spreads first replicas evenly). The others start it themselves only if it
            // has not reached them shortly after, so a group forms even with its first replica down.
            let delay = if replicas.first() == Some(&self.node_id) {
                Duration::ZERO
            } else {
                INITIALIZE_FALLBACK
            };
            let raft = raft.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if raft.is_initialized().await.unwrap_or(true) {
                    return;
                }
                match raft.initialize(members).await {
                    Ok(())
                    | Err(openraft::error::RaftError::APIError(InitializeError::NotAllowed(_))) => {
                    }
                    Err(error) => tracing::error!(%error, "initialising a group failed"),
                }
            });
        }
        let handle = GroupHandle {
            group,
            raft,
            signals,
        };
        self.groups
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(group, handle.clone());
        tracing::info!(%group, "group started");
        Ok(handle)
    }

    /// Stops a group and removes all its data from this node.
    pub async fn remove_group(&self, group: GroupId) -> io::Result<()> {
        let _guard = self.lifecycle.lock().await;
        let handle = self
            .groups
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&group);
        if let Some(handle) = handle {
            let _ = handle.raft.shutdown().await;
        }
        GroupState::destroy(&self.db, group)?;
        tracing::info!(%group, "group removed");
        Ok(())
    }

    /// Brings the groups on this node in line with the catalog: starts every partition placed here,
    /// removes partitions of deleted queues.
    pub async fn reconcile(&self, catalog: &CatalogView) -> io::Result<()> {
        let mut wanted = BTreeMap::new();
        for queue in catalog.queues.values() {
            for partition in &queue.partitions {
                if partition.replicas.contains(&self.node_id) {
                    wanted.insert(partition.group, partition.replicas.clone());
                }
            }
        }
        for (group, replicas) in &wanted {
            if self.group(*group).is_none() {
                self.start_group(*group, replicas).await?;
            }
        }
        // Only groups the catalog has assigned and no longer lists are removed: a group above
        // `last_group_id` belongs to a queue this replica's catalog has not caught up with yet.
        let mut present: Vec<GroupId> = self
            .groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        present.extend(self.db.groups_on_disk()?);
        present.sort_unstable();
        present.dedup();
        for group in present {
            if !group.is_catalog()
                && group.0 <= catalog.last_group_id
                && !wanted.contains_key(&group)
            {
                self.remove_group(group).await?;
            }
        }
        Ok(())
    }

    /// Keeps the local groups in line with the catalog until `shutdown` fires.
    pub async fn run_reconciler(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut catalog = self.catalog();
        loop {
            let view = catalog.borrow_and_update().clone();
            if let Err(error) = self.reconcile(&view).await {
                tracing::error!(%error, "reconciling groups with the catalog failed");
            }
            tokio::select! {
                changed = catalog.changed() => if changed.is_err() { return },
                _ = shutdown.changed() => return,
                // Retry failed starts now and then even without catalog changes.
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }

    /// Stops every group (without removing data) and waits for their tasks.
    pub async fn shutdown(&self) {
        let _guard = self.lifecycle.lock().await;
        let handles: Vec<GroupHandle> = self
            .groups
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, handle)| handle)
            .collect();
        for handle in handles {
            let _ = handle.raft.shutdown().await;
        }
    }
}
