//! `ferry dev`: a 3-node cluster on loopback in one process, data under `./data/`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use crate::MetricsHandle;
use anyhow::Context as _;
use rand::distributions::Alphanumeric;
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{ServeArgs, DEFAULT_ADMIN_PORT, DEFAULT_GRPC_PORT, DEFAULT_SQS_PORT};

const NODES: u64 = 3;

/// Runs nodes 1–3 (gRPC on 7701–7703, SQS on 9324–9326, admin on 7801–7803) until `shutdown`.
pub async fn dev(
    data_root: &Path,
    metrics: Option<MetricsHandle>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let peers: BTreeMap<u64, String> = (1..=NODES)
        .map(|id| (id, loopback(DEFAULT_GRPC_PORT + id as u16).to_string()))
        .collect();
    // Known to these three nodes only, for as long as they run.
    let cluster_secret: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut nodes = JoinSet::new();
    for id in 1..=NODES {
        let args = ServeArgs {
            node_id: Some(id),
            data_dir: Some(data_root.join(format!("node-{id}"))),
            grpc_addr: Some(loopback(DEFAULT_GRPC_PORT + id as u16)),
            sqs_addr: Some(loopback(DEFAULT_SQS_PORT + id as u16 - 1)),
            admin_addr: Some(loopback(DEFAULT_ADMIN_PORT + id as u16)),
            peers: peers
                .iter()
                .map(|(id, addr)| format!("{id}={addr}"))
                .collect(),
            cluster_secret: Some(cluster_secret.clone()),
            ..ServeArgs::default()
        };
        let config = args.resolve()?;
        let mut stop = stop_rx.clone();
        let metrics = metrics.clone();
        nodes.spawn(async move {
            crate::run(config, metrics, async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            })
            .await
            .with_context(|| format!("node {id}"))
        });
    }
    println!(
        "Ferry dev cluster: 3 nodes, data in {}",
        data_root.display()
    );
    for id in 1..=NODES as u16 {
        println!(
            "  node {id}: gRPC 127.0.0.1:{}  SQS http://127.0.0.1:{}  admin http://127.0.0.1:{}",
            DEFAULT_GRPC_PORT + id,
            DEFAULT_SQS_PORT + id - 1,
            DEFAULT_ADMIN_PORT + id
        );
    }
    // A node that ends on its own (it could not open its data or bind a port) ends the cluster:
    // two nodes left running would look healthy while every third request waits for the third.
    let ended_early = tokio::select! {
        _ = shutdown => None,
        Some(ended) = nodes.join_next() => Some(ended),
    };
    let _ = stop_tx.send(true);
    let mut outcome = match ended_early {
        Some(ended) => ended?.and_then(|()| Err(anyhow::anyhow!("a node stopped by itself"))),
        None => Ok(()),
    };
    while let Some(ended) = nodes.join_next().await {
        outcome = outcome.and(ended?);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_node_that_cannot_start_ends_the_dev_cluster() {
        let not_a_directory = tempfile::NamedTempFile::new().expect("temp file");
        let data_root = not_a_directory.path().join("data");
        let started = dev(&data_root, None, std::future::pending());
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(30), started)
            .await
            .expect("the dev cluster ends without a shutdown signal");
        let error = outcome.expect_err("no node can open its data directory");
        assert!(
            format!("{error:#}").contains("opening"),
            "names what failed: {error:#}"
        );
    }
}
