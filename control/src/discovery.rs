//! The Discovery Service (SPEC.md §3): finds member candidates and admits a
//! candidate once connectivity to it is confirmed on **each** network both
//! members share, by a hello / hello-ack exchange on that network.
//!
//! ```text
//!  seeds (config) ──┐
//!  mDNS browse ─────┴─> candidate (link, addr) ──Hello(nonce) on L──> peer
//!                                              <──HelloAck(nonce) on L──
//!  Hello from a peer ──> its address on every link ──> probe each common link
//!  every common link confirmed ──> Admitted (handed to membership)
//!  datagram refused ──> Rejected (the reason; one per address per interval)
//! ```
//!
//! Sans-IO: [`Discovery`] takes candidates, datagrams and `now`, and returns
//! [`Output`]s; the driver owns the sockets, the clock and the mDNS browser.
//! Hellos to an unconfirmed address are repeated with exponential backoff.
//! Seeds are never given up (a seed member may boot later); browsed
//! addresses that never answer are given up after [`Config::forget_after`];
//! identified members are kept until admitted or, if never confirmed on any
//! link, forgotten after the same silence. A member that comes back with a
//! higher incarnation (it restarted) is confirmed and admitted afresh.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::wire::{self, ClusterKey, Header, Message, WireError};
use crate::{ClusterId, LinkName, MemberId, ProtocolVersion};

mod state;

use state::{nonce, Backoff, Candidate, Origin, Peer, Pending};

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

/// The DNS-SD service type members advertise and browse on each link.
pub const SERVICE_TYPE: &str = "_trellis._udp.local.";

/// Who this member is, as its hellos say.
#[derive(Debug, Clone)]
pub struct Identity {
    /// This member.
    pub member: MemberId,
    /// The cluster it belongs to.
    pub cluster: ClusterId,
    /// The key that authenticates the cluster's datagrams.
    pub key: ClusterKey,
    /// Software version, for operators.
    pub software: String,
    /// Control protocol version spoken.
    pub protocol: ProtocolVersion,
    /// Grows on every restart of this member.
    pub incarnation: u64,
}

/// Timers of the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Wait before the second hello to an unconfirmed address; doubles after
    /// every hello.
    pub hello_initial: Duration,
    /// Longest wait between hellos to an unconfirmed address.
    pub hello_max: Duration,
    /// How long a hello's nonce is accepted in an ack.
    pub nonce_ttl: Duration,
    /// Silence after which a browsed address, or a member confirmed on no
    /// link, is given up.
    pub forget_after: Duration,
    /// At most one [`Output::Rejected`] per address in this interval.
    pub reject_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            hello_initial: Duration::from_millis(500),
            hello_max: Duration::from_secs(30),
            nonce_ttl: Duration::from_secs(10),
            forget_after: Duration::from_secs(300),
            reject_interval: Duration::from_secs(60),
        }
    }
}

/// A configuration the service cannot start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Fewer than two links: no redundant network to confirm.
    #[error("a member needs at least two links, {0} configured")]
    TooFewLinks(usize),
    /// The same link named twice.
    #[error("link {0} is configured twice")]
    DuplicateLink(LinkName),
    /// A seed on a link this member does not have.
    #[error("seed {addr} is on link {link}, which this member does not have")]
    UnknownLink {
        /// The seed's link.
        link: LinkName,
        /// The seed's address.
        addr: String,
    },
    /// This member's own hello does not fit a datagram (names too long).
    #[error("this member's hello cannot be encoded")]
    Encode(#[source] WireError),
}

/// Why a received datagram was refused; its Display is the reason
/// [`Output::Rejected`] carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// It did not decode: another cluster, an incompatible protocol, another
    /// key, or not a control datagram at all.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Sent on one link, received on another: the networks are crossed.
    #[error("member {from} sent on its link {sent_on}, but it arrived on our link {arrived_on} (networks crossed?)")]
    LinkMismatch {
        /// Sender.
        from: MemberId,
        /// The link it says it sent on.
        sent_on: LinkName,
        /// The link it arrived on.
        arrived_on: LinkName,
    },
    /// Another member uses this member's id.
    #[error("member {member} at {addr} uses our member id (duplicate member name?)")]
    DuplicateMember {
        /// The id in question (ours).
        member: MemberId,
        /// Where the impostor sends from.
        addr: String,
    },
}

/// What the service asks of its driver, or reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `datagram` on `link` to `to`.
    Send {
        /// The network to send on.
        link: LinkName,
        /// Destination control address.
        to: String,
        /// The encoded message.
        datagram: Vec<u8>,
    },
    /// `member` answered our hello on `link`: that network is confirmed.
    Confirmed {
        /// The member.
        member: MemberId,
        /// The network confirmed.
        link: LinkName,
    },
    /// `member` is confirmed on every network we share: hand it to
    /// membership. Emitted again, with the higher incarnation, after the
    /// member restarts and is confirmed afresh.
    Admitted {
        /// The member.
        member: MemberId,
        /// Its incarnation.
        incarnation: u64,
        /// Its software version.
        software: String,
        /// Its control protocol version.
        protocol: ProtocolVersion,
        /// Its control address on each network we share.
        links: Vec<(LinkName, String)>,
    },
    /// A datagram from `addr` on `link` was refused (at most one per address
    /// per [`Config::reject_interval`]).
    Rejected {
        /// The network it arrived on.
        link: LinkName,
        /// The sender's address.
        addr: String,
        /// Why, for the log.
        reason: String,
    },
    /// A browsed address never answered and is no longer probed.
    GaveUp {
        /// Its network.
        link: LinkName,
        /// The address.
        addr: String,
    },
    /// A member that was never confirmed on any network fell silent and is
    /// no longer probed.
    Forgotten {
        /// The member.
        member: MemberId,
    },
}

/// The Discovery Service of one member.
#[derive(Debug)]
pub struct Discovery {
    id: Identity,
    links: BTreeMap<LinkName, String>,
    config: Config,
    candidates: BTreeMap<(LinkName, String), Candidate>,
    peers: BTreeMap<MemberId, Peer>,
    pending: BTreeMap<u64, Pending>,
    rejected_at: BTreeMap<String, Instant>,
    seq: u64,
    hellos: u64,
}

impl Discovery {
    /// A service for `id` with its control address on each link, and static
    /// seed addresses per link (hellos go to them on the first
    /// [`tick`](Self::tick)).
    pub fn new(
        id: Identity,
        links: Vec<(LinkName, String)>,
        seeds: Vec<(LinkName, String)>,
        config: Config,
    ) -> Result<Self, ConfigError> {
        if links.len() < 2 {
            return Err(ConfigError::TooFewLinks(links.len()));
        }
        let mut map = BTreeMap::new();
        for (l, a) in links {
            if map.contains_key(&l) {
                return Err(ConfigError::DuplicateLink(l));
            }
            map.insert(l, a);
        }
        let mut d = Self {
            id,
            links: map,
            config,
            candidates: BTreeMap::new(),
            peers: BTreeMap::new(),
            pending: BTreeMap::new(),
            rejected_at: BTreeMap::new(),
            seq: 0,
            hellos: 0,
        };
        for (link, addr) in seeds {
            let Some(own) = d.links.get(&link) else {
                return Err(ConfigError::UnknownLink { link, addr });
            };
            if *own == addr {
                continue;
            }
            let backoff = Backoff::new(&d.config);
            d.candidates.insert(
                (link, addr),
                Candidate {
                    origin: Origin::Seed,
                    member: None,
                    since: None,
                    backoff,
                },
            );
        }
        let first = d
            .links
            .keys()
            .next()
            .cloned()
            .ok_or(ConfigError::TooFewLinks(0))?;
        let probe = Message::Hello {
            header: d.header(&first),
            nonce: 0,
            links: d.link_list(),
        };
        wire::encode(&probe, &d.id.key).map_err(ConfigError::Encode)?;
        Ok(d)
    }

    /// This member's identity.
    pub fn identity(&self) -> &Identity {
        &self.id
    }

    /// Whether `member` is admitted (at its latest known incarnation).
    pub fn is_admitted(&self, member: &MemberId) -> bool {
        self.peers.get(member).is_some_and(|p| p.admitted)
    }

    /// The admitted members.
    pub fn admitted(&self) -> impl Iterator<Item = &MemberId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.admitted)
            .map(|(m, _)| m)
    }

    /// The networks on which `member` is confirmed.
    pub fn confirmed_links(&self, member: &MemberId) -> Vec<LinkName> {
        self.peers
            .get(member)
            .map(|p| p.confirmed.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The browser found a candidate at `addr` on `link` (`member` if its
    /// service record names one). Probes it unless it is us or a member
    /// already known at that address.
    pub fn found(
        &mut self,
        now: Instant,
        link: &LinkName,
        member: Option<&MemberId>,
        addr: &str,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        match self.links.get(link) {
            None => {
                tracing::debug!(%link, addr, "browse result on an unknown link");
                return out;
            }
            Some(own) if own == addr => return out,
            Some(_) => {}
        }
        if member == Some(&self.id.member) {
            return out;
        }
        let known = self
            .peers
            .values()
            .any(|p| p.addrs.get(link).is_some_and(|a| a == addr));
        if known {
            return out;
        }
        let key = (link.clone(), addr.to_owned());
        match self.candidates.get_mut(&key) {
            Some(c) => {
                if c.origin == Origin::Browse {
                    c.since = Some(now);
                }
            }
            None => {
                let backoff = Backoff::new(&self.config);
                self.candidates.insert(
                    key,
                    Candidate {
                        origin: Origin::Browse,
                        member: None,
                        since: Some(now),
                        backoff,
                    },
                );
            }
        }
        self.send_due(now, &mut out);
        out
    }

    /// A datagram arrived on `link` from `from`.
    pub fn received(
        &mut self,
        now: Instant,
        link: &LinkName,
        from: &str,
        datagram: &[u8],
    ) -> Vec<Output> {
        let mut out = Vec::new();
        if !self.links.contains_key(link) {
            tracing::debug!(%link, from, "datagram on an unknown link");
            return out;
        }
        match wire::decode(datagram, &self.id.key, &self.id.cluster, self.id.protocol) {
            Ok(msg) => self.on_message(now, link, from, msg, &mut out),
            Err(e) => self.reject(now, link, from, Reject::Wire(e), &mut out),
        }
        self.send_due(now, &mut out);
        out
    }

    /// Time passed: hellos that are due, given-up candidates, expired
    /// nonces.
    pub fn tick(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        let ttl = self.config.nonce_ttl;
        self.pending
            .retain(|_, p| now.saturating_duration_since(p.sent_at) < ttl);
        let ri = self.config.reject_interval;
        self.rejected_at
            .retain(|_, t| now.saturating_duration_since(*t) < ri);

        let forget = self.config.forget_after;
        let silent = |since: Instant| now.saturating_duration_since(since) >= forget;
        let gone: Vec<(LinkName, String)> = self
            .candidates
            .iter()
            .filter(|(_, c)| {
                c.origin == Origin::Browse && c.member.is_none() && c.since.is_some_and(silent)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for (link, addr) in gone {
            self.candidates.remove(&(link.clone(), addr.clone()));
            self.drop_pending_to(&link, &addr);
            out.push(Output::GaveUp { link, addr });
        }
        let gone: Vec<MemberId> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.admitted && p.confirmed.is_empty() && silent(p.last_heard))
            .map(|(m, _)| m.clone())
            .collect();
        for member in gone {
            self.forget(&member);
            out.push(Output::Forgotten { member });
        }
        self.send_due(now, &mut out);
        out
    }

    /// Drops all that is known of `member` (membership removed it): it will
    /// be discovered, confirmed and admitted afresh. Returns whether it was
    /// known.
    pub fn forget(&mut self, member: &MemberId) -> bool {
        let known = self.peers.remove(member).is_some();
        let backoff = Backoff::new(&self.config);
        for c in self.candidates.values_mut() {
            if c.member.as_ref() == Some(member) {
                c.member = None;
                c.backoff = backoff.clone();
            }
        }
        known
    }

    fn on_message(
        &mut self,
        now: Instant,
        link: &LinkName,
        from: &str,
        msg: Message,
        out: &mut Vec<Output>,
    ) {
        let h = msg.header();
        if h.link != *link {
            let r = Reject::LinkMismatch {
                from: h.from.clone(),
                sent_on: h.link.clone(),
                arrived_on: link.clone(),
            };
            return self.reject(now, link, from, r, out);
        }
        if h.from == self.id.member {
            return self.on_own(now, link, from, &msg, out);
        }
        match msg {
            // Membership's business.
            Message::Heartbeat { .. } => {}
            Message::Hello {
                header,
                nonce,
                links,
            } => self.on_hello(now, link, from, header, nonce, links, out),
            Message::HelloAck { header, nonce } => self.on_ack(now, link, header, nonce, out),
        }
    }

    /// A datagram in our name: our own hello looped back (a seed or browsed
    /// address that is us), or another member with our id.
    fn on_own(
        &mut self,
        now: Instant,
        link: &LinkName,
        from: &str,
        msg: &Message,
        out: &mut Vec<Output>,
    ) {
        let ours = msg.header().incarnation == self.id.incarnation
            && self.links.values().any(|a| a == from);
        if !ours {
            let r = Reject::DuplicateMember {
                member: self.id.member.clone(),
                addr: from.to_owned(),
            };
            return self.reject(now, link, from, r, out);
        }
        if let Message::Hello { nonce, .. } = msg {
            if let Some(p) = self.pending.remove(nonce) {
                let key = (p.link, p.addr);
                match self.candidates.get(&key).map(|c| c.origin) {
                    Some(Origin::Browse) => {
                        self.candidates.remove(&key);
                    }
                    Some(Origin::Seed) => {
                        if let Some(c) = self.candidates.get_mut(&key) {
                            c.member = Some(self.id.member.clone());
                        }
                    }
                    None => {}
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_hello(
        &mut self,
        now: Instant,
        link: &LinkName,
        from: &str,
        header: Header,
        nonce: u64,
        links: Vec<(LinkName, String)>,
        out: &mut Vec<Output>,
    ) {
        if !self.observe(now, &header) {
            return;
        }
        let mut addrs: BTreeMap<LinkName, String> = links
            .into_iter()
            .filter(|(l, _)| self.links.contains_key(l))
            .collect();
        addrs.entry(link.clone()).or_insert_with(|| from.to_owned());
        for (l, a) in &addrs {
            if let Some(c) = self.candidates.get_mut(&(l.clone(), a.clone())) {
                if c.member.is_none() {
                    c.member = Some(header.from.clone());
                }
            }
        }
        self.candidates
            .retain(|_, c| !(c.origin == Origin::Browse && c.member.is_some()));
        let config = self.config.clone();
        if let Some(p) = self.peers.get_mut(&header.from) {
            for l in addrs.keys() {
                p.probes
                    .entry(l.clone())
                    .or_insert_with(|| Backoff::new(&config));
            }
            p.addrs = addrs;
            p.links_current = true;
            if !p.confirmed.contains(link) {
                if let Some(b) = p.probes.get_mut(link) {
                    b.hurry(now, &config);
                }
            }
        }
        let ack = Message::HelloAck {
            header: self.header(link),
            nonce,
        };
        self.send(link, from, &ack, out);
        self.check_admitted(&header.from, out);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        link: &LinkName,
        header: Header,
        nonce: u64,
        out: &mut Vec<Output>,
    ) {
        // Only an answer to a live hello of ours, on the link it went out on.
        if self.pending.get(&nonce).is_none_or(|p| p.link != *link) {
            return;
        }
        let Some(sent) = self.pending.remove(&nonce) else {
            return;
        };
        if !self.observe(now, &header) {
            return;
        }
        let key = (sent.link, sent.addr);
        match self.candidates.get(&key).map(|c| c.origin) {
            Some(Origin::Browse) => {
                self.candidates.remove(&key);
            }
            Some(Origin::Seed) => {
                if let Some(c) = self.candidates.get_mut(&key) {
                    c.member = Some(header.from.clone());
                }
            }
            None => {}
        }
        let (_, addr) = key;
        let config = self.config.clone();
        let Some(p) = self.peers.get_mut(&header.from) else {
            return;
        };
        p.addrs.entry(link.clone()).or_insert(addr);
        p.probes
            .entry(link.clone())
            .or_insert_with(|| Backoff::new(&config));
        if p.confirmed.insert(link.clone()) {
            out.push(Output::Confirmed {
                member: header.from.clone(),
                link: link.clone(),
            });
        }
        self.check_admitted(&header.from, out);
    }

    /// Records what `h` says of its sender; false if it is from an earlier
    /// incarnation than one already seen (a late datagram).
    fn observe(&mut self, now: Instant, h: &Header) -> bool {
        let config = &self.config;
        let p = self.peers.entry(h.from.clone()).or_insert_with(|| Peer {
            incarnation: h.incarnation,
            software: h.software.clone(),
            protocol: h.protocol,
            addrs: BTreeMap::new(),
            links_current: false,
            confirmed: BTreeSet::new(),
            probes: BTreeMap::new(),
            admitted: false,
            last_heard: now,
        });
        if h.incarnation < p.incarnation {
            return false;
        }
        if h.incarnation > p.incarnation {
            // It restarted: confirm every network afresh, starting from the
            // addresses it had.
            p.incarnation = h.incarnation;
            p.links_current = false;
            p.confirmed.clear();
            p.admitted = false;
            for b in p.probes.values_mut() {
                *b = Backoff::new(config);
            }
        }
        p.software.clone_from(&h.software);
        p.protocol = h.protocol;
        p.last_heard = now;
        true
    }

    fn check_admitted(&mut self, member: &MemberId, out: &mut Vec<Output>) {
        let Some(p) = self.peers.get_mut(member) else {
            return;
        };
        if p.admitted || !p.links_current || p.addrs.is_empty() {
            return;
        }
        if p.addrs.keys().all(|l| p.confirmed.contains(l)) {
            p.admitted = true;
            out.push(Output::Admitted {
                member: member.clone(),
                incarnation: p.incarnation,
                software: p.software.clone(),
                protocol: p.protocol,
                links: p
                    .addrs
                    .iter()
                    .map(|(l, a)| (l.clone(), a.clone()))
                    .collect(),
            });
        }
    }

    fn reject(
        &mut self,
        now: Instant,
        link: &LinkName,
        addr: &str,
        reason: Reject,
        out: &mut Vec<Output>,
    ) {
        let interval = self.config.reject_interval;
        if let Some(t) = self.rejected_at.get(addr) {
            if now.saturating_duration_since(*t) < interval {
                tracing::debug!(%link, addr, %reason, "datagram rejected (repeat, not reported)");
                return;
            }
        }
        self.rejected_at.insert(addr.to_owned(), now);
        out.push(Output::Rejected {
            link: link.clone(),
            addr: addr.to_owned(),
            reason: reason.to_string(),
        });
    }

    /// Sends every hello that is due: to each identified member on its
    /// unconfirmed links, and to each candidate address not yet tied to one.
    fn send_due(&mut self, now: Instant, out: &mut Vec<Output>) {
        let config = self.config.clone();
        let mut to: Vec<(LinkName, String)> = Vec::new();
        for p in self.peers.values_mut() {
            for (link, b) in &mut p.probes {
                if p.confirmed.contains(link) || !b.due(now) {
                    continue;
                }
                if let Some(addr) = p.addrs.get(link) {
                    b.sent(now, &config);
                    to.push((link.clone(), addr.clone()));
                }
            }
        }
        let idle: BTreeSet<(LinkName, String)> = self
            .candidates
            .iter()
            .filter(|((link, _), c)| self.candidate_idle(link, c))
            .map(|(k, _)| k.clone())
            .collect();
        for (key, c) in &mut self.candidates {
            if !idle.contains(key) && c.backoff.due(now) && !to.contains(key) {
                c.backoff.sent(now, &config);
                to.push(key.clone());
            }
        }
        for (link, addr) in to {
            self.send_hello(now, link, addr, out);
        }
    }

    /// A candidate address needs no hellos of its own: it is us, or the
    /// member behind it is probed (or confirmed) on that link already.
    fn candidate_idle(&self, link: &LinkName, c: &Candidate) -> bool {
        match &c.member {
            None => false,
            Some(m) if *m == self.id.member => true,
            Some(m) => self
                .peers
                .get(m)
                .is_some_and(|p| p.confirmed.contains(link) || p.addrs.contains_key(link)),
        }
    }

    fn send_hello(&mut self, now: Instant, link: LinkName, addr: String, out: &mut Vec<Output>) {
        self.hellos += 1;
        let nonce = nonce(self.id.incarnation, self.hellos);
        let msg = Message::Hello {
            header: self.header(&link),
            nonce,
            links: self.link_list(),
        };
        if self.send(&link, &addr, &msg, out) {
            self.pending.insert(
                nonce,
                Pending {
                    link,
                    addr,
                    sent_at: now,
                },
            );
        }
    }

    fn send(&mut self, link: &LinkName, to: &str, msg: &Message, out: &mut Vec<Output>) -> bool {
        match wire::encode(msg, &self.id.key) {
            Ok(datagram) => {
                out.push(Output::Send {
                    link: link.clone(),
                    to: to.to_owned(),
                    datagram,
                });
                true
            }
            Err(e) => {
                // `new` encoded a hello; an ack is smaller. Unreachable in
                // practice, and not worth stopping the member for.
                tracing::warn!(%link, to, error = %e, "control datagram not encoded");
                false
            }
        }
    }

    fn drop_pending_to(&mut self, link: &LinkName, addr: &str) {
        self.pending
            .retain(|_, p| !(p.link == *link && p.addr == addr));
    }

    fn header(&mut self, link: &LinkName) -> Header {
        self.seq += 1;
        Header {
            cluster: self.id.cluster.clone(),
            from: self.id.member.clone(),
            software: self.id.software.clone(),
            protocol: self.id.protocol,
            incarnation: self.id.incarnation,
            link: link.clone(),
            seq: self.seq,
        }
    }

    fn link_list(&self) -> Vec<(LinkName, String)> {
        self.links
            .iter()
            .map(|(l, a)| (l.clone(), a.clone()))
            .collect()
    }
}
