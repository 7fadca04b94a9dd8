//! Disk steps of the session's media commands, and the block holds that make
//! COMPARE AND WRITE atomic.
//!
//! ```text
//! data complete ─> submit ─> Holds::acquire ─┬ conflict: RangeWait ... release ─> run_ready
//!                                            └ start_disk ─> DiskRequest ─> media_done ─┬ next step
//!                                                                                       └ status
//! ORWRITE / COMPARE AND WRITE: read the blocks ─> OR in / compare ─> write
//! WRITE SAME: zeros ─> punch hole (UNMAP, thin) or zero range; a pattern ─> replicated writes
//! UNMAP: one punch hole per range, in order
//! ```
//!
//! Two layers of holds make a COMPARE AND WRITE exclude every other write of
//! overlapping blocks from before its read until after its write, and wait
//! for overlapping writes already submitted:
//! - per session, exact spans kept in arrival order ([`Holds`]), so a task
//!   never overtakes a conflicting earlier one of its own session;
//! - per logical unit, across sessions and cores, the striped block locks of
//!   [`scsi::blocklock`], taken once the session span is held. A task
//!   blocked there waits (`Stage::RangeWait`) until a release wakes the
//!   cores and [`Connection::poll_shared`] retries it.

use std::collections::VecDeque;
use std::sync::Arc;

use trellis_datapath::{Buf, Extent};

use super::exec::{medium_error, write_error};
use super::task::{Purpose, Stage, Task, TaskStatus};
use super::{Connection, DiskOp, DiskRequest};
use crate::scsi::blocklock::{self, Exclusive};
use crate::scsi::{self, Completion, IoOp, IoRequest, LunShared, Sense, UnitChange};

/// Blocks one task covers, from submission to completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    pub(super) task: u32,
    pub(super) lun: usize,
    pub(super) start: u64,
    pub(super) end: u64,
    /// COMPARE AND WRITE: nothing else may touch the blocks meanwhile.
    pub(super) exclusive: bool,
}

impl Span {
    fn conflicts(&self, other: &Span) -> bool {
        self.lun == other.lun
            && self.start < other.end
            && other.start < self.end
            && (self.exclusive || other.exclusive)
    }
}

/// The spans of a session's writes in progress and of the tasks waiting for
/// them, in arrival order (a waiting task also blocks later conflicting ones,
/// so a COMPARE AND WRITE is not starved by a stream of writes), and the
/// unit-wide block locks the held spans took.
#[derive(Debug, Default)]
pub(super) struct Holds {
    held: Vec<Span>,
    waiting: VecDeque<Span>,
    /// Block locks taken on units' shared locks, one per task.
    locked: Vec<Locked>,
    /// Held spans still waiting for their unit's block locks, in order.
    blocked: Vec<Span>,
}

/// Block locks one task took on its logical unit.
#[derive(Debug)]
struct Locked {
    task: u32,
    lu: Arc<LunShared>,
    mask: u64,
    exclusive: bool,
}

impl Locked {
    fn release(&self) {
        if self.exclusive {
            self.lu.locks().release_exclusive(self.mask);
        } else {
            self.lu.locks().release_shared(self.mask);
        }
    }
}

impl Drop for Holds {
    /// A session that ends with tasks still holding blocks lets them go.
    fn drop(&mut self) {
        for l in self.locked.drain(..) {
            l.release();
        }
    }
}

impl Holds {
    /// Holds `span` if nothing held or queued conflicts; else queues it.
    fn acquire(&mut self, span: Span) -> bool {
        let busy = self
            .held
            .iter()
            .chain(self.waiting.iter())
            .any(|h| h.conflicts(&span));
        if busy {
            self.waiting.push_back(span);
        } else {
            self.held.push(span);
        }
        !busy
    }

    /// Takes the unit-wide block locks of held `span` on `lu`: shared for a
    /// write, exclusive and drained for a COMPARE AND WRITE. False (and the
    /// span is queued as blocked) while another session's task is in the way.
    pub(super) fn lock(&mut self, span: Span, lu: &Arc<LunShared>) -> bool {
        let mask = blocklock::mask(span.start, span.end);
        let have = self.locked.iter().any(|l| l.task == span.task);
        let ok = if span.exclusive {
            let taken = have || lu.locks().try_exclusive(mask) == Exclusive::Taken;
            if taken && !have {
                self.locked.push(Locked {
                    task: span.task,
                    lu: Arc::clone(lu),
                    mask,
                    exclusive: true,
                });
            }
            taken && lu.locks().drained(mask)
        } else {
            let taken = have || lu.locks().try_shared(mask);
            if taken && !have {
                self.locked.push(Locked {
                    task: span.task,
                    lu: Arc::clone(lu),
                    mask,
                    exclusive: false,
                });
            }
            taken
        };
        if !ok && !self.blocked.iter().any(|b| b.task == span.task) {
            self.blocked.push(span);
        }
        ok
    }

    /// Drops whatever `task` held or waited for.
    pub(super) fn release(&mut self, task: u32) {
        self.held.retain(|h| h.task != task);
        self.waiting.retain(|h| h.task != task);
        self.blocked.retain(|h| h.task != task);
        if let Some(i) = self.locked.iter().position(|l| l.task == task) {
            self.locked.swap_remove(i).release();
        }
    }

    /// Whether held spans wait for other sessions' block locks.
    pub(super) fn blocked(&self) -> bool {
        !self.blocked.is_empty()
    }

    /// Waiting tasks that may run now, in arrival order; they become held.
    fn ready(&mut self) -> Vec<Span> {
        let mut run = Vec::new();
        let mut still = VecDeque::new();
        for w in std::mem::take(&mut self.waiting) {
            if self
                .held
                .iter()
                .chain(still.iter())
                .any(|h| h.conflicts(&w))
            {
                still.push_back(w);
            } else {
                self.held.push(w);
                run.push(w);
            }
        }
        self.waiting = still;
        run
    }
}

/// The span a task must hold, if it writes.
fn span_of(t: &Task) -> Option<Span> {
    let (start, end, exclusive) = match t.purpose {
        Purpose::Params | Purpose::Copy => return None,
        Purpose::Unmap => {
            let start = t.ranges.iter().map(|r| r.0).min()?;
            let end = t.ranges.iter().map(|r| r.0 + u64::from(r.1)).max()?;
            (start, end, false)
        }
        Purpose::Io(req) if req.modifies() => (
            req.lba,
            req.lba + u64::from(req.blocks),
            req.op == IoOp::CompareAndWrite,
        ),
        Purpose::Io(_) => return None,
    };
    Some(Span {
        task: t.id,
        lun: t.lun_index,
        start,
        end,
        exclusive,
    })
}

/// Size of the WRITE SAME buffer: the pattern replicated over as much of the
/// range as the largest pool buffer holds.
pub(super) fn same_fill_len(req: &IoRequest, block_size: u32, max_buf: usize) -> usize {
    let bs = block_size.max(1) as usize;
    let total = usize::try_from(u64::from(req.blocks) * bs as u64).unwrap_or(usize::MAX);
    total.min(max_buf / bs * bs).max(bs)
}

impl Connection {
    /// All data-out is in: take the task's blocks, then start its I/O.
    pub(super) fn submit(&mut self, id: u32) {
        if self.forward_caw(id) {
            return;
        }
        let Some(s) = self.session() else { return };
        let Some(t) = s.tasks.get_mut(&id) else {
            return;
        };
        if let Some(span) = span_of(t) {
            if !s.holds.acquire(span) {
                t.stage = Stage::RangeWait;
                return;
            }
            self.lock_then_start(span);
            return;
        }
        t.stage = Stage::InFlight;
        self.start_disk(id);
    }

    /// A COMPARE AND WRITE of a cluster's unit whose owner is another
    /// member goes to it whole (through the cluster), with its data; true
    /// when task `id` went.
    fn forward_caw(&mut self, id: u32) -> bool {
        let Some(s) = self.session() else {
            return false;
        };
        let Some(t) = s.tasks.get_mut(&id) else {
            return false;
        };
        let Purpose::Io(req) = t.purpose else {
            return false;
        };
        if req.op != IoOp::CompareAndWrite {
            return false;
        }
        let lun_index = t.lun_index;
        let elsewhere = s
            .lun_table()
            .and_then(|l| l.luns.get(lun_index).map(|e| e.shared.caw_elsewhere()));
        if elsewhere != Some(true) {
            return false;
        }
        let Some(t) = s.tasks.get_mut(&id) else {
            return false;
        };
        let len = (u64::from(req.blocks) * u64::from(t.block_size) * 2) as usize;
        let data = match t.buf.take() {
            Some(mut b) => {
                b.set_len(len.min(b.capacity()));
                b.to_vec()
            }
            None => return false,
        };
        t.verify = None;
        self.task_to_cluster(
            id,
            UnitChange::CompareAndWrite {
                lba: req.lba,
                blocks: req.blocks,
                fua: req.fua,
                data,
            },
        );
        true
    }

    /// The task of held `span` takes its unit's block locks and starts, or
    /// waits for them.
    fn lock_then_start(&mut self, span: Span) {
        let Some(s) = self.session() else { return };
        let lu = s
            .lun_table()
            .and_then(|l| l.luns.get(span.lun).map(|e| Arc::clone(&e.shared)));
        let locked = match &lu {
            Some(lu) => s.holds.lock(span, lu),
            None => true,
        };
        let Some(t) = s.tasks.get_mut(&span.task) else {
            return;
        };
        if !locked {
            t.stage = Stage::RangeWait;
        } else if t.purpose == Purpose::Copy {
            // An EXTENDED COPY chunk whose destination blocks are now held.
            t.stage = Stage::InFlight;
            self.copy_next(span.task);
        } else {
            t.stage = Stage::InFlight;
            self.start_disk(span.task);
        }
    }

    /// Starts tasks whose blocks became free: in this session, or (after a
    /// wake-up) on their unit.
    pub(super) fn run_ready(&mut self) {
        let Some(s) = self.session() else { return };
        let mut spans = std::mem::take(&mut s.holds.blocked);
        spans.extend(s.holds.ready());
        for span in spans {
            self.lock_then_start(span);
        }
    }

    /// Queues the task's first disk request.
    fn start_disk(&mut self, id: u32) {
        let Some(s) = self.session() else { return };
        let Some(t) = s.tasks.get_mut(&id) else {
            return;
        };
        let bs = u64::from(t.block_size);
        let mut offset = t.offset();
        let op = match t.purpose {
            Purpose::Params | Purpose::Copy => return,
            Purpose::Unmap => {
                let Some(&(lba, blocks)) = t.ranges.first() else {
                    return;
                };
                offset = lba * bs;
                DiskOp::Unmap {
                    len: u64::from(blocks) * bs,
                }
            }
            Purpose::Io(req) => {
                let data_len = (t.want / t.block_size * t.block_size) as usize;
                match req.op {
                    IoOp::Read => {
                        let Some(mut buf) = t.buf.take() else { return };
                        buf.set_len(t.xfer as usize);
                        DiskOp::Read(buf)
                    }
                    IoOp::Verify { .. } | IoOp::OrWrite | IoOp::CompareAndWrite => {
                        // Read the medium into the second buffer first.
                        let read_len = if req.op == IoOp::CompareAndWrite {
                            data_len / 2
                        } else {
                            data_len
                        };
                        let (Some(data), Some(mut medium)) = (t.buf.as_mut(), t.verify.take())
                        else {
                            return;
                        };
                        data.set_len(data_len);
                        medium.set_len(read_len);
                        t.stage = Stage::Verifying;
                        DiskOp::Read(medium)
                    }
                    IoOp::Write | IoOp::WriteVerify => {
                        let Some(mut buf) = t.buf.take() else { return };
                        buf.set_len(data_len);
                        DiskOp::Write {
                            buf,
                            fua: req.fua || req.op == IoOp::WriteVerify,
                        }
                    }
                    IoOp::WriteAtomic => {
                        let Some(mut buf) = t.buf.take() else { return };
                        buf.set_len(data_len);
                        DiskOp::WriteAtomic { buf, fua: req.fua }
                    }
                    IoOp::Flush { .. } => {
                        offset = 0;
                        DiskOp::Flush
                    }
                    IoOp::Prefetch { .. } => DiskOp::Prefetch {
                        len: u64::from(req.blocks) * bs,
                    },
                    IoOp::LbaStatus { .. } => DiskOp::Extent,
                    IoOp::WriteSame { unmap, ndob } => {
                        let Some((op, at)) = same_step(t, &req, unmap, ndob) else {
                            return;
                        };
                        offset = at;
                        op
                    }
                }
            }
        };
        let slot = t.slot;
        self.disk.push_back(DiskRequest {
            task: id,
            slot,
            offset,
            op,
        });
    }

    /// One step of a PRE-FETCH, WRITE SAME, ORWRITE, COMPARE AND WRITE or
    /// GET LBA STATUS finished.
    pub(super) fn media_done(&mut self, id: u32, result: i32, buf: Option<Buf>) {
        let Some(s) = self.session() else { return };
        let Some(t) = s.tasks.get_mut(&id) else {
            return;
        };
        let Some(req) = t.io() else { return };
        let ok = result >= 0 && buf.as_ref().is_none_or(|b| result == b.len() as i32);
        if result < 0 && result != -libc::ESTALE {
            tracing::warn!(errno = -result, op = ?req.op, lba = req.lba, "disk I/O failed");
        }
        let status = match (req.op, t.stage) {
            (IoOp::Prefetch { .. }, _) => {
                // Advisory: a failed hint only means nothing was cached.
                let cached = ok
                    && s.luns
                        .as_ref()
                        .is_some_and(|l| l.luns[t.lun_index].dev.write_cache);
                let Some(t) = s.remove_task(id) else { return };
                self.respond_completion(t.itt, t.lun, t.edtl, scsi::prefetch_status(cached), 0);
                return;
            }
            (IoOp::WriteSame { .. }, _)
                if ok && t.done < u64::from(req.blocks) * u64::from(t.block_size) =>
            {
                t.buf = buf;
                self.start_disk(id);
                return;
            }
            (IoOp::OrWrite | IoOp::CompareAndWrite, Stage::Verifying) => {
                let (Some(mut medium), Some(data)) = (buf.filter(|_| ok), t.buf.as_ref()) else {
                    self.finish(id, TaskStatus::check(medium_error(true)));
                    return;
                };
                if req.op == IoOp::OrWrite {
                    for (m, d) in medium.iter_mut().zip(data.iter()) {
                        *m |= d;
                    }
                } else {
                    let half = medium.len();
                    let (compare, write) = data.split_at(half.min(data.len()));
                    if let Some(pos) = medium.iter().zip(compare).position(|(a, b)| a != b) {
                        self.finish(id, TaskStatus::check(Sense::miscompare(pos as u64)));
                        return;
                    }
                    medium.copy_from_slice(&write[..half]);
                }
                t.buf = None;
                t.stage = Stage::InFlight;
                let (slot, offset) = (t.slot, t.offset());
                self.disk.push_back(DiskRequest {
                    task: id,
                    slot,
                    offset,
                    op: DiskOp::Write {
                        buf: medium,
                        fua: req.fua,
                    },
                });
                return;
            }
            _ if ok => TaskStatus::good(),
            _ => TaskStatus::check(write_error(result)),
        };
        self.finish(id, status);
    }

    /// One UNMAP range was deallocated: the next, or GOOD.
    pub(super) fn unmap_done(&mut self, id: u32, result: i32) {
        let Some(t) = self.session().and_then(|s| s.tasks.get_mut(&id)) else {
            return;
        };
        if result < 0 {
            tracing::warn!(errno = -result, "unmap failed");
            self.finish(id, TaskStatus::check(write_error(result)));
            return;
        }
        t.ranges.remove(0);
        if t.ranges.is_empty() {
            self.finish(id, TaskStatus::good());
        } else {
            self.start_disk(id);
        }
    }

    /// The driver looked up the allocation extent for a GET LBA STATUS.
    pub fn extent_done(
        &mut self,
        id: u32,
        extent: std::io::Result<Extent>,
        pool: &trellis_datapath::BufPool,
    ) {
        self.finish_extent(id, extent);
        self.after_disk(id, pool);
    }

    fn finish_extent(&mut self, id: u32, extent: std::io::Result<Extent>) {
        let Some(s) = self.session() else { return };
        let Some(t) = s.remove_task(id) else { return };
        let (Some(req), false) = (t.io(), t.aborted) else {
            return;
        };
        let IoOp::LbaStatus { alloc } = req.op else {
            return;
        };
        let Some(luns) = s.luns.clone() else { return };
        let c = match extent {
            Ok(e) => scsi::lba_status(&luns.luns[t.lun_index].dev, req.lba, e.mapped, e.len, alloc),
            Err(e) => {
                tracing::warn!(error = %e, lba = req.lba, "cannot find the allocation extent");
                Completion::check(medium_error(true))
            }
        };
        self.respond_completion(t.itt, t.lun, t.edtl, c, 0);
    }

    /// Ends a task with `status`.
    fn finish(&mut self, id: u32, status: TaskStatus) {
        let Some(s) = self.session() else { return };
        let Some(t) = s.remove_task(id) else { return };
        self.respond_status(t.itt, t.edtl, t.xfer, status, t.r2tsn);
    }
}

/// The next WRITE SAME request and its offset: the whole range as a punch
/// hole or zero range when the block is zeros, else the next chunk of the
/// replicated pattern.
fn same_step(t: &mut Task, req: &IoRequest, unmap: bool, ndob: bool) -> Option<(DiskOp, u64)> {
    let bs = t.block_size as usize;
    let total = u64::from(req.blocks) * bs as u64;
    let start = t.offset();
    if t.done == 0 {
        let zeros = ndob
            || t.buf
                .as_ref()
                .is_none_or(|b| b[..bs.min(b.len())].iter().all(|x| *x == 0));
        if zeros {
            t.done = total;
            t.buf = None;
            // The SCSI layer allows UNMAP only on thin devices.
            let op = if unmap {
                DiskOp::Unmap { len: total }
            } else {
                DiskOp::WriteZeroes { len: total }
            };
            return Some((op, start));
        }
        let buf = t.buf.as_mut()?;
        let fill = usize::try_from(total)
            .unwrap_or(usize::MAX)
            .min(buf.capacity() / bs * bs);
        buf.set_len(fill);
        for i in 1..fill / bs {
            buf.copy_within(0..bs, i * bs);
        }
    }
    let mut buf = t.buf.take()?;
    let fill = usize::try_from(total)
        .unwrap_or(usize::MAX)
        .min(buf.capacity() / bs * bs);
    let chunk = (total - t.done).min(fill as u64);
    buf.set_len(chunk as usize);
    let at = start + t.done;
    t.done += chunk;
    Some((DiskOp::Write { buf, fua: false }, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(task: u32, start: u64, end: u64, exclusive: bool) -> Span {
        Span {
            task,
            lun: 0,
            start,
            end,
            exclusive,
        }
    }

    #[test]
    fn conflicts_table() {
        let table = [
            (span(1, 0, 8, true), span(2, 7, 9, false), true),
            (span(1, 0, 8, true), span(2, 8, 9, false), false),
            (span(1, 0, 8, false), span(2, 0, 8, false), false),
            (span(1, 0, 8, false), span(2, 4, 5, true), true),
            (
                span(1, 0, 8, true),
                Span {
                    lun: 1,
                    ..span(2, 0, 8, true)
                },
                false,
            ),
        ];
        for (i, (a, b, want)) in table.iter().enumerate() {
            assert_eq!(a.conflicts(b), *want, "row {i}");
            assert_eq!(b.conflicts(a), *want, "row {i} reversed");
        }
    }

    #[test]
    fn holds_queue_in_order() {
        let mut h = Holds::default();
        assert!(h.acquire(span(1, 0, 8, false)));
        assert!(
            h.acquire(span(2, 0, 8, false)),
            "writes do not exclude writes"
        );
        assert!(!h.acquire(span(3, 4, 5, true)), "CAW waits for writes");
        assert!(
            !h.acquire(span(4, 4, 6, false)),
            "a later write waits behind the CAW"
        );
        assert!(h.acquire(span(5, 100, 101, false)));
        let ready = |h: &mut Holds| h.ready().iter().map(|s| s.task).collect::<Vec<_>>();
        assert_eq!(ready(&mut h), Vec::<u32>::new());
        h.release(1);
        assert_eq!(ready(&mut h), Vec::<u32>::new());
        h.release(2);
        assert_eq!(ready(&mut h), vec![3]);
        h.release(3);
        assert_eq!(ready(&mut h), vec![4]);
        // Releasing a waiting task forgets it.
        assert!(!h.acquire(span(6, 5, 6, true)));
        h.release(6);
        h.release(4);
        assert_eq!(ready(&mut h), Vec::<u32>::new());
        assert!(h.acquire(span(7, 0, 1, true)));
    }

    #[test]
    fn fill_len() {
        let req = |blocks| IoRequest {
            op: IoOp::WriteSame {
                unmap: false,
                ndob: false,
            },
            lba: 0,
            blocks,
            fua: false,
        };
        assert_eq!(same_fill_len(&req(1), 512, 1 << 20), 512);
        assert_eq!(same_fill_len(&req(100), 512, 1 << 20), 51200);
        assert_eq!(same_fill_len(&req(1 << 20), 512, 1 << 20), 1 << 20);
        assert_eq!(same_fill_len(&req(0), 4096, 1 << 20), 4096);
    }
}
