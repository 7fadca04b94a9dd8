//! One iSCSI connection and its session, sans-IO (MaxConnections=1, so the
//! connection is the session).
//!
//! ```text
//! bytes ─> receive ─> split_pdu ─> login phase: LoginMachine
//!                                  full feature: CmdSN window ─> opcode dispatch
//!                                     SCSI Command / Data-Out ─> task.rs ─> DiskRequest
//! disk_done ─> Data-In / SCSI Response ─> Outbox ─> take_send ─> socket
//! tick(now) ─> NOP-In keepalive, dead-peer detection
//! ```
//!
//! The driver (`target::core`) moves bytes and completions in and out; this
//! module never touches a socket, the ring or a clock.

mod cmdsn;
mod copy;
mod exec;
mod media;
mod outbox;
mod reconfig;
mod sanitize;
mod task;
mod text;
mod tmf;

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis_datapath::{Buf, BufPool, StoreSlot};

pub use cmdsn::{sn_le, sn_lt, Admit, Window};
pub use outbox::Outbox;
pub use task::{residual, Task};

use crate::login::{
    LoginContext, LoginError, LoginMachine, LoginOutcome, SessionParams, TargetLimits,
};
use crate::pdu::{
    self, Digests, Header, LogoutResponse, NopIn, NopOut, PduError, RawPdu, Reject, BHS_LEN,
    RESERVED_TAG,
};
use crate::scsi::{self, LunDevice, LunShared, NexusState, PortContext};

/// One logical unit as a session sees it.
#[derive(Debug, Clone)]
pub struct LunEntry {
    /// LUN in wire format (as in PDUs and REPORT LUNS).
    pub lun: u64,
    /// What SCSI needs to know of the device.
    pub dev: Rc<LunDevice>,
    /// Where its store is registered on this core's ring.
    pub slot: StoreSlot,
    /// State of the logical unit shared with every session on every core
    /// (LOGICAL UNIT RESET count, reservation holder).
    pub shared: Arc<LunShared>,
    /// The unit's sanitize operation, shared like `shared`.
    pub sanitize: Arc<scsi::SanitizeState>,
}

/// The LUNs of one target visible to one initiator, on one core.
#[derive(Debug, Clone)]
pub struct LunTable {
    /// The target port identity.
    pub port: PortContext,
    /// Mapped LUNs.
    pub luns: Vec<LunEntry>,
    /// Their LUN numbers (not wire-encoded), for REPORT LUNS.
    pub ids: Vec<u64>,
}

impl LunTable {
    fn find(&self, lun: u64) -> Option<usize> {
        self.luns.iter().position(|l| l.lun == lun)
    }
}

/// What the connection needs from the rest of the target.
pub trait Host {
    /// Login-time lookups (targets, ACLs, CHAP, session table).
    fn login(&mut self) -> &mut dyn LoginContext;
    /// The LUN table of `target` as `initiator` may see it.
    fn luns(&mut self, target: &str, initiator: &str) -> Option<Rc<LunTable>>;
    /// Moves on whenever the configuration behind [`Host::luns`] changes
    /// (device grown, LUN map or ACL changed): sessions then rebuild their
    /// LUN tables.
    fn config_generation(&self) -> u64 {
        0
    }
    /// SendTargets: `(target name, ["addr:port,tpgt", ...])` for each target
    /// `initiator` may see (only `only` if given).
    fn send_targets(&self, initiator: &str, only: Option<&str>) -> Vec<(String, Vec<String>)>;
    /// The session with this TSIH has ended.
    fn session_ended(&mut self, tsih: u16);
}

/// Connection-level settings.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// What we offer at login.
    pub limits: TargetLimits,
    /// Idle time after which we ping the initiator with a NOP-In.
    pub nop_interval: Duration,
    /// How long the initiator has to answer a ping before we drop it.
    pub nop_timeout: Duration,
    /// How long a login may take in all.
    pub login_timeout: Duration,
    /// Protocol errors (Rejects) a connection may cause within
    /// [`PROTOCOL_ERROR_WINDOW`] before it is dropped.
    pub max_protocol_errors: u32,
}

/// The window [`ConnConfig::max_protocol_errors`] counts over.
pub const PROTOCOL_ERROR_WINDOW: Duration = Duration::from_secs(10);
/// The default of [`ConnConfig::max_protocol_errors`].
pub const DEFAULT_MAX_PROTOCOL_ERRORS: u32 = 32;

impl Default for ConnConfig {
    fn default() -> Self {
        Self {
            limits: TargetLimits::default(),
            nop_interval: Duration::from_secs(5),
            nop_timeout: Duration::from_secs(30),
            login_timeout: Duration::from_secs(15),
            max_protocol_errors: DEFAULT_MAX_PROTOCOL_ERRORS,
        }
    }
}

/// A disk operation the driver submits to the ring.
#[derive(Debug)]
pub enum DiskOp {
    /// Read `buf.len()` bytes.
    Read(Buf),
    /// Write `buf`; `fua` makes it durable first.
    Write {
        /// Data.
        buf: Buf,
        /// Force unit access.
        fua: bool,
    },
    /// Write `buf` untorn (RWF_ATOMIC): WRITE ATOMIC (16).
    WriteAtomic {
        /// Data: one atomic unit of the store, naturally aligned.
        buf: Buf,
        /// Force unit access.
        fua: bool,
    },
    /// fdatasync.
    Flush,
    /// Read-ahead hint for `len` bytes (0: to the end); never fails the command.
    Prefetch {
        /// Bytes.
        len: u64,
    },
    /// Deallocate `len` bytes (punch hole).
    Unmap {
        /// Bytes.
        len: u64,
    },
    /// Zero `len` bytes, keeping them allocated (FALLOC_FL_ZERO_RANGE).
    WriteZeroes {
        /// Bytes.
        len: u64,
    },
    /// Find the allocation extent at the offset (SEEK_DATA / SEEK_HOLE; the
    /// driver answers synchronously with [`Connection::extent_done`]).
    Extent,
    /// Have the cluster decide a change of the unit's shared state (no
    /// disk I/O): the driver hands it to [`ClusterUnit`](crate::scsi::ClusterUnit)
    /// and answers with [`Connection::shared_done`].
    Shared(SharedOp),
}

/// A change of a logical unit's state shared by the members of a cluster.
#[derive(Debug)]
pub struct SharedOp {
    /// The unit.
    pub unit: std::sync::Arc<crate::scsi::LunShared>,
    /// The I_T nexus asking.
    pub nexus: crate::scsi::ItNexus,
    /// What it asks.
    pub change: crate::scsi::UnitChange,
}

/// A disk request with the task it belongs to.
#[derive(Debug)]
pub struct DiskRequest {
    /// Task id (hand it back in [`Connection::disk_done`]).
    pub task: u32,
    /// Store slot on the ring.
    pub slot: StoreSlot,
    /// Byte offset.
    pub offset: u64,
    /// The operation.
    pub op: DiskOp,
}

/// Why the connection is going away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// Logout completed.
    Logout,
    /// Login failed or timed out.
    LoginFailed,
    /// A protocol violation; the message says which.
    Protocol(String),
    /// More Rejects than `max_protocol_errors` within the window.
    TooManyErrors(u32),
    /// The initiator stopped answering.
    Timeout,
    /// The target is shutting down or the session was reinstated.
    Shutdown,
    /// The session's target was removed, or its initiator is no longer
    /// allowed on it.
    AccessRevoked,
}

/// A refused login: who asked for what, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRefusal {
    /// The InitiatorName it declared, if it got that far.
    pub initiator: Option<String>,
    /// The TargetName it asked for (none for discovery).
    pub target: Option<String>,
    /// Why (the log's reason; the wire's status comes from it).
    pub error: LoginError,
}

enum Phase {
    Login(Box<LoginMachine>),
    Full(Box<Session>),
}

/// State of a session in full feature phase.
struct Session {
    params: SessionParams,
    window: Window,
    luns: Option<Rc<LunTable>>,
    nexus: Vec<NexusState>,
    /// Host configuration generation `luns` was built at.
    generation: u64,
    tasks: HashMap<u32, Task>,
    itts: HashMap<u32, u32>,
    next_task: u32,
    waiting: VecDeque<u32>,
    next_ttt: u32,
    text: Option<text::Pending>,
    tmfs: Vec<tmf::PendingTmf>,
    /// A Logout Response held back until the cluster released this
    /// nexus' SPC-2 reservations on every member (the ids it waits on).
    logout: Option<(pdu::LogoutResponse, Vec<u32>)>,
    holds: media::Holds,
}

impl Session {
    /// A new task id (never 0): for a task, or for a cluster decision a
    /// task management function or logout waits on.
    fn next_task_id(&mut self) -> u32 {
        let id = self.next_task;
        self.next_task = self.next_task.wrapping_add(1).max(1);
        id
    }

    /// Releases the reservations this session's nexus holds (none of
    /// another nexus).
    fn release_reservations(&self) {
        if let Some(l) = &self.luns {
            for (e, n) in l.luns.iter().zip(&self.nexus) {
                release_reservation(&e.shared, n);
            }
        }
    }
}

/// Releases the SPC-2 reservation of `lu` if nexus `n` holds it (the nexus
/// goes, or I_T NEXUS RESET). On a cluster's unit it goes here at once, and
/// the cluster releases it on every member in the background (nobody
/// waits for that answer; the other members refuse a moment longer).
fn release_reservation(lu: &Arc<crate::scsi::LunShared>, n: &crate::scsi::NexusState) {
    let held = lu.holder() == n.spc2_id();
    lu.release(n.spc2_id());
    if let (true, Some(cluster)) = (held, lu.cluster()) {
        cluster.change(
            n.pr_identity().clone(),
            crate::scsi::UnitChange::Release,
            Box::new(|_| {}),
        );
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.release_reservations();
    }
}

/// One connection.
pub struct Connection {
    cfg: Rc<ConnConfig>,
    phase: Phase,
    out: Outbox,
    disk: VecDeque<DiskRequest>,
    statsn: u32,
    digests: Digests,
    max_recv: usize,
    closing: Option<CloseReason>,
    close_now: bool,
    started: Instant,
    last_rx: Instant,
    ping: Option<(u32, Instant)>,
    blocked: bool,
    /// Protocol errors in the current window, and when it started.
    errors: (u32, Instant),
    /// Log lines about rejected PDUs (one per interval, with a count).
    reject_log: crate::damp::Damper,
    /// A refused login, until the driver takes it.
    refusal: Option<LoginRefusal>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("statsn", &self.statsn)
            .field("closing", &self.closing)
            .finish()
    }
}

/// Login-phase data segments are bounded by 8 KiB until negotiated (RFC 7143 §12.12).
const LOGIN_MAX_DATA: usize = 8192;

impl Connection {
    /// A new connection in the login phase. `seed` feeds CHAP challenges.
    pub fn new(cfg: Rc<ConnConfig>, seed: u64, now: Instant) -> Self {
        let login = LoginMachine::new(cfg.limits.clone(), seed);
        Self {
            cfg,
            phase: Phase::Login(Box::new(login)),
            out: Outbox::default(),
            disk: VecDeque::new(),
            statsn: 0,
            digests: Digests::default(),
            max_recv: LOGIN_MAX_DATA,
            closing: None,
            close_now: false,
            started: now,
            last_rx: now,
            ping: None,
            blocked: false,
            errors: (0, now),
            reject_log: crate::damp::Damper::new(Duration::from_secs(5)),
            refusal: None,
        }
    }

    /// The login this connection was refused, once (for the driver to log,
    /// count and slow down).
    pub fn take_login_refusal(&mut self) -> Option<LoginRefusal> {
        self.refusal.take()
    }

    /// The initiator of the session, once in full feature phase.
    pub fn initiator_name(&self) -> Option<&str> {
        match &self.phase {
            Phase::Full(s) => Some(&s.params.initiator_name),
            Phase::Login(_) => None,
        }
    }

    /// The initiator, once a Normal session it logged in to with CHAP is in
    /// full feature phase (a login that proved a secret).
    pub fn chap_authenticated(&self) -> Option<&str> {
        match &self.phase {
            Phase::Full(s)
                if s.params.kind == crate::login::SessionKind::Normal
                    && s.params.chap_user.is_some() =>
            {
                Some(&s.params.initiator_name)
            }
            _ => None,
        }
    }

    /// Largest PDU the connection can receive, for sizing the receive buffer.
    pub fn max_pdu_len(&self) -> usize {
        let data = self.max_recv.max(LOGIN_MAX_DATA);
        BHS_LEN + 1024 + 4 + pdu::padded(data) + 4
    }

    /// Why the connection closes, once it does.
    pub fn closing(&self) -> Option<&CloseReason> {
        self.closing.as_ref()
    }

    /// Whether the driver should close the socket now (after flushing what
    /// [`Connection::take_send`] returns).
    pub fn should_close(&self) -> bool {
        self.close_now
    }

    /// Whether `receive` stopped early for lack of buffers.
    pub fn blocked(&self) -> bool {
        self.blocked
    }

    /// Whether the session is in full feature phase.
    pub fn is_full_feature(&self) -> bool {
        matches!(self.phase, Phase::Full(_))
    }

    /// Consumes whole PDUs from `bytes`; returns how many bytes were used.
    /// Stops early when buffers run out ([`Connection::blocked`]); call again
    /// with the rest after a disk completion.
    pub fn receive(
        &mut self,
        bytes: &[u8],
        host: &mut dyn Host,
        pool: &BufPool,
        now: Instant,
    ) -> usize {
        self.blocked = false;
        self.last_rx = now;
        self.refresh_luns(host);
        let mut used = 0;
        while self.closing.is_none() {
            let rest = &bytes[used..];
            match pdu::split_pdu(rest, self.digests, self.max_recv) {
                Ok(None) => break,
                Ok(Some((raw, n))) => {
                    if !self.handle(raw, host, pool, now) {
                        self.blocked = true;
                        break;
                    }
                    used += n;
                }
                Err(e) => {
                    self.wire_error(rest, e);
                    break;
                }
            }
        }
        if self.closing.is_none() {
            self.pump(pool);
        }
        used
    }

    fn wire_error(&mut self, rest: &[u8], e: PduError) {
        tracing::warn!(error = %e, "closing connection on a malformed PDU");
        if let (PduError::DataSegmentTooLong { .. }, Some(bhs)) =
            (&e, rest.first_chunk::<BHS_LEN>())
        {
            // The header is sound: tell the initiator why before we go.
            self.reject(0x04, bhs);
        }
        self.close(CloseReason::Protocol(e.to_string()));
    }

    /// Starts closing: nothing more is read; the driver closes once the
    /// outbox has drained.
    pub fn close(&mut self, reason: CloseReason) {
        if self.closing.is_none() {
            self.closing = Some(reason);
            self.close_now = true;
            // The I_T nexus is gone (logout, connection loss, reinstatement,
            // reset): so are its reservations.
            if let Some(s) = self.session() {
                s.release_reservations();
            }
            for (_, t) in self.session().map(|s| &mut s.tasks).into_iter().flatten() {
                t.aborted = true;
            }
        }
    }

    /// The session, once in full feature phase.
    fn session(&mut self) -> Option<&mut Session> {
        match &mut self.phase {
            Phase::Full(s) => Some(s),
            Phase::Login(_) => None,
        }
    }

    /// Periodic housekeeping: login timeout, NOP-In pings, dead initiators.
    pub fn tick(&mut self, now: Instant) {
        if self.closing.is_some() {
            return;
        }
        match &self.phase {
            Phase::Login(_) => {
                if now.duration_since(self.started) > self.cfg.login_timeout {
                    self.close(CloseReason::LoginFailed);
                }
            }
            Phase::Full(s) => {
                if let Some((_, sent)) = self.ping {
                    if now.duration_since(sent) > self.cfg.nop_timeout {
                        tracing::warn!("initiator did not answer NOP-In; dropping the connection");
                        self.close(CloseReason::Timeout);
                    }
                } else if now.duration_since(self.last_rx) > self.cfg.nop_interval
                    && !s.params.is_discovery()
                {
                    self.send_ping(now);
                }
            }
        }
    }

    fn send_ping(&mut self, now: Instant) {
        let Some(s) = self.session() else { return };
        let ttt = s.alloc_ttt();
        let (exp, max) = (s.window.exp_cmdsn(), s.window.max_cmdsn());
        let nop = NopIn {
            total_ahs_len: 0,
            data_segment_len: 0,
            lun: 0,
            itt: RESERVED_TAG,
            ttt,
            statsn: self.statsn,
            exp_cmdsn: exp,
            max_cmdsn: max,
        };
        let mut bhs = [0u8; BHS_LEN];
        nop.encode(&mut bhs);
        self.out.push(&bhs, &[]);
        self.ping = Some((ttt, now));
    }

    /// Next disk request to submit.
    pub fn next_disk(&mut self) -> Option<DiskRequest> {
        self.disk.pop_front()
    }

    /// Puts back a request the ring could not take.
    pub fn unget_disk(&mut self, req: DiskRequest) {
        self.disk.push_front(req);
    }

    /// Everything queued for the wire, as one message.
    pub fn take_send(&mut self) -> Option<trellis_datapath::SendMsg> {
        self.out.take()
    }

    /// A send finished; its vectors are reused.
    pub fn send_done(&mut self, msg: trellis_datapath::SendMsg) {
        self.out.recycle(msg);
    }

    /// Number of tasks in the session.
    pub fn task_count(&self) -> usize {
        match &self.phase {
            Phase::Full(s) => s.tasks.len(),
            Phase::Login(_) => 0,
        }
    }

    /// Whether anything of this connection still names store `slot`: its
    /// LUN table, a task, or a queued disk request. A core releases a
    /// removed device's slot only once no connection does.
    pub fn uses_store(&self, slot: StoreSlot) -> bool {
        if self.disk.iter().any(|r| r.slot == slot) {
            return true;
        }
        match &self.phase {
            Phase::Full(s) => {
                s.luns
                    .as_ref()
                    .is_some_and(|t| t.luns.iter().any(|e| e.slot == slot))
                    || s.tasks.values().any(|t| t.slot == slot)
            }
            Phase::Login(_) => false,
        }
    }

    /// The store slot task `task` does its I/O on.
    pub fn task_store(&self, task: u32) -> Option<StoreSlot> {
        match &self.phase {
            Phase::Full(s) => s.tasks.get(&task).map(|t| t.slot),
            Phase::Login(_) => None,
        }
    }

    /// TSIH of the session once in full feature phase.
    pub fn tsih(&self) -> Option<u16> {
        match &self.phase {
            Phase::Full(s) => Some(s.params.tsih),
            Phase::Login(_) => None,
        }
    }

    /// Handles one PDU; false when it must be retried later (no buffer).
    fn handle(
        &mut self,
        raw: RawPdu<'_>,
        host: &mut dyn Host,
        pool: &BufPool,
        now: Instant,
    ) -> bool {
        let header = match Header::parse(raw.bhs) {
            Ok(h) => h,
            Err(e) => {
                if let Some(n) = self.reject_log.hit(now) {
                    tracing::debug!(error = %e, rejected = n, "rejecting PDUs (a line per 5 s per connection; the count is since the last)");
                }
                if let Phase::Login(login) = &mut self.phase {
                    if pdu::raw_opcode(raw.bhs) == pdu::Opcode::LoginRequest as u8 {
                        // A Login Request is answered by a Login Response
                        // (initiator error), never a Reject.
                        let step = login.handle_malformed(raw.bhs, e);
                        let mut bhs = [0u8; BHS_LEN];
                        step.response.encode(&mut bhs);
                        self.out.push(&bhs, &step.data);
                        self.close(CloseReason::LoginFailed);
                        return true;
                    }
                }
                let reason = match e {
                    PduError::UnknownOpcode(_) | PduError::NotFromInitiator(_) => 0x05,
                    _ => 0x04,
                };
                self.reject(reason, raw.bhs);
                if matches!(self.phase, Phase::Login(_)) {
                    self.close(CloseReason::Protocol(e.to_string()));
                }
                return true;
            }
        };
        if let Phase::Login(login) = &mut self.phase {
            let Header::LoginRequest(req) = header else {
                self.close(CloseReason::Protocol(format!(
                    "{:?} before login completed",
                    header.opcode()
                )));
                return true;
            };
            let step = login.handle(&req, raw.data, host.login());
            let mut bhs = [0u8; BHS_LEN];
            step.response.encode(&mut bhs);
            self.out.push(&bhs, &step.data);
            match step.outcome {
                LoginOutcome::Continue => {}
                LoginOutcome::Failed => {
                    if let Some(error) = step.error {
                        self.refusal = Some(LoginRefusal {
                            initiator: login.initiator_name().map(str::to_owned),
                            target: login.target_name().map(str::to_owned),
                            error,
                        });
                    }
                    self.close(CloseReason::LoginFailed);
                }
                LoginOutcome::FullFeature(params) => {
                    self.statsn = step.response.statsn.wrapping_add(1);
                    self.enter_full_feature(*params, host);
                }
            }
            return true;
        }
        self.full_feature(header, raw, host, pool, now)
    }

    fn enter_full_feature(&mut self, params: SessionParams, host: &mut dyn Host) {
        self.digests = Digests {
            header: params.header_digest,
            data: params.data_digest,
        };
        self.out.set_digests(self.digests);
        self.max_recv = params.max_recv_data_segment_length_target as usize;
        let luns = params
            .target_name
            .as_deref()
            .and_then(|t| host.luns(t, &params.initiator_name));
        // One I_T nexus per session: its own id, so a reinstated session
        // does not inherit the reservations of the one it replaces.
        let nexus_id = scsi::new_nexus_id();
        // For persistent reservations the I_T nexus is the initiator port
        // (name and ISID) and the relative target port, across sessions.
        let nexus = luns.as_ref().map_or(Vec::new(), |l| {
            let who =
                scsi::ItNexus::iscsi(&params.initiator_name, params.isid, l.port.relative_port_id);
            l.luns
                .iter()
                .map(|e| NexusState::attached(&e.shared, nexus_id).with_pr_identity(who.clone()))
                .collect()
        });
        let window = Window::new(params.exp_cmdsn_start, self.cfg.limits.cmdsn_window);
        let generation = host.config_generation();
        tracing::info!(
            initiator = %params.initiator_name,
            target = ?params.target_name,
            tsih = params.tsih,
            "session in full feature phase"
        );
        self.phase = Phase::Full(Box::new(Session {
            params,
            window,
            luns,
            nexus,
            generation,
            tasks: HashMap::new(),
            itts: HashMap::new(),
            next_task: 1,
            waiting: VecDeque::new(),
            next_ttt: 1,
            text: None,
            tmfs: Vec::new(),
            logout: None,
            holds: media::Holds::default(),
        }));
    }

    fn full_feature(
        &mut self,
        header: Header,
        raw: RawPdu<'_>,
        host: &mut dyn Host,
        pool: &BufPool,
        now: Instant,
    ) -> bool {
        // Ordering: non-immediate commands consume a CmdSN.
        if let Some(cmdsn) = header.cmdsn() {
            let immediate = header.immediate();
            let Some(s) = self.session() else {
                return true;
            };
            if !immediate {
                match s.window.admit(cmdsn) {
                    Admit::InOrder => s.window.advance(),
                    Admit::Ahead | Admit::Outside => {
                        // One connection per session keeps commands in order;
                        // anything else is a stale or bogus CmdSN.
                        tracing::debug!(
                            cmdsn,
                            exp = s.window.exp_cmdsn(),
                            "ignoring command outside the CmdSN window"
                        );
                        return true;
                    }
                }
            }
        }
        match header {
            Header::ScsiCommand(cmd) => {
                if !self.scsi_command(&cmd, raw, pool) {
                    return false;
                }
            }
            Header::DataOut(d) => self.data_out(&d, raw.data, pool),
            Header::NopOut(n) => self.nop_out(&n, raw.data, now),
            Header::TaskMgmtRequest(t) => self.task_mgmt(&t),
            Header::TextRequest(t) => self.text_request(&t, raw.data, host),
            Header::LogoutRequest(l) => self.logout(&l, host),
            Header::LoginRequest(_) => {
                self.reject(0x04, raw.bhs);
            }
            Header::SnackRequest(_) => {
                // ErrorRecoveryLevel=0: SNACK is not supported.
                self.reject(0x04, raw.bhs);
            }
        }
        true
    }

    fn nop_out(&mut self, n: &NopOut, data: &[u8], _now: Instant) {
        if n.itt == RESERVED_TAG {
            // The initiator's answer to our ping.
            if self.ping.is_some_and(|(ttt, _)| ttt == n.ttt) {
                self.ping = None;
            }
            return;
        }
        let Some(s) = self.session() else { return };
        let (exp, max) = (s.window.exp_cmdsn(), s.window.max_cmdsn());
        let nop = NopIn {
            total_ahs_len: 0,
            data_segment_len: data.len() as u32,
            lun: n.lun,
            itt: n.itt,
            ttt: RESERVED_TAG,
            statsn: self.next_statsn(),
            exp_cmdsn: exp,
            max_cmdsn: max,
        };
        let mut bhs = [0u8; BHS_LEN];
        nop.encode(&mut bhs);
        self.out.push(&bhs, data);
    }

    fn logout(&mut self, l: &pdu::LogoutRequest, host: &mut dyn Host) {
        let Some(s) = self.session() else { return };
        // Reason 0 (close session) and 1 (close connection) both end our
        // single-connection session; 2 (recovery) needs ERL 2.
        let response = if l.reason_code & 0x7f <= 1 { 0 } else { 2 };
        let (exp, max) = (s.window.exp_cmdsn(), s.window.max_cmdsn());
        let tsih = s.params.tsih;
        let resp = LogoutResponse {
            response,
            total_ahs_len: 0,
            data_segment_len: 0,
            itt: l.itt,
            // Taken when it is sent.
            statsn: 0,
            exp_cmdsn: exp,
            max_cmdsn: max,
            time2wait: 0,
            time2retain: 0,
        };
        if response == 0 {
            host.session_ended(tsih);
            // A cluster's unit: the response waits until every member has
            // released what this nexus reserved, so that the initiator's
            // next command through any member finds it released.
            let waiting = self.release_in_cluster();
            if !waiting.is_empty() {
                if let Some(s) = self.session() {
                    s.logout = Some((resp, waiting));
                    return;
                }
            }
        }
        self.send_logout(resp);
    }

    /// Sends Logout Response `resp` (its StatSN taken now); a session
    /// logged out closes.
    pub(super) fn send_logout(&mut self, mut resp: LogoutResponse) {
        resp.statsn = self.next_statsn();
        let mut bhs = [0u8; BHS_LEN];
        resp.encode(&mut bhs);
        self.out.push(&bhs, &[]);
        if resp.response == 0 {
            self.close(CloseReason::Logout);
        }
    }

    /// Releases, here at once and through the cluster, the SPC-2
    /// reservations this session's nexus holds on cluster units; the ids
    /// the cluster answers on.
    fn release_in_cluster(&mut self) -> Vec<u32> {
        let Some(s) = self.session() else {
            return Vec::new();
        };
        let Some(l) = s.luns.clone() else {
            return Vec::new();
        };
        let mut ops = Vec::new();
        for (e, n) in l.luns.iter().zip(&s.nexus) {
            if e.shared.cluster().is_some() && e.shared.holder() == n.spc2_id() {
                e.shared.release(n.spc2_id());
                let op = SharedOp {
                    unit: Arc::clone(&e.shared),
                    nexus: n.pr_identity().clone(),
                    change: crate::scsi::UnitChange::Release,
                };
                ops.push((e.slot, op));
            }
        }
        let ops: Vec<_> = ops
            .into_iter()
            .map(|(slot, op)| (s.next_task_id(), slot, op))
            .collect();
        let ids = ops.iter().map(|(id, _, _)| *id).collect();
        for (id, slot, op) in ops {
            self.decide_in_cluster(id, slot, op);
        }
        ids
    }

    /// Queues a Reject carrying the offending header; past
    /// `max_protocol_errors` in a window the connection is dropped instead
    /// (a misbehaving or hostile initiator gets no flood of Rejects).
    fn reject(&mut self, reason: u8, bhs: &[u8; BHS_LEN]) {
        let now = self.last_rx;
        if now.duration_since(self.errors.1) >= PROTOCOL_ERROR_WINDOW {
            self.errors = (0, now);
        }
        self.errors.0 += 1;
        if self.errors.0 > self.cfg.max_protocol_errors {
            // The driver logs it (damped) and counts it against the address.
            self.close(CloseReason::TooManyErrors(self.cfg.max_protocol_errors));
            return;
        }
        let (exp, max) = match &self.phase {
            Phase::Full(s) => (s.window.exp_cmdsn(), s.window.max_cmdsn()),
            Phase::Login(_) => (0, 0),
        };
        let r = Reject {
            reason,
            total_ahs_len: 0,
            data_segment_len: BHS_LEN as u32,
            statsn: self.next_statsn(),
            exp_cmdsn: exp,
            max_cmdsn: max,
            data_sn: 0,
        };
        let mut out = [0u8; BHS_LEN];
        r.encode(&mut out);
        self.out.push(&out, bhs);
    }

    fn next_statsn(&mut self) -> u32 {
        let s = self.statsn;
        self.statsn = self.statsn.wrapping_add(1);
        s
    }

    /// Asks the initiator to log out within `wait_secs` (Async Message,
    /// event 1, RFC 7143 §11.9.1), e.g. before a planned shutdown; the caller
    /// closes the connection if it has not logged out by then. A connection
    /// still logging in is closed at once.
    pub fn request_logout(&mut self, wait_secs: u16) {
        if self.session().is_none() {
            self.close(CloseReason::Shutdown);
            return;
        }
        let statsn = self.next_statsn();
        let Some(s) = self.session() else { return };
        let (exp, max) = (s.window.exp_cmdsn(), s.window.max_cmdsn());
        let msg = pdu::AsyncMessage {
            total_ahs_len: 0,
            data_segment_len: 0,
            lun: 0,
            statsn,
            exp_cmdsn: exp,
            max_cmdsn: max,
            event: 1,
            vcode: 0,
            param1: 0,
            param2: 0,
            param3: wait_secs,
        };
        let mut bhs = [0u8; BHS_LEN];
        msg.encode(&mut bhs);
        self.out.push(&bhs, &[]);
    }
}

impl Session {
    fn alloc_ttt(&mut self) -> u32 {
        let t = self.next_ttt;
        self.next_ttt = self.next_ttt.wrapping_add(1);
        if self.next_ttt == RESERVED_TAG {
            self.next_ttt = 1;
        }
        t
    }
}

#[cfg(test)]
mod tests;
