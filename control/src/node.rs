//! The driver that runs [`Discovery`] and [`Membership`] on real sockets:
//! one UDP socket per link, a receiver thread per socket, and one state
//! thread that owns both state machines, the clock and the heartbeat timer.
//!
//! ```text
//! link a socket ─ recv thread ─┐                       ┌─> Discovery  ─> Send / Admitted / Rejected
//! link b socket ─ recv thread ─┼─> channel ─> state ───┤
//! mDNS browser (optional) ─────┘  (timeout = next      └─> Membership ─> link / member events
//!                                   deadline)         every interval: heartbeats on every link
//! ```
//!
//! Events go to the log (`tracing`) and into a [`Status`] the management API
//! and `member list` read.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::discovery::{self, Discovery, Identity, Output};
use crate::mdns::{Found, Mdns};
use crate::membership::{self, Event, LinkState, MemberState, MemberStatus, Membership};
use crate::watch::Watch;
use crate::wire::{self, DataState, Header, Message, Role, SetRole};
use crate::{LinkName, MemberId};

/// How often discovery is ticked (hello retries).
const DISCOVERY_TICK: Duration = Duration::from_millis(100);
/// How long receiver threads block before checking for shutdown.
const RECV_POLL: Duration = Duration::from_millis(200);
/// How many bytes of a heartbeat carry per-set roles (a member in more
/// sets announces them over successive heartbeats).
const ROLES_BUDGET: usize = 700;
/// A peer's announced role in a set is forgotten when not heard again
/// within this long (the set was deleted, or the peer is gone).
const ANNOUNCE_TTL: Duration = Duration::from_secs(5);

/// What a control node needs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Who this member is.
    pub identity: Identity,
    /// Its control address on each link.
    pub links: Vec<(LinkName, SocketAddr)>,
    /// Static seed addresses per link.
    pub seeds: Vec<(LinkName, String)>,
    /// Discovery timers.
    pub discovery: discovery::Config,
    /// Failure detector timers.
    pub membership: membership::Config,
    /// Advertise and browse with DNS-SD over mDNS on the links (besides
    /// the seeds).
    pub mdns: bool,
}

/// What the state thread is told.
#[derive(Debug)]
enum Input {
    /// A datagram arrived on a link.
    Datagram(LinkName, SocketAddr, Vec<u8>),
    /// The mDNS browser found a candidate.
    Found(Found),
    /// Send heartbeats now (what this member announces changed).
    Beat,
}

/// Starting a node failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A link address could not be bound.
    #[error("cannot bind control link {link} to {addr}")]
    Bind {
        /// The link.
        link: LinkName,
        /// Its address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The discovery configuration is refused.
    #[error(transparent)]
    Discovery(#[from] discovery::ConfigError),
    /// The failure detector configuration is refused.
    #[error(transparent)]
    Membership(#[from] membership::MembershipError),
    /// A thread could not be started.
    #[error("cannot start a control thread")]
    Thread(#[source] std::io::Error),
}

/// What this member knows of the cluster, for `member list`.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Peers admitted so far, with their state and links.
    pub members: Vec<MemberStatus>,
    /// Their control addresses per link.
    pub addresses: BTreeMap<MemberId, Vec<(LinkName, String)>>,
    /// The role and epoch each peer announces per set in its heartbeats.
    pub announced: BTreeMap<MemberId, BTreeMap<String, Announced>>,
    /// What each peer's heartbeats say of its data path, and when.
    pub data: BTreeMap<MemberId, (DataState, Instant)>,
}

/// What peers announce: per member, per set, role and epoch.
pub type Announcements = BTreeMap<MemberId, BTreeMap<String, (Role, u64)>>;

/// A peer's role in one set, as its heartbeats announce it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announced {
    /// The role it applies.
    pub role: Role,
    /// The epoch of the assignment it applies.
    pub epoch: u64,
    /// When a heartbeat last said so.
    pub heard: Instant,
}

/// Sets what this member announces in its heartbeats: the roles it
/// applies (the failover services) and its data path's state.
#[derive(Debug, Clone, Default)]
pub struct Announcer {
    state: Arc<Mutex<Announcing>>,
    /// Asks the state thread for a heartbeat now.
    beat: Option<mpsc::Sender<Input>>,
}

#[derive(Debug, Clone, Default)]
struct Announcing {
    roles: Vec<SetRole>,
    data: Option<DataState>,
    /// The device-state changes applied to the data path, kept apart from
    /// `data` (set by another thread).
    devices: u64,
}

impl Announcer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Announcing> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// From now on, heartbeats announce `roles`.
    pub fn set(&self, roles: Vec<SetRole>) {
        self.lock().roles = roles;
    }

    /// From now on, heartbeats announce `state` (its `devices` aside,
    /// which [`Announcer::set_devices`] sets).
    pub fn set_state(&self, state: DataState) {
        self.lock().data = Some(state);
    }

    /// From now on, heartbeats announce that this member's data path has
    /// applied the device-state changes up to `seq`; a heartbeat says so
    /// at once (a member deciding a change waits for every peer to).
    pub fn set_devices(&self, seq: u64) {
        let moved = {
            let mut a = self.lock();
            let moved = a.devices != seq;
            a.devices = seq;
            moved
        };
        if let (true, Some(beat)) = (moved, &self.beat) {
            let _ = beat.send(Input::Beat);
        }
    }

    /// What this member announces of its data path (None: not a data
    /// member, or not known yet).
    pub fn state(&self) -> Option<DataState> {
        self.get().1
    }

    fn get(&self) -> (Vec<SetRole>, Option<DataState>) {
        let a = self.lock();
        let data = a.data.map(|d| DataState {
            devices: a.devices,
            ..d
        });
        (a.roles.clone(), data)
    }
}

/// The summary of `roles` a 1.0 peer reads: the strongest role held and the
/// highest epoch.
fn summary(roles: &[SetRole]) -> (Role, u64) {
    let rank = |r: Role| match r {
        Role::Primary => 4,
        Role::Secondary => 3,
        Role::Alternate => 2,
        Role::Witness => 1,
        Role::None => 0,
    };
    let role = roles
        .iter()
        .map(|r| r.role)
        .max_by_key(|&r| rank(r))
        .unwrap_or(Role::None);
    (role, roles.iter().map(|r| r.epoch).max().unwrap_or(0))
}

/// The roles from `from` (cyclically) that fit [`ROLES_BUDGET`] bytes, and
/// where the next heartbeat starts.
fn window(roles: &[SetRole], from: usize) -> (Vec<SetRole>, usize) {
    if roles.is_empty() {
        return (Vec::new(), 0);
    }
    let mut out = Vec::new();
    let mut used = 0;
    let mut i = from % roles.len();
    while out.len() < roles.len() && out.len() < usize::from(u8::MAX) {
        let r = &roles[i];
        if used + r.wire_len() > ROLES_BUDGET {
            break;
        }
        used += r.wire_len();
        out.push(r.clone());
        i = (i + 1) % roles.len();
    }
    (out, i)
}

/// A running control node.
#[derive(Debug)]
pub struct Node {
    status: Arc<Mutex<Status>>,
    announcer: Announcer,
    changes: Watch,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    member: MemberId,
    mdns: Option<Mdns>,
}

impl Node {
    /// Binds every link and starts discovery, heartbeats and the failure
    /// detector.
    pub fn start(cfg: NodeConfig) -> Result<Node, NodeError> {
        let disc = Discovery::new(
            cfg.identity.clone(),
            cfg.links
                .iter()
                .map(|(l, a)| (l.clone(), a.to_string()))
                .collect(),
            cfg.seeds.clone(),
            cfg.discovery.clone(),
        )?;
        let members = Membership::new(cfg.membership.clone())?;
        let mut sockets = BTreeMap::new();
        for (link, addr) in &cfg.links {
            let s = UdpSocket::bind(addr).map_err(|source| NodeError::Bind {
                link: link.clone(),
                addr: *addr,
                source,
            })?;
            s.set_read_timeout(Some(RECV_POLL))
                .map_err(|source| NodeError::Bind {
                    link: link.clone(),
                    addr: *addr,
                    source,
                })?;
            sockets.insert(link.clone(), Arc::new(s));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Mutex::new(Status::default()));
        let changes = Watch::new();
        let (tx, rx) = mpsc::channel::<Input>();
        let mdns = if cfg.mdns {
            let tx = tx.clone();
            match Mdns::start(&cfg.identity, &cfg.links, move |f| {
                let _ = tx.send(Input::Found(f));
            }) {
                Ok(m) => {
                    tracing::info!(
                        service = discovery::SERVICE_TYPE,
                        "mDNS: advertising and browsing on the links"
                    );
                    Some(m)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "mDNS unavailable; discovery uses the seeds only");
                    None
                }
            }
        } else {
            None
        };
        let mut threads = Vec::new();
        for (link, sock) in &sockets {
            let (link, sock, tx, stop) = (
                link.clone(),
                Arc::clone(sock),
                tx.clone(),
                Arc::clone(&stop),
            );
            let t = std::thread::Builder::new()
                .name(format!("trellis-ctl-{link}"))
                .spawn(move || receive(&link, &sock, &tx, &stop))
                .map_err(NodeError::Thread)?;
            threads.push(t);
        }
        let member = cfg.identity.member.clone();
        let announcer = Announcer {
            beat: Some(tx.clone()),
            ..Announcer::default()
        };
        let state = State {
            announcer: announcer.clone(),
            announce_from: 0,
            cfg,
            disc,
            members,
            sockets,
            addresses: BTreeMap::new(),
            seq: 0,
            status: Arc::clone(&status),
            changes: changes.clone(),
        };
        let stop2 = Arc::clone(&stop);
        let t = std::thread::Builder::new()
            .name("trellis-ctl".into())
            .spawn(move || state.run(&rx, &stop2))
            .map_err(NodeError::Thread)?;
        threads.push(t);
        Ok(Node {
            status,
            announcer,
            changes,
            stop,
            threads,
            member,
            mdns,
        })
    }

    /// This member.
    pub fn member(&self) -> &MemberId {
        &self.member
    }

    /// A source of the failure detector's view of the peers, for the
    /// management API.
    pub fn members_source(&self) -> crate::config::raft::MembersSource {
        let status = Arc::clone(&self.status);
        Arc::new(move || {
            status
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .members
                .clone()
        })
    }

    /// Notified whenever a peer's state, a link's state or a peer's
    /// incarnation changes, or a peer is first admitted (not on every
    /// heartbeat).
    pub fn changes(&self) -> Watch {
        self.changes.clone()
    }

    /// Where the failover services set the roles this member announces.
    pub fn announcer(&self) -> Announcer {
        self.announcer.clone()
    }

    /// A source of what the peers announce, per member and set: role and
    /// epoch (read under the lock; nothing else of the status is copied).
    pub fn announced_source(&self) -> Arc<dyn Fn() -> Announcements + Send + Sync> {
        let status = Arc::clone(&self.status);
        Arc::new(move || {
            let s = status.lock().unwrap_or_else(PoisonError::into_inner);
            s.announced
                .iter()
                .map(|(m, sets)| {
                    let sets = sets
                        .iter()
                        .map(|(set, a)| (set.clone(), (a.role, a.epoch)))
                        .collect();
                    (m.clone(), sets)
                })
                .collect()
        })
    }

    /// A copy of what this member knows of the others.
    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops the threads (the sockets close with them) and withdraws the
    /// mDNS records.
    pub fn shutdown(self) {
        if let Some(m) = self.mdns {
            m.shutdown();
        }
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn receive(link: &LinkName, sock: &UdpSocket, tx: &mpsc::Sender<Input>, stop: &AtomicBool) {
    let mut buf = vec![0u8; wire::MAX_DATAGRAM + 1];
    while !stop.load(Ordering::Relaxed) {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                if tx
                    .send(Input::Datagram(link.clone(), from, buf[..n].to_vec()))
                    .is_err()
                {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                tracing::warn!(%link, error = %e, "control link receive failed");
                std::thread::sleep(RECV_POLL);
            }
        }
    }
}

struct State {
    cfg: NodeConfig,
    disc: Discovery,
    members: Membership,
    sockets: BTreeMap<LinkName, Arc<UdpSocket>>,
    /// Admitted peers' addresses per link (where heartbeats go).
    addresses: BTreeMap<MemberId, Vec<(LinkName, String)>>,
    seq: u64,
    status: Arc<Mutex<Status>>,
    changes: Watch,
    /// What this member announces.
    announcer: Announcer,
    /// Where the next heartbeat's roles start (when they do not all fit).
    announce_from: usize,
}

/// What of a peer's status is news: its state, incarnation and links'
/// states (not how long ago it was heard).
fn news(members: &[MemberStatus]) -> Vec<(&MemberId, MemberState, Option<u64>, Vec<LinkState>)> {
    members
        .iter()
        .map(|m| {
            (
                &m.member,
                m.state,
                m.incarnation,
                m.links.iter().map(|l| l.state).collect(),
            )
        })
        .collect()
}

impl State {
    fn run(mut self, rx: &mpsc::Receiver<Input>, stop: &AtomicBool) {
        let interval = self.cfg.membership.heartbeat_interval;
        let start = Instant::now();
        let mut next_beat = start;
        let mut next_disc = start;
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let mut deadline = next_beat.min(next_disc);
            if let Some(d) = self.members.next_deadline() {
                deadline = deadline.min(d);
            }
            match rx.recv_timeout(deadline.saturating_duration_since(now)) {
                Ok(Input::Datagram(link, from, data)) => {
                    self.datagram(Instant::now(), &link, from, &data)
                }
                Ok(Input::Found(f)) => {
                    let out = self.disc.found(
                        Instant::now(),
                        &f.link,
                        Some(&f.member),
                        &f.addr.to_string(),
                    );
                    self.outputs(Instant::now(), out);
                }
                Ok(Input::Beat) => next_beat = Instant::now(),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            if now >= next_disc {
                next_disc = now + DISCOVERY_TICK;
                let out = self.disc.tick(now);
                self.outputs(now, out);
            }
            if now >= next_beat {
                next_beat = now + interval;
                self.heartbeats();
            }
            let events = self.members.tick(now);
            self.events(&events);
            self.publish(now);
        }
    }

    fn datagram(&mut self, now: Instant, link: &LinkName, from: SocketAddr, data: &[u8]) {
        let id = &self.cfg.identity;
        match wire::decode(data, &id.key, &id.cluster, id.protocol) {
            Ok(msg @ Message::Heartbeat { .. }) => {
                match self.members.heard_message(now, link, &msg) {
                    Ok(events) => {
                        self.events(&events);
                        self.heard_roles(now, &msg);
                    }
                    Err(why) => tracing::debug!(%link, %from, %why, "heartbeat ignored"),
                }
            }
            // Hellos, acks and every refused datagram: discovery decides
            // (and reports refusals, rate-limited).
            _ => {
                let out = self.disc.received(now, link, &from.to_string(), data);
                self.outputs(now, out);
            }
        }
    }

    fn outputs(&mut self, now: Instant, out: Vec<Output>) {
        for o in out {
            match o {
                Output::Send { link, to, datagram } => self.send(&link, &to, &datagram),
                Output::Confirmed { member, link } => {
                    tracing::info!(%member, %link, "network confirmed with member")
                }
                Output::Admitted {
                    member,
                    incarnation,
                    software,
                    protocol,
                    links,
                } => {
                    tracing::info!(
                        %member, incarnation, %software, %protocol,
                        links = ?links,
                        "member admitted"
                    );
                    let names = links.iter().map(|(l, _)| l.clone());
                    if let Err(e) = self.members.add_peer(now, &member, names) {
                        tracing::warn!(%member, error = %e, "cannot watch member");
                    }
                    self.addresses.insert(member, links);
                }
                Output::Rejected { link, addr, reason } => {
                    tracing::warn!(%link, %addr, "refused a control datagram: {reason}")
                }
                Output::GaveUp { link, addr } => {
                    tracing::debug!(%link, %addr, "no answer; stopped probing")
                }
                Output::Forgotten { member } => tracing::info!(%member, "candidate forgotten"),
            }
        }
    }

    fn events(&mut self, events: &[Event]) {
        for e in events {
            match e {
                Event::LinkUp { member, link } => tracing::info!(%member, %link, "link up"),
                Event::LinkDown { member, link } => {
                    tracing::warn!(%member, %link, "link down (alarm)")
                }
                Event::LinkFlapping { member, link } => {
                    tracing::warn!(%member, %link, "link flapping (alarm)")
                }
                Event::MemberAlive { member } => tracing::info!(%member, "member alive"),
                Event::MemberSuspect { member } => {
                    tracing::warn!(%member, "member suspect: silent on every link")
                }
                Event::MemberFailed { member } => tracing::warn!(%member, "member failed"),
                Event::MemberRestarted {
                    member,
                    incarnation,
                } => tracing::info!(%member, incarnation, "member restarted"),
            }
        }
    }

    /// Records the roles a peer's heartbeat announces; a change of role or
    /// epoch in some set is news.
    fn heard_roles(&mut self, now: Instant, msg: &Message) {
        let Message::Heartbeat {
            header,
            roles,
            state,
            ..
        } = msg
        else {
            return;
        };
        let moved = {
            let mut s = self.status.lock().unwrap_or_else(PoisonError::into_inner);
            let mut moved = false;
            if let Some(d) = state {
                let old = s.data.insert(header.from.clone(), (*d, now));
                // A change of health or boot state is news (a session
                // count is not).
                moved |= old.is_none_or(|(o, _)| (o.healthy, o.booted) != (d.healthy, d.booted));
            }
            let known = s.announced.entry(header.from.clone()).or_default();
            for r in roles {
                let new = Announced {
                    role: r.role,
                    epoch: r.epoch,
                    heard: now,
                };
                let old = known.insert(r.set.clone(), new);
                moved |= old.is_none_or(|o| (o.role, o.epoch) != (r.role, r.epoch));
            }
            moved
        };
        if moved {
            self.changes.notify();
        }
    }

    /// One heartbeat to every admitted peer on every link we share.
    fn heartbeats(&mut self) {
        let id = self.cfg.identity.clone();
        let (all, data) = self.announcer.get();
        let (summary_role, summary_epoch) = summary(&all);
        let (roles, next) = window(&all, self.announce_from);
        self.announce_from = next;
        let targets: Vec<(LinkName, String)> = self
            .addresses
            .values()
            .flat_map(|links| links.iter().cloned())
            .collect();
        for (link, to) in targets {
            self.seq += 1;
            let mut msg = Message::Heartbeat {
                header: Header {
                    cluster: id.cluster.clone(),
                    from: id.member.clone(),
                    software: id.software.clone(),
                    protocol: id.protocol,
                    incarnation: id.incarnation,
                    link: link.clone(),
                    seq: self.seq,
                },
                role: summary_role,
                epoch: summary_epoch,
                roles: roles.clone(),
                state: data,
            };
            let mut encoded = wire::encode(&msg, &id.key);
            if let (Err(wire::WireError::TooLarge), Message::Heartbeat { roles, .. }) =
                (&encoded, &mut msg)
            {
                // Long names left no room: the heartbeat goes without
                // per-set roles rather than not at all.
                roles.clear();
                encoded = wire::encode(&msg, &id.key);
            }
            match encoded {
                Ok(d) => self.send(&link, &to, &d),
                Err(e) => tracing::error!(error = %e, "cannot encode a heartbeat"),
            }
        }
    }

    fn send(&self, link: &LinkName, to: &str, datagram: &[u8]) {
        let Some(sock) = self.sockets.get(link) else {
            return;
        };
        if let Err(e) = sock.send_to(datagram, to) {
            tracing::debug!(%link, %to, error = %e, "control send failed");
        }
    }

    fn publish(&self, now: Instant) {
        let mut members = self.members.members(now);
        let moved = {
            let mut s = self.status.lock().unwrap_or_else(PoisonError::into_inner);
            let moved = news(&s.members) != news(&members);
            for sets in s.announced.values_mut() {
                sets.retain(|_, a| now.saturating_duration_since(a.heard) < ANNOUNCE_TTL);
            }
            s.announced.retain(|_, sets| !sets.is_empty());
            s.data
                .retain(|_, (_, heard)| now.saturating_duration_since(*heard) < ANNOUNCE_TTL);
            for m in &mut members {
                m.data = s.data.get(&m.member).map(|(d, _)| *d);
                m.announced = s.announced.get(&m.member).map_or_else(Vec::new, |sets| {
                    sets.iter()
                        .map(|(set, a)| (set.clone(), a.role, a.epoch))
                        .collect()
                });
            }
            s.members = members;
            s.addresses = self.addresses.clone();
            moved
        };
        if moved {
            self.changes.notify();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ClusterKey;
    use crate::{ClusterId, ProtocolVersion};
    use std::net::UdpSocket;

    fn free_addr(ip: &str) -> SocketAddr {
        let s = UdpSocket::bind((ip, 0)).expect("bind");
        s.local_addr().expect("addr")
    }

    fn node(name: &str, links: &[SocketAddr; 2], seeds: Vec<(LinkName, String)>) -> Node {
        node_with(name, "test", links, seeds, false)
    }

    fn node_with(
        name: &str,
        cluster: &str,
        links: &[SocketAddr; 2],
        seeds: Vec<(LinkName, String)>,
        mdns: bool,
    ) -> Node {
        Node::start(NodeConfig {
            identity: Identity {
                member: MemberId(name.into()),
                cluster: ClusterId(cluster.into()),
                key: ClusterKey::new(b"a cluster key of some length").expect("key"),
                software: "test".into(),
                protocol: ProtocolVersion::CURRENT,
                incarnation: 1,
            },
            links: vec![
                (LinkName("a".into()), links[0]),
                (LinkName("b".into()), links[1]),
            ],
            seeds,
            discovery: discovery::Config {
                hello_initial: Duration::from_millis(50),
                ..discovery::Config::default()
            },
            membership: membership::Config::default(),
            mdns,
        })
        .expect("node starts")
    }

    fn up(n: &Node, peer: &str) -> bool {
        n.status().members.iter().any(|m| {
            m.member.0 == peer
                && m.state == membership::MemberState::Alive
                && m.links.len() == 2
                && m.links.iter().all(|l| l.state == membership::LinkState::Up)
        })
    }

    /// Waits until `n1` and `n2` see each other alive with both links up.
    fn wait_both_up(n1: &Node, n2: &Node, what: &str) {
        let start = Instant::now();
        while !(up(n1, "n2") && up(n2, "n1")) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{what}: {:?} / {:?}",
                n1.status(),
                n2.status()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Two nodes with no seeds find each other by DNS-SD over mDNS on
    /// loopback, and admit each other on both links.
    #[test]
    fn two_nodes_find_each_other_by_mdns() {
        // A cluster name of this run alone: other runs on the machine
        // advertise on the same loopback.
        let cluster = format!("mdns-{}", std::process::id());
        let a = [free_addr("127.0.0.1"), free_addr("127.0.0.1")];
        let b = [free_addr("127.0.0.1"), free_addr("127.0.0.1")];
        let n1 = node_with("n1", &cluster, &a, Vec::new(), true);
        let n2 = node_with("n2", &cluster, &b, Vec::new(), true);
        wait_both_up(&n1, &n2, "not found by mDNS");
        n1.shutdown();
        n2.shutdown();
    }

    /// Two nodes on real loopback sockets find each other from one seed and
    /// see both links up.
    #[test]
    fn two_nodes_admit_each_other_over_udp() {
        let a = [free_addr("127.0.0.1"), free_addr("127.0.0.1")];
        let b = [free_addr("127.0.0.1"), free_addr("127.0.0.1")];
        let n1 = node("n1", &a, Vec::new());
        let n2 = node(
            "n2",
            &b,
            vec![
                (LinkName("a".into()), a[0].to_string()),
                (LinkName("b".into()), a[1].to_string()),
            ],
        );
        wait_both_up(&n1, &n2, "not admitted with both links up");
        // What one announces in its heartbeats, the other hears, per set.
        let roles = vec![
            SetRole {
                set: "default".into(),
                role: Role::Primary,
                epoch: 3,
            },
            SetRole {
                set: "s1".into(),
                role: Role::Alternate,
                epoch: 5,
            },
        ];
        n1.announcer().set(roles);
        n1.announcer().set_state(DataState {
            sessions: 4,
            healthy: false,
            booted: true,
            devices: 0,
        });
        // Set apart (another thread does), and kept by set_state.
        n1.announcer().set_devices(9);
        let heard = |n: &Node| -> Vec<(String, Role, u64)> {
            n.status()
                .announced
                .get(&MemberId("n1".into()))
                .map(|sets| {
                    sets.iter()
                        .map(|(s, a)| (s.clone(), a.role, a.epoch))
                        .collect()
                })
                .unwrap_or_default()
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while heard(&n2).len() < 2 {
            assert!(Instant::now() < deadline, "n2 heard {:?}", heard(&n2));
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            heard(&n2),
            [
                ("default".to_owned(), Role::Primary, 3),
                ("s1".to_owned(), Role::Alternate, 5)
            ]
        );
        // And its data path's state, in the member status too.
        let data = |n: &Node| {
            n.status()
                .members
                .iter()
                .find(|m| m.member == MemberId("n1".into()))
                .and_then(|m| m.data)
        };
        while data(&n2).is_none() {
            assert!(Instant::now() < deadline, "n2 heard no data state");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            data(&n2),
            Some(DataState {
                sessions: 4,
                healthy: false,
                booted: true,
                devices: 9,
            })
        );
        n1.shutdown();
        n2.shutdown();
    }

    #[test]
    fn many_roles_go_over_successive_heartbeats_and_sum_up() {
        let roles: Vec<SetRole> = (0..200)
            .map(|i| SetRole {
                set: format!("set-with-a-long-name-{i:03}"),
                role: if i == 7 {
                    Role::Primary
                } else {
                    Role::Alternate
                },
                epoch: i,
            })
            .collect();
        assert_eq!(summary(&roles), (Role::Primary, 199));
        assert_eq!(summary(&[]), (Role::None, 0));
        let mut from = 0;
        let mut sent = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let (part, next) = window(&roles, from);
            assert!(part.iter().map(SetRole::wire_len).sum::<usize>() <= ROLES_BUDGET);
            assert!(!part.is_empty() && part.len() < roles.len());
            sent.extend(part.into_iter().map(|r| r.set));
            from = next;
        }
        assert_eq!(
            sent.len(),
            roles.len(),
            "every set announced within 20 heartbeats"
        );
        let (few, next) = window(&roles[..3], 1);
        assert_eq!((few.len(), next), (3, 1));
    }
}
