//! The per-address and per-member state behind [`Discovery`](super::Discovery):
//! when the next hello goes out, what is known of a candidate address or an
//! identified member, and the hellos awaiting their ack.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::Config;
use crate::{LinkName, MemberId, ProtocolVersion};

/// When to send the next hello to one address.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    /// `None`: now.
    next_at: Option<Instant>,
    interval: Duration,
    last_sent: Option<Instant>,
}

impl Backoff {
    pub(super) fn new(config: &Config) -> Self {
        Self {
            next_at: None,
            interval: config.hello_initial,
            last_sent: None,
        }
    }

    pub(super) fn due(&self, now: Instant) -> bool {
        self.next_at.is_none_or(|t| t <= now)
    }

    pub(super) fn sent(&mut self, now: Instant, config: &Config) {
        self.last_sent = Some(now);
        self.next_at = Some(now + self.interval);
        self.interval = (self.interval * 2).min(config.hello_max);
    }

    /// The peer just showed it is there: hello again now, unless we did
    /// within `hello_initial` (so two members' hellos cannot ping-pong).
    pub(super) fn hurry(&mut self, now: Instant, config: &Config) {
        let recent = self
            .last_sent
            .is_some_and(|t| now.saturating_duration_since(t) < config.hello_initial);
        if !recent {
            self.next_at = None;
            self.interval = config.hello_initial;
        }
    }
}

/// Where a not yet identified address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// Configured.
    Seed,
    /// Found by the DNS-SD browser.
    Browse,
}

/// An address to probe on one link, before it is tied to a known member.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub(super) origin: Origin,
    /// Who answered from it (seeds only: a browsed address is dropped once
    /// its member is known).
    pub(super) member: Option<MemberId>,
    /// Found, or last found again by the browser.
    pub(super) since: Option<Instant>,
    pub(super) backoff: Backoff,
}

/// An identified member, admitted or not.
#[derive(Debug, Clone)]
pub(super) struct Peer {
    pub(super) incarnation: u64,
    pub(super) software: String,
    pub(super) protocol: ProtocolVersion,
    /// Its control address on each link we share.
    pub(super) addrs: BTreeMap<LinkName, String>,
    /// `addrs` come from a hello of the current incarnation.
    pub(super) links_current: bool,
    pub(super) confirmed: BTreeSet<LinkName>,
    /// Hellos to `addrs`, per link, while the link is unconfirmed.
    pub(super) probes: BTreeMap<LinkName, Backoff>,
    pub(super) admitted: bool,
    pub(super) last_heard: Instant,
}

/// A hello awaiting its ack.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) link: LinkName,
    pub(super) addr: String,
    pub(super) sent_at: Instant,
}

/// The nonce of our `n`th hello: distinct for every `n` within an
/// incarnation (a bijective mix), and unlike the previous incarnation's, so
/// a late ack to a hello of our previous life matches nothing. Forging an
/// ack needs the cluster key, so nonces need not be secret.
pub(super) fn nonce(incarnation: u64, n: u64) -> u64 {
    let mut z = incarnation.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
