//! SANITIZE in the session: the operation runs as disk steps of the task that
//! started it, while the unit's shared [`SanitizeState`] makes every other
//! command of every session report SANITIZE IN PROGRESS.
//!
//! ```text
//! Action::Sanitize ─> EXIT FAILURE MODE: status
//!                  └> SanitizeState::begin ─(IMMED: GOOD now)─> per pass:
//!                       zeros: punch hole (thin, holes read zero) or zero range
//!                       else:  wait for a buffer (try_start) ─> pattern writes, chunk by chunk
//!                     BLOCK ERASE: punch hole (thin) or zero range
//!                  ─> fdatasync ─> SanitizeRun::complete ─> status (unless IMMED)
//! ```
//!
//! The task keeps `Purpose::Params` (no block holds, no data-out left) and
//! its progress in `Task::sanitize`. It goes on when task management aborts
//! it or the connection drops (SBC-4: a sanitize operation survives resets);
//! only its status is then not sent. If it ends early its
//! [`SanitizeRun`] puts the unit in failure mode.

use trellis_datapath::{Buf, BufPool};

use super::exec::medium_error;
use super::task::{Stage, TaskStatus};
use super::{Connection, DiskOp, DiskRequest};
use crate::scsi::{SanitizeOp, SanitizeRequest, SanitizeRun, Sense};

/// Progress of one sanitize operation.
#[derive(Debug)]
pub struct SanitizeJob {
    /// Keeps the unit in SANITIZE IN PROGRESS; dropped unfinished, in failure mode.
    run: Option<SanitizeRun>,
    /// What is done to the medium.
    op: SanitizeOp,
    /// Pass in progress (0-based); `op.passes()` once only the flush is left.
    pass: u8,
    /// Bytes of the pass done (or in flight).
    done: u64,
    /// Bytes of the medium.
    total: u64,
    /// The pass's pattern block, when it is not all zeros.
    block: Option<Vec<u8>>,
    /// Status already sent (IMMED).
    answered: bool,
    /// The final flush is in flight.
    flushing: bool,
}

impl SanitizeJob {
    /// Bytes of work done over all passes, and in all.
    fn progress(&self) -> (u64, u64) {
        let passes = u64::from(self.op.passes().max(1));
        (
            u64::from(self.pass) * self.total + self.done.min(self.total),
            passes * self.total,
        )
    }
}

impl Connection {
    /// SANITIZE task `id` asks for `req`: start it (or answer at once).
    pub(super) fn start_sanitize(&mut self, id: u32, req: SanitizeRequest) {
        let Some(s) = self.session() else { return };
        let Some(luns) = s.luns.clone() else { return };
        let Some(t) = s.tasks.get_mut(&id) else {
            return;
        };
        let lun = &luns.luns[t.lun_index];
        t.params = Vec::new();
        if req.op == SanitizeOp::ExitFailureMode {
            let status = match lun.sanitize.exit_failure_mode() {
                Ok(()) => TaskStatus::good(),
                Err(sense) => TaskStatus::check(sense),
            };
            self.end_sanitize(id, status);
            return;
        }
        let Some(run) = lun.sanitize.begin(req.ause) else {
            let progress = match lun.sanitize.phase() {
                crate::scsi::SanitizePhase::Running { progress } => progress,
                _ => 0,
            };
            self.end_sanitize(id, TaskStatus::check(Sense::sanitize_in_progress(progress)));
            return;
        };
        tracing::info!(lun = t.lun, op = ?req.op.passes(), immed = req.immed, "sanitize started");
        let total = lun.dev.num_blocks * u64::from(lun.dev.block_size);
        t.stage = Stage::InFlight;
        t.sanitize = Some(Box::new(SanitizeJob {
            run: Some(run),
            op: req.op,
            pass: 0,
            done: 0,
            total,
            block: None,
            answered: req.immed,
            flushing: false,
        }));
        if req.immed {
            // The command is complete; the operation goes on without it.
            let (itt, edtl, xfer, r2tsn) = (t.itt, t.edtl, t.xfer, t.r2tsn);
            if s.itts.get(&itt) == Some(&id) {
                s.itts.remove(&itt);
            }
            self.respond_status(itt, edtl, xfer, TaskStatus::good(), r2tsn);
        }
        self.sanitize_next(id);
    }

    /// Gives sanitize task `id` its pattern buffer; false if the pool is empty.
    pub(super) fn sanitize_buffer(&mut self, id: u32, pool: &BufPool) -> bool {
        let Some(s) = self.session() else { return true };
        let Some(t) = s.tasks.get_mut(&id) else {
            return true;
        };
        let bs = t.block_size as usize;
        let total = t.sanitize.as_ref().map_or(0, |j| j.total);
        let want = usize::try_from(total)
            .unwrap_or(usize::MAX)
            .min(pool.max_buf() / bs * bs)
            .max(bs);
        let Some(buf) = pool.get(want) else {
            if !s.waiting.contains(&id) {
                s.waiting.push_back(id);
            }
            return false;
        };
        t.buf = Some(buf);
        t.stage = Stage::InFlight;
        self.sanitize_next(id);
        true
    }

    /// Queues the next step of sanitize task `id`, or ends it.
    fn sanitize_next(&mut self, id: u32) {
        let Some(s) = self.session() else { return };
        let Some(luns) = s.luns.clone() else { return };
        let Some(t) = s.tasks.get_mut(&id) else {
            return;
        };
        let dev = &luns.luns[t.lun_index].dev;
        let (bs, slot) = (t.block_size as usize, t.slot);
        let Some(job) = t.sanitize.as_mut() else {
            return;
        };
        if let Some(run) = &job.run {
            let (done, total) = job.progress();
            run.progress(done, total);
        }
        if job.pass >= job.op.passes() {
            if job.flushing {
                self.end_sanitize(id, TaskStatus::good());
                return;
            }
            job.flushing = true;
            self.disk.push_back(DiskRequest {
                task: id,
                slot,
                offset: 0,
                op: DiskOp::Flush,
            });
            return;
        }
        if job.done == 0 {
            job.block = job
                .op
                .pass_block(job.pass)
                .filter(|b| b.iter().any(|x| *x != 0));
        }
        let Some(block) = job.block.as_ref() else {
            // BLOCK ERASE, or a pass of zeros: the whole medium in one step.
            // Deallocated blocks read back as zeros only with LBPRZ.
            let len = job.total - job.done;
            let op = if dev.thin && (dev.holes_read_zero || job.op == SanitizeOp::BlockErase) {
                DiskOp::Unmap { len }
            } else {
                DiskOp::WriteZeroes { len }
            };
            let offset = job.done;
            job.done = job.total;
            self.disk.push_back(DiskRequest {
                task: id,
                slot,
                offset,
                op,
            });
            return;
        };
        let Some(mut buf) = t.buf.take() else {
            t.stage = Stage::NeedBuffer;
            if !s.waiting.contains(&id) {
                s.waiting.push_back(id);
            }
            return;
        };
        // The buffer keeps the pass's pattern between its writes.
        let fill = buf.capacity() / bs * bs;
        buf.set_len(fill);
        if job.done == 0 {
            for chunk in buf.chunks_exact_mut(bs) {
                chunk.copy_from_slice(block);
            }
        }
        let chunk = (job.total - job.done).min(fill as u64);
        buf.set_len(chunk as usize);
        let offset = job.done;
        job.done += chunk;
        self.disk.push_back(DiskRequest {
            task: id,
            slot,
            offset,
            op: DiskOp::Write { buf, fua: false },
        });
    }

    /// One step of sanitize task `id` finished.
    pub(super) fn sanitize_done(&mut self, id: u32, result: i32, buf: Option<Buf>) {
        let Some(s) = self.session() else { return };
        let Some(t) = s.tasks.get_mut(&id) else {
            return;
        };
        let ok = result >= 0 && buf.as_ref().is_none_or(|b| result == b.len() as i32);
        if !ok {
            tracing::warn!(errno = -result, "sanitize I/O failed");
            self.end_sanitize(id, TaskStatus::check(medium_error(false)));
            return;
        }
        if let Some(b) = buf {
            t.buf = Some(b);
        }
        if let Some(job) = t.sanitize.as_mut() {
            if job.done >= job.total && !job.flushing {
                job.pass += 1;
                job.done = 0;
            }
        }
        self.sanitize_next(id);
    }

    /// Ends sanitize task `id` with `status`: the unit leaves SANITIZE IN
    /// PROGRESS (idle on GOOD, failure mode otherwise) and the status goes
    /// out unless IMMED sent it already or the task was aborted.
    fn end_sanitize(&mut self, id: u32, status: TaskStatus) {
        let Some(s) = self.session() else { return };
        let Some(mut t) = s.remove_task(id) else {
            return;
        };
        let good = status.sense.is_none();
        let mut answered = false;
        if let Some(job) = t.sanitize.as_mut() {
            answered = job.answered;
            if let Some(run) = job.run.take() {
                tracing::info!(lun = t.lun, ok = good, "sanitize finished");
                run.complete(good);
            }
        }
        if !answered && !t.aborted {
            self.respond_status(t.itt, t.edtl, t.xfer, status, t.r2tsn);
        }
    }
}
