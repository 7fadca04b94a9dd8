//! Who gets a connection on the portals, so that a flood of connections
//! cannot take the member's file descriptors or shut out good hosts:
//!
//! - a **cap per portal** on open connections (`max_connections`): a
//!   connection past it is closed as soon as it is accepted;
//! - a **cap per source address on connections still logging in**
//!   (`max_logins_per_address`): idle or slow logins from one address
//!   (the 15 s login deadline ends them) cannot fill the portal for
//!   everyone else; once logged in, a connection no longer counts there.
//!
//! - **abusive addresses slow down**: a connection dropped for too many
//!   protocol errors is a strike against its address; once an address has
//!   more than three, every new connection from it waits (0.25 s doubling
//!   to 8 s, as below) before its first answer, so reconnecting does not
//!   renew a flood. A login does not clear these; a quiet minute does.
//! - **refused logins slow down**: after a few refusals from one source
//!   address (or one initiator name from one address), each further
//!   refusal's answer is held back for a delay that doubles with every
//!   refusal (0.25 s up to 8 s), so with the address's cap on logins in
//!   progress a password guesser gets a few tries per second at most.
//!   Every count is per address: another address cannot slow down (or
//!   lock out) a legitimate initiator. A login that proves a CHAP secret
//!   clears its name's count from that address (not the address's);
//!   counts are forgotten after a quiet minute.
//!
//! Shared by every core (a connection is admitted on one core, counted
//! against the portal on all); taken once per connection, never per
//! command. Counts are kept for `/metrics`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::login::{LoginError, LoginStatus};

/// The key a source address is counted under: an IPv4 address (an
/// IPv4-mapped IPv6 one too) as it is, an IPv6 address by its /64 prefix
/// (one host usually holds a whole /64, so one address each would let it
/// act as many).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

/// The caps and counters of all portals.
#[derive(Debug)]
pub struct Admission {
    max_per_portal: usize,
    max_logins_per_address: usize,
    /// Open connections, by portal index.
    open: Vec<AtomicUsize>,
    /// Connections logging in, by source address.
    logging_in: Mutex<HashMap<IpAddr, usize>>,
    refused_cap: AtomicU64,
    refused_address: AtomicU64,
    accept_errors: AtomicU64,
    /// Refused logins by address, and by initiator name and address.
    failures: Mutex<Failures>,
    /// Refused logins by kind.
    refusals: [AtomicU64; RefusalKind::COUNT],
    /// Refusals whose answer was held back.
    delayed: AtomicU64,
    /// Connections dropped for protocol errors.
    dropped: AtomicU64,
}

/// Refused logins counted towards a delay.
#[derive(Debug, Default)]
struct Failures {
    by_address: HashMap<IpAddr, Strikes>,
    by_name: HashMap<(String, IpAddr), Strikes>,
    /// Connections dropped for protocol errors, by address.
    abuse: HashMap<IpAddr, Strikes>,
    /// When the tables were last pruned.
    pruned: Option<Instant>,
}

impl Failures {
    /// Past [`MAX_TRACKED`] entries, drops those quiet for a minute (at
    /// most once a second: a scan costs).
    fn forget_quiet(&mut self, now: Instant) {
        if self.len() > MAX_TRACKED
            && self
                .pruned
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.pruned = Some(now);
            let quiet = |s: &mut Strikes| now.duration_since(s.last) < FORGET_AFTER;
            self.by_address.retain(|_, s| quiet(s));
            self.by_name.retain(|_, s| quiet(s));
            self.abuse.retain(|_, s| quiet(s));
        }
    }

    fn len(&self) -> usize {
        self.by_address.len() + self.by_name.len() + self.abuse.len()
    }

    /// Whether a new key may be tracked (the tables stay bounded; an
    /// address already tracked keeps counting).
    fn room(&self) -> bool {
        self.len() < 2 * MAX_TRACKED
    }
}

/// Refusals in a row, and when the last was.
#[derive(Debug, Clone, Copy)]
struct Strikes {
    count: u32,
    last: Instant,
}

/// Refusals free of delay (typos happen).
const FREE_REFUSALS: u32 = 3;
/// The first delay past them; it doubles with each further refusal.
const FIRST_DELAY: Duration = Duration::from_millis(250);
/// The longest delay.
const MAX_DELAY: Duration = Duration::from_secs(8);
/// Counts are forgotten after this long without a refusal.
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Past this many addresses or names tracked, the quiet ones are dropped.
const MAX_TRACKED: usize = 65_536;

impl Strikes {
    /// One more refusal at `now` (after forgetting old ones); the delay
    /// it earns.
    fn strike(&mut self, now: Instant) -> Duration {
        if now.duration_since(self.last) >= FORGET_AFTER {
            self.count = 0;
        }
        self.count += 1;
        self.last = now;
        delay_after(self.count)
    }
}

/// The delay earned by the `n`th refusal in a row.
pub fn delay_after(n: u32) -> Duration {
    match n.checked_sub(FREE_REFUSALS + 1) {
        None => Duration::ZERO,
        Some(extra) => FIRST_DELAY
            .checked_mul(1u32 << extra.min(16))
            .map_or(MAX_DELAY, |d| d.min(MAX_DELAY)),
    }
}

/// What kind of refusal a login got, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// CHAP failed or was skipped while required.
    Authentication,
    /// The target does not admit the initiator.
    Authorization,
    /// No such target.
    NotFound,
    /// A protocol error or an unsupported request.
    Other,
}

impl RefusalKind {
    const COUNT: usize = 4;
    /// Every kind, in counter order.
    pub const ALL: [RefusalKind; Self::COUNT] = [
        RefusalKind::Authentication,
        RefusalKind::Authorization,
        RefusalKind::NotFound,
        RefusalKind::Other,
    ];

    /// The kind of `e`.
    pub fn of(e: &LoginError) -> Self {
        match e {
            LoginError::NotAuthorized => Self::Authorization,
            LoginError::TargetNotFound(_) => Self::NotFound,
            e if e.status() == LoginStatus::AuthenticationFailure => Self::Authentication,
            _ => Self::Other,
        }
    }

    /// Its label on `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Authentication => "authentication",
            Self::Authorization => "authorization",
            Self::NotFound => "not_found",
            Self::Other => "other",
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The portal holds `max_connections` already.
    PortalFull,
    /// Its address has `max_logins_per_address` logins in progress.
    AddressBusy,
}

/// The counters, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdmissionStats {
    /// Connections open on all portals.
    pub open: usize,
    /// The cap per portal.
    pub max_per_portal: usize,
    /// Connections closed at once because their portal was full.
    pub refused_cap: u64,
    /// Connections closed at once because their address had too many
    /// logins in progress.
    pub refused_address: u64,
    /// Failed accepts (out of descriptors, aborted connections).
    pub accept_errors: u64,
    /// Refused logins, by [`RefusalKind::ALL`].
    pub login_refusals: [u64; 4],
    /// Refused logins whose answer was held back.
    pub login_delays: u64,
    /// Connections dropped for too many protocol errors.
    pub protocol_drops: u64,
}

impl Admission {
    /// Caps for `portals` portals.
    pub fn new(portals: usize, max_per_portal: usize, max_logins_per_address: usize) -> Self {
        Self {
            max_per_portal,
            max_logins_per_address,
            open: (0..portals).map(|_| AtomicUsize::new(0)).collect(),
            logging_in: Mutex::new(HashMap::new()),
            refused_cap: AtomicU64::new(0),
            refused_address: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            failures: Mutex::new(Failures::default()),
            refusals: Default::default(),
            delayed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Records a login refused for `kind`, from `peer` as `initiator`, at
    /// `now`; how long to hold its answer back.
    pub fn login_refused(
        &self,
        kind: RefusalKind,
        peer: Option<IpAddr>,
        initiator: Option<&str>,
        now: Instant,
    ) -> Duration {
        self.refusals[kind as usize].fetch_add(1, Ordering::Relaxed);
        let Some(ip) = peer else {
            return Duration::ZERO;
        };
        let mut f = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if f.by_address.len() + f.by_name.len() > MAX_TRACKED {
            f.by_address
                .retain(|_, s| now.duration_since(s.last) < FORGET_AFTER);
            f.by_name
                .retain(|_, s| now.duration_since(s.last) < FORGET_AFTER);
        }
        let fresh = Strikes {
            count: 0,
            last: now,
        };
        let room = f.room();
        let by_address = match f.by_address.get_mut(&ip) {
            Some(s) => s.strike(now),
            None if room => f.by_address.entry(ip).or_insert(fresh).strike(now),
            None => Duration::ZERO,
        };
        let by_name = match initiator {
            Some(name) if room || f.by_name.contains_key(&(name.to_owned(), ip)) => f
                .by_name
                .entry((name.to_owned(), ip))
                .or_insert(fresh)
                .strike(now),
            _ => Duration::ZERO,
        };
        let delay = by_address.max(by_name);
        if !delay.is_zero() {
            self.delayed.fetch_add(1, Ordering::Relaxed);
        }
        delay
    }

    /// A connection from `peer` was dropped for protocol errors at `now`.
    pub fn protocol_abuse(&self, peer: Option<IpAddr>, now: Instant) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        let Some(ip) = peer else { return };
        let mut f = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        f.forget_quiet(now);
        if f.room() || f.abuse.contains_key(&ip) {
            f.abuse
                .entry(ip)
                .or_insert(Strikes {
                    count: 0,
                    last: now,
                })
                .strike(now);
        }
    }

    /// How long a new connection from `peer` waits before its first
    /// answer: what its address's protocol-error drops have earned.
    pub fn connection_hold(&self, peer: Option<IpAddr>, now: Instant) -> Duration {
        let Some(ip) = peer else {
            return Duration::ZERO;
        };
        let f = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        match f.abuse.get(&ip) {
            Some(s) if now.duration_since(s.last) < FORGET_AFTER => delay_after(s.count),
            _ => Duration::ZERO,
        }
    }

    /// `initiator` proved its CHAP secret from `peer`: that name's
    /// refusals from that address are forgotten (the address's count only
    /// ages out: a guesser cannot reset it with some other login).
    pub fn login_succeeded(&self, peer: Option<IpAddr>, initiator: &str) {
        let Some(ip) = peer else { return };
        let mut f = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        f.by_name.remove(&(initiator.to_owned(), ip));
    }

    /// Admits a connection from `peer` on portal `portal`, or says why
    /// not ([`Admission::refused`] counts a connection then closed).
    pub fn admit(self: &Arc<Self>, portal: usize, peer: Option<IpAddr>) -> Result<Ticket, Refusal> {
        let Some(open) = self.open.get(portal) else {
            return Err(Refusal::PortalFull);
        };
        // The address's own cap first: a connection that would be refused
        // for it must not make anyone else's room.
        if peer.is_some_and(|ip| self.logins_in_progress(ip) >= self.max_logins_per_address) {
            return Err(Refusal::AddressBusy);
        }
        let took = open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < self.max_per_portal).then_some(n + 1)
        });
        if took.is_err() {
            return Err(Refusal::PortalFull);
        }
        self.enter(portal, peer)
    }

    /// A ticket for a connection counted on `portal` already, checked
    /// against its address's logins in progress.
    fn enter(self: &Arc<Self>, portal: usize, peer: Option<IpAddr>) -> Result<Ticket, Refusal> {
        let mut ticket = Ticket {
            adm: Arc::clone(self),
            portal,
            logging_in: None,
        };
        if let Some(ip) = peer {
            let mut map = self
                .logging_in
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let n = map.entry(ip).or_insert(0);
            if *n >= self.max_logins_per_address {
                drop(map);
                // Dropping the ticket gives the portal slot back.
                return Err(Refusal::AddressBusy);
            }
            *n += 1;
            ticket.logging_in = Some(ip);
        }
        Ok(ticket)
    }

    /// [`Admission::admit`] past the portal's cap, for a connection that
    /// takes the place of one being closed (the address cap still holds).
    pub fn admit_over_cap(
        self: &Arc<Self>,
        portal: usize,
        peer: Option<IpAddr>,
    ) -> Result<Ticket, Refusal> {
        let Some(open) = self.open.get(portal) else {
            return Err(Refusal::PortalFull);
        };
        open.fetch_add(1, Ordering::AcqRel);
        self.enter(portal, peer)
    }

    /// Logins in progress from `ip`.
    pub fn logins_in_progress(&self, ip: IpAddr) -> usize {
        self.logging_in
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&ip)
            .copied()
            .unwrap_or(0)
    }

    /// Counts a connection closed for `why`.
    pub fn refused(&self, why: Refusal) {
        match why {
            Refusal::PortalFull => &self.refused_cap,
            Refusal::AddressBusy => &self.refused_address,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed accept.
    pub fn accept_failed(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn stats(&self) -> AdmissionStats {
        AdmissionStats {
            open: self.open.iter().map(|o| o.load(Ordering::Relaxed)).sum(),
            max_per_portal: self.max_per_portal,
            refused_cap: self.refused_cap.load(Ordering::Relaxed),
            refused_address: self.refused_address.load(Ordering::Relaxed),
            accept_errors: self.accept_errors.load(Ordering::Relaxed),
            login_refusals: std::array::from_fn(|i| self.refusals[i].load(Ordering::Relaxed)),
            login_delays: self.delayed.load(Ordering::Relaxed),
            protocol_drops: self.dropped.load(Ordering::Relaxed),
        }
    }

    fn done_logging_in(&self, ip: IpAddr) {
        let mut map = self
            .logging_in
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&ip);
            }
        }
    }
}

/// An admitted connection's place: given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    adm: Arc<Admission>,
    portal: usize,
    /// Its address, while it counts as logging in.
    logging_in: Option<IpAddr>,
}

impl Ticket {
    /// The connection has logged in: it no longer counts against its
    /// address's logins in progress.
    pub fn logged_in(&mut self) {
        if let Some(ip) = self.logging_in.take() {
            self.adm.done_logging_in(ip);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.logged_in();
        if let Some(open) = self.adm.open.get(self.portal) {
            open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_dropped_for_protocol_errors_wait_on_reconnect() {
        let adm = Admission::new(1, 10, 10);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(adm.connection_hold(ip(1), at(0)), Duration::ZERO);
        for i in 0..3 {
            adm.protocol_abuse(ip(1), at(i));
        }
        assert_eq!(
            adm.connection_hold(ip(1), at(3)),
            Duration::ZERO,
            "three are free"
        );
        adm.protocol_abuse(ip(1), at(4));
        assert_eq!(
            adm.connection_hold(ip(1), at(5)),
            Duration::from_millis(250)
        );
        for i in 0..10 {
            adm.protocol_abuse(ip(1), at(6 + i));
        }
        assert_eq!(adm.connection_hold(ip(1), at(20)), MAX_DELAY);
        // Not another address; not after a quiet minute; a login does not
        // clear it.
        assert_eq!(adm.connection_hold(ip(2), at(20)), Duration::ZERO);
        adm.login_succeeded(ip(1), "x");
        assert_eq!(adm.connection_hold(ip(1), at(21)), MAX_DELAY);
        assert_eq!(adm.connection_hold(ip(1), at(16 + 60_000)), Duration::ZERO);
        assert_eq!(adm.stats().protocol_drops, 14);
    }

    #[test]
    fn refusals_slow_down_per_address_and_name() {
        let adm = Admission::new(1, 10, 10);
        let t0 = Instant::now();
        let (a, b) = (ip(1), ip(2));
        let refuse = |peer, name, at: u64| {
            adm.login_refused(
                RefusalKind::Authentication,
                peer,
                Some(name),
                t0 + Duration::from_millis(at),
            )
        };
        // Three free, then 0.25 s doubling.
        let delays: Vec<Duration> = (0..9).map(|i| refuse(a, "guess", i)).collect();
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 0, 0, 250, 500, 1000, 2000, 4000, 8000]);
        assert_eq!(refuse(a, "guess", 10), MAX_DELAY, "capped");
        // Another address is not slowed by them, even with the same name.
        assert_eq!(refuse(b, "guess", 11), Duration::ZERO);
        // New names from the guessing address are: the address counts.
        assert_eq!(refuse(a, "other-name", 12), MAX_DELAY);
        // A quiet minute forgets.
        assert_eq!(refuse(a, "guess", 12 + 60_000), Duration::ZERO);
        // A CHAP success clears the name's count, not the address's.
        let c = ip(3);
        for i in 0..6 {
            refuse(c, "host", 70_000 + i);
        }
        adm.login_succeeded(c, "host");
        assert_eq!(
            refuse(c, "host", 70_010),
            Duration::from_secs(2),
            "the address's 7th"
        );
        let stats = adm.stats();
        assert_eq!(
            stats.login_refusals[RefusalKind::Authentication as usize],
            20
        );
        assert!(stats.login_delays >= 8);
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn ipv6_counts_by_its_64_prefix() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(source_key(mapped), IpAddr::from([10, 0, 0, 7]));
        assert_eq!(
            source_key(IpAddr::from([10, 0, 0, 7])),
            IpAddr::from([10, 0, 0, 7])
        );
    }

    #[test]
    fn a_portal_holds_its_cap_and_frees_places() {
        let adm = Arc::new(Admission::new(2, 3, 100));
        let held: Vec<Ticket> = (0..3).map(|i| adm.admit(0, ip(i)).unwrap()).collect();
        assert_eq!(adm.admit(0, ip(9)).unwrap_err(), Refusal::PortalFull);
        adm.refused(Refusal::PortalFull);
        let other = adm.admit(1, ip(9)).expect("another portal has its own cap");
        assert_eq!(adm.stats().open, 4);
        drop(held);
        adm.admit(0, ip(9)).expect("a place freed");
        drop(other);
        assert_eq!(adm.stats().open, 0);
        assert_eq!(adm.stats().refused_cap, 1);
    }

    #[test]
    fn one_address_cannot_hold_every_login() {
        let adm = Arc::new(Admission::new(1, 100, 2));
        let mut a1 = adm.admit(0, ip(1)).unwrap();
        let _a2 = adm.admit(0, ip(1)).unwrap();
        assert_eq!(adm.admit(0, ip(1)).unwrap_err(), Refusal::AddressBusy);
        let _b = adm.admit(0, ip(2)).expect("another address gets in");
        // The refused one gave its portal place back.
        assert_eq!(adm.stats().open, 3);
        a1.logged_in();
        let _a3 = adm
            .admit(0, ip(1))
            .expect("a logged-in session no longer counts");
        assert_eq!(adm.admit(0, ip(1)).unwrap_err(), Refusal::AddressBusy);
        drop(a1);
        assert_eq!(adm.admit(0, ip(1)).unwrap_err(), Refusal::AddressBusy);
        // Past the cap, for one being closed: the address cap still holds.
        let _over = adm.admit_over_cap(0, ip(3)).unwrap();
        assert_eq!(
            adm.admit_over_cap(0, ip(1)).unwrap_err(),
            Refusal::AddressBusy
        );
        assert_eq!(adm.stats().open, 4);
    }
}
