//! The groups hosted by one node: starting, finding, reconciling with the catalog, stopping.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ferry_catalog::{CatalogView, QueueRecord};
use ferry_storage::{GroupState, LogStore, NodeDb};
use ferry_types::{GroupId, NodeId, CATALOG_GROUP};
use openraft::alias::LeaderIdOf;
use openraft::entry::RaftEntry;
use openraft::vote::RaftLeaderId;
use openraft::{BasicNode, Config, EntryPayload, Membership, SnapshotPolicy};
use tokio::sync::{watch, Mutex};

use crate::network::{GroupNetwork, RaftRouter};
use crate::quiet::{self, Activity, GroupView, PeerLiveness, QuiesceRequest, Verdict};
use crate::state_machine::{Catalog, GroupSignals, GroupStateMachine};
use crate::types::{index_of, Entry, LogId, Raft, TypeConfig};

/// Timing of every group. Elections are slow enough that a loaded 2-core machine running three nodes
/// does not flap, and fast enough that a killed leader is replaced within a few seconds. Every
/// ticking group ticks at 13/64 of the heartbeat interval and heartbeats each follower: at 200 ms,
/// 1,100 groups kept three nodes on one machine at 60% of a core each, doing nothing (idle groups
/// now stop ticking altogether: see `quiet`).
const HEARTBEAT_MS: u64 = 500;
/// A follower that acknowledged a replication this recently needs no heartbeat.
const HEARTBEAT_SUPPRESS_MS: u64 = 500;
pub(crate) const ELECTION_MIN_MS: u64 = 1_500;
/// Also openraft's leader lease: a voter refuses every candidate until it has not heard its leader
/// for this long.
pub(crate) const ELECTION_MAX_MS: u64 = 3_000;
/// Followers that campaign for a silent leader's group start within this many milliseconds of
/// each other's sweeps, at random.
const CAMPAIGN_SPREAD_MS: u64 = 200;
/// A leader considers handing its group over at most this often.
const HAND_OVER_INTERVAL_MS: u64 = 10_000;
/// A leader hands its group over only if every follower answered a call sent this recently: a
/// follower it has not heard from lately may be cut off, and the election would then need it.
const HAND_OVER_RECENT_ACK: Duration = Duration::from_millis(2 * HEARTBEAT_MS);
/// How long a node that hears from a majority stays ready without a catalog leader: a few
/// elections' worth (each waits out the silence timeout and an election timeout).
const ELECTION_GRACE: Duration = Duration::from_secs(10);
/// Entries between the snapshots openraft takes of a group on its own, by default; behind a
/// snapshot only a tail of a fifth as many entries is kept, so a replica further behind catches up
/// from the snapshot. A snapshot is a flush of the state family, and busy groups are snapshotted
/// sooner by the memtable pacing (`trim`): this count bounds the logs of groups that append little.
pub const DEFAULT_SNAPSHOT_ENTRIES: u64 = 20_000;

/// A running group on this node.
#[derive(Clone)]
pub struct GroupHandle {
    pub group: GroupId,
    pub raft: Raft,
    pub signals: Arc<GroupSignals>,
    activity: Arc<Activity>,
    /// When this replica last considered handing the group over (`quiet::clock_ms`); 0: never.
    last_hand_over_ms: Arc<AtomicU64>,
    /// Bytes appended to the group's log since it started here, and that count when the group
    /// was last snapshotted for the memtables (see `trim`).
    pub(crate) log_bytes: Arc<AtomicU64>,
    pub(crate) log_bytes_at_snapshot: Arc<AtomicU64>,
    /// The view the quiet sweep read while the group was quiet, with the start of that quiet: a
    /// quiet replica's Raft state changes only through a call that wakes it first, so the view
    /// holds while the quiet lasts, and the sweep does not read thousands of quiet groups' metrics
    /// twice a second (docs/benchmarks.md, thirtieth pass).
    quiet_view: Arc<std::sync::Mutex<Option<(u64, GroupView)>>>,
    /// The term (plus one; 0: none) in which this replica, leading, was found to have applied
    /// every entry its log held: see `await_current_state`.
    current_in_term: Arc<AtomicU64>,
}

impl GroupHandle {
    /// Records a proposal or an incoming Raft call; a quiet group ticks again.
    pub fn touch(&self) {
        if self.activity.touch() {
            self.resume_ticking("activity");
        }
    }

    /// Records a heartbeat from the leader: a touch, unless it may predate the group's quiet.
    pub(crate) fn heard_heartbeat(&self) {
        if self.activity.heartbeat(quiet::clock_ms()) {
            self.resume_ticking("activity");
        }
    }

    /// Whether this replica holds its group's leadership: its vote is committed and names it.
    pub fn leads(&self) -> bool {
        use openraft::type_config::async_runtime::WatchReceiver;
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        metrics.vote.is_committed() && metrics.vote.leader_id().node_id() == &metrics.id
    }

    /// Waits until this replica, if it leads, has applied every entry its log holds (at most
    /// `within`; false if that passed first). A new leader's state lags its commit until it has
    /// applied what its predecessor committed, and a leader restarted in its term (openraft's leader
    /// restore) goes on from the commit it last saved, which lags too (it is saved with the next
    /// append): either may lack writes already acknowledged. Everything acknowledged before this
    /// leadership is in the leader's log, and everything acknowledged during it was applied here
    /// first, so once per term is enough; after that the check is one look at the metrics.
    pub async fn await_current_state(&self, within: Duration) -> bool {
        use openraft::type_config::async_runtime::WatchReceiver;
        let (term, last_log_index) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow_watched();
            if metrics.current_leader != Some(metrics.id) {
                // Not leading: whatever the caller reads next is a follower's view anyway.
                return true;
            }
            (metrics.current_term, metrics.last_log_index)
        };
        if self.current_in_term.load(Ordering::Acquire) == term + 1 {
            return true;
        }
        let applied = self
            .raft
            .wait(Some(within))
            .applied_index_at_least(last_log_index, "the leader's log applied")
            .await
            .is_ok();
        if applied {
            self.current_in_term.fetch_max(term + 1, Ordering::AcqRel);
        }
        applied
    }

    /// Whether the group has stopped ticking because it is idle.
    pub fn is_quiet(&self) -> bool {
        self.activity.quiet_since().is_some()
    }

    /// What this replica knows of its group.
    fn view(&self, me: NodeId) -> GroupView {
        use openraft::type_config::async_runtime::WatchReceiver;
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let followers = metrics
            .replication
            .as_ref()
            .map(|replication| {
                replication
                    .iter()
                    .filter(|(node, _)| **node != me)
                    .map(|(node, matched)| (*node, matched.as_ref().map(|log_id| log_id.index)))
                    .collect()
            })
            .unwrap_or_default();
        GroupView {
            me,
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index,
            last_applied_index: metrics.last_applied.as_ref().map(|log_id| log_id.index),
            followers,
            voters: metrics.membership_config.membership().voter_ids().collect(),
        }
    }

    /// Runs `look` on what this replica knows of its group: the view kept from earlier in the
    /// group's quiet if there is one, else a fresh one, kept if the group is quiet. The quiet's
    /// start is read before the view, so a kept view is never older than the quiet it is kept for.
    fn with_view<R>(&self, me: NodeId, look: impl FnOnce(&GroupView) -> R) -> R {
        let Some(since) = self.activity.quiet_since() else {
            return look(&self.view(me));
        };
        let mut kept = self.quiet_view.lock().unwrap_or_else(|e| e.into_inner());
        match &*kept {
            Some((kept_since, view)) if *kept_since == since => look(view),
            _ => look(&kept.insert((since, self.view(me))).1),
        }
    }

    /// Stops the tick of a group found idle at `decided_ms`, unless a touch came in since; true if
    /// the group is now quiet.
    fn stop_ticking(&self, decided_ms: u64) -> bool {
        self.activity.begin_quiet(decided_ms);
        self.raft.runtime_config().tick(false);
        if self.activity.still_quiet(decided_ms) {
            return true;
        }
        // Touched since the decision: the touch may have restarted the tick before this stop.
        self.activity.end_quiet();
        self.raft.runtime_config().tick(true);
        false
    }

    fn wake(&self, reason: &'static str) {
        if self.activity.end_quiet() {
            self.resume_ticking(reason);
        }
    }

    fn resume_ticking(&self, reason: &'static str) {
        self.raft.runtime_config().tick(true);
        metrics::counter!("ferry_raft_group_wakes_total", "reason" => reason).increment(1);
    }

    /// A follower's answer to its leader's [`QuiesceRequest`]: stops ticking if it agrees.
    pub(crate) fn quiesce_as_follower(&self, me: NodeId, request: &QuiesceRequest) -> bool {
        request.accepted_by(&self.view(me)) && self.stop_ticking(quiet::clock_ms())
    }

    /// The leader this replica believes in (may be stale by an election).
    pub fn current_leader(&self) -> Option<NodeId> {
        use openraft::type_config::async_runtime::WatchReceiver;
        self.raft.metrics().borrow_watched().current_leader
    }

    /// Waits until this replica's leader is other than `known` (a new leader, or none since an
    /// election began), or until `within` has passed.
    pub async fn leader_changes_from(&self, known: Option<NodeId>, within: Duration) {
        use openraft::type_config::async_runtime::WatchReceiver;
        let mut server = self.raft.server_metrics();
        let changed = async {
            while server.borrow_watched().current_leader == known {
                if server.changed().await.is_err() {
                    // The group stopped: nothing will change, so the whole wait passes.
                    std::future::pending::<()>().await;
                }
            }
        };
        let _ = tokio::time::timeout(within, changed).await;
    }

    /// Hands leadership to `preferred` if this replica (`me`) leads the group, `preferred` is another
    /// member whose log is within `max_lag` entries of ours, every follower answered lately, and
    /// this replica has not considered it in the last 10 s. Spreading leaders by placement puts each node's share of the work on it, instead of wherever
    /// elections happened to land. The leader refuses writes from now until the election the
    /// transfer starts (one round trip, since `preferred` campaigns on the TransferLeader call);
    /// if `preferred` cannot win, the other replicas, woken by the same call, elect one of their
    /// own when their timers fire.
    pub async fn hand_over(&self, me: NodeId, preferred: NodeId, max_lag: u64) -> bool {
        use openraft::type_config::async_runtime::WatchReceiver;
        use openraft::Instant as _;
        let now = quiet::clock_ms();
        let last = self.last_hand_over_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < HAND_OVER_INTERVAL_MS {
            return false;
        }
        self.last_hand_over_ms.store(now, Ordering::Relaxed);
        let ready = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow_watched();
            let last = metrics.last_log_index.unwrap_or(0);
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|replication| replication.get(&preferred).cloned().flatten())
                .map(|log_id| log_id.index);
            let caught_up = metrics.current_leader == Some(me)
                && preferred != me
                && matched.is_some_and(|matched| last.saturating_sub(matched) <= max_lag);
            let followers_answer = metrics.heartbeat.as_ref().is_some_and(|acked| {
                acked
                    .iter()
                    .filter(|(node, _)| **node != me)
                    .all(|(_, sent)| {
                        sent.as_ref()
                            .is_some_and(|sent| sent.elapsed() < HAND_OVER_RECENT_ACK)
                    })
            });
            caught_up && followers_answer
        };
        if !ready {
            return false;
        }
        // Tick through the election, however idle the group looks meanwhile.
        self.activity.hold_until(now + ELECTION_MAX_MS);
        self.raft.trigger().transfer_leader(preferred).await.is_ok()
    }

    /// Raft status for operators.
    pub fn status(&self) -> GroupStatus {
        use openraft::type_config::async_runtime::WatchReceiver;
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        GroupStatus {
            leader: metrics.current_leader,
            last_applied: index_of(&metrics.last_applied),
            snapshot: index_of(&metrics.snapshot),
            log_purged: index_of(&metrics.purged),
        }
    }
}

/// What a reconciler pass brought the node's groups in line with.
struct Reconciled {
    catalog: Catalog,
    /// The groups with data on this node that run nowhere here: of queues this replica's catalog
    /// had not caught up with.
    strays: BTreeSet<GroupId>,
}

/// Where one replica of a group stands, as indexes of its log.
#[derive(Debug, Clone, Copy)]
pub struct GroupStatus {
    pub leader: Option<NodeId>,
    pub last_applied: Option<u64>,
    /// The last entry the durable state holds (see `trim`).
    pub snapshot: Option<u64>,
    /// The last entry removed from the log.
    pub log_purged: Option<u64>,
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
    liveness: PeerLiveness,
    /// When this node was last in touch with the catalog's leader, on [`quiet::clock_ms`]; 0 for
    /// never since it started.
    catalog_contact_ms: AtomicU64,
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
            liveness: PeerLiveness::default(),
            catalog_contact_ms: AtomicU64::new(0),
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

    /// The groups whose replica here leads, by the committed vote in its metrics (as openraft's
    /// `as_leader` checks, which for every other replica builds an error naming the leader). The
    /// periodic passes that act only on led partitions look up thousands of groups a second.
    pub fn led_groups(&self) -> HashMap<GroupId, GroupHandle> {
        self.pick_groups(|handle| handle.leads().then(|| (handle.group, handle.clone())))
            .into_iter()
            .collect()
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

    /// What `pick` returns for the running groups it picks, found under the lock: the periodic
    /// passes look at every group several times a second, and cloning thousands of handles each
    /// time was a tenth of a node's samples with 2,500 queues (docs/benchmarks.md, twenty-ninth
    /// pass).
    pub(crate) fn pick_groups<T>(&self, pick: impl FnMut(&GroupHandle) -> Option<T>) -> Vec<T> {
        self.groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter_map(pick)
            .collect()
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

    /// Starts `group` on this node if it is not running. A replica new to the group first writes
    /// the group's first entry itself (see [`first_entry`]); the first replica then campaigns at
    /// once, so it usually becomes the first leader (placement spreads first replicas evenly), and
    /// the others wait out an election timeout, so a group forms without it too.
    pub async fn start_group(
        &self,
        group: GroupId,
        replicas: &[NodeId],
    ) -> io::Result<GroupHandle> {
        let _guard = self.lifecycle.lock().await;
        if let Some(handle) = self.group(group) {
            return Ok(handle);
        }
        let &[founder, ..] = replicas else {
            return Err(io::Error::other(format!("{group} has no replicas")));
        };
        let signals = Arc::new(GroupSignals::default());
        let catalog = group.is_catalog().then(|| self.catalog_tx.clone());
        let log = LogStore::new(self.db.clone(), group);
        let log_bytes = log.appended_bytes();
        let new_here = log.is_pristine()?;
        if new_here {
            log.write_first_entry(&first_entry(founder, replicas, &self.members))?;
        }
        let machine = GroupStateMachine::open(
            self.db.clone(),
            group,
            signals.clone(),
            catalog,
            log.clone(),
        )?;
        let network = GroupNetwork {
            router: self.router.clone(),
            group,
        };
        let raft = Raft::new(self.node_id, self.config.clone(), network, log, machine)
            .await
            .map_err(io::Error::other)?;
        if new_here && founder == self.node_id {
            raft.trigger()
                .elect(false)
                .await
                .map_err(io::Error::other)?;
        }
        let handle = GroupHandle {
            group,
            raft,
            signals,
            activity: Arc::new(Activity::new()),
            last_hand_over_ms: Arc::default(),
            log_bytes,
            log_bytes_at_snapshot: Arc::default(),
            quiet_view: Arc::default(),
            current_in_term: Arc::default(),
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

    /// Brings the groups on this node in line with the whole catalog: starts every partition placed
    /// here, removes partitions of deleted queues, and returns the groups with data on this node
    /// that run nowhere here (see [`Reconciled`]). It lists the groups on disk, a seek per group,
    /// so it runs only on the first pass and after a failed one, which a removal or a start may
    /// have left half-way.
    async fn reconcile_all(&self, catalog: &CatalogView) -> io::Result<BTreeSet<GroupId>> {
        let on_disk: BTreeSet<GroupId> = self.db.groups_on_disk()?.into_iter().collect();
        let missing: Vec<(GroupId, Vec<NodeId>)> = {
            let groups = self.groups.read().unwrap_or_else(|e| e.into_inner());
            catalog
                .queues
                .values()
                .flat_map(|queue| self.placed_here(queue))
                .filter(|(group, _)| !groups.contains_key(group))
                .collect()
        };
        for (group, replicas) in missing {
            self.start_group(group, &replicas).await?;
        }
        let running: BTreeSet<GroupId> = self
            .groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        let groups = running.union(&on_disk).copied();
        self.settle(catalog, groups, &running).await
    }

    /// Brings the groups on this node in line with `catalog`, given that the last pass did so with
    /// `last.catalog`: it looks only at the queues whose records differ between the two, and at
    /// the strays. A pass over every queue at each change was a fifth of the nodes' CPU while
    /// queues were created among 2,000 (docs/benchmarks.md, twenty-ninth pass).
    async fn reconcile_changes(
        &self,
        last: Reconciled,
        catalog: &CatalogView,
    ) -> io::Result<BTreeSet<GroupId>> {
        let mut placed = Vec::new();
        let mut looked_at: Vec<GroupId> = last.strays.into_iter().collect();
        for change in last.catalog.changed_queues(catalog) {
            placed.extend(
                change
                    .now
                    .into_iter()
                    .flat_map(|queue| self.placed_here(queue)),
            );
            looked_at.extend(
                change
                    .before
                    .into_iter()
                    .flat_map(|queue| self.placed_here(queue))
                    .map(|(group, _)| group),
            );
        }
        for (group, replicas) in placed {
            if self.group(group).is_none() {
                self.start_group(group, &replicas).await?;
            }
        }
        let running: BTreeSet<GroupId> = looked_at
            .iter()
            .copied()
            .filter(|group| self.group(*group).is_some())
            .collect();
        self.settle(catalog, looked_at, &running).await
    }

    /// Removes those of `groups` that belong to deleted queues; returns those that run nowhere
    /// here and stay.
    async fn settle(
        &self,
        catalog: &CatalogView,
        groups: impl IntoIterator<Item = GroupId>,
        running: &BTreeSet<GroupId>,
    ) -> io::Result<BTreeSet<GroupId>> {
        let mut strays = BTreeSet::new();
        for group in groups {
            // Only groups the catalog has assigned and no longer lists are removed: a group above
            // `last_group_id` belongs to a queue this replica's catalog has not caught up with yet.
            if !group.is_catalog()
                && group.0 <= catalog.last_group_id
                && !self.is_placed_here(catalog, group)
            {
                self.remove_group(group).await?;
            } else if !running.contains(&group) {
                strays.insert(group);
            }
        }
        Ok(strays)
    }

    /// The partitions of `queue` placed on this node, with their replicas.
    fn placed_here<'a>(
        &'a self,
        queue: &'a QueueRecord,
    ) -> impl Iterator<Item = (GroupId, Vec<NodeId>)> + 'a {
        queue
            .partitions
            .iter()
            .filter(|partition| partition.replicas.contains(&self.node_id))
            .map(|partition| (partition.group, partition.replicas.clone()))
    }

    fn is_placed_here(&self, catalog: &CatalogView, group: GroupId) -> bool {
        catalog.queue_of_group(group).is_some_and(|queue| {
            queue.partitions.iter().any(|partition| {
                partition.group == group && partition.replicas.contains(&self.node_id)
            })
        })
    }

    /// Keeps the local groups in line with the catalog until `shutdown` fires.
    pub async fn run_reconciler(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut catalog = self.catalog();
        let mut last: Option<Reconciled> = None;
        loop {
            let view = catalog.borrow_and_update().clone();
            let pass = match last.take() {
                Some(last) => self.reconcile_changes(last, &view).await,
                None => self.reconcile_all(&view).await,
            };
            last = match pass {
                Ok(strays) => Some(Reconciled {
                    catalog: view,
                    strays,
                }),
                Err(error) => {
                    tracing::error!(%error, "reconciling groups with the catalog failed");
                    None
                }
            };
            tokio::select! {
                changed = catalog.changed() => if changed.is_err() { return },
                _ = shutdown.changed() => return,
                // Retry a failed pass now and then even without catalog changes.
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }

    /// Whether this node should take client requests. It should while it is in touch with the
    /// catalog group's leader: it has heard from the leader's node within the failure detector's
    /// silence timeout, or it leads and has heard from a majority of the members. It still should
    /// for [`ELECTION_GRACE`] after that, as long as it hears from a majority: the catalog is
    /// electing a new leader, which requests wait for, and a load balancer that dropped every node
    /// meanwhile would refuse connections instead. A node cut off from the majority (or refused by
    /// the others, with another cluster secret) is not ready, nor is one that has not been in touch
    /// since it started, though it may remember a leader from its stored vote.
    pub fn is_ready(&self) -> bool {
        let now = quiet::clock_ms();
        if self.note_catalog_contact(now) {
            return true;
        }
        let last = self.catalog_contact_ms.load(Ordering::Relaxed);
        last != 0
            && now.saturating_sub(last) < ELECTION_GRACE.as_millis() as u64
            && self.hears_majority(now)
    }

    /// Whether this node is in touch with the catalog's leader now; remembers when it was.
    fn note_catalog_contact(&self, now: u64) -> bool {
        let Some(leader) = self
            .group(CATALOG_GROUP)
            .and_then(|handle| handle.current_leader())
        else {
            return false;
        };
        let in_touch = if leader == self.node_id {
            self.hears_majority(now)
        } else {
            self.hears(leader, now)
        };
        if in_touch {
            self.catalog_contact_ms.fetch_max(now, Ordering::Relaxed);
        }
        in_touch
    }

    fn hears(&self, node: NodeId, now: u64) -> bool {
        node == self.node_id || self.liveness.steady(node, now, u64::MAX)
    }

    /// The leader of `group` as this node's replica knows it, if that is this node or a peer heard
    /// from in the last two ping intervals (0.6 s): a leader that died is taken for gone well before
    /// the replica's election timeout (1.5–3 s) replaces it. None if no replica is hosted here.
    pub fn lively_leader(&self, group: GroupId) -> Option<NodeId> {
        let leader = self.group(group)?.current_leader()?;
        (leader == self.node_id || self.liveness.lively(leader, quiet::clock_ms()))
            .then_some(leader)
    }

    /// Whether this node, counting itself, has heard from a majority of the members.
    fn hears_majority(&self, now: u64) -> bool {
        self.liveness
            .majority_heard(self.node_id, self.members.keys().copied(), now)
    }

    /// Records a message from `node`'s process `boot`, which decodes queue commands up to
    /// `command_format`.
    pub(crate) fn heard_from(&self, node: NodeId, boot: u64, command_format: u32) {
        self.liveness.heard(node, boot, command_format);
    }

    /// Whether every other member announced, in the latest batch it sent here, that it decodes
    /// queue commands of `format` (one not heard from since this node started counts as not).
    pub fn members_decode(&self, format: u32) -> bool {
        self.members
            .keys()
            .filter(|&&node| node != self.node_id)
            .all(|&node| self.liveness.command_format(node) >= Some(format))
    }

    /// Quiets idle groups and wakes quiet ones whose peers went silent, every sweep interval, until
    /// `shutdown` fires.
    pub async fn run_quiescence(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut sweeps = tokio::time::interval(quiet::SWEEP_INTERVAL);
        sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sweeps.tick() => {}
                _ = shutdown.changed() => return,
            }
            self.sweep_quiet_groups();
        }
    }

    fn sweep_quiet_groups(&self) {
        let now = quiet::clock_ms();
        // Between readiness probes too, so that the grace after losing the leader counts from then.
        self.note_catalog_contact(now);
        let mut quiet_groups = 0;
        let mut health = GroupHealth::default();
        // Judged under the groups' lock; only the groups to act on are cloned out of it.
        let to_act_on = self.pick_groups(|handle| {
            handle.with_view(self.node_id, |view| {
                health.count(view);
                match quiet::verdict(view, &handle.activity, &self.liveness, now) {
                    Verdict::Keep => {
                        quiet_groups += usize::from(handle.is_quiet());
                        None
                    }
                    verdict => Some((handle.clone(), verdict, view.clone())),
                }
            })
        });
        for (handle, verdict, view) in to_act_on {
            match verdict {
                Verdict::Keep => {}
                Verdict::Wake => handle.wake("peer"),
                Verdict::Campaign => {
                    // Debug, not info: a follower cut off from its leader alone campaigns at every
                    // sweep, and the counter says so.
                    tracing::debug!(group = %handle.group, leader = ?view.leader, "leader silent past its lease: campaigning");
                    metrics::counter!("ferry_raft_campaigns_total").increment(1);
                    handle.activity.campaigned(now);
                    let raft = handle.raft.clone();
                    // After a random pause, so that voters whose sweeps run in step do not split
                    // their votes; pre-vote first, so that a leader the others still hear keeps
                    // its group.
                    let pause = Duration::from_millis(rand::random::<u64>() % CAMPAIGN_SPREAD_MS);
                    tokio::spawn(async move {
                        tokio::time::sleep(pause).await;
                        raft.trigger().elect(true).await
                    });
                }
                Verdict::Quiesce => {
                    if handle.stop_ticking(now) {
                        self.tell_followers_quiet(&handle, &view);
                    }
                }
            }
            quiet_groups += usize::from(handle.is_quiet());
        }
        metrics::gauge!("ferry_raft_quiet_groups").set(quiet_groups as f64);
        let peers_heard = self
            .members
            .keys()
            .filter(|&&node| node != self.node_id && self.hears(node, now))
            .count();
        metrics::gauge!("ferry_cluster_peers_heard").set(peers_heard as f64);
        health.report();
    }

    /// Sends each follower the leader's [`QuiesceRequest`]; the leader ticks again if one does not
    /// agree, so that its heartbeats keep that follower from starting an election.
    fn tell_followers_quiet(&self, handle: &GroupHandle, view: &GroupView) {
        let Some(last_log_index) = view.last_log_index else {
            return;
        };
        let request = QuiesceRequest {
            leader: self.node_id,
            term: view.term,
            last_log_index,
        };
        for (follower, _) in &view.followers {
            let (router, handle, request, follower) = (
                self.router.clone(),
                handle.clone(),
                request.clone(),
                *follower,
            );
            tokio::spawn(async move {
                let agreed = router
                    .quiesce(follower, handle.group, &request)
                    .await
                    .unwrap_or(false);
                if !agreed {
                    // Not again before another quiet delay.
                    handle.activity.hold_until(quiet::clock_ms());
                    handle.wake("refused");
                }
            });
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

/// The first entry of a new group: its membership, under the log id openraft's `initialize` gives
/// it on `founder`. Every replica writes the same entry before the group first runs there, so each
/// knows the members from the start. When only the founder initialised the group and the others
/// did after a delay, a replica that granted the founder its vote before this entry arrived counted
/// as initialised to openraft yet had no members, and could not elect anyone if the founder died
/// right then.
fn first_entry(founder: NodeId, replicas: &[NodeId], members: &BTreeMap<NodeId, String>) -> Entry {
    let nodes: BTreeMap<NodeId, BasicNode> = replicas
        .iter()
        .map(|node| {
            let address = members.get(node).cloned().unwrap_or_default();
            (*node, BasicNode::new(address))
        })
        .collect();
    let leader = LeaderIdOf::<TypeConfig>::new(0, founder);
    Entry::new(
        LogId::new(leader.to_committed(), 0),
        EntryPayload::Membership(Membership::from(nodes)),
    )
}

/// What the sweep counts of the groups on this node, for operators: how many it leads, how many
/// know no leader, and how far behind the slowest follower of a group it leads is.
#[derive(Default)]
struct GroupHealth {
    hosted: usize,
    led: usize,
    leaderless: usize,
    max_follower_lag: u64,
}

impl GroupHealth {
    fn count(&mut self, view: &GroupView) {
        self.hosted += 1;
        match view.leader {
            None => self.leaderless += 1,
            Some(leader) if leader == view.me => {
                self.led += 1;
                let last = view.last_log_index.unwrap_or(0);
                for (_, matched) in &view.followers {
                    let lag = last.saturating_sub(matched.unwrap_or(0));
                    self.max_follower_lag = self.max_follower_lag.max(lag);
                }
            }
            Some(_) => {}
        }
    }

    fn report(&self) {
        metrics::gauge!("ferry_raft_groups").set(self.hosted as f64);
        metrics::gauge!("ferry_raft_groups_led").set(self.led as f64);
        metrics::gauge!("ferry_raft_groups_without_leader").set(self.leaderless as f64);
        metrics::gauge!("ferry_raft_follower_lag_entries").set(self.max_follower_lag as f64);
    }
}
