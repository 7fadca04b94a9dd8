//! What all cores share: targets, LUN maps, ACLs, CHAP secrets, the
//! session table (ISID/TSIH, reinstatement) and each logical unit's
//! [`LunShared`] state. Only login and discovery touch the registry; the I/O
//! path reads just the `LunShared` of its LUNs (one atomic per command).
//!
//! [`Registry::reconfigure`] applies a new configuration while running:
//! devices grow, targets, LUN maps, ACLs and CHAP change. It bumps the
//! configuration generation; each core then refreshes its device
//! descriptions, and each session its LUN table, reporting CAPACITY DATA
//! HAS CHANGED and REPORTED LUNS DATA HAS CHANGED to its I_T nexuses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};

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

/// The parts of the configuration that change while running.
#[derive(Debug, Clone)]
struct Live {
    targets: Vec<TargetSpec>,
    discovery_chap: Option<ChapPolicy>,
}

/// Shared target state.
#[derive(Debug)]
pub struct Registry {
    cfg: GatewayConfig,
    live: RwLock<Live>,
    generation: AtomicU64,
    portals: Vec<SocketAddr>,
    wakers: Vec<Arc<Waker>>,
    lun_devices: RwLock<Vec<LunDevice>>,
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
            live: RwLock::new(Live {
                targets: cfg.targets.clone(),
                discovery_chap: cfg.discovery_chap.clone(),
            }),
            generation: AtomicU64::new(0),
            cfg,
            portals,
            wakers,
            lun_devices: RwLock::new(lun_devices),
            lun_shared,
            sessions: Mutex::new(Sessions {
                by_key: HashMap::new(),
                next_tsih: 1,
            }),
        }
    }

    /// The configuration the target started with (devices, portals, limits;
    /// targets and CHAP as they are now come from the live configuration).
    pub fn config(&self) -> &GatewayConfig {
        &self.cfg
    }

    /// Devices.
    pub fn devices(&self) -> &[VirtualDevice] {
        &self.cfg.devices
    }

    fn live(&self) -> RwLockReadGuard<'_, Live> {
        self.live.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves on with every change [`Registry::reconfigure`] applies.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether target `name` exists.
    pub fn target_exists(&self, name: &str) -> bool {
        self.live().targets.iter().any(|t| t.name == name)
    }

    /// The alias of target `name`.
    pub fn target_alias(&self, name: &str) -> Option<String> {
        self.live()
            .targets
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| t.alias.clone())
    }

    /// Applies `new` while running. Devices must be the same ones (name,
    /// block size, backing, read-only, thin), in the same order, and may only
    /// grow; targets, LUN maps, ACLs and CHAP may change freely (new logins
    /// see them at once, sessions at their next PDU). Returns what changed, or
    /// why nothing was applied.
    pub fn reconfigure(&self, new: &GatewayConfig) -> Result<Vec<String>, String> {
        let old = &self.cfg.devices;
        if new.devices.len() != old.len() {
            return Err(format!(
                "devices cannot be added or removed while running ({} now, {} in the new configuration); restart trellisd",
                old.len(),
                new.devices.len()
            ));
        }
        let mut grow = Vec::new();
        for (o, n) in old.iter().zip(&new.devices) {
            let (os, ns) = (o.spec(), n.spec());
            if os.name != ns.name {
                return Err(format!(
                    "device `{}` became `{}`: devices cannot be renamed or reordered while running",
                    os.name, ns.name
                ));
            }
            if os.block_size != ns.block_size || os.read_only != ns.read_only || os.thin != ns.thin
            {
                return Err(format!(
                    "device `{}`: block size, read_only and thin cannot change while running",
                    os.name
                ));
            }
            if n.store().describe() != o.store().describe() {
                return Err(format!(
                    "device `{}`: its backing store changed ({} -> {})",
                    os.name,
                    o.store().describe(),
                    n.store().describe()
                ));
            }
            let now = self.device_size(&os.name);
            if ns.size < now {
                return Err(format!(
                    "device `{}` cannot shrink ({now} -> {} bytes)",
                    os.name, ns.size
                ));
            }
            if ns.size > now {
                grow.push((os.name.clone(), ns.size));
            }
        }
        let mut changes = Vec::new();
        for (name, size) in grow {
            let Some(i) = old.iter().position(|d| d.spec().name == name) else {
                continue;
            };
            old[i]
                .store()
                .grow(size)
                .map_err(|e| format!("device `{name}` cannot grow to {size} bytes: {e}"))?;
            let mut devs = self
                .lun_devices
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(d) = devs.get_mut(i) {
                d.num_blocks = size / u64::from(d.block_size);
            }
            changes.push(format!("device `{name}` grown to {size} bytes"));
        }
        {
            let mut live = self.live.write().unwrap_or_else(PoisonError::into_inner);
            let next = Live {
                targets: new.targets.clone(),
                discovery_chap: new.discovery_chap.clone(),
            };
            for t in &next.targets {
                match live.targets.iter().find(|o| o.name == t.name) {
                    None => changes.push(format!("target `{}` added", t.name)),
                    Some(o) if o.luns != t.luns => {
                        changes.push(format!("target `{}`: LUN map changed", t.name))
                    }
                    Some(o) if o.acl != t.acl || o.alias != t.alias => {
                        changes.push(format!("target `{}`: access changed", t.name))
                    }
                    Some(_) => {}
                }
            }
            for o in &live.targets {
                if !next.targets.iter().any(|t| t.name == o.name) {
                    changes.push(format!("target `{}` removed", o.name));
                }
            }
            if live.discovery_chap != next.discovery_chap {
                changes.push("discovery CHAP changed".to_owned());
            }
            *live = next;
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        for w in &self.wakers {
            w.wake();
        }
        Ok(changes)
    }

    /// The current size in bytes of device `name` (0 if unknown).
    fn device_size(&self, name: &str) -> u64 {
        self.lun_devices
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|d| d.name == name)
            .map_or(0, |d| d.num_blocks * u64::from(d.block_size))
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
                .live()
                .targets
                .iter()
                .find(|x| x.name == t)
                .is_some_and(|t| self.acl(t, initiator).is_some()),
        }
    }

    /// CHAP `initiator` must pass for `target` (None: discovery).
    pub fn chap(&self, target: Option<&str>, initiator: &str) -> Option<ChapPolicy> {
        let live = self.live();
        match target {
            None => live.discovery_chap.clone(),
            Some(t) => {
                let t = live.targets.iter().find(|x| x.name == t)?;
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
        self.live()
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
        let live = self.live();
        let t = live.targets.iter().find(|x| x.name == target)?;
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

    /// SCSI descriptions of the devices as they are now, by index.
    pub(super) fn lun_devices(&self) -> Vec<LunDevice> {
        self.lun_devices
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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
