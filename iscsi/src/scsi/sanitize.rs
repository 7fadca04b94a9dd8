//! SANITIZE (SBC-4 5.30): the CDB and the OVERWRITE parameter list, the state
//! of a logical unit's sanitize operation shared by every session on every
//! core, and what other commands see while one runs or after one failed.
//!
//! ```text
//! SANITIZE ─> sanitize_cdb ─┬ OVERWRITE: DataOut ─> overwrite_parameters ─┐
//!                           └ BLOCK ERASE, EXIT FAILURE MODE ─────────────┴> Action::Sanitize
//! session: SanitizeState::begin ─> disk steps (session/sanitize.rs) ─> SanitizeRun::complete
//! any command ─> sanitize_gate ─┬ running: NOT READY, SANITIZE IN PROGRESS (+ progress)
//!                               └ failed:  MEDIUM ERROR, SANITIZE COMMAND FAILED (medium access)
//! ```
//!
//! CRYPTOGRAPHIC ERASE is not supported (there is no media encryption key
//! to change): it is absent from the opcode table, so it fails with INVALID
//! FIELD IN CDB and WACEREQ is 0. An operation that does not complete (disk
//! error, its session dropped before the last step) leaves the unit in
//! failure mode until a later sanitize succeeds or, if AUSE was set, EXIT
//! FAILURE MODE.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;

use super::cdb::{be16, pad, Cdb};
use super::dispatch::request_sense;
use super::opcodes::{check_reserved, find, Handler};
use super::{Action, Command, Completion, LunDevice, NexusState, Sense};

/// OVERWRITE service action.
pub(crate) const OVERWRITE: u8 = 0x01;
/// BLOCK ERASE service action.
pub(crate) const BLOCK_ERASE: u8 = 0x02;
/// EXIT FAILURE MODE service action.
pub(crate) const EXIT_FAILURE_MODE: u8 = 0x1F;

const INQUIRY: u8 = 0x12;
const REPORT_LUNS: u8 = 0xA0;
const REQUEST_SENSE: u8 = 0x03;

/// A validated SANITIZE command for the session to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SanitizeRequest {
    /// IMMED: GOOD once the operation has started.
    pub immed: bool,
    /// AUSE: EXIT FAILURE MODE may end a failure of this operation.
    pub ause: bool,
    /// What to do.
    pub op: SanitizeOp,
}

/// The service action of a [`SanitizeRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SanitizeOp {
    /// Write `block` to every logical block, `passes` times; with `invert`,
    /// every second pass writes its complement.
    Overwrite {
        /// OVERWRITE COUNT (1..=31).
        passes: u8,
        /// INVERT.
        invert: bool,
        /// One logical block of the initialization pattern, repeated.
        block: Vec<u8>,
    },
    /// Erase every block: deallocate them (thin) or zero them (thick).
    BlockErase,
    /// Leave failure mode.
    ExitFailureMode,
}

impl SanitizeOp {
    /// The pattern block of OVERWRITE pass `pass` (0-based).
    pub fn pass_block(&self, pass: u8) -> Option<Vec<u8>> {
        match self {
            SanitizeOp::Overwrite { invert, block, .. } => Some(if *invert && pass % 2 == 1 {
                block.iter().map(|b| !b).collect()
            } else {
                block.clone()
            }),
            _ => None,
        }
    }

    /// Passes over the medium.
    pub fn passes(&self) -> u8 {
        match self {
            SanitizeOp::Overwrite { passes, .. } => *passes,
            SanitizeOp::BlockErase => 1,
            SanitizeOp::ExitFailureMode => 0,
        }
    }
}

/// SANITIZE CDB: OVERWRITE collects its parameter list; BLOCK ERASE and EXIT
/// FAILURE MODE start at once.
pub(crate) fn sanitize_cdb(c: &Cdb, dev: &LunDevice) -> Result<Action, Sense> {
    let sa = c[1] & 0x1F;
    let len = be16(c, 7);
    let request = |op| SanitizeRequest {
        immed: c[1] & 0x80 != 0,
        ause: c[1] & 0x20 != 0,
        op,
    };
    let op = match sa {
        OVERWRITE => {
            // A header and 1 ..= block size bytes of pattern.
            if len < 5 || u32::from(len) > dev.block_size + 4 {
                return Err(Sense::invalid_field_in_cdb(7, 7));
            }
            None
        }
        BLOCK_ERASE | EXIT_FAILURE_MODE if len != 0 => {
            return Err(Sense::invalid_field_in_cdb(7, 7));
        }
        BLOCK_ERASE => Some(SanitizeOp::BlockErase),
        EXIT_FAILURE_MODE => Some(SanitizeOp::ExitFailureMode),
        _ => return Err(Sense::invalid_field_in_cdb(1, 4)),
    };
    if dev.read_only && sa != EXIT_FAILURE_MODE {
        return Err(Sense::write_protected());
    }
    Ok(match op {
        Some(op) => Action::Sanitize(request(op)),
        None => Action::DataOut {
            len: u32::from(len),
        },
    })
}

/// The OVERWRITE parameter list `data` of SANITIZE `cdb`.
pub(crate) fn overwrite_parameters(
    cdb: &[u8],
    data: &[u8],
    dev: &LunDevice,
) -> Result<SanitizeRequest, Sense> {
    let c = pad(cdb);
    if data.len() < 5 {
        return Err(Sense::parameter_list_length_error());
    }
    if data[0] & 0x60 != 0 {
        return Err(Sense::invalid_field_in_parameter_list(0, 6));
    }
    if data[1] != 0 {
        return Err(Sense::invalid_field_in_parameter_list(1, 7));
    }
    let passes = data[0] & 0x1F;
    if passes == 0 {
        return Err(Sense::invalid_field_in_parameter_list(0, 4));
    }
    let ipl = usize::from(be16(data, 2));
    let bs = dev.block_size as usize;
    if ipl == 0 || ipl > bs || 4 + ipl > data.len() {
        return Err(Sense::invalid_field_in_parameter_list(2, 7));
    }
    let pattern = &data[4..4 + ipl];
    let block = pattern.iter().copied().cycle().take(bs).collect();
    Ok(SanitizeRequest {
        immed: c[1] & 0x80 != 0,
        ause: c[1] & 0x20 != 0,
        op: SanitizeOp::Overwrite {
            passes,
            invert: data[0] & 0x80 != 0,
            block,
        },
    })
}

const IDLE: u8 = 0;
const RUNNING: u8 = 1;
const FAILED: u8 = 2;
const FAILED_AUSE: u8 = 3;

/// Where a logical unit's sanitize operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SanitizePhase {
    /// None running; the last one (if any) succeeded.
    #[default]
    Idle,
    /// One is running, `progress` / 65536 done.
    Running {
        /// Fraction done, over 65536.
        progress: u16,
    },
    /// The last one failed: failure mode.
    Failed {
        /// It had AUSE set, so EXIT FAILURE MODE may end failure mode.
        ause: bool,
    },
}

/// The sanitize state of one logical unit, shared by every session on every
/// core (two atomics; no lock). On a cluster's unit it also holds the phase
/// of a sanitize another member runs ([`SanitizeState::set_shared`]), which
/// this member reports as its own, and tells the cluster of its own
/// ([`SanitizeState::set_notifier`]).
#[derive(Default)]
pub struct SanitizeState {
    phase: AtomicU8,
    progress: AtomicU32,
    /// Another member's sanitize, as the cluster decided it.
    shared: AtomicU8,
    notify: std::sync::OnceLock<Box<dyn Fn(SanitizePhase) + Send + Sync>>,
}

impl std::fmt::Debug for SanitizeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SanitizeState")
            .field("phase", &self.phase())
            .finish_non_exhaustive()
    }
}

fn phase_of(code: u8, progress: u16) -> SanitizePhase {
    match code {
        RUNNING => SanitizePhase::Running { progress },
        FAILED => SanitizePhase::Failed { ause: false },
        FAILED_AUSE => SanitizePhase::Failed { ause: true },
        _ => SanitizePhase::Idle,
    }
}

fn code_of(phase: SanitizePhase) -> u8 {
    match phase {
        SanitizePhase::Idle => IDLE,
        SanitizePhase::Running { .. } => RUNNING,
        SanitizePhase::Failed { ause: false } => FAILED,
        SanitizePhase::Failed { ause: true } => FAILED_AUSE,
    }
}

impl SanitizeState {
    /// A unit with no sanitize operation.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current phase: this member's operation's, else another
    /// member's (whose progress is not known here: 0).
    pub fn phase(&self) -> SanitizePhase {
        match self.phase.load(Ordering::Acquire) {
            IDLE => phase_of(self.shared.load(Ordering::Acquire), 0),
            own => phase_of(own, self.progress()),
        }
    }

    /// The phase of this member's own operation (another member's left
    /// out).
    pub fn own_phase(&self) -> SanitizePhase {
        phase_of(self.phase.load(Ordering::Acquire), self.progress())
    }

    /// Calls `notify` with this member's phase whenever its own operation
    /// starts or ends, or it leaves failure mode (once).
    pub fn set_notifier(&self, notify: Box<dyn Fn(SanitizePhase) + Send + Sync>) {
        let _ = self.notify.set(notify);
    }

    /// The phase of a sanitize another member runs (or ran, and failed).
    pub fn set_shared(&self, phase: SanitizePhase) {
        self.shared.store(code_of(phase), Ordering::Release);
    }

    /// Ends this member's failure mode without telling anyone: another
    /// member ended it for the cluster (EXIT FAILURE MODE there).
    pub fn clear_failure(&self) {
        let _ = self
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                matches!(p, FAILED | FAILED_AUSE).then_some(IDLE)
            });
    }

    fn tell(&self, phase: SanitizePhase) {
        if let Some(n) = self.notify.get() {
            n(phase);
        }
    }

    /// Starts an operation unless one runs; the unit reports SANITIZE IN
    /// PROGRESS until the returned guard completes or is dropped.
    pub fn begin(self: &Arc<Self>, ause: bool) -> Option<SanitizeRun> {
        if self.shared.load(Ordering::Acquire) == RUNNING {
            return None;
        }
        self.phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p != RUNNING).then_some(RUNNING)
            })
            .ok()?;
        self.progress.store(0, Ordering::Relaxed);
        self.tell(SanitizePhase::Running { progress: 0 });
        Some(SanitizeRun {
            state: Arc::clone(self),
            ause,
            ended: false,
        })
    }

    /// EXIT FAILURE MODE: ends failure mode if the failed operation allowed
    /// it (AUSE); GOOD with nothing to do outside failure mode.
    pub fn exit_failure_mode(&self) -> Result<(), Sense> {
        if self.phase.load(Ordering::Acquire) == IDLE {
            // Another member's failed operation: ended for the cluster.
            return match self.shared.load(Ordering::Acquire) {
                RUNNING => Err(Sense::sanitize_in_progress(0)),
                FAILED => Err(Sense::invalid_field_in_cdb(1, 4)),
                FAILED_AUSE => {
                    self.shared.store(IDLE, Ordering::Release);
                    self.tell(SanitizePhase::Idle);
                    Ok(())
                }
                _ => Ok(()),
            };
        }
        match self
            .phase
            .compare_exchange(FAILED_AUSE, IDLE, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                self.tell(SanitizePhase::Idle);
                Ok(())
            }
            Err(IDLE) => Ok(()),
            Err(RUNNING) => Err(Sense::sanitize_in_progress(self.progress())),
            Err(_) => Err(Sense::invalid_field_in_cdb(1, 4)),
        }
    }

    fn progress(&self) -> u16 {
        u16::try_from(self.progress.load(Ordering::Relaxed)).unwrap_or(0xFFFF)
    }
}

/// A running sanitize operation. Dropping it before [`SanitizeRun::complete`]
/// puts the unit in failure mode: the medium was only partly sanitized.
#[derive(Debug)]
pub struct SanitizeRun {
    state: Arc<SanitizeState>,
    ause: bool,
    ended: bool,
}

impl SanitizeRun {
    /// Records that `done` of `total` bytes of work are done.
    pub fn progress(&self, done: u64, total: u64) {
        let p = if total == 0 {
            0
        } else {
            (u128::from(done.min(total)) * 0xFFFF / u128::from(total)) as u32
        };
        self.state.progress.store(p, Ordering::Relaxed);
    }

    /// Ends the operation: the unit is idle again, or in failure mode.
    pub fn complete(mut self, ok: bool) {
        self.end(ok);
    }

    fn end(&mut self, ok: bool) {
        if self.ended {
            return;
        }
        self.ended = true;
        let phase = match (ok, self.ause) {
            (true, _) => IDLE,
            (false, true) => FAILED_AUSE,
            (false, false) => FAILED,
        };
        self.state.phase.store(phase, Ordering::Release);
        self.state.tell(phase_of(phase, 0));
    }
}

impl Drop for SanitizeRun {
    fn drop(&mut self) {
        self.end(false);
    }
}

/// Whether `handler` reads or writes the medium (refused in failure mode).
fn touches_medium(handler: Handler) -> bool {
    matches!(
        handler,
        Handler::Read(_)
            | Handler::Write(_)
            | Handler::WriteVerify(_)
            | Handler::Verify(_)
            | Handler::SyncCache(_)
            | Handler::Prefetch(_)
            | Handler::WriteSame(_)
            | Handler::Unmap
            | Handler::GetLbaStatus
            | Handler::OrWrite
            | Handler::CompareAndWrite
            | Handler::ExtendedCopy
    )
}

/// What `cmd` gets instead of dispatch while the unit sanitizes or is in
/// failure mode (SBC-4 4.11): `None` to dispatch it. A pending unit
/// attention is reported first (by dispatch). While an operation runs only
/// INQUIRY, REPORT LUNS and REQUEST SENSE (which returns the progress) are
/// processed; in failure mode, commands that access the medium fail.
pub fn sanitize_gate(
    cmd: &Command<'_>,
    state: &SanitizeState,
    nexus: &NexusState,
) -> Option<Action> {
    if cmd.cdb.is_empty() || nexus.peek_ua().is_some() {
        return None;
    }
    let c = pad(cmd.cdb);
    let entry = find(&c)?;
    let sense = match state.phase() {
        SanitizePhase::Idle => return None,
        SanitizePhase::Running { progress } => match c[0] {
            INQUIRY | REPORT_LUNS => return None,
            REQUEST_SENSE => {
                check_reserved(entry, &c).ok()?;
                let done = request_sense(&c, Some(Sense::sanitize_in_progress(progress)));
                return Some(Action::Complete(done));
            }
            _ => Sense::sanitize_in_progress(progress),
        },
        SanitizePhase::Failed { .. } if touches_medium(entry.handler) => Sense::sanitize_failed(),
        SanitizePhase::Failed { .. } => return None,
    };
    Some(Action::Complete(Completion::check(sense)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::dispatch::tests::disk;

    fn cdb(b1: u8, len: u16) -> Cdb {
        let mut c = [0u8; 16];
        c[0] = 0x48;
        c[1] = b1;
        c[7..9].copy_from_slice(&len.to_be_bytes());
        c
    }

    #[test]
    fn cdb_fields() {
        let dev = disk(512, 1000);
        assert_eq!(
            sanitize_cdb(&cdb(0x01, 516), &dev),
            Ok(Action::DataOut { len: 516 })
        );
        for len in [0, 4, 517] {
            assert_eq!(
                sanitize_cdb(&cdb(0x01, len), &dev),
                Err(Sense::invalid_field_in_cdb(7, 7)),
                "{len}"
            );
        }
        assert_eq!(
            sanitize_cdb(&cdb(0xA2, 0), &dev),
            Ok(Action::Sanitize(SanitizeRequest {
                immed: true,
                ause: true,
                op: SanitizeOp::BlockErase
            }))
        );
        for sa in [0x02, 0x1F] {
            assert_eq!(
                sanitize_cdb(&cdb(sa, 8), &dev),
                Err(Sense::invalid_field_in_cdb(7, 7))
            );
        }
        assert_eq!(
            sanitize_cdb(&cdb(0x03, 0), &dev),
            Err(Sense::invalid_field_in_cdb(1, 4))
        );
        let ro = LunDevice {
            read_only: true,
            ..disk(512, 1000)
        };
        assert_eq!(
            sanitize_cdb(&cdb(0x02, 0), &ro),
            Err(Sense::write_protected())
        );
        assert_eq!(
            sanitize_cdb(&cdb(0x01, 516), &ro),
            Err(Sense::write_protected())
        );
        assert!(matches!(
            sanitize_cdb(&cdb(0x1F, 0), &ro),
            Ok(Action::Sanitize(_))
        ));
    }

    #[test]
    fn overwrite_parameter_list() {
        let dev = disk(512, 1000);
        let c = cdb(0x81, 8);
        let req = overwrite_parameters(&c, &[0x82, 0, 0, 3, 1, 2, 3, 9], &dev).unwrap();
        assert!(req.immed && !req.ause);
        let SanitizeOp::Overwrite {
            passes,
            invert,
            ref block,
        } = req.op
        else {
            panic!("not an overwrite");
        };
        assert_eq!((passes, invert, block.len()), (2, true, 512));
        assert_eq!(&block[..7], &[1, 2, 3, 1, 2, 3, 1]);
        assert_eq!(block[511], 1 + (511 % 3) as u8);
        assert_eq!(req.op.pass_block(1).unwrap()[0], !1);
        assert_eq!(req.op.pass_block(2).unwrap()[0], 1);

        let bad = |data: &[u8]| overwrite_parameters(&c, data, &dev);
        assert_eq!(
            bad(&[0x00, 0, 0, 1, 0xAA]),
            Err(Sense::invalid_field_in_parameter_list(0, 4))
        );
        assert_eq!(
            bad(&[0x21, 0, 0, 1, 0xAA]),
            Err(Sense::invalid_field_in_parameter_list(0, 6))
        );
        assert_eq!(
            bad(&[0x01, 1, 0, 1, 0xAA]),
            Err(Sense::invalid_field_in_parameter_list(1, 7))
        );
        assert_eq!(
            bad(&[0x01, 0, 0, 0, 0xAA]),
            Err(Sense::invalid_field_in_parameter_list(2, 7))
        );
        assert_eq!(
            bad(&[0x01, 0, 0, 2, 0xAA]),
            Err(Sense::invalid_field_in_parameter_list(2, 7))
        );
        let mut big = vec![0x01, 0, 0x02, 0x04];
        big.resize(4 + 516, 0);
        assert_eq!(bad(&big), Err(Sense::invalid_field_in_parameter_list(2, 7)));
        assert_eq!(bad(&[1, 0, 0]), Err(Sense::parameter_list_length_error()));
    }

    #[test]
    fn state_machine() {
        let s = Arc::new(SanitizeState::new());
        assert_eq!(s.phase(), SanitizePhase::Idle);
        assert_eq!(s.exit_failure_mode(), Ok(()));
        let run = s.begin(false).unwrap();
        assert!(s.begin(true).is_none(), "one at a time");
        run.progress(1, 4);
        assert_eq!(s.phase(), SanitizePhase::Running { progress: 0x3FFF });
        assert_eq!(
            s.exit_failure_mode(),
            Err(Sense::sanitize_in_progress(0x3FFF))
        );
        run.complete(true);
        assert_eq!(s.phase(), SanitizePhase::Idle);

        // Dropped unfinished: failure mode; no AUSE, so only a new sanitize ends it.
        drop(s.begin(false).unwrap());
        assert_eq!(s.phase(), SanitizePhase::Failed { ause: false });
        assert_eq!(
            s.exit_failure_mode(),
            Err(Sense::invalid_field_in_cdb(1, 4))
        );
        s.begin(true).unwrap().complete(false);
        assert_eq!(s.phase(), SanitizePhase::Failed { ause: true });
        assert_eq!(s.exit_failure_mode(), Ok(()));
        assert_eq!(s.phase(), SanitizePhase::Idle);
    }

    fn run(cdb: &[u8], s: &SanitizeState, n: &NexusState) -> Option<Action> {
        let cmd = Command {
            cdb,
            lun: 0,
            expected_len: 0,
            read: false,
            write: false,
        };
        sanitize_gate(&cmd, s, n)
    }

    fn sense(a: Option<Action>) -> Option<(u8, u8, u8)> {
        match a {
            Some(Action::Complete(c)) => c.sense.map(|s| (s.key.code(), s.asc, s.ascq)),
            _ => None,
        }
    }

    #[test]
    fn gate_while_running_and_in_failure_mode() {
        let s = Arc::new(SanitizeState::new());
        let n = NexusState::empty();
        let tur = [0u8; 6];
        let read10 = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        let inq = [0x12, 0, 0, 0, 96, 0];
        assert_eq!(run(&tur, &s, &n), None);
        let r = s.begin(true).unwrap();
        r.progress(1, 2);
        for c in [&tur[..], &read10, &[0x48, 0x02, 0, 0, 0, 0, 0, 0, 0, 0]] {
            assert_eq!(sense(run(c, &s, &n)), Some((2, 0x04, 0x1B)), "{c:02x?}");
        }
        assert_eq!(run(&inq, &s, &n), None);
        assert_eq!(run(&[0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], &s, &n), None);
        let Some(Action::Complete(rs)) = run(&[0x03, 0, 0, 0, 18, 0], &s, &n) else {
            panic!("REQUEST SENSE not answered");
        };
        assert_eq!((rs.data[2], rs.data[12], rs.data[13]), (0x02, 0x04, 0x1B));
        assert_eq!(&rs.data[15..18], &[0x80, 0x7F, 0xFF]);
        // A pending unit attention goes to dispatch first.
        let mut ua = NexusState::empty();
        ua.push(crate::scsi::UnitAttention::PowerOnReset);
        assert_eq!(run(&tur, &s, &ua), None);

        r.complete(false);
        assert_eq!(sense(run(&read10, &s, &n)), Some((3, 0x31, 0x03)));
        assert_eq!(run(&tur, &s, &n), None);
        assert_eq!(run(&[0x48, 0x02, 0, 0, 0, 0, 0, 0, 0, 0], &s, &n), None);
    }

    #[test]
    fn another_members_sanitize_is_reported_and_ours_told() {
        use std::sync::Mutex;
        let told = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::new(SanitizeState::new());
        let t = Arc::clone(&told);
        s.set_notifier(Box::new(move |p| t.lock().unwrap().push(p)));
        // Another member's, running: reported here, and no second one starts.
        s.set_shared(SanitizePhase::Running { progress: 9 });
        assert_eq!(s.phase(), SanitizePhase::Running { progress: 0 });
        assert!(s.begin(false).is_none());
        // It failed with AUSE: EXIT FAILURE MODE here ends it for everyone.
        s.set_shared(SanitizePhase::Failed { ause: true });
        assert_eq!(s.phase(), SanitizePhase::Failed { ause: true });
        assert_eq!(s.exit_failure_mode(), Ok(()));
        assert_eq!(s.phase(), SanitizePhase::Idle);
        // Ours: told when it starts and ends.
        let run = s.begin(true).expect("begins");
        run.complete(true);
        // Our failure, ended for the cluster through another member.
        drop(s.begin(false));
        assert_eq!(s.phase(), SanitizePhase::Failed { ause: false });
        s.clear_failure();
        assert_eq!(s.phase(), SanitizePhase::Idle);
        told.lock().unwrap().truncate(3);
        assert_eq!(
            *told.lock().unwrap(),
            vec![
                SanitizePhase::Idle,
                SanitizePhase::Running { progress: 0 },
                SanitizePhase::Idle
            ]
        );
    }
}
