//! Durability of acknowledged messages across node stops, crashes and loss of quorum.
//!
//! What an acknowledgement promises: the message is committed on a quorum of its partition's
//! replicas, so it survives any minority of nodes crashing, a restarted node catches up and then
//! holds real replicas, and with a majority down the cluster refuses writes (`Unavailable` or
//! `OutcomeUnknown`, promptly) instead of hanging or acknowledging what it cannot keep.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    assert_no_loss_or_phantom, error_code, receive_and_delete, receive_request, send_bodies,
    wait_until, within, ClusterOptions, GroupInfo, SendOutcome, TestCluster,
};
use ferry_proto::v1::ferry_client::FerryClient;
use ferry_proto::v1::{
    CreateQueueRequest, DeleteMessageBatchEntry, DeleteMessageBatchRequest, SendMessageBatchEntry,
    SendMessageBatchRequest, SendMessageRequest,
};
use tonic::transport::Channel;

const PARTITIONS: u32 = 2;
/// Calls per batch: a healthy cluster, or one with a node down, acks on the first or second.
const SEND_ATTEMPTS: usize = 3;
/// A restarted node replays its log and receives what it missed.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// Draining a thousand messages, 10 per call.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
const EMPTY_RECEIVES_TO_STOP: usize = 3;
/// The server gives up on a quorum after ~10 s of internal retries; 20 s is the contract, plus
/// slack for a loaded machine.
const NO_QUORUM_TIMEOUT: Duration = Duration::from_secs(25);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_catches_up_and_holds_real_replicas() {
    let mut cluster = TestCluster::start(3, ClusterOptions::default()).await;
    let queue = "durable";
    create(&mut cluster.client(1), queue).await;

    // Phase 1: 500 messages with every node up.
    let all = cluster.clients();
    let mut ledger = Ledger::default();
    ledger.send(&all, queue, "a", 500).await;
    ledger.assert_all_acked("with every node up");

    // Phase 2: node 3 stops cleanly; the other two are a quorum and keep taking writes.
    cluster.terminate(3).await;
    let two = [cluster.client(1), cluster.client(2)];
    ledger.send(&two, queue, "b", 500).await;
    ledger.assert_all_acked("with node 3 stopped");

    // Phase 3: node 3 comes back and catches up on every group it hosts.
    cluster.restart(3).await;
    let partitions = cluster
        .wait_for_queue_groups(queue, PARTITIONS as usize, CATCH_UP_TIMEOUT)
        .await;
    wait_until(
        CATCH_UP_TIMEOUT,
        "node 3 applied as far as each group's leader",
        async || caught_up(&cluster, 3, &partitions).await,
    )
    .await;

    // Phase 4: with node 1 crashed, nodes 2 and 3 serve everything: node 3's replicas are real.
    drain_without_node_1(&mut cluster, queue, &ledger).await;
}

/// A replica that missed more than the log keeps behind a snapshot is brought back by a snapshot
/// transfer, and afterwards holds every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_replica_catches_up_from_a_snapshot() {
    let mut cluster = start_with_small_snapshots().await;
    let queue = "snapshotted";
    create(&mut cluster.client(1), queue).await;
    // Nodes 1 and 2 hold every partition's first entries before node 3 stops: a first leader that
    // dies before replicating anything leaves its group unable to elect (see ARCHITECTURE.md).
    let partitions = cluster
        .wait_for_queue_groups(queue, PARTITIONS as usize, CATCH_UP_TIMEOUT)
        .await;
    for group in &partitions {
        cluster.wait_for_leader(*group, CATCH_UP_TIMEOUT).await;
    }
    wait_until(
        CATCH_UP_TIMEOUT,
        "nodes 1 and 2 hold the new partitions",
        async || {
            caught_up(&cluster, 1, &partitions).await && caught_up(&cluster, 2, &partitions).await
        },
    )
    .await;
    cluster.terminate(3).await;

    // Far more log entries than the 20-entry snapshot interval (and its 4-entry tail) while node 3 is
    // down, so its partitions' leaders have purged what it would need to replay.
    let two = [cluster.client(1), cluster.client(2)];
    let mut ledger = Ledger::default();
    ledger.send(&two, queue, "s", 1_000).await;
    ledger.assert_all_acked("with node 3 stopped");

    cluster.restart(3).await;
    wait_until(
        CATCH_UP_TIMEOUT,
        "node 3 caught up from snapshots",
        async || caught_up(&cluster, 3, &partitions).await,
    )
    .await;
    assert!(
        cluster
            .log_text(3)
            .contains("installing snapshot from leader"),
        "node 3 should have caught up through a snapshot transfer"
    );
    // A snapshot is a point up to which the state is flushed, not a file: the leaders wrote a file
    // only to send it, and remove it once sent.
    wait_until(
        CATCH_UP_TIMEOUT,
        "nodes 1 and 2 keep no snapshot file",
        async || cluster.snapshot_files(1).is_empty() && cluster.snapshot_files(2).is_empty(),
    )
    .await;

    drain_without_node_1(&mut cluster, queue, &ledger).await;
}

/// Under load every group is snapshotted shortly before the state family's memtable would be
/// flushed anyway, and its log purged behind the snapshot (ARCHITECTURE.md, "Snapshots"), without
/// waiting for the snapshot interval. A node crashed afterwards restarts from the flushed state and
/// the log after it; nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_is_purged_behind_snapshots_paced_by_the_memtables() {
    // 64 MB of bodies in a few hundred entries, far fewer than the 20,000-entry snapshot interval,
    // fill more than three quarters of every node's 64 MiB state memtable.
    let queue = "paced";
    let (mut cluster, partitions, ledger) = start_and_send_large(queue, 250, 256_000).await;
    wait_until(
        CATCH_UP_TIMEOUT,
        "every node purged each partition's log up to a snapshot",
        async || {
            every_replica(&cluster, &partitions, |g| {
                g.log_purged.is_some() && g.log_purged == g.snapshot
            })
            .await
        },
    )
    .await;
    for node in [1, 2, 3] {
        assert!(
            cluster.snapshot_files(node).is_empty(),
            "node {node}: a snapshot is a flush of the state, not a file"
        );
    }
    crash_node_2_then_drain(&mut cluster, queue, &partitions, &ledger).await;
}

/// A queue that goes idle is snapshotted and its log purged although neither a memtable nor the
/// snapshot interval asked for it: on a cluster gone quiet its last entries would otherwise stay,
/// and be replayed at every restart, until the next busy spell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_queues_log_is_purged_behind_a_snapshot() {
    // About 600 KB in 30 entries: far below both other triggers.
    let queue = "idle";
    let (mut cluster, partitions, ledger) = start_and_send_large(queue, 30, 20_000).await;
    wait_until(
        CATCH_UP_TIMEOUT,
        "every node purged each quiet partition's whole log",
        async || {
            every_replica(&cluster, &partitions, |g| {
                g.quiet && g.log_purged.is_some() && g.log_purged == g.last_applied
            })
            .await
        },
    )
    .await;
    crash_node_2_then_drain(&mut cluster, queue, &partitions, &ledger).await;
}

/// A 3-node cluster with `queue`, its partitions, and `count` acknowledged sends of one `size`-byte
/// message each, spread over every partition (as under load) so that each one's log grows.
async fn start_and_send_large(
    queue: &str,
    count: usize,
    size: usize,
) -> (TestCluster, Vec<u64>, Ledger) {
    let options = ClusterOptions {
        home_partition_sends: Some(0),
        ..ClusterOptions::default()
    };
    let cluster = TestCluster::start(3, options).await;
    create(&mut cluster.client(1), queue).await;
    let partitions = cluster
        .wait_for_queue_groups(queue, PARTITIONS as usize, CATCH_UP_TIMEOUT)
        .await;
    let mut ledger = Ledger::default();
    ledger
        .send_large(&cluster.clients(), queue, queue, count, size)
        .await;
    ledger.assert_all_acked("with every node up");
    (cluster, partitions, ledger)
}

/// Whether every node answers and its replica of each of `partitions` passes `check`.
async fn every_replica(
    cluster: &TestCluster,
    partitions: &[u64],
    check: impl Fn(&GroupInfo) -> bool,
) -> bool {
    for node in [1, 2, 3] {
        let Some(groups) = cluster.try_groups(node).await else {
            return false;
        };
        let passes = partitions
            .iter()
            .all(|partition| groups.iter().any(|g| g.group == *partition && check(g)));
        if !passes {
            return false;
        }
    }
    true
}

/// SIGKILLs node 2 and restarts it; once it caught up, drains `queue` without node 1.
async fn crash_node_2_then_drain(
    cluster: &mut TestCluster,
    queue: &str,
    partitions: &[u64],
    ledger: &Ledger,
) {
    cluster.kill(2);
    cluster.restart(2).await;
    wait_until(
        CATCH_UP_TIMEOUT,
        "node 2 caught up after its crash",
        async || caught_up(cluster, 2, partitions).await,
    )
    .await;
    drain_without_node_1(cluster, queue, ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quorum_sends_fail_promptly_and_nothing_acked_is_lost() {
    let mut cluster = TestCluster::start(3, ClusterOptions::default()).await;
    let queue = "quorum";
    create(&mut cluster.client(1), queue).await;

    // Phase 1: 300 acknowledged messages.
    let all = cluster.clients();
    let mut ledger = Ledger::default();
    ledger.send(&all, queue, "a", 300).await;
    ledger.assert_all_acked("with every node up");

    // Phase 2: two of three nodes crash; the survivor must refuse a send, and say so in time.
    cluster.kill(1);
    cluster.kill(2);
    let body = "sent-without-quorum".to_string();
    ledger.attempted.insert(body.clone());
    let started = Instant::now();
    let result = within(
        NO_QUORUM_TIMEOUT,
        "SendMessage to the only survivor",
        cluster.client(3).send_message(SendMessageRequest {
            queue_name: queue.to_string(),
            body: body.clone(),
            ..Default::default()
        }),
    )
    .await;
    let status = match result {
        Ok(response) => panic!("a send without quorum was acknowledged: {response:?}"),
        Err(status) => status,
    };
    eprintln!(
        "send without quorum failed after {:?} with {:?}",
        started.elapsed(),
        error_code(&status)
    );
    assert!(
        matches!(error_code(&status), Some("Unavailable" | "OutcomeUnknown")),
        "a send without quorum failed with the wrong error after {:?}: {status:?}",
        started.elapsed()
    );
    if error_code(&status) == Some("Unavailable") {
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    } else {
        // OutcomeUnknown: it may have reached the survivor's log and commit once quorum is back.
        ledger.unknown.insert(body);
    }
    // Leader of the catalog or not, the survivor hears from no majority: a load balancer must see
    // it unready rather than send it requests that wait out the request timeout.
    wait_until(
        NO_QUORUM_TIMEOUT,
        "the survivor without a quorum reports itself unready",
        async || !cluster.is_ready(3).await,
    )
    .await;

    // Phase 3: the crashed nodes come back; everything acknowledged before is still there.
    cluster.spawn(1);
    cluster.spawn(2);
    for node in [1, 2, 3] {
        cluster.wait_ready(node).await;
    }
    let received = drain(&cluster.clients(), queue, &ledger.acked).await;
    ledger.check_received(&received);
    cluster
        .client(3)
        .send_message(SendMessageRequest {
            queue_name: queue.to_string(),
            body: "after-recovery".to_string(),
            ..Default::default()
        })
        .await
        .expect("a send once quorum is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_crash_keeps_acknowledged_messages() {
    let mut cluster = TestCluster::start(3, ClusterOptions::default()).await;
    let queue = "crash";
    create(&mut cluster.client(1), queue).await;

    // Phase 1: 300 acknowledged messages.
    let mut ledger = Ledger::default();
    ledger.send(&cluster.clients(), queue, "a", 300).await;
    ledger.assert_all_acked("with every node up");

    // Phase 2: every node is SIGKILLed at once, then started again: an ack was on disk, not in
    // some process's memory.
    crash_and_restart_all(&mut cluster).await;
    let received = drain(&cluster.clients(), queue, &ledger.acked).await;
    ledger.check_received(&received);
}

/// A partition leader that restarts goes on in its term from the commit it last saved, which lags
/// (it is saved with the next append): until it has applied the rest of its log, its state lacks
/// what was acknowledged just before the crash. A FIFO queue's delete is judged on that state (is
/// its handle's receive over?), so the restored leader, alone and unable to commit, must hold the
/// delete until its state is current rather than refuse the handles of a receive it acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_receipts_from_before_a_whole_cluster_crash_delete_after_it() {
    let mut cluster = TestCluster::start(3, ClusterOptions::default()).await;
    let queue = "receipts.fifo";
    let mut client = cluster.client(1);
    client
        .create_queue(CreateQueueRequest {
            queue_name: queue.to_string(),
            attributes: [("FifoQueue".to_string(), "true".to_string())].into(),
            partitions: 1,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create {queue}: {e:?}"));
    // The leader's node, started alone below, must know the queue to start its partition. A
    // replica saves the commit it has applied to with its next append, so once every catalog
    // replica applied the creation, one more catalog change appended everywhere saves it.
    catalog_level(&cluster).await;
    create(&mut client, "after-receipts").await;
    catalog_level(&cluster).await;
    let entries = (0..10)
        .map(|i| SendMessageBatchEntry {
            id: format!("e{i}"),
            body: format!("m{i}"),
            message_group_id: Some(format!("g{i}")),
            message_deduplication_id: Some(format!("d{i}")),
            ..Default::default()
        })
        .collect();
    let sent = client
        .send_message_batch(SendMessageBatchRequest {
            queue_name: queue.to_string(),
            entries,
        })
        .await
        .expect("send batch")
        .into_inner();
    assert_eq!(sent.successful.len(), 10, "{sent:?}");
    let mut handles = Vec::new();
    wait_until(DRAIN_TIMEOUT, "all ten messages are received", async || {
        let mut request = receive_request(queue, 10, 1);
        request.visibility_timeout = Some(600);
        let reply = client.receive_message(request).await.expect("receive");
        handles.extend(
            reply
                .into_inner()
                .messages
                .into_iter()
                .map(|m| m.receipt_handle),
        );
        handles.len() == 10
    })
    .await;
    let group = cluster
        .wait_for_queue_groups(queue, 1, CATCH_UP_TIMEOUT)
        .await[0];
    let leader = cluster.wait_for_leader(group, CATCH_UP_TIMEOUT).await;

    for node in [1, 2, 3] {
        cluster.kill(node);
    }
    cluster.spawn(leader);
    wait_until(
        CATCH_UP_TIMEOUT,
        "the partition's leader is back in its term",
        async || cluster.leader_of(group).await == Some(leader),
    )
    .await;
    let mut at_leader = cluster.client(leader);
    let entries = handles
        .iter()
        .enumerate()
        .map(|(i, handle)| DeleteMessageBatchEntry {
            id: format!("h{i}"),
            receipt_handle: handle.clone(),
        })
        .collect();
    let delete = tokio::spawn(async move {
        at_leader
            .delete_message_batch(DeleteMessageBatchRequest {
                queue_name: queue.to_string(),
                entries,
            })
            .await
    });
    // The followers come back; their acks let the leader commit and apply the rest of its log.
    for node in [1, 2, 3].into_iter().filter(|&node| node != leader) {
        cluster.spawn(node);
    }
    let deleted = within(DRAIN_TIMEOUT, "the delete", delete)
        .await
        .expect("delete task")
        .expect("delete batch")
        .into_inner();
    assert!(
        deleted.failed.is_empty(),
        "handles of an acknowledged receive were refused: {:?}",
        deleted.failed
    );
    assert_eq!(deleted.successful.len(), 10, "{deleted:?}");
    for node in [1, 2, 3] {
        cluster.wait_ready(node).await;
    }
    let left = cluster
        .client(1)
        .receive_message(receive_request(queue, 10, 1))
        .await
        .expect("receive after the deletes")
        .into_inner()
        .messages;
    assert!(left.is_empty(), "deleted messages came back: {left:?}");
}

/// Waits until every node's catalog replica has applied as far as the others.
async fn catalog_level(cluster: &TestCluster) {
    wait_until(
        CATCH_UP_TIMEOUT,
        "the catalog replicas are level",
        async || {
            let mut applied = Vec::new();
            for node in [1, 2, 3] {
                let groups = cluster.try_groups(node).await.unwrap_or_default();
                applied.push(groups.iter().find(|g| g.group == 0).map(|g| g.last_applied));
            }
            applied[0].flatten().is_some() && applied.iter().all(|a| *a == applied[0])
        },
    )
    .await;
}

/// A data directory in the format before each group's last log index was recorded (format 2) is
/// upgraded when a node of this build opens it, and nothing in it is lost. CI has no older build to
/// write one, so the test makes it from each stopped node's directory, undoing exactly what format
/// 3 added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_2_directories_are_upgraded_in_place_keeping_every_message() {
    let mut cluster = TestCluster::start(3, ClusterOptions::default()).await;
    let queue = "upgraded";
    create(&mut cluster.client(1), queue).await;
    let mut ledger = Ledger::default();
    ledger.send(&cluster.clients(), queue, "a", 200).await;
    ledger.assert_all_acked("before the upgrade");

    // Killed, not stopped: the state machines' writes skip the WAL, so their replicas must replay
    // the log up to its end, which the upgrade has to find.
    for node in [1, 2, 3] {
        cluster.kill(node);
    }
    for node in [1, 2, 3] {
        let removed = rewrite_as_format_2(&cluster.data_dir(node).join("db"));
        // The catalog and the queue's partitions.
        assert!(
            removed > PARTITIONS as usize,
            "node {node} had recorded the end of only {removed} logs"
        );
    }
    start_all(&mut cluster).await;
    for node in [1, 2, 3] {
        assert!(
            cluster.log_text(node).contains("format 2 upgraded to 3"),
            "node {node} did not log the upgrade"
        );
    }

    // The logs go on from where they ended: new sends are committed, and everything is there.
    ledger.send(&cluster.clients(), queue, "b", 50).await;
    ledger.assert_all_acked("after the upgrade");
    let received = drain(&cluster.clients(), queue, &ledger.acked).await;
    ledger.check_received(&received);
}

/// Makes the format 3 database of a stopped node format 2: deletes the `raft` family's last log
/// index keys (group (8) ++ `l`) and writes version 2 under its empty key. Returns how many
/// indexes it deleted. The families are opened with default options, not the node's, so automatic
/// compactions stay off; the node replays the write from the WAL with its own.
fn rewrite_as_format_2(db_dir: &Path) -> usize {
    let families =
        rocksdb::DB::list_cf(&rocksdb::Options::default(), db_dir).expect("list the families");
    let options = || {
        let mut options = rocksdb::Options::default();
        options.set_disable_auto_compactions(true);
        options
    };
    let descriptors = families
        .iter()
        .map(|name| rocksdb::ColumnFamilyDescriptor::new(name, options()));
    let db = rocksdb::DB::open_cf_descriptors(&options(), db_dir, descriptors)
        .expect("open a stopped node's database");
    let raft = db.cf_handle("raft").expect("the raft family");
    let last_index_keys: Vec<Box<[u8]>> = db
        .iterator_cf(raft, rocksdb::IteratorMode::Start)
        .map(|item| item.expect("read the raft family").0)
        .filter(|key| key.len() == 9 && key[8] == b'l')
        .collect();
    let mut batch = rocksdb::WriteBatch::default();
    for key in &last_index_keys {
        batch.delete_cf(raft, key);
    }
    batch.put_cf(raft, b"", 2u32.to_be_bytes());
    let mut sync = rocksdb::WriteOptions::default();
    sync.set_sync(true);
    db.write_opt(batch, &sync)
        .expect("write the format 2 database");
    last_index_keys.len()
}

/// State-machine writes skip the WAL, so a SIGKILL loses each node's unflushed state and rewinds it
/// to its last flush, while snapshots every 20 entries purged the log up to recent flushes.
/// Restarting must rebuild exactly what was committed: every acknowledged message that was not
/// deleted is there, and no deleted one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_crash_rebuilds_state_from_snapshot_and_log() {
    let mut cluster = start_with_small_snapshots().await;
    let queue = "rebuilt";
    create(&mut cluster.client(1), queue).await;

    // Phase 1: 400 acknowledged messages, then about half of them received and deleted, each
    // deletion confirmed.
    let mut ledger = Ledger::default();
    ledger.send(&cluster.clients(), queue, "a", 400).await;
    ledger.assert_all_acked("with every node up");
    let deleted = delete_some(&mut cluster.client(1), queue, 200).await;

    // Phase 2: every node is SIGKILLed at once and started again.
    crash_and_restart_all(&mut cluster).await;
    let remaining: HashSet<String> = ledger.acked.difference(&deleted).cloned().collect();
    let received = drain(&cluster.clients(), queue, &remaining).await;
    let resurrected: Vec<&String> = deleted
        .iter()
        .filter(|body| received.contains_key(*body))
        .collect();
    assert!(
        resurrected.is_empty(),
        "{} messages deleted before the crash came back, e.g. {:?}",
        resurrected.len(),
        &resurrected[..resurrected.len().min(10)]
    );
    let missing: Vec<&String> = remaining
        .iter()
        .filter(|body| !received.contains_key(*body))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages were lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

/// Receives and deletes until at least `count` deletions were confirmed; returns their bodies.
async fn delete_some(
    client: &mut FerryClient<Channel>,
    queue: &str,
    count: usize,
) -> HashSet<String> {
    let mut deleted = HashSet::new();
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while deleted.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} deletions within {DRAIN_TIMEOUT:?}",
            deleted.len()
        );
        let mut request = receive_request(queue, 10, 1);
        request.visibility_timeout = Some(600);
        let messages = client
            .receive_message(request)
            .await
            .expect("receive with every node up")
            .into_inner()
            .messages;
        let entries = messages
            .iter()
            .enumerate()
            .map(|(i, m)| DeleteMessageBatchEntry {
                id: i.to_string(),
                receipt_handle: m.receipt_handle.clone(),
            })
            .collect();
        if messages.is_empty() {
            continue;
        }
        let reply = client
            .delete_message_batch(DeleteMessageBatchRequest {
                queue_name: queue.to_string(),
                entries,
            })
            .await
            .expect("delete with every node up")
            .into_inner();
        assert!(
            reply.failed.is_empty(),
            "deletes failed: {:?}",
            reply.failed
        );
        deleted.extend(messages.into_iter().map(|m| m.body));
    }
    deleted
}

/// Three nodes that snapshot every 20 entries (keeping a 4-entry log tail), so a short test moves
/// replicas through snapshot transfers and restarts from flushed state and a short log. Sends spread
/// over every partition, as under load: concentrated in the first, they merge into so few entries
/// that a follower back within a second may still find them in its leader's log.
async fn start_with_small_snapshots() -> TestCluster {
    let options = ClusterOptions {
        snapshot_entries: Some(20),
        home_partition_sends: Some(0),
        ..ClusterOptions::default()
    };
    TestCluster::start(3, options).await
}

/// SIGKILLs every node at once, then starts them all again and waits until each is ready.
async fn crash_and_restart_all(cluster: &mut TestCluster) {
    for node in [1, 2, 3] {
        cluster.kill(node);
    }
    start_all(cluster).await;
}

/// Starts every stopped node, then waits until each is ready.
async fn start_all(cluster: &mut TestCluster) {
    for node in [1, 2, 3] {
        cluster.spawn(node);
    }
    for node in [1, 2, 3] {
        cluster.wait_ready(node).await;
    }
}

async fn create(client: &mut FerryClient<Channel>, queue: &str) {
    client
        .create_queue(CreateQueueRequest {
            queue_name: queue.to_string(),
            partitions: PARTITIONS,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create {queue}: {e:?}"));
}

/// Every body sent, and what became of it.
#[derive(Default)]
struct Ledger {
    attempted: HashSet<String>,
    acked: HashSet<String>,
    unknown: HashSet<String>,
    not_acked: Vec<String>,
}

impl Ledger {
    /// Sends `count` bodies named `<tag>-<i>` in batches of 10, spread over `clients`.
    async fn send(
        &mut self,
        clients: &[FerryClient<Channel>],
        queue: &str,
        tag: &str,
        count: usize,
    ) {
        for (call, start) in (0..count).step_by(10).enumerate() {
            let bodies: Vec<String> = (start..(start + 10).min(count))
                .map(|i| format!("{tag}-{i}"))
                .collect();
            self.send_call(clients, call, queue, bodies).await;
        }
    }

    /// Sends `count` bodies of `size` bytes, `<tag>-<i>-` then padding, one per call (a batch
    /// carries at most 256 KiB in all).
    async fn send_large(
        &mut self,
        clients: &[FerryClient<Channel>],
        queue: &str,
        tag: &str,
        count: usize,
        size: usize,
    ) {
        for call in 0..count {
            let mut body = format!("{tag}-{call}-");
            body.extend(std::iter::repeat_n('x', size - body.len()));
            self.send_call(clients, call, queue, vec![body]).await;
        }
    }

    async fn send_call(
        &mut self,
        clients: &[FerryClient<Channel>],
        call: usize,
        queue: &str,
        bodies: Vec<String>,
    ) {
        self.attempted.extend(bodies.iter().cloned());
        let SendOutcome {
            acked,
            unknown,
            rejected,
            unexpected,
        } = send_bodies(clients, call % clients.len(), queue, bodies, SEND_ATTEMPTS).await;
        assert!(
            unexpected.is_empty(),
            "unexpected send errors: {unexpected:?}"
        );
        self.acked.extend(acked);
        self.not_acked.extend(unknown.iter().cloned());
        self.not_acked.extend(rejected);
        self.unknown.extend(unknown);
    }

    #[track_caller]
    fn assert_all_acked(&self, when: &str) {
        assert!(
            self.not_acked.is_empty(),
            "{} sends were not acknowledged {when}, e.g. {:?}",
            self.not_acked.len(),
            &self.not_acked[..self.not_acked.len().min(10)]
        );
    }

    /// Every acknowledged body was received; nothing received was never sent.
    fn check_received(&self, received: &HashMap<String, usize>) {
        let duplicates: usize = received.values().map(|n| n - 1).sum();
        eprintln!(
            "acked {}, unknown {}, received {} distinct, {duplicates} duplicates",
            self.acked.len(),
            self.unknown.len(),
            received.len()
        );
        assert_no_loss_or_phantom(&self.attempted, &self.acked, &self.unknown, received);
    }
}

/// Whether `node` has applied, in the catalog and in each of `partitions`, at least as far as
/// that group's leader had when asked (the leader is asked first, so new entries arriving
/// meanwhile cannot make this flap).
async fn caught_up(cluster: &TestCluster, node: u64, partitions: &[u64]) -> bool {
    for group in std::iter::once(0).chain(partitions.iter().copied()) {
        let Some(leader) = cluster.leader_of(group).await else {
            return false;
        };
        let Some(at_leader) = applied(cluster, leader, group).await else {
            return false;
        };
        let Some(local) = applied(cluster, node, group).await else {
            return false;
        };
        if local < at_leader {
            return false;
        }
    }
    true
}

/// `last_applied` of `group` on `node`, if the node answers and has applied anything.
async fn applied(cluster: &TestCluster, node: u64, group: u64) -> Option<u64> {
    let groups = cluster.try_groups(node).await?;
    groups.iter().find(|g| g.group == group)?.last_applied
}

/// SIGKILLs node 1 and drains `queue` through nodes 2 and 3: what they hold alone must be every
/// message `ledger` had acknowledged.
async fn drain_without_node_1(cluster: &mut TestCluster, queue: &str, ledger: &Ledger) {
    cluster.kill(1);
    let survivors = [cluster.client(2), cluster.client(3)];
    let received = drain(&survivors, queue, &ledger.acked).await;
    ledger.check_received(&received);
}

/// Receives and deletes through `clients` in turn until every `expected` body was seen and a few
/// receives in a row came back empty. Returns how often each body was received.
async fn drain(
    clients: &[FerryClient<Channel>],
    queue: &str,
    expected: &HashSet<String>,
) -> HashMap<String, usize> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut received: HashMap<String, usize> = HashMap::new();
    let mut empty_in_a_row = 0;
    let mut call = 0;
    while Instant::now() < deadline {
        let mut client = clients[call % clients.len()].clone();
        call += 1;
        match receive_and_delete(&mut client, queue, 1).await {
            Err(status) => {
                eprintln!("drain {queue}: receive failed: {status:?}");
                // Not waiting for a state: only not hammering a node that is still electing.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(messages) if messages.is_empty() => {
                empty_in_a_row += 1;
                if empty_in_a_row >= EMPTY_RECEIVES_TO_STOP
                    && expected.iter().all(|b| received.contains_key(b))
                {
                    break;
                }
            }
            Ok(messages) => {
                empty_in_a_row = 0;
                for m in messages {
                    *received.entry(m.body).or_default() += 1;
                }
            }
        }
    }
    received
}
