//! Black-box test harness: runs real `ferry serve` processes on loopback and talks to them the way
//! a user would, through the public gRPC API and the admin HTTP endpoints.
//!
//! A [`TestCluster`] owns one temporary directory holding each node's data directory and log file
//! (`node-<id>.log`, appended to across restarts). Nodes are numbered from 1. When a test panics,
//! the cluster prints the tail of every node's log and keeps the directory for inspection.
//! Clusters in one test binary never overlap in time (a process-wide lock), because this runs on
//! small machines where two clusters would make each other's timing flaky.
//!
//! Waiting is always on a condition ([`wait_until`], [`wait_for`]), never on a bare sleep, and every
//! RPC has a timeout (set on the channel).

#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_proto::v1::ferry_client::FerryClient;
use ferry_proto::v1::{
    Message, ReceiveMessageRequest, SendMessageBatchEntry, SendMessageBatchRequest,
    SendMessageRequest,
};
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

/// A node opens RocksDB, starts its Raft groups and waits for a catalog leader; generous because
/// the test machine may have two cores shared with a build.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// A SIGTERM'd node drains and exits; longer than any graceful shutdown should take.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Loopback connects are instant unless the node is down.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longer than the server's internal retry (~10 s) and the longest long poll (20 s).
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// Admin endpoints answer from local state.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// Between two checks of a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Receiving a message that was just sent.
pub const RECEIVE_ONE_TIMEOUT: Duration = Duration::from_secs(15);
/// Lines of each node's log printed when a test fails.
const LOG_TAIL_LINES: usize = 120;
/// The secret every node of a test cluster shares (see `cluster_secret` in deploy/ferry.toml).
pub const CLUSTER_SECRET: &str = "ferry-test-cluster-secret";
/// Room for a 1 MiB message plus framing in responses.
const MAX_RESPONSE_BYTES: usize = 8 << 20;

/// Serializes clusters within one test binary.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// `--default-partitions`: partitions of a standard queue created with `partitions: 0`.
    pub default_partitions: u32,
    /// `--replication-factor`.
    pub replication_factor: u32,
    /// `--snapshot-entries`, if not the node's default.
    pub snapshot_entries: Option<u64>,
    /// `--in-flight-limit`, if not the node's default.
    pub in_flight_limit: Option<u64>,
    /// `--metrics-idle-timeout-s`, if not the node's default.
    pub metrics_idle_timeout_s: Option<u64>,
    /// `--home-partition-sends`, if not the node's default.
    pub home_partition_sends: Option<usize>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            default_partitions: 4,
            replication_factor: 3,
            snapshot_entries: None,
            in_flight_limit: None,
            metrics_idle_timeout_s: None,
            home_partition_sends: None,
        }
    }
}

/// One entry of `GET /debug/groups`: a Raft group hosted on the node asked.
#[derive(Clone, Debug, Deserialize)]
pub struct GroupInfo {
    pub group: u64,
    /// `None` for the catalog group 0.
    pub queue: Option<String>,
    pub leader: Option<u64>,
    pub is_leader: bool,
    pub last_applied: Option<u64>,
    /// The last log entry the durable state holds.
    pub snapshot: Option<u64>,
    /// The last log entry removed.
    pub log_purged: Option<u64>,
    pub quiet: bool,
}

struct Node {
    id: u64,
    grpc: SocketAddr,
    sqs: SocketAddr,
    admin: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
    /// `FERRY_CLUSTER_SECRET` of its next start.
    cluster_secret: String,
}

pub struct TestCluster {
    dir: Option<tempfile::TempDir>,
    nodes: Vec<Node>,
    options: ClusterOptions,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl TestCluster {
    /// Starts `n` nodes and waits until every one is ready.
    pub async fn start(n: usize, options: ClusterOptions) -> TestCluster {
        let serial = SERIAL.lock().await;
        let dir = tempfile::Builder::new()
            .prefix("ferry-test-")
            .tempdir()
            .expect("create temp dir");
        // Hold every listener until all ports are chosen so no two nodes get the same one.
        let listeners: Vec<TcpListener> = (0..3 * n)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
            .collect();
        let ports: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr().expect("local addr"))
            .collect();
        drop(listeners);
        let nodes = (0..n)
            .map(|i| {
                let id = i as u64 + 1;
                Node {
                    id,
                    grpc: ports[3 * i],
                    sqs: ports[3 * i + 1],
                    admin: ports[3 * i + 2],
                    data_dir: dir.path().join(format!("node-{id}")),
                    log: dir.path().join(format!("node-{id}.log")),
                    child: None,
                    starts: 0,
                    cluster_secret: CLUSTER_SECRET.to_owned(),
                }
            })
            .collect();
        let mut cluster = TestCluster {
            dir: Some(dir),
            nodes,
            options,
            _serial: serial,
        };
        for id in cluster.node_ids() {
            cluster.spawn(id);
        }
        for id in cluster.node_ids() {
            cluster.wait_ready(id).await;
        }
        cluster
    }

    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    pub fn node_ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Nodes whose process this harness believes is running.
    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    fn node(&self, id: u64) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn grpc_addr(&self, id: u64) -> SocketAddr {
        self.node(id).grpc
    }

    /// Node `id`'s admin HTTP endpoint (health, metrics, debug).
    pub fn admin_addr(&self, id: u64) -> SocketAddr {
        self.node(id).admin
    }

    /// Node `id`'s SQS-compatible HTTP endpoint.
    pub fn sqs_addr(&self, id: u64) -> SocketAddr {
        self.node(id).sqs
    }

    /// A client of node `id`. The channel connects lazily, so this works for a node that is down
    /// (its calls fail) and reconnects after a restart.
    pub fn client(&self, id: u64) -> FerryClient<Channel> {
        let endpoint = Endpoint::from_shared(format!("http://{}", self.node(id).grpc))
            .expect("valid endpoint")
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(RPC_TIMEOUT);
        FerryClient::new(endpoint.connect_lazy()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// One client per node, in node order.
    pub fn clients(&self) -> Vec<FerryClient<Channel>> {
        self.node_ids()
            .into_iter()
            .map(|id| self.client(id))
            .collect()
    }

    /// Starts node `id`'s process without waiting for it to be ready.
    pub fn spawn(&mut self, id: u64) {
        let peers: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.grpc))
            .collect();
        let options = self.options.clone();
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "node {id} is already running");
        node.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open node log");
        writeln!(log, "=== harness: start #{} of node {id} ===", node.starts).expect("write log");
        let stderr = log.try_clone().expect("clone log handle");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.arg("serve")
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--grpc-addr")
            .arg(node.grpc.to_string())
            .arg("--sqs-addr")
            .arg(node.sqs.to_string())
            .arg("--admin-addr")
            .arg(node.admin.to_string())
            .arg("--default-partitions")
            .arg(options.default_partitions.to_string())
            .arg("--replication-factor")
            .arg(options.replication_factor.to_string());
        if let Some(entries) = options.snapshot_entries {
            cmd.arg("--snapshot-entries").arg(entries.to_string());
        }
        if let Some(limit) = options.in_flight_limit {
            cmd.arg("--in-flight-limit").arg(limit.to_string());
        }
        if let Some(seconds) = options.metrics_idle_timeout_s {
            cmd.arg("--metrics-idle-timeout-s").arg(seconds.to_string());
        }
        if let Some(sends) = options.home_partition_sends {
            cmd.arg("--home-partition-sends").arg(sends.to_string());
        }
        for peer in &peers {
            cmd.arg("--peer").arg(peer);
        }
        // The node's own default log filter unless the caller sets RUST_LOG; plain text in files.
        cmd.env("NO_COLOR", "1")
            .env("FERRY_CLUSTER_SECRET", &node.cluster_secret)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr));
        node.child = Some(cmd.spawn().expect("spawn the ferry binary"));
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: u64) -> &Path {
        &self.node(id).data_dir
    }

    /// The files in node `id`'s snapshot directory.
    pub fn snapshot_files(&self, id: u64) -> Vec<PathBuf> {
        match std::fs::read_dir(self.node(id).data_dir.join("snapshots")) {
            Ok(entries) => entries.flatten().map(|entry| entry.path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Everything node `id` has logged so far.
    pub fn log_text(&self, id: u64) -> String {
        std::fs::read_to_string(&self.node(id).log).unwrap_or_default()
    }

    /// Waits until node `id` answers 200 on `/readyz`; fails early if its process exits.
    pub async fn wait_ready(&mut self, id: u64) {
        let admin = self.node(id).admin;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self
                .node_mut(id)
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("poll child"))
            {
                self.node_mut(id).child = None;
                panic!("node {id} exited with {status} before it was ready");
            }
            if let Some((200, _)) = http_get(admin, "/readyz").await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} not ready after {STARTUP_TIMEOUT:?}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// `GET /readyz` on node `id` is 200.
    pub async fn is_ready(&self, id: u64) -> bool {
        matches!(
            http_get(self.node(id).admin, "/readyz").await,
            Some((200, _))
        )
    }

    /// SIGKILL: the node gets no chance to flush or say goodbye.
    pub fn kill(&mut self, id: u64) {
        let mut child = self
            .node_mut(id)
            .child
            .take()
            .unwrap_or_else(|| panic!("kill: node {id} is not running"));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap killed node");
    }

    /// SIGTERM, then waits for a clean exit (status 0).
    pub async fn terminate(&mut self, id: u64) {
        let mut child = self
            .node_mut(id)
            .child
            .take()
            .unwrap_or_else(|| panic!("terminate: node {id} is not running"));
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("poll child") {
                assert!(
                    status.success(),
                    "node {id} exited with {status} after SIGTERM"
                );
                return;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {id} did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The cluster secret node `id` gets when it next starts.
    pub fn set_cluster_secret(&mut self, id: u64, secret: &str) {
        self.node_mut(id).cluster_secret = secret.to_owned();
    }

    /// Starts a stopped node again with the same flags and data directory, and waits until it is
    /// ready.
    pub async fn restart(&mut self, id: u64) {
        self.spawn(id);
        self.wait_ready(id).await;
    }

    /// `/debug/groups` of node `id`, or `None` if it does not answer.
    pub async fn try_groups(&self, id: u64) -> Option<Vec<GroupInfo>> {
        match http_get(self.node(id).admin, "/debug/groups").await? {
            (200, body) => Some(
                serde_json::from_str(&body)
                    .unwrap_or_else(|e| panic!("node {id}: bad /debug/groups {body:?}: {e}")),
            ),
            _ => None,
        }
    }

    pub async fn groups(&self, id: u64) -> Vec<GroupInfo> {
        self.try_groups(id)
            .await
            .unwrap_or_else(|| panic!("node {id} did not answer /debug/groups"))
    }

    /// Whether every group on every running node is quiet (ticks no more).
    async fn all_quiet(&self) -> bool {
        for id in self.running() {
            let groups = self.try_groups(id).await.unwrap_or_default();
            if groups.is_empty() || groups.iter().any(|g| !g.quiet) {
                return false;
            }
        }
        true
    }

    /// Waits until every group on every running node is quiet, then asserts that each replica
    /// applied exactly as far as its group's leader: a quiet replica left behind would stay behind
    /// until the group's next write, and receives through its node, which look at the local replica
    /// first, would not see what it lacks.
    pub async fn wait_until_quiet_and_level(&self, timeout: Duration) {
        wait_until(timeout, "every group on every node is quiet", async || {
            self.all_quiet().await
        })
        .await;
        self.assert_replicas_level().await;
    }

    /// Panics unless every replica on a running node has applied exactly as far as its group's
    /// leader (meant for a quiet cluster, where nothing moves).
    async fn assert_replicas_level(&self) {
        let mut replicas = Vec::new();
        for id in self.running() {
            replicas.extend(self.groups(id).await.into_iter().map(|g| (id, g)));
        }
        let leaders: HashMap<u64, Option<u64>> = replicas
            .iter()
            .filter(|(_, g)| g.is_leader)
            .map(|(_, g)| (g.group, g.last_applied))
            .collect();
        for (id, replica) in &replicas {
            let at_leader = leaders
                .get(&replica.group)
                .unwrap_or_else(|| panic!("group {} has no leader: {replicas:?}", replica.group));
            assert_eq!(
                replica.last_applied, *at_leader,
                "node {id}'s replica of group {} is not level with its leader: {replicas:?}",
                replica.group
            );
        }
    }

    /// The node that leads `group`, if exactly one running node says it does.
    pub async fn leader_of(&self, group: u64) -> Option<u64> {
        let mut leaders = Vec::new();
        for id in self.running() {
            let groups = self.try_groups(id).await.unwrap_or_default();
            if groups.iter().any(|g| g.group == group && g.is_leader) {
                leaders.push(id);
            }
        }
        match leaders[..] {
            [leader] => Some(leader),
            _ => None,
        }
    }

    /// Waits until some node leads `group` and returns it.
    pub async fn wait_for_leader(&self, group: u64, timeout: Duration) -> u64 {
        wait_for(
            timeout,
            &format!("group {group} has a leader"),
            async || self.leader_of(group).await,
        )
        .await
    }

    /// The Raft groups of `queue` (its partitions) seen by any running node.
    pub async fn queue_groups(&self, queue: &str) -> Vec<u64> {
        let mut set = BTreeSet::new();
        for id in self.running() {
            for g in self.try_groups(id).await.unwrap_or_default() {
                if g.queue.as_deref() == Some(queue) {
                    set.insert(g.group);
                }
            }
        }
        set.into_iter().collect()
    }

    /// Waits until running nodes list all `partitions` groups of `queue` and returns them: a
    /// created queue's groups start on each node after the catalog commit that answers CreateQueue.
    pub async fn wait_for_queue_groups(
        &self,
        queue: &str,
        partitions: usize,
        timeout: Duration,
    ) -> Vec<u64> {
        wait_for(
            timeout,
            &format!("{queue} lists its {partitions} partitions"),
            async || {
                let groups = self.queue_groups(queue).await;
                (groups.len() == partitions).then_some(groups)
            },
        )
        .await
    }

    fn print_logs(&self) {
        for node in &self.nodes {
            let text = std::fs::read_to_string(&node.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(LOG_TAIL_LINES);
            eprintln!(
                "----- node {} ({}), last {} of {} log lines -----",
                node.id,
                node.log.display(),
                lines.len() - from,
                lines.len()
            );
            for line in &lines[from..] {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            self.print_logs();
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "----- cluster directory kept: {} -----",
                    dir.keep().display()
                );
            }
        }
    }
}

/// Every node's `/metrics` text.
pub async fn scrape_all(cluster: &TestCluster) -> Vec<String> {
    let mut scrapes = Vec::new();
    for node in cluster.node_ids() {
        let (status, text) = http_get(cluster.admin_addr(node), "/metrics")
            .await
            .expect("metrics of a running node");
        assert_eq!(status, 200, "metrics of node {node}");
        scrapes.push(text);
    }
    scrapes
}

/// Waits until every node has heard from every other (`ferry_cluster_peers_heard`): until then a
/// node cannot tell that a peer decodes fair-queue groups, and stores sends without them.
pub async fn wait_until_peers_heard(cluster: &TestCluster) {
    let others = format!("ferry_cluster_peers_heard {}", cluster.node_ids().len() - 1);
    wait_until(
        STARTUP_TIMEOUT,
        "every node heard from the others",
        async || {
            scrape_all(cluster)
                .await
                .iter()
                .all(|text| text.lines().any(|line| line == others))
        },
    )
    .await;
}

/// The samples, over the scrapes, of metric `name` labelled with `queue` (and `state`).
pub fn queue_samples(scrapes: &[String], name: &str, queue: &str, state: Option<&str>) -> Vec<f64> {
    let queue_label = format!("queue=\"{queue}\"");
    let state_label = state.map(|state| format!("state=\"{state}\""));
    scrapes
        .iter()
        .flat_map(|text| text.lines())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, labels) = series.split_once('{')?;
            let labels: Vec<&str> = labels.strip_suffix('}')?.split(',').collect();
            let wanted = metric == name
                && labels.contains(&queue_label.as_str())
                && state_label
                    .as_deref()
                    .is_none_or(|state| labels.contains(&state));
            wanted.then(|| value.parse::<f64>().expect("a sample value"))
        })
        .collect()
}

/// `text` percent-encoded for a URL query or a form body: everything but unreserved characters.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// A plain HTTP/1.0 GET; `None` if the node does not answer in time.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let get = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    };
    tokio::time::timeout(HTTP_TIMEOUT, get).await.ok().flatten()
}

/// Polls `check` until it returns `Some`, panicking with `what` after `timeout`.
pub async fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls `check` until it is true, panicking with `what` after `timeout`.
pub async fn wait_until(timeout: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    wait_for(timeout, what, async || check().await.then_some(())).await
}

/// Runs `fut`, panicking if it takes longer than `timeout`.
pub async fn within<T>(timeout: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {timeout:?}"))
}

/// The stable Ferry error code of a failed call (`ferry-error-code` metadata).
pub fn error_code(status: &Status) -> Option<&str> {
    status
        .metadata()
        .get("ferry-error-code")
        .and_then(|v| v.to_str().ok())
}

/// Asserts that `result` failed with Ferry error code `code`.
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: &str, what: &str) {
    match result {
        Ok(value) => panic!("{what}: expected error {code}, got Ok({value:?})"),
        Err(status) => assert_eq!(
            error_code(&status),
            Some(code),
            "{what}: wrong error code; status: {status:?}"
        ),
    }
}

/// Every message a queue holds, visible, in flight or delayed, by its Approximate* counters.
pub async fn approximate_total(client: &mut FerryClient<Channel>, queue: &str) -> u64 {
    approximate_counts(client, queue).await.iter().sum()
}

/// A queue's messages visible, in flight and delayed, by its Approximate* counters.
pub async fn approximate_counts(client: &mut FerryClient<Channel>, queue: &str) -> [u64; 3] {
    let request = ferry_proto::v1::GetQueueAttributesRequest {
        queue_name: queue.to_string(),
        attribute_names: vec!["All".to_string()],
    };
    let attributes = client
        .get_queue_attributes(request)
        .await
        .expect("GetQueueAttributes")
        .into_inner()
        .attributes;
    [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    .map(|name| {
        attributes
            .get(name)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    })
}

pub fn receive_request(queue: &str, max: u32, wait_seconds: u32) -> ReceiveMessageRequest {
    ReceiveMessageRequest {
        queue_name: queue.to_string(),
        max_number_of_messages: max,
        wait_time_seconds: Some(wait_seconds),
        message_system_attribute_names: vec!["All".to_string()],
        ..Default::default()
    }
}

/// Receives exactly one message with `request` (which must ask for one), polling until it arrives.
pub async fn receive_one(
    client: &mut FerryClient<Channel>,
    request: ReceiveMessageRequest,
) -> Message {
    wait_for(RECEIVE_ONE_TIMEOUT, "a message is received", async || {
        let mut messages = client
            .receive_message(request.clone())
            .await
            .expect("ReceiveMessage")
            .into_inner()
            .messages;
        assert!(messages.len() <= 1, "one message expected: {messages:?}");
        messages.pop()
    })
    .await
}

/// Receives up to 10 messages with visibility timeout 60 s and deletes them.
pub async fn receive_and_delete(
    client: &mut FerryClient<Channel>,
    queue: &str,
    wait_seconds: u32,
) -> Result<Vec<Message>, Status> {
    let mut request = receive_request(queue, 10, wait_seconds);
    request.visibility_timeout = Some(60);
    let messages = client.receive_message(request).await?.into_inner().messages;
    if !messages.is_empty() {
        let entries = messages
            .iter()
            .enumerate()
            .map(|(i, m)| ferry_proto::v1::DeleteMessageBatchEntry {
                id: format!("d{i}"),
                receipt_handle: m.receipt_handle.clone(),
            })
            .collect();
        // A failed delete only means a redelivery after the visibility timeout; the caller
        // counts what it received, not what it deleted.
        let _ = client
            .delete_message_batch(ferry_proto::v1::DeleteMessageBatchRequest {
                queue_name: queue.to_string(),
                entries,
            })
            .await;
    }
    Ok(messages)
}

/// What happened to the bodies given to [`send_bodies`].
#[derive(Debug, Default)]
pub struct SendOutcome {
    /// Some attempt was acknowledged.
    pub acked: Vec<String>,
    /// Not acknowledged, and some attempt may have been written (timeout, broken connection,
    /// `OutcomeUnknown`, `Internal`).
    pub unknown: Vec<String>,
    /// Every attempt was refused with `Unavailable`: the server promises nothing was written.
    pub rejected: Vec<String>,
    /// Errors no healthy cluster should give (for example `QueueDoesNotExist`), as text.
    pub unexpected: Vec<String>,
}

/// How a failed attempt leaves a body.
enum Failure {
    NotWritten,
    MaybeWritten,
    Unexpected(String),
}

fn classify(code: Option<&str>, detail: &dyn std::fmt::Debug) -> Failure {
    match code {
        Some("Unavailable") => Failure::NotWritten,
        // No code: the call never got a Ferry answer (connection refused or reset, timeout).
        None | Some("OutcomeUnknown") | Some("Internal") => Failure::MaybeWritten,
        Some(other) => Failure::Unexpected(format!("{other}: {detail:?}")),
    }
}

/// Sends `bodies` to `queue` (one SendMessage for one body, else one SendMessageBatch of at most
/// 10), retrying what failed on the next node, up to `attempts` calls in all. Starts at
/// `clients[first]`.
pub async fn send_bodies(
    clients: &[FerryClient<Channel>],
    first: usize,
    queue: &str,
    bodies: Vec<String>,
    attempts: usize,
) -> SendOutcome {
    assert!((1..=10).contains(&bodies.len()), "1 to 10 bodies per call");
    let mut outcome = SendOutcome::default();
    let mut maybe_written = std::collections::HashSet::new();
    let mut pending = bodies;
    for attempt in 0..attempts {
        if attempt > 0 {
            // Give an election a moment; the server already retried internally for ~10 s.
            tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
        }
        let mut client = clients[(first + attempt) % clients.len()].clone();
        let mut failed: Vec<(String, Failure)> = Vec::new();
        if pending.len() == 1 {
            let body = pending[0].clone();
            let request = SendMessageRequest {
                queue_name: queue.to_string(),
                body: body.clone(),
                ..Default::default()
            };
            match client.send_message(request).await {
                Ok(_) => outcome.acked.push(body),
                Err(status) => failed.push((body, classify(error_code(&status), &status))),
            }
        } else {
            let entries = pending
                .iter()
                .enumerate()
                .map(|(i, body)| SendMessageBatchEntry {
                    id: format!("e{i}"),
                    body: body.clone(),
                    ..Default::default()
                })
                .collect();
            let request = SendMessageBatchRequest {
                queue_name: queue.to_string(),
                entries,
            };
            let body_of = |id: &str| -> String {
                let i: usize = id[1..].parse().expect("entry id we chose");
                pending[i].clone()
            };
            match client.send_message_batch(request).await {
                Ok(response) => {
                    let response = response.into_inner();
                    for entry in &response.successful {
                        outcome.acked.push(body_of(&entry.id));
                    }
                    for entry in &response.failed {
                        let failure = classify(Some(&entry.code), entry);
                        failed.push((body_of(&entry.id), failure));
                    }
                }
                Err(status) => {
                    for body in &pending {
                        failed.push((body.clone(), classify(error_code(&status), &status)));
                    }
                }
            }
        }
        pending = Vec::new();
        for (body, failure) in failed {
            match failure {
                Failure::NotWritten => {}
                Failure::MaybeWritten => {
                    maybe_written.insert(body.clone());
                }
                Failure::Unexpected(text) => {
                    outcome.unexpected.push(text);
                    // Treat it as possibly written: the test fails on `unexpected` anyway.
                    maybe_written.insert(body.clone());
                }
            }
            pending.push(body);
        }
        if pending.is_empty() {
            break;
        }
    }
    for body in pending {
        if maybe_written.contains(&body) {
            outcome.unknown.push(body);
        } else {
            outcome.rejected.push(body);
        }
    }
    outcome
}

/// Asserts what acknowledgements promise, after a drain: every body in `acked` was `received`, and
/// every body received was acknowledged or had an unknown outcome (none that every attempt saw
/// refused with `Unavailable`, none never sent).
#[track_caller]
pub fn assert_no_loss_or_phantom(
    attempted: &HashSet<String>,
    acked: &HashSet<String>,
    unknown: &HashSet<String>,
    received: &HashMap<String, usize>,
) {
    let mut lost: Vec<&String> = acked
        .iter()
        .filter(|b| !received.contains_key(*b))
        .collect();
    lost.sort();
    assert!(
        lost.is_empty(),
        "{} acknowledged bodies were never received, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    let mut phantoms: Vec<&String> = received
        .keys()
        .filter(|b| !acked.contains(*b) && !unknown.contains(*b))
        .collect();
    phantoms.sort();
    let never_sent: Vec<&&String> = phantoms
        .iter()
        .filter(|b| !attempted.contains(**b))
        .take(20)
        .collect();
    assert!(
        phantoms.is_empty(),
        "{} received bodies were refused with Unavailable or never sent, e.g. {:?} (never sent: \
         {never_sent:?})",
        phantoms.len(),
        &phantoms[..phantoms.len().min(20)]
    );
}
