//! What all cores share: targets, LUN maps, ACLs, CHAP secrets, the
//! session table (ISID/TSIH, reinstatement), the device table with each
//! logical unit's [`LunShared`] state, and the portals of the other members
//! of a cluster. Only login, discovery and reconfiguration touch the
//! registry; the I/O path reads just the `LunShared` of its LUNs (a few
//! atomic loads per command).
//!
//! [`Registry::set_port_states`] sets a logical unit's ALUA port-state table
//! (every member's group and state, from one arbitration epoch) without a
//! reconfiguration: sessions see it before their next command.
//!
//! [`Registry::reconfigure`] applies a new configuration while running:
//! devices come and go, grow, switch read-only; targets, LUN maps, ACLs and
//! CHAP change. It bumps the configuration generation; each core then
//! registers new stores on its ring (and releases stores nothing on it
//! uses any more), and each session rebuilds its LUN table, reporting
//! CAPACITY DATA HAS CHANGED and REPORTED LUNS DATA HAS CHANGED to its I_T
//! nexuses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};

use trellis_datapath::{BackingStore, IoStats, IoTotals, StoreSlot, VirtualDevice, Waker};

use super::devices::{describe, plan_device, DeviceEntry, DevicePlan};
use super::pr_file::FilePrStore;
use super::{AclEntry, Admission, GatewayConfig, TargetSpec};
use crate::login::{ChapPolicy, LoginStatus, SessionKind, SessionRequest};
use crate::scsi::{
    lun_from_wire, lun_to_wire, AluaState, LunDevice, LunShared, PortContext, PortTable,
    SanitizeState,
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

/// The parts of the configuration that change while running; targets name
/// devices by their id in the device table.
#[derive(Debug, Clone)]
struct Live {
    targets: Vec<TargetSpec>,
    discovery_chap: Option<ChapPolicy>,
}

/// A device as a core binds it: its description, store, counters and
/// logical-unit state.
#[derive(Debug, Clone)]
pub(super) struct CoreDevice {
    pub lun: LunDevice,
    pub store: Arc<dyn BackingStore>,
    pub stats: Arc<IoStats>,
    pub shared: Arc<LunShared>,
    pub sanitize: Arc<SanitizeState>,
}

/// The configuration at one generation, as a core binds it: targets and
/// devices taken together, so a LUN table built from it never pairs a
/// target with devices of another generation.
#[derive(Debug, Clone, Default)]
pub(super) struct Snapshot {
    /// The generation it was taken at.
    pub generation: u64,
    /// Targets, naming devices by id.
    pub targets: Vec<TargetSpec>,
    /// Devices by id.
    pub devices: Vec<Option<CoreDevice>>,
}

/// A device's I/O so far, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIo {
    /// The device's name.
    pub name: String,
    /// Its identity.
    pub uuid: uuid::Uuid,
    /// Its size in bytes now.
    pub size: u64,
    /// What the data path did on it.
    pub io: IoTotals,
}

/// Shared target state.
#[derive(Debug)]
pub struct Registry {
    cfg: GatewayConfig,
    live: RwLock<Live>,
    generation: AtomicU64,
    portals: Vec<SocketAddr>,
    /// The other members' portals as SendTargets lists them
    /// ("addr:port,tpgt").
    peers: RwLock<Vec<String>>,
    wakers: Vec<Arc<Waker>>,
    /// Devices by id (ids are never reused; a removed device leaves None).
    devices: RwLock<Vec<Option<DeviceEntry>>>,
    sessions: Mutex<Sessions>,
    /// Connection caps of the portals.
    admission: Arc<Admission>,
    /// Drained by an operator: sessions are asked to log out and new
    /// normal-session logins are refused (0x0301, retry later).
    draining: AtomicBool,
}

impl Registry {
    pub(super) fn new(
        mut cfg: GatewayConfig,
        portals: Vec<SocketAddr>,
        wakers: Vec<Arc<Waker>>,
    ) -> Self {
        let devices = std::mem::take(&mut cfg.devices);
        let admission = Arc::new(Admission::new(
            portals.len(),
            cfg.max_connections,
            cfg.max_logins_per_address,
        ));
        let mut reg = Self {
            admission,
            live: RwLock::new(Live {
                targets: cfg.targets.clone(),
                discovery_chap: cfg.discovery_chap.clone(),
            }),
            generation: AtomicU64::new(0),
            cfg,
            portals,
            peers: RwLock::new(Vec::new()),
            wakers,
            devices: RwLock::new(Vec::new()),
            sessions: Mutex::new(Sessions {
                by_key: HashMap::new(),
                next_tsih: 1,
            }),
            draining: AtomicBool::new(false),
        };
        // Targets name devices by index, which is their id from the start.
        let table = devices.into_iter().map(|d| Some(reg.entry(d))).collect();
        reg.devices = RwLock::new(table);
        reg
    }

    /// A new logical unit for `dev`: persistent reservations with APTPL
    /// live beside the device data; a released block lock someone waits
    /// for wakes every core.
    fn entry(&self, dev: VirtualDevice) -> DeviceEntry {
        let sanitize = Arc::new(SanitizeState::new());
        let lu = match (&self.cfg.cluster, self.pr_path(&dev.spec().name)) {
            (Some(cluster), _) => {
                let unit = cluster.unit(dev.spec().uuid);
                let lu = LunShared::new();
                if let Some((version, state)) = unit.state() {
                    lu.start_from(version, state);
                }
                // A sanitize here is every member's to report.
                let to = Arc::clone(&unit);
                sanitize.set_notifier(Box::new(move |phase| {
                    to.change(
                        crate::scsi::ItNexus::default(),
                        crate::scsi::UnitChange::Sanitize { phase },
                        Box::new(|_| {}),
                    )
                }));
                lu.with_cluster(unit)
            }
            (None, Some(path)) => LunShared::with_pr_store(Box::new(FilePrStore::new(path))),
            (None, None) => LunShared::new(),
        };
        let lu = lu.with_port_state(self.cfg.initial_port_state);
        let cores = self.wakers.clone();
        let shared = Arc::new(lu.with_notifier(Box::new(move || {
            for w in &cores {
                w.wake();
            }
        })));
        DeviceEntry {
            lun: describe(&dev, self.max_buf()),
            dev,
            shared,
            sanitize,
            stats: Arc::new(IoStats::new(self.wakers.len())),
        }
    }

    fn max_buf(&self) -> u32 {
        u32::try_from(self.cfg.ring.pool.max_buf()).unwrap_or(u32::MAX)
    }

    fn pr_path(&self, device: &str) -> Option<PathBuf> {
        self.cfg
            .state_dir
            .as_ref()
            .map(|dir| dir.join(format!("{device}.pr")))
    }

    /// `f` of the entry of the device with `uuid`, if it is served.
    fn with_device<T>(&self, uuid: uuid::Uuid, f: impl FnOnce(&DeviceEntry) -> T) -> Option<T> {
        self.table()
            .iter()
            .flatten()
            .find(|d| d.dev.spec().uuid == uuid)
            .map(f)
    }

    /// The device with `uuid`, if it is served.
    pub fn device(&self, uuid: uuid::Uuid) -> Option<VirtualDevice> {
        self.with_device(uuid, |d| d.dev.clone())
    }

    /// The sanitize state of the device with `uuid`, if it is served.
    pub fn sanitize_state(&self, uuid: uuid::Uuid) -> Option<Arc<SanitizeState>> {
        self.with_device(uuid, |d| Arc::clone(&d.sanitize))
    }

    /// The logical unit of the device with `uuid`, if it is served.
    pub fn unit(&self, uuid: uuid::Uuid) -> Option<Arc<LunShared>> {
        self.with_device(uuid, |d| Arc::clone(&d.shared))
    }

    /// The portals' connection caps and counters.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// The configuration the target started with (portals, limits, rings;
    /// its devices are in the device table, its targets and CHAP as they
    /// are now in the live configuration).
    pub fn config(&self) -> &GatewayConfig {
        &self.cfg
    }

    fn table(&self) -> RwLockReadGuard<'_, Vec<Option<DeviceEntry>>> {
        self.devices.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The devices served now.
    pub fn devices(&self) -> Vec<VirtualDevice> {
        self.table()
            .iter()
            .flatten()
            .map(|e| e.dev.clone())
            .collect()
    }

    /// Each device's I/O counters, by name.
    pub fn device_io(&self) -> Vec<DeviceIo> {
        let mut v: Vec<DeviceIo> = self
            .table()
            .iter()
            .flatten()
            .map(|e| DeviceIo {
                name: e.dev.spec().name.clone(),
                uuid: e.dev.spec().uuid,
                size: e.lun.num_blocks * u64::from(e.lun.block_size),
                io: e.stats.snapshot(),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The configuration as it is now, for a core to bind. The device
    /// table's lock is taken first, as [`Registry::reconfigure`] does, and
    /// held while the generation is read: the three belong together.
    pub(super) fn snapshot(&self) -> Snapshot {
        let table = self.table();
        let live = self.live();
        Snapshot {
            generation: self.generation(),
            targets: live.targets.clone(),
            devices: table
                .iter()
                .map(|e| {
                    e.as_ref().map(|e| CoreDevice {
                        lun: e.lun.clone(),
                        store: Arc::clone(e.dev.store()),
                        stats: Arc::clone(&e.stats),
                        shared: Arc::clone(&e.shared),
                        sanitize: Arc::clone(&e.sanitize),
                    })
                })
                .collect(),
        }
    }

    /// The other members' portals, each `"addr:port,tpgt"`, listed after
    /// this member's own in SendTargets answers.
    pub fn set_peer_portals(&self, portals: Vec<String>) {
        let mut peers = self.peers.write().unwrap_or_else(PoisonError::into_inner);
        if *peers != portals {
            tracing::info!(portals = ?portals, "other members' portals for SendTargets");
            *peers = portals;
        }
    }

    /// Sets the port-state table (ALUA) of the device `uuid`: every group of
    /// the unit with its state, from one arbitration epoch. Sessions see it
    /// before their next command, with ASYMMETRIC ACCESS STATE CHANGED when
    /// a state moved; no LUN table is rebuilt. Returns None when no such
    /// device is served, else whether a state changed.
    pub fn set_port_states(&self, uuid: uuid::Uuid, table: PortTable) -> Option<bool> {
        let devices = self.table();
        let entry = devices
            .iter()
            .flatten()
            .find(|e| e.dev.spec().uuid == uuid)?;
        let changed = entry.shared.ports().set(table, self.cfg.tpg_id);
        if changed {
            // Idle sessions need not wake: each catches up before its
            // next command.
            tracing::debug!(device = %entry.dev.spec().name, "port states changed");
        }
        Some(changed)
    }

    /// Drains this member (`on`) or ends the drain: while drained, every
    /// core asks its sessions to log out (Async Message, event 1), closes
    /// those still there once idle after 10 s, and new normal-session
    /// logins are refused with 0x0301 (service unavailable: an initiator
    /// retries later, and its multipath uses its other paths meanwhile).
    /// Returns whether it changed.
    pub fn set_draining(&self, on: bool) -> bool {
        let changed = self.draining.swap(on, Ordering::SeqCst) != on;
        if changed {
            for w in &self.wakers {
                w.wake();
            }
        }
        changed
    }

    /// Whether this member is drained.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Normal sessions logged in to this member now.
    pub fn session_count(&self) -> usize {
        self.sessions.lock().map_or(0, |s| s.by_key.len())
    }

    /// Whether a session of initiator port `port` (`<name>,i,0x<isid>`,
    /// as persistent reservations name it) is logged in here.
    pub fn has_initiator_port(&self, port: &str) -> bool {
        self.sessions.lock().is_ok_and(|s| {
            s.by_key.keys().any(|(name, isid, _)| {
                crate::scsi::ItNexus::iscsi(name, *isid, 0)
                    .initiator
                    .eq_ignore_ascii_case(port)
            })
        })
    }

    /// Refuses writes to the device `uuid` from `until` on (None: no
    /// fence): checked by every core when it submits a write. Returns
    /// whether the device is served.
    pub fn set_write_fence(&self, uuid: uuid::Uuid, until: Option<std::time::Instant>) -> bool {
        let devices = self.table();
        match devices.iter().flatten().find(|e| e.dev.spec().uuid == uuid) {
            Some(e) => {
                e.shared.ports().set_write_fence(until);
                true
            }
            None => false,
        }
    }

    /// The port-state table of the device `uuid` and this member's own
    /// state in it.
    pub fn port_states(&self, uuid: uuid::Uuid) -> Option<(PortTable, AluaState)> {
        let devices = self.table();
        let e = devices
            .iter()
            .flatten()
            .find(|e| e.dev.spec().uuid == uuid)?;
        Some((
            (*e.shared.ports().table()).clone(),
            e.shared.ports().own().1,
        ))
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

    /// Applies `new` while running: devices are matched by name (see
    /// `target::devices`): new ones are added, missing ones removed, kept
    /// ones may grow and switch read-only; block size and thin provisioning
    /// cannot change, nor can a device shrink. Targets, LUN maps, ACLs and
    /// CHAP may change freely (new logins see them at once, sessions at
    /// their next PDU). Returns what changed, or why nothing was applied.
    pub fn reconfigure(&self, new: &GatewayConfig) -> Result<Vec<String>, String> {
        let mut table = self.devices.write().unwrap_or_else(PoisonError::into_inner);
        let mut plans = Vec::with_capacity(new.devices.len());
        for (i, d) in new.devices.iter().enumerate() {
            if new.devices[..i]
                .iter()
                .any(|o| o.spec().name == d.spec().name)
            {
                return Err(format!("device `{}` is given twice", d.spec().name));
            }
            plans.push(plan_device(&table, d)?);
        }
        // Growing is the one step that can fail: first, before anything
        // else changes.
        for (d, plan) in new.devices.iter().zip(&plans) {
            if let DevicePlan::Keep(id) = plan {
                if let Some(old) = &table[*id] {
                    let size = d.spec().size;
                    old.dev.store().grow(size).map_err(|e| {
                        format!(
                            "device `{}` cannot grow to {size} bytes: {e}",
                            d.spec().name
                        )
                    })?;
                }
            }
        }
        let mut changes = Vec::new();
        // Devices that go (neither kept nor swapped) lose their persistent
        // reservation state, so that a later device of the same name starts
        // clean.
        let staying: Vec<usize> = plans
            .iter()
            .filter_map(|p| match p {
                DevicePlan::Keep(id) | DevicePlan::Swap(id) => Some(*id),
                DevicePlan::Add | DevicePlan::Replace => None,
            })
            .collect();
        for (id, slot) in table.iter_mut().enumerate() {
            if staying.contains(&id) {
                continue;
            }
            if let Some(old) = slot.take() {
                let name = old.dev.spec().name.clone();
                if let Some(path) = self.pr_path(&name) {
                    match std::fs::remove_file(&path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            tracing::warn!(device = %name, error = %e, "cannot remove the reservation state file")
                        }
                        _ => {}
                    }
                }
                changes.push(format!("device `{name}` removed"));
            }
        }
        let mut ids = Vec::with_capacity(plans.len());
        for (d, plan) in new.devices.iter().zip(plans) {
            let spec = d.spec();
            let id = match plan {
                DevicePlan::Add | DevicePlan::Replace => {
                    table.push(Some(self.entry(d.clone())));
                    changes.push(format!("device `{}` added", spec.name));
                    table.len() - 1
                }
                DevicePlan::Keep(id) => {
                    if let Some(e) = table[id].as_mut() {
                        let blocks = spec.size / u64::from(spec.block_size);
                        if blocks != e.lun.num_blocks {
                            changes.push(format!(
                                "device `{}` grown to {} bytes",
                                spec.name, spec.size
                            ));
                        }
                        if spec.read_only != e.lun.read_only {
                            changes.push(format!(
                                "device `{}` now {}",
                                spec.name,
                                if spec.read_only {
                                    "read-only"
                                } else {
                                    "writable"
                                }
                            ));
                        }
                        e.lun.num_blocks = blocks;
                        e.lun.read_only = spec.read_only;
                        // The store was grown above, so it is large enough.
                        match VirtualDevice::new(spec.clone(), Arc::clone(e.dev.store())) {
                            Ok(dev) => e.dev = dev,
                            Err(err) => {
                                tracing::error!(device = %spec.name, error = %err, "device description not updated")
                            }
                        }
                    }
                    id
                }
                DevicePlan::Swap(id) => {
                    let Some(old) = table[id].take() else {
                        continue;
                    };
                    changes.push(format!(
                        "device `{}` reopened: {}",
                        spec.name,
                        d.store().describe()
                    ));
                    table.push(Some(DeviceEntry {
                        lun: describe(d, self.max_buf()),
                        dev: d.clone(),
                        ..old
                    }));
                    table.len() - 1
                }
            };
            ids.push(id);
        }
        {
            let mut live = self.live.write().unwrap_or_else(PoisonError::into_inner);
            let targets: Vec<TargetSpec> = new
                .targets
                .iter()
                .map(|t| TargetSpec {
                    luns: t
                        .luns
                        .iter()
                        .filter_map(|(lun, dev)| Some((*lun, *ids.get(*dev)?)))
                        .collect(),
                    ..t.clone()
                })
                .collect();
            let next = Live {
                targets,
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
        if changes.is_empty() {
            return Ok(changes);
        }
        // Bumped before the table's lock is released: a snapshot never
        // pairs the new configuration with the old generation.
        self.generation.fetch_add(1, Ordering::AcqRel);
        drop(table);
        for w in &self.wakers {
            w.wake();
        }
        Ok(changes)
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
        let mut addrs: Vec<String> = self
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
        addrs.extend(
            self.peers
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .cloned(),
        );
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
        }
    }

    /// The LUN table `initiator` sees on `target` in the configuration a
    /// core has bound (`snap`), with that core's store slots (`slots[i]`
    /// for device `i`) and shared device descriptions.
    pub(super) fn lun_table(
        &self,
        snap: &Snapshot,
        target: &str,
        initiator: &str,
        slots: &[Option<StoreSlot>],
        devs: &[Option<Rc<LunDevice>>],
    ) -> Option<LunTable> {
        let t = snap.targets.iter().find(|x| x.name == target)?;
        let acl = self.acl(t, initiator)?;
        let mask = acl.and_then(|a| a.luns.as_ref());
        let mut luns: Vec<LunEntry> = t
            .luns
            .iter()
            .filter(|(lun, _)| mask.is_none_or(|m| m.contains(lun)))
            .filter_map(|(lun, id)| {
                // A device whose store this core could not register is left
                // out; the session rebuilds its table once it is.
                let e = snap.devices.get(*id)?.as_ref()?;
                Some(LunEntry {
                    lun: lun_to_wire(*lun),
                    dev: Rc::clone(devs.get(*id)?.as_ref()?),
                    slot: (*slots.get(*id)?)?,
                    shared: Arc::clone(&e.shared),
                    sanitize: Arc::clone(&e.sanitize),
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
        if req.kind == SessionKind::Normal && self.draining() {
            return Err(LoginStatus::ServiceUnavailable);
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
