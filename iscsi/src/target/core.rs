//! One core's event loop: its ring carries accepts, socket receives and
//! sends, and the disk I/O of the connections that live on this core.
//!
//! ```text
//! loop: submit_and_wait ─> completions ─┬ accept ─> new Connection
//!                                       ├ recv   ─> Connection::receive ─> PDUs
//!                                       ├ send   ─> recycle, send more
//!                                       ├ disk   ─> Connection::disk_done
//!                                       └ wake   ─> stop / killed sessions
//!       drive(conn): disk requests ─> ring, outbox ─> ring send, recv again
//! ```

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis_datapath::ring::{Payload, RecvBuf};
use trellis_datapath::{IoKind, IoStats, Ring, RingError, StoreSlot, Waker, WriteFlags};

use super::admission::source_key;
use super::registry::{CoreDevice, Snapshot};
use super::{Refusal, RefusalKind, Registry, Ticket};
use crate::damp::Damper;
use crate::login::{ChapPolicy, LoginContext, LoginStatus, SessionRequest};
use crate::scsi::{Completion, Done, LunDevice, LunShared, Sense};
use crate::session::{
    CloseReason, ConnConfig, Connection, DiskOp, DiskRequest, Host, LoginRefusal, LunTable,
    PROTOCOL_ERROR_WINDOW,
};

const KIND_ACCEPT: u64 = 1;
const KIND_RECV: u64 = 2;
const KIND_SEND: u64 = 3;
const KIND_DISK: u64 = 4;
const KIND_WAKE: u64 = 5;

fn tag(kind: u64, conn: usize, low: u32) -> u64 {
    (kind << 56) | ((conn as u64 & 0xff_ffff) << 32) | u64::from(low)
}

fn untag(t: u64) -> (u64, usize, u32) {
    (t >> 56, ((t >> 32) & 0xff_ffff) as usize, t as u32)
}

/// How often connections get `tick`.
const TICK: Duration = Duration::from_millis(500);
/// How long shutdown waits for in-flight commands.
const DRAIN: Duration = Duration::from_secs(10);
/// How long shutdown gives initiators to log out after the Async Message
/// asking them to (they may move their I/O to another path meanwhile).
const LOGOUT_GRACE: Duration = Duration::from_secs(3);
/// How long a drained member waits for a session it asked to log out
/// before closing it (once it has no command in flight).
pub const DRAIN_LOGOUT_WAIT: Duration = Duration::from_secs(10);
/// The first pause of a portal's accepts after the process ran out of
/// descriptors (or memory); it doubles while accepts keep failing.
const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(50);
/// The longest pause of a portal's accepts.
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);
/// At most one log line per this interval for failed or refused accepts.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(5);
/// Refused logins get a log line each, up to this many per interval per
/// core; past them, a line with their count.
const LOGIN_LOG_BURST: u32 = 10;
const LOGIN_LOG_EVERY: Duration = Duration::from_secs(10);
/// A connection still logging in after this long may be closed to make
/// room when its portal is full or descriptors run out (a real login takes
/// milliseconds; idle connections of a flood are older).
const STALE_LOGIN: Duration = Duration::from_secs(1);

struct Conn {
    conn: Connection,
    /// Its place on the portal, given back when the connection goes.
    ticket: Ticket,
    /// When it was accepted.
    accepted: Instant,
    /// The initiator's address.
    peer: Option<SocketAddr>,
    /// A refused login's answer is held back until then (a growing delay
    /// for repeated refusals).
    hold_until: Option<Instant>,
    /// Whether its login was counted as a success.
    login_counted: bool,
    /// When a drain asked it to log out.
    logout_asked: Option<Instant>,
    sock: Rc<TcpStream>,
    fd: Rc<dyn AsRawFd>,
    local: Option<SocketAddr>,
    rbuf: Option<Vec<u8>>,
    filled: usize,
    recv_busy: bool,
    send_busy: bool,
    disk_busy: usize,
    kill: Arc<AtomicBool>,
    shut: bool,
    ended: bool,
}

/// The per-core view the session layer calls back into.
struct CoreHost<'a> {
    reg: &'a Registry,
    core: usize,
    slots: &'a [Option<StoreSlot>],
    devs: &'a [Option<Rc<LunDevice>>],
    /// The configuration this core serves.
    snap: &'a Snapshot,
    /// Moves on with this core's bindings.
    generation: u64,
    kill: &'a Arc<AtomicBool>,
    local: Option<SocketAddr>,
}

impl LoginContext for CoreHost<'_> {
    fn target_exists(&self, target: &str) -> bool {
        self.reg.target_exists(target)
    }
    fn initiator_allowed(&self, target: Option<&str>, initiator: &str) -> bool {
        self.reg.allowed(target, initiator)
    }
    fn chap(&self, target: Option<&str>, initiator: &str) -> Option<ChapPolicy> {
        self.reg.chap(target, initiator)
    }
    fn target_alias(&self, target: &str) -> Option<String> {
        self.reg.target_alias(target)
    }
    fn allocate_session(&mut self, req: &SessionRequest) -> Result<u16, LoginStatus> {
        self.reg.allocate_session(req, self.core, self.kill)
    }
}

impl Host for CoreHost<'_> {
    fn login(&mut self) -> &mut dyn LoginContext {
        self
    }
    fn luns(&mut self, target: &str, initiator: &str) -> Option<Rc<LunTable>> {
        self.reg
            .lun_table(self.snap, target, initiator, self.slots, self.devs)
            .map(Rc::new)
    }
    fn send_targets(&self, initiator: &str, only: Option<&str>) -> Vec<(String, Vec<String>)> {
        self.reg.send_targets(initiator, only, self.local)
    }
    fn session_ended(&mut self, tsih: u16) {
        self.reg.session_ended(tsih, self.kill);
    }
    fn config_generation(&self) -> u64 {
        // The core's, not the registry's: a session rebuilds its LUN table
        // only once this core has bound the devices the table names.
        self.generation
    }
}

struct Core<'a> {
    id: usize,
    reg: &'a Registry,
    ring: Ring,
    cfg: Rc<ConnConfig>,
    /// Ring slot of each device, by device id.
    slots: Vec<Option<StoreSlot>>,
    /// SCSI description of each device, by device id.
    devs: Vec<Option<Rc<LunDevice>>>,
    /// I/O counters and the logical unit (its write fence) by ring slot.
    slot_stats: Vec<Option<SlotUnit>>,
    /// Writes waiting to be checked against their fence and submitted, by
    /// connection index (counted in the connection's `disk_busy`).
    staged: Vec<(usize, DiskRequest)>,
    /// Slots of removed devices, released once no connection names them.
    retired: Vec<StoreSlot>,
    /// Devices whose store could not be registered (retried every tick).
    failed: BTreeSet<usize>,
    /// The configuration this core serves.
    snap: Snapshot,
    /// Moves on whenever this core's bindings change: sessions rebuild
    /// their LUN tables then.
    bound: u64,
    conns: Vec<Option<Conn>>,
    listeners: Vec<Rc<dyn AsRawFd>>,
    accepting: Vec<bool>,
    /// Per portal: accepts paused until then (after running out of
    /// descriptors), and the pause that follows the next failure.
    accept_paused: Vec<Option<Instant>>,
    accept_pause: Vec<Duration>,
    /// Log lines of failed and of refused accepts.
    accept_errors_log: Damper,
    /// Of refusals at the portal cap, and at the address cap.
    refused_log: [Damper; 2],
    /// Log lines of refused logins: each of the first few per interval,
    /// then a count.
    login_log: Damper,
    /// Log lines of connections dropped for protocol errors.
    drop_log: Damper,
    stopping: Option<Instant>,
    seed: u64,
    /// Answers of the cluster to [`DiskOp::Shared`] requests, posted from
    /// other threads: (connection index, task, completion).
    decided: Arc<Decided>,
    waker: Arc<Waker>,
}

/// A core's mailbox for what other threads decided for its connections.
#[derive(Debug, Default)]
struct Decided(std::sync::Mutex<Vec<(usize, u32, Completion)>>);

impl Decided {
    fn post(&self, idx: usize, task: u32, c: Completion) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((idx, task, c));
    }

    fn take(&self) -> Vec<(usize, u32, Completion)> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// Runs core `id` until the stop flag is set and its connections are gone.
pub(super) fn run(
    id: usize,
    reg: &Registry,
    listeners: &[Arc<TcpListener>],
    stop: &AtomicBool,
    waker: &Arc<Waker>,
    ready: Sender<Result<(), (usize, RingError)>>,
) {
    let mut core = match Core::new(id, reg, listeners, Arc::clone(waker)) {
        Ok(c) => {
            let _ = ready.send(Ok(()));
            c
        }
        Err(e) => {
            let _ = ready.send(Err((id, e)));
            return;
        }
    };
    let wake_fd: Rc<dyn AsRawFd> = Rc::new(Arc::clone(waker));
    if let Err(e) = core.ring.wait_event(&wake_fd, tag(KIND_WAKE, 0, 0)) {
        tracing::error!(core = id, error = %e, "cannot arm the wake-up eventfd");
    }
    let mut last_tick = Instant::now();
    loop {
        for i in 0..core.listeners.len() {
            core.arm_accept(i);
        }
        // Last before entering the kernel: the write fence is checked as
        // close to the submission as the process can.
        core.flush_staged();
        if let Err(e) = core.ring.submit_and_wait(1, Some(TICK)) {
            tracing::error!(core = id, error = %e, "ring wait failed");
            std::thread::sleep(Duration::from_millis(10));
        }
        // A reconfiguration: new devices bound to this ring, fresh
        // descriptions for the LUN tables sessions rebuild.
        core.refresh_devs();
        // Resets and CLEAR TASK SET from sessions on other cores abort
        // this core's tasks before their completions are answered.
        for c in core.conns.iter_mut().flatten() {
            c.conn.poll_shared();
        }
        while let Some(c) = core.ring.next_completion() {
            let (kind, idx, low) = untag(c.tag);
            match kind {
                KIND_ACCEPT => core.accepted(idx, c.result, c.payload),
                KIND_RECV => core.received(idx, c.result, c.payload),
                KIND_SEND => core.sent(idx, c.result, c.payload),
                KIND_DISK => core.disk_done(idx, low, c.result, c.payload),
                KIND_WAKE => {
                    if let Err(e) = core.ring.wait_event(&wake_fd, tag(KIND_WAKE, 0, 0)) {
                        tracing::error!(core = id, error = %e, "cannot re-arm the wake-up eventfd");
                    }
                }
                _ => {}
            }
        }
        core.shared_decided();
        let now = Instant::now();
        if stop.load(Ordering::SeqCst) && core.stopping.is_none() {
            core.begin_stop(now);
        }
        core.check_kills();
        if now.duration_since(last_tick) >= TICK {
            last_tick = now;
            core.tick(now);
        }
        for i in 0..core.conns.len() {
            core.drive(i);
        }
        if core.stopping.is_some() && core.conns.iter().all(Option::is_none) {
            break;
        }
    }
    tracing::debug!(core = id, "core stopped");
}

impl<'a> Core<'a> {
    fn new(
        id: usize,
        reg: &'a Registry,
        listeners: &[Arc<TcpListener>],
        waker: Arc<Waker>,
    ) -> Result<Self, RingError> {
        let cfg = reg.config();
        let ring = Ring::new(&cfg.ring)?;
        let listeners: Vec<Rc<dyn AsRawFd>> = listeners
            .iter()
            .map(|l| Rc::new(Arc::clone(l)) as Rc<dyn AsRawFd>)
            .collect();
        let accepting = vec![false; listeners.len()];
        let mut core = Self {
            accept_paused: vec![None; listeners.len()],
            accept_pause: vec![ACCEPT_PAUSE_MIN; listeners.len()],
            accept_errors_log: Damper::new(ACCEPT_LOG_EVERY),
            refused_log: [Damper::new(ACCEPT_LOG_EVERY), Damper::new(ACCEPT_LOG_EVERY)],
            login_log: Damper::with_burst(LOGIN_LOG_EVERY, LOGIN_LOG_BURST),
            drop_log: Damper::with_burst(LOGIN_LOG_EVERY, LOGIN_LOG_BURST),
            id,
            reg,
            ring,
            cfg: Rc::new(cfg.conn.clone()),
            slots: Vec::new(),
            devs: Vec::new(),
            slot_stats: Vec::new(),
            staged: Vec::new(),
            retired: Vec::new(),
            failed: BTreeSet::new(),
            snap: Snapshot::default(),
            bound: 0,
            conns: Vec::new(),
            listeners,
            accepting,
            stopping: None,
            seed: (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ now_nanos(),
            decided: Arc::default(),
            waker,
        };
        core.bind(reg.snapshot());
        Ok(core)
    }

    /// Binds the registry's configuration to this ring when it moved on:
    /// stores of new devices are registered, slots of removed ones retired.
    fn refresh_devs(&mut self) {
        if self.reg.generation() != self.snap.generation {
            let snap = self.reg.snapshot();
            self.bind(snap);
        }
        self.release_retired();
    }

    /// Makes `snap` the configuration this core serves.
    fn bind(&mut self, snap: Snapshot) {
        let len = snap.devices.len().max(self.slots.len());
        self.slots.resize(len, None);
        self.devs.resize(len, None);
        for id in 0..len {
            match (
                self.slots[id],
                snap.devices.get(id).and_then(Option::as_ref),
            ) {
                (None, Some(d)) => self.register(id, d),
                (Some(_), Some(d)) => self.devs[id] = Some(Rc::new(d.lun.clone())),
                (Some(slot), None) => {
                    self.slots[id] = None;
                    self.devs[id] = None;
                    self.retired.push(slot);
                }
                (None, None) => {
                    self.failed.remove(&id);
                }
            }
        }
        self.snap = snap;
        self.bound += 1;
    }

    /// Registers device `id`'s store on this ring; a failure leaves the
    /// device out of this core's LUN tables until [`Core::retry_failed`]
    /// manages (logged once).
    fn register(&mut self, id: usize, d: &CoreDevice) {
        match self.ring.register_store(Arc::clone(&d.store)) {
            Ok(slot) => {
                let unit = SlotUnit {
                    stats: Arc::clone(&d.stats),
                    unit: Arc::clone(&d.shared),
                };
                set_slot(&mut self.slot_stats, slot, Some(unit));
                self.slots[id] = Some(slot);
                self.devs[id] = Some(Rc::new(d.lun.clone()));
                if self.failed.remove(&id) {
                    tracing::info!(core = self.id, device = %d.lun.name, "device store registered on this core's ring");
                }
            }
            Err(e) => {
                if self.failed.insert(id) {
                    tracing::error!(core = self.id, device = %d.lun.name, error = %e, "cannot register the device's store on this core's ring; its LUNs are left out here, retrying");
                }
            }
        }
    }

    /// Tries again to register the stores that failed; sessions rebuild
    /// their LUN tables if one now works.
    fn retry_failed(&mut self) {
        if self.failed.is_empty() {
            return;
        }
        let ids: Vec<usize> = self.failed.iter().copied().collect();
        let mut any = false;
        for id in ids {
            if let Some(d) = self.snap.devices.get(id).and_then(Option::clone) {
                self.register(id, &d);
                any |= self.slots[id].is_some();
            } else {
                self.failed.remove(&id);
            }
        }
        if any {
            self.bound += 1;
        }
    }

    /// Unregisters the retired slots no connection of this core names any
    /// more (in-flight operations on them have completed by then).
    fn release_retired(&mut self) {
        if self.retired.is_empty() {
            return;
        }
        let conns = &self.conns;
        let (free, busy): (Vec<StoreSlot>, Vec<StoreSlot>) = self
            .retired
            .iter()
            .partition(|&&slot| !conns.iter().flatten().any(|c| c.conn.uses_store(slot)));
        self.retired = busy;
        for slot in free {
            set_slot(&mut self.slot_stats, slot, None);
            if let Err(e) = self.ring.unregister_store(slot) {
                tracing::warn!(core = self.id, slot, error = %e, "cannot unregister a removed device's store");
            }
        }
    }

    fn arm_accept(&mut self, i: usize) {
        if self.accepting[i] || self.stopping.is_some() {
            return;
        }
        if let Some(until) = self.accept_paused[i] {
            if Instant::now() < until {
                return;
            }
            self.accept_paused[i] = None;
        }
        let l = Rc::clone(&self.listeners[i]);
        match self.ring.accept(&l, tag(KIND_ACCEPT, i, 0)) {
            Ok(()) => self.accepting[i] = true,
            Err(e) => tracing::warn!(core = self.id, error = %e, "cannot post accept"),
        }
    }

    fn accepted(&mut self, portal: usize, result: i32, payload: Payload) {
        if let Some(a) = self.accepting.get_mut(portal) {
            *a = false;
        }
        let Payload::Accepted(fd) = payload else {
            if result != -libc::ECANCELED {
                self.accept_failed(portal, -result);
            }
            return;
        };
        if let Some(p) = self.accept_pause.get_mut(portal) {
            *p = ACCEPT_PAUSE_MIN;
        }
        if self.stopping.is_some() {
            return;
        }
        let sock = TcpStream::from(fd);
        let local = sock.local_addr().ok();
        let peer = sock.peer_addr().ok();
        let now = Instant::now();
        let admitted = match self.reg.admission().admit(portal, source(peer)) {
            // Full: a stale login on this core makes room.
            Err(Refusal::PortalFull) if self.evict_stale_login(now, source(peer)) => {
                self.reg.admission().admit_over_cap(portal, source(peer))
            }
            other => other,
        };
        let ticket = match admitted {
            Ok(t) => t,
            Err(why) => {
                self.reg.admission().refused(why);
                // Closed at once (the socket drops here): a flood costs an
                // accept and a close per connection, and a line per
                // interval.
                if let Some(n) = self.refused_log[why as usize].hit(now) {
                    let what = match why {
                        Refusal::PortalFull => format!(
                            "the portal holds its cap of {} connections (iscsi max_connections)",
                            self.reg.config().max_connections
                        ),
                        Refusal::AddressBusy => format!(
                            "{} logins from that address are in progress already (iscsi max_logins_per_address)",
                            self.reg.config().max_logins_per_address
                        ),
                    };
                    tracing::warn!(
                        core = self.id,
                        ?peer,
                        refused = n,
                        "connections refused since the last report: {what}"
                    );
                }
                return;
            }
        };
        let _ = sock.set_nodelay(true);
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let conn = Connection::new(
            Rc::clone(&self.cfg),
            self.seed ^ now_nanos(),
            Instant::now(),
        );
        let cap = conn.max_pdu_len();
        let sock = Rc::new(sock);
        // An address whose connections keep being dropped for protocol
        // errors waits before its first answer.
        let hold = self.reg.admission().connection_hold(source(peer), now);
        let entry = Conn {
            conn,
            ticket,
            accepted: now,
            peer,
            hold_until: (!hold.is_zero()).then_some(now + hold),
            login_counted: false,
            logout_asked: None,
            fd: Rc::clone(&sock) as Rc<dyn AsRawFd>,
            sock,
            local,
            rbuf: Some(vec![0; cap]),
            filled: 0,
            recv_busy: false,
            send_busy: false,
            disk_busy: 0,
            kill: Arc::new(AtomicBool::new(false)),
            shut: false,
            ended: false,
        };
        let idx = match self.conns.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        tracing::debug!(core = self.id, conn = idx, ?peer, "connection accepted");
        self.conns[idx] = Some(entry);
    }

    /// An accept on `portal` failed with `errno`. Out of descriptors or
    /// memory, accepts on that portal pause (50 ms, doubling to 1 s while
    /// it goes on) instead of spinning on the error; anything else (an
    /// aborted connection) pauses 10 ms. Logged once per interval with
    /// a count.
    fn accept_failed(&mut self, portal: usize, errno: i32) {
        self.reg.admission().accept_failed();
        let out_of_resources = matches!(
            errno,
            libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
        );
        let now = Instant::now();
        if out_of_resources {
            // Free a descriptor for the next accept if a stale login holds one.
            self.evict_stale_login(now, None);
        }
        let pause = match self.accept_pause.get_mut(portal) {
            Some(p) if out_of_resources => {
                let this = *p;
                *p = (*p * 2).min(ACCEPT_PAUSE_MAX);
                this
            }
            _ => Duration::from_millis(10),
        };
        if let Some(until) = self.accept_paused.get_mut(portal) {
            *until = Some(now + pause);
        }
        if let Some(n) = self.accept_errors_log.hit(now) {
            let e = std::io::Error::from_raw_os_error(errno);
            tracing::warn!(
                core = self.id,
                portal,
                errno,
                failures = n,
                ?pause,
                "accepts failing ({e}); pausing this portal's accepts"
            );
        }
    }

    /// Counts and logs a refused login on `c`, and holds its answer back
    /// for the delay its address and name have earned.
    fn login_refused(&mut self, c: &mut Conn, r: &LoginRefusal) {
        let now = Instant::now();
        let kind = RefusalKind::of(&r.error);
        let ip = source(c.peer);
        let delay = self
            .reg
            .admission()
            .login_refused(kind, ip, r.initiator.as_deref(), now);
        if !delay.is_zero() {
            c.hold_until = Some(now + delay);
        }
        if let Some(n) = self.login_log.hit(now) {
            tracing::warn!(
                core = self.id,
                initiator = r.initiator.as_deref().unwrap_or("-"),
                peer = ?c.peer,
                target = r.target.as_deref().unwrap_or("-"),
                reason = %r.error,
                kind = kind.label(),
                ?delay,
                held_back_before = n - 1,
                "login refused"
            );
        }
    }

    /// Closes one of this core's connections still logging in, to make
    /// room for one from `newcomer`; whether there was one. Fair shares
    /// first: a login of the address with the most logins in progress,
    /// when that is two or more above the newcomer's (a flood from many
    /// addresses cannot keep a new address out); else the oldest login,
    /// if older than [`STALE_LOGIN`].
    fn evict_stale_login(&mut self, now: Instant, newcomer: Option<IpAddr>) -> bool {
        let adm = Arc::clone(self.reg.admission());
        let mine = newcomer.map_or(0, |ip| adm.logins_in_progress(ip));
        let pending: Vec<(usize, usize, Instant)> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let c = c.as_ref()?;
                (!c.conn.is_full_feature() && c.conn.closing().is_none()).then(|| {
                    let held = c
                        .peer
                        .map_or(0, |p| adm.logins_in_progress(source_key(p.ip())));
                    (i, held, c.accepted)
                })
            })
            .collect();
        let fair = pending
            .iter()
            .filter(|(_, n, _)| *n >= mine + 2)
            .max_by_key(|(_, n, at)| (*n, std::cmp::Reverse(*at)));
        let stale = pending
            .iter()
            .filter(|(_, _, at)| now.duration_since(*at) >= STALE_LOGIN)
            .min_by_key(|(_, _, at)| *at);
        match fair.or(stale).and_then(|&(i, _, _)| self.conns[i].as_mut()) {
            Some(c) => {
                c.conn.close(CloseReason::Protocol(
                    "closed to make room: still logging in while the portal was full".into(),
                ));
                // Its descriptor is what is wanted: close it now.
                c.hold_until = None;
                true
            }
            None => false,
        }
    }

    fn host<'b>(&'b self, kill: &'b Arc<AtomicBool>, local: Option<SocketAddr>) -> CoreHost<'b> {
        CoreHost {
            reg: self.reg,
            core: self.id,
            slots: &self.slots,
            devs: &self.devs,
            snap: &self.snap,
            generation: self.bound,
            kill,
            local,
        }
    }

    fn received(&mut self, idx: usize, result: i32, payload: Payload) {
        let Some(mut c) = self.conns.get_mut(idx).and_then(Option::take) else {
            return;
        };
        c.recv_busy = false;
        if let Payload::Recv(RecvBuf::Heap(v)) = payload {
            c.rbuf = Some(v);
        }
        if result <= 0 {
            if result < 0 && result != -libc::ECANCELED && result != -libc::ECONNRESET {
                tracing::debug!(
                    core = self.id,
                    conn = idx,
                    errno = -result,
                    "receive failed"
                );
            }
            c.conn.close(CloseReason::Shutdown);
        } else {
            c.filled += result as usize;
            self.consume(&mut c);
        }
        self.conns[idx] = Some(c);
    }

    /// Feeds buffered bytes to the connection.
    fn consume(&mut self, c: &mut Conn) {
        let Some(mut buf) = c.rbuf.take() else { return };
        let kill = Arc::clone(&c.kill);
        let mut host = self.host(&kill, c.local);
        let used = c.conn.receive(
            &buf[..c.filled],
            &mut host,
            self.ring.pool(),
            Instant::now(),
        );
        buf.copy_within(used..c.filled, 0);
        c.filled -= used;
        if let Some(refusal) = c.conn.take_login_refusal() {
            self.login_refused(c, &refusal);
        }
        let want = c.conn.max_pdu_len();
        if buf.len() < want {
            buf.resize(want, 0);
        }
        c.rbuf = Some(buf);
    }

    fn sent(&mut self, idx: usize, result: i32, payload: Payload) {
        let Some(c) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        c.send_busy = false;
        if let Payload::Send(msg) = payload {
            c.conn.send_done(msg);
        }
        if result < 0 {
            tracing::debug!(core = self.id, conn = idx, errno = -result, "send failed");
            c.conn.close(CloseReason::Shutdown);
        }
    }

    fn disk_done(&mut self, idx: usize, task: u32, result: i32, payload: Payload) {
        let Some(mut c) = self.conns.get_mut(idx).and_then(Option::take) else {
            return;
        };
        c.disk_busy -= 1;
        if result < 0 && result != -libc::ECANCELED {
            let stats = c
                .conn
                .task_store(task)
                .and_then(|slot| self.slot_stats.get(slot as usize)?.as_ref())
                .map(|s| &s.stats);
            if let Some(stats) = stats {
                stats.record_error(self.id);
            }
        }
        let buf = match payload {
            Payload::Buf(b) => Some(b),
            _ => None,
        };
        c.conn.disk_done(task, result, buf, self.ring.pool());
        if c.conn.blocked() {
            self.consume(&mut c);
        }
        self.conns[idx] = Some(c);
    }

    /// Answers the tasks whose shared-state change the cluster decided.
    fn shared_decided(&mut self) {
        for (idx, task, completion) in self.decided.take() {
            let Some(mut c) = self.conns.get_mut(idx).and_then(Option::take) else {
                continue;
            };
            c.disk_busy -= 1;
            c.conn.shared_done(task, completion, self.ring.pool());
            if c.conn.blocked() {
                self.consume(&mut c);
            }
            self.conns[idx] = Some(c);
        }
    }

    fn tick(&mut self, now: Instant) {
        self.retry_failed();
        if let Some(n) = self.drop_log.flush(now) {
            tracing::warn!(core = self.id, dropped = n, "more connections dropped for protocol errors than logged, in the last {LOGIN_LOG_EVERY:?}");
        }
        if let Some(n) = self.login_log.flush(now) {
            tracing::warn!(
                core = self.id,
                refused = n,
                "more logins refused than logged, in the last {LOGIN_LOG_EVERY:?}"
            );
        }
        if let Some(n) = self.accept_errors_log.flush(now) {
            tracing::warn!(
                core = self.id,
                failures = n,
                "accepts failed since the last report"
            );
        }
        for log in &mut self.refused_log {
            if let Some(n) = log.flush(now) {
                tracing::warn!(
                    core = self.id,
                    refused = n,
                    "connections refused at the caps since the last report"
                );
            }
        }
        for c in self.conns.iter_mut().flatten() {
            c.conn.tick(now);
        }
        self.drain(now);
        if let Some(since) = self.stopping {
            let waited = now.duration_since(since);
            for c in self.conns.iter_mut().flatten() {
                if (c.conn.task_count() == 0 && waited > LOGOUT_GRACE) || waited > DRAIN {
                    c.conn.close(CloseReason::Shutdown);
                }
            }
        }
    }

    /// While this member is drained: asks each logged-in session once to
    /// log out, and closes it when it has not after [`DRAIN_LOGOUT_WAIT`]
    /// and has no command in flight.
    fn drain(&mut self, now: Instant) {
        let draining = self.reg.draining();
        for c in self.conns.iter_mut().flatten() {
            if !draining {
                c.logout_asked = None;
                continue;
            }
            if !c.conn.is_full_feature() || c.conn.closing().is_some() {
                continue;
            }
            match c.logout_asked {
                None => {
                    c.conn.request_logout(DRAIN_LOGOUT_WAIT.as_secs() as u16);
                    c.logout_asked = Some(now);
                }
                Some(at)
                    if now.duration_since(at) > DRAIN_LOGOUT_WAIT && c.conn.task_count() == 0 =>
                {
                    tracing::info!(
                        core = self.id,
                        "drained: closing a session that did not log out when asked"
                    );
                    c.conn.close(CloseReason::Shutdown);
                }
                Some(_) => {}
            }
        }
    }

    fn begin_stop(&mut self, now: Instant) {
        tracing::info!(
            core = self.id,
            "stopping: no new connections, asking sessions to log out"
        );
        self.stopping = Some(now);
        for l in self.listeners.clone() {
            let _ = self.ring.cancel_fd(&l);
        }
        // Sessions are asked to log out (Async Message, event 1) and keep
        // being served until they do, for a grace period; logins in progress
        // are cut.
        let grace = LOGOUT_GRACE.as_secs() as u16;
        for c in self.conns.iter_mut().flatten() {
            c.hold_until = None;
            if c.conn.is_full_feature() {
                c.conn.request_logout(grace);
            } else {
                c.conn.close(CloseReason::Shutdown);
            }
        }
    }

    fn check_kills(&mut self) {
        for c in self.conns.iter_mut().flatten() {
            if c.kill.load(Ordering::Relaxed) && c.conn.closing().is_none() {
                tracing::info!(
                    core = self.id,
                    "session reinstated elsewhere; closing this connection"
                );
                c.ended = true;
                c.conn.close(CloseReason::Shutdown);
                c.hold_until = None;
            }
        }
    }

    /// Hands one disk request of connection `idx` to the ring (counted in
    /// `disk_busy` already); a failed submission completes it with EIO.
    fn submit_disk(&mut self, c: &mut Conn, idx: usize, req: DiskRequest) {
        let t = tag(KIND_DISK, idx, req.task);
        if let Some(Some(s)) = self.slot_stats.get(req.slot as usize) {
            s.stats.record(self.id, io_kind(&req.op));
        }
        let r = match req.op {
            DiskOp::Read(buf) => self
                .ring
                .read(req.slot, buf, req.offset, t)
                .map_err(|(e, b)| (e, Some(b))),
            DiskOp::Write { buf, fua } => self
                .ring
                .write(req.slot, buf, req.offset, fua, t)
                .map_err(|(e, b)| (e, Some(b))),
            DiskOp::WriteAtomic { buf, fua } => self
                .ring
                .write_with(
                    req.slot,
                    buf,
                    req.offset,
                    WriteFlags { fua, atomic: true },
                    t,
                )
                .map_err(|(e, b)| (e, Some(b))),
            DiskOp::Flush => self.ring.flush(req.slot, t).map_err(|e| (e, None)),
            DiskOp::Prefetch { len } => self
                .ring
                .prefetch(req.slot, req.offset, len, t)
                .map_err(|e| (e, None)),
            DiskOp::Unmap { len } => self
                .ring
                .unmap(req.slot, req.offset, len, t)
                .map_err(|e| (e, None)),
            DiskOp::WriteZeroes { len } => self
                .ring
                .write_zeroes(req.slot, req.offset, len, t)
                .map_err(|e| (e, None)),
            DiskOp::Extent => Err((RingError::Busy, None)),
            DiskOp::Shared(op) => {
                let (decided, waker) = (Arc::clone(&self.decided), Arc::clone(&self.waker));
                let task = req.task;
                let done: Done = Box::new(move |completion| {
                    decided.post(idx, task, completion);
                    waker.wake();
                });
                match op.unit.cluster() {
                    Some(cluster) => cluster.change(op.nexus, op.change, done),
                    None => done(Completion::check(Sense::internal_target_failure())),
                }
                Ok(())
            }
        };
        if let Err((e, buf)) = r {
            tracing::error!(core = self.id, error = %e, "disk submission failed");
            c.disk_busy -= 1;
            c.conn
                .disk_done(req.task, -libc::EIO, buf, self.ring.pool());
        }
    }

    /// Pushes the staged writes to the ring, right before it enters the
    /// kernel: a write past its unit's write fence (this member's lease ran
    /// out, or it has not applied the epoch its lease was granted at) never
    /// reaches the disk and is answered NOT READY, ASYMMETRIC ACCESS STATE
    /// TRANSITION. The clock is read here, when the write is submitted, not
    /// only when the command arrived: a member stalled longer than its
    /// lease wakes with commands it must not execute.
    fn flush_staged(&mut self) {
        if self.staged.is_empty() {
            return;
        }
        let now = Instant::now();
        for (idx, req) in std::mem::take(&mut self.staged) {
            let Some(mut c) = self.conns.get_mut(idx).and_then(Option::take) else {
                continue;
            };
            let fenced = self
                .slot_stats
                .get(req.slot as usize)
                .and_then(Option::as_ref)
                .is_some_and(|s| !s.unit.ports().writable_at(now));
            if fenced {
                tracing::info!(
                    core = self.id,
                    task = req.task,
                    "write refused at the write fence (the lease ran out)"
                );
                let buf = match req.op {
                    DiskOp::Write { buf, .. } | DiskOp::WriteAtomic { buf, .. } => Some(buf),
                    _ => None,
                };
                c.disk_busy -= 1;
                c.conn
                    .disk_done(req.task, -libc::ESTALE, buf, self.ring.pool());
            } else {
                self.submit_disk(&mut c, idx, req);
            }
            self.conns[idx] = Some(c);
        }
    }

    /// Moves a connection's queued work into the ring.
    fn drive(&mut self, idx: usize) {
        let Some(mut c) = self.conns.get_mut(idx).and_then(Option::take) else {
            return;
        };
        // Disk requests, while the ring has room (completions make more).
        // Writes are staged: they are checked against the write fence and
        // pushed to the ring just before it enters the kernel
        // ([`Core::flush_staged`]).
        while self.ring.free_slots() > self.staged.len() + 1 {
            let Some(req) = c.conn.next_disk() else { break };
            if matches!(req.op, DiskOp::Extent) {
                // lseek(SEEK_DATA/SEEK_HOLE) has no io_uring opcode; it is
                // a metadata lookup, answered inline.
                let extent = match self.ring.store(req.slot) {
                    Ok(store) => store.extent_at(req.offset),
                    Err(e) => Err(std::io::Error::other(e)),
                };
                c.conn.extent_done(req.task, extent, self.ring.pool());
                continue;
            }
            c.disk_busy += 1;
            if modifies(&req.op) {
                self.staged.push((idx, req));
            } else {
                self.submit_disk(&mut c, idx, req);
            }
        }
        if !c.login_counted && c.conn.is_full_feature() {
            c.login_counted = true;
            c.ticket.logged_in();
            // Only a login that proved a CHAP secret forgets that name's
            // refusals (a Discovery or open login must not reset a
            // guesser's count); the address's count only ages out.
            if let Some(name) = c.conn.chap_authenticated() {
                self.reg.admission().login_succeeded(source(c.peer), name);
            }
        }
        // A refused login's answer waits out its delay.
        if c.hold_until.is_some_and(|t| Instant::now() < t) {
            self.conns[idx] = Some(c);
            return;
        }
        // Output.
        if !c.send_busy {
            if let Some(msg) = c.conn.take_send() {
                match self.ring.send(&c.fd, msg, tag(KIND_SEND, idx, 0)) {
                    Ok(()) => c.send_busy = true,
                    Err((e, msg)) => {
                        tracing::warn!(core = self.id, error = %e, "send submission failed");
                        c.conn.send_done(msg);
                        c.conn.close(CloseReason::Shutdown);
                    }
                }
            }
        }
        // Input.
        let closing = c.conn.should_close();
        if !closing && !c.recv_busy {
            if let Some(buf) = c.rbuf.take() {
                let (start, end) = (c.filled, buf.len());
                if start < end {
                    match self.ring.recv(
                        &c.fd,
                        RecvBuf::Heap(buf),
                        start,
                        end,
                        tag(KIND_RECV, idx, 0),
                    ) {
                        Ok(()) => c.recv_busy = true,
                        Err((e, RecvBuf::Heap(b))) => {
                            c.rbuf = Some(b);
                            if !matches!(e, RingError::Busy) {
                                c.conn.close(CloseReason::Protocol(e.to_string()));
                            }
                        }
                        Err((_, RecvBuf::Pool(_))) => {}
                    }
                } else {
                    c.rbuf = Some(buf);
                    if !c.conn.blocked() {
                        c.conn.close(CloseReason::Protocol(
                            "PDU larger than the receive buffer".into(),
                        ));
                    }
                }
            }
        }
        // Close: once the outbox is flushed, shut the socket; free the slot
        // when nothing of ours is in flight any more.
        if closing && !c.send_busy {
            if !c.shut {
                c.shut = true;
                let _ = c.sock.shutdown(std::net::Shutdown::Both);
            }
            if !c.recv_busy && c.disk_busy == 0 {
                if let Some(CloseReason::TooManyErrors(max)) = c.conn.closing() {
                    let now = Instant::now();
                    let ip = source(c.peer);
                    self.reg.admission().protocol_abuse(ip, now);
                    if let Some(n) = self.drop_log.hit(now) {
                        tracing::warn!(
                            core = self.id,
                            peer = ?c.peer,
                            initiator = c.conn.initiator_name().unwrap_or("-"),
                            held_back_before = n - 1,
                            "connection dropped: more than {max} protocol errors within {PROTOCOL_ERROR_WINDOW:?} (new connections from the address will wait if it goes on)"
                        );
                    }
                }
                if let Some(tsih) = c.conn.tsih() {
                    if !c.ended {
                        self.reg.session_ended(tsih, &c.kill);
                    }
                }
                tracing::debug!(core = self.id, conn = idx, reason = ?c.conn.closing(), "connection closed");
                return;
            }
        }
        self.conns[idx] = Some(c);
    }
}

/// What a disk operation counts as in the device's I/O counters.
fn io_kind(op: &DiskOp) -> IoKind {
    match op {
        DiskOp::Read(buf) => IoKind::Read(buf.len() as u64),
        DiskOp::Write { buf, .. } | DiskOp::WriteAtomic { buf, .. } => {
            IoKind::Write(buf.len() as u64)
        }
        DiskOp::WriteZeroes { len } => IoKind::Write(*len),
        DiskOp::Flush => IoKind::Flush,
        DiskOp::Unmap { .. } => IoKind::Unmap,
        DiskOp::Prefetch { .. } | DiskOp::Extent | DiskOp::Shared(_) => IoKind::Other,
    }
}

/// Sets the counters of ring slot `slot`.
/// What a core keeps of a device per ring slot.
#[derive(Debug, Clone)]
struct SlotUnit {
    stats: Arc<IoStats>,
    unit: Arc<LunShared>,
}

fn set_slot(table: &mut Vec<Option<SlotUnit>>, slot: StoreSlot, unit: Option<SlotUnit>) {
    let i = slot as usize;
    if table.len() <= i {
        table.resize(i + 1, None);
    }
    table[i] = unit;
}

/// Whether `op` changes the medium (and so must not reach the disk past the
/// member's write fence).
fn modifies(op: &DiskOp) -> bool {
    matches!(
        op,
        DiskOp::Write { .. }
            | DiskOp::WriteAtomic { .. }
            | DiskOp::Unmap { .. }
            | DiskOp::WriteZeroes { .. }
    )
}

/// The key a peer is counted under (see [`source_key`]).
fn source(peer: Option<SocketAddr>) -> Option<IpAddr> {
    peer.map(|p| source_key(p.ip()))
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
