//! The public gRPC API of a 3-node cluster, call by call, against SQS semantics: queue lifecycle,
//! listing and paging, attributes with their defaults and validation, tags, purge, message limits
//! and batch errors, message attributes and their MD5s, and forwarding from every node.
//!
//! Each check below creates its own queues, so a failure names one behaviour.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    assert_code, error_code, queue_samples, receive_and_delete, receive_one, receive_request,
    scrape_all, wait_for, wait_until, ClusterOptions, TestCluster,
};
use ferry_proto::v1::ferry_client::FerryClient;
use ferry_proto::v1::message_attribute_value::Value;
use ferry_proto::v1::{
    CreateQueueRequest, DeleteMessageBatchRequest, DeleteMessageRequest, DeleteQueueRequest,
    GetQueueAttributesRequest, GetQueueRequest, ListQueueTagsRequest, ListQueuesRequest,
    MessageAttributeValue, PurgeQueueRequest, QueueInfo, ReceiveMessageRequest,
    SendMessageBatchEntry, SendMessageBatchRequest, SendMessageRequest, SetQueueAttributesRequest,
    TagQueueRequest, UntagQueueRequest,
};
use md5::{Digest as _, Md5};
use tonic::transport::Channel;

/// SQS's largest message (body plus attributes).
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// The MD5 SQS (and GoAws's test suite) gives for this body.
const GOAWS_BODY: &str = "this is a test of the GoAws Queue messaging";
const GOAWS_BODY_MD5: &str = "9d3f5eaac3b1b4dd509f39e71e25f954";
/// Catalog changes reach every node within a moment.
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Receiving a few messages that were just sent.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(15);
/// CreatedTimestamp is in seconds and close to now.
const CLOCK_SLACK_SECONDS: u64 = 600;

type Client = FerryClient<Channel>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_api_behaves_like_sqs() {
    // Series unchanged for 3 s leave /metrics: the metrics check sees a deleted queue's go.
    let options = ClusterOptions {
        metrics_idle_timeout_s: Some(3),
        ..ClusterOptions::default()
    };
    let cluster = TestCluster::start(3, options).await;
    let mut c = cluster.client(1);

    create_is_idempotent_and_get_finds_it(&mut c, cluster.options().default_partitions).await;
    list_queues_filters_and_pages(&mut c).await;
    attributes_have_sqs_defaults_and_validation(&mut c).await;
    tags_are_set_listed_and_removed(&mut c).await;
    purge_empties_and_rate_limits(&mut c).await;
    deleted_queue_is_gone_on_every_node(&cluster).await;
    message_limits_and_batch_errors(&mut c).await;
    message_attributes_round_trip_with_sqs_md5(&mut c, &mut cluster.client(2)).await;
    body_md5_matches_sqs(&mut c, &mut cluster.client(3)).await;
    every_node_serves_every_call(&cluster).await;
    queues_are_measured_for_prometheus(&cluster).await;
}

/// CreateQueue returns the existing queue for equal attributes and refuses different ones.
async fn create_is_idempotent_and_get_finds_it(c: &mut Client, default_partitions: u32) {
    let attributes = attrs(&[("VisibilityTimeout", "45")]);
    let created = create(c, "api-create", attributes.clone()).await;
    assert_eq!(created.name, "api-create");
    assert!(!created.fifo, "a standard queue: {created:?}");
    assert_eq!(
        created.partitions, default_partitions,
        "partitions 0 takes --default-partitions"
    );
    let again = create(c, "api-create", attributes).await;
    assert_eq!(
        again, created,
        "CreateQueue with equal attributes is idempotent"
    );
    assert_code(
        c.create_queue(CreateQueueRequest {
            queue_name: "api-create".into(),
            attributes: attrs(&[("VisibilityTimeout", "46")]),
            ..Default::default()
        })
        .await,
        "QueueNameExists",
        "CreateQueue of an existing name with other attributes",
    );
    let got = c
        .get_queue(GetQueueRequest {
            queue_name: "api-create".into(),
        })
        .await
        .expect("GetQueue")
        .into_inner()
        .queue;
    assert_eq!(got, Some(created));
    assert_code(
        c.get_queue(GetQueueRequest {
            queue_name: "api-no-such-queue".into(),
        })
        .await,
        "QueueDoesNotExist",
        "GetQueue of an unknown queue",
    );
    assert_code(
        c.create_queue(CreateQueueRequest {
            queue_name: "bad name!".into(),
            ..Default::default()
        })
        .await,
        "InvalidParameterValue",
        "CreateQueue with a name SQS does not allow",
    );
}

/// ListQueues filters by prefix and pages with max_results and next_token.
async fn list_queues_filters_and_pages(c: &mut Client) {
    let names: BTreeSet<String> = (0..5).map(|i| format!("api-list-{i}")).collect();
    for name in &names {
        create(c, name, HashMap::new()).await;
    }
    let all = c
        .list_queues(ListQueuesRequest {
            queue_name_prefix: "api-list-".into(),
            ..Default::default()
        })
        .await
        .expect("ListQueues")
        .into_inner();
    assert_eq!(
        all.queue_names.iter().cloned().collect::<BTreeSet<_>>(),
        names,
        "ListQueues with a prefix"
    );
    assert_eq!(all.queue_names.len(), names.len(), "no duplicates: {all:?}");

    let mut paged = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages <= 10, "ListQueues paging does not end: {paged:?}");
        let page = c
            .list_queues(ListQueuesRequest {
                queue_name_prefix: "api-list-".into(),
                max_results: Some(2),
                next_token: token.clone(),
            })
            .await
            .expect("ListQueues page")
            .into_inner();
        assert!(page.queue_names.len() <= 2, "max_results 2: {page:?}");
        paged.extend(page.queue_names);
        token = page.next_token;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(
        paged.len(),
        names.len(),
        "each queue on exactly one page: {paged:?}"
    );
    assert_eq!(paged.into_iter().collect::<BTreeSet<_>>(), names);
    assert_eq!(pages, 3, "5 queues, 2 per page");
}

/// GetQueueAttributes gives SQS's defaults; SetQueueAttributes changes them and validates.
async fn attributes_have_sqs_defaults_and_validation(c: &mut Client) {
    let queue = "api-attrs";
    create(c, queue, HashMap::new()).await;
    let all = get_attributes(c, queue, &["All"]).await;
    for (name, value) in [
        ("VisibilityTimeout", "30"),
        ("MaximumMessageSize", "1048576"),
        ("MessageRetentionPeriod", "345600"),
        ("DelaySeconds", "0"),
        ("ReceiveMessageWaitTimeSeconds", "0"),
        ("ApproximateNumberOfMessages", "0"),
    ] {
        assert_eq!(
            all.get(name).map(String::as_str),
            Some(value),
            "default {name}; all attributes: {all:?}"
        );
    }
    let arn = all.get("QueueArn").expect("QueueArn");
    assert!(
        arn.starts_with("arn:") && arn.ends_with(&format!(":{queue}")),
        "QueueArn {arn:?}"
    );
    let created: u64 = all
        .get("CreatedTimestamp")
        .expect("CreatedTimestamp")
        .parse()
        .expect("CreatedTimestamp is a number");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    assert!(
        created.abs_diff(now) < CLOCK_SLACK_SECONDS,
        "CreatedTimestamp {created} is not in seconds near now ({now})"
    );
    assert!(
        get_attributes(c, queue, &[]).await.is_empty(),
        "no attribute names asks for nothing"
    );

    set_attributes(
        c,
        queue,
        &[
            ("VisibilityTimeout", "60"),
            ("DelaySeconds", "5"),
            ("ReceiveMessageWaitTimeSeconds", "3"),
        ],
    )
    .await
    .expect("SetQueueAttributes");
    let some = get_attributes(
        c,
        queue,
        &[
            "VisibilityTimeout",
            "DelaySeconds",
            "ReceiveMessageWaitTimeSeconds",
        ],
    )
    .await;
    assert_eq!(
        some,
        attrs(&[
            ("VisibilityTimeout", "60"),
            ("DelaySeconds", "5"),
            ("ReceiveMessageWaitTimeSeconds", "3"),
        ]),
        "the attributes asked for, as set"
    );

    assert_code(
        set_attributes(c, queue, &[("VisibilityTimeout", "50000")]).await,
        "InvalidAttributeValue",
        "VisibilityTimeout above 12 hours",
    );
    assert_code(
        set_attributes(c, queue, &[("NoSuchAttribute", "1")]).await,
        "InvalidAttributeName",
        "SetQueueAttributes of an unknown attribute",
    );
    assert_code(
        c.get_queue_attributes(GetQueueAttributesRequest {
            queue_name: queue.into(),
            attribute_names: vec!["NoSuchAttribute".into()],
        })
        .await,
        "InvalidAttributeName",
        "GetQueueAttributes of an unknown attribute",
    );
    assert_eq!(
        get_attributes(c, queue, &["VisibilityTimeout"]).await,
        attrs(&[("VisibilityTimeout", "60")]),
        "a refused SetQueueAttributes changes nothing"
    );
}

/// TagQueue adds and overwrites, UntagQueue removes, ListQueueTags shows the result.
async fn tags_are_set_listed_and_removed(c: &mut Client) {
    let queue = "api-tags";
    c.create_queue(CreateQueueRequest {
        queue_name: queue.into(),
        tags: attrs(&[("team", "a")]),
        ..Default::default()
    })
    .await
    .expect("CreateQueue with tags");
    assert_eq!(list_tags(c, queue).await, attrs(&[("team", "a")]));
    c.tag_queue(TagQueueRequest {
        queue_name: queue.into(),
        tags: attrs(&[("env", "test"), ("team", "b")]),
    })
    .await
    .expect("TagQueue");
    assert_eq!(
        list_tags(c, queue).await,
        attrs(&[("env", "test"), ("team", "b")])
    );
    c.untag_queue(UntagQueueRequest {
        queue_name: queue.into(),
        tag_keys: vec!["team".into()],
    })
    .await
    .expect("UntagQueue");
    assert_eq!(list_tags(c, queue).await, attrs(&[("env", "test")]));

    // At most 50 tags per queue, counted after the call: a call that would pass it changes nothing.
    let tags = |range: std::ops::Range<usize>| -> HashMap<String, String> {
        range.map(|i| (format!("k{i}"), "v".to_owned())).collect()
    };
    c.tag_queue(TagQueueRequest {
        queue_name: queue.into(),
        tags: tags(0..40),
    })
    .await
    .expect("TagQueue up to 41 tags");
    assert_code(
        c.tag_queue(TagQueueRequest {
            queue_name: queue.into(),
            tags: tags(35..50),
        })
        .await,
        "InvalidParameterValue",
        "TagQueue past 50 tags in total",
    );
    assert_eq!(list_tags(c, queue).await.len(), 41);
}

/// PurgeQueue deletes the messages; a second purge within SQS's 60 s is refused.
async fn purge_empties_and_rate_limits(c: &mut Client) {
    let queue = "api-purge";
    create(c, queue, HashMap::new()).await;
    for i in 0..3 {
        send(c, queue, &format!("purged-{i}")).await;
    }
    let purge = PurgeQueueRequest {
        queue_name: queue.into(),
    };
    c.purge_queue(purge.clone()).await.expect("PurgeQueue");
    assert_code(
        c.purge_queue(purge).await,
        "PurgeQueueInProgress",
        "a second purge right after the first",
    );
    wait_until(
        PROPAGATION_TIMEOUT,
        "the purged queue counts no message",
        async || {
            let counts = get_attributes(
                c,
                queue,
                &[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )
            .await;
            counts.values().all(|v| v == "0")
        },
    )
    .await;
    let left = receive_and_delete(c, queue, 1)
        .await
        .expect("ReceiveMessage");
    assert!(left.is_empty(), "messages survived a purge: {left:?}");
}

/// After DeleteQueue, every node refuses the queue and has removed its partitions' groups.
async fn deleted_queue_is_gone_on_every_node(cluster: &TestCluster) {
    let queue = "api-delete";
    let mut c = cluster.client(1);
    create(&mut c, queue, HashMap::new()).await;
    let partitions = cluster.options().default_partitions as usize;
    let groups = groups_on_every_node(cluster, queue, partitions).await;
    c.delete_queue(DeleteQueueRequest {
        queue_name: queue.into(),
    })
    .await
    .expect("DeleteQueue");
    let mut clients = cluster.clients();
    wait_until(
        PROPAGATION_TIMEOUT,
        "every node says the deleted queue does not exist",
        async || {
            for client in clients.iter_mut() {
                let result = client
                    .get_queue(GetQueueRequest {
                        queue_name: queue.into(),
                    })
                    .await;
                if !matches!(&result, Err(s) if error_code(s) == Some("QueueDoesNotExist")) {
                    return false;
                }
            }
            true
        },
    )
    .await;
    for (i, client) in clients.iter_mut().enumerate() {
        assert_code(
            client
                .send_message(SendMessageRequest {
                    queue_name: queue.into(),
                    body: "into the void".into(),
                    ..Default::default()
                })
                .await,
            "QueueDoesNotExist",
            &format!("SendMessage to a deleted queue via node {}", i + 1),
        );
    }
    let listed = c
        .list_queues(ListQueuesRequest {
            queue_name_prefix: queue.into(),
            ..Default::default()
        })
        .await
        .expect("ListQueues")
        .into_inner()
        .queue_names;
    assert!(listed.is_empty(), "a deleted queue is listed: {listed:?}");
    wait_until(
        PROPAGATION_TIMEOUT,
        "no node hosts a group of the deleted queue",
        async || {
            for id in cluster.node_ids() {
                let hosted = cluster.groups(id).await;
                if hosted.iter().any(|g| groups.contains(&g.group)) {
                    return false;
                }
            }
            true
        },
    )
    .await;
}

/// Waits until every node hosts all `partitions` groups of `queue`; returns them.
async fn groups_on_every_node(cluster: &TestCluster, queue: &str, partitions: usize) -> Vec<u64> {
    wait_for(
        PROPAGATION_TIMEOUT,
        &format!("every node hosts the {partitions} groups of {queue}"),
        async || {
            let mut seen = None;
            for id in cluster.node_ids() {
                let hosted: Vec<u64> = cluster
                    .groups(id)
                    .await
                    .iter()
                    .filter(|g| g.queue.as_deref() == Some(queue))
                    .map(|g| g.group)
                    .collect();
                if hosted.len() != partitions || seen.as_ref().is_some_and(|s| *s != hosted) {
                    return None;
                }
                seen = Some(hosted);
            }
            seen
        },
    )
    .await
}

/// SQS's size and count limits, and its batch errors.
async fn message_limits_and_batch_errors(c: &mut Client) {
    let queue = "api-limits";
    create(c, queue, HashMap::new()).await;

    let largest = "a".repeat(MAX_MESSAGE_BYTES);
    send(c, queue, &largest).await;
    let received = receive_and_delete(c, queue, 5)
        .await
        .expect("ReceiveMessage");
    assert_eq!(
        received.iter().map(|m| m.body.len()).collect::<Vec<_>>(),
        [MAX_MESSAGE_BYTES],
        "the largest message comes back whole"
    );
    assert_code(
        c.send_message(SendMessageRequest {
            queue_name: queue.into(),
            body: "a".repeat(MAX_MESSAGE_BYTES + 1),
            ..Default::default()
        })
        .await,
        "InvalidParameterValue",
        "a body over 1 MiB",
    );
    assert_code(
        c.send_message(SendMessageRequest {
            queue_name: queue.into(),
            body: "bell \u{7}".into(),
            ..Default::default()
        })
        .await,
        "InvalidMessageContents",
        "a body with a character SQS does not allow",
    );
    assert_code(
        c.receive_message(receive_request(queue, 11, 0)).await,
        "InvalidParameterValue",
        "ReceiveMessage of 11 messages",
    );

    let batch = |ids: &[&str], body_len: usize| SendMessageBatchRequest {
        queue_name: queue.into(),
        entries: ids
            .iter()
            .map(|id| SendMessageBatchEntry {
                id: id.to_string(),
                body: "b".repeat(body_len),
                ..Default::default()
            })
            .collect(),
    };
    let eleven: Vec<String> = (0..11).map(|i| format!("m{i}")).collect();
    let eleven: Vec<&str> = eleven.iter().map(String::as_str).collect();
    assert_code(
        c.send_message_batch(batch(&eleven, 1)).await,
        "TooManyEntriesInBatchRequest",
        "a batch of 11",
    );
    assert_code(
        c.send_message_batch(batch(&[], 1)).await,
        "EmptyBatchRequest",
        "an empty batch",
    );
    assert_code(
        c.send_message_batch(batch(&["same", "same"], 1)).await,
        "BatchEntryIdsNotDistinct",
        "a batch with duplicate ids",
    );
    assert_code(
        c.send_message_batch(batch(&["not valid!"], 1)).await,
        "InvalidBatchEntryId",
        "a batch entry id with characters SQS does not allow",
    );
    let ten: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let ten: Vec<&str> = ten.iter().map(String::as_str).collect();
    assert_code(
        c.send_message_batch(batch(&ten, MAX_MESSAGE_BYTES / 9))
            .await,
        "BatchRequestTooLong",
        "a batch whose bodies add up to over 1 MiB",
    );
    assert_code(
        c.delete_message_batch(DeleteMessageBatchRequest {
            queue_name: queue.into(),
            entries: vec![],
        })
        .await,
        "EmptyBatchRequest",
        "an empty DeleteMessageBatch",
    );
}

/// String, Number, Binary and custom-labelled attributes come back as sent, and both MD5s are
/// the one SQS computes (SDKs check it).
async fn message_attributes_round_trip_with_sqs_md5(sender: &mut Client, receiver: &mut Client) {
    let queue = "api-message-attributes";
    create(sender, queue, HashMap::new()).await;
    let attributes = HashMap::from([
        ("s".to_string(), string_attribute("String", "hello")),
        ("n".to_string(), string_attribute("Number", "42")),
        ("f".to_string(), string_attribute("Number.float", "3.14")),
        (
            "b".to_string(),
            MessageAttributeValue {
                data_type: "Binary".into(),
                value: Some(Value::BinaryValue(vec![0, 1, 2, 255])),
            },
        ),
    ]);
    let expected_md5 = sqs_attributes_md5(&attributes);
    let sent = sender
        .send_message(SendMessageRequest {
            queue_name: queue.into(),
            body: "with attributes".into(),
            message_attributes: attributes.clone(),
            ..Default::default()
        })
        .await
        .expect("SendMessage with attributes")
        .into_inner();
    assert_eq!(
        sent.md5_of_message_attributes.as_deref(),
        Some(expected_md5.as_str()),
        "MD5 of message attributes on send"
    );
    let message = receive_one(
        receiver,
        ReceiveMessageRequest {
            message_attribute_names: vec!["All".into()],
            ..receive_request(queue, 1, 2)
        },
    )
    .await;
    assert_eq!(
        message.message_attributes, attributes,
        "attributes round trip"
    );
    assert_eq!(
        message.md5_of_message_attributes.as_deref(),
        Some(expected_md5.as_str()),
        "MD5 of message attributes on receive"
    );
    assert_eq!(message.md5_of_body, sent.md5_of_message_body);
    assert_eq!(message.message_id, sent.message_id);
}

/// The body MD5 is the plain MD5 of the body, on send and on receive.
async fn body_md5_matches_sqs(sender: &mut Client, receiver: &mut Client) {
    let queue = "api-body-md5";
    create(sender, queue, HashMap::new()).await;
    let sent = sender
        .send_message(SendMessageRequest {
            queue_name: queue.into(),
            body: GOAWS_BODY.into(),
            ..Default::default()
        })
        .await
        .expect("SendMessage")
        .into_inner();
    assert_eq!(sent.md5_of_message_body, GOAWS_BODY_MD5);
    let message = receive_one(receiver, receive_request(queue, 1, 2)).await;
    assert_eq!(message.body, GOAWS_BODY);
    assert_eq!(message.md5_of_body, GOAWS_BODY_MD5);
}

/// Any node takes any call, forwarding to the leaders it is not.
async fn every_node_serves_every_call(cluster: &TestCluster) {
    let queue = "api-every-node";
    create(&mut cluster.client(1), queue, HashMap::new()).await;
    let mut clients = cluster.clients();
    let mut expected = HashSet::new();
    for (i, client) in clients.iter_mut().enumerate() {
        let node = i + 1;
        let got = client
            .get_queue(GetQueueRequest {
                queue_name: queue.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("GetQueue via node {node}: {e:?}"));
        assert_eq!(
            got.into_inner().queue.map(|q| q.name).as_deref(),
            Some(queue)
        );
        let body = format!("via-node-{node}");
        send(client, queue, &body).await;
        expected.insert(body);
    }
    let mut received = HashSet::new();
    let deadline = Instant::now() + RECEIVE_TIMEOUT;
    let mut call = 0;
    while !expected.is_subset(&received) {
        assert!(
            Instant::now() < deadline,
            "received only {received:?} of {expected:?}"
        );
        let node = call % clients.len();
        call += 1;
        let messages = receive_and_delete(&mut clients[node], queue, 1)
            .await
            .unwrap_or_else(|e| panic!("ReceiveMessage via node {}: {e:?}", node + 1));
        received.extend(messages.into_iter().map(|m| m.body));
    }
    assert_eq!(received, expected);
}

// ---- small helpers ----

fn attrs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn string_attribute(data_type: &str, value: &str) -> MessageAttributeValue {
    MessageAttributeValue {
        data_type: data_type.into(),
        value: Some(Value::StringValue(value.into())),
    }
}

/// SQS's MD5 of message attributes: for each attribute by name, the length-prefixed name and
/// data type, a transport byte (1 string, 2 binary) and the length-prefixed value.
fn sqs_attributes_md5(attributes: &HashMap<String, MessageAttributeValue>) -> String {
    fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
        buf.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        buf.extend_from_slice(bytes);
    }
    let mut names: Vec<&String> = attributes.keys().collect();
    names.sort();
    let mut buf = Vec::new();
    for name in names {
        let attribute = &attributes[name];
        put(&mut buf, name.as_bytes());
        put(&mut buf, attribute.data_type.as_bytes());
        match attribute.value.as_ref().expect("a value") {
            Value::StringValue(s) => {
                buf.push(1);
                put(&mut buf, s.as_bytes());
            }
            Value::BinaryValue(b) => {
                buf.push(2);
                put(&mut buf, b);
            }
        }
    }
    format!("{:x}", Md5::digest(&buf))
}

/// Every node's `/metrics` counts the messages of the requests it answered, labelled by queue, and
/// reports the backlog of the partitions it leads: summed over the nodes they are the queue's.
async fn queues_are_measured_for_prometheus(cluster: &TestCluster) {
    const QUEUE: &str = "measured";
    const IDLE: &str = "measured-idle";
    let mut c = cluster.client(1);
    create(&mut c, QUEUE, HashMap::new()).await;
    create(&mut c, IDLE, HashMap::new()).await;
    for (node, body) in [(1, "a"), (2, "b"), (3, "c"), (1, "d"), (2, "e")] {
        send(&mut cluster.client(node), QUEUE, body).await;
    }
    cluster
        .client(3)
        .send_message(SendMessageRequest {
            queue_name: QUEUE.into(),
            body: "later".into(),
            delay_seconds: Some(600),
            ..Default::default()
        })
        .await
        .expect("delayed send");
    let mut request = receive_request(QUEUE, 1, 5);
    request.visibility_timeout = Some(600);
    let mut handles = Vec::new();
    for node in [1, 2, 3] {
        let message = receive_one(&mut cluster.client(node), request.clone()).await;
        handles.push(message.receipt_handle);
    }
    c.delete_message(DeleteMessageRequest {
        queue_name: QUEUE.into(),
        receipt_handle: handles[0].clone(),
    })
    .await
    .expect("delete");
    let empty = c
        .receive_message(receive_request(IDLE, 10, 0))
        .await
        .expect("receive from an empty queue")
        .into_inner();
    assert!(empty.messages.is_empty());

    let expected = [
        ("ferry_queue_messages_sent_total", QUEUE, None, 6.0),
        ("ferry_queue_sent_message_bytes_total", QUEUE, None, 10.0),
        ("ferry_queue_messages_received_total", QUEUE, None, 3.0),
        ("ferry_queue_messages_deleted_total", QUEUE, None, 1.0),
        ("ferry_queue_empty_receives_total", IDLE, None, 1.0),
        ("ferry_queue_messages", QUEUE, Some("visible"), 2.0),
        ("ferry_queue_messages", QUEUE, Some("not_visible"), 2.0),
        ("ferry_queue_messages", QUEUE, Some("delayed"), 1.0),
        ("ferry_queue_messages", IDLE, Some("visible"), 0.0),
        ("ferry_queue_messages_dead_lettered_total", QUEUE, None, 0.0),
    ];
    // A node's backlog gauges may lag a second behind its last scrape, and leadership may move.
    let age = common::wait_for(PROPAGATION_TIMEOUT, "per-queue metrics", async || {
        let scrapes = scrape_all(cluster).await;
        // Every node has every series of every queue, at zero if it counted nothing.
        let matches = expected.iter().all(|(name, queue, state, value)| {
            let samples = queue_samples(&scrapes, name, queue, *state);
            samples.len() == 3 && samples.iter().sum::<f64>() == *value
        });
        let age = queue_samples(
            &scrapes,
            "ferry_queue_oldest_message_age_seconds",
            QUEUE,
            None,
        )
        .into_iter()
        .fold(0.0, f64::max);
        (matches && age > 0.0).then_some(age)
    })
    .await;
    assert!(age < 600.0, "the oldest message is {age} s old");
    // A partition whose messages are all visible is read again once its state changes.
    send(&mut cluster.client(2), IDLE, "now busy").await;
    wait_until(
        PROPAGATION_TIMEOUT,
        "a send shows in the backlog",
        async || {
            let scrapes = scrape_all(cluster).await;
            let visible = queue_samples(&scrapes, "ferry_queue_messages", IDLE, Some("visible"));
            visible.iter().sum::<f64>() == 1.0
        },
    )
    .await;

    // Node-wide series stay however long they go unchanged: a counter that left and came back
    // would start again from its next increment, which rate() cannot see.
    let node_wide_before: Vec<Vec<String>> = scrape_all(cluster)
        .await
        .iter()
        .map(|text| node_wide_series(text))
        .collect();
    c.delete_queue(DeleteQueueRequest {
        queue_name: QUEUE.into(),
    })
    .await
    .expect("delete queue");
    wait_until(
        PROPAGATION_TIMEOUT,
        "a deleted queue's backlog reads zero",
        async || {
            let scrapes = scrape_all(cluster).await;
            queue_samples(&scrapes, "ferry_queue_messages", QUEUE, None)
                .iter()
                .all(|value| *value == 0.0)
        },
    )
    .await;
    // Then its series go, once they have been unchanged for the idle timeout.
    let label = format!("queue=\"{QUEUE}\"");
    wait_until(
        PROPAGATION_TIMEOUT,
        "a deleted queue's series leave /metrics",
        async || {
            let scrapes = scrape_all(cluster).await;
            let idle = format!("queue=\"{IDLE}\"");
            // The other queue's series stay, quiet as it is.
            let idle_kept = scrapes.iter().all(|text| text.contains(&idle));
            assert!(idle_kept, "an existing queue's series went");
            scrapes.iter().all(|text| !text.contains(&label))
        },
    )
    .await;
    for (text, before) in scrape_all(cluster).await.iter().zip(&node_wide_before) {
        let now = node_wide_series(text);
        let gone: Vec<&String> = before.iter().filter(|s| !now.contains(s)).collect();
        assert!(gone.is_empty(), "node-wide series left /metrics: {gone:?}");
    }
}

/// The series of a scrape, without their values, that are not labelled by queue.
fn node_wide_series(scrape: &str) -> Vec<String> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#') && !line.contains("queue=\""))
        .filter_map(|line| Some(line.rsplit_once(' ')?.0.to_owned()))
        .collect()
}

async fn create(c: &mut Client, queue: &str, attributes: HashMap<String, String>) -> QueueInfo {
    c.create_queue(CreateQueueRequest {
        queue_name: queue.into(),
        attributes,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("create {queue}: {e:?}"))
    .into_inner()
    .queue
    .expect("CreateQueue returns the queue")
}

async fn send(c: &mut Client, queue: &str, body: &str) {
    c.send_message(SendMessageRequest {
        queue_name: queue.into(),
        body: body.into(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("send to {queue}: {e:?}"));
}

async fn get_attributes(c: &mut Client, queue: &str, names: &[&str]) -> HashMap<String, String> {
    c.get_queue_attributes(GetQueueAttributesRequest {
        queue_name: queue.into(),
        attribute_names: names.iter().map(|n| n.to_string()).collect(),
    })
    .await
    .unwrap_or_else(|e| panic!("GetQueueAttributes {names:?} of {queue}: {e:?}"))
    .into_inner()
    .attributes
}

async fn set_attributes(
    c: &mut Client,
    queue: &str,
    pairs: &[(&str, &str)],
) -> Result<(), tonic::Status> {
    c.set_queue_attributes(SetQueueAttributesRequest {
        queue_name: queue.into(),
        attributes: attrs(pairs),
    })
    .await
    .map(|_| ())
}

async fn list_tags(c: &mut Client, queue: &str) -> HashMap<String, String> {
    c.list_queue_tags(ListQueueTagsRequest {
        queue_name: queue.into(),
    })
    .await
    .expect("ListQueueTags")
    .into_inner()
    .tags
}
