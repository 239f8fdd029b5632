//! Ferry watched by a real Prometheus (Debian's package, installed by
//! `scripts/install-test-clients`): it scrapes every node of a 3-node cluster with the rules of
//! `deploy/prometheus`, whose recording rules must add the nodes' parts up to each queue's figures
//! and whose every rule must evaluate without error, and sees every Raft group led by exactly one
//! node; promtool must accept the rules and pass their unit tests. Without Prometheus installed
//! this test fails; it does not skip.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{
    http_get, percent_encode, receive_one, receive_request, wait_until, ClusterOptions, TestCluster,
};
use ferry_proto::v1::{CreateQueueRequest, SendMessageRequest};
use serde_json::Value;

const INSTALL_HINT: &str = "run scripts/install-test-clients (it installs Debian's prometheus)";
/// Prometheus starts, scrapes every second and evaluates the rules every second.
const SCRAPED_TIMEOUT: Duration = Duration::from_secs(30);
const QUEUE: &str = "watched";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root")
}

#[test]
fn promtool_accepts_the_rules_and_passes_their_unit_tests() {
    let rules = repo_root().join("deploy/prometheus");
    for args in [
        ["check", "rules", "ferry-rules.yml"],
        ["test", "rules", "ferry-rules.test.yml"],
    ] {
        let output = Command::new("promtool")
            .args(args)
            .current_dir(&rules)
            .output()
            .unwrap_or_else(|e| panic!("promtool: {e} ({INSTALL_HINT})"));
        assert!(
            output.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_adds_the_nodes_up_into_per_queue_series() {
    let cluster = TestCluster::start(3, ClusterOptions::default()).await;
    let prometheus = Prometheus::start(&cluster);

    let mut c = cluster.client(1);
    c.create_queue(CreateQueueRequest {
        queue_name: QUEUE.into(),
        ..Default::default()
    })
    .await
    .expect("create queue");
    for (node, body) in [(1, "a"), (2, "b"), (3, "c"), (1, "d"), (2, "e"), (3, "f")] {
        cluster
            .client(node)
            .send_message(SendMessageRequest {
                queue_name: QUEUE.into(),
                body: body.into(),
                ..Default::default()
            })
            .await
            .expect("send");
    }
    let mut request = receive_request(QUEUE, 1, 5);
    request.visibility_timeout = Some(600);
    for node in [1, 2] {
        receive_one(&mut cluster.client(node), request.clone()).await;
    }

    let groups = f64::from(1 + cluster.options().default_partitions);
    let expected = [
        (
            r#"ferry:queue_messages:sum{queue="watched",state="visible"}"#,
            4.0,
        ),
        (
            r#"ferry:queue_messages:sum{queue="watched",state="not_visible"}"#,
            2.0,
        ),
        (
            r#"sum(ferry_queue_messages_sent_total{queue="watched"})"#,
            6.0,
        ),
        (
            r#"sum(ferry_queue_messages_received_total{queue="watched"})"#,
            2.0,
        ),
        ("sum(ferry_node_ready)", 3.0),
        // The catalog and the queue's partitions, each led by one node.
        ("sum(ferry_raft_groups_led)", groups),
        ("sum(ferry_raft_groups_without_leader)", 0.0),
        (
            r#"count(ferry_storage_wal_sync_seconds{quantile="0.99"})"#,
            3.0,
        ),
        (r#"count(up{job="ferry"} == 1)"#, 3.0),
    ];
    // Printed whenever it changes, so that a timeout shows what Prometheus saw.
    let mut seen = Vec::new();
    wait_until(SCRAPED_TIMEOUT, "Prometheus sees the queue", async || {
        let mut values = Vec::new();
        for (query, _) in &expected {
            values.push(prometheus.scalar(query).await);
        }
        if values != seen {
            eprintln!("Prometheus: {values:?}");
            seen = values;
        }
        expected
            .iter()
            .zip(&seen)
            .all(|((_, want), got)| *got == Some(*want))
    })
    .await;
    let age = prometheus
        .scalar(r#"ferry:queue_oldest_message_age_seconds:max{queue="watched"}"#)
        .await
        .expect("the oldest message's age is recorded");
    assert!((0.0..600.0).contains(&age), "oldest message {age} s old");

    // Every rule has been evaluated, none with an error (a wrong metric name would not show here,
    // but a wrong expression or a vector match that fails on the real labels would).
    let shipped_rules =
        std::fs::read_to_string(repo_root().join("deploy/prometheus/ferry-rules.yml"))
            .expect("the rules file")
            .lines()
            .filter(|line| {
                let line = line.trim_start();
                line.starts_with("- record:") || line.starts_with("- alert:")
            })
            .count();
    wait_until(SCRAPED_TIMEOUT, "every rule evaluates", async || {
        let rules = prometheus.api("/api/v1/rules").await;
        let rules: Vec<&Value> = rules
            .as_ref()
            .and_then(|r| r["data"]["groups"].as_array())
            .into_iter()
            .flatten()
            .flat_map(|group| group["rules"].as_array().into_iter().flatten())
            .collect();
        for rule in &rules {
            assert!(
                rule["lastError"].as_str().unwrap_or("").is_empty(),
                "rule {} failed: {}",
                rule["name"],
                rule["lastError"]
            );
        }
        rules.len() == shipped_rules && rules.iter().all(|rule| rule["health"] == "ok")
    })
    .await;
}

/// A Prometheus process scraping the cluster's admin endpoints with the shipped rules, stopped on
/// drop.
struct Prometheus {
    process: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(cluster: &TestCluster) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let rules = repo_root().join("deploy/prometheus/ferry-rules.yml");
        let targets = cluster
            .node_ids()
            .into_iter()
            .map(|id| format!("'{}'", cluster.admin_addr(id)))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: ['{}']\n\
             scrape_configs:\n  - job_name: ferry\n    static_configs:\n      - targets: [{targets}]\n",
            rules.display()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let process = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("prometheus: {e} ({INSTALL_HINT})"));
        Prometheus {
            process,
            addr,
            _dir: dir,
        }
    }

    /// A GET of Prometheus's HTTP API, decoded; `None` until it answers.
    async fn api(&self, path: &str) -> Option<Value> {
        let (status, body) = http_get(self.addr, path).await?;
        (status == 200).then(|| serde_json::from_str(&body).expect("Prometheus answers JSON"))
    }

    /// The value of a query that yields one sample; `None` if it yields none (or several).
    async fn scalar(&self, query: &str) -> Option<f64> {
        let answer = self
            .api(&format!("/api/v1/query?query={}", percent_encode(query)))
            .await?;
        let [sample] = answer["data"]["result"].as_array()?.as_slice() else {
            return None;
        };
        sample["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
