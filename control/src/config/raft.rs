//! The Raft node that replicates the configuration: openraft on the redb
//! store, its RPCs over TCP, and [`ConfigService`], the
//! [`ClusterService`] the management API and trellisd use.
//!
//! ```text
//!  write(cmd) ──> leader here? ── yes ─> Raft::client_write ─────────────┐
//!                      │                                                 ├─> Response | ServiceError
//!                      └─ no ─> forward to the leader's Raft address ────┘
//!                               (transport, served there by the same code)
//!
//!  peers <── AppendEntries / Vote / InstallSnapshot ──> transport::serve ─> Raft
//!  config() <── ConfigReader (the applied state, local)
//! ```
//!
//! The service owns a small tokio runtime, so a synchronous program can
//! start it and use the blocking methods ([`ConfigService::write_blocking`],
//! [`ConfigService::initialize`]...); async callers use
//! [`ClusterService::write`], whose future runs on that runtime and can be
//! awaited from any executor.

mod auth;
mod execute;
mod leases;
mod transport;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use openraft::error::{Fatal, InitializeError, RaftError as OpenRaftError};
use openraft::{BasicNode, Raft, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::execute::{execute, Forwarded, Outcome};
use self::leases::Leases;
pub use self::transport::{DataPathHandler, TransportError};
use super::store::{LogStore, NodeId, TypeConfig};
use super::{Command, ConfigReader, ConfigStore, Response};
use crate::lease::LeaseTimers;
use crate::membership::MemberStatus;
use crate::service::{BoxFuture, ClusterService, RaftStatus, ServiceError};
use crate::wire::ClusterKey;
use crate::MemberId;
use crate::ProtocolVersion;

/// How many members a write may be passed along (a leader that lost its
/// role naming the next one) before giving up.
const MAX_HOPS: usize = 3;

/// A member's Raft address: one `IP:PORT` per network it is reached on
/// (a member on two storage networks lists both, so Raft, and the leases
/// that ride on it, survive the loss of either network). A connection tries
/// them in turn, the one that answered last first (see `transport`). In the
/// membership it is written as the addresses joined by commas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftAddress(Vec<SocketAddr>);

impl RaftAddress {
    /// The address of a member reached at each of `addrs` (at least one).
    pub fn new(addrs: Vec<SocketAddr>) -> Option<RaftAddress> {
        (!addrs.is_empty()).then_some(RaftAddress(addrs))
    }

    /// Each network's address, in the order given.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.0
    }
}

impl From<SocketAddr> for RaftAddress {
    fn from(a: SocketAddr) -> Self {
        RaftAddress(vec![a])
    }
}

impl fmt::Display for RaftAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

/// Timers and sizes of the Raft node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftSettings {
    /// The cluster's name, for logs.
    pub cluster_name: String,
    /// How often the leader sends heartbeats.
    pub heartbeat_interval: Duration,
    /// Shortest time without a leader before a follower stands.
    pub election_timeout_min: Duration,
    /// Longest such time (each follower picks one in between).
    pub election_timeout_max: Duration,
    /// How long a write may take, forwarding and commit included.
    pub write_timeout: Duration,
    /// How long a write waits for a leader to be known before
    /// [`ServiceError::NoLeader`].
    pub leader_wait: Duration,
    /// Entries applied since the last snapshot that trigger a new one.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot (for lagging followers); older
    /// ones are purged and a follower that far behind gets the snapshot.
    pub logs_kept_after_snapshot: u64,
    /// Worker threads of the node's runtime.
    pub worker_threads: usize,
    /// The control protocol spoken: peers of another major version are
    /// refused at the Raft handshake.
    pub protocol: ProtocolVersion,
    /// The lease timers (the same on every member).
    pub leases: LeaseTimers,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            cluster_name: "trellis".to_owned(),
            heartbeat_interval: Duration::from_millis(250),
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
            write_timeout: Duration::from_secs(10),
            leader_wait: Duration::from_secs(3),
            snapshot_every: 1000,
            logs_kept_after_snapshot: 1000,
            worker_threads: 2,
            protocol: ProtocolVersion::CURRENT,
            leases: LeaseTimers::default(),
        }
    }
}

impl RaftSettings {
    fn openraft(&self) -> Result<openraft::Config, RaftError> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        openraft::Config {
            cluster_name: self.cluster_name.clone(),
            heartbeat_interval: ms(self.heartbeat_interval),
            election_timeout_min: ms(self.election_timeout_min),
            election_timeout_max: ms(self.election_timeout_max),
            install_snapshot_timeout: ms(self.write_timeout),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.logs_kept_after_snapshot,
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| RaftError::Settings(Box::new(e)))
    }
}

/// Why the Raft node could not start, initialize or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    /// The node's tokio runtime could not be built.
    #[error("cannot start the Raft runtime")]
    Runtime(#[source] std::io::Error),
    /// The Raft address could not be bound.
    #[error("cannot listen for Raft on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// openraft refused the timers.
    #[error("invalid Raft settings")]
    Settings(#[source] Box<openraft::ConfigError>),
    /// openraft could not start on the store.
    #[error("cannot start the Raft node")]
    Start(#[source] Box<Fatal<NodeId>>),
    /// The cluster could not be initialized (this node not among the
    /// voters, or the node stopped).
    #[error("cannot initialize the Raft cluster")]
    Initialize(#[source] Box<OpenRaftError<NodeId, InitializeError<NodeId, BasicNode>>>),
    /// The Raft core ended abnormally while shutting down.
    #[error("the Raft node did not stop cleanly")]
    Shutdown(#[source] tokio::task::JoinError),
    /// The node's runtime is gone.
    #[error("the Raft node has stopped")]
    Stopped,
}

/// Where [`ClusterService::members`] comes from: typically
/// `node::Node::status().members`.
pub type MembersSource = Arc<dyn Fn() -> Vec<MemberStatus> + Send + Sync>;

/// What the runtime's tasks share.
struct Shared {
    id: NodeId,
    addr: RaftAddress,
    /// Authenticates Raft connections, made and accepted.
    key: ClusterKey,
    raft: Raft<TypeConfig>,
    reader: ConfigReader,
    /// The log store, for the commit index it saves.
    log: LogStore,
    settings: RaftSettings,
    /// The leases this node granted while leading.
    leases: Arc<Leases>,
    /// The data path's handler of other members' requests, once set.
    handler: transport::HandlerSlot,
    /// Connections kept for the data path's requests to other members.
    pool: transport::Pool,
}

/// One member's Raft node and the configuration it replicates.
pub struct ConfigService {
    shared: Arc<Shared>,
    handle: Handle,
    runtime: Option<Runtime>,
    /// One per address served on.
    servers: Vec<JoinHandle<()>>,
    members: Option<MembersSource>,
}

impl fmt::Debug for ConfigService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigService")
            .field("id", &self.shared.id)
            .field("addr", &self.shared.addr)
            .field("running", &self.runtime.is_some())
            .finish_non_exhaustive()
    }
}

/// Runs `fut` on the node's runtime and blocks the calling thread until it
/// ends; usable from inside another runtime too (it only blocks a thread).
fn run_blocking<F>(handle: &Handle, fut: F) -> Result<F::Output, RaftError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    handle.spawn(async move {
        // The receiver only goes away with the caller's thread.
        let _ = tx.send(fut.await);
    });
    rx.recv().map_err(|_| RaftError::Stopped)
}

/// Stops a runtime: waits for its tasks to be dropped (which closes the
/// store), or lets them go in the background when called from an async
/// context, where blocking is not allowed.
fn stop_runtime(runtime: Runtime) {
    if Handle::try_current().is_ok() {
        runtime.shutdown_background();
    } else {
        drop(runtime);
    }
}

/// A runtime that is stopped with [`stop_runtime`] if `start` fails.
struct RuntimeGuard(Option<Runtime>);

impl Drop for RuntimeGuard {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            stop_runtime(runtime);
        }
    }
}

impl ConfigService {
    /// Starts the Raft node `node_id` on `store`, serving Raft on each
    /// address of `raft_addr` (port 0 picks one; see
    /// [`ConfigService::raft_addr`]).
    /// A store that was part of a cluster rejoins it; a new one waits for
    /// [`ConfigService::initialize`] or to be added by the leader.
    pub fn start(
        node_id: u64,
        raft_addr: impl Into<RaftAddress>,
        store: ConfigStore,
        key: ClusterKey,
        settings: RaftSettings,
    ) -> Result<ConfigService, RaftError> {
        let raft_addr: RaftAddress = raft_addr.into();
        let config = Arc::new(settings.openraft()?);
        let mut guard = RuntimeGuard(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(settings.worker_threads.max(1))
                .thread_name(format!("raft-{node_id}"))
                .enable_all()
                .build()
                .map_err(RaftError::Runtime)?,
        ));
        let handle = match &guard.0 {
            Some(runtime) => runtime.handle().clone(),
            None => return Err(RaftError::Stopped),
        };
        let reader = store.reader();
        let (log, state_machine) = store.into_raft_parts();
        let log_handle = log.clone();
        let network = transport::Network {
            id: node_id,
            key: key.clone(),
            protocol: settings.protocol,
        };
        let (listeners, addr, raft) = run_blocking(&handle, async move {
            let mut listeners = Vec::new();
            let mut bound = Vec::new();
            for &want in raft_addr.addrs() {
                let bind_error = |source| RaftError::Bind { addr: want, source };
                let listener = TcpListener::bind(want).await.map_err(bind_error)?;
                bound.push(listener.local_addr().map_err(bind_error)?);
                listeners.push(listener);
            }
            let raft = Raft::new(node_id, config, network, log, state_machine)
                .await
                .map_err(|e| RaftError::Start(Box::new(e)))?;
            Ok::<_, RaftError>((listeners, RaftAddress(bound), raft))
        })??;
        let leases = Arc::new(Leases::new(settings.leases, reader.clone()));
        let handler = transport::HandlerSlot::default();
        let servers = listeners
            .into_iter()
            .map(|listener| {
                handle.spawn(transport::serve(
                    listener,
                    transport::Server {
                        raft: raft.clone(),
                        leases: Arc::clone(&leases),
                        write_timeout: settings.write_timeout,
                        key: key.clone(),
                        protocol: settings.protocol,
                        handler: Arc::clone(&handler),
                    },
                ))
            })
            .collect();
        tracing::info!(node_id, %addr, "Raft node started");
        Ok(ConfigService {
            shared: Arc::new(Shared {
                id: node_id,
                addr,
                key,
                raft,
                reader,
                log: log_handle,
                settings,
                leases,
                handler,
                pool: transport::Pool::default(),
            }),
            handle,
            runtime: guard.0.take(),
            servers,
            members: None,
        })
    }

    /// Makes [`ClusterService::members`] answer from `source`.
    pub fn with_members(mut self, source: MembersSource) -> ConfigService {
        self.members = Some(source);
        self
    }

    /// This node's Raft id.
    pub fn node_id(&self) -> u64 {
        self.shared.id
    }

    /// The (first) address Raft is served on.
    pub fn raft_addr(&self) -> SocketAddr {
        self.shared.addr.addrs()[0]
    }

    /// Every address Raft is served on, one per network.
    pub fn raft_address(&self) -> &RaftAddress {
        &self.shared.addr
    }

    /// A reader of this replica's applied configuration.
    pub fn reader(&self) -> ConfigReader {
        self.shared.reader.clone()
    }

    /// Asks the leader for a lease for `member` (this member), waiting at
    /// most `ttl`: the last epoch committed when it was granted. The
    /// caller counts the lease from before the call ([`crate::lease::Holder`]).
    pub fn renew_lease(&self, member: &MemberId, ttl: Duration) -> Result<u64, ServiceError> {
        run_blocking(
            &self.handle,
            lease(self.shared.clone(), member.0.clone(), ttl),
        )
        .map_err(|e| ServiceError::Internal(e.to_string()))?
    }

    /// The term this node leads in, if it leads (as its metrics tell).
    pub fn leading(&self) -> Option<u64> {
        leases::leads(&self.shared.raft, self.shared.id)
    }

    /// For the arbiter on the leader: whether `member` renews its lease
    /// and whether it may still hold one, at `now`, by this node's record
    /// for `term` (a term never led here counts as just begun).
    pub fn lease_facts(
        &self,
        term: u64,
        member: &MemberId,
        now: std::time::Instant,
    ) -> (bool, bool) {
        self.shared.leases.with(term, now, |g| {
            (g.renewing(member, now), g.may_hold(member, now))
        })
    }

    /// The lease timers.
    pub fn lease_timers(&self) -> LeaseTimers {
        self.shared.leases.timers()
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<u64> {
        self.shared.raft.metrics().borrow().current_leader
    }

    /// Forms a new cluster of `voters` (this node among them) on first
    /// start. Every initial voter may call it with the same map; on a store
    /// that is already part of a cluster it does nothing.
    pub fn initialize<A: Into<RaftAddress>>(
        &self,
        voters: BTreeMap<u64, A>,
    ) -> Result<(), RaftError> {
        let nodes: BTreeMap<NodeId, BasicNode> = voters
            .into_iter()
            .map(|(id, addr)| (id, BasicNode::new(addr.into().to_string())))
            .collect();
        let raft = self.shared.raft.clone();
        let result = run_blocking(&self.handle, async move {
            // A restarted member is formed already: asking again would be
            // refused, and openraft logs that refusal as an error.
            if raft.is_initialized().await.unwrap_or(false) {
                return Ok(());
            }
            raft.initialize(nodes).await
        })?;
        match result {
            Ok(()) | Err(OpenRaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(RaftError::Initialize(Box::new(e))),
        }
    }

    /// Adds node `id` at Raft address `addr` as a non-voting member and
    /// waits until it has caught up (through the leader).
    pub fn add_learner(&self, id: u64, addr: impl Into<RaftAddress>) -> Result<(), ServiceError> {
        let forwarded = Forwarded::AddLearner {
            id,
            addr: addr.into().to_string(),
        };
        self.submit_blocking(forwarded).map(|_| ())
    }

    /// Whether this node is in the cluster's membership (voter or
    /// learner), as far as its own log tells.
    pub fn is_member(&self) -> bool {
        self.shared
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&self.shared.id)
            .is_some()
    }

    /// Joins an existing cluster as a learner (a non-voting member that
    /// replicates the configuration), asking through any of `peers` (Raft
    /// addresses of members; a follower passes the request to the leader).
    /// Returns once the leader has added this node and it has caught up;
    /// does nothing when this node is a member already.
    pub fn join<A: Clone + Into<RaftAddress>>(&self, peers: &[A]) -> Result<(), ServiceError> {
        if self.is_member() {
            return Ok(());
        }
        let peers = peers.iter().cloned().map(Into::into).collect();
        run_blocking(&self.handle, join(self.shared.clone(), peers))
            .map_err(|e| ServiceError::Internal(e.to_string()))?
    }

    /// Makes `voters` the voting members (each already a member or a
    /// learner); voters left out leave the cluster.
    pub fn change_membership(&self, voters: BTreeSet<u64>) -> Result<(), ServiceError> {
        self.submit_blocking(Forwarded::ChangeMembership(voters))
            .map(|_| ())
    }

    /// Confirms that the Raft leader (asked through this node) still leads
    /// a quorum: it heartbeats a majority, and nothing is written. A write
    /// proposed right after then does not sit uncommitted in a leader cut
    /// off from the others, to be committed later if they come back (only
    /// a quorum lost in between leaves that).
    pub async fn confirm_quorum(&self) -> Result<(), ServiceError> {
        let task = self
            .handle
            .spawn(submit(self.shared.clone(), Forwarded::Confirm));
        task.await
            .map_err(|e| ServiceError::Internal(format!("the Raft node dropped the check: {e}")))?
            .map(|_| ())
    }

    /// Sets what answers other members' data-path requests
    /// ([`ConfigService::call_member`]); once.
    pub fn set_data_path_handler(&self, handler: transport::DataPathHandler) {
        let _ = self.shared.handler.set(handler);
    }

    /// Sends the data path's `request` to member `node_id` over the
    /// authenticated member-to-member transport (its Raft addresses, a kept
    /// connection) and returns its handler's answer, within `ttl`.
    pub async fn call_member(
        &self,
        node_id: NodeId,
        request: String,
        ttl: Duration,
    ) -> Result<String, ServiceError> {
        let addr = {
            let metrics = self.shared.raft.metrics();
            let m = metrics.borrow();
            m.membership_config
                .membership()
                .get_node(&node_id)
                .map(|n| n.addr.clone())
        };
        let Some(addr) = addr else {
            return Err(ServiceError::Unavailable(format!(
                "node {node_id} is not in the Raft membership"
            )));
        };
        let s = &self.shared;
        let answer = transport::call(&s.pool, &addr, &s.key, s.settings.protocol, request, ttl)
            .await
            .map_err(|e| {
                ServiceError::Unavailable(format!("node {node_id} at {addr}: {}", chain(&e)))
            })?;
        answer.map_err(ServiceError::Internal)
    }

    /// [`ClusterService::write`] for synchronous callers.
    pub fn write_blocking(&self, cmd: Command) -> Result<Response, ServiceError> {
        self.submit_blocking(Forwarded::Write(cmd))
    }

    fn submit_blocking(&self, forwarded: Forwarded) -> Result<Response, ServiceError> {
        run_blocking(&self.handle, submit(self.shared.clone(), forwarded))
            .map_err(|e| ServiceError::Internal(e.to_string()))?
    }

    /// Stops the node: Raft, the server, the runtime. When it returns
    /// (outside an async context) the store is closed and can be reopened.
    pub fn shutdown(mut self) -> Result<(), RaftError> {
        for server in self.servers.drain(..) {
            server.abort();
        }
        let raft = self.shared.raft.clone();
        let stopped = run_blocking(&self.handle, async move { raft.shutdown().await });
        if let Some(runtime) = self.runtime.take() {
            stop_runtime(runtime);
        }
        tracing::info!(node_id = self.shared.id, "Raft node stopped");
        stopped?.map_err(RaftError::Shutdown)
    }
}

impl Drop for ConfigService {
    fn drop(&mut self) {
        for server in self.servers.drain(..) {
            server.abort();
        }
        if let Some(runtime) = self.runtime.take() {
            stop_runtime(runtime);
        }
    }
}

impl Shared {
    /// Sends `forwarded` to the member at `addr` over an authenticated
    /// connection of its own.
    async fn forward(
        &self,
        addr: &str,
        forwarded: Forwarded,
        ttl: Duration,
    ) -> Result<Outcome, TransportError> {
        transport::forward(addr, &self.key, self.settings.protocol, forwarded, ttl).await
    }

    /// Waits until this node's own log holds a membership that includes it:
    /// the leader reports a learner added once it has replicated to it, and
    /// this node's view follows a moment later.
    async fn until_member(&self, deadline: Instant) -> Result<(), ServiceError> {
        let mut metrics = self.raft.metrics();
        loop {
            let member = metrics
                .borrow_and_update()
                .membership_config
                .membership()
                .get_node(&self.id)
                .is_some();
            if member {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Err(_) | Ok(Err(_)) => {
                    return Err(ServiceError::Unavailable(
                        "the leader added this member, but its membership has not reached it yet"
                            .to_owned(),
                    ))
                }
            }
        }
    }

    /// The leader's id and Raft address, waiting for one to be known
    /// (and, with `not`, to differ from a leader found unreachable) at
    /// most `leader_wait` and until `deadline`.
    async fn leader(&self, not: Option<NodeId>, deadline: Instant) -> Option<(NodeId, String)> {
        let deadline = deadline.min(Instant::now() + self.settings.leader_wait);
        let mut metrics = self.raft.metrics();
        loop {
            {
                let m = metrics.borrow_and_update();
                if let Some(id) = m.current_leader.filter(|&id| Some(id) != not) {
                    let addr = if id == self.id {
                        Some(self.addr.to_string())
                    } else {
                        m.membership_config
                            .membership()
                            .get_node(&id)
                            .map(|n| n.addr.clone())
                    };
                    if let Some(addr) = addr {
                        return Some((id, addr));
                    }
                }
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                // Timed out, or the Raft core is gone.
                Err(_) | Ok(Err(_)) => return None,
            }
        }
    }
}

/// `e` with its sources, for an error that travels as a string.
fn chain(e: &dyn StdError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Makes `forwarded` on the leader: here if this node leads, else over
/// the transport.
async fn submit(shared: Arc<Shared>, forwarded: Forwarded) -> Result<Response, ServiceError> {
    let deadline = Instant::now() + shared.settings.write_timeout;
    let mut next = shared.leader(None, deadline).await;
    for _ in 0..MAX_HOPS {
        let Some((leader, addr)) = next.take() else {
            return Err(ServiceError::NoLeader);
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let outcome = if leader == shared.id {
            execute(&shared.raft, &shared.leases, forwarded.clone(), remaining).await
        } else {
            match shared.forward(&addr, forwarded.clone(), remaining).await {
                Ok(outcome) => outcome,
                Err(TransportError::Connect { .. }) => {
                    // Nothing was sent: wait for another leader and retry.
                    next = shared.leader(Some(leader), deadline).await;
                    if next.is_none() {
                        return Err(ServiceError::Unavailable(format!(
                            "leader {leader} at {addr} does not answer"
                        )));
                    }
                    continue;
                }
                Err(e) => {
                    return Err(ServiceError::Unavailable(format!(
                        "leader {leader} at {addr}: {}",
                        chain(&e)
                    )))
                }
            }
        };
        match outcome {
            Outcome::Applied(response) => return Ok(response),
            Outcome::Rejected(e) => return Err(ServiceError::Rejected(e)),
            Outcome::NotLeader { leader: None } => return Err(ServiceError::NoLeader),
            Outcome::NotLeader { leader: Some(hint) } => next = Some(hint),
            Outcome::Refused(why) => {
                return Err(ServiceError::Internal(format!(
                    "membership change refused: {why}"
                )))
            }
            Outcome::TimedOut => {
                return Err(ServiceError::Unavailable(format!(
                    "not committed within {:?} (no quorum?); it may still apply (a write sent with an Idempotency-Key can be resent with the same key to learn its outcome)",
                    shared.settings.write_timeout
                )))
            }
            Outcome::Failed(why) => return Err(ServiceError::Internal(why)),
            Outcome::Leased { .. } => {
                return Err(ServiceError::Internal("a lease answered a write".into()))
            }
        }
    }
    Err(ServiceError::NoLeader)
}

/// Asks the leader (this node, or over the transport) for a lease for
/// `member`, within `ttl`: the last epoch committed when it was granted.
async fn lease(shared: Arc<Shared>, member: String, ttl: Duration) -> Result<u64, ServiceError> {
    let deadline = Instant::now() + ttl;
    let Some((leader, addr)) = shared.leader(None, deadline).await else {
        return Err(ServiceError::NoLeader);
    };
    let forwarded = Forwarded::Lease { member };
    let outcome = if leader == shared.id {
        execute(&shared.raft, &shared.leases, forwarded, ttl).await
    } else {
        shared.forward(&addr, forwarded, ttl).await.map_err(|e| {
            ServiceError::Unavailable(format!("leader {leader} at {addr}: {}", chain(&e)))
        })?
    };
    match outcome {
        Outcome::Leased { epoch } => Ok(epoch),
        Outcome::NotLeader { .. } => Err(ServiceError::NoLeader),
        Outcome::TimedOut => Err(ServiceError::Unavailable(format!(
            "no lease within {ttl:?}"
        ))),
        other => Err(ServiceError::Unavailable(format!("no lease: {other:?}"))),
    }
}

/// Asks each of `peers` in turn to add this node as a learner, following
/// leader hints.
async fn join(shared: Arc<Shared>, peers: Vec<RaftAddress>) -> Result<(), ServiceError> {
    let deadline = Instant::now() + shared.settings.write_timeout;
    let request = Forwarded::AddLearner {
        id: shared.id,
        addr: shared.addr.to_string(),
    };
    let mut why = String::from("no peer to ask");
    for peer in peers.iter().filter(|&p| *p != shared.addr) {
        let mut addr = peer.to_string();
        for _ in 0..MAX_HOPS {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match shared.forward(&addr, request.clone(), remaining).await {
                Ok(Outcome::Applied(_)) => return shared.until_member(deadline).await,
                Ok(Outcome::NotLeader {
                    leader: Some((_, leader)),
                }) => addr = leader,
                Ok(Outcome::Refused(e)) => {
                    return Err(ServiceError::Internal(format!(
                        "{addr} refused to add this member: {e}"
                    )))
                }
                Ok(other) => {
                    why = format!("{addr}: {other:?}");
                    break;
                }
                Err(e) => {
                    why = format!("{addr}: {}", chain(&e));
                    break;
                }
            }
        }
    }
    Err(ServiceError::Unavailable(why))
}

impl ClusterService for ConfigService {
    fn write(&self, cmd: Command) -> BoxFuture<'_, Result<Response, ServiceError>> {
        let task = self
            .handle
            .spawn(submit(self.shared.clone(), Forwarded::Write(cmd)));
        Box::pin(async move {
            task.await.map_err(|e| {
                ServiceError::Internal(format!("the Raft node dropped the write: {e}"))
            })?
        })
    }

    fn config(&self) -> super::ClusterConfig {
        self.shared.reader.config()
    }

    fn roles(&self) -> super::RoleTable {
        self.shared.reader.state().roles
    }

    /// `commit_index` is what the log store last saved as committed
    /// (openraft 0.9 does not publish it in its metrics).
    fn raft(&self) -> RaftStatus {
        let metrics = self.shared.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let applied = m.last_applied.map(|l| l.index);
        RaftStatus {
            node_id: m.id,
            term: m.current_term,
            leader: m.current_leader,
            commit_index: self.shared.log.committed_index(),
            applied_index: applied,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
        }
    }

    fn members(&self) -> Vec<MemberStatus> {
        self.members
            .as_ref()
            .map(|source| source())
            .unwrap_or_default()
    }

    fn keyed_device_uuid(&self, key: &str, name: &str) -> uuid::Uuid {
        super::once::keyed_device_uuid(self.shared.key.secret(), key, name)
    }
}
