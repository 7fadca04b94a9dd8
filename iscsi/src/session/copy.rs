//! EXTENDED COPY in the session: segments resolved against the session's
//! LUN table, copied through one pool buffer, chunk by chunk.
//!
//! ```text
//! parameter list ─> scsi::resolve_copy ─> wait for a buffer (try_start)
//!   └─> read chunk from the source slot ─> write it to the destination slot ─> next chunk
//!         └─> last chunk of the last segment: record the result in the nexus, GOOD
//! ```
//!
//! Each chunk holds its destination blocks' unit-wide lock words (shared,
//! like any write) from before its read until its write is done, so a
//! COMPARE AND WRITE of those blocks from any session never interleaves with
//! it; a chunk whose blocks a COMPARE AND WRITE holds waits for it.

use trellis_datapath::{Buf, BufPool};

use super::media::Span;
use super::task::{Purpose, Stage, TaskStatus};
use super::{Connection, DiskOp, DiskRequest};
use crate::scsi::{self, CopyList, CopyResult, CopyStep, Sense, SenseKey};

/// Progress of one EXTENDED COPY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyJob {
    /// LIST IDENTIFIER.
    pub list_id: u8,
    /// Hold the result for RECEIVE COPY RESULTS.
    pub hold: bool,
    /// Segments, resolved to LUN table indices.
    pub steps: Vec<CopyStep>,
    /// Segment in progress.
    pub step: usize,
    /// Blocks of the segment copied so far.
    pub done: u32,
    /// Blocks of the chunk in flight.
    pub chunk: u32,
    /// The chunk in flight is being read (else written).
    pub reading: bool,
    /// Bytes written so far.
    pub bytes: u64,
}

impl CopyJob {
    /// Bytes of the largest segment (the buffer need not be larger).
    pub fn largest(&self, block_size: u32) -> usize {
        let blocks = self.steps.iter().map(|s| s.blocks).max().unwrap_or(0);
        (blocks as usize * block_size as usize).max(block_size as usize)
    }
}

/// A copy whose source or destination left the session's LUN table: COPY
/// ABORTED, COPY TARGET DEVICE NOT REACHABLE (SPC-4).
fn copy_target_gone() -> TaskStatus {
    TaskStatus::check(Sense::new(SenseKey::CopyAborted, 0x0D, 0x02))
}

impl Connection {
    /// The parameter list of EXTENDED COPY task `id` parsed as `list`:
    /// resolve it, then wait for a buffer (or answer at once).
    pub(super) fn start_copy(&mut self, id: u32, list: CopyList) {
        let Some(s) = self.session() else { return };
        let Some(luns) = s.luns.clone() else { return };
        let Some(t) = s.tasks.get_mut(&id) else {
            return;
        };
        let devs: Vec<&scsi::LunDevice> = luns.luns.iter().map(|l| &*l.dev).collect();
        let steps = match scsi::resolve_copy(&list, &devs) {
            Ok(steps) => steps,
            Err(sense) => {
                self.finish_copy(id, TaskStatus::check(sense));
                return;
            }
        };
        t.purpose = Purpose::Copy;
        t.params = Vec::new();
        t.stage = Stage::NeedBuffer;
        t.copy = Some(Box::new(CopyJob {
            list_id: list.list_id,
            hold: list.hold,
            steps,
            step: 0,
            done: 0,
            chunk: 0,
            reading: false,
            bytes: 0,
        }));
        if !s.waiting.contains(&id) {
            s.waiting.push_back(id);
        }
    }

    /// Gives copy task `id` its buffer; false if the pool is empty.
    pub(super) fn copy_buffer(&mut self, id: u32, pool: &BufPool) -> bool {
        let Some(s) = self.session() else { return true };
        let Some(t) = s.tasks.get_mut(&id) else {
            return true;
        };
        let want = t
            .copy
            .as_ref()
            .map_or(0, |j| j.largest(t.block_size))
            .min(pool.max_buf());
        let Some(buf) = pool.get(want) else {
            if !s.waiting.contains(&id) {
                s.waiting.push_back(id);
            }
            return false;
        };
        t.buf = Some(buf);
        t.stage = Stage::InFlight;
        self.copy_next(id);
        true
    }

    /// Reads the next chunk, or ends the copy after the last one.
    pub(super) fn copy_next(&mut self, id: u32) {
        let Some(s) = self.session() else { return };
        let Some(luns) = s.luns.clone() else { return };
        let Some(t) = s.tasks.get_mut(&id) else {
            return;
        };
        let bs = t.block_size;
        let (Some(job), Some(mut buf)) = (t.copy.as_mut(), t.buf.take()) else {
            return;
        };
        while job
            .steps
            .get(job.step)
            .is_some_and(|st| job.done >= st.blocks)
        {
            job.step += 1;
            job.done = 0;
        }
        let Some(st) = job.steps.get(job.step).copied() else {
            t.buf = Some(buf);
            self.finish_copy(id, TaskStatus::good());
            return;
        };
        let per_buf = (buf.capacity() / bs as usize).max(1) as u32;
        job.chunk = (st.blocks - job.done).min(per_buf);
        let dst_start = st.dst_lba + u64::from(job.done);
        let span = Span {
            task: id,
            lun: st.dst,
            start: dst_start,
            end: dst_start + u64::from(job.chunk),
            exclusive: false,
        };
        let Some(dst) = luns.luns.get(st.dst) else {
            t.buf = Some(buf);
            self.finish_copy(id, copy_target_gone());
            return;
        };
        if !s.holds.lock(span, &dst.shared) {
            // A COMPARE AND WRITE holds them; retried when it is done.
            t.buf = Some(buf);
            t.stage = Stage::RangeWait;
            return;
        }
        let Some(src) = luns.luns.get(st.src) else {
            s.holds.release(id);
            t.buf = Some(buf);
            self.finish_copy(id, copy_target_gone());
            return;
        };
        job.reading = true;
        buf.set_len(job.chunk as usize * bs as usize);
        let offset = (st.src_lba + u64::from(job.done)) * u64::from(bs);
        self.disk.push_back(DiskRequest {
            task: id,
            slot: src.slot,
            offset,
            op: DiskOp::Read(buf),
        });
    }

    /// One read or write of a copy finished.
    pub(super) fn copy_done(&mut self, id: u32, result: i32, buf: Option<Buf>) {
        let Some(s) = self.session() else { return };
        let Some(luns) = s.luns.clone() else { return };
        let Some(t) = s.tasks.get_mut(&id) else {
            return;
        };
        let bs = t.block_size;
        let Some(job) = t.copy.as_mut() else { return };
        let ok = result >= 0 && buf.as_ref().is_some_and(|b| result == b.len() as i32);
        let (Some(buf), true) = (buf, ok) else {
            tracing::warn!(
                errno = -result,
                reading = job.reading,
                "EXTENDED COPY I/O failed"
            );
            let (asc, ascq) = if job.reading {
                (0x11, 0x00)
            } else {
                (0x0C, 0x00)
            };
            let sense = Sense::new(SenseKey::CopyAborted, asc, ascq);
            self.finish_copy(id, TaskStatus::check(sense));
            return;
        };
        let Some(st) = job.steps.get(job.step).copied() else {
            return;
        };
        if job.reading {
            job.reading = false;
            let Some(dst) = luns.luns.get(st.dst) else {
                t.buf = Some(buf);
                s.holds.release(id);
                self.finish_copy(id, copy_target_gone());
                return;
            };
            let offset = (st.dst_lba + u64::from(job.done)) * u64::from(bs);
            self.disk.push_back(DiskRequest {
                task: id,
                slot: dst.slot,
                offset,
                op: DiskOp::Write { buf, fua: false },
            });
            return;
        }
        job.done += job.chunk;
        job.bytes += u64::from(job.chunk) * u64::from(bs);
        t.buf = Some(buf);
        // The chunk is written: its blocks go back.
        s.holds.release(id);
        self.copy_next(id);
    }

    /// Ends copy task `id`: holds its result for RECEIVE COPY RESULTS and
    /// sends `status`.
    fn finish_copy(&mut self, id: u32, status: TaskStatus) {
        let Some(s) = self.session() else { return };
        let Some(t) = s.remove_task(id) else { return };
        if let Some(job) = t.copy.as_ref().filter(|j| j.hold) {
            let finished = job.step.min(job.steps.len());
            let result = CopyResult {
                list_id: job.list_id,
                ok: status.sense.is_none(),
                segments: u16::try_from(finished).unwrap_or(u16::MAX),
                bytes: job.bytes,
            };
            if let Some(n) = s.nexus.get_mut(t.lun_index) {
                n.record_copy(result);
            }
        }
        self.respond_status(t.itt, t.edtl, t.xfer, status, t.r2tsn);
    }
}
