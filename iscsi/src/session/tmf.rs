//! Task management functions (RFC 7143 §11.5, RFC 7144, SAM-5): ABORT TASK,
//! ABORT TASK SET, CLEAR ACA, CLEAR TASK SET, LOGICAL UNIT RESET, TARGET
//! WARM/COLD RESET, QUERY TASK, QUERY TASK SET and I_T NEXUS RESET.
//! An aborted task never completes to the initiator; the response waits
//! until this session's aborted tasks' disk I/O has drained. Functions that
//! reach other I_T nexuses (CLEAR TASK SET, resets) go through the unit's
//! shared state ([`scsi::LunShared`]); every session, on every core, aborts
//! its own tasks when it next wakes ([`Connection::poll_shared`]).

use std::sync::Arc;

use super::{CloseReason, Connection, SharedOp};
use crate::pdu::{TaskMgmtRequest, TaskMgmtResponse, BHS_LEN};
use crate::scsi::{self, UnitChange};

/// A task management response waiting for aborted I/O to drain.
#[derive(Debug)]
pub(super) struct PendingTmf {
    itt: u32,
    response: u8,
    waiting: Vec<u32>,
    close_after: bool,
}

impl super::Session {
    /// Aborts every task of `lun`: those with disk I/O in flight are marked
    /// and never answered, the others go now. Returns how many there were.
    pub(super) fn abort_lun_tasks(&mut self, lun: u64) -> usize {
        let ids: Vec<u32> = self
            .tasks
            .values()
            .filter(|t| t.lun == lun)
            .map(|t| t.id)
            .collect();
        for &id in &ids {
            let Some(t) = self.tasks.get_mut(&id) else {
                continue;
            };
            t.aborted = true;
            if !t.in_flight() {
                self.waiting.retain(|w| *w != id);
                self.remove_task(id);
            }
        }
        ids.len()
    }

    /// Catches up with what other nexuses did to LUN `i` of `luns` (resets,
    /// CLEAR TASK SET, PREEMPT AND ABORT, reservation changes) and aborts
    /// this nexus's tasks for it when asked to; true if it aborted any.
    pub(super) fn catch_up(&mut self, luns: &super::LunTable, i: usize) -> bool {
        let (Some(n), Some(l)) = (self.nexus.get_mut(i), luns.luns.get(i)) else {
            return false;
        };
        n.observe(&l.shared);
        if !n.take_abort() {
            return false;
        }
        let cleared = n.take_cleared();
        let aborted = self.abort_lun_tasks(l.lun);
        if cleared && aborted > 0 {
            if let Some(n) = self.nexus.get_mut(i) {
                n.push(scsi::UnitAttention::CommandsCleared);
            }
        }
        aborted > 0
    }
}

/// Task management function codes (RFC 7143 §11.5.1, RFC 7144 §4.2).
mod function {
    pub const ABORT_TASK: u8 = 1;
    pub const ABORT_TASK_SET: u8 = 2;
    pub const CLEAR_ACA: u8 = 3;
    pub const CLEAR_TASK_SET: u8 = 4;
    pub const LOGICAL_UNIT_RESET: u8 = 5;
    pub const TARGET_WARM_RESET: u8 = 6;
    pub const TARGET_COLD_RESET: u8 = 7;
    pub const TASK_REASSIGN: u8 = 8;
    pub const QUERY_TASK: u8 = 9;
    pub const QUERY_TASK_SET: u8 = 10;
    pub const I_T_NEXUS_RESET: u8 = 11;
}

/// Task management response codes (RFC 7143 §11.6.1, RFC 7144 §4.3).
mod response {
    pub const COMPLETE: u8 = 0;
    pub const NO_TASK: u8 = 1;
    pub const NO_LUN: u8 = 2;
    pub const REASSIGN_NOT_SUPPORTED: u8 = 4;
    pub const NOT_SUPPORTED: u8 = 5;
    pub const SUCCEEDED: u8 = 7;
}

impl Connection {
    /// Catches up with shared logical unit state changed by other sessions
    /// (on any core): a LOGICAL UNIT RESET, CLEAR TASK SET or PREEMPT AND
    /// ABORT from elsewhere aborts this session's tasks for the unit now,
    /// rather than at its next command. The core calls this each time it
    /// wakes, before handling completions.
    pub fn poll_shared(&mut self) {
        let Some(s) = self.session() else { return };
        let Some(luns) = s.lun_table() else { return };
        let mut any = s.holds.blocked();
        for i in 0..luns.luns.len() {
            any |= s.catch_up(&luns, i);
        }
        if any {
            self.run_ready();
        }
    }

    /// A Task Management Function Request.
    pub(super) fn task_mgmt(&mut self, req: &TaskMgmtRequest) {
        use function::*;
        use response::*;
        let Some(s) = self.session() else { return };
        let function = req.function & 0x7f;
        let luns = s.lun_table();
        let lun_index = luns.as_ref().and_then(|l| l.find(req.lun));
        let mut affected: Vec<u32> = Vec::new();
        let mut close_after = false;
        // Units (by index) the cluster resets on every member; the response
        // waits for it.
        let mut resets: Vec<usize> = Vec::new();
        let lun_tasks = |s: &super::Session| -> Vec<u32> {
            s.tasks
                .values()
                .filter(|t| t.lun == req.lun && !t.aborted)
                .map(|t| t.id)
                .collect()
        };
        let response = match function {
            ABORT_TASK | QUERY_TASK => match s.itts.get(&req.referenced_task_tag) {
                Some(&id) if function == QUERY_TASK => {
                    let live = s.tasks.get(&id).is_some_and(|t| !t.aborted);
                    if live {
                        SUCCEEDED
                    } else {
                        COMPLETE
                    }
                }
                Some(&id) => {
                    affected.push(id);
                    COMPLETE
                }
                None if function == QUERY_TASK => COMPLETE,
                None => {
                    // Rule (b) of RFC 7143 §11.6.1: a RefCmdSN inside the window
                    // and before this request counts as received and done.
                    let w = s.window;
                    if super::sn_le(w.exp_cmdsn(), req.ref_cmdsn)
                        && super::sn_lt(req.ref_cmdsn, req.cmdsn)
                    {
                        COMPLETE
                    } else {
                        NO_TASK
                    }
                }
            },
            _ if lun_index.is_none()
                && matches!(
                    function,
                    ABORT_TASK_SET
                        | CLEAR_ACA
                        | CLEAR_TASK_SET
                        | LOGICAL_UNIT_RESET
                        | QUERY_TASK_SET
                ) =>
            {
                NO_LUN
            }
            ABORT_TASK_SET => {
                affected = lun_tasks(s);
                COMPLETE
            }
            QUERY_TASK_SET => {
                if lun_tasks(s).is_empty() {
                    COMPLETE
                } else {
                    SUCCEEDED
                }
            }
            // NACA is not supported, so no ACA condition ever exists: there
            // is nothing to clear (SAM-5 7.4).
            CLEAR_ACA => COMPLETE,
            CLEAR_TASK_SET | LOGICAL_UNIT_RESET => {
                affected = lun_tasks(s);
                // The task set is shared (TST 000b): every nexus, on every
                // core, aborts its tasks for the unit; a reset also reports
                // itself to every nexus, this one included.
                if let (Some(l), Some(i)) = (luns.as_ref(), lun_index) {
                    let entry = &l.luns[i];
                    let shared = &entry.shared;
                    if shared.cluster().is_some() {
                        // Every member's nexuses: the cluster decides it,
                        // each member (this one too) makes it when it
                        // installs it, and the response waits for that.
                        resets.push(i);
                    } else if function == LOGICAL_UNIT_RESET {
                        shared.reset();
                    } else if let Some(n) = s.nexus.get(i) {
                        shared.clear_task_set(n.id());
                    }
                }
                COMPLETE
            }
            TARGET_WARM_RESET | TARGET_COLD_RESET => {
                affected.extend(s.tasks.keys().copied());
                // A target reset is a reset of every unit of the target:
                // SPC-2 reservations go, every nexus gets the unit attention
                // and aborts its tasks.
                // A cluster's units are reset on every member, as by LOGICAL
                // UNIT RESET.
                for (i, l) in luns.iter().flat_map(|l| l.luns.iter()).enumerate() {
                    if l.shared.cluster().is_some() {
                        resets.push(i);
                    } else {
                        l.shared.reset();
                    }
                }
                close_after = function == TARGET_COLD_RESET;
                COMPLETE
            }
            I_T_NEXUS_RESET => {
                // This nexus's tasks go, its SPC-2 reservations are released
                // and it is told I_T NEXUS LOSS OCCURRED (SAM-5 7.7).
                affected.extend(s.tasks.keys().copied());
                for (i, l) in luns.iter().flat_map(|l| l.luns.iter()).enumerate() {
                    if let Some(n) = s.nexus.get_mut(i) {
                        super::release_reservation(&l.shared, n);
                        n.push(scsi::UnitAttention::ItNexusLoss);
                    }
                }
                COMPLETE
            }
            TASK_REASSIGN => REASSIGN_NOT_SUPPORTED,
            _ => NOT_SUPPORTED,
        };
        let mut waiting: Vec<u32> = Vec::new();
        if let Some(l) = &luns {
            for i in resets {
                let Some(s) = self.session() else { return };
                let id = s.next_task_id();
                let entry = &l.luns[i];
                let op = SharedOp {
                    unit: Arc::clone(&entry.shared),
                    nexus: s
                        .nexus
                        .get(i)
                        .map(|n| n.pr_identity().clone())
                        .unwrap_or_default(),
                    change: if function == CLEAR_TASK_SET {
                        UnitChange::ClearTaskSet
                    } else {
                        UnitChange::Reset
                    },
                };
                self.decide_in_cluster(id, entry.slot, op);
                waiting.push(id);
            }
        }
        let Some(s) = self.session() else { return };
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
        if let Some((_, waiting)) = s.logout.as_mut() {
            waiting.retain(|w| *w != id);
            if waiting.is_empty() {
                if let Some((resp, _)) = s.logout.take() {
                    self.send_logout(resp);
                }
                return;
            }
        }
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
