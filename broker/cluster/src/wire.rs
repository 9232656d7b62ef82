//! The cluster wire protocol: length-prefixed frames (u32 big-endian length, then a
//! postcard body), bounded by `cluster.max_frame_bytes` before anything is buffered.
//!
//! Every connection opens with one [`Hello`] frame that picks the channel.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::ClusterError;
use crate::raft::TypeConfig;
use crate::types::{Command, LogIndex, NodeId, NodeRole};

/// The first frame of every connection.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Hello {
    /// Ask the node who it is; answered with one [`Identity`], then closed.
    Identify,
    /// Raft RPCs from core `from`: [`RaftRequest`] / [`RaftResponse`] pairs.
    Raft {
        /// The sending core.
        from: NodeId,
    },
    /// Writes to replicate: [`WriteRequest`] / [`WriteResponse`] pairs.
    Write,
    /// Subscribe to committed entries after `from` ([`StreamMsg`] frames follow).
    Stream {
        /// The replicant.
        node: NodeId,
        /// Last index the replicant applied (0: none, send a snapshot).
        from: LogIndex,
    },
    /// A forwarding link from `from`: link frames follow (see module `links`), and
    /// cumulative acknowledgements go back.
    Link {
        /// The sending node.
        from: NodeId,
        /// The sending process's incarnation: sequence numbers restart with it.
        epoch: u64,
    },
    /// The leader's liveness poll: answered with one [`Liveness`], then closed.
    Liveness,
    /// Session takeovers: [`SessionRequest`] / [`SessionAnswer`] pairs (a client connected
    /// to the asking node).
    Sessions,
}

/// Hand over (or, with `discard`, end) this node's session of `client_id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SessionRequest {
    /// The client identifier.
    pub client_id: String,
    /// Clean start: end the session here instead of sending it.
    pub discard: bool,
}

/// Answer to a [`SessionRequest`]: the session as the server encoded it, if this node had
/// it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SessionAnswer(pub Option<Vec<u8>>);

/// Answer to [`Hello::Liveness`]: the replicants this core streams to now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Liveness {
    pub streaming: Vec<NodeId>,
}

/// Answer to [`Hello::Identify`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Identity {
    pub name: String,
    pub id: NodeId,
    pub role: NodeRole,
    pub addr: String,
    /// Whether this core holds Raft state (it is part of a formed group).
    pub initialized: bool,
}

/// A Raft RPC.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RaftRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

/// The answer to a [`RaftRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RaftResponse {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
}

/// A command to replicate, sent to any core (which forwards to the leader).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WriteRequest {
    pub cmd: Command,
    /// How many cores already forwarded it (bounded to stop loops).
    pub hops: u8,
}

/// The log index the command was committed at, or why it was not.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WriteResponse(pub Result<LogIndex, String>);

/// What a core streams to a replicant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum StreamMsg {
    /// One part of a snapshot of the state as of `index` (bootstrap); `last` ends it.
    Snapshot {
        index: LogIndex,
        chunk: Vec<u8>,
        last: bool,
    },
    /// A committed entry (`None`: an entry without a command, e.g. Raft membership).
    Entry {
        index: LogIndex,
        cmd: Option<Command>,
    },
    /// Everything committed before the subscription was sent: the replicant is live.
    Live { committed: LogIndex },
    /// Periodic, when idle: the core's applied index, for lag.
    Heartbeat { committed: LogIndex },
}

/// Writes one frame.
pub(crate) async fn write_frame<W, T>(w: &mut W, msg: &T, max: usize) -> Result<(), ClusterError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let mut buf = vec![0u8; 4];
    buf = postcard::to_extend(msg, buf).map_err(|e| ClusterError::Decode(e.to_string()))?;
    let len = buf.len() - 4;
    if len > max {
        return Err(ClusterError::FrameTooLarge { len, max });
    }
    // `len <= max`, and `max` is validated far below u32::MAX in practice; saturate anyway.
    let len32 = u32::try_from(len).unwrap_or(u32::MAX);
    buf[..4].copy_from_slice(&len32.to_be_bytes());
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame; the length is checked against `max` before the body is buffered.
pub(crate) async fn read_frame<R, T>(r: &mut R, max: usize) -> Result<T, ClusterError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(ClusterError::FrameTooLarge { len, max });
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    postcard::from_bytes(&body).map_err(|e| ClusterError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::error::{Fatal, SnapshotMismatch};
    use openraft::{SnapshotSegmentId, Vote};

    async fn round_trip<T: Serialize + DeserializeOwned>(msg: &T) -> T {
        let mut buf = Vec::new();
        write_frame(&mut buf, msg, 1 << 20).await.unwrap();
        let mut r = &buf[..];
        read_frame(&mut r, 1 << 20).await.unwrap()
    }

    #[tokio::test]
    async fn raft_messages_and_errors_round_trip() {
        let v = round_trip(&RaftResponse::Vote(Ok(VoteResponse {
            vote: Vote::new(3, 7),
            vote_granted: true,
            last_log_id: None,
        })))
        .await;
        assert!(matches!(v, RaftResponse::Vote(Ok(r)) if r.vote_granted));
        let e = round_trip(&RaftResponse::Snapshot(Err(RaftError::APIError(
            InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
                expect: SnapshotSegmentId {
                    id: "a".into(),
                    offset: 0,
                },
                got: SnapshotSegmentId {
                    id: "b".into(),
                    offset: 5,
                },
            }),
        ))))
        .await;
        assert!(matches!(
            e,
            RaftResponse::Snapshot(Err(RaftError::APIError(
                InstallSnapshotError::SnapshotMismatch(_)
            )))
        ));
        let f = round_trip(&RaftResponse::Append(Err(RaftError::Fatal(Fatal::Stopped)))).await;
        assert!(matches!(
            f,
            RaftResponse::Append(Err(RaftError::Fatal(Fatal::Stopped)))
        ));
    }

    #[tokio::test]
    async fn oversized_frames_are_refused_before_buffering() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&(10_000_000u32).to_be_bytes());
        let mut r = &buf[..];
        let err = read_frame::<_, WriteResponse>(&mut r, 1024)
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            ClusterError::FrameTooLarge {
                len: 10_000_000,
                max: 1024
            }
        ));
        let big = WriteResponse(Err("x".repeat(2048)));
        let err = write_frame(&mut Vec::new(), &big, 1024).await.unwrap_err();
        assert!(matches!(err, ClusterError::FrameTooLarge { .. }));
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&3u32.to_be_bytes());
        buf.extend_from_slice(&[0xff, 0xff, 0xff]);
        let mut r = &buf[..];
        assert!(read_frame::<_, Hello>(&mut r, 1024).await.is_err());
    }
}
