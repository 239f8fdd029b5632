//! Ferry's SQS-compatible HTTP endpoint driven by unmodified AWS clients against a real 3-node
//! cluster (issue 3, item 7).
//!
//! One cluster; the scenario suites in `tests/clients/` run as subprocesses against node 1, with
//! node 2 as the second ("follower") endpoint:
//!
//! | suite | client | wire protocol |
//! |---|---|---|
//! | `python/sqs_suite.py` in `.venv-clients/current` | boto3, current | AWS JSON 1.0 |
//! | `python/sqs_suite.py` in `.venv-clients/legacy` | boto3 1.34.80 | Query |
//! | `cli/sqs_cli.sh` | AWS CLI v1, current | AWS JSON 1.0 |
//! | `node/sqs_suite.mjs` | `@aws-sdk/client-sqs` with MD5 validation | AWS JSON 1.0 |
//!
//! plus the Rust `aws-sdk-sqs` in-process. Finally the current boto3 suite runs once more while
//! node 3 is SIGKILLed half-way through it: every acknowledged operation must still hold.
//!
//! The clients come from `scripts/install-test-clients`; without them this test fails (it does not
//! skip) and says so.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::config::Credentials;
use aws_sdk_sqs::error::ProvideErrorMetadata as _;
use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use common::{ClusterOptions, TestCluster};
use md5::{Digest as _, Md5};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::Command;

/// One suite's whole run; each is designed to take well under a minute on an idle machine.
const SUITE_TIMEOUT: Duration = Duration::from_secs(240);
/// What the Rust SDK may spend on one call, retries included (a long poll is at most 20 s).
const SDK_OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
/// One HTTP attempt of the Rust SDK.
const SDK_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// The plain HTTP probe of the endpoint.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// The line the Python suite prints when it wants a node killed (see `acked_sends_survive`).
const KILL_MARKER: &str = "FERRY-SUITE-KILL-NOW";
const RUST_SDK_SUITE: &str = "rust (aws-sdk-sqs)";
const INSTALL_HINT: &str = "run scripts/install-test-clients (it installs boto3, the AWS CLI and \
                            @aws-sdk/client-sqs into .venv-clients/ and tests/clients/node/)";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root")
}

/// The installed clients, or a panic that says how to install them.
struct Clients {
    python_current: PathBuf,
    python_legacy: PathBuf,
    aws_cli: PathBuf,
    node_dir: PathBuf,
}

impl Clients {
    fn find() -> Clients {
        let root = repo_root();
        let clients = Clients {
            python_current: root.join(".venv-clients/current/bin/python"),
            python_legacy: root.join(".venv-clients/legacy/bin/python"),
            aws_cli: root.join(".venv-clients/current/bin/aws"),
            node_dir: root.join("tests/clients/node"),
        };
        let mut missing = Vec::new();
        for path in [
            &clients.python_current,
            &clients.python_legacy,
            &clients.aws_cli,
            &clients
                .node_dir
                .join("node_modules/@aws-sdk/client-sqs/package.json"),
        ] {
            if !path.exists() {
                missing.push(path.display().to_string());
            }
        }
        for tool in ["node", "bash", "python3"] {
            let found = std::env::var_os("PATH")
                .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
                .unwrap_or(false);
            if !found {
                missing.push(format!("`{tool}` on PATH"));
            }
        }
        assert!(
            missing.is_empty(),
            "the real SQS clients are not installed: missing {}.\nTo fix: {INSTALL_HINT}",
            missing.join(", ")
        );
        clients
    }
}

/// One suite's outcome.
struct SuiteRun {
    name: String,
    ok: bool,
    took: Duration,
    output: String,
}

fn endpoint(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// A client command with the endpoints and an environment free of the user's AWS configuration.
fn suite_command(program: &Path, endpoint_1: &str, endpoint_2: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("FERRY_SQS_ENDPOINT", endpoint_1)
        .env("FERRY_SQS_ENDPOINT_2", endpoint_2)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_SQS")
        .env_remove("FERRY_SUITE_ONLY")
        .current_dir(repo_root());
    cmd
}

/// Runs a suite to completion (killing its process group after [`SUITE_TIMEOUT`]), calling
/// `on_line` for each line it prints on stdout as it comes.
async fn run_suite(name: &str, mut cmd: Command, mut on_line: impl FnMut(&str)) -> SuiteRun {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: cannot start {cmd:?}: {e}. {INSTALL_HINT}"));
    let pid = child.id().expect("a running child has a pid") as i32;
    let mut stderr = child.stderr.take().expect("piped stderr");
    let stderr_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf).await;
        String::from_utf8_lossy(&buf).into_owned()
    });
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut output = String::new();
    let finished = tokio::time::timeout(SUITE_TIMEOUT, async {
        let mut line = Vec::new();
        loop {
            line.clear();
            if stdout.read_until(b'\n', &mut line).await? == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&line);
            on_line(text.trim_end());
            output.push_str(&text);
        }
        child.wait().await
    })
    .await;
    let ok = match finished {
        Ok(Ok(status)) => {
            if !status.success() {
                output.push_str(&format!("[harness] {name} exited with {status}\n"));
            }
            status.success()
        }
        Ok(Err(e)) => {
            output.push_str(&format!("[harness] reading {name}'s output failed: {e}\n"));
            false
        }
        Err(_) => {
            output.push_str(&format!(
                "[harness] {name} did not finish within {SUITE_TIMEOUT:?}; killed\n"
            ));
            false
        }
    };
    // The suite's own children (the AWS CLI, a background long poll) are in its process group.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = child.wait().await;
    if let Ok(Ok(err)) = tokio::time::timeout(Duration::from_secs(5), stderr_task).await {
        if !err.trim().is_empty() {
            output.push_str("[stderr]\n");
            output.push_str(&err);
        }
    }
    SuiteRun {
        name: name.to_string(),
        ok,
        took: start.elapsed(),
        output,
    }
}

/// The HTTP status of a JSON-protocol `ListQueues` sent with nothing but a socket, or `None`.
async fn probe_status(addr: SocketAddr) -> Option<u16> {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let body = "{}";
        let request = format!(
            "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-amz-json-1.0\r\n\
             X-Amz-Target: AmazonSQS.ListQueues\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        text.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_aws_clients_against_a_three_node_cluster() {
    let clients = Clients::find();
    let mut cluster = TestCluster::start(3, ClusterOptions::default()).await;
    for id in cluster.node_ids() {
        match probe_status(cluster.sqs_addr(id)).await {
            Some(200) => {}
            Some(501) => panic!(
                "node {id}'s SQS endpoint answers 501 Not Implemented: the SQS adapter is not wired \
                 into `ferry serve`"
            ),
            other => panic!(
                "node {id}'s SQS endpoint at {} answered a JSON ListQueues with {other:?}",
                cluster.sqs_addr(id)
            ),
        }
    }
    let e1 = endpoint(cluster.sqs_addr(1));
    let e2 = endpoint(cluster.sqs_addr(2));
    let root = repo_root();

    // One suite at a time: the machine may have two cores, and a starved cluster fails its
    // heartbeats. Each suite uses its own queues and deletes them as it goes.
    let mut runs = Vec::new();
    let mut python_json = suite_command(&clients.python_current, &e1, &e2);
    python_json
        .arg(root.join("tests/clients/python/sqs_suite.py"))
        .env("FERRY_SUITE_EXPECT_PROTOCOL", "json");
    runs.push(run_suite("python-json (boto3 current)", python_json, |_| {}).await);
    let mut python_query = suite_command(&clients.python_legacy, &e1, &e2);
    python_query
        .arg(root.join("tests/clients/python/sqs_suite.py"))
        .env("FERRY_SUITE_EXPECT_PROTOCOL", "query");
    runs.push(run_suite("python-query (boto3 1.34.80)", python_query, |_| {}).await);
    let mut cli = suite_command(Path::new("bash"), &e1, &e2);
    cli.arg(root.join("tests/clients/cli/sqs_cli.sh"))
        .env("FERRY_AWS_CLI", &clients.aws_cli)
        .env("FERRY_SUITE_PYTHON", &clients.python_current);
    runs.push(run_suite("cli-json (AWS CLI v1)", cli, |_| {}).await);
    let mut node = suite_command(Path::new("node"), &e1, &e2);
    node.arg("sqs_suite.mjs").current_dir(&clients.node_dir);
    runs.push(run_suite("node-json (@aws-sdk/client-sqs)", node, |_| {}).await);
    // In a task, so that a failed assertion is reported with the other suites.
    let rust_start = Instant::now();
    runs.push(
        match tokio::time::timeout(
            SUITE_TIMEOUT,
            tokio::spawn(rust_sdk_suite(e1.clone(), e2.clone())),
        )
        .await
        {
            Ok(Ok(run)) => run,
            Ok(Err(e)) => {
                let message = e
                    .try_into_panic()
                    .ok()
                    .and_then(|p| {
                        p.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    })
                    .unwrap_or_else(|| "cancelled".to_string());
                SuiteRun {
                    name: RUST_SDK_SUITE.to_string(),
                    ok: false,
                    took: rust_start.elapsed(),
                    output: format!("panicked: {message}\n"),
                }
            }
            Err(_) => SuiteRun {
                name: RUST_SDK_SUITE.to_string(),
                ok: false,
                took: rust_start.elapsed(),
                output: format!("did not finish within {SUITE_TIMEOUT:?}\n"),
            },
        },
    );

    // The current boto3 suite again, SIGKILLing node 3 when it is half-way through its
    // acknowledged sends; every later scenario runs on the two nodes left.
    let kill_dir = tempfile::tempdir().expect("temp dir");
    let kill_file = kill_dir.path().join("node-3-killed");
    let mut killed_at = None;
    let mut under_kill = suite_command(&clients.python_current, &e1, &e2);
    under_kill
        .arg(root.join("tests/clients/python/sqs_suite.py"))
        .env("FERRY_SUITE_EXPECT_PROTOCOL", "json")
        .env("FERRY_SUITE_KILL_FILE", &kill_file);
    let start = Instant::now();
    let mut under_kill = run_suite(
        "python-json with node 3 SIGKILLed mid-suite",
        under_kill,
        |line| {
            if line == KILL_MARKER && killed_at.is_none() {
                cluster.kill(3);
                std::fs::write(&kill_file, b"").expect("write the kill file");
                killed_at = Some(start.elapsed());
            }
        },
    )
    .await;
    match killed_at {
        Some(at) => under_kill.output.push_str(&format!(
            "[harness] node 3 SIGKILLed {at:.1?} into the suite\n"
        )),
        None => {
            under_kill.ok = false;
            under_kill
                .output
                .push_str("[harness] the suite never asked for the kill; node 3 was not killed\n");
        }
    }
    runs.push(under_kill);

    let mut summary = String::from("SQS client suites:\n");
    for run in &runs {
        summary.push_str(&format!(
            "  {:<48} {:<4} {:>6.1}s\n",
            run.name,
            if run.ok { "ok" } else { "FAIL" },
            run.took.as_secs_f64()
        ));
    }
    // Every suite's output (shown by the test runner on failure, or with --nocapture).
    for run in &runs {
        let verdict = if run.ok { "passed" } else { "FAILED" };
        eprintln!("===== {} ({verdict}) =====\n{}", run.name, run.output);
    }
    eprintln!("{summary}");
    let failed: Vec<&SuiteRun> = runs.iter().filter(|r| !r.ok).collect();
    assert!(
        failed.is_empty(),
        "{} of {} SQS client suites failed: {}\n{summary}",
        failed.len(),
        runs.len(),
        failed
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

// ------------------------------------------------------------------------------------------------
// The Rust SDK (aws-sdk-sqs): a subset of the scenarios, in-process.

async fn sdk_client(endpoint: &str) -> aws_sdk_sqs::Client {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "AKIDFERRYTEST",
            "ferry-test-secret",
            None,
            None,
            "ferry-tests",
        ))
        .endpoint_url(endpoint)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(SDK_ATTEMPT_TIMEOUT)
                .operation_timeout(SDK_OPERATION_TIMEOUT)
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(5))
        .load()
        .await;
    aws_sdk_sqs::Client::new(&config)
}

fn md5_hex(bytes: &[u8]) -> String {
    format!("{:x}", Md5::digest(bytes))
}

/// MD5OfMessageAttributes as the SDKs compute it (SQS-REFERENCE.md §1.5).
fn md5_of_attributes(attributes: &HashMap<String, MessageAttributeValue>) -> String {
    let mut names: Vec<&String> = attributes.keys().collect();
    names.sort();
    let mut buf = Vec::new();
    let put = |buf: &mut Vec<u8>, bytes: &[u8]| {
        let len = u32::try_from(bytes.len()).expect("an attribute under 4 GiB");
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(bytes);
    };
    for name in names {
        let value = &attributes[name];
        put(&mut buf, name.as_bytes());
        put(&mut buf, value.data_type().as_bytes());
        match (value.string_value(), value.binary_value()) {
            (Some(s), _) => {
                buf.push(1);
                put(&mut buf, s.as_bytes());
            }
            (None, Some(b)) => {
                buf.push(2);
                put(&mut buf, b.as_ref());
            }
            (None, None) => panic!("attribute {name} has no value"),
        }
    }
    md5_hex(&buf)
}

fn attribute(data_type: &str, value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type(data_type)
        .string_value(value)
        .build()
        .expect("a valid attribute")
}

fn binary_attribute(data_type: &str, value: &[u8]) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type(data_type)
        .binary_value(Blob::new(value))
        .build()
        .expect("a valid attribute")
}

fn assert_same_attributes(
    actual: Option<&HashMap<String, MessageAttributeValue>>,
    expected: &HashMap<String, MessageAttributeValue>,
    what: &str,
) {
    let actual = actual.unwrap_or_else(|| panic!("{what}: no message attributes"));
    let mut got: Vec<&String> = actual.keys().collect();
    let mut want: Vec<&String> = expected.keys().collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "{what}: attribute names");
    for (name, value) in expected {
        let a = &actual[name];
        assert_eq!(a.data_type(), value.data_type(), "{what}: {name} data type");
        assert_eq!(
            a.string_value(),
            value.string_value(),
            "{what}: {name} string"
        );
        assert_eq!(
            a.binary_value().map(|b| b.as_ref().to_vec()),
            value.binary_value().map(|b| b.as_ref().to_vec()),
            "{what}: {name} binary"
        );
    }
}

async fn rust_sdk_suite(endpoint_1: String, endpoint_2: String) -> SuiteRun {
    let start = Instant::now();
    let c1 = sdk_client(&endpoint_1).await;
    let c2 = sdk_client(&endpoint_2).await;
    let tag = format!("{:08x}", rand::random::<u32>());
    let name = format!("rs-{tag}-main");

    // Create, get the URL, read the attributes.
    let url = c1
        .create_queue()
        .queue_name(&name)
        .attributes(QueueAttributeName::VisibilityTimeout, "45")
        .send()
        .await
        .expect("CreateQueue")
        .queue_url
        .expect("a QueueUrl");
    assert!(
        url.ends_with(&format!("/000000000000/{name}")),
        "queue URL form: {url}"
    );
    let again = c2
        .get_queue_url()
        .queue_name(&name)
        .send()
        .await
        .expect("GetQueueUrl on node 2");
    assert_eq!(
        again.queue_url().map(|u| u.rsplit('/').next()),
        Some(Some(name.as_str())),
        "GetQueueUrl on node 2"
    );
    let attributes = c1
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect("GetQueueAttributes")
        .attributes
        .unwrap_or_default();
    assert_eq!(
        attributes
            .get(&QueueAttributeName::VisibilityTimeout)
            .map(String::as_str),
        Some("45")
    );
    assert_eq!(
        attributes
            .get(&QueueAttributeName::QueueArn)
            .map(String::as_str),
        Some(format!("arn:aws:sqs:us-east-1:000000000000:{name}").as_str())
    );

    // Send with every attribute type (through node 2), and a batch of 10.
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let rich: HashMap<String, MessageAttributeValue> = [
        ("str", attribute("String", "hello wörld ✓ 😀 <&>")),
        ("num", attribute("Number", "-12345.678e3")),
        ("bin", binary_attribute("Binary", &all_bytes)),
        (
            "meta.float",
            attribute("Number.float", "4563442423554324324264524243.32543234"),
        ),
        ("meta.custom", attribute("String.custom", "custom label")),
        (
            "meta.gif",
            binary_attribute("Binary.gif", b"GIF89a\x00\xff"),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let body = "rust body\r\n<xml> & ünïcödé 😀";
    let sent = c2
        .send_message()
        .queue_url(&url)
        .message_body(body)
        .set_message_attributes(Some(rich.clone()))
        .send()
        .await
        .expect("SendMessage");
    assert_eq!(
        sent.md5_of_message_body(),
        Some(md5_hex(body.as_bytes()).as_str())
    );
    assert_eq!(
        sent.md5_of_message_attributes(),
        Some(md5_of_attributes(&rich).as_str())
    );
    let entries: Vec<SendMessageBatchRequestEntry> = (0..10)
        .map(|i| {
            SendMessageBatchRequestEntry::builder()
                .id(format!("e_{i}"))
                .message_body(format!("batch {i}"))
                .message_attributes("i", attribute("Number", &i.to_string()))
                .build()
                .expect("a valid entry")
        })
        .collect();
    let batch = c1
        .send_message_batch()
        .queue_url(&url)
        .set_entries(Some(entries))
        .send()
        .await
        .expect("SendMessageBatch");
    assert!(batch.failed().is_empty(), "failed: {:?}", batch.failed());
    assert_eq!(batch.successful().len(), 10);
    for entry in batch.successful() {
        let i: u32 = entry.id()[2..].parse().expect("our id");
        assert_eq!(
            entry.md5_of_message_body(),
            md5_hex(format!("batch {i}").as_bytes())
        );
    }

    // Receive all 11 with every attribute, check them, delete them in batches.
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.len() < 11 {
        assert!(
            Instant::now() < deadline,
            "received {} of 11 messages within 20 s",
            received.len()
        );
        let out = c1
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(60)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("ReceiveMessage");
        received.extend(out.messages.unwrap_or_default());
    }
    assert_eq!(received.len(), 11, "exactly 11 messages");
    let rich_message = received
        .iter()
        .find(|m| m.body() == Some(body))
        .expect("the message with every attribute type");
    assert_eq!(rich_message.message_id(), sent.message_id());
    assert_eq!(
        rich_message.md5_of_body(),
        Some(md5_hex(body.as_bytes()).as_str())
    );
    assert_same_attributes(
        rich_message.message_attributes(),
        &rich,
        "received attributes",
    );
    assert_eq!(
        rich_message.md5_of_message_attributes(),
        Some(md5_of_attributes(&rich).as_str())
    );
    let system = rich_message.attributes().expect("system attributes");
    for key in [
        MessageSystemAttributeName::ApproximateReceiveCount,
        MessageSystemAttributeName::SentTimestamp,
        MessageSystemAttributeName::SenderId,
        MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
    ] {
        assert!(
            system.contains_key(&key),
            "All includes {key:?}: {system:?}"
        );
    }
    assert_eq!(
        system
            .get(&MessageSystemAttributeName::ApproximateReceiveCount)
            .map(String::as_str),
        Some("1")
    );
    for chunk in received.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(format!("d{i}"))
                    .receipt_handle(m.receipt_handle().expect("a receipt handle"))
                    .build()
                    .expect("a valid entry")
            })
            .collect();
        let deleted = c2
            .delete_message_batch()
            .queue_url(&url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("DeleteMessageBatch on node 2");
        assert!(
            deleted.failed().is_empty(),
            "failed: {:?}",
            deleted.failed()
        );
        assert_eq!(deleted.successful().len(), chunk.len());
    }
    let left = c1
        .receive_message()
        .queue_url(&url)
        .wait_time_seconds(0)
        .send()
        .await
        .expect("ReceiveMessage");
    assert!(
        left.messages().is_empty(),
        "nothing left: {:?}",
        left.messages()
    );

    // A missing queue: the code of the legacy Query protocol, and the modeled error.
    let missing = c1
        .get_queue_url()
        .queue_name(format!("rs-{tag}-missing"))
        .send()
        .await
        .expect_err("GetQueueUrl of a missing queue");
    assert_eq!(
        missing.code(),
        Some("AWS.SimpleQueueService.NonExistentQueue"),
        "{missing:?}"
    );
    let missing = missing.into_service_error();
    assert!(missing.is_queue_does_not_exist(), "{missing:?}");
    let missing_url = format!(
        "{}/rs-{tag}-missing",
        url.rsplit_once('/').expect("a URL").0
    );
    let send_missing = c2
        .send_message()
        .queue_url(&missing_url)
        .message_body("x")
        .send()
        .await
        .expect_err("SendMessage to a missing queue");
    assert_eq!(
        send_missing.code(),
        Some("AWS.SimpleQueueService.NonExistentQueue"),
        "{send_missing:?}"
    );
    assert!(send_missing.into_service_error().is_queue_does_not_exist());
    let too_many = c1
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(11)
        .send()
        .await
        .expect_err("ReceiveMessage of 11");
    assert_eq!(
        too_many.code(),
        Some("InvalidParameterValue"),
        "{too_many:?}"
    );

    c1.delete_queue()
        .queue_url(&url)
        .send()
        .await
        .expect("DeleteQueue");
    SuiteRun {
        name: RUST_SDK_SUITE.to_string(),
        ok: true,
        took: start.elapsed(),
        output: String::new(),
    }
}
