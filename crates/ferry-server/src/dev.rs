//! `ferry dev`: a 3-node cluster on loopback in one process, data under `./data/`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use metrics_exporter_prometheus::PrometheusHandle;
use rand::distributions::Alphanumeric;
use rand::Rng;
use tokio::sync::watch;

use crate::config::{ServeArgs, DEFAULT_ADMIN_PORT, DEFAULT_GRPC_PORT, DEFAULT_SQS_PORT};

const NODES: u64 = 3;

/// Runs nodes 1–3 (gRPC on 7701–7703, SQS on 9324–9326, admin on 7801–7803) until `shutdown`.
pub async fn dev(
    data_root: &Path,
    metrics: Option<PrometheusHandle>,
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
    let mut nodes = Vec::new();
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
        nodes.push(tokio::spawn(async move {
            crate::run(config, metrics, async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            })
            .await
        }));
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
    shutdown.await;
    let _ = stop_tx.send(true);
    for node in nodes {
        node.await??;
    }
    Ok(())
}
