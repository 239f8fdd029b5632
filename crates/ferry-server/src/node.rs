//! Running one node: storage, Raft groups, the broker, and its three listeners (gRPC, SQS HTTP,
//! admin HTTP), until a shutdown signal.

use std::future::{Future, IntoFuture};
use std::sync::Arc;

use crate::MetricsHandle;
use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use ferry_broker::Broker;
use ferry_grpc::FerryService;
use ferry_raft::{
    InternalService, MultiRaft, RaftRouter, RequireClusterKey, MAX_INTERNAL_MESSAGE_BYTES,
};
use ferry_storage::NodeDb;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;

use crate::config::NodeConfig;

/// Pending-accept streams a peer may reset before the gRPC server closes the connection.
const MAX_PENDING_RESET_STREAMS: usize = 100_000;

#[derive(Clone)]
struct AdminState {
    multi: Arc<MultiRaft>,
    broker: Arc<Broker>,
    metrics: Option<MetricsHandle>,
}

/// Runs a node until `shutdown` completes, then stops it cleanly: listeners first, then the Raft
/// groups, then the database.
pub async fn run(
    config: NodeConfig,
    metrics: Option<MetricsHandle>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let node = config.node_id;
    let db = NodeDb::open(&config.data_dir)
        .with_context(|| format!("opening {}", config.data_dir.display()))?;
    let multi = MultiRaft::new(
        node,
        db.clone(),
        RaftRouter::for_node(config.node_id, config.cluster_key.clone()),
        config.peers.clone(),
        config.snapshot_entries,
    )?;
    let broker = Broker::new(multi.clone(), config.broker.clone());
    let (stop_tx, stop_rx) = watch::channel(false);

    // Listen before the groups start, so peers' Raft traffic finds this node.
    let grpc = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding {}", config.grpc_addr))?;
    let sqs = TcpListener::bind(config.sqs_addr)
        .await
        .with_context(|| format!("binding {}", config.sqs_addr))?;
    let admin = TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("binding {}", config.admin_addr))?;

    let internal = InterceptedService::new(
        ferry_proto::internal::internal_server::InternalServer::new(InternalService::new(
            multi.clone(),
            broker.forward_handler(),
        ))
        .max_decoding_message_size(MAX_INTERNAL_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_INTERNAL_MESSAGE_BYTES),
        RequireClusterKey::new(config.cluster_key.clone()),
    );
    let grpc_server = tonic::transport::Server::builder()
        // Raft RPCs that time out are reset by the caller; with hundreds of groups on one
        // connection, hyper's default limit of 20 such resets would close the connection every
        // group shares and turn a slow moment into elections everywhere.
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESET_STREAMS))
        .add_service(internal)
        .add_service(FerryService::new(broker.clone()).into_server())
        .serve_with_incoming_shutdown(
            // Replies (and Raft acknowledgements) must not wait for Nagle's algorithm: with delayed
            // ACKs on the peer, a small reply can sit for 40 ms. The builder's `tcp_nodelay` does
            // not reach sockets of a listener given to it, so it is set here.
            TcpIncoming::from(grpc).with_nodelay(Some(true)),
            stopped(stop_rx.clone()),
        );
    let grpc_task = tokio::spawn(grpc_server);

    multi
        .start_catalog()
        .await
        .context("starting the catalog group")?;
    let reconciler = tokio::spawn(multi.clone().run_reconciler(stop_rx.clone()));
    let housekeeping = tokio::spawn(broker.clone().run_housekeeping(stop_rx.clone()));
    let quiescence = tokio::spawn(multi.clone().run_quiescence(stop_rx.clone()));
    let log_trimming = tokio::spawn(multi.clone().run_log_trimming(stop_rx.clone()));

    let state = AdminState {
        multi: multi.clone(),
        broker: broker.clone(),
        metrics,
    };
    let admin_app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .route("/debug/groups", get(debug_groups))
        .with_state(state);
    let admin_task = tokio::spawn(
        axum::serve(admin, admin_app)
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );
    let sqs_app = ferry_sqs::router(broker.clone(), config.sqs.clone());
    let sqs_task = tokio::spawn(
        axum::serve(sqs.tap_io(no_delay), sqs_app)
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );

    tracing::info!(
        node,
        grpc = %config.grpc_addr,
        sqs = %config.sqs_addr,
        admin = %config.admin_addr,
        data = %config.data_dir.display(),
        "ferry node started"
    );
    shutdown.await;
    tracing::info!(node, "shutting down");
    let _ = stop_tx.send(true);
    for task in [
        grpc_task.abort_handle(),
        admin_task.abort_handle(),
        sqs_task.abort_handle(),
    ] {
        // Graceful shutdown lets in-flight requests finish; a stuck long poll must not hold the
        // process forever.
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            task.abort();
        });
    }
    let _ = grpc_task.await;
    let _ = admin_task.await;
    let _ = sqs_task.await;
    let _ = reconciler.await;
    let _ = housekeeping.await;
    let _ = quiescence.await;
    let _ = log_trimming.await;
    multi.shutdown().await;
    db.close();
    tracing::info!(node, "stopped");
    Ok(())
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.broker.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not in touch with a majority and a catalog leader",
        )
    }
}

async fn render_metrics(State(state): State<AdminState>) -> impl IntoResponse {
    match &state.metrics {
        Some(handle) => {
            metrics::gauge!("ferry_node_ready").set(if state.broker.is_ready() {
                1.0
            } else {
                0.0
            });
            state.broker.refresh_queue_gauges().await;
            (StatusCode::OK, handle.render())
        }
        None => (StatusCode::NOT_FOUND, "metrics are not enabled".to_owned()),
    }
}

#[derive(Serialize)]
struct GroupReport {
    group: u64,
    queue: Option<String>,
    leader: Option<u64>,
    is_leader: bool,
    last_applied: Option<u64>,
    /// The last log entry the durable state holds.
    snapshot: Option<u64>,
    /// The last log entry removed.
    log_purged: Option<u64>,
    /// Idle: not ticking until a proposal, a Raft call or a silent peer wakes it.
    quiet: bool,
}

/// Every Raft group on this node with its leader and progress, for operators and tests.
async fn debug_groups(State(state): State<AdminState>) -> Json<Vec<GroupReport>> {
    let catalog = state.multi.catalog().borrow().clone();
    let groups = state
        .multi
        .groups()
        .into_iter()
        .map(|handle| {
            let status = handle.status();
            let queue = catalog
                .queue_of_group(handle.group)
                .map(|queue| queue.name.clone());
            GroupReport {
                group: handle.group.0,
                queue,
                leader: status.leader,
                is_leader: status.leader == Some(state.multi.node_id()),
                last_applied: status.last_applied,
                snapshot: status.snapshot,
                log_purged: status.log_purged,
                quiet: handle.is_quiet(),
            }
        })
        .collect();
    Json(groups)
}

/// Disables Nagle's algorithm on an accepted SQS connection, so that a response is sent at once.
fn no_delay(stream: &mut TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "TCP_NODELAY not set on an SQS connection");
    }
}
