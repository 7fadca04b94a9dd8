//! Task management functions (RFC 7143 §11.5, SAM-5): ABORT TASK, ABORT
//! TASK SET, CLEAR TASK SET, LOGICAL UNIT RESET, TARGET WARM/COLD RESET.
//! An aborted task never completes to the initiator; the response waits
//! until the aborted tasks' disk I/O has drained.

use super::{CloseReason, Connection};
use crate::pdu::{TaskMgmtRequest, TaskMgmtResponse, BHS_LEN};
use crate::scsi;

/// A task management response waiting for aborted I/O to drain.
#[derive(Debug)]
pub(super) struct PendingTmf {
    itt: u32,
    response: u8,
    waiting: Vec<u32>,
    close_after: bool,
}

impl super::Session {
    /// Aborts every task of `lun` (PREEMPT AND ABORT): those with disk I/O
    /// in flight are marked and never answered, the others go now.
    pub(super) fn abort_lun_tasks(&mut self, lun: u64) {
        let ids: Vec<u32> = self
            .tasks
            .values()
            .filter(|t| t.lun == lun)
            .map(|t| t.id)
            .collect();
        for id in ids {
            let Some(t) = self.tasks.get_mut(&id) else {
                continue;
            };
            t.aborted = true;
            if !t.in_flight() {
                self.waiting.retain(|w| *w != id);
                self.remove_task(id);
            }
        }
    }
}

impl Connection {
    /// A Task Management Function Request.
    pub(super) fn task_mgmt(&mut self, req: &TaskMgmtRequest) {
        let Some(s) = self.session() else { return };
        let function = req.function & 0x7f;
        let lun_known = s.luns.as_ref().is_some_and(|l| l.find(req.lun).is_some());
        let mut affected: Vec<u32> = Vec::new();
        let mut close_after = false;
        let response = match function {
            // ABORT TASK
            1 => match s.itts.get(&req.referenced_task_tag) {
                Some(&id) => {
                    affected.push(id);
                    0
                }
                None => {
                    // Rule (b) of RFC 7143 §11.6.1: a RefCmdSN inside the window
                    // and before this request counts as received and done.
                    let w = s.window;
                    if super::sn_le(w.exp_cmdsn(), req.ref_cmdsn)
                        && super::sn_lt(req.ref_cmdsn, req.cmdsn)
                    {
                        0
                    } else {
                        1
                    }
                }
            },
            // ABORT TASK SET, CLEAR TASK SET, LUN RESET
            2 | 3 | 5 => {
                if lun_known {
                    affected.extend(s.tasks.values().filter(|t| t.lun == req.lun).map(|t| t.id));
                    if function == 5 {
                        // Every nexus, on every core and this one included,
                        // reports the reset before its next command.
                        if let Some(l) = s.luns.as_ref() {
                            if let Some(i) = l.find(req.lun) {
                                l.luns[i].shared.reset();
                            }
                        }
                    }
                    0
                } else {
                    2
                }
            }
            // TARGET WARM RESET, TARGET COLD RESET
            6 | 7 => {
                affected.extend(s.tasks.keys().copied());
                // A target reset releases the reservation of every unit.
                for l in s.luns.iter().flat_map(|l| l.luns.iter()) {
                    l.shared.clear_reservation();
                }
                for n in s.nexus.iter_mut() {
                    n.push(scsi::UnitAttention::PowerOnReset);
                }
                close_after = function == 7;
                0
            }
            // CLEAR ACA (no ACA support), TASK REASSIGN (needs ERL 2), others.
            8 => 4,
            _ => 5,
        };
        let mut waiting = Vec::new();
        for id in affected {
            let Some(t) = s.tasks.get_mut(&id) else {
                continue;
            };
            t.aborted = true;
            if t.in_flight() {
                waiting.push(id);
            } else {
                s.waiting.retain(|w| *w != id);
                s.remove_task(id);
            }
        }
        let tmf = PendingTmf {
            itt: req.itt,
            response,
            waiting,
            close_after,
        };
        if tmf.waiting.is_empty() {
            self.send_tmf(&tmf);
        } else if let Some(s) = self.session() {
            s.tmfs.push(tmf);
        }
        // Removed tasks released the blocks they held.
        self.run_ready();
    }

    pub(super) fn drain_tmfs(&mut self, id: u32) {
        let Some(s) = self.session() else { return };
        if s.tmfs.is_empty() {
            return;
        }
        for t in s.tmfs.iter_mut() {
            t.waiting.retain(|w| *w != id);
        }
        let (done, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut s.tmfs)
            .into_iter()
            .partition(|t| t.waiting.is_empty());
        s.tmfs = rest;
        for t in done {
            self.send_tmf(&t);
        }
    }

    fn send_tmf(&mut self, t: &PendingTmf) {
        let statsn = self.next_statsn();
        let Some(s) = self.session() else { return };
        let resp = TaskMgmtResponse {
            response: t.response,
            total_ahs_len: 0,
            data_segment_len: 0,
            itt: t.itt,
            statsn,
            exp_cmdsn: s.window.exp_cmdsn(),
            max_cmdsn: s.window.max_cmdsn(),
        };
        let mut bhs = [0u8; BHS_LEN];
        resp.encode(&mut bhs);
        self.out.push(&bhs, &[]);
        if t.close_after {
            self.close(CloseReason::Shutdown);
        }
    }
}
