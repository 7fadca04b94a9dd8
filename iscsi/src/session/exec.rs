//! Executing SCSI commands: dispatch, data-out collection with R2T, disk
//! requests, Data-In and status (task management is in `tmf.rs`).

use trellis_datapath::{Buf, BufPool};

use super::task::{residual, Purpose, R2tState, Stage, Task, TaskStatus};
use super::{Connection, DiskOp, DiskRequest, LunTable, Session, SharedOp};
use crate::pdu::{DataIn, DataOut, R2t, RawPdu, ScsiCommand, ScsiResponse, BHS_LEN, RESERVED_TAG};
use crate::scsi::{
    self, Action, Completion, IoOp, IoRequest, PrRequest, Sense, Status, UnitChange,
};
use std::sync::Arc;

/// Where Data-In payload comes from.
#[derive(Debug, Clone, Copy)]
enum DataSrc<'a> {
    /// A body buffer of the outbox (read data, sent without a copy).
    Body(u16),
    /// Bytes copied into the outbox (small SCSI responses).
    Copy(&'a [u8]),
}

/// Sense for a failed disk read / write.
pub(super) fn medium_error(read: bool) -> Sense {
    if read {
        Sense::medium_error_read()
    } else {
        Sense::medium_error_write()
    }
}

/// The sense of a write that failed with `result` (-errno): a write the
/// target refused to submit past its write fence (`-ESTALE`: this member's
/// lease ran out) is NOT READY, ASYMMETRIC ACCESS STATE TRANSITION, which
/// hosts retry on another path; anything else a medium error.
pub(super) fn write_error(result: i32) -> Sense {
    if result == -libc::ESTALE {
        Sense::not_ready_alua_transitioning()
    } else {
        medium_error(false)
    }
}

impl Session {
    pub(super) fn lun_table(&self) -> Option<std::rc::Rc<LunTable>> {
        self.luns.clone()
    }

    fn new_task(
        &mut self,
        cmd: &ScsiCommand,
        lun_index: usize,
        luns: &LunTable,
        purpose: Purpose,
        xfer: u32,
    ) -> u32 {
        let id = self.next_task_id();
        let entry = &luns.luns[lun_index];
        let mut task = Task {
            itt: cmd.itt,
            id,
            lun: cmd.lun,
            lun_index,
            slot: entry.slot,
            block_size: entry.dev.block_size,
            cmdsn: cmd.cmdsn,
            edtl: cmd.expected_data_transfer_length,
            purpose,
            xfer,
            want: 0,
            stage: Stage::NeedBuffer,
            buf: None,
            params: Vec::new(),
            received: 0,
            unsolicited_datasn: 0,
            unsolicited_left: 0,
            r2t_offset: 0,
            r2tsn: 0,
            r2ts: Vec::new(),
            aborted: false,
            held: Vec::new(),
            cdb: cmd.cdb,
            verify: None,
            ranges: Vec::new(),
            done: 0,
            copy: None,
            sanitize: None,
        };
        if task.is_write() {
            task.want = xfer.min(cmd.expected_data_transfer_length);
        }
        self.itts.insert(cmd.itt, id);
        self.tasks.insert(id, task);
        id
    }

    pub(super) fn remove_task(&mut self, id: u32) -> Option<Task> {
        self.holds.release(id);
        let t = self.tasks.remove(&id)?;
        if self.itts.get(&t.itt) == Some(&id) {
            self.itts.remove(&t.itt);
        }
        Some(t)
    }
}

impl Connection {
    /// A SCSI Command PDU. False when it must wait for buffers.
    pub(super) fn scsi_command(
        &mut self,
        cmd: &ScsiCommand,
        raw: RawPdu<'_>,
        pool: &BufPool,
    ) -> bool {
        let Some(s) = self.session() else { return true };
        let Some(luns) = s.lun_table() else {
            // SCSI commands have no place in a discovery session.
            self.reject(0x04, raw.bhs);
            return true;
        };
        if s.itts.contains_key(&cmd.itt) {
            self.reject(0x09, raw.bhs);
            return true;
        }
        let found = luns.find(cmd.lun);
        if let Some(i) = found {
            if s.catch_up(&luns, i) {
                self.run_ready();
            }
        }
        let Some(s) = self.session() else { return true };
        let command = scsi::Command {
            cdb: &cmd.cdb,
            lun: cmd.lun,
            expected_len: cmd.expected_data_transfer_length,
            read: cmd.read,
            write: cmd.write,
        };
        let (lun_index, action) = match found {
            None => (
                None,
                Action::Complete(scsi::dispatch_unmapped(&command, &luns.ids)),
            ),
            Some(i) => {
                let entry = &luns.luns[i];
                let action = scsi::sanitize_gate(&command, &entry.sanitize, &s.nexus[i])
                    .unwrap_or_else(|| {
                        scsi::dispatch(
                            &command,
                            &entry.dev,
                            &entry.shared,
                            &luns.port,
                            &luns.ids,
                            &mut s.nexus[i],
                        )
                    });
                (Some(i), action)
            }
        };
        match (action, lun_index) {
            (Action::Complete(c), _) => {
                self.complete_now(cmd, c);
                true
            }
            (Action::Io(req), Some(i)) => self.start_io(cmd, raw.data, i, &luns, req, pool),
            (Action::DataOut { len }, Some(i)) => {
                let Some(s) = self.session() else { return true };
                let id = s.new_task(cmd, i, &luns, Purpose::Params, len);
                if let Some(t) = s.tasks.get_mut(&id) {
                    t.stage = Stage::Collecting;
                    t.params = vec![0; t.want as usize];
                }
                self.accept_immediate(id, cmd, raw.data);
                self.advance_task(id);
                true
            }
            (action @ (Action::Reservation(_) | Action::Shared(_)), Some(i))
                if luns.luns[i].shared.cluster().is_some() =>
            {
                // RESERVE/RELEASE of a cluster's unit: decided by the
                // cluster, the task waiting like a disk step.
                let Some(s) = self.session() else { return true };
                let id = s.new_task(cmd, i, &luns, Purpose::Params, 0);
                let change = match action {
                    Action::Reservation(scsi::ReserveOp::Reserve) => UnitChange::Reserve,
                    Action::Reservation(scsi::ReserveOp::Release) => UnitChange::Release,
                    Action::Shared(change) => change,
                    _ => return true,
                };
                self.task_to_cluster(id, change);
                true
            }
            (Action::Reservation(op), Some(i)) => {
                let Some(s) = self.session() else { return true };
                let c = scsi::reserve_release(op, &luns.luns[i].shared, &s.nexus[i]);
                self.complete_now(cmd, c);
                true
            }
            (Action::PersistentReserve(req), Some(i)) => {
                let Some(s) = self.session() else { return true };
                let c = scsi::persistent_reserve(&req, &luns.luns[i].shared, &mut s.nexus[i]);
                self.complete_now(cmd, c);
                true
            }
            (Action::Shared(_), Some(_)) => {
                // Only a cluster's unit asks for one.
                self.complete_now(cmd, Completion::check(Sense::internal_target_failure()));
                true
            }
            (Action::ExtendedCopy(_), Some(_)) => {
                // Only a parameter list turns into a copy.
                self.complete_now(cmd, Completion::check(Sense::internal_target_failure()));
                true
            }
            (Action::Sanitize(req), Some(i)) => {
                let Some(s) = self.session() else { return true };
                let id = s.new_task(cmd, i, &luns, Purpose::Params, 0);
                self.start_sanitize(id, req);
                true
            }
            (Action::Unmap(ranges), Some(i)) => {
                let Some(s) = self.session() else { return true };
                let id = s.new_task(cmd, i, &luns, Purpose::Unmap, 0);
                if let Some(t) = s.tasks.get_mut(&id) {
                    t.ranges = ranges;
                }
                self.submit(id);
                true
            }
            (_, None) => {
                self.complete_now(cmd, Completion::check(Sense::lun_not_supported()));
                true
            }
        }
    }

    fn start_io(
        &mut self,
        cmd: &ScsiCommand,
        data: &[u8],
        lun_index: usize,
        luns: &LunTable,
        req: IoRequest,
        pool: &BufPool,
    ) -> bool {
        let bs = luns.luns[lun_index].dev.block_size;
        let xfer = u32::try_from(req.data_len(bs)).unwrap_or(u32::MAX);
        let edtl = cmd.expected_data_transfer_length;
        let is_write = req.is_write();
        if xfer as usize > pool.max_buf() {
            self.complete_now(cmd, Completion::check(Sense::invalid_field_in_cdb(7, None)));
            return true;
        }
        // No data phase: the I/O starts now.
        let no_data = matches!(
            req.op,
            IoOp::Flush { .. }
                | IoOp::Prefetch { .. }
                | IoOp::LbaStatus { .. }
                | IoOp::WriteSame { ndob: true, .. }
        );
        // Nothing can move: answer with the residual and do no I/O.
        let moves = if is_write {
            edtl.min(xfer) / bs * bs
        } else {
            edtl.min(xfer)
        };
        if !no_data && moves == 0 {
            self.respond_status(cmd.itt, edtl, xfer, TaskStatus::good(), 0);
            return true;
        }
        let Some(s) = self.session() else { return true };
        let id = s.new_task(cmd, lun_index, luns, Purpose::Io(req), xfer);
        if no_data {
            self.submit(id);
            return true;
        }
        if is_write {
            self.accept_immediate(id, cmd, data);
        }
        self.try_start(id, pool);
        true
    }

    /// Takes immediate data and sets up the unsolicited window.
    fn accept_immediate(&mut self, id: u32, cmd: &ScsiCommand, data: &[u8]) {
        let first_burst = self.session().map_or(0, |s| s.params.first_burst_length);
        let initial_r2t = self.session().is_none_or(|s| s.params.initial_r2t);
        let Some(s) = self.session() else { return };
        let Some(t) = s.tasks.get_mut(&id) else {
            return;
        };
        let take = data.len().min(t.want as usize);
        match (&mut t.buf, t.purpose) {
            (_, Purpose::Params) => t.params[..take].copy_from_slice(&data[..take]),
            (Some(b), _) => b[..take].copy_from_slice(&data[..take]),
            (None, _) => t.held.extend_from_slice(&data[..take]),
        }
        t.received = take as u32;
        let unsolicited_end = if initial_r2t || cmd.final_bit {
            data.len() as u32
        } else {
            first_burst.min(t.edtl)
        };
        t.unsolicited_left = unsolicited_end.saturating_sub(data.len() as u32);
        t.r2t_offset = unsolicited_end.min(t.want).max(t.received);
    }

    /// Gives a waiting task its buffer(s) and moves it on; false if the pool
    /// is empty.
    fn try_start(&mut self, id: u32, pool: &BufPool) -> bool {
        let Some(s) = self.session() else { return true };
        let Some(t) = s.tasks.get_mut(&id) else {
            return true;
        };
        if t.stage != Stage::NeedBuffer {
            return true;
        }
        if t.purpose == Purpose::Copy {
            return self.copy_buffer(id, pool);
        }
        if t.sanitize.is_some() {
            return self.sanitize_buffer(id, pool);
        }
        // The data buffer, and the one the medium is read into (VERIFY,
        // ORWRITE: all blocks; COMPARE AND WRITE: half the data-out).
        let (first, second) = match t.io() {
            Some(
                req @ IoRequest {
                    op: IoOp::WriteSame { .. },
                    ..
                },
            ) => (
                super::media::same_fill_len(&req, t.block_size, pool.max_buf()),
                None,
            ),
            Some(IoRequest {
                op: IoOp::Verify { .. } | IoOp::OrWrite,
                ..
            }) => (t.xfer as usize, Some(t.xfer as usize)),
            Some(IoRequest {
                op: IoOp::CompareAndWrite,
                ..
            }) => (t.xfer as usize, Some(t.xfer as usize / 2)),
            _ => (t.xfer as usize, None),
        };
        let Some(mut buf) = pool.get(first) else {
            if !s.waiting.contains(&id) {
                s.waiting.push_back(id);
            }
            return false;
        };
        buf.set_len(t.xfer as usize);
        let second = if let Some(len) = second {
            match pool.get(len) {
                Some(b) => Some(b),
                None => {
                    if !s.waiting.contains(&id) {
                        s.waiting.push_back(id);
                    }
                    return false;
                }
            }
        } else {
            None
        };
        if !t.held.is_empty() {
            let n = t.held.len().min(buf.len());
            buf[..n].copy_from_slice(&t.held[..n]);
            t.held = Vec::new();
        }
        t.buf = Some(buf);
        if let Some(b) = second {
            t.verify = Some(b);
        }
        t.stage = Stage::Collecting;
        self.advance_task(id);
        true
    }

    /// Starts tasks that wait for buffers, in arrival order.
    pub(super) fn pump(&mut self, pool: &BufPool) {
        while let Some(id) = self.session().and_then(|s| s.waiting.front().copied()) {
            if let Some(s) = self.session() {
                s.waiting.pop_front();
            }
            if !self.try_start(id, pool) {
                break;
            }
        }
    }

    /// Sends R2Ts or submits the I/O, as the task's data allows.
    fn advance_task(&mut self, id: u32) {
        let statsn = self.statsn;
        let Some(s) = self.session() else { return };
        let max_r2t = s.params.max_outstanding_r2t.max(1) as usize;
        let max_burst = s.params.max_burst_length.max(512);
        let (exp, max) = (s.window.exp_cmdsn(), s.window.max_cmdsn());
        let mut r2ts = Vec::new();
        let Some(t) = s.tasks.get_mut(&id) else {
            return;
        };
        if t.stage != Stage::Collecting {
            return;
        }
        if t.data_complete() && t.r2ts.is_empty() && t.unsolicited_left == 0 {
            t.stage = Stage::InFlight;
            self.data_complete(id);
            return;
        }
        if t.unsolicited_left > 0 {
            return;
        }
        while t.r2ts.len() < max_r2t && t.r2t_offset < t.want {
            let len = max_burst.min(t.want - t.r2t_offset);
            let ttt = s.next_ttt;
            s.next_ttt = s.next_ttt.wrapping_add(1).max(1);
            if s.next_ttt == RESERVED_TAG {
                s.next_ttt = 1;
            }
            let r = R2tState {
                ttt,
                offset: t.r2t_offset,
                len,
                received: 0,
                next_datasn: 0,
            };
            r2ts.push(R2t {
                total_ahs_len: 0,
                data_segment_len: 0,
                lun: t.lun,
                itt: t.itt,
                ttt,
                statsn,
                exp_cmdsn: exp,
                max_cmdsn: max,
                r2tsn: t.r2tsn,
                buffer_offset: r.offset,
                desired_data_transfer_length: len,
            });
            t.r2tsn += 1;
            t.r2t_offset += len;
            t.r2ts.push(r);
        }
        for r in r2ts {
            let mut bhs = [0u8; BHS_LEN];
            r.encode(&mut bhs);
            self.out.push(&bhs, &[]);
        }
    }

    /// A Data-Out PDU.
    pub(super) fn data_out(&mut self, d: &DataOut, data: &[u8], _pool: &BufPool) {
        let Some(s) = self.session() else { return };
        let Some(&id) = s.itts.get(&d.itt) else {
            // Data for a task that is gone (aborted or failed early): drop it.
            return;
        };
        let Some(t) = s.tasks.get_mut(&id) else {
            return;
        };
        let len = data.len() as u32;
        let offset = d.buffer_offset;
        let fault = if d.ttt == RESERVED_TAG {
            if d.data_sn != t.unsolicited_datasn {
                Some((
                    format!(
                        "unsolicited DataSN {} (expected {})",
                        d.data_sn, t.unsolicited_datasn
                    ),
                    Sense::data_phase_error(),
                ))
            } else if offset.checked_add(len).is_none_or(|end| end > t.edtl) {
                Some((
                    format!("unsolicited buffer offset {offset}+{len} outside the transfer"),
                    Sense::data_offset_error(),
                ))
            } else if len > t.unsolicited_left {
                Some((
                    "unsolicited data beyond FirstBurstLength".to_owned(),
                    Sense::unexpected_unsolicited_data(),
                ))
            } else {
                t.unsolicited_datasn += 1;
                t.unsolicited_left -= len;
                if d.final_bit {
                    t.unsolicited_left = 0;
                }
                None
            }
        } else if let Some(r) = t.r2ts.iter_mut().find(|r| r.ttt == d.ttt) {
            if d.data_sn != r.next_datasn {
                Some((
                    format!("DataSN {} (expected {})", d.data_sn, r.next_datasn),
                    Sense::data_phase_error(),
                ))
            } else if offset < r.offset || offset.saturating_add(len) > r.offset + r.len {
                Some((
                    format!("buffer offset {offset}+{len} outside the R2T"),
                    Sense::data_offset_error(),
                ))
            } else {
                r.next_datasn += 1;
                r.received += len;
                None
            }
        } else {
            Some((
                format!("Data-Out with unknown TTT {:#x}", d.ttt),
                Sense::invalid_transfer_tag(),
            ))
        };
        if let Some((f, sense)) = fault {
            // A sequence error ends the task, not the connection (ERL 0 has no
            // recovery R2T): CHECK CONDITION now; later Data-Out of the task
            // finds no task and is dropped.
            tracing::warn!(itt = d.itt, "{f}; terminating the command");
            if !t.in_flight() {
                s.waiting.retain(|w| *w != id);
                if let Some(t) = s.remove_task(id) {
                    self.respond_status(t.itt, t.edtl, t.xfer, TaskStatus::check(sense), t.r2tsn);
                }
            }
            return;
        }
        // Copy what falls inside the transfer; ignore an underflow's excess.
        let end = offset.saturating_add(len).min(t.want);
        if offset < end {
            let src = &data[..(end - offset) as usize];
            match (&mut t.buf, t.purpose) {
                (_, Purpose::Params) => {
                    t.params[offset as usize..end as usize].copy_from_slice(src)
                }
                (Some(b), _) => b[offset as usize..end as usize].copy_from_slice(src),
                (None, _) => {
                    if t.held.len() == offset as usize {
                        t.held.extend_from_slice(src);
                    }
                }
            }
            t.received += end - offset;
        }
        t.r2ts.retain(|r| r.received < r.len);
        self.advance_task(id);
    }

    /// A task has its buffer and all its data-out: submit its I/O (or, for a
    /// parameter list, finish it or start what it asks for).
    fn data_complete(&mut self, id: u32) {
        let Some(s) = self.session() else { return };
        let Some(t) = s.tasks.get_mut(&id) else {
            return;
        };
        if t.purpose != Purpose::Params {
            self.submit(id);
            return;
        }
        let Some(luns) = s.luns.clone() else { return };
        let entry = &luns.luns[t.lun_index];
        let action = scsi::dispatch_data_out(
            &t.cdb,
            &t.params,
            &entry.dev,
            &entry.shared,
            &mut s.nexus[t.lun_index],
        );
        match action {
            Action::Unmap(ranges) => {
                t.purpose = Purpose::Unmap;
                t.params = Vec::new();
                t.ranges = ranges;
                self.submit(id);
            }
            Action::ExtendedCopy(list) => self.start_copy(id, list),
            Action::Sanitize(req) => self.start_sanitize(id, req),
            action @ (Action::PersistentReserve(PrRequest::Out { .. }) | Action::Shared(_))
                if entry.shared.cluster().is_some() =>
            {
                // Decided by the cluster; the task waits like a disk step.
                t.params = Vec::new();
                let change = match action {
                    Action::PersistentReserve(req) => UnitChange::Prout(req),
                    Action::Shared(change) => change,
                    _ => return,
                };
                self.task_to_cluster(id, change);
            }
            other => {
                let c = match other {
                    Action::Complete(c) => c,
                    Action::PersistentReserve(req) => scsi::persistent_reserve(
                        &req,
                        &luns.luns[t.lun_index].shared,
                        &mut s.nexus[t.lun_index],
                    ),
                    _ => Completion::check(Sense::internal_target_failure()),
                };
                let Some(t) = s.remove_task(id) else { return };
                self.respond_completion(t.itt, t.lun, t.edtl, c, 0);
            }
        }
    }

    /// Hands `op` to the cluster for task `id` (or, for a task management
    /// function, an id it waits on): answered by [`Connection::shared_done`].
    pub(super) fn decide_in_cluster(
        &mut self,
        id: u32,
        slot: trellis_datapath::StoreSlot,
        op: SharedOp,
    ) {
        self.disk.push_back(DiskRequest {
            task: id,
            slot,
            offset: 0,
            op: DiskOp::Shared(op),
        });
    }

    /// Task `id` waits, like a disk step, for the cluster to decide
    /// `change` of its unit on behalf of its nexus.
    pub(super) fn task_to_cluster(&mut self, id: u32, change: UnitChange) {
        let Some(s) = self.session() else { return };
        let Some(luns) = s.lun_table() else { return };
        let Some(t) = s.tasks.get_mut(&id) else {
            return;
        };
        let (Some(entry), Some(nexus)) = (luns.luns.get(t.lun_index), s.nexus.get(t.lun_index))
        else {
            return;
        };
        t.stage = Stage::InFlight;
        let op = SharedOp {
            unit: Arc::clone(&entry.shared),
            nexus: nexus.pr_identity().clone(),
            change,
        };
        let slot = t.slot;
        self.decide_in_cluster(id, slot, op);
    }

    /// The cluster decided a [`DiskOp::Shared`] change of task `id`: answer
    /// it (unless task management aborted it meanwhile). A reset's `id`
    /// names no task: the task management function waiting on it goes.
    pub fn shared_done(&mut self, id: u32, c: Completion, pool: &BufPool) {
        if let Some(s) = self.session() {
            if let Some(t) = s.remove_task(id) {
                if !t.aborted {
                    self.respond_completion(t.itt, t.lun, t.edtl, c, 0);
                }
            }
        }
        self.after_disk(id, pool);
    }

    /// A disk request finished: `result` is bytes or -errno; `buf` is the
    /// request's buffer, if it had one.
    pub fn disk_done(&mut self, id: u32, result: i32, buf: Option<Buf>, pool: &BufPool) {
        self.finish_disk(id, result, buf);
        self.after_disk(id, pool);
    }

    /// Bookkeeping after a task's disk step: task management waiting on it,
    /// tasks waiting for buffers or for blocks it held.
    pub(super) fn after_disk(&mut self, id: u32, pool: &BufPool) {
        self.drain_tmfs(id);
        self.run_ready();
        if self.closing.is_none() {
            self.pump(pool);
        }
    }

    fn finish_disk(&mut self, id: u32, result: i32, buf: Option<Buf>) {
        let Some(s) = self.session() else { return };
        let Some(t) = s.tasks.get(&id) else { return };
        if t.sanitize.is_some() {
            // Goes on even when aborted: a sanitize operation survives resets.
            return self.sanitize_done(id, result, buf);
        }
        if t.aborted {
            s.remove_task(id);
            return;
        }
        match (t.purpose, t.io().map(|r| r.op)) {
            (Purpose::Unmap, _) => return self.unmap_done(id, result),
            (Purpose::Copy, _) => return self.copy_done(id, result, buf),
            (
                _,
                Some(
                    IoOp::Prefetch { .. }
                    | IoOp::WriteSame { .. }
                    | IoOp::OrWrite
                    | IoOp::CompareAndWrite
                    | IoOp::LbaStatus { .. },
                ),
            ) => return self.media_done(id, result, buf),
            _ => {}
        }
        let Some(t) = s.remove_task(id) else { return };
        let Some(req) = t.io() else { return };
        let expect = buf.as_ref().map_or(0, |b| b.len() as i32);
        let ok = result >= 0 && result == expect;
        if result < 0 && result != -libc::ESTALE {
            tracing::warn!(errno = -result, op = ?req.op, lba = req.lba, "disk I/O failed");
        }
        match req.op {
            IoOp::Read => {
                let Some(buf) = buf.filter(|_| ok) else {
                    self.respond_status(
                        t.itt,
                        t.edtl,
                        t.xfer,
                        TaskStatus::check(medium_error(true)),
                        0,
                    );
                    return;
                };
                self.send_read(&t, buf);
            }
            IoOp::Verify { .. } => {
                let (Some(medium), Some(data)) = (buf, t.buf.as_ref()) else {
                    return;
                };
                let status = if !ok {
                    TaskStatus::check(medium_error(true))
                } else if let Some(pos) = medium.iter().zip(data.iter()).position(|(a, b)| a != b) {
                    TaskStatus::check(Sense::miscompare(pos as u64))
                } else {
                    TaskStatus::good()
                };
                self.respond_status(t.itt, t.edtl, t.xfer, status, t.r2tsn);
            }
            IoOp::Write | IoOp::WriteVerify | IoOp::WriteAtomic => {
                let status = if ok {
                    TaskStatus::good()
                } else {
                    TaskStatus::check(write_error(result))
                };
                self.respond_status(t.itt, t.edtl, t.xfer, status, t.r2tsn);
            }
            IoOp::Flush { .. } => {
                let status = if result >= 0 {
                    TaskStatus::good()
                } else {
                    TaskStatus::check(medium_error(false))
                };
                self.respond_status(t.itt, t.edtl, 0, status, 0);
            }
            _ => {}
        }
    }

    /// Data-In from a read buffer, status collapsed into the last PDU.
    fn send_read(&mut self, t: &Task, buf: Buf) {
        let send = t.edtl.min(t.xfer) as usize;
        let body = self.out.add_body(buf);
        let collapse = Some(residual(t.edtl, t.xfer));
        self.push_data_in(t.itt, t.lun, DataSrc::Body(body), send, 0, collapse);
    }

    /// Queues Data-In PDUs carrying `send` bytes of `src`, split at the
    /// initiator's MaxRecvDataSegmentLength, DataSN from `first_datasn`. With
    /// `collapse` (the residual), the last PDU carries GOOD status. Returns
    /// the next DataSN.
    fn push_data_in(
        &mut self,
        itt: u32,
        lun: u64,
        src: DataSrc<'_>,
        send: usize,
        first_datasn: u32,
        collapse: Option<(bool, bool, u32)>,
    ) -> u32 {
        let mrdsl = self.session().map_or(8192, |s| {
            s.params.max_recv_data_segment_length_initiator.max(512)
        }) as usize;
        let mut offset = 0;
        let mut datasn = first_datasn;
        while offset < send {
            let chunk = mrdsl.min(send - offset);
            let last = offset + chunk == send;
            let status = collapse.filter(|_| last);
            let statsn = if status.is_some() {
                self.next_statsn()
            } else {
                self.statsn
            };
            let Some(s) = self.session() else { break };
            let (under, over, count) = status.unwrap_or((false, false, 0));
            let din = DataIn {
                final_bit: last,
                acknowledge: false,
                residual_overflow: over,
                residual_underflow: under,
                status_present: status.is_some(),
                status: Status::Good.code(),
                total_ahs_len: 0,
                data_segment_len: chunk as u32,
                lun,
                itt,
                ttt: RESERVED_TAG,
                statsn,
                exp_cmdsn: s.window.exp_cmdsn(),
                max_cmdsn: s.window.max_cmdsn(),
                data_sn: datasn,
                buffer_offset: offset as u32,
                residual_count: count,
            };
            let mut bhs = [0u8; BHS_LEN];
            din.encode(&mut bhs);
            match src {
                DataSrc::Body(body) => self.out.push_body(&bhs, body, offset, chunk),
                DataSrc::Copy(data) => self.out.push(&bhs, &data[offset..offset + chunk]),
            }
            offset += chunk;
            datasn += 1;
        }
        datasn
    }

    /// Answers a command the SCSI layer completed without I/O.
    fn complete_now(&mut self, cmd: &ScsiCommand, c: Completion) {
        self.respond_completion(cmd.itt, cmd.lun, cmd.expected_data_transfer_length, c, 0);
    }

    /// Data-In (if any) and status of a completed command; GOOD status rides
    /// on the last Data-In.
    pub(super) fn respond_completion(
        &mut self,
        itt: u32,
        lun: u64,
        edtl: u32,
        c: Completion,
        exp_datasn: u32,
    ) {
        let len = c.data.len() as u32;
        let send = edtl.min(len) as usize;
        let good = c.status == Status::Good;
        let collapse = good.then(|| residual(edtl, len));
        let datasn =
            self.push_data_in(itt, lun, DataSrc::Copy(&c.data), send, exp_datasn, collapse);
        if good && send > 0 {
            return;
        }
        let status = TaskStatus {
            status: c.status,
            sense: c.sense,
        };
        self.respond_status(itt, edtl, len, status, datasn);
    }

    /// A SCSI Response PDU; `moved` is what the command would transfer, for
    /// the residual.
    pub(super) fn respond_status(
        &mut self,
        itt: u32,
        edtl: u32,
        moved: u32,
        status: TaskStatus,
        exp_datasn: u32,
    ) {
        let (under, over, count) = residual(edtl, moved);
        let mut data = [0u8; 2 + 252];
        let n = match &status.sense {
            Some(sense) => {
                let n = sense.encode_fixed(&mut data[2..]);
                data[..2].copy_from_slice(&(n as u16).to_be_bytes());
                n + 2
            }
            None => 0,
        };
        let statsn = self.next_statsn();
        let Some(s) = self.session() else { return };
        let resp = ScsiResponse {
            bidi_overflow: false,
            bidi_underflow: false,
            residual_overflow: over,
            residual_underflow: under,
            response: 0,
            status: status.status.code(),
            total_ahs_len: 0,
            data_segment_len: n as u32,
            itt,
            snack_tag: 0,
            statsn,
            exp_cmdsn: s.window.exp_cmdsn(),
            max_cmdsn: s.window.max_cmdsn(),
            exp_data_sn: exp_datasn,
            bidi_read_residual_count: 0,
            residual_count: count,
        };
        let mut bhs = [0u8; BHS_LEN];
        resp.encode(&mut bhs);
        self.out.push(&bhs, &data[..n]);
    }
}
