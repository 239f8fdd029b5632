//! FIFO queues and dead-letter queues on a 3-node cluster, through the gRPC API.
//!
//! Proves: every message group is received in exact send order while partition leaders are
//! killed and restarted, with no acknowledged message lost and no deduplicated send delivered
//! twice; deduplication and receive-attempt retries hold across a leader failover; a long poll
//! with a receive attempt id takes a message sent while it waits; a poison
//! message reaches the dead-letter queue after exactly maxReceiveCount receives plus the one that
//! moves it; a high-throughput FIFO queue spreads its groups over all its partitions; a message
//! move task redrives thousands of dead letters to their source while a node restarts; thousands
//! of groups in flight do not hide a group with something to receive; a delete with an expired
//! receipt handle is refused on a FIFO queue and accepted on a standard one.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{
    approximate_total, error_code, queue_samples, receive_request, scrape_all, wait_for,
    wait_until, within, ClusterOptions, TestCluster,
};
use ferry_proto::v1::ferry_client::FerryClient;
use ferry_proto::v1::{
    CreateQueueRequest, DeleteMessageBatchEntry, DeleteMessageBatchRequest, DeleteMessageRequest,
    GetQueueAttributesRequest, ListMessageMoveTasksRequest, Message, ReceiveMessageRequest,
    SendMessageBatchEntry, SendMessageBatchRequest, SendMessageRequest,
    StartMessageMoveTaskRequest,
};
use tonic::transport::Channel;

const GROUPS: usize = 200;
const PER_GROUP: usize = 6;
/// How long a whole FIFO run (sends, kills, drain) may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(150);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

async fn create(
    client: &mut FerryClient<Channel>,
    name: &str,
    attributes: &[(&str, &str)],
    partitions: u32,
) {
    let attributes = attributes
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    client
        .create_queue(CreateQueueRequest {
            queue_name: name.into(),
            attributes,
            partitions,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e:?}"));
}

fn send_request(queue: &str, group: &str, body: &str, dedup: &str) -> SendMessageRequest {
    SendMessageRequest {
        queue_name: queue.into(),
        body: body.into(),
        message_group_id: Some(group.into()),
        message_deduplication_id: Some(dedup.into()),
        ..Default::default()
    }
}

/// Sends until acknowledged, rotating over nodes: with a deduplication id a retry of a send whose
/// outcome was unknown cannot store it twice.
async fn send_until_acked(
    clients: &[FerryClient<Channel>],
    start: usize,
    request: SendMessageRequest,
) -> String {
    let deadline = Instant::now() + RUN_TIMEOUT;
    let mut attempt = start;
    loop {
        let mut client = clients[attempt % clients.len()].clone();
        match tokio::time::timeout(CALL_TIMEOUT, client.send_message(request.clone())).await {
            Ok(Ok(reply)) => return reply.into_inner().message_id,
            Ok(Err(status)) => {
                let code = error_code(&status).unwrap_or("transport");
                assert!(
                    matches!(
                        code,
                        "Unavailable" | "OutcomeUnknown" | "transport" | "Internal"
                    ),
                    "unexpected send error {status:?}"
                );
            }
            Err(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "send of {} never acknowledged",
            request.body
        );
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the consumers saw, per group, in the order they saw it.
#[derive(Default)]
struct Seen {
    by_group: HashMap<String, Vec<usize>>,
    /// Bodies whose delete was acknowledged: they must never come back.
    deleted: HashSet<String>,
    delivered_after_delete: Vec<String>,
}

fn index_of(body: &str) -> usize {
    body.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("body ends with its index")
}

/// Receives and deletes until every body is seen, checking order per group as it goes.
async fn consume(
    clients: Vec<FerryClient<Channel>>,
    queue: String,
    seen: Arc<Mutex<Seen>>,
    total: usize,
    worker: usize,
) {
    let deadline = Instant::now() + RUN_TIMEOUT;
    let mut turn = worker;
    loop {
        if seen
            .lock()
            .unwrap()
            .by_group
            .values()
            .map(|v| v.iter().collect::<HashSet<_>>().len())
            .sum::<usize>()
            >= total
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "consumer {worker} of {queue} did not finish"
        );
        turn += 1;
        let mut client = clients[turn % clients.len()].clone();
        let mut request = receive_request(&queue, 10, 1);
        request.visibility_timeout = Some(20);
        let Ok(Ok(reply)) =
            tokio::time::timeout(CALL_TIMEOUT, client.receive_message(request)).await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let messages = reply.into_inner().messages;
        if messages.is_empty() {
            continue;
        }
        {
            let mut seen = seen.lock().unwrap();
            for message in &messages {
                let group = message
                    .attributes
                    .get("MessageGroupId")
                    .expect("MessageGroupId")
                    .clone();
                if seen.deleted.contains(&message.body) {
                    seen.delivered_after_delete.push(message.body.clone());
                }
                seen.by_group
                    .entry(group)
                    .or_default()
                    .push(index_of(&message.body));
            }
        }
        let entries = messages
            .iter()
            .enumerate()
            .map(|(i, m)| DeleteMessageBatchEntry {
                id: format!("d{i}"),
                receipt_handle: m.receipt_handle.clone(),
            })
            .collect();
        let request = DeleteMessageBatchRequest {
            queue_name: queue.clone(),
            entries,
        };
        if let Ok(Ok(reply)) =
            tokio::time::timeout(CALL_TIMEOUT, client.delete_message_batch(request)).await
        {
            let reply = reply.into_inner();
            let ok: HashSet<String> = reply.successful.into_iter().map(|e| e.id).collect();
            let mut seen = seen.lock().unwrap();
            for (i, message) in messages.iter().enumerate() {
                if ok.contains(&format!("d{i}")) {
                    seen.deleted.insert(message.body.clone());
                }
            }
        }
    }
}

/// Within a group, deliveries must follow send order; a redelivery (after a lost delete or an
/// expired visibility timeout) may restart from an earlier message, but never skip one.
fn assert_group_order(group: &str, indexes: &[usize]) {
    let mut next_new = 0;
    for (position, &index) in indexes.iter().enumerate() {
        assert!(index <= next_new, "group {group}: message {index} delivered before {next_new} (deliveries {indexes:?}, at {position})");
        if index == next_new {
            next_new += 1;
        }
    }
}

async fn run_fifo_workload(cluster: &mut TestCluster, queue: &str) {
    let clients = cluster.clients();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let total = GROUPS * PER_GROUP;
    let consumers: Vec<_> = (0..4)
        .map(|worker| {
            tokio::spawn(consume(
                clients.clone(),
                queue.to_owned(),
                seen.clone(),
                total,
                worker,
            ))
        })
        .collect();
    let senders: Vec<_> = (0..GROUPS)
        .map(|group| {
            let clients = clients.clone();
            let queue = queue.to_owned();
            tokio::spawn(async move {
                for i in 0..PER_GROUP {
                    let group_id = format!("g{group}");
                    let body = format!("{queue}-g{group}-{i}");
                    let request = send_request(&queue, &group_id, &body, &format!("d-{group}-{i}"));
                    send_until_acked(&clients, group + i, request).await;
                }
            })
        })
        .collect();

    // Kill the leader of each of the queue's partitions in turn while the load runs.
    let partitions = cluster.queue_groups(queue).await;
    for partition in partitions {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let leader = cluster
            .wait_for_leader(partition, Duration::from_secs(30))
            .await;
        eprintln!("fifo {queue}: SIGKILL node {leader}, leader of group {partition}");
        cluster.kill(leader);
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        cluster.restart(leader).await;
    }
    for sender in senders {
        sender.await.expect("sender");
    }
    for consumer in consumers {
        consumer.await.expect("consumer");
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.by_group.len(), GROUPS, "every group was received");
    for (group, indexes) in &seen.by_group {
        assert_group_order(group, indexes);
        let distinct: HashSet<_> = indexes.iter().collect();
        assert_eq!(
            distinct.len(),
            PER_GROUP,
            "group {group}: every acknowledged message received"
        );
    }
    assert!(
        seen.delivered_after_delete.is_empty(),
        "delivered after an acknowledged delete: {:?}",
        seen.delivered_after_delete
    );
    let deliveries: usize = seen.by_group.values().map(Vec::len).sum();
    eprintln!("fifo {queue}: {total} messages in {GROUPS} groups, {deliveries} deliveries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_groups_keep_order_through_leader_kills() {
    let mut cluster = TestCluster::start(3, ClusterOptions::default()).await;
    let mut client = cluster.client(1);
    create(&mut client, "orders.fifo", &[("FifoQueue", "true")], 0).await;
    run_fifo_workload(&mut cluster, "orders.fifo").await;
    let high = [
        ("FifoQueue", "true"),
        ("DeduplicationScope", "messageGroup"),
        ("FifoThroughputLimit", "perMessageGroupId"),
    ];
    create(&mut cluster.client(2), "fast.fifo", &high, 3).await;
    run_fifo_workload(&mut cluster, "fast.fifo").await;
}

/// The partition (Raft group) a receipt handle names: bytes 9..17 of the decoded handle.
fn handle_group(handle: &str) -> u64 {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(handle)
        .expect("base64url handle");
    u64::from_be_bytes(raw[9..17].try_into().expect("8 bytes"))
}

/// The wait of the FIFO long poll below; it must return with the message well before.
const ATTEMPT_POLL_SECONDS: u32 = 10;

/// A FIFO long poll with a receive attempt id takes a message sent while it waits. (The empty answer
/// of its first sweep used to be remembered for the attempt, so the poll's later tries answered
/// empty until its wait ran out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_long_poll_with_an_attempt_id_takes_what_arrives_while_it_waits() {
    let cluster = TestCluster::start(3, ClusterOptions::default()).await;
    let mut client = cluster.client(1);
    let high = [
        ("FifoQueue", "true"),
        ("DeduplicationScope", "messageGroup"),
        ("FifoThroughputLimit", "perMessageGroupId"),
    ];
    create(&mut client, "waiting.fifo", &high, 4).await;
    let mut poller = cluster.client(2);
    let poll = tokio::spawn(async move {
        let mut request = receive_request("waiting.fifo", 10, ATTEMPT_POLL_SECONDS);
        request.receive_request_attempt_id = Some("waiting-1".into());
        let started = Instant::now();
        let messages = poller
            .receive_message(request)
            .await
            .map(|r| r.into_inner().messages);
        (messages, started.elapsed())
    });
    // Give the poll time to reach the server and sweep the empty queue; if it has not, the test
    // still holds, it just proves less.
    tokio::time::sleep(Duration::from_millis(500)).await;
    send_until_acked(
        &cluster.clients(),
        0,
        send_request("waiting.fifo", "g", "late", "d1"),
    )
    .await;
    let (messages, took) = within(CALL_TIMEOUT, "the long poll", poll)
        .await
        .expect("long-poll task");
    let messages = messages.expect("long-poll ReceiveMessage");
    assert_eq!(
        messages.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["late"],
        "the long poll answered after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_in_flight_do_not_hide_the_groups_behind_them() {
    // More groups in flight than a receive looks at (2,000), all older than the one group that has
    // something to receive: every receive must still find what there is.
    const BUSY: usize = 2_200;
    let cluster = TestCluster::start(3, ClusterOptions::default()).await;
    let mut client = cluster.client(1);
    let attributes = [
        ("FifoQueue", "true"),
        ("ContentBasedDeduplication", "true"),
        ("VisibilityTimeout", "600"),
    ];
    create(&mut client, "busy.fifo", &attributes, 1).await;
    for batch in 0..BUSY / 10 {
        let entries = (0..10)
            .map(|i| {
                let group = batch * 10 + i;
                SendMessageBatchEntry {
                    id: format!("e{i}"),
                    body: format!("m{group:04}"),
                    message_group_id: Some(format!("busy{group:04}")),
                    ..Default::default()
                }
            })
            .collect();
        let request = SendMessageBatchRequest {
            queue_name: "busy.fifo".into(),
            entries,
        };
        let reply = within(
            CALL_TIMEOUT,
            "a batch send",
            client.send_message_batch(request),
        )
        .await
        .expect("send batch")
        .into_inner();
        assert!(reply.failed.is_empty(), "{:?}", reply.failed);
    }
    let mut received = Vec::new();
    while received.len() < BUSY {
        let messages = receive_ten(&mut client, "busy.fifo").await;
        assert_eq!(messages.len(), 10, "after {} received", received.len());
        received.extend(messages.into_iter().map(|m| m.body));
    }
    let expected: Vec<String> = (0..BUSY).map(|group| format!("m{group:04}")).collect();
    assert_eq!(received, expected, "every group once, oldest first");
    send_until_acked(
        &cluster.clients(),
        0,
        send_request("busy.fifo", "late", "late1", "d-late"),
    )
    .await;
    let messages = receive_ten(&mut client, "busy.fifo").await;
    assert_eq!(
        messages.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["late1"]
    );
}

/// Up to ten messages, with a long poll: a short poll answers from the node's own replica, which may
/// not have applied the latest send yet (an SQS short poll may also miss messages).
async fn receive_ten(client: &mut FerryClient<Channel>, queue: &str) -> Vec<Message> {
    let request = receive_request(queue, 10, 5);
    within(CALL_TIMEOUT, "a receive", client.receive_message(request))
        .await
        .expect("receive")
        .into_inner()
        .messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deduplication_attempts_and_spreading_hold_across_failover() {
    let mut cluster = TestCluster::start(3, ClusterOptions::default()).await;
    let clients = cluster.clients();
    let mut client = cluster.client(1);
    create(
        &mut client,
        "dedup.fifo",
        &[("FifoQueue", "true"), ("ContentBasedDeduplication", "true")],
        0,
    )
    .await;

    // A deduplicated send answers with the original message id, before and after a failover.
    let first = send_until_acked(&clients, 0, send_request("dedup.fifo", "g", "once", "k1")).await;
    let again = send_until_acked(
        &clients,
        1,
        send_request("dedup.fifo", "g", "other body", "k1"),
    )
    .await;
    assert_eq!(first, again, "same deduplication id, same message");
    let mut by_content = send_request("dedup.fifo", "g", "content", "unused");
    by_content.message_deduplication_id = None;
    let content_id = send_until_acked(&clients, 0, by_content.clone()).await;
    let partition = cluster.queue_groups("dedup.fifo").await[0];
    let leader = cluster
        .wait_for_leader(partition, Duration::from_secs(30))
        .await;
    cluster.kill(leader);
    let survivors: Vec<_> = cluster
        .running()
        .into_iter()
        .map(|id| cluster.client(id))
        .collect();
    assert_eq!(
        send_until_acked(&survivors, 0, send_request("dedup.fifo", "g", "once", "k1")).await,
        first
    );
    assert_eq!(
        send_until_acked(&survivors, 1, by_content).await,
        content_id
    );

    // A receive attempt retried after a failover returns the same messages and handles.
    let attempt = |client: &mut FerryClient<Channel>| {
        let mut request: ReceiveMessageRequest = receive_request("dedup.fifo", 10, 0);
        request.receive_request_attempt_id = Some("attempt-1".into());
        request.visibility_timeout = Some(60);
        let mut client = client.clone();
        async move {
            client
                .receive_message(request)
                .await
                .map(|r| r.into_inner().messages)
        }
    };
    let mut survivor = survivors[0].clone();
    let got = wait_for(Duration::from_secs(30), "the first attempt", async || {
        attempt(&mut survivor).await.ok()
    })
    .await;
    let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(
        bodies,
        ["once", "content"],
        "exactly the two stored messages, in order"
    );
    cluster.restart(leader).await;
    let partition_leader = cluster
        .wait_for_leader(partition, Duration::from_secs(30))
        .await;
    cluster.kill(partition_leader);
    let survivors: Vec<_> = cluster
        .running()
        .into_iter()
        .map(|id| cluster.client(id))
        .collect();
    let mut survivor = survivors[0].clone();
    let retried = wait_for(Duration::from_secs(30), "the retried attempt", async || {
        attempt(&mut survivor).await.ok()
    })
    .await;
    let handles = |messages: &[Message]| {
        messages
            .iter()
            .map(|m| (m.message_id.clone(), m.receipt_handle.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        handles(&retried),
        handles(&got),
        "a retried attempt returns the same messages and handles"
    );
    cluster.restart(partition_leader).await;

    // A high-throughput FIFO queue spreads groups over its partitions.
    let high = [
        ("FifoQueue", "true"),
        ("DeduplicationScope", "messageGroup"),
        ("FifoThroughputLimit", "perMessageGroupId"),
    ];
    create(&mut client, "spread.fifo", &high, 4).await;
    let clients = cluster.clients();
    for group in 0..200 {
        send_until_acked(
            &clients,
            group,
            send_request("spread.fifo", &format!("group-{group}"), "x", "d"),
        )
        .await;
    }
    let mut per_partition: BTreeMap<u64, usize> = BTreeMap::new();
    let mut received = 0;
    while received < 200 {
        let mut request = receive_request("spread.fifo", 10, 1);
        request.visibility_timeout = Some(300);
        let messages = client
            .receive_message(request)
            .await
            .expect("receive")
            .into_inner()
            .messages;
        assert!(!messages.is_empty(), "all 200 groups are receivable");
        for message in messages {
            *per_partition
                .entry(handle_group(&message.receipt_handle))
                .or_default() += 1;
            received += 1;
        }
    }
    eprintln!("spread.fifo: messages per partition (group id → count): {per_partition:?}");
    assert_eq!(per_partition.len(), 4, "every partition holds groups");
    assert!(
        per_partition.values().all(|count| *count >= 20),
        "a fair spread: {per_partition:?}"
    );
}

/// Receives up to ten messages with `visibility_timeout` seconds of visibility.
async fn receive_for(
    client: &mut FerryClient<Channel>,
    queue: &str,
    visibility_timeout: u32,
) -> Vec<Message> {
    let mut request = receive_request(queue, 10, 1);
    request.visibility_timeout = Some(visibility_timeout);
    client
        .receive_message(request)
        .await
        .unwrap_or_else(|e| panic!("receive from {queue}: {e:?}"))
        .into_inner()
        .messages
}

/// As SQS does, a FIFO queue refuses a delete whose receipt handle's receive is over — the message
/// is visible again, or was received since — with InvalidParameterValue, and deletes nothing; in a
/// batch only that entry fails. A standard queue still accepts such a delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_deletes_with_expired_receipt_handles_are_refused() {
    let cluster = TestCluster::start(3, ClusterOptions::default()).await;
    let clients = cluster.clients();
    let mut client = cluster.client(1);
    let queue = "late.fifo";
    create(&mut client, queue, &[("FifoQueue", "true")], 1).await;
    for (i, group) in ["a", "b"].into_iter().enumerate() {
        let request = send_request(queue, group, &format!("m{i}"), &format!("d{i}"));
        send_until_acked(&clients, i, request).await;
    }

    // Visible again at once: both handles are expired when the deletes come.
    let expired = receive_for(&mut client, queue, 0).await;
    assert_eq!(expired.len(), 2, "first receive: {expired:?}");
    let refused = client
        .delete_message(DeleteMessageRequest {
            queue_name: queue.into(),
            receipt_handle: expired[0].receipt_handle.clone(),
        })
        .await
        .expect_err("a delete with an expired handle");
    assert_eq!(
        error_code(&refused),
        Some("InvalidParameterValue"),
        "{refused:?}"
    );
    assert!(
        refused.message().contains("The receipt handle has expired"),
        "{refused:?}"
    );

    // Received again: the old handles are from an earlier receive, the new ones current.
    let mut current = receive_for(&mut client, queue, 30).await;
    current.sort_by(|a, b| a.body.cmp(&b.body));
    assert_eq!(current.len(), 2, "second receive: {current:?}");
    assert_eq!(current[0].body, "m0", "the refused delete deleted nothing");
    let entry = |id: &str, handle: &str| DeleteMessageBatchEntry {
        id: id.into(),
        receipt_handle: handle.into(),
    };
    let reply = client
        .delete_message_batch(DeleteMessageBatchRequest {
            queue_name: queue.into(),
            entries: vec![
                entry("old", &expired[1].receipt_handle),
                entry("current-0", &current[0].receipt_handle),
                entry("current-1", &current[1].receipt_handle),
            ],
        })
        .await
        .expect("delete batch")
        .into_inner();
    let failed: Vec<_> = reply
        .failed
        .iter()
        .map(|f| (f.id.as_str(), f.code.as_str()))
        .collect();
    assert_eq!(failed, [("old", "InvalidParameterValue")]);
    assert_eq!(reply.successful.len(), 2, "{reply:?}");
    assert!(
        receive_for(&mut client, queue, 30).await.is_empty(),
        "the current handles deleted both messages"
    );

    // A standard queue keeps accepting a delete with a handle whose message is visible again.
    create(&mut client, "late", &[], 1).await;
    let sent = common::send_bodies(&clients, 0, "late", vec!["s".to_string()], 3).await;
    assert_eq!(sent.acked.len(), 1, "send to the standard queue: {sent:?}");
    let received = receive_for(&mut client, "late", 0).await;
    assert_eq!(received.len(), 1, "{received:?}");
    client
        .delete_message(DeleteMessageRequest {
            queue_name: "late".into(),
            receipt_handle: received[0].receipt_handle.clone(),
        })
        .await
        .expect("a standard queue accepts the delete");
    assert!(receive_for(&mut client, "late", 30).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_reach_the_dead_letter_queue() {
    let cluster = TestCluster::start(3, ClusterOptions::default()).await;
    // The standard queue's message carries a fair-queue group, kept only once the nodes know
    // each other's builds.
    common::wait_until_peers_heard(&cluster).await;
    let mut client = cluster.client(1);
    for (dlq, source, fifo) in [("dead", "work", false), ("dead.fifo", "work.fifo", true)] {
        let fifo_attribute: &[(&str, &str)] = if fifo { &[("FifoQueue", "true")] } else { &[] };
        create(&mut client, dlq, fifo_attribute, 1).await;
        let dlq_arn = client
            .get_queue_attributes(GetQueueAttributesRequest {
                queue_name: dlq.into(),
                attribute_names: vec!["QueueArn".into()],
            })
            .await
            .expect("QueueArn")
            .into_inner()
            .attributes["QueueArn"]
            .clone();
        let policy = format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":3}}"#);
        let mut attributes = vec![
            ("RedrivePolicy", policy.as_str()),
            ("VisibilityTimeout", "0"),
        ];
        attributes.extend_from_slice(fifo_attribute);
        create(&mut client, source, &attributes, 1).await;

        // On the standard queue "g" is a fair-queue group: it too must reach the dead-letter queue.
        let mut send = send_request(source, "g", "poison", "p1");
        if !fifo {
            send.message_deduplication_id = None;
        }
        let message_id = client
            .send_message(send)
            .await
            .expect("send")
            .into_inner()
            .message_id;
        for count in 1..=3 {
            let messages = wait_for(Duration::from_secs(10), "the poison message", async || {
                let messages = client
                    .clone()
                    .receive_message(receive_request(source, 1, 1))
                    .await
                    .ok()?
                    .into_inner()
                    .messages;
                (!messages.is_empty()).then_some(messages)
            })
            .await;
            assert_eq!(
                messages[0].attributes["ApproximateReceiveCount"],
                count.to_string(),
                "{source}"
            );
        }
        // The fourth receive moves it instead of delivering it.
        let fourth = client
            .receive_message(receive_request(source, 1, 2))
            .await
            .expect("receive")
            .into_inner()
            .messages;
        assert!(
            fourth.is_empty(),
            "{source}: delivered a fourth time: {fourth:?}"
        );
        let moved = wait_for(
            Duration::from_secs(20),
            "the message in the dead-letter queue",
            async || {
                let messages = client
                    .clone()
                    .receive_message(receive_request(dlq, 1, 1))
                    .await
                    .ok()?
                    .into_inner()
                    .messages;
                messages.into_iter().next()
            },
        )
        .await;
        assert_eq!(moved.message_id, message_id, "{dlq}: the same message");
        assert_eq!(moved.body, "poison");
        assert_eq!(
            moved.attributes.get("MessageGroupId").map(String::as_str),
            Some("g"),
            "{dlq}: {:?}",
            moved.attributes
        );
        assert!(
            moved
                .attributes
                .get("DeadLetterQueueSourceArn")
                .is_some_and(|arn| arn.ends_with(source)),
            "{:?}",
            moved.attributes
        );
        assert_eq!(
            approximate_total(&mut client, source).await,
            0,
            "{source} is empty"
        );
        let sources = client
            .clone()
            .receive_message(receive_request(dlq, 1, 0))
            .await
            .expect("receive")
            .into_inner()
            .messages;
        assert!(sources.is_empty(), "{dlq}: moved exactly once");
        // Counted by the mover once the dead-letter queue has the message.
        wait_until(
            Duration::from_secs(10),
            "the dead letter counted once",
            async || {
                let scrapes = scrape_all(&cluster).await;
                let counted: f64 = queue_samples(
                    &scrapes,
                    "ferry_queue_messages_dead_lettered_total",
                    source,
                    None,
                )
                .iter()
                .sum();
                assert!(counted <= 1.0, "{source}: {counted} dead letters counted");
                counted == 1.0
            },
        )
        .await;
    }
}

const DEAD_LETTERS: usize = 2_000;

async fn queue_arn(client: &mut FerryClient<Channel>, queue: &str) -> String {
    client
        .get_queue_attributes(GetQueueAttributesRequest {
            queue_name: queue.into(),
            attribute_names: vec!["QueueArn".into()],
        })
        .await
        .expect("QueueArn")
        .into_inner()
        .attributes["QueueArn"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_task_redrives_dead_letters_while_a_node_restarts() {
    let mut cluster = TestCluster::start(3, ClusterOptions::default()).await;
    let mut client = cluster.client(1);
    create(&mut client, "parking", &[], 2).await;
    let dlq_arn = queue_arn(&mut client, "parking").await;
    let policy = format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":1}}"#);
    create(
        &mut client,
        "jobs",
        &[
            ("RedrivePolicy", policy.as_str()),
            ("VisibilityTimeout", "0"),
        ],
        2,
    )
    .await;

    for batch in 0..DEAD_LETTERS / 10 {
        let entries = (0..10)
            .map(|i| SendMessageBatchEntry {
                id: format!("e{i}"),
                body: format!("job-{}", batch * 10 + i),
                ..Default::default()
            })
            .collect();
        let reply = client
            .send_message_batch(SendMessageBatchRequest {
                queue_name: "jobs".into(),
                entries,
            })
            .await
            .expect("send batch")
            .into_inner();
        assert!(reply.failed.is_empty(), "{:?}", reply.failed);
    }
    // Receive everything once (visibility 0): the next receive of each dead-letters it.
    wait_until_total(
        &mut client,
        "parking",
        DEAD_LETTERS as u64,
        async |client: &mut FerryClient<Channel>| {
            let _ = client.receive_message(receive_request("jobs", 10, 0)).await;
        },
    )
    .await;

    let handle = client
        .start_message_move_task(StartMessageMoveTaskRequest {
            source_arn: dlq_arn.clone(),
            ..Default::default()
        })
        .await
        .expect("StartMessageMoveTask")
        .into_inner()
        .task_handle;
    let second = client
        .start_message_move_task(StartMessageMoveTaskRequest {
            source_arn: dlq_arn.clone(),
            ..Default::default()
        })
        .await;
    assert!(second.is_err(), "only one running task per source");
    // Restart a node while the task runs (the catalog leader runs it, wherever that is).
    cluster.kill(2);
    cluster.restart(2).await;

    let status = wait_for(
        Duration::from_secs(120),
        "the move task to complete",
        async || {
            let tasks = cluster
                .client(3)
                .list_message_move_tasks(ListMessageMoveTasksRequest {
                    source_arn: dlq_arn.clone(),
                    max_results: Some(10),
                })
                .await
                .ok()?
                .into_inner()
                .results;
            let task = tasks.into_iter().next()?;
            (task.status != "RUNNING").then_some(task)
        },
    )
    .await;
    assert_eq!(status.status, "COMPLETED", "{status:?}");
    assert!(
        status.task_handle.is_none(),
        "handles are shown for running tasks only"
    );
    eprintln!(
        "move task {handle}: moved {} of {:?}",
        status.approximate_number_of_messages_moved, status.approximate_number_of_messages_to_move
    );

    // Every dead letter is back in its source queue, once.
    let mut bodies: HashMap<String, usize> = HashMap::new();
    let mut drained = 0;
    while bodies.len() < DEAD_LETTERS {
        let mut request = receive_request("jobs", 10, 1);
        request.visibility_timeout = Some(300);
        let messages = client
            .receive_message(request)
            .await
            .expect("receive")
            .into_inner()
            .messages;
        assert!(
            !messages.is_empty(),
            "jobs ran dry after {} of {DEAD_LETTERS}",
            bodies.len()
        );
        for message in messages {
            drained += 1;
            *bodies.entry(message.body).or_default() += 1;
        }
    }
    let duplicates = drained - bodies.len();
    eprintln!(
        "redriven {} distinct messages, {duplicates} duplicates",
        bodies.len()
    );
    assert_eq!(
        duplicates, 0,
        "a move task without failures moves each message once"
    );
    assert_eq!(
        approximate_total(&mut client, "parking").await,
        0,
        "the dead-letter queue is empty"
    );
}

/// Runs `step` until `queue` holds `expected` messages.
async fn wait_until_total(
    client: &mut FerryClient<Channel>,
    queue: &str,
    expected: u64,
    mut step: impl AsyncFnMut(&mut FerryClient<Channel>),
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        step(client).await;
        let total = approximate_total(client, queue).await;
        if total >= expected {
            assert_eq!(total, expected, "{queue}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{queue} holds {total} of {expected}"
        );
    }
}
