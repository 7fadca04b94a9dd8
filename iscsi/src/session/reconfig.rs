//! A session catching up with a changed configuration: when the host's
//! configuration generation moves, the session rebuilds its LUN table and
//! tells each I_T nexus what changed (SPC-4 / SBC-4 unit attentions):
//! CAPACITY DATA HAS CHANGED for a grown unit, REPORTED LUNS DATA HAS
//! CHANGED to every nexus when LUNs were mapped or unmapped.
//!
//! Entries keep their positions (tasks refer to LUNs by index): units still
//! mapped stay where they were, new ones are appended. A rebuild that would
//! move or replace a unit a task in flight uses (its own LUN, or the source
//! or destination of an EXTENDED COPY) waits until those tasks are done.
//!
//! A session whose target is gone, or whose initiator the target no longer
//! admits, is ended: revoked access takes effect on sessions already logged
//! in, not only on new logins.

use std::rc::Rc;
use std::sync::Arc;

use super::{CloseReason, Connection, Host, LunEntry, LunTable};
use crate::scsi::{self, NexusState, UnitAttention};

impl Connection {
    /// Rebuilds the session's LUN table if the host configuration moved on.
    pub(super) fn refresh_luns(&mut self, host: &mut dyn Host) {
        let generation = host.config_generation();
        let Some(s) = self.session() else { return };
        if s.generation == generation {
            return;
        }
        // Discovery sessions have no LUNs.
        let Some(target) = s.params.target_name.clone() else {
            s.generation = generation;
            return;
        };
        let initiator = s.params.initiator_name.clone();
        let Some(fresh) = host.luns(&target, &initiator) else {
            tracing::warn!(
                target = %target,
                initiator = %initiator,
                "the target is gone or no longer admits this initiator: ending its session"
            );
            self.close(CloseReason::AccessRevoked);
            return;
        };
        let Some(s) = self.session() else { return };
        // A session that logged in before its core had the target's LUNs
        // starts from an empty table.
        let old = s.luns.clone().unwrap_or_else(|| {
            Rc::new(LunTable {
                port: fresh.port.clone(),
                luns: Vec::new(),
                ids: Vec::new(),
            })
        });
        let mut luns: Vec<LunEntry> = old
            .luns
            .iter()
            .filter_map(|e| fresh.luns.iter().find(|f| f.lun == e.lun).cloned())
            .collect();
        luns.extend(
            fresh
                .luns
                .iter()
                .filter(|f| old.luns.iter().all(|e| e.lun != f.lun))
                .cloned(),
        );
        // The same unit at the same index: same LUN number, same device.
        let kept = |i: usize| match (luns.get(i), old.luns.get(i)) {
            (Some(n), Some(o)) => n.lun == o.lun && Arc::ptr_eq(&n.shared, &o.shared),
            (None, None) => true,
            _ => false,
        };
        let moved = s.tasks.values().any(|t| {
            !kept(t.lun_index)
                || t.copy
                    .as_ref()
                    .is_some_and(|j| j.steps.iter().any(|st| !kept(st.src) || !kept(st.dst)))
        });
        if moved {
            return; // again at the next PDU, once those tasks are done
        }
        let nexus_id = s
            .nexus
            .first()
            .map_or_else(scsi::new_nexus_id, NexusState::id);
        let who = scsi::ItNexus::iscsi(&initiator, s.params.isid, fresh.port.relative_port_id);
        let luns_changed = old.ids != fresh.ids;
        let mut nexus = Vec::with_capacity(luns.len());
        for e in &luns {
            let same_unit = |o: &LunEntry| o.lun == e.lun && Arc::ptr_eq(&o.shared, &e.shared);
            let mut n = match old.luns.iter().position(same_unit) {
                Some(k) => {
                    let mut n = s.nexus[k].clone();
                    if old.luns[k].dev.num_blocks != e.dev.num_blocks {
                        n.push(UnitAttention::CapacityChanged);
                    }
                    n
                }
                None => NexusState::attached(&e.shared, nexus_id).with_pr_identity(who.clone()),
            };
            if luns_changed {
                n.push(UnitAttention::ReportedLunsChanged);
            }
            nexus.push(n);
        }
        tracing::info!(
            target = %target,
            initiator = %initiator,
            luns = ?fresh.ids,
            "configuration changed: LUN table rebuilt"
        );
        s.luns = Some(Rc::new(LunTable {
            port: fresh.port.clone(),
            luns,
            ids: fresh.ids.clone(),
        }));
        s.nexus = nexus;
        s.generation = generation;
    }
}
