#!/usr/bin/env python3
"""Ferry's SQS endpoint driven by an unmodified boto3.

Run under .venv-clients/current (botocore >= 1.34.90: AWS JSON 1.0) and .venv-clients/legacy
(botocore 1.34.80: Query); the suite asserts which protocol botocore speaks. Environment:

  FERRY_SQS_ENDPOINT            http://host:port of the node the suite talks to (required)
  FERRY_SQS_ENDPOINT_2          a second node, for the follower scenario (default: the first)
  FERRY_SUITE_EXPECT_PROTOCOL   json | query: fail unless botocore speaks this (optional)
  FERRY_SUITE_KILL_FILE         if set, the `acked_sends_survive` scenario prints
                                FERRY-SUITE-KILL-NOW half-way and waits until this file exists
                                (the harness kills a node, then creates it)
  FERRY_SUITE_ONLY              comma-separated scenario names to run (optional)
  FERRY_SQS_ACCOUNT             the account id expected in queue URLs and ARNs (default 000000000000)

Every queue name starts with a random per-run tag, so runs can share a cluster. The last line is
`<suite>: N passed, N failed`; the exit status is 0 only if every scenario passed.
"""

import base64
import hashlib
import os
import struct
import sys
import threading
import time
import traceback
import uuid

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import ClientError

ACCOUNT = os.environ.get("FERRY_SQS_ACCOUNT", "000000000000")
REGION = "us-east-1"
MIB = 1024 * 1024

ENDPOINT = os.environ.get("FERRY_SQS_ENDPOINT", "").rstrip("/")
ENDPOINT_2 = (os.environ.get("FERRY_SQS_ENDPOINT_2") or ENDPOINT).rstrip("/")
KILL_FILE = os.environ.get("FERRY_SUITE_KILL_FILE")
ONLY = {n for n in os.environ.get("FERRY_SUITE_ONLY", "").split(",") if n}

# Every client call: connect within 2 s, an answer within 30 s (longer than a 20 s long poll),
# and the SDK's standard retries (which is how a real application rides over a node failure).
CLIENT_CONFIG = Config(
    region_name=REGION,
    connect_timeout=2,
    read_timeout=30,
    retries={"max_attempts": 5, "mode": "standard"},
)

# Legacy (Query) error code -> (JSON __type shape name, HTTP status), from the reference's table.
ERRORS = {
    "AWS.SimpleQueueService.NonExistentQueue": ("QueueDoesNotExist", 400),
    "QueueAlreadyExists": ("QueueNameExists", 400),
    "AWS.SimpleQueueService.QueueDeletedRecently": ("QueueDeletedRecently", 400),
    "AWS.SimpleQueueService.PurgeQueueInProgress": ("PurgeQueueInProgress", 403),
    "AWS.SimpleQueueService.BatchEntryIdsNotDistinct": ("BatchEntryIdsNotDistinct", 400),
    "AWS.SimpleQueueService.TooManyEntriesInBatchRequest": ("TooManyEntriesInBatchRequest", 400),
    "AWS.SimpleQueueService.EmptyBatchRequest": ("EmptyBatchRequest", 400),
    "AWS.SimpleQueueService.InvalidBatchEntryId": ("InvalidBatchEntryId", 400),
    "ReceiptHandleIsInvalid": ("ReceiptHandleIsInvalid", 404),
    "InvalidAttributeName": ("InvalidAttributeName", 400),
    "InvalidAttributeValue": ("InvalidAttributeValue", 400),
    "InvalidMessageContents": ("InvalidMessageContents", 400),
    "InvalidParameterValue": ("InvalidParameterValueException", 400),
    "AWS.SimpleQueueService.BatchRequestTooLong": ("BatchRequestTooLong", 400),
}


class SuiteFailure(AssertionError):
    pass


def check(condition, what, *details):
    if not condition:
        raise SuiteFailure(" ".join([what] + [repr(d) for d in details]))


def check_eq(actual, expected, what):
    if actual != expected:
        raise SuiteFailure(f"{what}: expected {expected!r}, got {actual!r}")


def log(*parts):
    print(*parts, flush=True)


def botocore_version():
    return tuple(int(p) for p in botocore.__version__.split(".")[:3])


def make_client(endpoint):
    return boto3.session.Session(
        aws_access_key_id="AKIDFERRYTEST",
        aws_secret_access_key="ferry-test-secret",
        region_name=REGION,
    ).client("sqs", endpoint_url=endpoint, config=CLIENT_CONFIG)


C = None  # the client of FERRY_SQS_ENDPOINT
C2 = None  # the client of FERRY_SQS_ENDPOINT_2
PROTOCOL = None
TAG = uuid.uuid4().hex[:8]
CREATED = []  # queue URLs to delete at the end
SCENARIOS = []


def scenario(fn):
    SCENARIOS.append(fn)
    return fn


def qname(suffix):
    return f"py{PROTOCOL[0]}-{TAG}-{suffix}"


def create(suffix, attributes=None, tags=None, client=None):
    kwargs = {"QueueName": qname(suffix)}
    if attributes:
        kwargs["Attributes"] = attributes
    if tags:
        kwargs["tags"] = tags
    url = (client or C).create_queue(**kwargs)["QueueUrl"]
    CREATED.append(url)
    return url


def expect_error(code, fn, **kwargs):
    """Calls fn(**kwargs), which must fail with `code` exactly as AWS reports it to boto3."""
    try:
        result = fn(**kwargs)
    except ClientError as e:
        err = e.response.get("Error", {})
        meta = e.response.get("ResponseMetadata", {})
        shape, status = ERRORS[code]
        context = f"{fn.__name__}: error {err!r}, HTTP {meta.get('HTTPStatusCode')}"
        check_eq(err.get("Code"), code, f"{context}: Error.Code")
        check_eq(meta.get("HTTPStatusCode"), status, f"{context}: HTTP status")
        check_eq(err.get("Type"), "Sender", f"{context}: Error.Type")
        check(err.get("Message"), f"{context}: an error message")
        if PROTOCOL == "json":
            # Only set when the x-amzn-query-error header was there and well formed.
            check_eq(err.get("QueryErrorCode"), shape, f"{context}: QueryErrorCode (__type)")
        check(meta.get("RequestId"), f"{context}: a request id")
        return e
    raise SuiteFailure(f"{fn.__name__}{kwargs_summary(kwargs)}: expected {code}, got {result!r}")


def kwargs_summary(kwargs):
    short = {k: (v if len(repr(v)) < 120 else f"<{len(repr(v))} chars>") for k, v in kwargs.items()}
    return f"({short})"


def md5_hex(data):
    return hashlib.md5(data).hexdigest()


def md5_of_attributes(attributes):
    """MD5OfMessageAttributes as the SDKs compute it (SQS-REFERENCE.md §1.5)."""
    out = bytearray()

    def put(data):
        out.extend(struct.pack(">I", len(data)))
        out.extend(data)

    for name in sorted(attributes):
        value = attributes[name]
        put(name.encode("utf-8"))
        put(value["DataType"].encode("utf-8"))
        if "StringValue" in value:
            out.append(1)
            put(value["StringValue"].encode("utf-8"))
        else:
            out.append(2)
            put(bytes(value["BinaryValue"]))
    return md5_hex(bytes(out))


def system_attribute_names_param(names):
    """ReceiveMessage's system-attribute list: the new member if this botocore has it."""
    members = C.meta.service_model.operation_model("ReceiveMessage").input_shape.members
    key = "MessageSystemAttributeNames" if "MessageSystemAttributeNames" in members else "AttributeNames"
    return {key: names}


def receive(url, client=None, **kwargs):
    kwargs.setdefault("MaxNumberOfMessages", 10)
    kwargs.setdefault("WaitTimeSeconds", 1)
    return (client or C).receive_message(QueueUrl=url, **kwargs).get("Messages", [])


def receive_n(url, n, timeout=20, client=None, **kwargs):
    """Receives until n messages arrived (failing past the deadline or if more arrive)."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        check(time.monotonic() < deadline, f"received {len(got)} of {n} messages within {timeout}s")
        got.extend(receive(url, client=client, **kwargs))
    check(len(got) == n, f"expected {n} messages, got {len(got)}", [m["Body"][:40] for m in got])
    return got


def wait_for(what, fn, timeout=15, interval=0.2):
    """Polls fn() until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise SuiteFailure(f"timed out after {timeout}s waiting until {what}; last: {last!r}")
        time.sleep(interval)


def queue_attributes(url, names=("All",), client=None):
    return (client or C).get_queue_attributes(QueueUrl=url, AttributeNames=list(names)).get("Attributes", {})


def counters(url):
    a = queue_attributes(
        url,
        [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )
    return (
        int(a["ApproximateNumberOfMessages"]),
        int(a["ApproximateNumberOfMessagesNotVisible"]),
        int(a["ApproximateNumberOfMessagesDelayed"]),
    )


# Message attributes of every type, with custom labels and every byte value.
ALL_BYTES = bytes(range(256))
RICH_ATTRIBUTES = {
    "str": {"DataType": "String", "StringValue": "hello wörld ✓ 😀 <&>"},
    "num": {"DataType": "Number", "StringValue": "-12345.678e3"},
    "bin": {"DataType": "Binary", "BinaryValue": ALL_BYTES},
    "meta.float": {"DataType": "Number.float", "StringValue": "4563442423554324324264524243.32543234"},
    "meta.custom": {"DataType": "String.custom", "StringValue": "custom label"},
    "meta.gif": {"DataType": "Binary.gif", "BinaryValue": b"GIF89a\x00\x01\xfe\xff"},
    "Upper_case-name.x": {"DataType": "String", "StringValue": "case sensitive"},
}
# Allowed characters that need escaping somewhere: CR (`&#13;` in XML), markup, astral plane.
TRICKY_BODY = "line1\nline2\r\nline3\ttab <xml attr=\"v\"> & 'apos' ünïcödé 中文 😀 \U0010FFFD"


def assert_same_attributes(actual, expected, what):
    check_eq(sorted(actual), sorted(expected), f"{what}: attribute names")
    for name, value in expected.items():
        got = actual[name]
        check_eq(got.get("DataType"), value["DataType"], f"{what}: {name} DataType")
        if "StringValue" in value:
            check_eq(got.get("StringValue"), value["StringValue"], f"{what}: {name} StringValue")
        else:
            check_eq(bytes(got.get("BinaryValue", b"")), value["BinaryValue"], f"{what}: {name} BinaryValue")


# ---------------------------------------------------------------------------------------------
# Scenarios


@scenario
def protocol_and_request_id():
    expected = "json" if botocore_version() >= (1, 34, 90) else "query"
    check_eq(PROTOCOL, expected, f"botocore {botocore.__version__} SQS protocol")
    wanted = os.environ.get("FERRY_SUITE_EXPECT_PROTOCOL")
    if wanted:
        check_eq(PROTOCOL, wanted, "FERRY_SUITE_EXPECT_PROTOCOL")
    response = C.list_queues(QueueNamePrefix=qname("nothing-has-this-name"))
    check_eq(response["ResponseMetadata"]["HTTPStatusCode"], 200, "ListQueues status")
    check(response["ResponseMetadata"].get("RequestId"), "ListQueues has a request id", response)
    check("QueueUrls" not in response, "no QueueUrls key when nothing matches", response)


@scenario
def queue_lifecycle():
    urls = [create(f"life-{i}") for i in range(3)]
    for i, url in enumerate(urls):
        name = qname(f"life-{i}")
        check(url.startswith("http://"), "queue URL is http", url)
        check(url.endswith(f"/{ACCOUNT}/{name}"), f"queue URL is <base>/{ACCOUNT}/<name>", url)
        check_eq(C.get_queue_url(QueueName=name)["QueueUrl"], url, "GetQueueUrl")
        check_eq(
            C.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=ACCOUNT)["QueueUrl"],
            url,
            "GetQueueUrl with the owner account",
        )
    listed = C.list_queues(QueueNamePrefix=qname("life-")).get("QueueUrls", [])
    check_eq(sorted(listed), sorted(urls), "ListQueues by prefix")
    check_eq(
        C.list_queues(QueueNamePrefix=qname("life-1")).get("QueueUrls", []),
        [urls[1]],
        "ListQueues by a longer prefix",
    )
    # Pagination: NextToken only when MaxResults is given.
    page1 = C.list_queues(QueueNamePrefix=qname("life-"), MaxResults=2)
    check_eq(len(page1.get("QueueUrls", [])), 2, "first page size")
    check(page1.get("NextToken"), "a NextToken after a full page", page1)
    page2 = C.list_queues(QueueNamePrefix=qname("life-"), MaxResults=2, NextToken=page1["NextToken"])
    check_eq(
        sorted(page1["QueueUrls"] + page2.get("QueueUrls", [])), sorted(urls), "both pages together"
    )
    check("NextToken" not in page2, "no NextToken after the last page", page2)
    # Delete: the queue goes away (AWS allows up to 60 s; Ferry should be quick).
    C.delete_queue(QueueUrl=urls[0])
    wait_for(
        "the deleted queue is gone from ListQueues",
        lambda: urls[0] not in C.list_queues(QueueNamePrefix=qname("life-")).get("QueueUrls", []),
    )
    expect_error("AWS.SimpleQueueService.NonExistentQueue", C.get_queue_url, QueueName=qname("life-0"))
    # Re-creating the name within 60 s of the delete is refused, as on AWS.
    expect_error(
        "AWS.SimpleQueueService.QueueDeletedRecently", C.create_queue, QueueName=qname("life-0")
    )


@scenario
def create_is_idempotent_unless_a_named_attribute_differs():
    attributes = {"VisibilityTimeout": "40", "DelaySeconds": "2"}
    url = create("idem", attributes)
    check_eq(create("idem", attributes), url, "CreateQueue with equal attributes")
    # As SQS: only the attributes the call names count, against the queue's values or defaults.
    check_eq(create("idem"), url, "CreateQueue naming no attributes")
    check_eq(
        create("idem", {"VisibilityTimeout": "40", "MessageRetentionPeriod": "345600"}),
        url,
        "CreateQueue naming a subset and a default the queue kept",
    )
    for differing in ({"VisibilityTimeout": "41", "DelaySeconds": "2"}, {"VisibilityTimeout": "30"}):
        expect_error(
            "QueueAlreadyExists", C.create_queue, QueueName=qname("idem"), Attributes=differing
        )


@scenario
def attributes_round_trip():
    url = create("attrs")
    before = time.time()
    a = queue_attributes(url)
    check_eq(a.get("QueueArn"), f"arn:aws:sqs:{REGION}:{ACCOUNT}:{qname('attrs')}", "QueueArn")
    for key, default in {
        "VisibilityTimeout": "30",
        "MaximumMessageSize": str(MIB),
        "MessageRetentionPeriod": "345600",
        "DelaySeconds": "0",
        "ReceiveMessageWaitTimeSeconds": "0",
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesNotVisible": "0",
        "ApproximateNumberOfMessagesDelayed": "0",
    }.items():
        check_eq(a.get(key), default, f"default {key}")
    created = int(a["CreatedTimestamp"])  # epoch seconds, not ms
    check(abs(created - before) < 600, "CreatedTimestamp is epoch seconds near now", created, before)
    check(int(a["LastModifiedTimestamp"]) >= created, "LastModifiedTimestamp >= CreatedTimestamp", a)
    C.set_queue_attributes(
        QueueUrl=url,
        Attributes={
            "VisibilityTimeout": "45",
            "DelaySeconds": "3",
            "MessageRetentionPeriod": "7200",
            "MaximumMessageSize": "2048",
        },
    )
    a = queue_attributes(url)
    for key, value in {
        "VisibilityTimeout": "45",
        "DelaySeconds": "3",
        "MessageRetentionPeriod": "7200",
        "MaximumMessageSize": "2048",
    }.items():
        check_eq(a.get(key), value, f"{key} after SetQueueAttributes")
    check(int(a["LastModifiedTimestamp"]) >= created, "LastModifiedTimestamp after a change", a)
    # Only the names asked for; nothing when no names are given.
    some = queue_attributes(url, ["VisibilityTimeout", "QueueArn"])
    check_eq(sorted(some), ["QueueArn", "VisibilityTimeout"], "GetQueueAttributes with two names")
    check_eq(C.get_queue_attributes(QueueUrl=url).get("Attributes", {}), {}, "no AttributeNames")
    # The new MaximumMessageSize is enforced.
    expect_error("InvalidParameterValue", C.send_message, QueueUrl=url, MessageBody="x" * 2049)
    C.send_message(QueueUrl=url, MessageBody="x" * 2048)
    # Invalid values and names.
    expect_error(
        "InvalidAttributeValue", C.set_queue_attributes, QueueUrl=url, Attributes={"VisibilityTimeout": "43201"}
    )
    expect_error(
        "InvalidAttributeValue", C.set_queue_attributes, QueueUrl=url, Attributes={"DelaySeconds": "abc"}
    )
    expect_error(
        "InvalidAttributeValue",
        C.create_queue,
        QueueName=qname("attrs-bad"),
        Attributes={"MessageRetentionPeriod": "59"},
    )
    expect_error(
        "InvalidAttributeName", C.set_queue_attributes, QueueUrl=url, Attributes={"NoSuchAttribute": "1"}
    )
    check_eq(queue_attributes(url, ["VisibilityTimeout"]), {"VisibilityTimeout": "45"}, "unchanged after errors")


@scenario
def queue_defaults_apply():
    """ReceiveMessageWaitTimeSeconds and VisibilityTimeout of the queue apply when a receive
    does not say."""
    url = create("defaults", {"ReceiveMessageWaitTimeSeconds": "2", "VisibilityTimeout": "1"})
    start = time.monotonic()
    check_eq(C.receive_message(QueueUrl=url).get("Messages", []), [], "an empty queue")
    waited = time.monotonic() - start
    check(1.8 <= waited < 10, "the queue's ReceiveMessageWaitTimeSeconds (2 s) applied", waited)
    C.send_message(QueueUrl=url, MessageBody="short visibility")
    asked = time.monotonic()  # the receive that hides the message happens after this
    [m] = receive_n(url, 1, WaitTimeSeconds=5)
    [again] = receive_n(url, 1, WaitTimeSeconds=5)
    check_eq(again["MessageId"], m["MessageId"], "the same message after the queue's 1 s visibility timeout")
    hidden = time.monotonic() - asked
    check(hidden >= 0.95, "hidden for the queue's visibility timeout (1 s)", hidden)
    C.delete_message(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"])
    C.delete_message(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"])  # twice is fine


@scenario
def approximate_counters():
    url = create("counters")
    C.send_message_batch(
        QueueUrl=url,
        Entries=[{"Id": f"v{i}", "MessageBody": f"visible {i}"} for i in range(3)]
        + [{"Id": "delayed", "MessageBody": "delayed", "DelaySeconds": 600}],
    )
    wait_for("3 visible and 1 delayed", lambda: counters(url) == (3, 0, 1))
    receive_n(url, 1, MaxNumberOfMessages=1, VisibilityTimeout=600)
    wait_for("2 visible, 1 in flight, 1 delayed", lambda: counters(url) == (2, 1, 1))


@scenario
def send_receive_delete_single():
    url = create("single")
    sent = C.send_message(QueueUrl=url, MessageBody=TRICKY_BODY, MessageAttributes=RICH_ATTRIBUTES)
    check(sent.get("MessageId"), "a MessageId", sent)
    check_eq(sent.get("MD5OfMessageBody"), md5_hex(TRICKY_BODY.encode()), "MD5OfMessageBody")
    check_eq(sent.get("MD5OfMessageAttributes"), md5_of_attributes(RICH_ATTRIBUTES), "MD5OfMessageAttributes")
    plain = C.send_message(QueueUrl=url, MessageBody="plain")
    check("MD5OfMessageAttributes" not in plain, "no attribute MD5 without attributes", plain)

    messages = receive_n(url, 2, MessageAttributeNames=["All"], VisibilityTimeout=60)
    by_body = {m["Body"]: m for m in messages}
    check_eq(sorted(by_body), sorted([TRICKY_BODY, "plain"]), "bodies round trip exactly")
    rich = by_body[TRICKY_BODY]
    check_eq(rich["MessageId"], sent["MessageId"], "MessageId")
    check_eq(rich["MD5OfBody"], md5_hex(TRICKY_BODY.encode()), "MD5OfBody")
    assert_same_attributes(rich.get("MessageAttributes", {}), RICH_ATTRIBUTES, "received attributes")
    check_eq(rich.get("MD5OfMessageAttributes"), md5_of_attributes(RICH_ATTRIBUTES), "received MD5OfMessageAttributes")
    check("MessageAttributes" not in by_body["plain"], "no attributes on the plain message", by_body["plain"])
    check("MD5OfMessageAttributes" not in by_body["plain"], "no attribute MD5 on the plain message", by_body["plain"])
    for m in messages:
        C.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    wait_for("the queue is empty", lambda: counters(url) == (0, 0, 0))
    check_eq(receive(url, WaitTimeSeconds=0), [], "nothing left after the deletes")


@scenario
def md5_reference_vectors():
    url = create("vectors")
    body = "this is a test of the GoAws Queue messaging"
    attributes = {
        "attribName1": {"DataType": "String", "StringValue": "attribValue 1"},
        "customNumberTypeAttrib": {"DataType": "Number.float", "StringValue": "4563442423554324324264524243.32543234"},
        "binaryAttribute": {"DataType": "Binary", "BinaryValue": b"Hello binary world!"},
    }
    sent = C.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attributes)
    check_eq(sent["MD5OfMessageBody"], "9d3f5eaac3b1b4dd509f39e71e25f954", "vector: body MD5")
    check_eq(sent["MD5OfMessageAttributes"], "c932db14a896c663f83c260297d594ff", "vector: attributes MD5")
    [m] = receive_n(url, 1, MessageAttributeNames=["attribName1"])
    check_eq(m["MD5OfMessageAttributes"], "19e27d4e946b072f3f58da80d94fd778", "vector: one attribute after a filter")
    one = C.send_message(QueueUrl=url, MessageBody=body, MessageAttributes={"binaryAttribute": attributes["binaryAttribute"]})
    check_eq(one["MD5OfMessageAttributes"], "31a92b15d92f8db860eda32aceb656c3", "vector: binary attribute")


@scenario
def message_attribute_filters():
    url = create("filters")
    C.send_message(QueueUrl=url, MessageBody="filtered", MessageAttributes=RICH_ATTRIBUTES)
    cases = [
        (["All"], set(RICH_ATTRIBUTES)),
        ([".*"], set(RICH_ATTRIBUTES)),
        (["str"], {"str"}),
        (["str", "bin", "absent"], {"str", "bin"}),
        (["meta.*"], {"meta.float", "meta.custom", "meta.gif"}),
        (["upper_case-name.x"], set()),  # names are case-sensitive
        (None, set()),
    ]
    for names, expected in cases:
        kwargs = {"VisibilityTimeout": 0}
        if names is not None:
            kwargs["MessageAttributeNames"] = names
        [m] = receive_n(url, 1, MaxNumberOfMessages=1, **kwargs)
        got = m.get("MessageAttributes", {})
        check_eq(set(got), expected, f"attributes returned for {names}")
        if expected:
            want = {k: RICH_ATTRIBUTES[k] for k in expected}
            assert_same_attributes(got, want, f"filter {names}")
            check_eq(m.get("MD5OfMessageAttributes"), md5_of_attributes(want), f"MD5 over the attributes returned for {names}")
        else:
            check("MD5OfMessageAttributes" not in m, f"no attribute MD5 for {names}", m)


@scenario
def system_attributes():
    url = create("sysattrs")
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
    before_ms = int(time.time() * 1000)
    sent = C.send_message(
        QueueUrl=url,
        MessageBody="system",
        MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String", "StringValue": trace}},
    )
    check_eq(
        sent.get("MD5OfMessageSystemAttributes"),
        md5_of_attributes({"AWSTraceHeader": {"DataType": "String", "StringValue": trace}}),
        "MD5OfMessageSystemAttributes",
    )
    [m] = receive_n(url, 1, VisibilityTimeout=0, **system_attribute_names_param(["All"]))
    a = m.get("Attributes", {})
    for key in ["ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp", "AWSTraceHeader"]:
        check(key in a, f"All includes {key}", a)
    check_eq(a["ApproximateReceiveCount"], "1", "first receive count")
    check_eq(a["AWSTraceHeader"], trace, "AWSTraceHeader")
    sent_ms = int(a["SentTimestamp"])
    check(abs(sent_ms - before_ms) < 60_000, "SentTimestamp is epoch ms near now", sent_ms, before_ms)
    check(int(a["ApproximateFirstReceiveTimestamp"]) >= sent_ms, "first receive after send", a)
    check(a["SenderId"], "a SenderId", a)
    names = ["ApproximateReceiveCount", "SentTimestamp"]
    [m] = receive_n(url, 1, VisibilityTimeout=0, **system_attribute_names_param(names))
    check_eq(sorted(m.get("Attributes", {})), sorted(names), "only the system attributes asked for")
    check_eq(m["Attributes"]["ApproximateReceiveCount"], "2", "second receive count")
    names = ["SenderId", "ApproximateFirstReceiveTimestamp"]
    [m] = receive_n(url, 1, VisibilityTimeout=0, **system_attribute_names_param(names))
    check_eq(sorted(m.get("Attributes", {})), sorted(names), "SenderId + ApproximateFirstReceiveTimestamp")
    check_eq(m["Attributes"]["ApproximateFirstReceiveTimestamp"], a["ApproximateFirstReceiveTimestamp"], "first receive time is kept")
    [m] = receive_n(url, 1, VisibilityTimeout=0)
    check("Attributes" not in m, "no system attributes unless asked", m)
    if "MessageSystemAttributeNames" in C.meta.service_model.operation_model("ReceiveMessage").input_shape.members:
        # The deprecated AttributeNames still works.
        [m] = receive_n(url, 1, VisibilityTimeout=0, AttributeNames=["ApproximateReceiveCount"])
        check_eq(m.get("Attributes"), {"ApproximateReceiveCount": "5"}, "deprecated AttributeNames")


@scenario
def fair_queue_group():
    # SQS fair queues: a standard queue keeps a sent MessageGroupId and returns it.
    url = create("fair")
    C.send_message(QueueUrl=url, MessageBody="tenant message", MessageGroupId="tenant-1")
    [m] = receive_n(url, 1, **system_attribute_names_param(["All"]))
    check_eq(m.get("Attributes", {}).get("MessageGroupId"), "tenant-1", "MessageGroupId on a standard queue")
    check("SequenceNumber" not in m["Attributes"], "no SequenceNumber on a standard queue", m)


@scenario
def batch_send_receive_delete():
    url = create("batch")
    entries = []
    for i in range(10):
        attributes = {"index": {"DataType": "Number", "StringValue": str(i)}}
        if i % 2:
            attributes["blob"] = {"DataType": "Binary.raw", "BinaryValue": ALL_BYTES[i:] + ALL_BYTES[:i]}
        entries.append({"Id": f"entry_{i}-x", "MessageBody": f"batch body {i} ✓", "MessageAttributes": attributes})
    result = C.send_message_batch(QueueUrl=url, Entries=entries)
    check_eq(result.get("Failed", []), [], "no failed entries")
    successful = {e["Id"]: e for e in result["Successful"]}
    check_eq(sorted(successful), sorted(e["Id"] for e in entries), "every entry succeeded")
    for e in entries:
        s = successful[e["Id"]]
        check_eq(s["MD5OfMessageBody"], md5_hex(e["MessageBody"].encode()), f"{e['Id']} body MD5")
        check_eq(s["MD5OfMessageAttributes"], md5_of_attributes(e["MessageAttributes"]), f"{e['Id']} attributes MD5")
    messages = receive_n(url, 10, MessageAttributeNames=["All"], VisibilityTimeout=60)
    by_body = {m["Body"]: m for m in messages}
    for e in entries:
        m = by_body[e["MessageBody"]]
        check_eq(m["MessageId"], successful[e["Id"]]["MessageId"], "MessageId of a batch entry")
        assert_same_attributes(m.get("MessageAttributes", {}), e["MessageAttributes"], e["Id"])
        check_eq(m["MD5OfMessageAttributes"], md5_of_attributes(e["MessageAttributes"]), f"{e['Id']} received MD5")
    deleted = C.delete_message_batch(
        QueueUrl=url,
        Entries=[{"Id": f"d{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages[:9])]
        + [{"Id": "bad", "ReceiptHandle": "not-a-receipt-handle"}],
    )
    check_eq(sorted(e["Id"] for e in deleted.get("Successful", [])), sorted(f"d{i}" for i in range(9)), "deleted entries")
    [failed] = deleted.get("Failed", [None])
    check_eq(failed and failed["Id"], "bad", "the invalid handle's entry failed")
    check_eq(failed["Code"], "ReceiptHandleIsInvalid", "per-entry code")
    check_eq(failed["SenderFault"], True, "SenderFault")
    C.delete_message_batch(QueueUrl=url, Entries=[{"Id": "last", "ReceiptHandle": messages[9]["ReceiptHandle"]}])
    wait_for("the batch queue is empty", lambda: counters(url) == (0, 0, 0))


@scenario
def change_visibility():
    url = create("visibility")
    C.send_message(QueueUrl=url, MessageBody="hide and seek")
    [first] = receive_n(url, 1, VisibilityTimeout=60, **system_attribute_names_param(["ApproximateReceiveCount"]))
    check_eq(receive(url, WaitTimeSeconds=1), [], "hidden for its visibility timeout")
    C.change_message_visibility(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=0)
    [second] = receive_n(url, 1, VisibilityTimeout=60, **system_attribute_names_param(["ApproximateReceiveCount"]))
    check_eq(second["MessageId"], first["MessageId"], "the same message again")
    check_eq(second["Attributes"]["ApproximateReceiveCount"], "2", "received twice")
    check(second["ReceiptHandle"] != first["ReceiptHandle"], "a new receipt handle per receive")
    expect_error(
        "InvalidParameterValue",
        C.change_message_visibility,
        QueueUrl=url,
        ReceiptHandle=second["ReceiptHandle"],
        VisibilityTimeout=43201,
    )
    # A stale handle deletes successfully ("might not be deleted"); the current one deletes.
    C.delete_message(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"])
    C.delete_message(QueueUrl=url, ReceiptHandle=second["ReceiptHandle"])
    wait_for("the message is gone", lambda: counters(url) == (0, 0, 0))

    # The batch form, with one bad entry.
    C.send_message_batch(QueueUrl=url, Entries=[{"Id": f"m{i}", "MessageBody": f"vis {i}"} for i in range(3)])
    held = receive_n(url, 3, VisibilityTimeout=60)
    result = C.change_message_visibility_batch(
        QueueUrl=url,
        Entries=[{"Id": f"c{i}", "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0} for i, m in enumerate(held)]
        + [{"Id": "bad", "ReceiptHandle": "garbage", "VisibilityTimeout": 0}],
    )
    check_eq(sorted(e["Id"] for e in result.get("Successful", [])), ["c0", "c1", "c2"], "changed entries")
    check_eq([(e["Id"], e["Code"], e["SenderFault"]) for e in result.get("Failed", [])],
             [("bad", "ReceiptHandleIsInvalid", True)], "failed entry")
    again = receive_n(url, 3, VisibilityTimeout=60)
    check_eq(sorted(m["Body"] for m in again), ["vis 0", "vis 1", "vis 2"], "visible again after the batch change")


@scenario
def delay_seconds():
    url = create("delay")
    delay = 3
    start = time.monotonic()
    C.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=delay)
    sent = time.monotonic() - start
    early = receive(url, WaitTimeSeconds=0)
    asked = time.monotonic() - start
    # The server stamps the message after `start`, so until `start + delay` it must be hidden.
    if asked < delay:
        check_eq(early, [], f"a delayed message is not visible at once (send took {sent:.2f}s, receive done at {asked:.2f}s)")
    else:
        log(f"    (send took {sent:.2f}s and the receive ended {asked:.2f}s after it began: too slow to check)")
    [m] = early or receive_n(url, 1, timeout=15)
    elapsed = time.monotonic() - start
    check_eq(m["Body"], "later", "the delayed message")
    check(elapsed >= delay - 0.1, "delivered no earlier than its delay", elapsed)


@scenario
def long_poll_returns_on_send():
    url = create("longpoll")
    started = threading.Event()
    outcome = {}

    def poll():
        started.set()
        t0 = time.monotonic()
        try:
            outcome["messages"] = receive(url, WaitTimeSeconds=10, MaxNumberOfMessages=1)
        except Exception as e:  # reported by the main thread
            outcome["error"] = e
        outcome["returned"] = time.monotonic()
        outcome["waited"] = outcome["returned"] - t0

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    check(started.wait(10), "the polling thread started")
    time.sleep(1.0)  # let the request reach the server and park; the point is it returns early
    sent_at = time.monotonic()
    C.send_message(QueueUrl=url, MessageBody="wake up")
    thread.join(timeout=25)
    check(not thread.is_alive(), "the long poll returned within its wait time")
    if "error" in outcome:
        raise outcome["error"]
    check_eq([m["Body"] for m in outcome["messages"]], ["wake up"], "the long poll got the message")
    after_send = outcome["returned"] - sent_at
    log(f"    long poll returned {after_send:.3f}s after the send (waited {outcome['waited']:.3f}s)")
    check(after_send < 5.0, "the long poll returned < 5 s after the send", after_send)


@scenario
def acked_sends_survive():
    """Every acknowledged send is received later, even if a node is killed half-way."""
    url = create("acked")
    acked = []

    def send_round(round_no):
        for b in range(3):
            entries = [{"Id": f"e{i}", "MessageBody": f"acked {round_no}-{b}-{i}"} for i in range(10)]
            result = C.send_message_batch(QueueUrl=url, Entries=entries)
            check_eq(result.get("Failed", []), [], "failed batch entries")
            acked.extend(e["MessageBody"] for e in entries)
        single = f"acked {round_no}-single"
        C.send_message(QueueUrl=url, MessageBody=single)
        acked.append(single)

    send_round(0)
    if KILL_FILE:
        log("FERRY-SUITE-KILL-NOW")
        wait_for(f"the harness created {KILL_FILE}", lambda: os.path.exists(KILL_FILE), timeout=60, interval=0.05)
    send_round(1)
    seen = set()
    deadline = time.monotonic() + 40
    while not set(acked) <= seen:
        check(time.monotonic() < deadline, f"received {len(set(acked) & seen)} of {len(acked)} acknowledged sends")
        messages = receive(url, VisibilityTimeout=60)
        seen.update(m["Body"] for m in messages)
        if messages:
            C.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": f"d{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )
    check(seen <= set(acked), "nothing received that was not sent", seen - set(acked))


@scenario
def purge():
    url = create("purge")
    C.send_message_batch(QueueUrl=url, Entries=[{"Id": f"p{i}", "MessageBody": f"purge {i}"} for i in range(5)])
    receive_n(url, 1, MaxNumberOfMessages=1, VisibilityTimeout=60)  # in-flight messages go too
    C.purge_queue(QueueUrl=url)
    wait_for("the purged queue is empty", lambda: counters(url) == (0, 0, 0))
    check_eq(receive(url, WaitTimeSeconds=0), [], "nothing after a purge")
    expect_error("AWS.SimpleQueueService.PurgeQueueInProgress", C.purge_queue, QueueUrl=url)
    C.send_message(QueueUrl=url, MessageBody="after purge")
    check_eq([m["Body"] for m in receive_n(url, 1)], ["after purge"], "sending works after a purge")


@scenario
def tags():
    url = create("tags", tags={"team": "ferry", "cost-center": "42"})
    check_eq(C.list_queue_tags(QueueUrl=url).get("Tags"), {"team": "ferry", "cost-center": "42"}, "tags from CreateQueue")
    C.tag_queue(QueueUrl=url, Tags={"team": "core", "env": "test"})
    check_eq(C.list_queue_tags(QueueUrl=url).get("Tags"), {"team": "core", "cost-center": "42", "env": "test"}, "after TagQueue")
    C.untag_queue(QueueUrl=url, TagKeys=["env", "cost-center", "never-set"])
    check_eq(C.list_queue_tags(QueueUrl=url).get("Tags"), {"team": "core"}, "after UntagQueue")
    C.untag_queue(QueueUrl=url, TagKeys=["team"])
    check_eq(C.list_queue_tags(QueueUrl=url).get("Tags", {}), {}, "no tags left")


@scenario
def errors():
    url = create("errors")
    missing_url = url.rsplit("/", 1)[0] + "/" + qname("no-such-queue")
    nonexistent = "AWS.SimpleQueueService.NonExistentQueue"
    expect_error(nonexistent, C.get_queue_url, QueueName=qname("no-such-queue"))
    expect_error(nonexistent, C.send_message, QueueUrl=missing_url, MessageBody="x")
    expect_error(nonexistent, C.receive_message, QueueUrl=missing_url)
    expect_error(nonexistent, C.get_queue_attributes, QueueUrl=missing_url, AttributeNames=["All"])
    expect_error(nonexistent, C.delete_queue, QueueUrl=missing_url)
    expect_error(nonexistent, C.list_queue_tags, QueueUrl=missing_url)

    expect_error("InvalidParameterValue", C.create_queue, QueueName="bad name!")
    expect_error("InvalidParameterValue", C.create_queue, QueueName="x" * 81)

    # 1 MiB is the largest message; one byte more is refused.
    expect_error("InvalidParameterValue", C.send_message, QueueUrl=url, MessageBody="a" * (MIB + 1))
    expect_error(
        "InvalidParameterValue",
        C.send_message,
        QueueUrl=url,
        MessageBody="a" * (MIB - 10),
        MessageAttributes={"pad": {"DataType": "String", "StringValue": "0123456789"}},
    )
    big = C.send_message(QueueUrl=url, MessageBody="b" * MIB)
    check_eq(big["MD5OfMessageBody"], md5_hex(b"b" * MIB), "MD5 of a 1 MiB body")
    [m] = receive_n(url, 1)
    check_eq(len(m["Body"]), MIB, "a 1 MiB body comes back whole")
    C.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    expect_error("InvalidMessageContents", C.send_message, QueueUrl=url, MessageBody="bad \x01 char")

    expect_error("InvalidParameterValue", C.receive_message, QueueUrl=url, MaxNumberOfMessages=11)
    expect_error("InvalidParameterValue", C.receive_message, QueueUrl=url, MaxNumberOfMessages=0)
    expect_error("InvalidParameterValue", C.receive_message, QueueUrl=url, WaitTimeSeconds=21)
    expect_error("InvalidParameterValue", C.receive_message, QueueUrl=url, VisibilityTimeout=43201)
    expect_error("InvalidParameterValue", C.send_message, QueueUrl=url, MessageBody="x", DelaySeconds=901)
    expect_error(
        "InvalidParameterValue",
        C.send_message,
        QueueUrl=url,
        MessageBody="eleven attributes",
        MessageAttributes={f"a{i}": {"DataType": "String", "StringValue": "v"} for i in range(11)},
    )
    expect_error("InvalidAttributeName", C.get_queue_attributes, QueueUrl=url, AttributeNames=["NoSuchAttribute"])
    expect_error(
        "InvalidParameterValue",
        C.send_message,
        QueueUrl=url,
        MessageBody="x",
        MessageAttributes={"n": {"DataType": "Number", "StringValue": "not a number"}},
    )
    expect_error(
        "InvalidParameterValue",
        C.send_message,
        QueueUrl=url,
        MessageBody="x",
        MessageAttributes={"s": {"DataType": "String", "StringValue": ""}},
    )
    # Each entry is under 1 MiB, the batch is not.
    expect_error(
        "AWS.SimpleQueueService.BatchRequestTooLong",
        C.send_message_batch,
        QueueUrl=url,
        Entries=[{"Id": f"e{i}", "MessageBody": "c" * (600 * 1024)} for i in range(2)],
    )
    empty = C.receive_message(QueueUrl=url, WaitTimeSeconds=0)
    check("Messages" not in empty, "an empty receive has no Messages", empty)

    expect_error(
        "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
        C.send_message_batch,
        QueueUrl=url,
        Entries=[{"Id": f"e{i}", "MessageBody": "x"} for i in range(11)],
    )
    expect_error("AWS.SimpleQueueService.EmptyBatchRequest", C.send_message_batch, QueueUrl=url, Entries=[])
    expect_error("AWS.SimpleQueueService.EmptyBatchRequest", C.delete_message_batch, QueueUrl=url, Entries=[])
    expect_error(
        "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
        C.send_message_batch,
        QueueUrl=url,
        Entries=[{"Id": "same", "MessageBody": "a"}, {"Id": "same", "MessageBody": "b"}],
    )
    expect_error(
        "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
        C.delete_message_batch,
        QueueUrl=url,
        Entries=[{"Id": "same", "ReceiptHandle": "a"}, {"Id": "same", "ReceiptHandle": "b"}],
    )
    expect_error(
        "AWS.SimpleQueueService.InvalidBatchEntryId",
        C.send_message_batch,
        QueueUrl=url,
        Entries=[{"Id": "not valid!", "MessageBody": "a"}],
    )
    expect_error(
        "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
        C.change_message_visibility_batch,
        QueueUrl=url,
        Entries=[{"Id": f"e{i}", "ReceiptHandle": "x", "VisibilityTimeout": 0} for i in range(11)],
    )
    expect_error("ReceiptHandleIsInvalid", C.delete_message, QueueUrl=url, ReceiptHandle="garbage")
    expect_error(
        "ReceiptHandleIsInvalid",
        C.change_message_visibility,
        QueueUrl=url,
        ReceiptHandle="garbage",
        VisibilityTimeout=10,
    )
    check_eq(counters(url), (0, 0, 0), "errors stored nothing")


@scenario
def follower_endpoint():
    """A second node serves queues created through the first, in both directions."""
    url = create("follower")
    check_eq(
        C2.get_queue_url(QueueName=qname("follower"))["QueueUrl"].rsplit("/", 2)[1:],
        [ACCOUNT, qname("follower")],
        "GetQueueUrl on the second node",
    )
    listed = C2.list_queues(QueueNamePrefix=qname("follower")).get("QueueUrls", [])
    check_eq([u.rsplit("/", 1)[1] for u in listed], [qname("follower")], "ListQueues on the second node")
    C2.send_message(QueueUrl=url, MessageBody="via node 2", MessageAttributes={"n": {"DataType": "Number", "StringValue": "2"}})
    [m] = receive_n(url, 1, MessageAttributeNames=["All"], VisibilityTimeout=60)
    check_eq((m["Body"], m["MessageAttributes"]["n"]["StringValue"]), ("via node 2", "2"), "sent on 2, received on 1")
    C2.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    C.send_message(QueueUrl=url, MessageBody="via node 1")
    [m] = receive_n(url, 1, client=C2, VisibilityTimeout=60)
    check_eq(m["Body"], "via node 1", "sent on 1, received on 2")
    C2.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
    [m] = receive_n(url, 1, VisibilityTimeout=60)
    C.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    C2.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "77"})
    check_eq(queue_attributes(url, ["VisibilityTimeout"]), {"VisibilityTimeout": "77"}, "attributes set on node 2")
    C2.tag_queue(QueueUrl=url, Tags={"via": "2"})
    check_eq(C.list_queue_tags(QueueUrl=url).get("Tags"), {"via": "2"}, "tags set on node 2")
    wait_for("counters agree on both nodes", lambda: counters(url) == (0, 0, 0))
    C2.delete_queue(QueueUrl=url)
    wait_for("the queue deleted on node 2 is gone on node 1",
             lambda: url not in C.list_queues(QueueNamePrefix=qname("follower")).get("QueueUrls", []))


# ---------------------------------------------------------------------------------------------


def delete_queues(urls):
    for url in urls:
        try:
            C.delete_queue(QueueUrl=url)
        except Exception:
            pass  # already deleted by its scenario, or a failure that was reported above


def main():
    global C, C2, PROTOCOL
    if not ENDPOINT:
        print("FERRY_SQS_ENDPOINT is not set (e.g. http://127.0.0.1:9324)", file=sys.stderr)
        return 2
    C = make_client(ENDPOINT)
    C2 = make_client(ENDPOINT_2)
    PROTOCOL = C.meta.service_model.protocol
    suite = f"python-{PROTOCOL}"
    log(f"{suite}: boto3 {boto3.__version__}, botocore {botocore.__version__}, protocol {PROTOCOL}, "
        f"endpoint {ENDPOINT}, second endpoint {ENDPOINT_2}, tag {TAG}")
    passed, failed = [], []
    suite_start = time.monotonic()
    for fn in SCENARIOS:
        if ONLY and fn.__name__ not in ONLY:
            continue
        start = time.monotonic()
        log(f"--- {fn.__name__}")
        first_queue = len(CREATED)
        try:
            fn()
        except Exception as e:
            failed.append(fn.__name__)
            detail = ""
            if isinstance(e, ClientError):
                detail = f"\n    response: {e.response!r}"
            log(f"FAIL {fn.__name__} ({time.monotonic() - start:.2f}s): {type(e).__name__}: {e}{detail}")
            log("    " + traceback.format_exc().replace("\n", "\n    "))
        else:
            passed.append(fn.__name__)
            log(f"ok   {fn.__name__} ({time.monotonic() - start:.2f}s)")
        # Each queue is a few Raft groups with heartbeats of their own: keep only what is in use.
        delete_queues(CREATED[first_queue:])
    log(f"{suite}: total {time.monotonic() - suite_start:.1f}s; failed: {', '.join(failed) or 'none'}")
    log(f"{suite}: {len(passed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
