//! The Raft network client: one TCP connection per peer core, request/response frames
//! ([`RaftRequest`] / [`RaftResponse`]), reconnected on the next RPC after any error.

use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use tokio::net::TcpStream;

use super::TypeConfig;
use crate::error::ClusterError;
use crate::types::NodeId;
use crate::wire::{Hello, RaftRequest, RaftResponse, read_frame, write_frame};

/// Creates [`PeerClient`]s.
#[derive(Debug, Clone)]
pub(crate) struct NetworkFactory {
    pub me: NodeId,
    pub max_frame: usize,
    pub connect_timeout: Duration,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            factory: self.clone(),
            target,
            addr: node.addr.clone(),
            conn: None,
        }
    }
}

/// The connection to one peer core.
pub(crate) struct PeerClient {
    factory: NetworkFactory,
    target: NodeId,
    addr: String,
    conn: Option<TcpStream>,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

enum CallError {
    Unreachable(ClusterError),
    Network(ClusterError),
    /// The request did not fit in one frame; nothing was written.
    TooLarge,
}

impl CallError {
    fn into_rpc<E: std::error::Error>(self) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        match self {
            CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Network(e) => RPCError::Network(NetworkError::new(&e)),
            CallError::TooLarge => RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(1)),
        }
    }
}

impl PeerClient {
    async fn connect(&mut self) -> Result<TcpStream, CallError> {
        let fut = TcpStream::connect(self.addr.as_str());
        let mut s = match tokio::time::timeout(self.factory.connect_timeout, fut).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(CallError::Unreachable(e.into())),
            Err(_) => {
                let ms = self.factory.connect_timeout.as_millis() as u64;
                return Err(CallError::Unreachable(ClusterError::Timeout(ms)));
            }
        };
        let _ = s.set_nodelay(true);
        let hello = Hello::Raft {
            from: self.factory.me,
        };
        write_frame(&mut s, &hello, self.factory.max_frame)
            .await
            .map_err(CallError::Unreachable)?;
        Ok(s)
    }

    async fn call(&mut self, req: RaftRequest, ttl: Duration) -> Result<RaftResponse, CallError> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.connect().await?,
        };
        let max = self.factory.max_frame;
        if let RaftRequest::Append(r) = &req {
            let size = postcard::experimental::serialized_size(r).unwrap_or(usize::MAX);
            if size + 16 > max {
                self.conn = Some(conn);
                return Err(CallError::TooLarge);
            }
        }
        let exchange = async {
            write_frame(&mut conn, &req, max).await?;
            read_frame::<_, RaftResponse>(&mut conn, max).await
        };
        match tokio::time::timeout(ttl, exchange).await {
            Ok(Ok(resp)) => {
                self.conn = Some(conn);
                Ok(resp)
            }
            Ok(Err(e)) => Err(CallError::Network(e)),
            Err(_) => Err(CallError::Network(ClusterError::Timeout(
                ttl.as_millis() as u64
            ))),
        }
    }

    fn remote<E: std::error::Error>(&self, e: RaftError<NodeId, E>) -> RpcErr<E> {
        RPCError::RemoteError(RemoteError::new_with_node(
            self.target,
            BasicNode::new(self.addr.clone()),
            e,
        ))
    }
}

fn mismatch<E: std::error::Error>() -> RpcErr<E> {
    let e = ClusterError::Protocol("response of the wrong kind".into());
    RPCError::Network(NetworkError::new(&e))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        // Too many entries for one frame: openraft retries with fewer (half, at least one;
        // one entry always fits because batches are bounded to a quarter of a frame).
        let half = (rpc.entries.len() as u64 / 2).max(1);
        match self.call(RaftRequest::Append(rpc), option.hard_ttl()).await {
            Ok(RaftResponse::Append(r)) => r.map_err(|e| self.remote(e)),
            Ok(_) => Err(mismatch()),
            Err(CallError::TooLarge) => Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(half),
            )),
            Err(e) => Err(e.into_rpc()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        match self
            .call(RaftRequest::Snapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(RaftResponse::Snapshot(r)) => r.map_err(|e| self.remote(e)),
            Ok(_) => Err(mismatch()),
            Err(e) => Err(e.into_rpc()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        match self.call(RaftRequest::Vote(rpc), option.hard_ttl()).await {
            Ok(RaftResponse::Vote(r)) => r.map_err(|e| self.remote(e)),
            Ok(_) => Err(mismatch()),
            Err(e) => Err(e.into_rpc()),
        }
    }
}
