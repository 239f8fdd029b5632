//! The client side of the node-to-node transport: one lazily connected gRPC channel per peer node,
//! shared by every group, with a timeout on every call. The Raft calls of all groups to one peer
//! are coalesced into batched RPCs, so a node hosting many groups pays for a handful of RPCs per
//! round trip to a peer rather than one per group.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_proto::internal::internal_client::InternalClient;
use ferry_proto::internal::{
    raft_call_reply, ForwardRequest, RaftBatchRequest, RaftCallError, RaftCallReply, RaftKind,
    RaftRequest, SnapshotChunk,
};
use ferry_storage::{SnapshotData, SnapshotReader};
use ferry_types::{GroupId, NodeId};
use openraft::error::{
    NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetworkFactory};
use openraft_multi::{GroupNetworkAdapter, GroupRouter};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::cluster_key::{AttachClusterKey, ClusterKey};
use crate::quiet::{self, QuiesceRequest};
use crate::state_machine::write_snapshot_file;
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
/// The largest gRPC message between nodes: a batch of Raft calls or a snapshot chunk.
pub const MAX_INTERNAL_MESSAGE_BYTES: usize = 64 << 20;
/// Batched RPCs to one peer in flight at once. Calls that queue meanwhile wait for a slot and
/// leave together; more slots lower the wait behind a slow batch but coalesce less.
const RAFT_BATCHES_IN_FLIGHT: usize = 2;
/// Calls queued for one peer before a caller waits: bounds memory when a peer is slow.
const RAFT_CALLS_QUEUED: usize = 4096;
/// Limits of one batched RPC; a single larger call still goes out, alone.
pub(crate) const RAFT_BATCH_MAX_CALLS: usize = 512;
const RAFT_BATCH_MAX_BYTES: usize = 16 << 20;
/// How soon a vote is asked again when the peer does not host the group yet.
const UNHOSTED_VOTE_RETRY: Duration = Duration::from_millis(50);

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
#[derive(Clone)]
pub struct RaftRouter {
    peers: Arc<RwLock<HashMap<NodeId, Peer>>>,
    sender: Sender,
    key: ClusterKey,
}

/// A peer's internal service, every call carrying the cluster key.
type PeerClient = InternalClient<InterceptedService<Channel, AttachClusterKey>>;

/// Who stamps the batches: this node, and a number that differs on every start of it.
#[derive(Clone, Copy, Default)]
struct Sender {
    node: NodeId,
    boot: u64,
}

#[derive(Clone)]
struct Peer {
    addr: String,
    client: PeerClient,
    /// Raft calls waiting for the peer's batcher task, which ends when the last sender is dropped.
    raft_calls: mpsc::Sender<QueuedCall>,
}

impl Peer {
    /// Queues one Raft call for the peer's batcher and waits for its reply until `deadline`.
    async fn call(&self, call: RaftRequest, deadline: Instant) -> Result<Bytes, tonic::Status> {
        let (reply, answer) = oneshot::channel();
        let queued = QueuedCall {
            call,
            timeout: deadline.saturating_duration_since(Instant::now()),
            reply,
        };
        let call = async {
            self.raft_calls.send(queued).await.map_err(|_| {
                tonic::Status::unavailable("the transport to this node was replaced")
            })?;
            answer
                .await
                .map_err(|_| tonic::Status::unavailable("batch dropped"))?
        };
        match tokio::time::timeout_at(deadline.into(), call).await {
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "no reply from {} in time",
                self.addr
            ))),
            Ok(result) => result,
        }
    }
}

/// One Raft call waiting to join a batch.
struct QueuedCall {
    call: RaftRequest,
    timeout: Duration,
    reply: oneshot::Sender<Result<Bytes, tonic::Status>>,
}

impl RaftRouter {
    /// A router for the node `node`, whose batches name it (and this start of it) to their receivers
    /// and whose calls carry `key`.
    pub fn for_node(node: NodeId, key: ClusterKey) -> Self {
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |since| since.as_nanos() as u64);
        Self {
            peers: Arc::default(),
            sender: Sender { node, boot },
            key,
        }
    }

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
        let client =
            InternalClient::with_interceptor(channel, AttachClusterKey::new(self.key.clone()))
                .max_decoding_message_size(MAX_INTERNAL_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_INTERNAL_MESSAGE_BYTES);
        let (raft_calls, queue) = mpsc::channel(RAFT_CALLS_QUEUED);
        tokio::spawn(send_raft_batches(client.clone(), queue, self.sender));
        peers.insert(
            node,
            Peer {
                addr: addr.to_owned(),
                client,
                raft_calls,
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

    fn peer(&self, node: NodeId) -> Option<Peer> {
        self.peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&node)
            .cloned()
    }

    fn client(&self, node: NodeId) -> Option<PeerClient> {
        self.peer(node).map(|peer| peer.client)
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

    /// Makes one Raft call on `group` at `target`. A vote or pre-vote the peer refuses because it
    /// does not host the group yet is asked again until the call's time is up: a new queue's first
    /// replica campaigns the moment it applies the catalog entry, usually just before the other
    /// replicas start the group, and a refused vote would leave the group without a leader for a
    /// whole election timeout (1.5–3 s) — the first requests to a new queue waited that long.
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
        let peer = self.peer(target).ok_or_else(|| {
            RPCError::Unreachable(Unreachable::from_string(format!("node {target} unknown")))
        })?;
        let payload: Bytes = encode(request)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?
            .into();
        let deadline = Instant::now() + timeout;
        let retries_unhosted = matches!(kind, RaftKind::Vote | RaftKind::PreVote);
        let payload = loop {
            let call = RaftRequest {
                group: group.0,
                kind: kind as i32,
                payload: payload.clone(),
            };
            match peer.call(call, deadline).await {
                Err(status)
                    if retries_unhosted
                        && status.code() == tonic::Code::NotFound
                        && Instant::now() + UNHOSTED_VOTE_RETRY < deadline =>
                {
                    tokio::time::sleep(UNHOSTED_VOTE_RETRY).await;
                }
                Err(status) => return Err(status_error(target, status)),
                Ok(payload) => break payload,
            }
        };
        let result: Result<Resp, RaftError<TypeConfig>> =
            decode(&payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        // The only remote Raft error is Fatal: that replica has stopped, which is as good as down.
        result.map_err(|e| {
            RPCError::Unreachable(Unreachable::from_string(format!("node {target}: {e}")))
        })
    }

    /// Tells `follower` that this node, leading `group`, stopped its tick; true if it stopped too.
    pub(crate) async fn quiesce(
        &self,
        follower: NodeId,
        group: GroupId,
        request: &QuiesceRequest,
    ) -> Result<bool, RPCError<TypeConfig>> {
        count_sent("quiesce");
        self.raft_call(
            follower,
            group,
            RaftKind::Quiesce,
            request,
            APPEND_TIMEOUT_FLOOR,
        )
        .await
    }
}

/// The batcher of one peer: takes the calls queued for it, a batch at a time, and sends each batch
/// as one RPC once one of the in-flight slots is free. Under light load every call leaves at once,
/// alone; under load the calls of many groups share an RPC. With nothing to send for
/// [`quiet::PING_INTERVAL`], it sends an empty batch, so the peer keeps hearing from this node.
async fn send_raft_batches(
    client: PeerClient,
    mut queue: mpsc::Receiver<QueuedCall>,
    sender: Sender,
) {
    let slots = Arc::new(Semaphore::new(RAFT_BATCHES_IN_FLIGHT));
    // Pings take no batch slot (a slow peer must not hold up calls behind them), one at a time.
    let ping_slot = Arc::new(Semaphore::new(1));
    let mut carried: Option<QueuedCall> = None;
    loop {
        let first = match carried.take() {
            Some(call) => call,
            None => match tokio::time::timeout(quiet::PING_INTERVAL, queue.recv()).await {
                Ok(Some(call)) => call,
                Ok(None) => return,
                Err(_) => {
                    if let Ok(slot) = ping_slot.clone().try_acquire_owned() {
                        let client = client.clone();
                        tokio::spawn(async move {
                            send_raft_batch(client, Vec::new(), sender).await;
                            drop(slot);
                        });
                    }
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.call.payload.len();
        let mut batch = vec![first];
        while batch.len() < RAFT_BATCH_MAX_CALLS {
            let Ok(call) = queue.try_recv() else { break };
            bytes += call.call.payload.len();
            if bytes > RAFT_BATCH_MAX_BYTES {
                carried = Some(call);
                break;
            }
            batch.push(call);
        }
        // A caller that gave up no longer needs its call; openraft sends it again if it must.
        batch.retain(|queued| !queued.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let client = client.clone();
        tokio::spawn(async move {
            send_raft_batch(client, batch, sender).await;
            drop(slot);
        });
    }
}

/// Sends one batch and hands every caller its reply (or the RPC's failure).
async fn send_raft_batch(mut client: PeerClient, batch: Vec<QueuedCall>, sender: Sender) {
    count_sent(if batch.is_empty() {
        "ping"
    } else {
        "raft_batch"
    });
    let timeout = batch
        .iter()
        .map(|queued| queued.timeout)
        .max()
        .unwrap_or(APPEND_TIMEOUT_FLOOR);
    let (calls, waiting): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|queued| (queued.call, queued.reply))
        .unzip();
    let request = client.raft_batch(RaftBatchRequest {
        calls,
        from: sender.node,
        boot: sender.boot,
        command_format: ferry_queue::COMMAND_FORMAT,
    });
    let replies = match tokio::time::timeout(timeout, request).await {
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "no reply within {timeout:?}"
        ))),
        Ok(Err(status)) => Err(status),
        Ok(Ok(reply)) => Ok(reply.into_inner().replies),
    };
    match replies {
        Err(status) => {
            for reply in waiting {
                let _ = reply.send(Err(status.clone()));
            }
        }
        Ok(replies) => {
            let mut replies = replies.into_iter();
            for reply in waiting {
                let result = call_result(replies.next());
                let _ = reply.send(result);
            }
        }
    }
}

/// Encodes the outcome of one call of a batch for the wire; [`call_result`] reads it back.
pub(crate) fn call_reply(result: Result<Bytes, tonic::Status>) -> RaftCallReply {
    RaftCallReply {
        result: Some(match result {
            Ok(payload) => raft_call_reply::Result::Payload(payload),
            Err(status) => raft_call_reply::Result::Error(RaftCallError {
                code: status.code() as i32,
                message: status.message().to_owned(),
            }),
        }),
    }
}

fn call_result(reply: Option<RaftCallReply>) -> Result<Bytes, tonic::Status> {
    match reply.and_then(|reply| reply.result) {
        Some(raft_call_reply::Result::Payload(payload)) => Ok(payload),
        Some(raft_call_reply::Result::Error(error)) => Err(tonic::Status::new(
            tonic::Code::from(error.code),
            error.message,
        )),
        None => Err(tonic::Status::internal("batch reply is missing a call")),
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
    type SnapshotData = SnapshotData;

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

    /// Carries the leader's hand-over to every voter, so that the chosen replica campaigns at once
    /// instead of when its election timer fires (never, if the group is quiet there).
    async fn transfer_leader(
        &self,
        target: NodeId,
        group: GroupId,
        request: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        count_sent("transfer_leader");
        self.raft_call(
            target,
            group,
            RaftKind::TransferLeader,
            &request,
            option.hard_ttl(),
        )
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
        let (file, meta, written_here) = match snapshot.snapshot {
            SnapshotData::File(file) => (file, snapshot.meta, false),
            // Written now, of the state as it is: at or past the durable point openraft knows of.
            // The follower takes the file's own point, and has the entries between the two already
            // when the leader sends them on from its older point (they are committed).
            SnapshotData::Durable(db, group) => {
                let (file, meta) = write_snapshot_file(db, group)
                    .await
                    .map_err(|e| unreachable(e.to_string()))?;
                (file, meta, true)
            }
        };
        // A file written for this transfer is removed whatever its outcome.
        let sent = async {
            let header = encode(&(vote, meta))
                .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
            let mut reader = SnapshotReader::open(&file).map_err(|e| unreachable(e.to_string()))?;

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
            let call =
                client.install_snapshot(tokio_stream::wrappers::ReceiverStream::new(chunks_rx));
            let reply = tokio::select! {
                closed = cancel => return Err(StreamingError::Closed(closed)),
                reply = tokio::time::timeout(SNAPSHOT_TIMEOUT, call) => reply,
            };
            let reply = match reply {
                Err(_) => return Err(unreachable(format!("snapshot to node {target} timed out"))),
                Ok(Err(status)) => return Err(unreachable(format!("node {target}: {status}"))),
                Ok(Ok(reply)) => reply.into_inner(),
            };
            let result: Result<SnapshotResponse<TypeConfig>, String> = decode(&reply.payload)
                .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
            result.map_err(|message| StreamingError::Network(NetworkError::from_string(message)))
        }
        .await;
        if written_here {
            file.remove();
        }
        sent
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
    use crate::cluster_key::RequireClusterKey;
    use ferry_proto::internal::internal_server::{Internal, InternalServer};
    use ferry_proto::internal::{ForwardReply, RaftBatchReply, RaftReply};
    use std::sync::Mutex;
    use tonic::{Request, Response, Status, Streaming};

    /// A peer that answers each call of a batch with twice the number it carries, refuses group
    /// 13 (as not hosted) for its first `refusals` calls, and holds every batch a moment so that
    /// calls queue behind the in-flight ones.
    struct DoublingPeer {
        batch_sizes: Arc<Mutex<Vec<usize>>>,
        refusals: Arc<Mutex<usize>>,
    }

    impl DoublingPeer {
        fn refusing(refusals: usize) -> Self {
            Self {
                batch_sizes: Arc::default(),
                refusals: Arc::new(Mutex::new(refusals)),
            }
        }

        /// Serves the peer on a free loopback port; returns a router that knows it as node 2.
        async fn serve(self) -> RaftRouter {
            let key = ClusterKey::random();
            let router = RaftRouter::for_node(1, key.clone());
            router.set_address(2, &self.serve_requiring(key).await);
            router
        }

        /// Serves the peer on a free loopback port, taking only calls that carry `key`; returns
        /// its address.
        async fn serve_requiring(self, key: ClusterKey) -> String {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(InterceptedService::new(
                        InternalServer::new(self),
                        RequireClusterKey::new(key),
                    ))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
            );
            addr.to_string()
        }

        fn refuse(&self, group: u64) -> bool {
            let mut refusals = self.refusals.lock().unwrap();
            if group != 13 || *refusals == 0 {
                return false;
            }
            *refusals -= 1;
            true
        }
    }

    #[tonic::async_trait]
    impl Internal for DoublingPeer {
        async fn raft_batch(
            &self,
            request: Request<RaftBatchRequest>,
        ) -> Result<Response<RaftBatchReply>, Status> {
            let calls = request.into_inner().calls;
            self.batch_sizes.lock().unwrap().push(calls.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
            let replies = calls
                .into_iter()
                .map(|call| {
                    call_reply(if self.refuse(call.group) {
                        Err(Status::not_found("group 13 is not hosted here"))
                    } else {
                        let number: u64 = decode(&call.payload).unwrap();
                        let answer: Result<u64, RaftError<TypeConfig>> = Ok(number * 2);
                        Ok(encode(&answer).unwrap().into())
                    })
                })
                .collect();
            Ok(Response::new(RaftBatchReply { replies }))
        }

        async fn install_snapshot(
            &self,
            _: Request<Streaming<SnapshotChunk>>,
        ) -> Result<Response<RaftReply>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn forward(
            &self,
            _: Request<ForwardRequest>,
        ) -> Result<Response<ForwardReply>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
    }

    /// Calls of many groups made at once share RPCs, each caller gets its own group's answer, and
    /// one group's refusal stays that group's.
    #[tokio::test]
    async fn concurrent_calls_of_many_groups_share_rpcs() {
        let peer = DoublingPeer::refusing(usize::MAX);
        let batch_sizes = peer.batch_sizes.clone();
        let router = peer.serve().await;

        let calls = (0..64u64).map(|group| {
            let router = router.clone();
            async move {
                let answer: Result<u64, _> = router
                    .raft_call(
                        2,
                        GroupId(group),
                        RaftKind::Append,
                        &group,
                        Duration::from_secs(5),
                    )
                    .await;
                (group, answer)
            }
        });
        for (group, answer) in futures::future::join_all(calls).await {
            match answer {
                Ok(doubled) => assert_eq!(doubled, group * 2, "group {group}"),
                Err(RPCError::Unreachable(_)) if group == 13 => {}
                Err(error) => panic!("group {group}: {error}"),
            }
        }
        let batch_sizes = batch_sizes.lock().unwrap().clone();
        assert_eq!(batch_sizes.iter().sum::<usize>(), 64, "{batch_sizes:?}");
        assert!(
            batch_sizes.len() <= 8,
            "calls were not coalesced: {batch_sizes:?}"
        );
    }

    /// A vote for a group the peer has not started yet is asked again until the peer hosts it; an
    /// append is refused at once (openraft's replication backs off by itself).
    #[tokio::test]
    async fn a_vote_waits_for_the_peer_to_host_the_group() {
        let peer = DoublingPeer::refusing(3);
        let refusals = peer.refusals.clone();
        let router = peer.serve().await;
        let call_group_13 = |kind, timeout| {
            let router = router.clone();
            async move {
                router
                    .raft_call::<u64, u64>(2, GroupId(13), kind, &21, timeout)
                    .await
            }
        };

        let vote = call_group_13(RaftKind::Vote, Duration::from_secs(5)).await;
        assert_eq!(vote.unwrap(), 42);
        assert_eq!(
            *refusals.lock().unwrap(),
            0,
            "every refusal was asked again"
        );

        *refusals.lock().unwrap() = 1;
        let append = call_group_13(RaftKind::Append, Duration::from_secs(5)).await;
        assert!(
            matches!(append, Err(RPCError::Unreachable(_))),
            "{append:?}"
        );

        *refusals.lock().unwrap() = usize::MAX;
        let started = Instant::now();
        let vote = call_group_13(RaftKind::Vote, Duration::from_millis(300)).await;
        assert!(matches!(vote, Err(RPCError::Unreachable(_))), "{vote:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a refused vote outlived its time: {:?}",
            started.elapsed()
        );
    }

    /// A node answers the Raft calls and forwarded requests of callers that carry the cluster key
    /// and refuses everyone else's.
    #[tokio::test]
    async fn calls_without_the_cluster_key_are_refused() {
        let key = ClusterKey::from_secret(b"members only");
        let addr = DoublingPeer::refusing(0).serve_requiring(key.clone()).await;
        let call = |router: RaftRouter| {
            router.set_address(2, &addr);
            async move {
                let raft: Result<u64, _> = router
                    .raft_call(
                        2,
                        GroupId(1),
                        RaftKind::Append,
                        &21u64,
                        Duration::from_secs(5),
                    )
                    .await;
                let forward = router
                    .forward(2, GroupId(1), Bytes::new(), Duration::from_secs(5))
                    .await;
                (raft, forward)
            }
        };

        let (raft, forward) = call(RaftRouter::for_node(1, key)).await;
        assert_eq!(raft.unwrap(), 42);
        // The peer's own answer to a forward: the call got through.
        assert!(
            matches!(&forward, Err(ForwardError::Transport { status, .. }) if status.code() == tonic::Code::Unimplemented),
            "{forward:?}"
        );

        let stranger = RaftRouter::for_node(1, ClusterKey::from_secret(b"a guess"));
        let (raft, forward) = call(stranger).await;
        assert!(raft.is_err(), "{raft:?}");
        assert!(
            matches!(&forward, Err(ForwardError::Transport { status, .. }) if status.code() == tonic::Code::Unauthenticated),
            "{forward:?}"
        );
    }

    /// A node that refuses connections never saw the request, so the caller may try elsewhere;
    /// one that accepted the connection and went silent may have run it.
    #[tokio::test]
    async fn only_a_failed_connection_means_not_delivered() {
        // Bound but not listening: connections are refused, and no other test can take the port
        // (a port freed here was once taken by a listener before the call, which then timed out).
        let closed = tokio::net::TcpSocket::new_v4().unwrap();
        closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let closed_addr = closed.local_addr().unwrap();
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        let _accepting = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                held.push(stream);
            }
        });

        let router = RaftRouter::for_node(1, ClusterKey::random());
        router.set_address(1, &closed_addr.to_string());
        router.set_address(2, &silent_addr.to_string());
        let forward = |node, timeout| router.forward(node, GroupId(7), Bytes::new(), timeout);

        // A refusal and an unknown address fail at once: the long timeout only keeps a loaded
        // machine from turning them into timeouts.
        let refused = forward(1, Duration::from_secs(10)).await.unwrap_err();
        assert!(refused.surely_not_delivered(), "{refused:?}");
        let unanswered = forward(2, Duration::from_millis(500)).await.unwrap_err();
        assert!(!unanswered.surely_not_delivered(), "{unanswered:?}");
        let unknown = RaftRouter::for_node(1, ClusterKey::random())
            .forward(3, GroupId(7), Bytes::new(), Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(unknown.surely_not_delivered(), "{unknown:?}");
    }
}
