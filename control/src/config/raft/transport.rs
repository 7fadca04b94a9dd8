//! Raft RPCs over TCP: length-prefixed JSON frames, one request and one
//! reply at a time on a connection.
//!
//! ```text
//!  openraft replication ─> Peer (RaftNetwork) ──frame──> server task ─> Raft::append_entries
//!                                                                   ├─> Raft::vote
//!                                                                   ├─> Raft::install_snapshot
//!  ConfigService::write (follower) ─> forward() ──frame──>          └─> execute (client_write,
//!                                                                        membership changes)
//! ```
//!
//! A frame is a big-endian `u32` length then that many bytes of JSON. A
//! [`Peer`] keeps one connection to its target and drops it on any error or
//! timeout, so the next call reconnects; a forwarded write opens a
//! connection of its own.

use std::io;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError as OpenRaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::execute::{execute, Forwarded, Outcome};
use crate::config::store::{NodeId, TypeConfig};

/// The largest frame accepted (a snapshot chunk or a batch of entries is
/// far smaller).
const MAX_FRAME: usize = 64 << 20;

/// Why an RPC could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// No connection could be opened to the peer.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The peer's Raft address.
        addr: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Reading or writing the connection failed.
    #[error("Raft connection I/O failed")]
    Io(#[from] io::Error),
    /// The peer announced a frame above the limit.
    #[error("Raft frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// A message could not be serialized.
    #[error("cannot encode a Raft message")]
    Encode(#[source] serde_json::Error),
    /// A frame did not hold the expected message.
    #[error("cannot decode a Raft message")]
    Decode(#[source] serde_json::Error),
    /// The peer did not reply in time.
    #[error("no reply from the peer within {0:?}")]
    Timeout(Duration),
    /// The peer replied to a different kind of request.
    #[error("the peer's reply does not match the request")]
    Mismatch,
}

/// What a member asks another.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Request {
    /// Replication and heartbeats, from the leader.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// A candidate asking for a vote.
    Vote(VoteRequest<NodeId>),
    /// A snapshot chunk, from the leader.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A write (or membership change) a follower forwards to the leader.
    Forward(Forwarded),
}

/// The answer to a [`Request`], of the same kind.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Reply {
    /// To [`Request::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<NodeId>, OpenRaftError<NodeId>>),
    /// To [`Request::Vote`].
    Vote(Result<VoteResponse<NodeId>, OpenRaftError<NodeId>>),
    /// To [`Request::InstallSnapshot`].
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, OpenRaftError<NodeId, InstallSnapshotError>>,
    ),
    /// To [`Request::Forward`].
    Forward(Outcome),
}

async fn write_frame<W, T>(w: &mut W, value: &T) -> Result<(), TransportError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let body = serde_json::to_vec(value).map_err(TransportError::Encode)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&n| n as usize <= MAX_FRAME)
        .ok_or(TransportError::TooLarge(body.len()))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame; `Ok(None)` when the peer closed the connection
/// between frames.
async fn read_frame<R, T>(r: &mut R) -> Result<Option<T>, TransportError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(TransportError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(TransportError::Decode)
}

async fn connect(addr: &str) -> Result<TcpStream, TransportError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| TransportError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn round_trip(stream: &mut TcpStream, request: &Request) -> Result<Reply, TransportError> {
    write_frame(stream, request).await?;
    read_frame(stream)
        .await?
        .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof).into())
}

/// Sends `forwarded` to the member at `addr` (the leader, as far as this
/// member knows) on a connection of its own and waits for the outcome.
pub(super) async fn forward(
    addr: &str,
    forwarded: Forwarded,
    ttl: Duration,
) -> Result<Outcome, TransportError> {
    let call = async {
        let mut stream = connect(addr).await?;
        round_trip(&mut stream, &Request::Forward(forwarded)).await
    };
    match tokio::time::timeout(ttl, call).await {
        Err(_) => Err(TransportError::Timeout(ttl)),
        Ok(Err(e)) => Err(e),
        Ok(Ok(Reply::Forward(outcome))) => Ok(outcome),
        Ok(Ok(_)) => Err(TransportError::Mismatch),
    }
}

/// Accepts connections on `listener` and serves each on a task of its own,
/// until the task running this is aborted.
pub(super) async fn serve(listener: TcpListener, raft: Raft<TypeConfig>, write_timeout: Duration) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let raft = raft.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(stream, &raft, write_timeout).await {
                        tracing::debug!(%peer, error = %e, "Raft connection closed");
                    }
                });
            }
            Err(e) => {
                // Out of descriptors or similar: wait rather than spin.
                tracing::warn!(error = %e, "cannot accept a Raft connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    raft: &Raft<TypeConfig>,
    write_timeout: Duration,
) -> Result<(), TransportError> {
    stream.set_nodelay(true)?;
    while let Some(request) = read_frame::<_, Request>(&mut stream).await? {
        let reply = match request {
            Request::AppendEntries(rpc) => Reply::AppendEntries(raft.append_entries(rpc).await),
            Request::Vote(rpc) => Reply::Vote(raft.vote(rpc).await),
            Request::InstallSnapshot(rpc) => {
                Reply::InstallSnapshot(raft.install_snapshot(rpc).await)
            }
            Request::Forward(forwarded) => {
                Reply::Forward(execute(raft, forwarded, write_timeout).await)
            }
        };
        write_frame(&mut stream, &reply).await?;
    }
    Ok(())
}

/// openraft's network factory: one [`Peer`] per replication target.
#[derive(Debug, Clone)]
pub(super) struct Network {
    /// This member's node id, for error reports.
    pub(super) id: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            id: self.id,
            target,
            addr: node.addr.clone(),
            stream: None,
        }
    }
}

/// A connection to one other member, opened on first use.
#[derive(Debug)]
pub(super) struct Peer {
    id: NodeId,
    target: NodeId,
    addr: String,
    stream: Option<TcpStream>,
}

impl Peer {
    async fn call(&mut self, request: Request, ttl: Duration) -> Result<Reply, TransportError> {
        let result = tokio::time::timeout(ttl, async {
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => self.stream.insert(connect(&self.addr).await?),
            };
            round_trip(stream, &request).await
        })
        .await
        .unwrap_or(Err(TransportError::Timeout(ttl)));
        if result.is_err() {
            // The stream may be mid-frame: start over on the next call.
            self.stream = None;
        }
        result
    }

    /// openraft's error for a failed call.
    fn rpc_error<E: std::error::Error>(
        &self,
        action: RPCTypes,
        e: TransportError,
    ) -> RPCError<NodeId, BasicNode, E> {
        match e {
            TransportError::Connect { .. } => RPCError::Unreachable(Unreachable::new(&e)),
            TransportError::Timeout(timeout) => RPCError::Timeout(Timeout {
                action,
                id: self.id,
                target: self.target,
                timeout,
            }),
            e => RPCError::Network(NetworkError::new(&e)),
        }
    }

    /// openraft's error for a call the peer answered with an error.
    fn remote<E: std::error::Error>(&self, e: E) -> RPCError<NodeId, BasicNode, E> {
        RPCError::RemoteError(RemoteError::new_with_node(
            self.target,
            BasicNode::new(self.addr.clone()),
            e,
        ))
    }
}

type RpcResult<T, E = OpenRaftError<NodeId>> = Result<T, RPCError<NodeId, BasicNode, E>>;

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let action = RPCTypes::AppendEntries;
        match self
            .call(Request::AppendEntries(rpc), option.hard_ttl())
            .await
        {
            Ok(Reply::AppendEntries(reply)) => reply.map_err(|e| self.remote(e)),
            Ok(_) => Err(self.rpc_error(action, TransportError::Mismatch)),
            Err(e) => Err(self.rpc_error(action, e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, OpenRaftError<NodeId, InstallSnapshotError>>
    {
        let action = RPCTypes::InstallSnapshot;
        match self
            .call(Request::InstallSnapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(Reply::InstallSnapshot(reply)) => reply.map_err(|e| self.remote(e)),
            Ok(_) => Err(self.rpc_error(action, TransportError::Mismatch)),
            Err(e) => Err(self.rpc_error(action, e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let action = RPCTypes::Vote;
        match self.call(Request::Vote(rpc), option.hard_ttl()).await {
            Ok(Reply::Vote(reply)) => reply.map_err(|e| self.remote(e)),
            Ok(_) => Err(self.rpc_error(action, TransportError::Mismatch)),
            Err(e) => Err(self.rpc_error(action, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Command;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let request = Request::Forward(Forwarded::Write(Command::CreateTarget {
            iqn: "iqn.2024-01.org.example:t1".to_owned(),
            alias: None,
        }));
        write_frame(&mut a, &request).await.expect("write");
        let back: Request = read_frame(&mut b).await.expect("read").expect("a frame");
        assert_eq!(format!("{back:?}"), format!("{request:?}"));

        a.write_all(&(MAX_FRAME as u32 + 1).to_be_bytes())
            .await
            .expect("write");
        let err = read_frame::<_, Request>(&mut b)
            .await
            .expect_err("too large");
        assert!(matches!(err, TransportError::TooLarge(_)));

        drop(a);
        assert!(read_frame::<_, Request>(&mut b)
            .await
            .expect("clean EOF")
            .is_none());
    }
}
