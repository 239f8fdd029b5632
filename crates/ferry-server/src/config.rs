//! Node configuration: a TOML file, overridden by `FERRY_*` environment variables, overridden by
//! flags. [`ServeArgs`] holds what was given; [`ServeArgs::resolve`] validates it into a [`NodeConfig`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use ferry_broker::BrokerConfig;
use ferry_raft::{ClusterKey, DEFAULT_SNAPSHOT_ENTRIES};
use ferry_sqs::{Credential, Credentials, SqsConfig};
use ferry_types::NodeId;
use serde::Deserialize;

/// Flags of `ferry serve`; each may also come from its `FERRY_*` variable or the config file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file (see deploy/ferry.toml for every key).
    #[arg(long, env = "FERRY_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's id: stable across restarts, unique in the cluster.
    #[arg(long, env = "FERRY_NODE_ID")]
    pub node_id: Option<NodeId>,
    /// Where this node keeps its RocksDB and snapshots.
    #[arg(long, env = "FERRY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Public and internal gRPC address.
    #[arg(long, env = "FERRY_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// SQS-compatible HTTP address.
    #[arg(long, env = "FERRY_SQS_ADDR")]
    pub sqs_addr: Option<SocketAddr>,
    /// Health, readiness and metrics HTTP address.
    #[arg(long, env = "FERRY_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// An initial cluster member as ID=HOST:PORT (its gRPC address); repeat for every member,
    /// this node included.
    #[arg(long = "peer", env = "FERRY_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Partitions of a standard queue created without an explicit count.
    #[arg(long, env = "FERRY_DEFAULT_PARTITIONS")]
    pub default_partitions: Option<u32>,
    /// Replicas of every partition.
    #[arg(long, env = "FERRY_REPLICATION_FACTOR")]
    pub replication_factor: Option<u32>,
    /// Raft log entries of a group between snapshots.
    #[arg(long, env = "FERRY_SNAPSHOT_ENTRIES")]
    pub snapshot_entries: Option<u64>,
    /// Messages a queue may hold in flight (received, not yet deleted or visible again) before
    /// receives fail with OverLimit (SQS: about 120,000).
    #[arg(long, env = "FERRY_IN_FLIGHT_LIMIT")]
    pub in_flight_limit: Option<u64>,
    /// Sends of one standard queue under way from this node below which the next one goes to the
    /// queue's first partition, where sends from every node merge into shared Raft rounds; 0
    /// spreads every send over the partitions this node leads.
    #[arg(long, env = "FERRY_HOME_PARTITION_SENDS")]
    pub home_partition_sends: Option<usize>,
    /// Seconds a per-queue metric series may stay unchanged before `/metrics` drops it (a deleted
    /// queue's); node-wide series stay.
    #[arg(long, env = "FERRY_METRICS_IDLE_TIMEOUT_S")]
    pub metrics_idle_timeout_s: Option<u64>,
    /// The secret every member shares; only callers that know it reach the internal service.
    /// Prefer the variable or the file: a flag shows in the process list.
    #[arg(long, env = "FERRY_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// The secret that authenticates receipt handles; the same on every member. Prefer the
    /// variable or the file: a flag shows in the process list.
    #[arg(long, env = "FERRY_RECEIPT_SECRET", hide_env_values = true)]
    pub receipt_secret: Option<String>,
}

/// The configuration file. Unknown keys are refused so a typo does not pass silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub node_id: Option<NodeId>,
    pub data_dir: Option<PathBuf>,
    pub grpc_addr: Option<SocketAddr>,
    pub sqs_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    /// Member id → gRPC address. TOML keys are strings; they are parsed as node ids when resolved.
    #[serde(default)]
    pub peers: BTreeMap<String, String>,
    pub default_partitions: Option<u32>,
    pub replication_factor: Option<u32>,
    pub region: Option<String>,
    pub account_id: Option<String>,
    pub receipt_secret: Option<String>,
    pub cluster_secret: Option<String>,
    pub request_timeout_ms: Option<u64>,
    /// Messages a queue may hold in flight (SQS: about 120,000).
    pub in_flight_limit: Option<u64>,
    pub home_partition_sends: Option<usize>,
    pub snapshot_entries: Option<u64>,
    pub metrics_idle_timeout_s: Option<u64>,
    /// Base of the queue URLs the SQS endpoint returns (`<base>/<account>/<queue>`); unset: the
    /// request's Host header.
    pub sqs_base_url: Option<String>,
    /// SigV4 on the SQS endpoint: `off`, `parse` or `verify`.
    pub sqs_auth: Option<String>,
    /// Access key id → its secret (and account), accepted when `sqs_auth = "verify"`.
    #[serde(default)]
    pub sqs_credentials: BTreeMap<String, SqsCredentialFile>,
}

/// One `[sqs_credentials.<access key id>]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsCredentialFile {
    pub secret_access_key: String,
    /// The key's account; the cluster's `account_id` if unset.
    pub account_id: Option<String>,
}

impl std::fmt::Debug for SqsCredentialFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsCredentialFile")
            .field("secret_access_key", &"<redacted>")
            .field("account_id", &self.account_id)
            .finish()
    }
}

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    pub grpc_addr: SocketAddr,
    pub sqs_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub peers: BTreeMap<NodeId, String>,
    pub snapshot_entries: u64,
    /// Series unchanged this long leave `/metrics`.
    pub metrics_idle_timeout: Duration,
    /// Required of every call to this node's internal service, and attached to its own.
    pub cluster_key: ClusterKey,
    pub broker: BrokerConfig,
    pub sqs: SqsConfig,
}

pub const DEFAULT_GRPC_PORT: u16 = 7700;
pub const DEFAULT_SQS_PORT: u16 = 9324;
pub const DEFAULT_ADMIN_PORT: u16 = 7800;
const DEFAULT_PARTITIONS: u32 = 4;
const DEFAULT_REPLICATION_FACTOR: u32 = 3;
const DEFAULT_REGION: &str = "us-east-1";
const DEFAULT_ACCOUNT_ID: &str = "000000000000";
/// The SenderId of unauthenticated callers (the value AWS emulators report).
const DEFAULT_SENDER_ID: &str = "AIDAIT2UOQQY3AUEKVGXU";
/// Receipt handles are authenticated with this unless a secret is configured. Production clusters
/// set their own (FERRY_RECEIPT_SECRET or the config file).
const DEFAULT_RECEIPT_SECRET: &str = "ferry-development-receipt-secret";
const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Long past every refresh of a live series (per-queue series are touched at least every 10 s).
pub const DEFAULT_METRICS_IDLE_TIMEOUT_S: u64 = 300;
/// Like LocalStack: any credentials work, and the access key becomes the sender's identity.
const DEFAULT_SQS_AUTH: &str = "parse";

impl ServeArgs {
    pub fn resolve(&self) -> anyhow::Result<NodeConfig> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let node_id = self.node_id.or(file.node_id).unwrap_or(1);
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let grpc_addr = self
            .grpc_addr
            .or(file.grpc_addr)
            .unwrap_or(loopback(DEFAULT_GRPC_PORT));
        let mut peers = file
            .peers
            .iter()
            .map(|(id, addr)| parse_peer(&format!("{id}={addr}")))
            .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
        if !self.peers.is_empty() {
            peers = self
                .peers
                .iter()
                .map(|peer| parse_peer(peer))
                .collect::<anyhow::Result<_>>()?;
        }
        if peers.is_empty() {
            // Alone: a single-node cluster of this node.
            peers.insert(node_id, grpc_addr.to_string());
        }
        if !peers.contains_key(&node_id) {
            bail!("node {node_id} is not among the peers {peers:?}; list every member, this node included");
        }
        let replication_factor = self
            .replication_factor
            .or(file.replication_factor)
            .unwrap_or(DEFAULT_REPLICATION_FACTOR);
        let default_partitions = self
            .default_partitions
            .or(file.default_partitions)
            .unwrap_or(DEFAULT_PARTITIONS);
        if replication_factor == 0
            || default_partitions == 0
            || default_partitions > ferry_broker::MAX_PARTITIONS
        {
            bail!(
                "replication_factor must be at least 1 and default_partitions 1..={}",
                ferry_broker::MAX_PARTITIONS
            );
        }
        let snapshot_entries = self
            .snapshot_entries
            .or(file.snapshot_entries)
            .unwrap_or(DEFAULT_SNAPSHOT_ENTRIES);
        if snapshot_entries < 10 {
            bail!("snapshot_entries must be at least 10");
        }
        let in_flight_limit = self
            .in_flight_limit
            .or(file.in_flight_limit)
            .unwrap_or(ferry_broker::DEFAULT_IN_FLIGHT_LIMIT);
        if in_flight_limit == 0 {
            bail!("in_flight_limit must be at least 1");
        }
        let home_partition_sends = self
            .home_partition_sends
            .or(file.home_partition_sends)
            .unwrap_or(ferry_broker::DEFAULT_HOME_PARTITION_SENDS);
        let metrics_idle_timeout_s = self
            .metrics_idle_timeout_s
            .or(file.metrics_idle_timeout_s)
            .unwrap_or(DEFAULT_METRICS_IDLE_TIMEOUT_S);
        if metrics_idle_timeout_s == 0 {
            bail!("metrics_idle_timeout_s must be at least 1");
        }
        let cluster_key = match self.cluster_secret.clone().or(file.cluster_secret) {
            Some(secret) if secret.is_empty() => bail!("cluster_secret must not be empty"),
            Some(secret) => ClusterKey::from_secret(secret.as_bytes()),
            // Alone, the node has no callers to admit.
            None if peers.len() == 1 => ClusterKey::random(),
            None => bail!(
                "a cluster of several nodes needs a cluster secret: set FERRY_CLUSTER_SECRET (or \
                 cluster_secret in the config file) to the same value on every member"
            ),
        };
        let receipt_secret = match self.receipt_secret.clone().or(file.receipt_secret) {
            Some(secret) if secret.is_empty() => bail!("receipt_secret must not be empty"),
            Some(secret) => secret,
            None => DEFAULT_RECEIPT_SECRET.into(),
        };
        let sqs_credentials = file
            .sqs_credentials
            .into_iter()
            .map(|(access_key, credential)| {
                let credential = Credential {
                    secret_access_key: credential.secret_access_key,
                    account_id: credential.account_id,
                };
                (access_key, credential)
            })
            .collect();
        let sqs = SqsConfig::new(
            file.sqs_base_url,
            file.sqs_auth.as_deref().unwrap_or(DEFAULT_SQS_AUTH),
            Credentials::new(sqs_credentials),
        )?;
        Ok(NodeConfig {
            node_id,
            snapshot_entries,
            metrics_idle_timeout: Duration::from_secs(metrics_idle_timeout_s),
            cluster_key,
            sqs,
            data_dir: self
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(format!("data/node-{node_id}"))),
            grpc_addr,
            sqs_addr: self
                .sqs_addr
                .or(file.sqs_addr)
                .unwrap_or(loopback(DEFAULT_SQS_PORT)),
            admin_addr: self
                .admin_addr
                .or(file.admin_addr)
                .unwrap_or(loopback(DEFAULT_ADMIN_PORT)),
            peers,
            broker: BrokerConfig {
                default_partitions,
                replication_factor,
                region: file.region.unwrap_or_else(|| DEFAULT_REGION.into()),
                account_id: file.account_id.unwrap_or_else(|| DEFAULT_ACCOUNT_ID.into()),
                sender_id: DEFAULT_SENDER_ID.into(),
                receipt_secret: receipt_secret.into_bytes(),
                request_timeout: Duration::from_millis(
                    file.request_timeout_ms
                        .unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS),
                ),
                in_flight_limit,
                home_partition_sends,
            },
        })
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Parses `ID=HOST:PORT`.
fn parse_peer(peer: &str) -> anyhow::Result<(NodeId, String)> {
    let Some((id, addr)) = peer.split_once('=') else {
        bail!("peer {peer:?} is not ID=HOST:PORT")
    };
    let id = id
        .trim()
        .parse()
        .with_context(|| format!("peer {peer:?}: bad node id"))?;
    if addr
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .is_none()
    {
        bail!("peer {peer:?}: address must be HOST:PORT");
    }
    Ok((id, addr.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_sqs::AuthMode;

    #[test]
    fn flags_override_the_file_and_peers_must_include_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(
            &path,
            "node_id = 2\ndefault_partitions = 8\ncluster_secret = \"s\"\n[peers]\n1 = \"a:1\"\n2 = \"b:2\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            default_partitions: Some(3),
            ..Default::default()
        };
        let config = args.resolve().unwrap();
        assert_eq!(config.node_id, 2);
        assert_eq!(config.broker.default_partitions, 3);
        assert_eq!(config.peers.len(), 2);
        let args = ServeArgs {
            config: Some(path),
            node_id: Some(9),
            ..Default::default()
        };
        assert!(args.resolve().is_err());
    }

    #[test]
    fn several_members_need_a_cluster_secret() {
        let peers = vec!["1=a:1".to_owned(), "2=b:2".to_owned()];
        let args = ServeArgs {
            peers: peers.clone(),
            ..Default::default()
        };
        let refused = args.resolve().unwrap_err().to_string();
        assert!(refused.contains("FERRY_CLUSTER_SECRET"), "{refused}");
        let args = ServeArgs {
            peers: peers.clone(),
            cluster_secret: Some(String::new()),
            ..Default::default()
        };
        assert!(args.resolve().is_err());
        let args = ServeArgs {
            peers,
            cluster_secret: Some("shared".into()),
            ..Default::default()
        };
        assert!(args.resolve().is_ok());
        // Alone, a node needs none.
        assert!(ServeArgs::default().resolve().is_ok());
    }

    #[test]
    fn the_receipt_secret_comes_from_the_flag_or_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(&path, "receipt_secret = \"from-file\"\n").unwrap();
        let from_file = ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        assert_eq!(
            from_file.resolve().unwrap().broker.receipt_secret,
            b"from-file"
        );
        let from_flag = ServeArgs {
            config: Some(path),
            receipt_secret: Some("from-flag".into()),
            ..Default::default()
        };
        assert_eq!(
            from_flag.resolve().unwrap().broker.receipt_secret,
            b"from-flag"
        );
        let empty = ServeArgs {
            receipt_secret: Some(String::new()),
            ..Default::default()
        };
        assert!(empty.resolve().is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<FileConfig>("node_idd = 1").is_err());
    }

    #[test]
    fn the_shipped_template_parses() {
        let template = include_str!("../../../deploy/ferry.toml");
        let file: FileConfig = toml::from_str(template).unwrap();
        assert_eq!(file.default_partitions, Some(DEFAULT_PARTITIONS));
        assert_eq!(file.replication_factor, Some(DEFAULT_REPLICATION_FACTOR));
        assert_eq!(file.request_timeout_ms, Some(DEFAULT_REQUEST_TIMEOUT_MS));
        assert_eq!(file.snapshot_entries, Some(DEFAULT_SNAPSHOT_ENTRIES));
        assert_eq!(
            file.metrics_idle_timeout_s,
            Some(DEFAULT_METRICS_IDLE_TIMEOUT_S)
        );
        assert_eq!(
            file.in_flight_limit,
            Some(ferry_broker::DEFAULT_IN_FLIGHT_LIMIT)
        );
        assert_eq!(
            file.home_partition_sends,
            Some(ferry_broker::DEFAULT_HOME_PARTITION_SENDS)
        );
        assert_eq!(file.sqs_auth.as_deref(), Some(DEFAULT_SQS_AUTH));
    }

    #[test]
    fn sqs_verify_mode_takes_its_keys_from_the_file() {
        let default = ServeArgs::default().resolve().unwrap();
        assert!(matches!(default.sqs.auth, AuthMode::Parse));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(
            &path,
            "sqs_auth = \"verify\"\nsqs_base_url = \"https://sqs.example.com\"\n\
             [sqs_credentials.AKIDEXAMPLE]\nsecret_access_key = \"s\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        let config = args.resolve().unwrap();
        assert!(matches!(config.sqs.auth, AuthMode::Verify(_)));
        assert_eq!(
            config.sqs.advertised_base_url.as_deref(),
            Some("https://sqs.example.com")
        );
        std::fs::write(&path, "sqs_auth = \"verify\"\n").unwrap();
        assert!(args.resolve().is_err(), "verify without keys");
        std::fs::write(&path, "sqs_auth = \"off\"\n").unwrap();
        assert!(matches!(args.resolve().unwrap().sqs.auth, AuthMode::Off));
    }
}
