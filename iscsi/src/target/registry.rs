//! What all cores share: targets, LUN maps, ACLs, CHAP secrets, the
//! session table (ISID/TSIH, reinstatement) and each logical unit's
//! [`LunShared`] state. Only login and discovery touch the registry; the I/O
//! path reads just the `LunShared` of its LUNs (one atomic per command).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use trellis_datapath::{StoreSlot, VirtualDevice, Waker};

use super::{AclEntry, GatewayConfig, TargetSpec};
use crate::login::{ChapPolicy, LoginStatus, SessionKind, SessionRequest};
use crate::scsi::{
    lun_from_wire, lun_to_wire, AluaState, FilePrStore, LunDevice, LunShared, PortContext,
    PortGroup, SanitizeState,
};
use crate::session::{LunEntry, LunTable};

/// A live session, for reinstatement and TSIH checks.
#[derive(Debug)]
struct SessionEntry {
    tsih: u16,
    core: usize,
    kill: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct Sessions {
    by_key: HashMap<(String, [u8; 6], Option<String>), SessionEntry>,
    next_tsih: u16,
}

/// Shared target state.
#[derive(Debug)]
pub struct Registry {
    cfg: GatewayConfig,
    portals: Vec<SocketAddr>,
    wakers: Vec<Arc<Waker>>,
    lun_devices: Vec<LunDevice>,
    lun_shared: Vec<Arc<LunShared>>,
    lun_sanitize: Vec<Arc<SanitizeState>>,
    sessions: Mutex<Sessions>,
}

impl Registry {
    pub(super) fn new(
        cfg: GatewayConfig,
        portals: Vec<SocketAddr>,
        wakers: Vec<Arc<Waker>>,
    ) -> Self {
        let max_buf = cfg.ring.pool.max_buf() as u32;
        let lun_devices = cfg
            .devices
            .iter()
            .map(|d| {
                let spec = d.spec();
                let max_blocks = max_buf / spec.block_size;
                let atomic_unit_blocks =
                    atomic_unit_blocks(d.store().atomic_write_unit(), spec.block_size, max_blocks);
                if atomic_unit_blocks > 0 {
                    tracing::info!(
                        device = %spec.name,
                        blocks = atomic_unit_blocks,
                        "WRITE ATOMIC offered: the store writes this many blocks untorn"
                    );
                }
                LunDevice {
                    name: spec.name.clone(),
                    block_size: spec.block_size,
                    num_blocks: d.num_blocks(),
                    read_only: spec.read_only,
                    naa: d.naa(),
                    serial: d.serial(),
                    write_cache: !d.store().direct(),
                    max_transfer_blocks: max_blocks,
                    optimal_transfer_blocks: max_blocks,
                    rotational: false,
                    thin: spec.thin,
                    holes_read_zero: d.store().holes_read_zero(),
                    atomic_unit_blocks,
                }
            })
            .collect();
        // Persistent reservations with APTPL live beside the device data.
        let lun_shared = cfg
            .devices
            .iter()
            .map(|d| {
                let lu = match &cfg.state_dir {
                    Some(dir) => LunShared::with_pr_store(Box::new(FilePrStore::new(
                        dir.join(format!("{}.pr", d.spec().name)),
                    ))),
                    None => LunShared::new(),
                };
                // A released block lock someone waits for wakes every core.
                let cores = wakers.clone();
                Arc::new(lu.with_notifier(Box::new(move || {
                    for w in &cores {
                        w.wake();
                    }
                })))
            })
            .collect();
        let lun_sanitize = cfg
            .devices
            .iter()
            .map(|_| Arc::new(SanitizeState::new()))
            .collect();
        Self {
            lun_sanitize,
            cfg,
            portals,
            wakers,
            lun_devices,
            lun_shared,
            sessions: Mutex::new(Sessions {
                by_key: HashMap::new(),
                next_tsih: 1,
            }),
        }
    }

    /// The configuration the target runs.
    pub fn config(&self) -> &GatewayConfig {
        &self.cfg
    }

    /// Devices.
    pub fn devices(&self) -> &[VirtualDevice] {
        &self.cfg.devices
    }

    /// A target by name.
    pub fn target(&self, name: &str) -> Option<&TargetSpec> {
        self.cfg.targets.iter().find(|t| t.name == name)
    }

    fn acl<'t>(&self, target: &'t TargetSpec, initiator: &str) -> Option<Option<&'t AclEntry>> {
        match &target.acl {
            None => Some(None),
            Some(list) => list.iter().find(|a| a.initiator == initiator).map(Some),
        }
    }

    /// Whether `initiator` may log in to `target` (None: discovery).
    pub fn allowed(&self, target: Option<&str>, initiator: &str) -> bool {
        match target {
            None => true,
            Some(t) => self
                .target(t)
                .is_some_and(|t| self.acl(t, initiator).is_some()),
        }
    }

    /// CHAP `initiator` must pass for `target` (None: discovery).
    pub fn chap(&self, target: Option<&str>, initiator: &str) -> Option<ChapPolicy> {
        match target {
            None => self.cfg.discovery_chap.clone(),
            Some(t) => {
                let t = self.target(t)?;
                self.acl(t, initiator)
                    .flatten()
                    .and_then(|a| a.chap.clone())
            }
        }
    }

    /// Targets `initiator` may see, with their portal addresses.
    pub fn send_targets(
        &self,
        initiator: &str,
        only: Option<&str>,
        local: Option<SocketAddr>,
    ) -> Vec<(String, Vec<String>)> {
        let tpgt = self.cfg.conn.limits.target_portal_group_tag;
        let addrs: Vec<String> = self
            .portals
            .iter()
            .map(|p| {
                let ip = match (p.ip().is_unspecified(), local) {
                    (true, Some(l)) => l.ip(),
                    _ => p.ip(),
                };
                format!("{},{tpgt}", SocketAddr::new(ip, p.port()))
            })
            .collect();
        self.cfg
            .targets
            .iter()
            .filter(|t| only.is_none_or(|o| o == t.name))
            .filter(|t| self.acl(t, initiator).is_some())
            .map(|t| (t.name.clone(), addrs.clone()))
            .collect()
    }

    /// The port identity of `target` on this member.
    pub fn port(&self, target: &str) -> PortContext {
        PortContext {
            target_name: target.to_owned(),
            tpgt: self.cfg.conn.limits.target_portal_group_tag,
            relative_port_id: self.cfg.relative_port_id,
            tpg_id: self.cfg.tpg_id,
            groups: vec![PortGroup {
                id: self.cfg.tpg_id,
                state: AluaState::ActiveOptimized,
                preferred: false,
                relative_ports: vec![self.cfg.relative_port_id],
            }],
        }
    }

    /// The LUN table `initiator` sees on `target`, bound to a core's store
    /// slots (`slots[i]` for device `i`) and shared device descriptions.
    pub(super) fn lun_table(
        &self,
        target: &str,
        initiator: &str,
        slots: &[StoreSlot],
        devs: &[Rc<LunDevice>],
    ) -> Option<LunTable> {
        let t = self.target(target)?;
        let acl = self.acl(t, initiator)?;
        let mask = acl.and_then(|a| a.luns.as_ref());
        let mut luns: Vec<LunEntry> = t
            .luns
            .iter()
            .filter(|(lun, _)| mask.is_none_or(|m| m.contains(lun)))
            .filter_map(|(lun, dev)| {
                Some(LunEntry {
                    lun: lun_to_wire(*lun),
                    dev: Rc::clone(devs.get(*dev)?),
                    slot: *slots.get(*dev)?,
                    shared: Arc::clone(self.lun_shared.get(*dev)?),
                    sanitize: Arc::clone(self.lun_sanitize.get(*dev)?),
                })
            })
            .collect();
        luns.sort_by_key(|l| l.lun);
        let ids = luns
            .iter()
            .filter_map(|l| lun_from_wire(l.lun).map(u64::from))
            .collect();
        Some(LunTable {
            port: self.port(target),
            luns,
            ids,
        })
    }

    /// SCSI descriptions of the devices, by index.
    pub(super) fn lun_devices(&self) -> &[LunDevice] {
        &self.lun_devices
    }

    /// Registers a session at the end of login, reinstating (ending) an
    /// older one with the same initiator, ISID and target.
    pub(super) fn allocate_session(
        &self,
        req: &SessionRequest,
        core: usize,
        kill: &Arc<AtomicBool>,
    ) -> Result<u16, LoginStatus> {
        let mut s = self.sessions.lock().map_err(|_| LoginStatus::TargetError)?;
        let key = (req.initiator_name.clone(), req.isid, req.target.clone());
        if req.tsih != 0 {
            // MaxConnections=1: a second connection cannot join a session.
            return Err(match s.by_key.get(&key) {
                Some(e) if e.tsih == req.tsih => LoginStatus::TooManyConnections,
                _ => LoginStatus::SessionDoesNotExist,
            });
        }
        if req.kind == SessionKind::Normal {
            if let Some(old) = s.by_key.remove(&key) {
                tracing::info!(initiator = %req.initiator_name, tsih = old.tsih, "reinstating session");
                old.kill.store(true, Ordering::SeqCst);
                if let Some(w) = self.wakers.get(old.core) {
                    w.wake();
                }
            }
        }
        let mut tsih = s.next_tsih;
        while tsih == 0 || s.by_key.values().any(|e| e.tsih == tsih) {
            tsih = tsih.wrapping_add(1);
        }
        s.next_tsih = tsih.wrapping_add(1);
        if req.kind == SessionKind::Normal {
            s.by_key.insert(
                key,
                SessionEntry {
                    tsih,
                    core,
                    kill: Arc::clone(kill),
                },
            );
        }
        Ok(tsih)
    }

    /// Forgets a session (logout or connection loss).
    pub(super) fn session_ended(&self, tsih: u16, kill: &Arc<AtomicBool>) {
        if let Ok(mut s) = self.sessions.lock() {
            s.by_key
                .retain(|_, e| !(e.tsih == tsih && Arc::ptr_eq(&e.kill, kill)));
        }
    }
}

/// WRITE ATOMIC (16) unit in blocks for a store whose untorn write unit is
/// `unit` bytes: a whole number of blocks within one command's transfer
/// limit (`max_blocks`, 0 = none); 0 when the store has no atomic writes.
fn atomic_unit_blocks(unit: Option<u32>, block_size: u32, max_blocks: u32) -> u32 {
    match unit {
        Some(u) if block_size > 0 && u.is_multiple_of(block_size) => {
            let blocks = u / block_size;
            if max_blocks == 0 || blocks <= max_blocks {
                blocks
            } else {
                0
            }
        }
        _ => 0,
    }
}
