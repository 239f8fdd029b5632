//! The catalog state machine, replicated by the catalog Raft group: which queues exist, their
//! attributes and tags, and which nodes hold the replicas of each of their partitions.
//!
//! Like `ferry-queue`, it is deterministic: placement and ids are decided in `apply` from the command
//! and the stored state only, so every replica agrees. Attribute values are stored as SQS strings and
//! validated by the broker before they are proposed.
//!
//! Rule: no IO; state lives behind `ferry_queue::StateStore`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ferry_queue::{StateStore, StoreError};
use ferry_types::{ErrorCode, FerryError, GroupId, NodeId};
use imbl::ordmap::DiffItem;
use imbl::OrdMap;
use serde::{Deserialize, Serialize};

/// Most tags a queue may have, as in SQS.
pub const MAX_TAGS: usize = 50;

const META_KEY: &[u8] = &[0x00];
const QUEUE_PREFIX: u8 = 0x01;
const DELETED_PREFIX: u8 = 0x02;
const MOVE_TASK_PREFIX: u8 = 0x03;

/// SQS refuses to re-create a queue name for 60 s after its deletion.
pub const RECREATE_AFTER_DELETE_MS: u64 = 60_000;
/// SQS allows one purge per queue per 60 s.
pub const PURGE_INTERVAL_MS: u64 = 60_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct CatalogMeta {
    next_queue_id: u64,
    next_group_id: u64,
    next_task_id: u64,
}

/// A partition of a queue: its Raft group and the nodes holding its replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    pub group: GroupId,
    pub replicas: Vec<NodeId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRecord {
    pub id: u64,
    pub name: String,
    pub fifo: bool,
    /// Settable SQS attributes, as given (defaults are filled in by the broker when read).
    pub attributes: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    pub created_at_ms: u64,
    pub modified_at_ms: u64,
    pub last_purge_at_ms: Option<u64>,
    pub partitions: Vec<Partition>,
    /// Statements added with AddPermission, by label.
    pub permissions: BTreeMap<String, Permission>,
}

/// A message move task: redrives a dead-letter queue's messages to their sources or a destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveTask {
    /// Unique, assigned by the catalog.
    pub id: u64,
    pub source: String,
    /// Destination queue name; None sends each message back to the queue it was dead-lettered from.
    pub destination: Option<String>,
    pub max_per_second: Option<u32>,
    pub status: MoveTaskStatus,
    pub moved: u64,
    pub to_move: u64,
    pub failure_reason: Option<String>,
    pub started_at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveTaskStatus {
    Running,
    Completed,
    Cancelled,
    Failed,
}

impl MoveTaskStatus {
    /// The name SQS reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Completed => "COMPLETED",
            Self::Cancelled => "CANCELLED",
            Self::Failed => "FAILED",
        }
    }
}

/// An AddPermission grant: these accounts may call these actions on the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub account_ids: Vec<String>,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatalogCommand {
    CreateQueue {
        name: String,
        fifo: bool,
        attributes: BTreeMap<String, String>,
        tags: BTreeMap<String, String>,
        partitions: u32,
        replication_factor: u32,
        /// The cluster's nodes, to place replicas on.
        nodes: Vec<NodeId>,
    },
    DeleteQueue {
        name: String,
    },
    SetAttributes {
        name: String,
        attributes: BTreeMap<String, String>,
    },
    TagQueue {
        name: String,
        tags: BTreeMap<String, String>,
    },
    UntagQueue {
        name: String,
        keys: Vec<String>,
    },
    AddPermission {
        name: String,
        label: String,
        permission: Permission,
    },
    RemovePermission {
        name: String,
        label: String,
    },
    /// Starts a move task; refused while the source has a running one.
    StartMoveTask {
        source: String,
        destination: Option<String>,
        max_per_second: Option<u32>,
        to_move: u64,
    },
    /// Records a running task's progress, and its end if `status` is not Running. Ignored for a task
    /// that has already ended (a cancel wins over a late progress report).
    UpdateMoveTask {
        id: u64,
        moved: u64,
        status: MoveTaskStatus,
        failure_reason: Option<String>,
    },
    /// Records a purge; refused within [`PURGE_INTERVAL_MS`] of the previous one.
    StartPurge {
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatalogResult {
    /// The queue after the command (for DeleteQueue: as it was before).
    Queue(QueueRecord),
    MoveTask(MoveTask),
    Failed(FerryError),
}

/// Applies one catalog command at the leader-stamped time `now_ms`; notes in `written` the keys it
/// wrote, from which [`CatalogView::refresh`] brings a view up to date.
pub fn apply(
    store: &mut dyn StateStore,
    now_ms: u64,
    command: &CatalogCommand,
    written: &mut Written,
) -> Result<CatalogResult, StoreError> {
    let store = &mut Recording { store, written };
    let outcome = match command {
        CatalogCommand::CreateQueue {
            name,
            fifo,
            attributes,
            tags,
            partitions,
            replication_factor,
            nodes,
        } => create_queue(
            store,
            now_ms,
            name,
            *fifo,
            attributes,
            tags,
            *partitions,
            *replication_factor,
            nodes,
        )?,
        CatalogCommand::DeleteQueue { name } => delete_queue(store, now_ms, name)?,
        CatalogCommand::SetAttributes { name, attributes } => update(store, name, |queue| {
            for (name, value) in attributes {
                // An empty value removes an optional attribute (a policy), as in SQS.
                if value.is_empty() {
                    queue.attributes.remove(name);
                } else {
                    queue.attributes.insert(name.clone(), value.clone());
                }
            }
            queue.modified_at_ms = now_ms;
            Ok(())
        })?,
        CatalogCommand::TagQueue { name, tags } => update(store, name, |queue| {
            // The limit is on the queue's tags after the call, which only the catalog knows.
            let mut merged = queue.tags.clone();
            merged.extend(tags.clone());
            if merged.len() > MAX_TAGS {
                return Err(too_many_tags());
            }
            queue.tags = merged;
            Ok(())
        })?,
        CatalogCommand::UntagQueue { name, keys } => update(store, name, |queue| {
            for key in keys {
                queue.tags.remove(key);
            }
            Ok(())
        })?,
        CatalogCommand::AddPermission {
            name,
            label,
            permission,
        } => update(store, name, |queue| {
            if queue.permissions.contains_key(label) {
                return Err(FerryError::invalid(format!(
                    "Value {label} for parameter Label is invalid. Reason: Already exists."
                )));
            }
            queue.permissions.insert(label.clone(), permission.clone());
            queue.modified_at_ms = now_ms;
            Ok(())
        })?,
        CatalogCommand::RemovePermission { name, label } => update(store, name, |queue| {
            if queue.permissions.remove(label).is_none() {
                return Err(FerryError::invalid(format!(
                    "Value {label} for parameter Label is invalid. Reason: can't find label on existing policy."
                )));
            }
            queue.modified_at_ms = now_ms;
            Ok(())
        })?,
        CatalogCommand::StartMoveTask {
            source,
            destination,
            max_per_second,
            to_move,
        } => {
            return start_move_task(
                store,
                now_ms,
                source,
                destination,
                *max_per_second,
                *to_move,
            );
        }
        CatalogCommand::UpdateMoveTask {
            id,
            moved,
            status,
            failure_reason,
        } => {
            return update_move_task(store, *id, *moved, *status, failure_reason);
        }
        CatalogCommand::StartPurge { name } => update(store, name, |queue| {
            if let Some(last) = queue.last_purge_at_ms {
                if now_ms < last.saturating_add(PURGE_INTERVAL_MS) {
                    return Err(FerryError::new(
                        ErrorCode::PurgeQueueInProgress,
                        format!(
                            "Only one PurgeQueue operation on {} is allowed every 60 seconds.",
                            queue.name
                        ),
                    ));
                }
            }
            queue.last_purge_at_ms = Some(now_ms);
            Ok(())
        })?,
    };
    Ok(match outcome {
        Ok(queue) => CatalogResult::Queue(queue),
        Err(error) => CatalogResult::Failed(error),
    })
}

/// The catalog as one replica has applied it. Its maps are persistent: a clone shares their nodes
/// and costs nothing in the number of queues, and a change copies only the path to what it changes,
/// so publishing a view after each catalog command and comparing it with the one before stay cheap
/// among thousands of queues (docs/benchmarks.md, thirtieth pass).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogView {
    /// Every queue, by name.
    pub queues: OrdMap<String, Arc<QueueRecord>>,
    /// Message move tasks by id.
    pub move_tasks: OrdMap<u64, MoveTask>,
    /// The highest group id ever assigned: a local group at or below it that no queue lists belongs
    /// to a deleted queue.
    pub last_group_id: u64,
    /// The queue each partition group belongs to.
    queue_by_group: OrdMap<GroupId, Arc<QueueRecord>>,
}

impl CatalogView {
    /// The queue whose partition `group` is.
    pub fn queue_of_group(&self, group: GroupId) -> Option<&QueueRecord> {
        self.queue_by_group.get(&group).map(|queue| &**queue)
    }

    /// Brings the view up to date with the writes noted in `written`, made to `store` since the
    /// view was read, by reading those records again, instead of the whole catalog after every
    /// change (docs/benchmarks.md, twenty-eighth pass); a clone of the view shares the records.
    pub fn refresh(&mut self, store: &dyn StateStore, written: &Written) -> Result<(), StoreError> {
        if written.everything {
            *self = load(store)?;
            return Ok(());
        }
        for key in &written.keys {
            match key.split_first() {
                Some((&QUEUE_PREFIX, name)) => {
                    let name = String::from_utf8_lossy(name).into_owned();
                    self.forget_queue(&name);
                    if let Some(queue) = get_queue(store, &name)? {
                        self.remember_queue(Arc::new(queue));
                    }
                }
                Some((&MOVE_TASK_PREFIX, id)) => {
                    let id = u64::from_be_bytes(id.try_into().map_err(|_| {
                        StoreError(format!("corrupt catalog move task key {key:?}"))
                    })?);
                    match get(store, key)? {
                        Some(bytes) => self.move_tasks.insert(id, decode(&bytes)?),
                        None => self.move_tasks.remove(&id),
                    };
                }
                _ if key.as_slice() == META_KEY => {
                    self.last_group_id = get(store, META_KEY)?
                        .map(|v| decode::<CatalogMeta>(&v))
                        .transpose()?
                        .unwrap_or_default()
                        .next_group_id;
                }
                // Names of deleted queues: not part of the view.
                _ => {}
            }
        }
        Ok(())
    }

    /// The queues whose records differ between this view and a `newer` one. A refreshed view
    /// shares with the one it was cloned from every part of its maps that no write touched, and
    /// the walk skips shared parts whole, so after one create it costs the depth of the map, not
    /// the number of queues.
    pub fn changed_queues<'a>(
        &'a self,
        newer: &'a CatalogView,
    ) -> impl Iterator<Item = QueueChange<'a>> {
        self.queues.diff(&newer.queues).map(|item| match item {
            DiffItem::Add(_, queue) => QueueChange {
                before: None,
                now: Some(&**queue),
            },
            DiffItem::Update { old, new } => QueueChange {
                before: Some(&**old.1),
                now: Some(&**new.1),
            },
            DiffItem::Remove(_, queue) => QueueChange {
                before: Some(&**queue),
                now: None,
            },
        })
    }

    fn remember_queue(&mut self, queue: Arc<QueueRecord>) {
        for partition in &queue.partitions {
            self.queue_by_group.insert(partition.group, queue.clone());
        }
        self.queues.insert(queue.name.clone(), queue);
    }

    fn forget_queue(&mut self, name: &str) {
        if let Some(queue) = self.queues.remove(name) {
            for partition in &queue.partitions {
                self.queue_by_group.remove(&partition.group);
            }
        }
    }
}

/// A queue whose record differs between two views of the catalog.
pub struct QueueChange<'a> {
    /// As the older view had it; None if the queue is new.
    pub before: Option<&'a QueueRecord>,
    /// As the newer view has it; None if the queue was deleted.
    pub now: Option<&'a QueueRecord>,
}

/// The catalog keys that applied commands wrote (see [`CatalogView::refresh`]).
#[derive(Debug, Default)]
pub struct Written {
    keys: BTreeSet<Vec<u8>>,
    /// The view must be read whole: a range was deleted, or see [`Written::everything`].
    everything: bool,
}

impl Written {
    /// Notes that the state changed in ways not recorded here (a snapshot replaced it, or an
    /// apply failed half-way): the next refresh reads the whole catalog.
    pub fn everything() -> Self {
        Self {
            keys: BTreeSet::new(),
            everything: true,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && !self.everything
    }
}

/// The store `apply` writes through: it notes every key written.
struct Recording<'a> {
    store: &'a mut dyn StateStore,
    written: &'a mut Written,
}

impl StateStore for Recording<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.get(key)
    }

    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.store.scan(start, end, visit)
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.written.keys.insert(key.clone());
        self.store.put(key, value);
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.written.keys.insert(key.clone());
        self.store.delete(key);
    }

    fn delete_range(&mut self, start: Vec<u8>, end: Vec<u8>) {
        self.written.everything = true;
        self.store.delete_range(start, end);
    }
}

/// Reads the whole catalog.
pub fn load(store: &dyn StateStore) -> Result<CatalogView, StoreError> {
    let mut view = CatalogView::default();
    for queue in records::<QueueRecord>(store, QUEUE_PREFIX)? {
        view.remember_queue(Arc::new(queue));
    }
    let move_tasks = records::<MoveTask>(store, MOVE_TASK_PREFIX)?
        .into_iter()
        .map(|task| (task.id, task))
        .collect();
    let meta = get(store, META_KEY)?
        .map(|v| decode::<CatalogMeta>(&v))
        .transpose()?
        .unwrap_or_default();
    Ok(CatalogView {
        move_tasks,
        last_group_id: meta.next_group_id,
        ..view
    })
}

fn move_task_key(id: u64) -> Vec<u8> {
    let mut key = vec![MOVE_TASK_PREFIX];
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// Every record stored under a one-byte key prefix, in key order.
fn records<T: for<'de> Deserialize<'de>>(
    store: &dyn StateStore,
    prefix: u8,
) -> Result<Vec<T>, StoreError> {
    let mut records = Vec::new();
    let mut failure = None;
    store.scan(
        &[prefix],
        &[prefix + 1],
        &mut |_, value| match decode::<T>(value) {
            Ok(record) => {
                records.push(record);
                true
            }
            Err(err) => {
                failure = Some(err);
                false
            }
        },
    )?;
    failure.map_or(Ok(records), Err)
}

fn start_move_task(
    store: &mut dyn StateStore,
    now_ms: u64,
    source: &str,
    destination: &Option<String>,
    max_per_second: Option<u32>,
    to_move: u64,
) -> Result<CatalogResult, StoreError> {
    if get_queue(store, source)?.is_none() {
        return Ok(CatalogResult::Failed(FerryError::new(
            ErrorCode::ResourceNotFound,
            "The resource that you specified for the SourceArn parameter doesn't exist.",
        )));
    }
    if records::<MoveTask>(store, MOVE_TASK_PREFIX)?
        .iter()
        .any(|task| task.source == source && task.status == MoveTaskStatus::Running)
    {
        return Ok(CatalogResult::Failed(FerryError::invalid(
            "There is already a task running. Only one active task is allowed for a source queue arn at a given time.",
        )));
    }
    let mut meta = get(store, META_KEY)?
        .map(|v| decode::<CatalogMeta>(&v))
        .transpose()?
        .unwrap_or_default();
    meta.next_task_id += 1;
    let task = MoveTask {
        id: meta.next_task_id,
        source: source.to_owned(),
        destination: destination.clone(),
        max_per_second,
        status: MoveTaskStatus::Running,
        moved: 0,
        to_move,
        failure_reason: None,
        started_at_ms: now_ms,
    };
    store.put(META_KEY.to_vec(), encode(&meta)?);
    store.put(move_task_key(task.id), encode(&task)?);
    Ok(CatalogResult::MoveTask(task))
}

fn update_move_task(
    store: &mut dyn StateStore,
    id: u64,
    moved: u64,
    status: MoveTaskStatus,
    failure_reason: &Option<String>,
) -> Result<CatalogResult, StoreError> {
    let Some(mut task) = get(store, &move_task_key(id))?
        .map(|v| decode::<MoveTask>(&v))
        .transpose()?
    else {
        return Ok(CatalogResult::Failed(FerryError::new(
            ErrorCode::ResourceNotFound,
            "Task does not exist.",
        )));
    };
    if task.status != MoveTaskStatus::Running {
        return Ok(CatalogResult::Failed(FerryError::new(
            ErrorCode::ResourceNotFound,
            "Only active tasks can be cancelled or updated.",
        )));
    }
    task.moved = task.moved.max(moved);
    task.status = status;
    task.failure_reason = failure_reason.clone();
    store.put(move_task_key(id), encode(&task)?);
    Ok(CatalogResult::MoveTask(task))
}

type Outcome = Result<Result<QueueRecord, FerryError>, StoreError>;

#[allow(clippy::too_many_arguments)]
fn create_queue(
    store: &mut dyn StateStore,
    now_ms: u64,
    name: &str,
    fifo: bool,
    attributes: &BTreeMap<String, String>,
    tags: &BTreeMap<String, String>,
    partitions: u32,
    replication_factor: u32,
    nodes: &[NodeId],
) -> Outcome {
    if let Some(existing) = get_queue(store, name)? {
        // CreateQueue is idempotent when the attributes match, an error when they differ.
        if existing.attributes == *attributes && existing.fifo == fifo {
            return Ok(Ok(existing));
        }
        let differing = attributes
            .iter()
            .find(|(key, value)| existing.attributes.get(*key) != Some(value))
            .map(|(key, _)| key.as_str())
            .or_else(|| {
                existing
                    .attributes
                    .keys()
                    .find(|key| !attributes.contains_key(*key))
                    .map(String::as_str)
            })
            .unwrap_or("FifoQueue");
        return Ok(Err(FerryError::new(
            ErrorCode::QueueNameExists,
            format!("A queue already exists with the same name and a different value for attribute {differing}"),
        )));
    }
    if let Some(deleted_at) = get(store, &key(DELETED_PREFIX, name))?
        .map(|v| decode::<u64>(&v))
        .transpose()?
    {
        if now_ms < deleted_at.saturating_add(RECREATE_AFTER_DELETE_MS) {
            return Ok(Err(FerryError::new(
                ErrorCode::QueueDeletedRecently,
                "You must wait 60 seconds after deleting a queue before you can create another with the same name.",
            )));
        }
    }
    if nodes.is_empty() || partitions == 0 || replication_factor == 0 {
        return Ok(Err(FerryError::internal(
            "placement needs nodes, partitions and a replication factor",
        )));
    }
    let mut meta = get(store, META_KEY)?
        .map(|v| decode::<CatalogMeta>(&v))
        .transpose()?
        .unwrap_or_default();
    let mut sorted_nodes = nodes.to_vec();
    sorted_nodes.sort_unstable();
    sorted_nodes.dedup();
    let replicas_per_partition = (replication_factor as usize).min(sorted_nodes.len());
    let partitions = (0..partitions)
        .map(|_| {
            meta.next_group_id += 1;
            let group = GroupId(meta.next_group_id);
            // Spread replicas, and with them the initial leaders, round-robin over the nodes.
            let offset = (group.0 as usize) % sorted_nodes.len();
            let replicas = (0..replicas_per_partition)
                .map(|i| sorted_nodes[(offset + i) % sorted_nodes.len()])
                .collect();
            Partition { group, replicas }
        })
        .collect();
    meta.next_queue_id += 1;
    let queue = QueueRecord {
        id: meta.next_queue_id,
        name: name.to_owned(),
        fifo,
        attributes: attributes.clone(),
        tags: tags.clone(),
        created_at_ms: now_ms,
        modified_at_ms: now_ms,
        last_purge_at_ms: None,
        partitions,
        permissions: BTreeMap::new(),
    };
    store.put(META_KEY.to_vec(), encode(&meta)?);
    store.put(key(QUEUE_PREFIX, name), encode(&queue)?);
    store.delete(key(DELETED_PREFIX, name));
    Ok(Ok(queue))
}

fn delete_queue(store: &mut dyn StateStore, now_ms: u64, name: &str) -> Outcome {
    let Some(queue) = get_queue(store, name)? else {
        return Ok(Err(FerryError::queue_does_not_exist()));
    };
    store.delete(key(QUEUE_PREFIX, name));
    store.put(key(DELETED_PREFIX, name), encode(&now_ms)?);
    Ok(Ok(queue))
}

/// The error for a queue that would have more than [`MAX_TAGS`] tags.
pub fn too_many_tags() -> FerryError {
    FerryError::invalid(format!("Too many tags: at most {MAX_TAGS} per queue."))
}

fn update(
    store: &mut dyn StateStore,
    name: &str,
    change: impl FnOnce(&mut QueueRecord) -> Result<(), FerryError>,
) -> Outcome {
    let Some(mut queue) = get_queue(store, name)? else {
        return Ok(Err(FerryError::queue_does_not_exist()));
    };
    if let Err(error) = change(&mut queue) {
        return Ok(Err(error));
    }
    store.put(key(QUEUE_PREFIX, name), encode(&queue)?);
    Ok(Ok(queue))
}

fn get_queue(store: &dyn StateStore, name: &str) -> Result<Option<QueueRecord>, StoreError> {
    get(store, &key(QUEUE_PREFIX, name))?
        .map(|v| decode(&v))
        .transpose()
}

fn get(store: &dyn StateStore, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    store.get(key)
}

fn key(prefix: u8, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + name.len());
    key.push(prefix);
    key.extend_from_slice(name.as_bytes());
    key
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(value).map_err(|e| StoreError(format!("encode catalog record: {e}")))
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError(format!("corrupt catalog record: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A partition's key space in memory.
    #[derive(Default)]
    struct MemStore(BTreeMap<Vec<u8>, Vec<u8>>);

    impl StateStore for MemStore {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.0.get(key).cloned())
        }

        fn scan(
            &self,
            start: &[u8],
            end: &[u8],
            visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
        ) -> Result<(), StoreError> {
            for (key, value) in self.0.range(start.to_vec()..end.to_vec()) {
                if !visit(key, value) {
                    break;
                }
            }
            Ok(())
        }

        fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
            self.0.insert(key, value);
        }

        fn delete(&mut self, key: Vec<u8>) {
            self.0.remove(&key);
        }

        fn delete_range(&mut self, start: Vec<u8>, end: Vec<u8>) {
            self.0.retain(|key, _| *key < start || *key >= end);
        }
    }

    fn create(name: &str) -> CatalogCommand {
        CatalogCommand::CreateQueue {
            name: name.into(),
            fifo: false,
            attributes: BTreeMap::new(),
            tags: BTreeMap::new(),
            partitions: 2,
            replication_factor: 3,
            nodes: vec![1, 2, 3],
        }
    }

    #[test]
    fn a_refreshed_view_is_the_view_read_whole() {
        let commands = [
            create("orders"),
            create("payments"),
            create("orders"),
            create("audit"),
            CatalogCommand::SetAttributes {
                name: "payments".into(),
                attributes: BTreeMap::from([("DelaySeconds".into(), "5".into())]),
            },
            CatalogCommand::StartMoveTask {
                source: "audit".into(),
                destination: Some("orders".into()),
                max_per_second: None,
                to_move: 3,
            },
            CatalogCommand::DeleteQueue {
                name: "orders".into(),
            },
            // Refused: a deleted queue's name is taken for a while (SQS).
            create("orders"),
            CatalogCommand::DeleteQueue {
                name: "missing".into(),
            },
        ];
        // The queues each command changed, as the reconciler's comparison of views finds them.
        let changed: [&[&str]; 9] = [
            &["orders"],
            &["payments"],
            &[],
            &["audit"],
            &["payments"],
            &[],
            &["orders"],
            &[],
            &[],
        ];
        let mut store = MemStore::default();
        let mut view = load(&store).unwrap();
        for ((at, command), changed) in commands.iter().enumerate().zip(changed) {
            let mut written = Written::default();
            apply(&mut store, 1_000 + at as u64, command, &mut written).unwrap();
            let before = view.clone();
            view.refresh(&store, &written).unwrap();
            assert_eq!(view, load(&store).unwrap(), "after {command:?}");
            let names: Vec<&str> = before
                .changed_queues(&view)
                .map(|change| &change.now.or(change.before).expect("a side").name[..])
                .collect();
            assert_eq!(names, changed, "after {command:?}");
            // Read whole, equal records are no change.
            assert_eq!(view.changed_queues(&load(&store).unwrap()).count(), 0);
        }
        assert_eq!(
            view.queues.keys().collect::<Vec<_>>(),
            ["audit", "payments"]
        );
        assert_eq!(view.move_tasks.len(), 1);
        let payments = &view.queues["payments"];
        assert_eq!(payments.attributes["DelaySeconds"], "5");
        assert_eq!(
            view.queue_of_group(payments.partitions[1].group)
                .map(|q| &q.name),
            Some(&payments.name)
        );
        assert_eq!(view.last_group_id, 6);
    }

    #[test]
    fn a_command_that_changes_nothing_writes_nothing() {
        let mut store = MemStore::default();
        apply(&mut store, 1, &create("orders"), &mut Written::default()).unwrap();
        let mut written = Written::default();
        apply(
            &mut store,
            2,
            &CatalogCommand::DeleteQueue {
                name: "missing".into(),
            },
            &mut written,
        )
        .unwrap();
        assert!(written.is_empty());
    }
}
