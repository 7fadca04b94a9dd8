//! Raft RPCs over TCP: length-prefixed JSON frames, one request and one
//! reply at a time on a connection, each connection authenticated with the
//! cluster key and each frame carrying an HMAC (`auth`).
//!
//! ```text
//!  openraft replication ─> Peer (RaftNetwork) ──frame──> server task ─> Raft::append_entries
//!                                                                   ├─> Raft::vote
//!                                                                   ├─> Raft::install_snapshot
//!  ConfigService::write (follower) ─> forward() ──frame──>          ├─> execute (client_write,
//!                                                                   │    membership changes)
//!  ConfigService::call_member ─> call() (pooled) ──frame──>         └─> the data path's handler
//!                                                                        (opaque request, reply)
//! ```
//!
//! A frame is a big-endian `u32` length, that many bytes of JSON, and a
//! 32-byte tag. A [`Peer`] keeps one connection to its target and drops it
//! on any error or timeout, so the next call reconnects; a forwarded write
//! opens a connection of its own. A connection whose peer does not prove
//! the cluster key is closed before anything is read from it.
//!
//! A member's Raft address may list one address per network
//! (`10.1.0.1:7501,10.2.0.1:7501`). A connection starts with the one that
//! answered last; when it has not connected within [`STAGGER`] (a cut
//! network drops the SYN, so a connect would hang) or failed, the next is
//! tried alongside, and the first to prove the key wins. An established
//! connection that stops answering times out and is dropped, so the next
//! call connects again, by the network that still works.

use std::io;
use std::sync::Arc;
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
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::auth::{self, Direction, Session, TAG};
use super::execute::{execute, Forwarded, Outcome};
use super::leases::Leases;
use crate::config::store::{NodeId, TypeConfig};
use crate::wire::ClusterKey;
use crate::ProtocolVersion;

/// How long a peer may take to authenticate a new connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections authenticating at once; more are closed at once, so an
/// unauthenticated flood holds a bounded number of tasks and descriptors.
const MAX_HANDSHAKES: usize = 64;

/// How long a connection attempt on one network runs alone before the
/// next network is tried alongside it.
pub(super) const STAGGER: Duration = Duration::from_millis(150);

/// For each multi-network Raft address, which of its addresses connected
/// last (tried first next time).
static PREFERRED: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, usize>>> =
    std::sync::LazyLock::new(Default::default);

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
    /// The peer does not speak the authenticated Raft transport, or
    /// speaks an incompatible control protocol.
    #[error("Raft handshake failed: {0}")]
    Handshake(String),
    /// The peer did not prove the cluster key, or refused ours.
    #[error("Raft connection refused: authentication failed (cluster key mismatch?)")]
    Refused,
    /// A frame's tag did not check (altered, replayed or out of order).
    #[error("a Raft frame failed authentication")]
    BadFrame,
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
    /// A request of the data path for the member's data path (opaque
    /// here; see [`DataPathHandler`]).
    DataPath(String),
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
    /// To [`Request::DataPath`]: the handler's answer, or why there is none.
    DataPath(Result<String, String>),
}

/// Answers the data path's requests from other members (trellisd sets it;
/// control never reads them).
pub type DataPathHandler = Arc<
    dyn Fn(
            String,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>>
        + Send
        + Sync,
>;

/// Where a member's server finds the data path's handler, once set.
pub(super) type HandlerSlot = Arc<std::sync::OnceLock<DataPathHandler>>;

/// Authenticated connections to other members kept for the data path's
/// requests, by Raft address (one request at a time on each).
#[derive(Debug, Default)]
pub(super) struct Pool(std::sync::Mutex<std::collections::HashMap<String, Vec<Conn>>>);

/// Sends the data path's `request` to the member at `addr` on a pooled
/// connection (a new one if none is idle) and waits for its answer.
pub(super) async fn call(
    pool: &Pool,
    addr: &str,
    key: &ClusterKey,
    protocol: ProtocolVersion,
    request: String,
    ttl: Duration,
) -> Result<Result<String, String>, TransportError> {
    let idle = pool
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get_mut(addr)
        .and_then(Vec::pop);
    let call = async {
        let mut conn = match idle {
            Some(c) => c,
            None => connect(addr, key, protocol).await?,
        };
        let reply = round_trip(&mut conn, &Request::DataPath(request)).await?;
        Ok::<_, TransportError>((conn, reply))
    };
    match tokio::time::timeout(ttl, call).await {
        Err(_) => Err(TransportError::Timeout(ttl)),
        Ok(Err(e)) => Err(e),
        Ok(Ok((conn, Reply::DataPath(answer)))) => {
            pool.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(addr.to_owned())
                .or_default()
                .push(conn);
            Ok(answer)
        }
        Ok(Ok(_)) => Err(TransportError::Mismatch),
    }
}

async fn write_frame<W, T>(w: &mut W, dir: &mut Direction, value: &T) -> Result<(), TransportError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let body = serde_json::to_vec(value).map_err(TransportError::Encode)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&n| n as usize <= MAX_FRAME)
        .ok_or(TransportError::TooLarge(body.len()))?;
    let mut frame = Vec::with_capacity(4 + body.len() + TAG);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    frame.extend_from_slice(&dir.seal(&body));
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame and checks its tag; `Ok(None)` when the peer closed the
/// connection between frames.
async fn read_frame<R, T>(r: &mut R, dir: &mut Direction) -> Result<Option<T>, TransportError>
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
    let mut tag = [0u8; TAG];
    r.read_exact(&mut tag).await?;
    dir.open(&body, &tag)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(TransportError::Decode)
}

/// An authenticated connection to a peer.
#[derive(Debug)]
pub(super) struct Conn {
    stream: TcpStream,
    session: Session,
}

/// Connects to the member at `addr` (one address, or one per network
/// joined by commas) and proves the cluster key.
async fn connect(
    addr: &str,
    key: &ClusterKey,
    protocol: ProtocolVersion,
) -> Result<Conn, TransportError> {
    let addrs: Vec<String> = addr
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    if addrs.len() <= 1 {
        return connect_one(addr, key, protocol).await;
    }
    let preferred = {
        let p = PREFERRED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        p.get(addr).copied().unwrap_or(0) % addrs.len()
    };
    let order: Vec<usize> = (0..addrs.len())
        .map(|i| (preferred + i) % addrs.len())
        .collect();
    // Dropping the set (on return) aborts the attempts still running.
    let mut attempts = tokio::task::JoinSet::new();
    let mut started = 0;
    let mut last_error = None;
    loop {
        if started < order.len() {
            let i = order[started];
            let (a, key) = (addrs[i].clone(), key.clone());
            attempts.spawn(async move { (i, connect_one(&a, &key, protocol).await) });
            started += 1;
        }
        let next = if started < order.len() {
            match tokio::time::timeout(STAGGER, attempts.join_next()).await {
                Ok(next) => next,
                // Not connected yet: start the next network alongside.
                Err(_) => continue,
            }
        } else {
            attempts.join_next().await
        };
        match next {
            Some(Ok((i, Ok(conn)))) => {
                PREFERRED
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(addr.to_owned(), i);
                return Ok(conn);
            }
            Some(Ok((_, Err(e)))) => last_error = Some(e),
            // An attempt panicked: count it as failed.
            Some(Err(_)) => {}
            None => {
                return Err(last_error.unwrap_or_else(|| TransportError::Connect {
                    addr: addr.to_owned(),
                    source: io::Error::other("no address answered"),
                }))
            }
        }
    }
}

/// [`connect`] to one `IP:PORT`.
async fn connect_one(
    addr: &str,
    key: &ClusterKey,
    protocol: ProtocolVersion,
) -> Result<Conn, TransportError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|source| TransportError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    stream.set_nodelay(true)?;
    let session = auth::client(&mut stream, key, protocol).await?;
    Ok(Conn { stream, session })
}

async fn round_trip(conn: &mut Conn, request: &Request) -> Result<Reply, TransportError> {
    write_frame(&mut conn.stream, &mut conn.session.send, request).await?;
    read_frame(&mut conn.stream, &mut conn.session.recv)
        .await?
        .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof).into())
}

/// Sends `forwarded` to the member at `addr` (the leader, as far as this
/// member knows) on a connection of its own and waits for the outcome.
pub(super) async fn forward(
    addr: &str,
    key: &ClusterKey,
    protocol: ProtocolVersion,
    forwarded: Forwarded,
    ttl: Duration,
) -> Result<Outcome, TransportError> {
    let call = async {
        let mut conn = connect(addr, key, protocol).await?;
        round_trip(&mut conn, &Request::Forward(forwarded)).await
    };
    match tokio::time::timeout(ttl, call).await {
        Err(_) => Err(TransportError::Timeout(ttl)),
        Ok(Err(e)) => Err(e),
        Ok(Ok(Reply::Forward(outcome))) => Ok(outcome),
        Ok(Ok(_)) => Err(TransportError::Mismatch),
    }
}

/// What a member's Raft server answers with.
#[derive(Clone)]
pub(super) struct Server {
    pub(super) raft: Raft<TypeConfig>,
    pub(super) leases: Arc<Leases>,
    /// How long a forwarded write may take.
    pub(super) write_timeout: Duration,
    pub(super) key: ClusterKey,
    pub(super) protocol: ProtocolVersion,
    pub(super) handler: HandlerSlot,
}

/// Accepts connections on `listener` and serves each on a task of its own,
/// until the task running this is aborted.
pub(super) async fn serve(listener: TcpListener, server: Server) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Ok(permit) = Arc::clone(&handshakes).try_acquire_owned() else {
                    tracing::warn!(%peer, "too many Raft connections authenticating; closed");
                    continue;
                };
                let server = server.clone();
                tokio::spawn(async move {
                    match serve_connection(stream, &server, permit).await {
                        Err(e @ (TransportError::Refused | TransportError::Handshake(_))) => {
                            tracing::warn!(%peer, error = %e, "Raft connection refused")
                        }
                        Err(e) => tracing::debug!(%peer, error = %e, "Raft connection closed"),
                        Ok(()) => {}
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
    server: &Server,
    permit: OwnedSemaphorePermit,
) -> Result<(), TransportError> {
    stream.set_nodelay(true)?;
    let mut session = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        auth::server(&mut stream, &server.key, server.protocol),
    )
    .await
    .map_err(|_| TransportError::Timeout(HANDSHAKE_TIMEOUT))??;
    drop(permit);
    let raft = &server.raft;
    while let Some(request) = read_frame::<_, Request>(&mut stream, &mut session.recv).await? {
        let reply = match request {
            Request::AppendEntries(rpc) => Reply::AppendEntries(raft.append_entries(rpc).await),
            Request::Vote(rpc) => Reply::Vote(raft.vote(rpc).await),
            Request::InstallSnapshot(rpc) => {
                Reply::InstallSnapshot(raft.install_snapshot(rpc).await)
            }
            Request::Forward(forwarded) => {
                Reply::Forward(execute(raft, &server.leases, forwarded, server.write_timeout).await)
            }
            Request::DataPath(request) => Reply::DataPath(match server.handler.get() {
                Some(h) => h(request).await,
                None => Err("this member serves no data path".to_owned()),
            }),
        };
        write_frame(&mut stream, &mut session.send, &reply).await?;
    }
    Ok(())
}

/// openraft's network factory: one [`Peer`] per replication target.
#[derive(Debug, Clone)]
pub(super) struct Network {
    /// This member's node id, for error reports.
    pub(super) id: NodeId,
    /// The cluster key connections are authenticated with.
    pub(super) key: ClusterKey,
    /// The control protocol this member speaks.
    pub(super) protocol: ProtocolVersion,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            id: self.id,
            target,
            addr: node.addr.clone(),
            key: self.key.clone(),
            protocol: self.protocol,
            conn: None,
        }
    }
}

/// A connection to one other member, opened on first use.
#[derive(Debug)]
pub(super) struct Peer {
    id: NodeId,
    target: NodeId,
    addr: String,
    key: ClusterKey,
    protocol: ProtocolVersion,
    conn: Option<Conn>,
}

impl Peer {
    async fn call(&mut self, request: Request, ttl: Duration) -> Result<Reply, TransportError> {
        let result = tokio::time::timeout(ttl, async {
            let conn = match &mut self.conn {
                Some(conn) => conn,
                None => self
                    .conn
                    .insert(connect(&self.addr, &self.key, self.protocol).await?),
            };
            round_trip(conn, &request).await
        })
        .await
        .unwrap_or(Err(TransportError::Timeout(ttl)));
        if result.is_err() {
            // The stream may be mid-frame: start over on the next call.
            self.conn = None;
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
    async fn frames_round_trip_and_bad_ones_are_refused() {
        let key = ClusterKey::new(b"transport-test-key").expect("key");
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let v = ProtocolVersion::CURRENT;
        let (c, s) = tokio::join!(auth::client(&mut a, &key, v), auth::server(&mut b, &key, v));
        let (mut c, mut s) = (c.expect("client"), s.expect("server"));
        let request = Request::Forward(Forwarded::Write(Command::CreateTarget {
            iqn: "iqn.2024-01.org.example:t1".to_owned(),
            alias: None,
        }));
        write_frame(&mut a, &mut c.send, &request)
            .await
            .expect("write");
        let back: Request = read_frame(&mut b, &mut s.recv)
            .await
            .expect("read")
            .expect("a frame");
        assert_eq!(format!("{back:?}"), format!("{request:?}"));

        // A frame whose body was altered on the way fails its tag.
        let body = b"{}";
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(b"[]");
        frame.extend_from_slice(&c.send.seal(body));
        a.write_all(&frame).await.expect("write");
        let err = read_frame::<_, Request>(&mut b, &mut s.recv)
            .await
            .expect_err("altered");
        assert!(matches!(err, TransportError::BadFrame), "{err:?}");

        a.write_all(&(MAX_FRAME as u32 + 1).to_be_bytes())
            .await
            .expect("write");
        let err = read_frame::<_, Request>(&mut b, &mut s.recv)
            .await
            .expect_err("too large");
        assert!(matches!(err, TransportError::TooLarge(_)));

        drop(a);
        assert!(read_frame::<_, Request>(&mut b, &mut s.recv)
            .await
            .expect("clean EOF")
            .is_none());
    }
}
