//! The client side of the node-to-node transport: one lazily connected gRPC channel per peer node,
//! shared by every group, with a timeout on every call.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use ferry_proto::internal::internal_client::InternalClient;
use ferry_proto::internal::{ForwardRequest, RaftKind, RaftRequest, SnapshotChunk};
use ferry_storage::{SnapshotFile, SnapshotReader};
use ferry_types::{GroupId, NodeId};
use openraft::error::{
    NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetworkFactory};
use openraft_multi::{GroupNetworkAdapter, GroupRouter};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::types::{decode, encode, Snapshot, TypeConfig, Vote};

/// How long to wait for a TCP connection to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The least time an append that carries entries gets. openraft allows one heartbeat interval
/// (200 ms), which a multi-megabyte batch waiting for a busy follower's fsync can exceed; giving up
/// only makes the leader send the same entries again.
const APPEND_TIMEOUT_FLOOR: Duration = Duration::from_secs(2);
/// A snapshot transfer may move a whole partition; it is cancelled by openraft when no longer needed.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Chunks read ahead of the network while streaming a snapshot.
const SNAPSHOT_READ_AHEAD: usize = 4;
/// The largest gRPC message between nodes: a full append batch or a snapshot chunk.
pub const MAX_INTERNAL_MESSAGE_BYTES: usize = 64 << 20;

/// Why a forwarded request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("node {0} has no known address")]
    UnknownNode(NodeId),
    #[error("node {node} did not answer within {timeout:?}")]
    Timeout { node: NodeId, timeout: Duration },
    #[error("node {node}: {status}")]
    Transport { node: NodeId, status: tonic::Status },
}

impl ForwardError {
    /// Whether the request surely never reached the node: its address is unknown or no connection
    /// could be made. Anything else (a reset or closed connection, a timeout) may have come after the
    /// node received the request, so whatever it asked for may have happened.
    pub fn surely_not_delivered(&self) -> bool {
        match self {
            Self::UnknownNode(_) => true,
            Self::Timeout { .. } => false,
            Self::Transport { status, .. } => {
                let mut source = std::error::Error::source(status);
                while let Some(error) = source {
                    if error.is::<tonic::ConnectError>() {
                        return true;
                    }
                    source = error.source();
                }
                false
            }
        }
    }
}

/// Routes Raft RPCs and forwarded requests to peer nodes.
#[derive(Clone, Default)]
pub struct RaftRouter {
    peers: Arc<RwLock<HashMap<NodeId, Peer>>>,
}

#[derive(Clone)]
struct Peer {
    addr: String,
    client: InternalClient<Channel>,
}

impl RaftRouter {
    /// Records (or updates) the gRPC address of a node.
    pub fn set_address(&self, node: NodeId, addr: &str) {
        let mut peers = self.peers.write().unwrap_or_else(|e| e.into_inner());
        if peers.get(&node).is_some_and(|peer| peer.addr == addr) {
            return;
        }
        let Ok(endpoint) = Endpoint::from_shared(format!("http://{addr}")) else {
            tracing::warn!(node, addr, "ignoring invalid peer address");
            return;
        };
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        let client = InternalClient::new(channel)
            .max_decoding_message_size(MAX_INTERNAL_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_INTERNAL_MESSAGE_BYTES);
        peers.insert(
            node,
            Peer {
                addr: addr.to_owned(),
                client,
            },
        );
    }

    pub fn address(&self, node: NodeId) -> Option<String> {
        self.peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&node)
            .map(|peer| peer.addr.clone())
    }

    fn client(&self, node: NodeId) -> Option<InternalClient<Channel>> {
        self.peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&node)
            .map(|peer| peer.client.clone())
    }

    /// Sends a request for `group` to `node`, which executes it if it leads the group.
    pub async fn forward(
        &self,
        node: NodeId,
        group: GroupId,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, ForwardError> {
        let mut client = self.client(node).ok_or(ForwardError::UnknownNode(node))?;
        count_sent("forward");
        let call = client.forward(ForwardRequest {
            group: group.0,
            payload,
        });
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(ForwardError::Timeout { node, timeout }),
            Ok(Err(status)) => Err(ForwardError::Transport { node, status }),
            Ok(Ok(reply)) => Ok(reply.into_inner().payload),
        }
    }

    async fn raft_call<Req, Resp>(
        &self,
        target: NodeId,
        group: GroupId,
        kind: RaftKind,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let mut client = self.client(target).ok_or_else(|| {
            RPCError::Unreachable(Unreachable::from_string(format!("node {target} unknown")))
        })?;
        let payload = encode(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let call = client.raft(RaftRequest {
            group: group.0,
            kind: kind as i32,
            payload: payload.into(),
        });
        let reply = match tokio::time::timeout(timeout, call).await {
            Err(_) => {
                return Err(RPCError::Unreachable(Unreachable::from_string(format!(
                    "node {target} timed out after {timeout:?}"
                ))))
            }
            Ok(Err(status)) => return Err(status_error(target, status)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        let result: Result<Resp, RaftError<TypeConfig>> =
            decode(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        // The only remote Raft error is Fatal: that replica has stopped, which is as good as down.
        result.map_err(|e| {
            RPCError::Unreachable(Unreachable::from_string(format!("node {target}: {e}")))
        })
    }
}

/// Counts an internal call this node makes, by kind: what a Raft round or a forwarded request
/// costs in network calls.
fn count_sent(kind: &'static str) {
    metrics::counter!("ferry_internal_calls_sent_total", "kind" => kind).increment(1);
}

fn status_error(target: NodeId, status: tonic::Status) -> RPCError<TypeConfig> {
    let message = format!("node {target}: {status}");
    match status.code() {
        // The peer is down, or does not host the group yet: back off and retry.
        tonic::Code::Unavailable | tonic::Code::NotFound | tonic::Code::DeadlineExceeded => {
            RPCError::Unreachable(Unreachable::from_string(message))
        }
        _ => RPCError::Network(NetworkError::from_string(message)),
    }
}

impl GroupRouter<TypeConfig, GroupId> for RaftRouter {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let timeout = if rpc.entries.is_empty() {
            count_sent("append_empty");
            option.hard_ttl()
        } else {
            count_sent("append");
            option.hard_ttl().max(APPEND_TIMEOUT_FLOOR)
        };
        self.raft_call(target, group, RaftKind::Append, &rpc, timeout)
            .await
    }

    async fn vote(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        count_sent("vote");
        self.raft_call(target, group, RaftKind::Vote, &rpc, option.hard_ttl())
            .await
    }

    async fn pre_vote(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        count_sent("pre_vote");
        self.raft_call(target, group, RaftKind::PreVote, &rpc, option.hard_ttl())
            .await
    }

    async fn full_snapshot(
        &self,
        target: NodeId,
        group: GroupId,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let unreachable =
            |message: String| StreamingError::Unreachable(Unreachable::from_string(message));
        let mut client = self
            .client(target)
            .ok_or_else(|| unreachable(format!("node {target} unknown")))?;
        count_sent("snapshot");
        let header = encode(&(vote, snapshot.meta.clone()))
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let mut reader =
            SnapshotReader::open(&snapshot.snapshot).map_err(|e| unreachable(e.to_string()))?;

        // Read the file on a blocking thread, a few chunks ahead of the network.
        let (chunks_tx, chunks_rx) = tokio::sync::mpsc::channel(SNAPSHOT_READ_AHEAD);
        let first = SnapshotChunk {
            group: group.0,
            header: header.into(),
            data: Bytes::new(),
        };
        let _ = chunks_tx.try_send(first);
        tokio::task::spawn_blocking(move || loop {
            match reader.next_chunk() {
                Ok(Some(data)) => {
                    let chunk = SnapshotChunk {
                        group: group.0,
                        header: Bytes::new(),
                        data: data.into(),
                    };
                    if chunks_tx.blocking_send(chunk).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(err) => {
                    tracing::warn!(%group, error = %err, "reading snapshot to send failed");
                    return;
                }
            }
        });
        let call = client.install_snapshot(tokio_stream::wrappers::ReceiverStream::new(chunks_rx));
        let reply = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            reply = tokio::time::timeout(SNAPSHOT_TIMEOUT, call) => reply,
        };
        let reply = match reply {
            Err(_) => return Err(unreachable(format!("snapshot to node {target} timed out"))),
            Ok(Err(status)) => return Err(unreachable(format!("node {target}: {status}"))),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        let result: Result<SnapshotResponse<TypeConfig>, String> =
            decode(&reply.payload).map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        result.map_err(|message| StreamingError::Network(NetworkError::from_string(message)))
    }
}

/// The network factory of one group: binds the shared router to the group id.
pub struct GroupNetwork {
    pub router: RaftRouter,
    pub group: GroupId,
}

impl RaftNetworkFactory<TypeConfig> for GroupNetwork {
    type Network = GroupNetworkAdapter<TypeConfig, GroupId, RaftRouter>;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        self.router.set_address(target, &node.addr);
        GroupNetworkAdapter::new(self.router.clone(), target, self.group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node that refuses connections never saw the request, so the caller may try elsewhere;
    /// one that accepted the connection and went silent may have run it.
    #[tokio::test]
    async fn only_a_failed_connection_means_not_delivered() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        let _accepting = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                held.push(stream);
            }
        });

        let router = RaftRouter::default();
        router.set_address(1, &closed_addr.to_string());
        router.set_address(2, &silent_addr.to_string());
        let forward =
            |node| router.forward(node, GroupId(7), Bytes::new(), Duration::from_millis(500));

        let refused = forward(1).await.unwrap_err();
        assert!(refused.surely_not_delivered(), "{refused:?}");
        let unanswered = forward(2).await.unwrap_err();
        assert!(!unanswered.surely_not_delivered(), "{unanswered:?}");
        let unknown = RaftRouter::default()
            .forward(3, GroupId(7), Bytes::new(), Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(unknown.surely_not_delivered(), "{unknown:?}");
    }
}
