//! The SQS HTTP endpoint on the wire, driven with hand-built HTTP requests against a real 3-node
//! cluster: both protocols' result and error shapes byte for byte where SDKs depend on them (JSON
//! `__type` and `x-amzn-query-error`, Query `<ErrorResponse>`, request ids, `&#13;` for a carriage
//! return), requests posted to a queue URL and sent as GET, MD5s against the reference vectors,
//! and a node that is not the catalog leader serving every call.
//!
//! Real AWS clients are exercised in `sqs_clients.rs`; this file pins down what they parse.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{percent_encode, wait_for, ClusterOptions, TestCluster};
use md5::{Digest as _, Md5};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const ACCOUNT: &str = "000000000000";
const XML_NAMESPACE: &str = "http://queue.amazonaws.com/doc/2012-11-05/";
/// Longer than the server's internal retry (~10 s) plus the longest long poll used here (5 s).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages just sent are received within a few sweeps of the partitions.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(15);
/// An access key in a (not verified) SigV4 header: in the default `parse` mode it is the SenderId.
const ACCESS_KEY: &str = "AKIDWIRETEST";
const BINARY_WORLD_BASE64: &str = "SGVsbG8gYmluYXJ5IHdvcmxkIQ=="; // "Hello binary world!"
/// SQS-REFERENCE §1.5 vectors.
const NO_HEADERS: &[(&str, &str)] = &[];
const ALL_THREE_MD5: &str = "c932db14a896c663f83c260297d594ff";
const ATTRIB_NAME_1_MD5: &str = "19e27d4e946b072f3f58da80d94fd778";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_endpoint_speaks_both_wire_protocols() {
    let cluster = TestCluster::start(3, ClusterOptions::default()).await;
    let addr = cluster.sqs_addr(1);

    let queue_url = json_round_trip(addr).await;
    json_errors(addr, &queue_url).await;
    query_round_trip(addr).await;
    query_errors(addr).await;
    every_other_action_over_query(addr).await;
    fifo_parameters_reach_the_queue(addr).await;
    common::wait_until_peers_heard(&cluster).await;
    fair_queue_groups_come_back(addr).await;
    batch_and_queue_type_errors(addr).await;
    oversized_requests_and_reflected_hosts(addr).await;
    a_node_that_is_not_the_catalog_leader_serves_everything(&cluster).await;
}

// ---- phases ----

/// JSON 1.0: create, send with every attribute type, receive with filters, delete, batch with a
/// failing entry. Returns the queue's URL.
async fn json_round_trip(addr: SocketAddr) -> String {
    // Why: the result shape and headers every current SDK parses.
    let created = json_call(
        addr,
        "CreateQueue",
        json!({"QueueName": "wire-json", "Attributes": {"VisibilityTimeout": "30"}, "tags": {"team": "wire"}}),
    )
    .await;
    assert_eq!(created.status, 200, "{created:?}");
    assert_eq!(
        created.header("content-type"),
        Some("application/x-amz-json-1.0")
    );
    assert!(created
        .header("x-amzn-requestid")
        .is_some_and(|id| !id.is_empty()));
    let queue_url = created.json()["QueueUrl"].as_str().unwrap().to_owned();
    assert_eq!(queue_url, format!("http://{addr}/{ACCOUNT}/wire-json"));

    // Why: MD5s must be byte-exact or SDKs with validation reject the response.
    let body = "this is a test of the GoAws Queue messaging";
    let sent = json_call(
        addr,
        "SendMessage",
        json!({
            "QueueUrl": queue_url,
            "MessageBody": body,
            "MessageAttributes": {
                "attribName1": {"DataType": "String", "StringValue": "attribValue 1"},
                "customNumberTypeAttrib": {"DataType": "Number.float", "StringValue": "4563442423554324324264524243.32543234"},
                "binaryAttribute": {"DataType": "Binary", "BinaryValue": BINARY_WORLD_BASE64},
            },
            "MessageSystemAttributes": {"AWSTraceHeader": {"DataType": "String", "StringValue": "Root=1-5759e988-bd862e3fe1be46a994272793"}},
        }),
    )
    .await
    .json();
    assert_eq!(sent["MD5OfMessageBody"], "9d3f5eaac3b1b4dd509f39e71e25f954");
    assert_eq!(sent["MD5OfMessageAttributes"], ALL_THREE_MD5);
    assert!(sent["MD5OfMessageSystemAttributes"].is_string(), "{sent}");
    assert!(sent["MessageId"].is_string());

    // Why: received attributes (binary as base64), system attributes, and the MD5 over them.
    let message = receive_one_json(
        addr,
        &queue_url,
        json!({"MessageAttributeNames": ["All"], "MessageSystemAttributeNames": ["All"], "VisibilityTimeout": 0}),
    )
    .await;
    assert_eq!(message["Body"], body);
    assert_eq!(message["MD5OfBody"], "9d3f5eaac3b1b4dd509f39e71e25f954");
    assert_eq!(message["MD5OfMessageAttributes"], ALL_THREE_MD5);
    assert_eq!(
        message["MessageAttributes"]["binaryAttribute"],
        json!({"BinaryValue": BINARY_WORLD_BASE64, "DataType": "Binary"})
    );
    assert_eq!(message["Attributes"]["SenderId"], ACCESS_KEY);
    assert_eq!(
        message["Attributes"]["AWSTraceHeader"],
        "Root=1-5759e988-bd862e3fe1be46a994272793"
    );

    // Why: the attribute MD5 covers only the attributes returned; the deprecated AttributeNames
    // still selects system attributes.
    let filtered = receive_one_json(
        addr,
        &queue_url,
        json!({"MessageAttributeNames": ["attribName1"], "AttributeNames": ["SentTimestamp"]}),
    )
    .await;
    assert_eq!(filtered["MD5OfMessageAttributes"], ATTRIB_NAME_1_MD5);
    let system: Vec<&String> = filtered["Attributes"].as_object().unwrap().keys().collect();
    assert_eq!(system, ["SentTimestamp"]);

    let deleted = json_call(
        addr,
        "DeleteMessage",
        json!({"QueueUrl": queue_url, "ReceiptHandle": filtered["ReceiptHandle"]}),
    )
    .await;
    assert_eq!((deleted.status, deleted.body.as_str()), (200, "{}"));

    // Why: an empty receive has no Messages member at all.
    let empty = json_call(
        addr,
        "ReceiveMessage",
        json!({"QueueUrl": queue_url, "WaitTimeSeconds": 0}),
    )
    .await;
    assert_eq!((empty.status, empty.body.as_str()), (200, "{}"));

    // Why: a failing entry is reported in Failed with HTTP 200, and both lists are present.
    let batch = json_call(
        addr,
        "SendMessageBatch",
        json!({"QueueUrl": queue_url, "Entries": [
            {"Id": "good", "MessageBody": "fine"},
            {"Id": "bad", "MessageBody": "not \u{1} fine"},
        ]}),
    )
    .await;
    assert_eq!(batch.status, 200);
    let batch = batch.json();
    assert_eq!(batch["Successful"][0]["Id"], "good");
    assert_eq!(batch["Failed"][0]["Id"], "bad");
    assert_eq!(batch["Failed"][0]["SenderFault"], true);
    assert_eq!(batch["Failed"][0]["Code"], "InvalidMessageContents");
    queue_url
}

/// JSON errors: `__type`, `message`, `x-amzn-query-error: <legacy code>;Sender`, and the statuses.
async fn json_errors(addr: SocketAddr, queue_url: &str) {
    // Why: boto3 reads the legacy code from the header; this is the acceptance gate.
    let missing = json_call(addr, "GetQueueUrl", json!({"QueueName": "wire-nope"})).await;
    assert_eq!(missing.status, 400);
    assert_eq!(
        missing.header("x-amzn-query-error"),
        Some("AWS.SimpleQueueService.NonExistentQueue;Sender")
    );
    assert!(missing.header("x-amzn-requestid").is_some());
    assert_eq!(
        missing.json(),
        json!({"__type": "com.amazonaws.sqs#QueueDoesNotExist", "message": "The specified queue does not exist."})
    );

    let cases = [
        (
            "SendMessage",
            json!({"QueueUrl": queue_url}),
            400,
            "com.amazonaws.sqs#MissingRequiredParameterException",
            "MissingParameter;Sender",
        ),
        (
            "DeleteMessage",
            json!({"QueueUrl": queue_url, "ReceiptHandle": "garbage"}),
            404,
            "com.amazonaws.sqs#ReceiptHandleIsInvalid",
            "ReceiptHandleIsInvalid;Sender",
        ),
        (
            "ReceiveMessage",
            json!({"QueueUrl": queue_url, "MaxNumberOfMessages": 11}),
            400,
            "com.amazonaws.sqs#InvalidParameterValueException",
            "InvalidParameterValue;Sender",
        ),
        (
            "GetQueueAttributes",
            json!({"QueueUrl": "not-a-url"}),
            404,
            "com.amazonaws.sqs#InvalidAddress",
            "InvalidAddress;Sender",
        ),
        (
            "Frobnicate",
            json!({}),
            400,
            "com.amazon.coral.service#UnknownOperationException",
            "InvalidAction;Sender",
        ),
    ];
    for (action, body, status, shape, header) in cases {
        let response = json_call(addr, action, body).await;
        assert_eq!(response.status, status, "{action}: {response:?}");
        assert_eq!(response.json()["__type"], shape, "{action}");
        assert_eq!(
            response.header("x-amzn-query-error"),
            Some(header),
            "{action}"
        );
    }

    // Why: a body that is not JSON is refused as such, not as a missing parameter.
    let malformed = http(addr, "POST", "/", &json_headers("ListQueues"), b"{nope").await;
    assert_eq!(malformed.status, 400);
    assert_eq!(
        malformed.header("x-amzn-query-error"),
        Some("SerializationException;Sender")
    );

    // Why: 403 for a purge within 60 s of the last one.
    let purge = json!({"QueueUrl": queue_url});
    assert_eq!(
        json_call(addr, "PurgeQueue", purge.clone()).await.status,
        200
    );
    let again = json_call(addr, "PurgeQueue", purge).await;
    assert_eq!(again.status, 403);
    assert_eq!(
        again.header("x-amzn-query-error"),
        Some("AWS.SimpleQueueService.PurgeQueueInProgress;Sender")
    );
}

/// Query: form POSTs and GETs, to `/` and to the queue URL, with XML results.
async fn query_round_trip(addr: SocketAddr) {
    // Why: the exact document shape older SDKs parse, with the request id in two places.
    let created = query_post(
        addr,
        "/",
        &[
            ("Action", "CreateQueue"),
            ("Version", "2012-11-05"),
            ("QueueName", "wire-query"),
            ("Attribute.1.Name", "DelaySeconds"),
            ("Attribute.1.Value", "0"),
            ("Tag.1.Key", "team"),
            ("Tag.1.Value", "wire"),
        ],
    )
    .await;
    assert_eq!(created.status, 200, "{created:?}");
    assert_eq!(created.header("content-type"), Some("text/xml"));
    let request_id = created.header("x-amzn-requestid").unwrap().to_owned();
    let queue_path = format!("/{ACCOUNT}/wire-query");
    assert_eq!(
        created.body,
        format!(
            "<?xml version=\"1.0\"?><CreateQueueResponse xmlns=\"{XML_NAMESPACE}\">\
             <CreateQueueResult><QueueUrl>http://{addr}{queue_path}</QueueUrl></CreateQueueResult>\
             <ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></CreateQueueResponse>"
        )
    );

    // Why: a request posted to the queue URL needs no QueueUrl; a CR survives as `&#13;`.
    let body = "line one\r\nline two <&> \"quoted\"";
    let sent = query_post(
        addr,
        &queue_path,
        &[
            ("Action", "SendMessage"),
            ("MessageBody", body),
            ("MessageAttribute.1.Name", "binaryAttribute"),
            ("MessageAttribute.1.Value.DataType", "Binary"),
            ("MessageAttribute.1.Value.BinaryValue", BINARY_WORLD_BASE64),
        ],
    )
    .await;
    assert_eq!(sent.status, 200, "{sent:?}");
    assert_eq!(
        xml_texts(&sent.body, "MD5OfMessageBody"),
        [hex_md5(body.as_bytes())]
    );
    assert_eq!(
        xml_texts(&sent.body, "MD5OfMessageAttributes"),
        ["31a92b15d92f8db860eda32aceb656c3"]
    );

    // Why: GET with the parameters in the query string works too.
    let received = wait_for(RECEIVE_TIMEOUT, "the Query message arrives", async || {
        let response = http(
            addr,
            "GET",
            &format!("{queue_path}?Action=ReceiveMessage&MessageAttributeName.1=All&AttributeName.1=All&WaitTimeSeconds=1"),
            NO_HEADERS,
            b"",
        )
        .await;
        assert_eq!(response.status, 200, "{response:?}");
        response.body.contains("<Message>").then_some(response)
    })
    .await;
    assert!(
        received
            .body
            .contains("<Body>line one&#13;\nline two &lt;&amp;&gt; &quot;quoted&quot;</Body>"),
        "{}",
        received.body
    );
    assert_eq!(xml_texts(&received.body, "Body"), [body]);
    assert_eq!(
        xml_texts(&received.body, "MD5OfBody"),
        [hex_md5(body.as_bytes())]
    );
    assert!(received.body.contains(&format!(
        "<MessageAttribute><Name>binaryAttribute</Name><Value><BinaryValue>{BINARY_WORLD_BASE64}</BinaryValue><DataType>Binary</DataType></Value></MessageAttribute>"
    )));
    assert!(received
        .body
        .contains("<Attribute><Name>SenderId</Name><Value>"));

    // Why: an action without output has a response without a Result element.
    let handle = xml_texts(&received.body, "ReceiptHandle").remove(0);
    let deleted = query_post(
        addr,
        "/",
        &[
            ("Action", "DeleteMessage"),
            ("QueueUrl", &format!("http://elsewhere:1{queue_path}")),
            ("ReceiptHandle", &handle),
        ],
    )
    .await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    assert!(deleted.body.starts_with(&format!(
        "<?xml version=\"1.0\"?><DeleteMessageResponse xmlns=\"{XML_NAMESPACE}\"><ResponseMetadata><RequestId>"
    )));

    // Why: maps are flattened `<Attribute><Name/><Value/></Attribute>` and `<Tag><Key/><Value/></Tag>`.
    let attributes = query_post(
        addr,
        &queue_path,
        &[
            ("Action", "GetQueueAttributes"),
            ("AttributeName.1", "DelaySeconds"),
            ("AttributeName.2", "QueueArn"),
        ],
    )
    .await;
    assert!(attributes.body.contains(&format!(
        "<GetQueueAttributesResult><Attribute><Name>DelaySeconds</Name><Value>0</Value></Attribute>\
         <Attribute><Name>QueueArn</Name><Value>arn:aws:sqs:us-east-1:{ACCOUNT}:wire-query</Value></Attribute></GetQueueAttributesResult>"
    )), "{}", attributes.body);
    let tags = query_post(addr, &queue_path, &[("Action", "ListQueueTags")]).await;
    assert!(tags.body.contains(
        "<ListQueueTagsResult><Tag><Key>team</Key><Value>wire</Value></Tag></ListQueueTagsResult>"
    ));
}

/// Query errors: `<ErrorResponse>` with Type, Code, Message and RequestId; no JSON header.
async fn query_errors(addr: SocketAddr) {
    // Why: the legacy shape and the Query wording of a missing queue.
    let missing = query_post(
        addr,
        "/",
        &[("Action", "GetQueueUrl"), ("QueueName", "wire-nope")],
    )
    .await;
    assert_eq!(missing.status, 400);
    assert!(missing.header("x-amzn-query-error").is_none());
    let request_id = missing.header("x-amzn-requestid").unwrap();
    assert_eq!(
        missing.body,
        format!(
            "<?xml version=\"1.0\"?><ErrorResponse xmlns=\"{XML_NAMESPACE}\"><Error><Type>Sender</Type>\
             <Code>AWS.SimpleQueueService.NonExistentQueue</Code>\
             <Message>The specified queue does not exist for this wsdl version.</Message><Detail/></Error>\
             <RequestId>{request_id}</RequestId></ErrorResponse>"
        )
    );

    let unknown = http(addr, "GET", "/?Action=DescribeEverything", NO_HEADERS, b"").await;
    assert_eq!(unknown.status, 400);
    assert_eq!(xml_texts(&unknown.body, "Code"), ["InvalidAction"]);

    let stale = query_post(
        addr,
        &format!("/{ACCOUNT}/wire-query"),
        &[
            ("Action", "ChangeMessageVisibility"),
            ("ReceiptHandle", "garbage"),
            ("VisibilityTimeout", "10"),
        ],
    )
    .await;
    assert_eq!(stale.status, 404);
    assert_eq!(xml_texts(&stale.body, "Code"), ["ReceiptHandleIsInvalid"]);
    assert_eq!(xml_texts(&stale.body, "Type"), ["Sender"]);

    let not_a_number = query_post(
        addr,
        &format!("/{ACCOUNT}/wire-query"),
        &[("Action", "ReceiveMessage"), ("WaitTimeSeconds", "soon")],
    )
    .await;
    assert_eq!(not_a_number.status, 400);
    assert_eq!(
        xml_texts(&not_a_number.body, "Code"),
        ["InvalidParameterValue"]
    );
}

/// The remaining actions, in the Query protocol because its flattened names (`Tag.N.Key`,
/// `AWSAccountId.N`, `...BatchRequestEntry.N.Id`) are where a wire layer goes wrong.
async fn every_other_action_over_query(addr: SocketAddr) {
    let queue_path = format!("/{ACCOUNT}/wire-query");
    let call = async |pairs: &[(&str, &str)]| {
        let response = query_post(addr, &queue_path, pairs).await;
        assert_eq!(response.status, 200, "{pairs:?}: {response:?}");
        response.body
    };

    // Why: attributes, tags and permissions are set through flattened maps and lists.
    call(&[
        ("Action", "SetQueueAttributes"),
        ("Attribute.1.Name", "VisibilityTimeout"),
        ("Attribute.1.Value", "45"),
    ])
    .await;
    let visibility = call(&[
        ("Action", "GetQueueAttributes"),
        ("AttributeName.1", "VisibilityTimeout"),
    ])
    .await;
    assert_eq!(xml_texts(&visibility, "Value"), ["45"]);
    call(&[
        ("Action", "TagQueue"),
        ("Tag.1.Key", "env"),
        ("Tag.1.Value", "test"),
    ])
    .await;
    call(&[("Action", "UntagQueue"), ("TagKey.1", "team")]).await;
    let tags = call(&[("Action", "ListQueueTags")]).await;
    assert_eq!(xml_texts(&tags, "Key"), ["env"]);
    call(&[
        ("Action", "AddPermission"),
        ("Label", "wire-grant"),
        ("AWSAccountId.1", "111122223333"),
        ("ActionName.1", "SendMessage"),
        ("ActionName.2", "ReceiveMessage"),
    ])
    .await;
    let policy = call(&[
        ("Action", "GetQueueAttributes"),
        ("AttributeName.1", "Policy"),
    ])
    .await;
    assert!(policy.contains("wire-grant"), "{policy}");
    call(&[("Action", "RemovePermission"), ("Label", "wire-grant")]).await;

    // Why: paging returns NextToken only when MaxResults is given, and the token continues.
    let first = call(&[
        ("Action", "ListQueues"),
        ("QueueNamePrefix", "wire-"),
        ("MaxResults", "1"),
    ])
    .await;
    assert_eq!(
        xml_texts(&first, "QueueUrl"),
        [format!("http://{addr}/{ACCOUNT}/wire-json")]
    );
    let token = xml_texts(&first, "NextToken").remove(0);
    let second = call(&[
        ("Action", "ListQueues"),
        ("QueueNamePrefix", "wire-"),
        ("MaxResults", "1"),
        ("NextToken", &token),
    ])
    .await;
    assert_eq!(
        xml_texts(&second, "QueueUrl"),
        [format!("http://{addr}/{ACCOUNT}/wire-query")]
    );

    // Why: the three batch actions and their result entry names.
    let sent = call(&[
        ("Action", "SendMessageBatch"),
        ("SendMessageBatchRequestEntry.1.Id", "one"),
        ("SendMessageBatchRequestEntry.1.MessageBody", "first"),
        ("SendMessageBatchRequestEntry.2.Id", "two"),
        ("SendMessageBatchRequestEntry.2.MessageBody", "second"),
    ])
    .await;
    assert_eq!(
        sent.matches("<SendMessageBatchResultEntry>").count(),
        2,
        "{sent}"
    );
    let mut handles = Vec::new();
    wait_until_received(&mut handles, addr, &queue_path, 2).await;
    let visibility_entries: Vec<(String, String)> = handles
        .iter()
        .enumerate()
        .flat_map(|(i, handle)| {
            let entry = format!("ChangeMessageVisibilityBatchRequestEntry.{}", i + 1);
            [
                (format!("{entry}.Id"), format!("v{i}")),
                (format!("{entry}.ReceiptHandle"), handle.clone()),
                (format!("{entry}.VisibilityTimeout"), "60".to_owned()),
            ]
        })
        .collect();
    let changed = call(&pairs_with(
        "ChangeMessageVisibilityBatch",
        &visibility_entries,
    ))
    .await;
    assert_eq!(
        changed
            .matches("<ChangeMessageVisibilityBatchResultEntry>")
            .count(),
        2,
        "{changed}"
    );
    let delete_entries: Vec<(String, String)> = handles
        .iter()
        .enumerate()
        .flat_map(|(i, handle)| {
            let entry = format!("DeleteMessageBatchRequestEntry.{}", i + 1);
            [
                (format!("{entry}.Id"), format!("d{i}")),
                (format!("{entry}.ReceiptHandle"), handle.clone()),
            ]
        })
        .collect();
    let deleted = call(&pairs_with("DeleteMessageBatch", &delete_entries)).await;
    assert_eq!(
        deleted.matches("<DeleteMessageBatchResultEntry>").count(),
        2,
        "{deleted}"
    );

    // Why: dead-letter listing and the three move-task actions are routed with their own inputs.
    let dlq_arn = format!("arn:aws:sqs:us-east-1:{ACCOUNT}:wire-dlq");
    call(&[("Action", "CreateQueue"), ("QueueName", "wire-dlq")]).await;
    let redrive = format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"3"}}"#);
    call(&[
        ("Action", "CreateQueue"),
        ("QueueName", "wire-source"),
        ("Attribute.1.Name", "RedrivePolicy"),
        ("Attribute.1.Value", &redrive),
    ])
    .await;
    let sources = query_post(
        addr,
        &format!("/{ACCOUNT}/wire-dlq"),
        &[("Action", "ListDeadLetterSourceQueues")],
    )
    .await;
    assert_eq!(
        xml_texts(&sources.body, "QueueUrl"),
        [format!("http://{addr}/{ACCOUNT}/wire-source")]
    );
    let started = call(&[("Action", "StartMessageMoveTask"), ("SourceArn", &dlq_arn)]).await;
    assert_eq!(xml_texts(&started, "TaskHandle").len(), 1, "{started}");
    let tasks = call(&[("Action", "ListMessageMoveTasks"), ("SourceArn", &dlq_arn)]).await;
    assert_eq!(
        xml_texts(&tasks, "SourceArn"),
        [dlq_arn.as_str()],
        "{tasks}"
    );
    assert_eq!(xml_texts(&tasks, "Status").len(), 1, "{tasks}");
    let cancel = query_post(
        addr,
        "/",
        &[
            ("Action", "CancelMessageMoveTask"),
            ("TaskHandle", "no-such-task"),
        ],
    )
    .await;
    assert_eq!(cancel.status, 404, "{cancel:?}");
    assert_eq!(
        xml_texts(&cancel.body, "Code"),
        ["ResourceNotFoundException"]
    );

    // Why: a deleted queue is gone for every later call.
    call(&[
        ("Action", "DeleteQueue"),
        ("QueueUrl", &format!("http://{addr}/{ACCOUNT}/wire-source")),
    ])
    .await;
    let gone = query_post(
        addr,
        "/",
        &[("Action", "GetQueueUrl"), ("QueueName", "wire-source")],
    )
    .await;
    assert_eq!(
        xml_texts(&gone.body, "Code"),
        ["AWS.SimpleQueueService.NonExistentQueue"]
    );
}

/// FIFO parameters the wire carries: MessageGroupId, deduplication and ReceiveRequestAttemptId.
async fn fifo_parameters_reach_the_queue(addr: SocketAddr) {
    let queue_url = create_json(
        addr,
        json!({"QueueName": "wire.fifo", "Attributes": {"FifoQueue": "true"}}),
    )
    .await;

    // Why: a repeated deduplication id answers with the first message, with a SequenceNumber.
    let send = json!({"QueueUrl": queue_url, "MessageBody": "ordered", "MessageGroupId": "g1", "MessageDeduplicationId": "d1"});
    let first = json_call(addr, "SendMessage", send.clone()).await.json();
    let again = json_call(addr, "SendMessage", send).await.json();
    assert_eq!(first["MessageId"], again["MessageId"]);
    assert_eq!(
        first["SequenceNumber"].as_str().map(str::len),
        Some(20),
        "{first}"
    );
    let no_group = json_call(
        addr,
        "SendMessage",
        json!({"QueueUrl": queue_url, "MessageBody": "x", "MessageDeduplicationId": "d2"}),
    )
    .await;
    assert_eq!(
        no_group.header("x-amzn-query-error"),
        Some("MissingParameter;Sender")
    );

    // Why: a receive retried with the same attempt id returns the same message and handle.
    let receive =
        json!({"MessageSystemAttributeNames": ["All"], "ReceiveRequestAttemptId": "attempt-1"});
    let message = receive_one_json(addr, &queue_url, receive.clone()).await;
    assert_eq!(message["Attributes"]["MessageGroupId"], "g1");
    assert_eq!(message["Attributes"]["MessageDeduplicationId"], "d1");
    assert_eq!(
        message["Attributes"]["SequenceNumber"],
        first["SequenceNumber"]
    );
    let retried = receive_one_json(addr, &queue_url, receive).await;
    assert_eq!(retried["ReceiptHandle"], message["ReceiptHandle"]);

    // Why: FIFO messages take the queue's delay; SQS accepts an explicit 0 and refuses others.
    let delay = |seconds: u32, id: &str| {
        json!({"QueueUrl": queue_url, "MessageBody": "x", "MessageGroupId": "g0",
               "MessageDeduplicationId": id, "DelaySeconds": seconds})
    };
    let zero = json_call(addr, "SendMessage", delay(0, "delay-0")).await;
    assert_eq!(zero.status, 200, "{zero:?}");
    let five = json_call(addr, "SendMessage", delay(5, "delay-5")).await;
    assert_eq!(
        five.header("x-amzn-query-error"),
        Some("InvalidParameterValue;Sender"),
        "{five:?}"
    );

    // Why: tools write back every attribute they read, FifoQueue included; changing it fails.
    let set_type = |value: &str| json!({"QueueUrl": queue_url, "Attributes": {"FifoQueue": value, "VisibilityTimeout": "31"}});
    let same = json_call(addr, "SetQueueAttributes", set_type("true")).await;
    assert_eq!(same.status, 200, "{same:?}");
    let changed = json_call(addr, "SetQueueAttributes", set_type("false")).await;
    assert_eq!(
        changed.header("x-amzn-query-error"),
        Some("InvalidAttributeValue;Sender"),
        "{changed:?}"
    );
}

/// SQS fair queues: a standard queue takes MessageGroupId and returns it as a system attribute.
async fn fair_queue_groups_come_back(addr: SocketAddr) {
    let queue_url = create_json(addr, json!({"QueueName": "tenants"})).await;
    let single =
        json!({"QueueUrl": queue_url, "MessageBody": "alpha", "MessageGroupId": "tenant-a"});
    let sent = json_call(addr, "SendMessage", single).await;
    assert_eq!(sent.status, 200, "{sent:?}");
    assert!(sent.json().get("SequenceNumber").is_none(), "{sent:?}");
    let entries = json!([
        {"Id": "b", "MessageBody": "beta", "MessageGroupId": "tenant-b"},
        {"Id": "c", "MessageBody": "gamma"},
    ]);
    let batch = json_call(
        addr,
        "SendMessageBatch",
        json!({"QueueUrl": queue_url, "Entries": entries}),
    )
    .await;
    assert_eq!(batch.json()["Successful"].as_array().map(Vec::len), Some(2));

    // Why: the group comes back with every message that was sent with one, from whichever
    // partition (and node) holds it; a message sent without one has none.
    let mut groups = BTreeMap::new();
    let request = json!({"QueueUrl": queue_url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 1,
                         "MessageSystemAttributeNames": ["All"]});
    wait_for(RECEIVE_TIMEOUT, "the three messages arrive", async || {
        let response = json_call(addr, "ReceiveMessage", request.clone()).await;
        assert_eq!(response.status, 200, "{response:?}");
        for message in response.json()["Messages"].as_array().into_iter().flatten() {
            let group = message["Attributes"]["MessageGroupId"]
                .as_str()
                .map(str::to_owned);
            groups.insert(
                message["Body"].as_str().unwrap_or_default().to_owned(),
                group,
            );
        }
        (groups.len() == 3).then_some(())
    })
    .await;
    let expected = [
        ("alpha", Some("tenant-a")),
        ("beta", Some("tenant-b")),
        ("gamma", None),
    ]
    .map(|(body, group)| (body.to_owned(), group.map(str::to_owned)));
    assert_eq!(groups, BTreeMap::from(expected));
}

/// What SQS refuses for a whole batch or a whole CreateQueue rather than per entry or attribute,
/// as LocalStack recorded against AWS.
async fn batch_and_queue_type_errors(addr: SocketAddr) {
    let refused = |response: &HttpResponse, message: &str| {
        assert_eq!(response.status, 400, "{response:?}");
        assert_eq!(
            response.header("x-amzn-query-error"),
            Some("InvalidParameterValue;Sender"),
            "{response:?}"
        );
        assert_eq!(response.json()["message"], message, "{response:?}");
    };
    // Why: a FIFO entry without a group or deduplication id fails the request and stores nothing.
    let queue_url = create_json(
        addr,
        json!({"QueueName": "wire-batch.fifo", "Attributes": {"FifoQueue": "true"}}),
    )
    .await;
    let batch = |second: Value| {
        let first = json!({"Id": "a", "MessageBody": "x", "MessageGroupId": "g", "MessageDeduplicationId": "a"});
        json!({"QueueUrl": queue_url, "Entries": [first, second]})
    };
    let no_group = batch(json!({"Id": "b", "MessageBody": "y", "MessageDeduplicationId": "b"}));
    refused(
        &json_call(addr, "SendMessageBatch", no_group).await,
        "The request must contain the parameter MessageGroupId.",
    );
    let no_dedup = batch(json!({"Id": "b", "MessageBody": "y", "MessageGroupId": "g"}));
    refused(
        &json_call(addr, "SendMessageBatch", no_dedup).await,
        "The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly",
    );
    let counted = json_call(
        addr,
        "GetQueueAttributes",
        json!({"QueueUrl": queue_url, "AttributeNames": ["ApproximateNumberOfMessages"]}),
    )
    .await;
    assert_eq!(
        counted.json()["Attributes"]["ApproximateNumberOfMessages"],
        "0",
        "{counted:?}"
    );

    // Why: a batch entry over the size limit fails alone, worded differently from a single send.
    let small_url = create_json(
        addr,
        json!({"QueueName": "wire-small", "Attributes": {"MaximumMessageSize": "1024"}}),
    )
    .await;
    let oversized = json_call(
        addr,
        "SendMessageBatch",
        json!({"QueueUrl": small_url, "Entries": [
            {"Id": "big", "MessageBody": "x".repeat(1025)},
            {"Id": "fits", "MessageBody": "x"},
        ]}),
    )
    .await
    .json();
    assert_eq!(oversized["Successful"][0]["Id"], "fits", "{oversized}");
    assert_eq!(oversized["Failed"][0]["Code"], "InvalidParameterValue");
    assert_eq!(
        oversized["Failed"][0]["Message"],
        "One or more parameters cannot be validated. Reason: Message must be shorter than 1024 bytes."
    );

    // Why: a queue's name and FifoQueue must agree, either way.
    refused(
        &json_call(
            addr,
            "CreateQueue",
            json!({"QueueName": "wire-mismatch.fifo"}),
        )
        .await,
        "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length",
    );
    refused(
        &json_call(
            addr,
            "CreateQueue",
            json!({"QueueName": "wire-mismatch", "Attributes": {"FifoQueue": "true"}}),
        )
        .await,
        "The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, must end with .fifo suffix and be 1 to 80 in length.",
    );
}

/// Too large a request is refused before its body is read; queue URLs follow the Host header.
async fn oversized_requests_and_reflected_hosts(addr: SocketAddr) {
    // Why: the body limit is enforced on the declared length, in the request's protocol.
    let oversized = raw_exchange(
        addr,
        format!(
            "POST / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Type: application/x-amz-json-1.0\r\nX-Amz-Target: AmazonSQS.SendMessage\r\n\
             Content-Length: {}\r\n\r\n",
            5 << 20
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(oversized.status, 413, "{oversized:?}");
    assert_eq!(
        oversized.header("x-amzn-query-error"),
        Some("RequestEntityTooLarge;Sender")
    );

    // Why: clients (JS v3) send requests to the queue URL's host, so it must be the one they used.
    let mut headers = json_headers("GetQueueUrl");
    headers.push(("Host", "sqs.example.test:4566".to_owned()));
    let reflected = http(addr, "POST", "/", &headers, br#"{"QueueName":"wire-json"}"#).await;
    assert_eq!(
        reflected.json()["QueueUrl"],
        format!("http://sqs.example.test:4566/{ACCOUNT}/wire-json")
    );
}

/// Every call works on a node that does not lead the catalog (and may lead none of the queue's
/// partitions): the node forwards.
async fn a_node_that_is_not_the_catalog_leader_serves_everything(cluster: &TestCluster) {
    let leader = cluster.wait_for_leader(0, RESPONSE_TIMEOUT).await;
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|id| *id != leader)
        .unwrap();
    let addr = cluster.sqs_addr(follower);

    // Why: a catalog write, a data write and a data read, all through a follower.
    let queue_url = create_json(addr, json!({"QueueName": "wire-follower"})).await;
    let sent = json_call(
        addr,
        "SendMessage",
        json!({"QueueUrl": queue_url, "MessageBody": "via a follower"}),
    )
    .await;
    assert_eq!(sent.status, 200, "{sent:?}");
    let message = receive_one_json(addr, &queue_url, json!({})).await;
    assert_eq!(message["Body"], "via a follower");

    // Why: the leader lists what the follower created, with its own address in the URLs.
    let listed = json_call(
        cluster.sqs_addr(leader),
        "ListQueues",
        json!({"QueueNamePrefix": "wire-f"}),
    )
    .await
    .json();
    assert_eq!(
        listed["QueueUrls"],
        json!([format!(
            "http://{}/{ACCOUNT}/wire-follower",
            cluster.sqs_addr(leader)
        )])
    );
}

// ---- a tiny HTTP/1.1 client ----

#[derive(Debug)]
struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {:?}", self.body))
    }
}

fn json_headers(action: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Content-Type", "application/x-amz-json-1.0".to_owned()),
        ("X-Amz-Target", format!("AmazonSQS.{action}")),
        ("X-Amzn-Query-Mode", "true".to_owned()),
        (
            "Authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20260101/us-east-1/sqs/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature=00"
            ),
        ),
    ]
}

/// Creates a queue over JSON and returns its URL.
async fn create_json(addr: SocketAddr, request: Value) -> String {
    let created = json_call(addr, "CreateQueue", request).await;
    assert_eq!(created.status, 200, "{created:?}");
    created.json()["QueueUrl"].as_str().unwrap().to_owned()
}

async fn json_call(addr: SocketAddr, action: &str, body: Value) -> HttpResponse {
    http(
        addr,
        "POST",
        "/",
        &json_headers(action),
        body.to_string().as_bytes(),
    )
    .await
}

/// Receives until one message arrives (the queue's partitions are swept in turn).
async fn receive_one_json(addr: SocketAddr, queue_url: &str, mut request: Value) -> Value {
    request["QueueUrl"] = json!(queue_url);
    request["WaitTimeSeconds"] = json!(1);
    wait_for(
        RECEIVE_TIMEOUT,
        "a JSON receive returns the message",
        async || {
            let response = json_call(addr, "ReceiveMessage", request.clone()).await;
            assert_eq!(response.status, 200, "{response:?}");
            response.json()["Messages"].get(0).cloned()
        },
    )
    .await
}

/// Receives from a queue (Query, GET) until `count` messages have been taken; their handles.
async fn wait_until_received(
    handles: &mut Vec<String>,
    addr: SocketAddr,
    queue_path: &str,
    count: usize,
) {
    let path =
        format!("{queue_path}?Action=ReceiveMessage&MaxNumberOfMessages=10&WaitTimeSeconds=1");
    wait_for(RECEIVE_TIMEOUT, "the batch's messages arrive", async || {
        let response = http(addr, "GET", &path, NO_HEADERS, b"").await;
        assert_eq!(response.status, 200, "{response:?}");
        handles.extend(xml_texts(&response.body, "ReceiptHandle"));
        (handles.len() >= count).then_some(())
    })
    .await;
}

/// `Action=<action>` followed by `pairs`.
fn pairs_with<'a>(action: &'a str, pairs: &'a [(String, String)]) -> Vec<(&'a str, &'a str)> {
    let mut all = vec![("Action", action)];
    all.extend(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    all
}

async fn query_post(addr: SocketAddr, path: &str, pairs: &[(&str, &str)]) -> HttpResponse {
    let form = pairs
        .iter()
        .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&");
    let headers = [(
        "Content-Type",
        "application/x-www-form-urlencoded; charset=utf-8".to_owned(),
    )];
    http(addr, "POST", path, &headers, form.as_bytes()).await
}

async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(impl AsRef<str>, impl AsRef<str>)],
    body: &[u8],
) -> HttpResponse {
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.as_ref().eq_ignore_ascii_case("host"))
    {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{}: {}\r\n", name.as_ref(), value.as_ref()));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    raw_exchange(addr, &request).await
}

/// Writes `request` on a new connection and reads the whole response.
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request).await.expect("send the request");
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .expect("read the response");
        raw
    };
    let raw = tokio::time::timeout(RESPONSE_TIMEOUT, exchange)
        .await
        .expect("the endpoint answers in time");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body: String::from_utf8(body).expect("a UTF-8 body"),
    }
}

fn dechunk(mut input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = input
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = String::from_utf8_lossy(&input[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("hex chunk size");
        input = &input[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&input[..size]);
        input = &input[size + 2..];
    }
}

fn hex_md5(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The unescaped text of every `<tag>...</tag>` element (not nested in itself).
fn xml_texts(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut texts = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let end = after.find(&close).expect("a closing tag");
        texts.push(unescape(&after[..end]));
        rest = &after[end + close.len()..];
    }
    texts
}

fn unescape(text: &str) -> String {
    text.replace("&#13;", "\r")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}
