//! A session catching up with a changed configuration: when the host's
//! configuration generation moves, the session rebuilds its LUN table and
//! tells each I_T nexus what changed (SPC-4 / SBC-4 unit attentions):
//! CAPACITY DATA HAS CHANGED for a grown unit, REPORTED LUNS DATA HAS
//! CHANGED to every nexus when LUNs were mapped or unmapped.
//!
//! Entries keep their positions (tasks refer to LUNs by index): units still
//! mapped stay where they were, new ones are appended. A rebuild that would
//! move a unit with tasks in flight (one before it was unmapped) waits until
//! those tasks are done.

use std::rc::Rc;
use std::sync::Arc;

use super::{Connection, Host, LunEntry, LunTable};
use crate::scsi::{self, NexusState, UnitAttention};

impl Connection {
    /// Rebuilds the session's LUN table if the host configuration moved on.
    pub(super) fn refresh_luns(&mut self, host: &mut dyn Host) {
        let generation = host.config_generation();
        let Some(s) = self.session() else { return };
        if s.generation == generation {
            return;
        }
        let (Some(old), Some(target)) = (s.luns.clone(), s.params.target_name.clone()) else {
            s.generation = generation;
            return;
        };
        let initiator = s.params.initiator_name.clone();
        // A target removed, or this initiator no longer allowed: the session
        // keeps what it has until it ends (new logins are refused).
        let Some(fresh) = host.luns(&target, &initiator) else {
            s.generation = generation;
            return;
        };
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
        let moved = s.tasks.values().any(|t| {
            luns.get(t.lun_index).map(|e| e.lun) != old.luns.get(t.lun_index).map(|e| e.lun)
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
