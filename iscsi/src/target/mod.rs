//! The target driver: binds portals, runs one core thread per CPU, and
//! connects sockets, sessions and the data path.
//!
//! ```text
//! trellisd ─> Target::start(GatewayConfig)
//!               ├─ Registry (targets, LUN maps, ACLs, CHAP, session table) shared
//!               └─ core threads: Ring + accept/recv/send/disk per connection
//! ```
//!
//! Every core accepts on every portal; a connection lives on the core that
//! accepted it, and its disk I/O goes into that core's ring.

mod admission;
mod core;
mod devices;
mod pr_file;
mod registry;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use trellis_datapath::{RingConfig, VirtualDevice, Waker};

pub use admission::{Admission, AdmissionStats, Refusal, RefusalKind, Ticket};
pub use pr_file::FilePrStore;
pub use registry::{DeviceIo, Registry};

/// Connections one portal holds at most, by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Logins one source address may have in progress at once, by default.
pub const DEFAULT_MAX_LOGINS_PER_ADDRESS: usize = 64;

use crate::login::ChapPolicy;
use crate::scsi::{AluaState, ClusterUnit};
use crate::session::ConnConfig;

/// One initiator allowed on a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclEntry {
    /// Initiator IQN.
    pub initiator: String,
    /// CHAP the initiator must pass (None: no authentication).
    pub chap: Option<ChapPolicy>,
    /// LUNs it may see (None: all of the target's LUNs).
    pub luns: Option<Vec<u16>>,
}

/// A target: a name and its LUN map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// IQN.
    pub name: String,
    /// TargetAlias sent at login.
    pub alias: Option<String>,
    /// `(LUN, index into GatewayConfig::devices)`.
    pub luns: Vec<(u16, usize)>,
    /// Allowed initiators; `None` lets any initiator in.
    pub acl: Option<Vec<AclEntry>>,
}

/// Everything the target needs to run.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Devices, referenced by index from the targets.
    pub devices: Vec<VirtualDevice>,
    /// Targets.
    pub targets: Vec<TargetSpec>,
    /// Listening addresses.
    pub portals: Vec<SocketAddr>,
    /// Connections one portal holds at most; past it a new connection is
    /// closed at once.
    pub max_connections: usize,
    /// Connections one source address may have logging in at once (idle
    /// ones included, until the login deadline ends them).
    pub max_logins_per_address: usize,
    /// CHAP for discovery sessions (None: open discovery).
    pub discovery_chap: Option<ChapPolicy>,
    /// This member's target port group id.
    pub tpg_id: u16,
    /// This member's relative target port id.
    pub relative_port_id: u16,
    /// The access state of this member's port group for a logical unit
    /// until [`Registry::set_port_states`] sets its table: Active/Optimized
    /// for a member on its own; a cluster member serves nothing as AO
    /// before arbitration gives it a role.
    pub initial_port_state: AluaState,
    /// Connection settings.
    pub conn: ConnConfig,
    /// Core threads (0: one per CPU).
    pub cores: usize,
    /// Ring and buffer pool of each core.
    pub ring: RingConfig,
    /// Where state that outlives the process is kept (persistent
    /// reservations with APTPL, `<device>.pr`); None: nothing persists.
    /// Not used for the units of a cluster, whose log keeps that state.
    pub state_dir: Option<std::path::PathBuf>,
    /// In a cluster member: where each unit's state shared with the other
    /// members is decided (None: a gateway on its own decides alone).
    pub cluster: Option<Arc<dyn ClusterUnits>>,
}

/// Hands each logical unit of a cluster member the [`ClusterUnit`] that
/// decides its shared state.
pub trait ClusterUnits: Send + Sync + std::fmt::Debug {
    /// The decider of the device with `uuid`.
    fn unit(&self, uuid: uuid::Uuid) -> Arc<dyn ClusterUnit>;
}

/// Starting the target failed.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// A portal could not be bound.
    #[error("cannot listen on portal {addr}")]
    Bind {
        /// The portal.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A core's ring could not start.
    #[error("core {core} could not start")]
    Core {
        /// Which core.
        core: usize,
        /// Cause.
        #[source]
        source: trellis_datapath::RingError,
    },
    /// Threads or eventfds could not be created.
    #[error("cannot start core threads")]
    Threads(#[source] std::io::Error),
}

/// A running target.
#[derive(Debug)]
pub struct Target {
    registry: Arc<Registry>,
    stop: Arc<AtomicBool>,
    wakers: Vec<Arc<Waker>>,
    threads: Vec<JoinHandle<()>>,
    addrs: Vec<SocketAddr>,
}

impl Target {
    /// Binds the portals and starts the core threads. Returns once every
    /// core's ring is up (or the first one failed).
    pub fn start(cfg: GatewayConfig) -> Result<Self, TargetError> {
        let listeners: Vec<Arc<TcpListener>> = cfg
            .portals
            .iter()
            .map(|a| {
                TcpListener::bind(a)
                    .map(Arc::new)
                    .map_err(|source| TargetError::Bind { addr: *a, source })
            })
            .collect::<Result<_, _>>()?;
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        let cores = if cfg.cores == 0 {
            trellis_datapath::available_cores()
        } else {
            cfg.cores
        };
        let wakers: Vec<Arc<Waker>> = (0..cores)
            .map(|_| Waker::new().map(Arc::new))
            .collect::<Result<_, _>>()
            .map_err(TargetError::Threads)?;
        let registry = Arc::new(Registry::new(cfg, addrs.clone(), wakers.clone()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let body = {
            let registry = Arc::clone(&registry);
            let stop = Arc::clone(&stop);
            let wakers = wakers.clone();
            let listeners = listeners.clone();
            move |core: usize| {
                let ready = ready_tx.clone();
                core::run(core, &registry, &listeners, &stop, &wakers[core], ready);
            }
        };
        let threads = trellis_datapath::spawn_cores("trellis-core", cores, body)
            .map_err(TargetError::Threads)?;
        let mut target = Self {
            registry,
            stop,
            wakers,
            threads,
            addrs,
        };
        for _ in 0..cores {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err((core, source))) => {
                    target.shutdown();
                    return Err(TargetError::Core { core, source });
                }
                Err(_) => break,
            }
        }
        Ok(target)
    }

    /// The addresses the portals listen on (with real ports if 0 was asked).
    pub fn portals(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The shared registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Stops accepting, lets in-flight commands finish (bounded), flushes
    /// every store and joins the core threads.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for w in &self.wakers {
            w.wake();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for d in &self.registry.devices() {
            if let Err(e) = d.store().flush() {
                tracing::error!(device = %d.spec().name, error = %e, "flush at shutdown failed");
            }
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.shutdown();
        }
    }
}
