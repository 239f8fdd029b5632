//! `docs/sqs-compatibility.md`, generated from this crate so it cannot drift: every [`Action`] must
//! have a row (the match below is exhaustive), every queue attribute listed must be one the broker
//! knows, and the error table comes from the same mapping the endpoint uses. The test fails when
//! the committed file differs; `FERRY_UPDATE_DOCS=1 cargo test -p ferry-sqs compatibility`
//! rewrites it.

use std::fmt::Write as _;
use std::path::PathBuf;

use ferry_types::ErrorCode;

use crate::action::Action;
use crate::wire_error::wire_error;

#[derive(Clone, Copy)]
enum Status {
    Supported,
    Partial,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Self::Supported => "yes",
            Self::Partial => "partial",
        }
    }
}

fn action_status(action: Action) -> (Status, &'static str) {
    use Status::*;
    match action {
        Action::AddPermission => (
            Partial,
            "Adds a statement to the queue's Policy; policies are stored and returned, not evaluated.",
        ),
        Action::CancelMessageMoveTask => (
            Supported,
            "Only a RUNNING task; messages already moved stay moved.",
        ),
        Action::ChangeMessageVisibility => (
            Supported,
            "Including the 12-hour limit, counted from the receive that issued the handle.",
        ),
        Action::ChangeMessageVisibilityBatch => (Supported, ""),
        Action::CreateQueue => (
            Supported,
            "Standard and FIFO queues (high-throughput FIFO included); on an existing queue it returns the queue unless an attribute the call names differs from the queue's value (defaults counted). A name and FifoQueue that disagree (`.fifo` or not) fail with InvalidParameterValue, as in SQS.",
        ),
        Action::DeleteMessage => (
            Supported,
            "A stale receipt handle succeeds without deleting on a standard queue, as in SQS. On a FIFO queue a handle whose receive is over (the message is visible again or was received since) fails with InvalidParameterValue, \"The receipt handle has expired\", as AWS answers.",
        ),
        Action::DeleteMessageBatch => (
            Supported,
            "On a FIFO queue an entry whose receipt handle's receive is over fails with InvalidParameterValue (AWS's code for the single delete; what AWS answers per batch entry is not recorded).",
        ),
        Action::DeleteQueue => (Supported, ""),
        Action::GetQueueAttributes => (Supported, ""),
        Action::GetQueueUrl => (
            Supported,
            "QueueOwnerAWSAccountId must be the cluster's account.",
        ),
        Action::ListDeadLetterSourceQueues => (Supported, "With MaxResults and NextToken."),
        Action::ListMessageMoveTasks => (Supported, "Most recent first; MaxResults 1–10, default 1."),
        Action::ListQueueTags => (Supported, ""),
        Action::ListQueues => (
            Supported,
            "QueueNamePrefix, MaxResults and NextToken (returned only when MaxResults is given).",
        ),
        Action::PurgeQueue => (Supported, "One purge per queue per 60 seconds."),
        Action::ReceiveMessage => (
            Supported,
            "Long polling up to 20 s; both AttributeNames and MessageSystemAttributeNames; `All`, `.*` and `prefix.*` filters; ReceiveRequestAttemptId on FIFO queues. In-flight limit as in SQS: at 120,000 messages in flight (`in_flight_limit`, shared out over the queue's partitions) a short poll of a standard queue fails with OverLimit, a long poll waits and returns nothing, a FIFO queue returns nothing; a receive below the limit may take up to its batch past it.",
        ),
        Action::RemovePermission => (Supported, ""),
        Action::SendMessage => (
            Supported,
            "On a standard queue MessageGroupId is accepted and returned (fair queues), but delivery is not reordered to favour quiet tenants as SQS does; while any node runs a build from before fair groups, it is not kept.",
        ),
        Action::SendMessageBatch => (
            Supported,
            "Per-entry failures in `Failed` with HTTP 200; as in SQS, a FIFO entry without MessageGroupId, or without MessageDeduplicationId on a queue without content-based deduplication, fails the whole request with InvalidParameterValue.",
        ),
        Action::SetQueueAttributes => (
            Supported,
            "FifoQueue cannot be changed (repeating a FIFO queue's `true` is accepted).",
        ),
        Action::StartMessageMoveTask => (
            Supported,
            "One running task per source; back to each message's source queue, or to DestinationArn; MaxNumberOfMessagesPerSecond up to 500.",
        ),
        Action::TagQueue => (Supported, "At most 50 tags per queue, counted after the call."),
        Action::UntagQueue => (Supported, ""),
    }
}

/// A row of an attribute table.
type Row = (&'static str, Status, &'static str);

/// The `QueueAttributeName` enum of the SQS model, `All` included.
const QUEUE_ATTRIBUTES: &[Row] = &[
    ("All", Status::Supported, ""),
    ("Policy", Status::Partial, "Stored and returned (AddPermission statements appear in it); not evaluated."),
    ("VisibilityTimeout", Status::Supported, "0–43,200, default 30."),
    ("MaximumMessageSize", Status::Supported, "1,024–1,048,576, default 1,048,576."),
    ("MessageRetentionPeriod", Status::Supported, "60–1,209,600, default 345,600."),
    ("ApproximateNumberOfMessages", Status::Supported, "Read-only."),
    ("ApproximateNumberOfMessagesNotVisible", Status::Supported, "Read-only."),
    ("CreatedTimestamp", Status::Supported, "Read-only, epoch seconds."),
    ("LastModifiedTimestamp", Status::Supported, "Read-only, epoch seconds."),
    ("QueueArn", Status::Supported, "Read-only."),
    ("ApproximateNumberOfMessagesDelayed", Status::Supported, "Read-only."),
    ("DelaySeconds", Status::Supported, "0–900, default 0."),
    ("ReceiveMessageWaitTimeSeconds", Status::Supported, "0–20, default 0."),
    ("RedrivePolicy", Status::Supported, "The dead-letter queue must exist, be of the same type and allow the source."),
    ("FifoQueue", Status::Supported, "Create only."),
    ("ContentBasedDeduplication", Status::Supported, "FIFO only."),
    ("KmsMasterKeyId", Status::Partial, "Accepted and reported; no encryption at rest."),
    ("KmsDataKeyReusePeriodSeconds", Status::Partial, "Accepted and reported (60–86,400, default 300)."),
    (
        "DeduplicationScope",
        Status::Supported,
        "FIFO only. A queue created for high throughput keeps per-group deduplication if the scope is set to `queue` later (SQS too keeps the behaviour it was created with).",
    ),
    ("FifoThroughputLimit", Status::Supported, "FIFO only; perMessageGroupId with DeduplicationScope messageGroup spreads groups over partitions."),
    ("RedriveAllowPolicy", Status::Supported, "allowAll, denyAll or byQueue, checked when a RedrivePolicy names the queue."),
    ("SqsManagedSseEnabled", Status::Partial, "Accepted and reported, default false (SQS: true); no encryption at rest."),
];

/// The `MessageSystemAttributeName` enum of the SQS model, `All` included.
const SYSTEM_ATTRIBUTES: &[Row] = &[
    ("All", Status::Supported, ""),
    (
        "SenderId",
        Status::Supported,
        "The caller's access key when auth is `parse` or `verify`, else the configured default.",
    ),
    ("SentTimestamp", Status::Supported, "Epoch milliseconds."),
    ("ApproximateReceiveCount", Status::Supported, ""),
    (
        "ApproximateFirstReceiveTimestamp",
        Status::Supported,
        "Epoch milliseconds.",
    ),
    ("SequenceNumber", Status::Supported, "FIFO only; 20 digits."),
    ("MessageDeduplicationId", Status::Supported, "FIFO only."),
    (
        "MessageGroupId",
        Status::Supported,
        "FIFO queues, and standard queues as sent (fair queues).",
    ),
    (
        "AWSTraceHeader",
        Status::Supported,
        "Set through MessageSystemAttributes on send.",
    ),
    (
        "DeadLetterQueueSourceArn",
        Status::Supported,
        "On messages moved to a dead-letter queue.",
    ),
];

const INTRODUCTION: &str = "\
Every node serves the SQS API on its SQS HTTP address (`--sqs-addr`, port 9324 by default). Both wire
protocols are detected per request: AWS JSON 1.0 (`X-Amz-Target: AmazonSQS.<Action>`, current SDKs) and
Query (`Action=<Action>` in a form body or query string, GET or POST, XML responses in the
`http://queue.amazonaws.com/doc/2012-11-05/` namespace; older SDKs and CLIs). Requests may go to `/` or
to a queue URL. Every response carries a request id (`x-amzn-RequestId`, and
`ResponseMetadata/RequestId` in XML); JSON errors always carry `x-amzn-query-error: <code>;<Sender|Receiver>`.

Queue URLs are `<base>/<account>/<queue>`: the base is `sqs_base_url` if configured, else
`http://<the request's Host header>`. Any node accepts any queue's URL, whatever its host (only the
last two path segments count, so LocalStack-style `/queue/<region>/<account>/<queue>` URLs work) and
forwards to the queue's leaders. Message attribute values of every type, custom labels included, and
binary values (base64 on the wire in both protocols) round-trip; MD5OfMessageBody,
MD5OfMessageAttributes (over the attributes actually returned, absent when there are none) and
MD5OfMessageSystemAttributes are byte-exact.

Status: **yes** as SQS behaves; **partial** accepted, with the difference noted.
";

const AUTHENTICATION: &str = "\
The config file's `sqs_auth` chooses how SigV4 is treated:

- `off`: signatures are ignored; SenderId is the configured default.
- `parse` (the default, and what `ferry dev` runs): the access key is taken from the signature's
  credential scope as the caller's identity (SenderId); nothing is checked, any secret works.
- `verify`: the `Authorization: AWS4-HMAC-SHA256` header must be valid for an access key of
  `[sqs_credentials]`, with `X-Amz-Date` within 15 minutes of the node's clock, and the key's
  `account_id` (default: the cluster's) must be the cluster's account. An unsigned or non-SigV4 request
  gets InvalidSecurity, an unknown key InvalidClientTokenId, a wrong signature SignatureDoesNotMatch,
  a stale one RequestExpired, a key of another account AccessDenied. Presigned (query-string)
  signatures are not accepted. The temporary-credential session token is not checked.
";

const DIFFERENCES: &str = "\
- One account per cluster (`account_id`); queue URLs and ARNs use it whatever the caller's key.
- Queue policies (Policy, AddPermission) are stored, not evaluated; there is no IAM.
- Requests larger than 4 MiB are refused with HTTP 413.
- Which of an empty body or `{}` AWS sends for JSON actions without output is not documented; Ferry
  sends `{}`, which every SDK accepts.
";

fn table(
    out: &mut String,
    header: &str,
    rows: impl IntoIterator<Item = (String, Status, &'static str)>,
) {
    writeln!(out, "| {header} | Status | Notes |").unwrap();
    writeln!(out, "|---|---|---|").unwrap();
    for (name, status, notes) in rows {
        writeln!(out, "| {name} | {} | {notes} |", status.label()).unwrap();
    }
    out.push('\n');
}

fn render() -> String {
    let mut out = String::new();
    out.push_str("# SQS compatibility\n\n");
    out.push_str(
        "<!-- Generated from crates/ferry-sqs/src/compatibility.rs; a test fails when this file differs.\n     \
         Rewrite it with: FERRY_UPDATE_DOCS=1 cargo test -p ferry-sqs compatibility -->\n\n",
    );
    out.push_str(INTRODUCTION);
    out.push_str("\n## Actions\n\n");
    table(
        &mut out,
        "Action",
        Action::ALL.into_iter().map(|action| {
            let (status, notes) = action_status(action);
            (action.name().to_owned(), status, notes)
        }),
    );
    out.push_str("## Queue attributes\n\nEvery value travels as a string, in both protocols.\n\n");
    table(
        &mut out,
        "Attribute",
        QUEUE_ATTRIBUTES
            .iter()
            .map(|(name, status, notes)| ((*name).to_owned(), *status, *notes)),
    );
    out.push_str("## Message system attributes\n\n");
    table(
        &mut out,
        "Attribute",
        SYSTEM_ATTRIBUTES
            .iter()
            .map(|(name, status, notes)| ((*name).to_owned(), *status, *notes)),
    );
    out.push_str("## Errors\n\n");
    out.push_str(
        "What each Ferry error code looks like on the wire. Batch entries carry the Query code in `Code`.\n\n",
    );
    out.push_str(
        "| Ferry code | HTTP | JSON `__type` | Query `Code` and `x-amzn-query-error` | Fault |\n",
    );
    out.push_str("|---|---|---|---|---|\n");
    for code in ErrorCode::ALL {
        let wire = wire_error(code);
        writeln!(
            out,
            "| {} | {} | `{}` | `{}` | {} |",
            code.as_str(),
            wire.status.as_u16(),
            wire.type_name(),
            wire.code,
            wire.fault.as_str()
        )
        .unwrap();
    }
    out.push_str("\n## Authentication\n\n");
    out.push_str(AUTHENTICATION);
    out.push_str("\n## Other differences from SQS\n\n");
    out.push_str(DIFFERENCES);
    out
}

#[test]
fn listed_queue_attributes_are_the_ones_the_broker_knows() {
    assert_eq!(
        QUEUE_ATTRIBUTES.len(),
        22,
        "the model's 21 attributes and All"
    );
    for (name, _, _) in QUEUE_ATTRIBUTES {
        ferry_broker::attributes::check_names(&[(*name).to_owned()])
            .unwrap_or_else(|error| panic!("the broker does not know {name}: {error}"));
    }
}

#[test]
fn compatibility_doc_is_current() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/sqs-compatibility.md");
    let expected = render();
    if std::env::var_os("FERRY_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &expected).expect("write docs/sqs-compatibility.md");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == expected,
        "docs/sqs-compatibility.md is out of date; run FERRY_UPDATE_DOCS=1 cargo test -p ferry-sqs compatibility"
    );
}
