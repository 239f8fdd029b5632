//! The server side of the node-to-node transport: Raft RPCs into the local group, snapshots into a
//! file, forwarded requests into the broker.

use std::sync::Arc;

use bytes::Bytes;
use ferry_proto::internal::internal_server::Internal;
use ferry_proto::internal::{
    ForwardReply, ForwardRequest, RaftBatchReply, RaftBatchRequest, RaftKind, RaftReply,
    RaftRequest, SnapshotChunk,
};
use ferry_storage::{SnapshotData, SnapshotWriter};
use ferry_types::GroupId;
use futures::future::BoxFuture;
use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use tonic::{Request, Response, Status, Streaming};

use crate::multi::{GroupHandle, MultiRaft};
use crate::network::{call_reply, RAFT_BATCH_MAX_CALLS};
use crate::quiet::QuiesceRequest;
use crate::types::{decode, encode, Snapshot, SnapshotMeta, TypeConfig, Vote};

/// Executes requests another node forwarded to this one as a group's leader. Implemented by the
/// broker; payloads are its own encoding.
pub trait ForwardHandler: Send + Sync + 'static {
    fn handle(&self, group: GroupId, payload: Bytes) -> BoxFuture<'static, Result<Bytes, Status>>;
}

pub struct InternalService {
    multi: Arc<MultiRaft>,
    forward: Arc<dyn ForwardHandler>,
}

impl InternalService {
    pub fn new(multi: Arc<MultiRaft>, forward: Arc<dyn ForwardHandler>) -> Self {
        Self { multi, forward }
    }

    fn group(&self, group: u64) -> Result<GroupHandle, Status> {
        // NotFound tells the sender to back off: the group may not have started here yet.
        self.multi
            .group(GroupId(group))
            .ok_or_else(|| Status::not_found(format!("group {group} is not hosted here")))
    }
}

impl InternalService {
    /// Runs one Raft call on its group and encodes the group's answer.
    async fn raft_call(&self, call: RaftRequest) -> Result<Bytes, Status> {
        let handle = self.group(call.group)?;
        let kind = RaftKind::try_from(call.kind);
        // A replica told to hand over or to vote must tick: it may have to campaign, or to time out
        // and campaign if the chosen replica cannot win.
        if matches!(
            kind,
            Ok(RaftKind::Vote | RaftKind::PreVote | RaftKind::TransferLeader)
        ) {
            handle.touch();
        }
        let payload = match kind {
            Ok(RaftKind::Quiesce) => {
                let request: QuiesceRequest = decode(&call.payload).map_err(invalid)?;
                let agreed = handle.quiesce_as_follower(self.multi.node_id(), &request);
                encode(&Ok::<bool, RaftError<TypeConfig>>(agreed))
            }
            Ok(RaftKind::Append) => {
                let rpc: AppendEntriesRequest<TypeConfig> =
                    decode(&call.payload).map_err(invalid)?;
                if rpc.entries.is_empty() {
                    handle.heard_heartbeat();
                } else {
                    handle.touch();
                }
                encode(&handle.raft.append_entries(rpc).await)
            }
            Ok(RaftKind::Vote) => {
                let rpc: VoteRequest<TypeConfig> = decode(&call.payload).map_err(invalid)?;
                encode(&handle.raft.vote(rpc).await)
            }
            Ok(RaftKind::PreVote) => {
                let rpc: VoteRequest<TypeConfig> = decode(&call.payload).map_err(invalid)?;
                encode(&handle.raft.pre_vote(rpc).await)
            }
            Ok(RaftKind::TransferLeader) => {
                let request: TransferLeaderRequest<TypeConfig> =
                    decode(&call.payload).map_err(invalid)?;
                let result = handle.raft.handle_transfer_leader(request).await;
                encode(&result.map_err(RaftError::<TypeConfig>::Fatal))
            }
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown raft kind {}",
                    call.kind
                )))
            }
        };
        payload
            .map(Bytes::from)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

fn invalid(error: std::io::Error) -> Status {
    Status::invalid_argument(format!("undecodable payload: {error}"))
}

#[tonic::async_trait]
impl Internal for InternalService {
    async fn raft_batch(
        &self,
        request: Request<RaftBatchRequest>,
    ) -> Result<Response<RaftBatchReply>, Status> {
        let request = request.into_inner();
        if request.from != 0 {
            self.multi
                .heard_from(request.from, request.boot, request.command_format);
        }
        let calls = request.calls;
        // Every call runs at once: a batch larger than any node sends would only cost memory.
        if calls.len() > RAFT_BATCH_MAX_CALLS {
            return Err(Status::invalid_argument(format!(
                "a batch carries at most {RAFT_BATCH_MAX_CALLS} calls, not {}",
                calls.len()
            )));
        }
        // The calls of a batch belong to different groups: run them side by side, so one group's
        // slow append does not hold back the others' (their log writes share fsyncs anyway).
        let calls = calls.into_iter().map(|call| self.raft_call(call));
        let replies = futures::future::join_all(calls)
            .await
            .into_iter()
            .map(call_reply)
            .collect();
        Ok(Response::new(RaftBatchReply { replies }))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftReply>, Status> {
        let mut chunks = request.into_inner();
        let first = chunks
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let handle = self.group(first.group)?;
        handle.touch();
        let (vote, meta): (Vote, SnapshotMeta) = decode(&first.header).map_err(invalid)?;
        let mut writer = SnapshotWriter::create(self.multi.db(), handle.group)
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut next = Some(first);
        loop {
            if let Some(chunk) = next.take() {
                if let Err(error) = writer.write_chunk(&chunk.data) {
                    writer.abort();
                    return Err(Status::internal(error.to_string()));
                }
            }
            match chunks.message().await {
                Ok(Some(chunk)) => next = Some(chunk),
                Ok(None) => break,
                Err(status) => {
                    writer.abort();
                    return Err(status);
                }
            }
        }
        let file = writer
            .finish()
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(group = %handle.group, last_log_id = ?meta.last_log_id, "installing snapshot from leader");
        let result = handle
            .raft
            .install_full_snapshot(
                vote,
                Snapshot {
                    meta,
                    snapshot: SnapshotData::File(file),
                },
            )
            .await
            .map_err(|fatal| fatal.to_string());
        let payload = encode(&result).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(RaftReply {
            payload: payload.into(),
        }))
    }

    async fn forward(
        &self,
        request: Request<ForwardRequest>,
    ) -> Result<Response<ForwardReply>, Status> {
        let request = request.into_inner();
        let payload = self
            .forward
            .handle(GroupId(request.group), request.payload)
            .await?;
        Ok(Response::new(ForwardReply { payload }))
    }
}
