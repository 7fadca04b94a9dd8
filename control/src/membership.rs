//! Failure detection from heartbeats (SPEC.md §3, "Membership and health"):
//! the state of each link of each configured peer (up, down, flapping) and
//! of each peer as a whole (alive, suspect, failed).
//!
//! ```text
//! heartbeat from m on link L ─> heard(now, m, L, incarnation) ─> link L of m Up, m Alive
//! tick(now): no heartbeat on L for link_timeout ───────────────> link L of m Down
//!            > flap_threshold up/down changes in flap_window ──> link L of m Flapping
//!                                                                (until stable for flap_window)
//!            silent on every link for link_timeout ────────────> m Suspect
//!            ... and for failed_after more ────────────────────> m Failed
//! a higher incarnation than the one known ─────────────────────> MemberRestarted (then Alive)
//! ```
//!
//! Losing one network is a link event (an alarm), never a member failure: a
//! member is Suspect only when it is silent on *every* link it is configured
//! on. Telling a link fault from a member fault beyond that (the self-test
//! over the redundant network) is the Policy Manager's job.
//!
//! Sans-IO: time is the `now` the caller passes in; nothing here reads a
//! clock or a socket. The driver calls [`Membership::heard`] (or
//! [`Membership::heard_message`]) for every authenticated heartbeat, and
//! [`Membership::tick`] at [`Membership::next_deadline`] or on a regular
//! timer; both return the [`Event`]s that happened, in order.
//!
//! Heartbeats from members that are not configured peers, on links a peer
//! is not configured on, or with an older incarnation than the one known,
//! change nothing: `heard` returns them as [`Ignored`] (an `Err`) for the
//! driver to log, not as events, because they arrive every heartbeat
//! interval. Admitting members is the discovery service's job.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::wire::Message;
use crate::{LinkName, MemberId};

/// Timing of the failure detector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How often members send a heartbeat on each link.
    pub heartbeat_interval: Duration,
    /// A link of a peer is Down after no heartbeat on it for this long; a
    /// peer silent on every link for this long is Suspect.
    pub link_timeout: Duration,
    /// A link that changes between up and down more than this many times
    /// within `flap_window` is Flapping.
    pub flap_threshold: usize,
    /// The flapping window; a Flapping link returns to Up or Down after no
    /// change for this long.
    pub flap_window: Duration,
    /// A Suspect peer is Failed after this much further silence on every
    /// link.
    pub failed_after: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(200),
            link_timeout: Duration::from_secs(1),
            flap_threshold: 4,
            flap_window: Duration::from_secs(30),
            failed_after: Duration::from_secs(2),
        }
    }
}

impl Config {
    /// Checks that the timings make sense together.
    pub fn validate(&self) -> Result<(), MembershipError> {
        let bad = |why| Err(MembershipError::InvalidConfig(why));
        if self.heartbeat_interval.is_zero() {
            return bad("heartbeat interval is zero");
        }
        if self.link_timeout < self.heartbeat_interval * 2 {
            return bad("link timeout is shorter than two heartbeat intervals");
        }
        if self.flap_threshold == 0 {
            return bad("flap threshold is zero");
        }
        if self.flap_window < self.link_timeout {
            return bad("flap window is shorter than the link timeout");
        }
        Ok(())
    }
}

/// Errors configuring the failure detector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// The timings do not make sense together.
    #[error("invalid membership configuration: {0}")]
    InvalidConfig(&'static str),
    /// A peer must be expected on at least one link.
    #[error("peer {0} is configured on no link")]
    NoLinks(MemberId),
}

/// Why a heartbeat changed nothing (for the driver's log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    /// The sender is not a configured peer.
    #[error("heartbeat from {0}, which is not a configured peer")]
    UnknownMember(MemberId),
    /// The peer is not configured on this link.
    #[error("heartbeat from {member} on link {link}, which it is not configured on")]
    UnknownLink {
        /// Sender.
        member: MemberId,
        /// Link it arrived on.
        link: LinkName,
    },
    /// An incarnation older than the one known: a datagram from before the
    /// peer restarted.
    #[error("heartbeat from {member} of incarnation {got}, older than the known {known}")]
    StaleIncarnation {
        /// Sender.
        member: MemberId,
        /// Incarnation in the heartbeat.
        got: u64,
        /// Incarnation known.
        known: u64,
    },
    /// The heartbeat arrived on another link than the one it names (the
    /// networks are cross-wired).
    #[error("heartbeat from {member} sent on link {claimed} arrived on link {arrived}")]
    LinkMismatch {
        /// Sender.
        member: MemberId,
        /// Link the sender says it used.
        claimed: LinkName,
        /// Link it arrived on.
        arrived: LinkName,
    },
    /// Not a heartbeat (hellos are the discovery service's).
    #[error("not a heartbeat")]
    NotHeartbeat,
}

/// The state of one link of one peer, as seen from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Heartbeats arrive on it.
    Up,
    /// No heartbeat on it for the link timeout (or never heard on it).
    Down,
    /// It keeps changing between up and down; its up/down events are held
    /// back until it has been stable for the flap window.
    Flapping,
}

/// The state of one peer, as seen from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Heard on at least one link within the link timeout (or configured
    /// within it).
    Alive,
    /// Silent on every link for the link timeout.
    Suspect,
    /// Silent on every link for the link timeout and the failed grace.
    Failed,
}

/// Something that happened to a peer or one of its links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Heartbeats arrive on the link again (or for the first time).
    LinkUp {
        /// Peer.
        member: MemberId,
        /// Link.
        link: LinkName,
    },
    /// No heartbeat on the link for the link timeout: an alarm, not a
    /// member failure.
    LinkDown {
        /// Peer.
        member: MemberId,
        /// Link.
        link: LinkName,
    },
    /// The link keeps going up and down.
    LinkFlapping {
        /// Peer.
        member: MemberId,
        /// Link.
        link: LinkName,
    },
    /// The peer is heard again after being Suspect or Failed.
    MemberAlive {
        /// Peer.
        member: MemberId,
    },
    /// The peer is silent on every link.
    MemberSuspect {
        /// Peer.
        member: MemberId,
    },
    /// The peer stayed silent on every link past the grace period.
    MemberFailed {
        /// Peer.
        member: MemberId,
    },
    /// The peer restarted: it is heard with a higher incarnation than the
    /// one known (whatever its state; it is followed by `MemberAlive` if it
    /// was not Alive).
    MemberRestarted {
        /// Peer.
        member: MemberId,
        /// Its new incarnation.
        incarnation: u64,
    },
}

impl Event {
    /// The peer the event is about.
    pub fn member(&self) -> &MemberId {
        match self {
            Event::LinkUp { member, .. }
            | Event::LinkDown { member, .. }
            | Event::LinkFlapping { member, .. }
            | Event::MemberAlive { member }
            | Event::MemberSuspect { member }
            | Event::MemberFailed { member }
            | Event::MemberRestarted { member, .. } => member,
        }
    }

    /// Whether it calls for an operator alarm (a lost or unstable link, a
    /// silent member).
    pub fn is_alarm(&self) -> bool {
        matches!(
            self,
            Event::LinkDown { .. }
                | Event::LinkFlapping { .. }
                | Event::MemberSuspect { .. }
                | Event::MemberFailed { .. }
        )
    }
}

/// One link of a peer, for `member list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    /// Link name.
    pub link: LinkName,
    /// Its state.
    pub state: LinkState,
    /// How long it has been in that state.
    pub since: Duration,
    /// Time since the last heartbeat on it; `None` if never heard.
    pub last_heard: Option<Duration>,
}

/// One peer, for `member list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// Peer.
    pub member: MemberId,
    /// Its state.
    pub state: MemberState,
    /// How long it has been in that state.
    pub since: Duration,
    /// Its incarnation; `None` until first heard.
    pub incarnation: Option<u64>,
    /// Its links, by name.
    pub links: Vec<LinkStatus>,
    /// Its role and epoch per Failover Set, as its heartbeats announce them
    /// (filled in by the node; empty here).
    pub announced: Vec<(String, crate::wire::Role, u64)>,
    /// What its heartbeats say of its data path (filled in by the node).
    pub data: Option<crate::wire::DataState>,
}

#[derive(Debug)]
struct Link {
    last_heard: Option<Instant>,
    /// Heard within the link timeout (the raw state under any flapping).
    reachable: bool,
    flapping: bool,
    /// Instants of the up/down changes within the flap window, oldest first.
    changes: VecDeque<Instant>,
    /// When the reported state began.
    since: Instant,
}

impl Link {
    fn new(now: Instant) -> Self {
        Self {
            last_heard: None,
            reachable: false,
            flapping: false,
            changes: VecDeque::new(),
            since: now,
        }
    }

    fn state(&self) -> LinkState {
        match (self.flapping, self.reachable) {
            (true, _) => LinkState::Flapping,
            (false, true) => LinkState::Up,
            (false, false) => LinkState::Down,
        }
    }

    /// Records a raw change at `at`; returns the newly reported state, if
    /// the reported state changed. The first time a link is heard is not
    /// counted as a change towards flapping.
    fn set_reachable(
        &mut self,
        reachable: bool,
        at: Instant,
        count: bool,
        cfg: &Config,
    ) -> Option<LinkState> {
        if self.reachable == reachable {
            return None;
        }
        self.reachable = reachable;
        if count {
            self.changes.push_back(at);
            while let Some(&first) = self.changes.front() {
                if at.saturating_duration_since(first) < cfg.flap_window {
                    break;
                }
                self.changes.pop_front();
            }
        }
        if self.flapping {
            return None;
        }
        if self.changes.len() > cfg.flap_threshold {
            self.flapping = true;
        }
        self.since = at;
        Some(self.state())
    }

    /// Brings the link up to `now`: times it out, ends a flapping period
    /// that has been stable long enough. Returns the reported changes.
    fn advance(&mut self, now: Instant, cfg: &Config, out: &mut Vec<LinkState>) {
        if let (true, Some(heard)) = (self.reachable, self.last_heard) {
            let down_at = heard + cfg.link_timeout;
            if now >= down_at {
                out.extend(self.set_reachable(false, down_at, true, cfg));
            }
        }
        if self.flapping {
            let stable_at = self.changes.back().map(|&t| t + cfg.flap_window);
            if stable_at.is_none_or(|t| now >= t) {
                self.flapping = false;
                self.changes.clear();
                self.since = stable_at.unwrap_or(now);
                out.push(self.state());
            }
        }
    }

    fn deadline(&self, cfg: &Config) -> Option<Instant> {
        let down = match (self.reachable, self.last_heard) {
            (true, Some(h)) => Some(h + cfg.link_timeout),
            _ => None,
        };
        let stable = if self.flapping {
            self.changes.back().map(|&t| t + cfg.flap_window)
        } else {
            None
        };
        down.into_iter().chain(stable).min()
    }
}

#[derive(Debug)]
struct Peer {
    links: BTreeMap<LinkName, Link>,
    state: MemberState,
    /// When `state` began.
    since: Instant,
    incarnation: Option<u64>,
    /// Last heartbeat on any link, or when the peer was configured.
    last_heard: Instant,
}

impl Peer {
    fn advance(&mut self, member: &MemberId, now: Instant, cfg: &Config, events: &mut Vec<Event>) {
        let mut changes = Vec::new();
        for (name, link) in &mut self.links {
            changes.clear();
            link.advance(now, cfg, &mut changes);
            events.extend(changes.iter().map(|s| link_event(*s, member, name)));
        }
        let suspect_at = self.last_heard + cfg.link_timeout;
        if self.state == MemberState::Alive && now >= suspect_at {
            self.state = MemberState::Suspect;
            self.since = suspect_at;
            events.push(Event::MemberSuspect {
                member: member.clone(),
            });
        }
        let failed_at = suspect_at + cfg.failed_after;
        if self.state == MemberState::Suspect && now >= failed_at {
            self.state = MemberState::Failed;
            self.since = failed_at;
            events.push(Event::MemberFailed {
                member: member.clone(),
            });
        }
    }

    fn deadline(&self, cfg: &Config) -> Option<Instant> {
        let suspect_at = self.last_heard + cfg.link_timeout;
        let own = match self.state {
            MemberState::Alive => Some(suspect_at),
            MemberState::Suspect => Some(suspect_at + cfg.failed_after),
            MemberState::Failed => None,
        };
        self.links
            .values()
            .filter_map(|l| l.deadline(cfg))
            .chain(own)
            .min()
    }

    fn status(&self, member: &MemberId, now: Instant) -> MemberStatus {
        MemberStatus {
            member: member.clone(),
            state: self.state,
            since: now.saturating_duration_since(self.since),
            incarnation: self.incarnation,
            links: self
                .links
                .iter()
                .map(|(name, l)| LinkStatus {
                    link: name.clone(),
                    state: l.state(),
                    since: now.saturating_duration_since(l.since),
                    last_heard: l.last_heard.map(|h| now.saturating_duration_since(h)),
                })
                .collect(),
            announced: Vec::new(),
            data: None,
        }
    }
}

fn link_event(state: LinkState, member: &MemberId, link: &LinkName) -> Event {
    let (member, link) = (member.clone(), link.clone());
    match state {
        LinkState::Up => Event::LinkUp { member, link },
        LinkState::Down => Event::LinkDown { member, link },
        LinkState::Flapping => Event::LinkFlapping { member, link },
    }
}

/// The failure detector: the configured peers and what is known of them.
#[derive(Debug)]
pub struct Membership {
    config: Config,
    peers: BTreeMap<MemberId, Peer>,
}

impl Membership {
    /// A detector with no peers.
    pub fn new(config: Config) -> Result<Self, MembershipError> {
        config.validate()?;
        Ok(Self {
            config,
            peers: BTreeMap::new(),
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Expects `member` on `links` from `now` on (typically when discovery
    /// admits it). A new peer starts Alive with its links Down until heard
    /// on them: it has one link timeout to be heard on some link before it
    /// is Suspect. Adding a known peer again changes its links: links it
    /// keeps keep their state, new ones start Down, others are forgotten.
    pub fn add_peer(
        &mut self,
        now: Instant,
        member: &MemberId,
        links: impl IntoIterator<Item = LinkName>,
    ) -> Result<(), MembershipError> {
        let mut wanted: BTreeMap<LinkName, Link> =
            links.into_iter().map(|l| (l, Link::new(now))).collect();
        if wanted.is_empty() {
            return Err(MembershipError::NoLinks(member.clone()));
        }
        match self.peers.get_mut(member) {
            Some(peer) => {
                for (name, link) in &mut wanted {
                    if let Some(old) = peer.links.remove(name) {
                        *link = old;
                    }
                }
                peer.links = wanted;
            }
            None => {
                self.peers.insert(
                    member.clone(),
                    Peer {
                        links: wanted,
                        state: MemberState::Alive,
                        since: now,
                        incarnation: None,
                        last_heard: now,
                    },
                );
            }
        }
        Ok(())
    }

    /// Forgets a peer; returns whether it was configured.
    pub fn remove_peer(&mut self, member: &MemberId) -> bool {
        self.peers.remove(member).is_some()
    }

    /// A valid heartbeat from `member` of `incarnation` arrived on `link`
    /// at `now`. Returns what happened, timeouts due by `now` first.
    pub fn heard(
        &mut self,
        now: Instant,
        member: &MemberId,
        link: &LinkName,
        incarnation: u64,
    ) -> Result<Vec<Event>, Ignored> {
        let cfg = &self.config;
        let peer = self
            .peers
            .get_mut(member)
            .ok_or_else(|| Ignored::UnknownMember(member.clone()))?;
        if !peer.links.contains_key(link) {
            return Err(Ignored::UnknownLink {
                member: member.clone(),
                link: link.clone(),
            });
        }
        let restarted = match peer.incarnation {
            Some(known) if incarnation < known => {
                return Err(Ignored::StaleIncarnation {
                    member: member.clone(),
                    got: incarnation,
                    known,
                });
            }
            Some(known) => incarnation > known,
            None => false,
        };
        let mut events = Vec::new();
        peer.advance(member, now, cfg, &mut events);
        peer.incarnation = Some(incarnation);
        if restarted {
            events.push(Event::MemberRestarted {
                member: member.clone(),
                incarnation,
            });
        }
        if let Some(l) = peer.links.get_mut(link) {
            let heard_before = l.last_heard.is_some();
            l.last_heard = Some(l.last_heard.map_or(now, |h| h.max(now)));
            if let Some(s) = l.set_reachable(true, now, heard_before, cfg) {
                events.push(link_event(s, member, link));
            }
        }
        peer.last_heard = peer.last_heard.max(now);
        if peer.state != MemberState::Alive {
            peer.state = MemberState::Alive;
            peer.since = now;
            events.push(Event::MemberAlive {
                member: member.clone(),
            });
        }
        Ok(events)
    }

    /// [`Membership::heard`] for a decoded, authenticated datagram that
    /// arrived on `arrived_on`: only heartbeats count, and only on the link
    /// they name.
    pub fn heard_message(
        &mut self,
        now: Instant,
        arrived_on: &LinkName,
        msg: &Message,
    ) -> Result<Vec<Event>, Ignored> {
        let Message::Heartbeat { header, .. } = msg else {
            return Err(Ignored::NotHeartbeat);
        };
        if &header.link != arrived_on {
            return Err(Ignored::LinkMismatch {
                member: header.from.clone(),
                claimed: header.link.clone(),
                arrived: arrived_on.clone(),
            });
        }
        self.heard(now, &header.from, arrived_on, header.incarnation)
    }

    /// Applies the timeouts due by `now`; returns what happened, peer by
    /// peer (in name order), link events before member events.
    pub fn tick(&mut self, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        for (member, peer) in &mut self.peers {
            peer.advance(member, now, &self.config, &mut events);
        }
        events
    }

    /// The next instant at which `tick` would change something, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|p| p.deadline(&self.config))
            .min()
    }

    /// The state of a peer (as of the last `tick` or `heard`).
    pub fn state(&self, member: &MemberId) -> Option<MemberState> {
        self.peers.get(member).map(|p| p.state)
    }

    /// The state of one link of a peer (as of the last `tick` or `heard`).
    pub fn link_state(&self, member: &MemberId, link: &LinkName) -> Option<LinkState> {
        self.peers.get(member)?.links.get(link).map(Link::state)
    }

    /// One peer for `member list`, durations measured to `now` (states as
    /// of the last `tick` or `heard`: tick first for a current view).
    pub fn member(&self, now: Instant, member: &MemberId) -> Option<MemberStatus> {
        self.peers.get(member).map(|p| p.status(member, now))
    }

    /// Every peer for `member list`, by name.
    pub fn members(&self, now: Instant) -> Vec<MemberStatus> {
        self.peers.iter().map(|(m, p)| p.status(m, now)).collect()
    }
}

#[cfg(test)]
mod tests;
