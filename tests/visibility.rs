//! Visibility timeouts, receipt handles, delays and long polling, as SQS defines them, through
//! the gRPC API of a 3-node cluster (requests go to different nodes, so forwarding is exercised).
//!
//! Proves: an undeleted message comes back after its visibility timeout with its receive count
//! incremented; an old receipt handle can still delete (SQS accepts it) but it deletes nothing once
//! the message was received again, and it cannot change visibility; the current handle deletes for
//! good; a garbage handle is refused; a delayed message is hidden for its delay; a long poll
//! returns as soon as a message arrives. Visibility changes in flight when their partition leader
//! is SIGKILLed are not repeated on the next leader (a finding of jepsen/). A send to a queue with
//! consumers long-polling on every node costs about one replicated receive, not one per consumer.
//! Long polls over several partitions hand every message they take to a consumer, also on nodes
//! that host only some of the partitions. Sends one at a time all go to a queue's first partition;
//! a burst spreads.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    approximate_total, assert_code, http_get, receive_request, wait_for, wait_until, within,
    ClusterOptions, TestCluster,
};
use ferry_proto::v1::ferry_client::FerryClient;
use ferry_proto::v1::{
    ChangeMessageVisibilityRequest, CreateQueueRequest, DeleteMessageRequest,
    GetQueueAttributesRequest, Message, SendMessageRequest,
};
use tonic::transport::Channel;

/// The queue's visibility timeout in the redelivery phase.
const SHORT_VISIBILITY: &str = "1";
/// A message comes back within a few seconds of a 1 s visibility timeout.
const REDELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Visibility given to receives that must keep the message in flight during a check.
const HOLD_VISIBILITY: u32 = 60;
/// How long a deleted message must stay gone.
const GONE_FOR: Duration = Duration::from_secs(5);
/// Approximate counters may trail the state by a moment.
const COUNTERS_TIMEOUT: Duration = Duration::from_secs(10);
const DELAY_SECONDS: u32 = 2;
/// A delayed message must not show up much before its delay (clock granularity slack).
const DELAY_SLACK: Duration = Duration::from_millis(300);
/// ... and must show up soon after it.
const DELAY_TIMEOUT: Duration = Duration::from_secs(10);
const LONG_POLL_SECONDS: u32 = 10;
/// A long poll must return this soon after the send, well before its 10 s.
const LONG_POLL_WAKEUP: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visibility_receipt_handles_delay_and_long_poll() {
    let cluster = TestCluster::start(3, ClusterOptions::default()).await;
    let mut c1 = cluster.client(1);
    let mut c2 = cluster.client(2);
    let mut c3 = cluster.client(3);

    // Phase 1: a received, undeleted message comes back after the visibility timeout.
    let queue = "vis";
    create(
        &mut c1,
        queue,
        HashMap::from([(
            "VisibilityTimeout".to_string(),
            SHORT_VISIBILITY.to_string(),
        )]),
    )
    .await;
    let body = "come back to me";
    send(&mut c2, queue, body, None).await;
    let first = wait_for(REDELIVERY_TIMEOUT, "first receive", async || {
        receive_one(&mut c3, queue, 1, None).await
    })
    .await;
    assert_eq!(first.body, body);
    assert_eq!(receive_count(&first), "1", "first receive: {first:?}");
    let second = wait_for(
        REDELIVERY_TIMEOUT,
        "the undeleted message is received again",
        async || receive_one(&mut c1, queue, 1, Some(HOLD_VISIBILITY)).await,
    )
    .await;
    assert_eq!(second.body, body);
    assert_eq!(second.message_id, first.message_id);
    assert_eq!(receive_count(&second), "2", "second receive: {second:?}");
    assert_ne!(
        second.receipt_handle, first.receipt_handle,
        "each receive gives a new receipt handle"
    );

    // Phase 2: the first handle is stale. Deleting with it succeeds, as in SQS, but deletes
    // nothing: the message is still there.
    delete(&mut c2, queue, &first.receipt_handle)
        .await
        .expect("DeleteMessage with a stale handle succeeds");
    // Make it visible right away with the current handle, which also proves it still exists.
    change_visibility(&mut c3, queue, &second.receipt_handle, 0)
        .await
        .expect("ChangeMessageVisibility(0) with the current handle");
    assert_code(
        change_visibility(&mut c1, queue, &first.receipt_handle, 10).await,
        "MessageNotInflight",
        "ChangeMessageVisibility with a stale handle of a visible message",
    );
    let third = wait_for(
        REDELIVERY_TIMEOUT,
        "the message is receivable after the stale delete",
        async || receive_one(&mut c2, queue, 1, Some(HOLD_VISIBILITY)).await,
    )
    .await;
    assert_eq!(third.message_id, first.message_id);
    assert_eq!(receive_count(&third), "3", "third receive: {third:?}");
    assert_code(
        change_visibility(&mut c3, queue, &first.receipt_handle, 10).await,
        "MessageNotInflight",
        "ChangeMessageVisibility with a stale handle of a message in flight under a newer one",
    );

    // Phase 3: the current handle deletes for good, also after visibility changes moved the
    // message (the handle names where its receive put it; a change leaves a forward).
    for extended in [HOLD_VISIBILITY + 5, HOLD_VISIBILITY + 10] {
        change_visibility(&mut c1, queue, &third.receipt_handle, extended)
            .await
            .expect("ChangeMessageVisibility with the current handle, again");
    }
    delete(&mut c3, queue, &third.receipt_handle)
        .await
        .expect("DeleteMessage with the current handle");
    let gone_since = Instant::now();
    let mut clients = [c1.clone(), c2.clone(), c3.clone()];
    let mut i = 0;
    while gone_since.elapsed() < GONE_FOR {
        let got = receive_one(&mut clients[i % 3], queue, 2, None).await;
        assert!(got.is_none(), "a deleted message was received: {got:?}");
        i += 1;
    }
    wait_until(
        COUNTERS_TIMEOUT,
        "the queue counts no message",
        async || {
            let attributes = c1
                .get_queue_attributes(GetQueueAttributesRequest {
                    queue_name: queue.to_string(),
                    attribute_names: vec![
                        "ApproximateNumberOfMessages".to_string(),
                        "ApproximateNumberOfMessagesNotVisible".to_string(),
                    ],
                })
                .await
                .expect("GetQueueAttributes")
                .into_inner()
                .attributes;
            let count = |name: &str| -> u64 {
                attributes
                    .get(name)
                    .unwrap_or_else(|| panic!("{name} missing from {attributes:?}"))
                    .parse()
                    .expect("a number")
            };
            count("ApproximateNumberOfMessages") + count("ApproximateNumberOfMessagesNotVisible")
                == 0
        },
    )
    .await;

    // Phase 4: a handle that was never issued is refused as invalid, not as not-in-flight.
    assert_code(
        delete(&mut c1, queue, "not-a-receipt-handle").await,
        "ReceiptHandleIsInvalid",
        "DeleteMessage with a garbage handle",
    );
    assert_code(
        change_visibility(&mut c2, queue, "not-a-receipt-handle", 10).await,
        "ReceiptHandleIsInvalid",
        "ChangeMessageVisibility with a garbage handle",
    );

    // Phase 5: a message sent with DelaySeconds stays hidden for the delay.
    let delayed_queue = "vis-delay";
    create(&mut c1, delayed_queue, HashMap::new()).await;
    let before_send = Instant::now();
    send(&mut c2, delayed_queue, "later", Some(DELAY_SECONDS)).await;
    let early = receive_one(&mut c3, delayed_queue, 0, None).await;
    if before_send.elapsed() < Duration::from_secs(DELAY_SECONDS.into()) - DELAY_SLACK {
        assert!(
            early.is_none(),
            "a delayed message was received at once: {early:?}"
        );
    }
    let delayed = wait_for(
        DELAY_TIMEOUT,
        "the delayed message is received",
        async || receive_one(&mut c3, delayed_queue, 1, None).await,
    )
    .await;
    assert_eq!(delayed.body, "later");
    let waited = before_send.elapsed();
    assert!(
        waited >= Duration::from_secs(DELAY_SECONDS.into()) - DELAY_SLACK,
        "a message delayed {DELAY_SECONDS} s was received after {waited:?}"
    );

    // Phase 6: a long poll waiting on one node returns soon after a send through another.
    let poll_queue = "vis-long-poll";
    create(&mut c1, poll_queue, HashMap::new()).await;
    let mut poller = c3.clone();
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let messages = poller
            .receive_message(receive_request(poll_queue, 1, LONG_POLL_SECONDS))
            .await
            .expect("long-poll ReceiveMessage")
            .into_inner()
            .messages;
        (messages, started.elapsed(), Instant::now())
    });
    // Give the poll time to reach the server; if it has not, the test still holds, it just
    // proves less.
    tokio::time::sleep(Duration::from_millis(500)).await;
    send(&mut c1, poll_queue, "wake up", None).await;
    let sent_at = Instant::now();
    let (messages, poll_took, returned_at) = within(
        Duration::from_secs(LONG_POLL_SECONDS.into()) + common::RPC_TIMEOUT,
        "the long poll",
        poll,
    )
    .await
    .expect("long-poll task");
    assert_eq!(
        messages.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["wake up"],
        "the long poll returned the wrong messages (after {poll_took:?})"
    );
    let after_send = returned_at.saturating_duration_since(sent_at);
    assert!(
        after_send < LONG_POLL_WAKEUP,
        "the long poll returned {after_send:?} after the send ({poll_took:?} in all)"
    );
}

/// Messages sent one at a time to the long-polling consumers, each after the previous was received.
const WAKE_MESSAGES: usize = 20;
const POLLERS_PER_NODE: u64 = 4;
/// One receive round per message, plus slack for a poll that checked just before a round applied.
const MAX_RECEIVE_ROUNDS: u64 = 2 * WAKE_MESSAGES as u64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_to_many_long_polls_costs_about_one_receive_round() {
    let cluster = TestCluster::start(
        3,
        ClusterOptions {
            default_partitions: 1,
            ..ClusterOptions::default()
        },
    )
    .await;
    let queue = "wake";
    let mut sender = cluster.client(1);
    create(&mut sender, queue, HashMap::new()).await;

    // Twelve consumers, four on each node, each long-polling the queue's one partition.
    let received = Arc::new(AtomicUsize::new(0));
    let mut pollers = Vec::new();
    for node in cluster.node_ids() {
        for _ in 0..POLLERS_PER_NODE {
            let mut client = cluster.client(node);
            let received = received.clone();
            pollers.push(tokio::spawn(async move {
                while received.load(Ordering::SeqCst) < WAKE_MESSAGES {
                    if let Some(message) = try_receive_one(&mut client, queue, 2).await {
                        delete(&mut client, queue, message.receipt_handle.as_str())
                            .await
                            .expect("delete a received message");
                        received.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }));
        }
    }
    for sent in 1..=WAKE_MESSAGES {
        send(&mut sender, queue, &format!("wake {sent}"), None).await;
        wait_until(
            LONG_POLL_WAKEUP,
            "a long poll takes the message",
            async || received.load(Ordering::SeqCst) >= sent,
        )
        .await;
    }
    for poller in pollers {
        within(LONG_POLL_WAKEUP, "pollers stop", poller)
            .await
            .expect("poller task");
    }

    let mut rounds = 0;
    for node in cluster.node_ids() {
        let (_, metrics) = http_get(cluster.admin_addr(node), "/metrics")
            .await
            .expect("metrics of a running node");
        rounds += metrics
            .lines()
            .find_map(|line| {
                line.strip_prefix("ferry_broker_round_entries_count{kind=\"receive\"} ")
            })
            .map_or(0, |count| count.trim().parse::<u64>().expect("a count"));
    }
    assert!(
        (WAKE_MESSAGES as u64..=MAX_RECEIVE_ROUNDS).contains(&rounds),
        "{WAKE_MESSAGES} sends woke {} long polls and cost {rounds} replicated receive rounds",
        3 * POLLERS_PER_NODE
    );
}

/// Messages sent concurrently to a 4-partition queue while consumers long-poll it.
const RACE_MESSAGES: usize = 800;
const RACE_SENDERS: usize = 8;
const RACE_POLLERS_PER_NODE: u64 = 4;
/// Far longer than the test: a message taken for a poll that never reached its caller stays
/// invisible and is missed, instead of coming back.
const RACE_VISIBILITY: &str = "300";
const RACE_TIMEOUT: Duration = Duration::from_secs(60);

/// A long poll waits on every partition at once and answers with the first that has messages; the
/// others must not take messages it then drops. (They did: when two partitions' receives finished
/// together, the second one's messages stayed in flight, unseen, for the visibility timeout — about
/// 4% of messages at 1,000 sends a second.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_over_many_partitions_lose_no_message_in_flight() {
    long_polls_lose_no_message(3).await;
}

/// The same where each node hosts only some of the partitions (5 nodes, 3 replicas each), so that
/// long polls also wait on other nodes' leaders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_through_nodes_without_a_replica_lose_no_message_in_flight() {
    long_polls_lose_no_message(5).await;
}

async fn long_polls_lose_no_message(nodes: usize) {
    // Every send spread over the partitions, as under load: the race needs messages in several.
    let options = ClusterOptions {
        home_partition_sends: Some(0),
        ..ClusterOptions::default()
    };
    let cluster = TestCluster::start(nodes, options).await;
    let queue = "poll-race";
    let mut admin = cluster.client(1);
    create(
        &mut admin,
        queue,
        HashMap::from([("VisibilityTimeout".to_string(), RACE_VISIBILITY.to_string())]),
    )
    .await;

    let received = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let mut pollers = Vec::new();
    for node in cluster.node_ids() {
        for _ in 0..RACE_POLLERS_PER_NODE {
            let mut client = cluster.client(node);
            let received = received.clone();
            pollers.push(tokio::spawn(async move {
                let started = Instant::now();
                while received.lock().unwrap().len() < RACE_MESSAGES
                    && started.elapsed() < RACE_TIMEOUT
                {
                    if let Ok(messages) = common::receive_and_delete(&mut client, queue, 1).await {
                        let mut received = received.lock().unwrap();
                        received.extend(messages.into_iter().map(|m| m.body));
                    }
                }
            }));
        }
    }
    let mut senders = Vec::new();
    for sender in 0..RACE_SENDERS {
        let mut client = cluster.client(1 + (sender % nodes) as u64);
        senders.push(tokio::spawn(async move {
            for i in (sender..RACE_MESSAGES).step_by(RACE_SENDERS) {
                send(&mut client, queue, &format!("race {i}"), None).await;
            }
        }));
    }
    for sender in senders {
        sender.await.expect("sender task");
    }
    // The pollers stop once they have every message, or at the deadline.
    for poller in pollers {
        poller.await.expect("poller task");
    }
    let received = received.lock().unwrap().len();
    let counts = admin
        .get_queue_attributes(GetQueueAttributesRequest {
            queue_name: queue.to_string(),
            attribute_names: vec!["All".to_string()],
        })
        .await
        .expect("queue attributes")
        .into_inner()
        .attributes;
    assert_eq!(
        received,
        RACE_MESSAGES,
        "consumers got {received} of {RACE_MESSAGES} messages within {RACE_TIMEOUT:?}; queue: {counts:?}"
    );
}

/// Sends made one at a time, spread over every node.
const QUIET_SENDS: u64 = 40;
/// Sends started at once on one node: far more than it sends to the first partition.
const BURST_SENDS: usize = 64;
const ROUTING_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a standard queue's sends go: one at a time, from every node, all to the queue's first
/// partition, so that they and the receives and deletes after them share Raft rounds; a burst on
/// one node spreads over the other partitions too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_sends_share_the_first_partition_and_bursts_spread() {
    let cluster = TestCluster::start(3, ClusterOptions::default()).await;
    let queue = "routed";
    let mut admin = cluster.client(1);
    create(&mut admin, queue, HashMap::new()).await;
    let groups = cluster
        .wait_for_queue_groups(queue, 4, ROUTING_TIMEOUT)
        .await;
    // Every node's replica of every partition knows its leader (a node sends to the first
    // partition only then).
    wait_until(
        ROUTING_TIMEOUT,
        "every replica knows its leader",
        async || {
            for id in cluster.node_ids() {
                let known = cluster.groups(id).await;
                if !groups.iter().all(|group| {
                    known
                        .iter()
                        .any(|g| g.group == *group && g.leader.is_some())
                }) {
                    return false;
                }
            }
            true
        },
    )
    .await;
    // Entries applied on node 1, per partition: every send is at least one.
    let applied = async || -> Vec<u64> {
        let known = cluster.groups(1).await;
        groups
            .iter()
            .map(|group| {
                known
                    .iter()
                    .find(|g| g.group == *group)
                    .and_then(|g| g.last_applied)
                    .unwrap_or(0)
            })
            .collect()
    };
    let start = applied().await;
    for i in 0..QUIET_SENDS {
        let mut client = cluster.client(1 + i % 3);
        send(&mut client, queue, &format!("quiet {i}"), None).await;
    }
    let quiet = wait_for(
        ROUTING_TIMEOUT,
        "node 1 applied the quiet sends in the first partition",
        async || {
            let now = applied().await;
            (now[0] >= start[0] + QUIET_SENDS).then_some(now)
        },
    )
    .await;
    for (index, (before, after)) in start.iter().zip(&quiet).enumerate().skip(1) {
        // Elections and hand-overs append a few entries of their own.
        assert!(
            after - before < QUIET_SENDS / 4,
            "partition {index} took quiet sends: {start:?} → {quiet:?}"
        );
    }

    let mut burst = tokio::task::JoinSet::new();
    for i in 0..BURST_SENDS {
        let mut client = admin.clone();
        burst.spawn(async move { send(&mut client, queue, &format!("burst {i}"), None).await });
    }
    burst.join_all().await;
    wait_until(
        ROUTING_TIMEOUT,
        "the burst reached partitions other than the first",
        async || {
            let now = applied().await;
            let others = |entries: &[u64]| entries[1..].iter().sum::<u64>();
            // Sends merge into rounds, so a few entries; nothing else appends in a calm cluster.
            others(&now) > others(&quiet)
        },
    )
    .await;
    assert_eq!(
        approximate_total(&mut admin, queue).await,
        QUIET_SENDS + BURST_SENDS as u64,
        "every message is stored once"
    );
}

/// Like [`receive_one`], but an error (a poll cut short) is no message.
async fn try_receive_one(
    client: &mut FerryClient<Channel>,
    queue: &str,
    wait_seconds: u32,
) -> Option<Message> {
    let response = client
        .receive_message(receive_request(queue, 1, wait_seconds))
        .await
        .ok()?;
    response.into_inner().messages.pop()
}

async fn create(
    client: &mut FerryClient<Channel>,
    queue: &str,
    attributes: HashMap<String, String>,
) {
    client
        .create_queue(CreateQueueRequest {
            queue_name: queue.to_string(),
            attributes,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create {queue}: {e:?}"));
}

async fn send(client: &mut FerryClient<Channel>, queue: &str, body: &str, delay: Option<u32>) {
    client
        .send_message(SendMessageRequest {
            queue_name: queue.to_string(),
            body: body.to_string(),
            delay_seconds: delay,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("send to {queue}: {e:?}"));
}

/// At most one message, with all system attributes.
async fn receive_one(
    client: &mut FerryClient<Channel>,
    queue: &str,
    wait_seconds: u32,
    visibility: Option<u32>,
) -> Option<Message> {
    let mut request = receive_request(queue, 1, wait_seconds);
    request.visibility_timeout = visibility;
    let mut messages = client
        .receive_message(request)
        .await
        .unwrap_or_else(|e| panic!("receive from {queue}: {e:?}"))
        .into_inner()
        .messages;
    assert!(
        messages.len() <= 1,
        "asked for one message, got {messages:?}"
    );
    messages.pop()
}

fn receive_count(message: &Message) -> &str {
    message
        .attributes
        .get("ApproximateReceiveCount")
        .map(String::as_str)
        .unwrap_or("<missing>")
}

async fn delete(
    client: &mut FerryClient<Channel>,
    queue: &str,
    handle: &str,
) -> Result<(), tonic::Status> {
    client
        .delete_message(DeleteMessageRequest {
            queue_name: queue.to_string(),
            receipt_handle: handle.to_string(),
        })
        .await
        .map(|_| ())
}

async fn change_visibility(
    client: &mut FerryClient<Channel>,
    queue: &str,
    handle: &str,
    seconds: u32,
) -> Result<(), tonic::Status> {
    client
        .change_message_visibility(ChangeMessageVisibilityRequest {
            queue_name: queue.to_string(),
            receipt_handle: handle.to_string(),
            visibility_timeout: seconds,
        })
        .await
        .map(|_| ())
}

/// The shortest retention SQS allows.
const RETENTION_SECONDS: u64 = 60;
/// Expiry runs once a second on each leader; allow for a loaded machine.
const EXPIRY_TIMEOUT: Duration = Duration::from_secs(30);

/// A message past its queue's retention period is removed by the partition leader's housekeeping
/// (a replicated command), and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_period_expires_messages() {
    let cluster = TestCluster::start(3, ClusterOptions::default()).await;
    let mut client = cluster.client(2);
    let queue = "retention";
    create(
        &mut client,
        queue,
        HashMap::from([(
            "MessageRetentionPeriod".to_string(),
            RETENTION_SECONDS.to_string(),
        )]),
    )
    .await;
    send(&mut client, queue, "short-lived", None).await;
    let sent = Instant::now();

    let stored = async |client: &mut FerryClient<Channel>| approximate_total(client, queue).await;
    assert_eq!(
        stored(&mut client).await,
        1,
        "the message is stored after the send"
    );
    wait_until(
        Duration::from_secs(RETENTION_SECONDS) + EXPIRY_TIMEOUT,
        "the message expires",
        async || stored(&mut cluster.client(3)).await == 0,
    )
    .await;
    assert!(
        sent.elapsed() >= Duration::from_secs(RETENTION_SECONDS - 1),
        "expired after {:?}, before its {RETENTION_SECONDS} s retention period",
        sent.elapsed()
    );
    let received = client
        .receive_message(receive_request(queue, 10, 1))
        .await
        .expect("ReceiveMessage")
        .into_inner()
        .messages;
    assert!(
        received.is_empty(),
        "an expired message was delivered: {received:?}"
    );
}

/// Messages held in flight while their visibility is changed through the followers.
const CRASH_MESSAGES: usize = 300;
/// Visibility changes in flight at once, so that the crash lands between some change's commit on a
/// quorum and its answer reaching the follower that forwarded it.
const CRASH_CHANGERS: usize = 30;
/// Changes answered before the leader is killed.
const CHANGES_BEFORE_CRASH: usize = 60;
/// Changes wait for an election of the surviving two.
const CHANGES_TIMEOUT: Duration = Duration::from_secs(90);

/// A visibility change answers for its own run even when the partition leader dies under it.
/// Regression test for a finding of jepsen/: the router repeated a change whose first run had been
/// committed, the repeat found the message already visible and answered MessageNotInflight. Every
/// change here is to 0 s on a message that nothing else touches, so its only truthful answers are
/// success, or OutcomeUnknown / Unavailable when the forwarding node cannot know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visibility_changes_through_a_leader_crash_are_not_repeated() {
    let mut cluster = TestCluster::start(3, ClusterOptions::default()).await;
    let queue = "visibility-crash";
    cluster
        .client(1)
        .create_queue(CreateQueueRequest {
            queue_name: queue.to_string(),
            partitions: 1,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create {queue}: {e:?}"));
    let group = cluster
        .wait_for_queue_groups(queue, 1, COUNTERS_TIMEOUT)
        .await[0];
    let leader = cluster.wait_for_leader(group, COUNTERS_TIMEOUT).await;
    let followers: Vec<_> = cluster
        .node_ids()
        .into_iter()
        .filter(|id| *id != leader)
        .map(|id| cluster.client(id))
        .collect();

    let mut client = cluster.client(leader);
    for chunk in 0..CRASH_MESSAGES / 10 {
        let bodies = (0..10).map(|i| format!("m{}", chunk * 10 + i)).collect();
        let sent = common::send_bodies(std::slice::from_ref(&client), 0, queue, bodies, 1).await;
        assert_eq!(sent.acked.len(), 10, "send before the crash: {sent:?}");
    }
    let mut handles = HashMap::new();
    within(COUNTERS_TIMEOUT, "receive every message", async {
        while handles.len() < CRASH_MESSAGES {
            let mut request = receive_request(queue, 10, 1);
            request.visibility_timeout = Some(HOLD_VISIBILITY * 10);
            let messages = client.receive_message(request).await.expect("receive");
            for m in messages.into_inner().messages {
                handles.insert(m.body, m.receipt_handle);
            }
        }
    })
    .await;

    let work = std::sync::Arc::new(std::sync::Mutex::new(
        handles.into_values().collect::<Vec<_>>(),
    ));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut changers = tokio::task::JoinSet::new();
    for i in 0..CRASH_CHANGERS {
        let mut client = followers[i % followers.len()].clone();
        let (work, answered) = (work.clone(), answered.clone());
        changers.spawn(async move {
            let mut answers: Vec<Result<(), tonic::Status>> = Vec::new();
            loop {
                let next = work.lock().unwrap().pop();
                let Some(handle) = next else { break };
                answers.push(change_visibility(&mut client, queue, &handle, 0).await);
                answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            answers
        });
    }
    wait_until(CHANGES_TIMEOUT, "changes before the crash", async || {
        answered.load(std::sync::atomic::Ordering::Relaxed) >= CHANGES_BEFORE_CRASH
    })
    .await;
    cluster.kill(leader);
    let answers = within(
        CHANGES_TIMEOUT,
        "every change answered",
        changers.join_all(),
    )
    .await;

    let mut tally: HashMap<String, usize> = HashMap::new();
    for answer in answers.into_iter().flatten() {
        let outcome = match answer {
            Ok(()) => "ok".to_string(),
            Err(status) => common::error_code(&status)
                .unwrap_or("<no Ferry code>")
                .to_string(),
        };
        *tally.entry(outcome).or_default() += 1;
    }
    eprintln!("visibility changes across the crash: {tally:?}");
    let truthful = ["ok", "OutcomeUnknown", "Unavailable", "<no Ferry code>"];
    assert!(
        tally
            .keys()
            .all(|outcome| truthful.contains(&outcome.as_str())),
        "a change answered for a repeat of itself: {tally:?}"
    );
    assert!(
        tally.get("ok").copied().unwrap_or(0) > CHANGES_BEFORE_CRASH,
        "the surviving majority kept serving: {tally:?}"
    );
}

/// Whether a receive succeeded with no message.
fn answered_nothing(
    result: &Result<tonic::Response<ferry_proto::v1::ReceiveMessageResponse>, tonic::Status>,
) -> bool {
    result
        .as_ref()
        .is_ok_and(|response| response.get_ref().messages.is_empty())
}

/// The in-flight limit the next test gives its nodes (SQS: about 120,000).
const IN_FLIGHT_LIMIT: u64 = 5;
/// A partition found at its limit is counted again a second later.
const LIMIT_RECHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// SQS's in-flight limit: once a queue holds its limit of received messages that are neither
/// deleted nor visible again, a short poll of a standard queue fails with OverLimit and a long poll
/// waits and returns nothing; a FIFO queue returns nothing and no error. Deleting makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receives_past_the_in_flight_limit_are_refused_until_messages_are_deleted() {
    let cluster = TestCluster::start(
        3,
        ClusterOptions {
            default_partitions: 1,
            in_flight_limit: Some(IN_FLIGHT_LIMIT),
            ..ClusterOptions::default()
        },
    )
    .await;
    let mut client = cluster.client(2);
    let queue = "limited";
    create(&mut client, queue, HashMap::new()).await;
    for i in 0..12 {
        send(&mut client, queue, &format!("m{i}"), None).await;
    }
    let receive = |max| {
        let mut request = receive_request(queue, max, 0);
        request.visibility_timeout = Some(HOLD_VISIBILITY);
        request
    };
    // Below the limit a receive takes what it asks for, even past the limit. These wait a moment:
    // a short poll on a node that follows the partition may miss what was sent that instant (its
    // replica trails the leader by an append), as SQS's sampling short polls may.
    let below_limit = |max| {
        let mut request = receive(max);
        request.wait_time_seconds = Some(1);
        request
    };
    let mut handles = Vec::new();
    for _ in 0..2 {
        let messages = client
            .receive_message(below_limit(3))
            .await
            .unwrap()
            .into_inner()
            .messages;
        assert_eq!(messages.len(), 3, "a receive below the limit");
        handles.extend(messages.into_iter().map(|m| m.receipt_handle));
    }
    assert_code(
        client.receive_message(receive(3)).await,
        "OverLimit",
        "a short poll at the limit",
    );
    let mut waiting = receive(3);
    waiting.wait_time_seconds = Some(1);
    let waited = client.receive_message(waiting).await;
    assert!(
        answered_nothing(&waited),
        "a long poll at the limit returns nothing and no error: {waited:?}"
    );

    // Two deletes leave 4 in flight, below the limit: receives take messages again.
    for handle in &handles[..2] {
        delete(&mut client, queue, handle).await.unwrap();
    }
    wait_until(
        LIMIT_RECHECK_TIMEOUT,
        "a receive after the deletes",
        async || {
            client
                .receive_message(receive(1))
                .await
                .is_ok_and(|r| r.into_inner().messages.len() == 1)
        },
    )
    .await;

    // FIFO: at the limit, nothing and no error, while messages wait.
    let fifo = "limited.fifo";
    let attributes = HashMap::from([
        ("FifoQueue".to_string(), "true".to_string()),
        ("ContentBasedDeduplication".to_string(), "true".to_string()),
    ]);
    create(&mut client, fifo, attributes).await;
    for i in 0..8 {
        client
            .send_message(SendMessageRequest {
                queue_name: fifo.to_string(),
                body: format!("f{i}"),
                message_group_id: Some(format!("group-{i}")),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut request = below_limit(3);
    request.queue_name = fifo.to_string();
    for _ in 0..2 {
        let messages = client
            .receive_message(request.clone())
            .await
            .unwrap()
            .into_inner()
            .messages;
        assert_eq!(messages.len(), 3, "a FIFO receive below the limit");
    }
    request.wait_time_seconds = Some(0);
    let refused = client.receive_message(request).await;
    assert!(
        answered_nothing(&refused),
        "a FIFO receive at the limit returns nothing and no error: {refused:?}"
    );
}
