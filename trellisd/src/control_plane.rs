//! The replicated configuration and the management API of a cluster member:
//! a Raft node on `DATA_DIR/control.redb`, this member registering itself in
//! the configuration once there is a leader, the HTTP API on its own
//! thread, and (on a data member) a thread applying the configuration to
//! the exports as Raft applies it, and the other members' portals as the
//! failure detector sees them, woken by both (a pushed change, not a poll).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use trellis_control::config::raft::{ConfigService, RaftAddress, RaftSettings};
use trellis_control::config::{ClusterConfig, Command, ConfigStore, Member};
use trellis_control::node::{Node, NodeConfig};
use trellis_control::service::ClusterService;
use trellis_control::watch::{merged, Watch};

use trellis_iscsi::target::Registry;

use crate::config::ControlSettings;
use crate::exports::{peer_portals, Applier};
use crate::storage::Storage;

/// How often devices that could not be opened are tried again.
const EXPORTS_RETRY: Duration = Duration::from_secs(5);

/// This member as the replicated configuration lists it; a member without
/// portals is a witness.
pub fn member(node: &NodeConfig, settings: &ControlSettings, portals: Vec<SocketAddr>) -> Member {
    Member {
        id: node.identity.member.clone(),
        node_id: settings.node_id,
        links: node.links.iter().cloned().collect(),
        api: settings.api,
        witness: portals.is_empty(),
        portals,
    }
}

/// The running Raft node, API server and self-registration.
pub struct ControlPlane {
    service: Arc<ConfigService>,
    stop: Arc<AtomicBool>,
    /// Wakes the threads that wait for changes (at shutdown).
    wake: Watch,
    /// Roles, leases, port states.
    failover: Option<crate::failover::Failover>,
    threads: Vec<JoinHandle<()>>,
}

/// Starts the Raft node (forming the cluster from `voters` if it is new),
/// the API on `settings.api`, a thread that registers `me`, and with a
/// `registry` (a data member) the thread that keeps its exports those of
/// the replicated configuration.
pub fn start(
    settings: &ControlSettings,
    node: &Node,
    me: &Member,
    data_dir: &Path,
    registry: Option<Arc<Registry>>,
    shared: Option<crate::shared::SharedScsi>,
) -> Result<ControlPlane> {
    if registry.is_some() {
        // Until its exports follow the replicated configuration, a data
        // member's heartbeats say it is booting: no role for it yet.
        node.announcer()
            .set_state(trellis_control::wire::DataState {
                sessions: 0,
                healthy: true,
                booted: false,
                devices: 0,
            });
    }
    let path = data_dir.join("control.redb");
    let store = ConfigStore::open(&path)
        .with_context(|| format!("cannot open the configuration database {}", path.display()))?;
    let service = ConfigService::start(
        settings.node_id,
        settings.raft.clone(),
        store,
        settings.key.clone(),
        RaftSettings {
            protocol: settings.protocol,
            ..RaftSettings::default()
        },
    )
    .context("cannot start the Raft node")?
    .with_members(node.members_source());
    // A member among the voters forms the cluster with them (a no-op once
    // it exists); any other joins it as a learner through them.
    let learner = !settings.voters.is_empty() && !settings.voters.contains_key(&settings.node_id);
    if !learner && !settings.voters.is_empty() {
        service
            .initialize(settings.voters.clone())
            .context("cannot form the cluster from `voters`")?;
    }
    let service = Arc::new(service);
    tracing::info!(node_id = settings.node_id, raft = %settings.raft, api = %settings.api, "replicated configuration started");
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();

    // Join as a learner if this member is not a voter, then register (or
    // refresh) this member once a leader accepts writes.
    let (svc, who, stop2) = (Arc::clone(&service), me.clone(), Arc::clone(&stop));
    let voters: Vec<RaftAddress> = settings.voters.values().cloned().collect();
    threads.push(
        std::thread::Builder::new()
            .name("trellis-register".into())
            .spawn(move || {
                let mut said = String::new();
                while learner && !stop2.load(Ordering::Relaxed) {
                    match svc.join(&voters) {
                        Ok(()) => {
                            tracing::info!(member = %who.id, "joined the cluster as a learner (non-voting replica)");
                            break;
                        }
                        Err(e) => {
                            let why = e.to_string();
                            if why != said {
                                tracing::warn!(error = %why, "cannot join the cluster yet; retrying");
                                said = why;
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                while !stop2.load(Ordering::Relaxed) {
                    match svc.write_blocking(Command::UpsertMember(who.clone())) {
                        Ok(_) => {
                            tracing::info!(member = %who.id, "registered in the replicated configuration");
                            return;
                        }
                        Err(e) => tracing::debug!(error = %e, "registration waits"),
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            })
            .context("cannot start a thread")?,
    );

    // Where a data member lets the configuration put device blocks.
    let storage = match &registry {
        Some(_) => Storage::new(&settings.storage_dir, settings.block_devices.clone())
            .and_then(|s| s.with_private(data_dir))
            .with_context(|| {
                format!(
                    "[cluster] storage_dir {} cannot be resolved",
                    settings.storage_dir.display()
                )
            })?,
        None => Storage::none(),
    };
    // The exports of a data member follow the replicated configuration:
    // its thread wakes when the replica applies entries or a member's
    // state moves (and at shutdown), never on a timer but to retry.
    let wake = Watch::new();
    let changes = merged(&[&service.reader().changes(), &node.changes(), &wake]);
    let mut unserved = crate::exports::Unserved::default();
    let booted = Arc::new(AtomicBool::new(false));
    if let Some(reg) = &registry {
        let (reader, members, me_id, stop4) = (
            service.reader(),
            node.members_source(),
            me.id.clone(),
            Arc::clone(&stop),
        );
        let mut changes = changes.subscribe();
        let mut applier = Applier::new(Arc::clone(reg), storage.clone());
        let booted = Arc::clone(&booted);
        unserved = applier.unserved();
        let reg = Arc::clone(reg);
        threads.push(
            std::thread::Builder::new()
                .name("trellis-exports".into())
                .spawn(move || {
                    // The configuration applied last: none yet, so the first
                    // round applies whatever the replica holds. Entries of
                    // the log's own state do not move `config_index`.
                    let mut applied: Option<Option<u64>> = None;
                    let mut cfg = ClusterConfig::default();
                    let mut last_try = std::time::Instant::now();
                    while !stop4.load(Ordering::Relaxed) {
                        let index = reader.config_index();
                        let retry = applier.has_failures() && last_try.elapsed() >= EXPORTS_RETRY;
                        if applied != Some(index) || retry {
                            cfg = reader.config();
                            applier.apply(&cfg);
                            booted.store(true, Ordering::SeqCst);
                            applied = Some(index);
                            last_try = std::time::Instant::now();
                        }
                        reg.set_peer_portals(peer_portals(&cfg, &me_id, &members()));
                        changes.wait(EXPORTS_RETRY);
                    }
                })
                .context("cannot start a thread")?,
        );
    }

    // Reservations and the rest of the SCSI state every member shares.
    if let (Some(reg), Some(shared)) = (&registry, &shared) {
        threads.push(shared.start(
            Arc::clone(&service),
            node.members_source(),
            Arc::clone(reg),
            node.announcer(),
            me.id.clone(),
            wake.clone(),
            Arc::clone(&stop),
        )?);
    }

    // Roles, leases and port states.
    let failover = crate::failover::start(
        crate::failover::Sources {
            service: Arc::clone(&service),
            members: node.members_source(),
            changes: changes.clone(),
            announcer: node.announcer(),
            announced: node.announced_source(),
            unserved: registry.as_ref().map(|_| Arc::clone(&unserved)),
            booted: registry.as_ref().map(|_| Arc::clone(&booted)),
            me: me.id.clone(),
            stop: Arc::clone(&stop),
        },
        registry.clone(),
    )?;

    // The management API, with this member's data path: its counters on
    // /metrics, and its view of the storage checking new devices' backings.
    let serve_stats = Arc::new(trellis_control::api::ServeStats::default());
    let api_max = settings.api_serve.max_connections;
    let dyn_service: Arc<dyn ClusterService> = Arc::clone(&service) as Arc<dyn ClusterService>;
    let failover_stats = failover.stats();
    let reader = service.reader();
    let local = match registry {
        Some(reg) => {
            let who = me.id.to_string();
            let served = Arc::clone(&reg);
            let stats = Arc::clone(&serve_stats);
            trellis_control::api::Local {
                announcer: Some(node.announcer()),
                metrics: Arc::new(move || {
                    let unserved = unserved
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone();
                    crate::metrics::render(&reg.device_io(), &unserved)
                        + &crate::metrics::render_admission(&reg.admission().stats())
                        + &crate::failover::render(&failover_stats, &reader.state())
                        + &stats.render(api_max)
                }),
                member: who.clone(),
                check_backing: Arc::new(move |d| {
                    // The device this member serves from a path, if any.
                    let owner = |p: &Path| {
                        served
                            .devices()
                            .iter()
                            .find(|v| v.store().path() == Some(p))
                            .map(|v| v.spec().name.clone())
                    };
                    storage.check(&who, d, &owner)
                }),
                ..trellis_control::api::Local::default()
            }
        }
        None => {
            let stats = Arc::clone(&serve_stats);
            trellis_control::api::Local {
                metrics: Arc::new(move || stats.render(api_max)),
                ..trellis_control::api::Local::default()
            }
        }
    };
    let tls = match &settings.api_serve.tls {
        Some((cert, key)) => Some(
            trellis_control::api::tls_config(cert, key)
                .context("cannot set up TLS for the management API")?,
        ),
        None => None,
    };
    let options = trellis_control::api::ServeOptions {
        max_connections: api_max,
        max_per_address: settings.api_serve.max_per_address,
        header_timeout: settings.api_serve.header_timeout,
        request_timeout: settings.api_serve.request_timeout,
        tls,
        stats: serve_stats,
    };
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let router = trellis_control::api::router(dyn_service, settings.api_token.clone(), local);
    let addr = settings.api;
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot listen for the management API on {addr}"))?;
    listener.set_nonblocking(true).context("API listener")?;
    let stop3 = Arc::clone(&stop);
    threads.push(
        std::thread::Builder::new()
            .name("trellis-api".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the API runtime");
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot serve the management API");
                            return;
                        }
                    };
                    let shutdown = async move {
                        while !stop3.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    };
                    if let Err(e) =
                        trellis_control::api::serve_with(listener, router, options, shutdown).await
                    {
                        tracing::error!(error = %e, "management API stopped");
                    }
                });
            })
            .context("cannot start a thread")?,
    );
    tracing::info!(api = %addr, scheme, "management API listening");
    Ok(ControlPlane {
        service,
        stop,
        wake,
        threads,
        failover: Some(failover),
    })
}

impl ControlPlane {
    /// Stops the API and the Raft node.
    pub fn shutdown(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify();
        if let Some(f) = self.failover {
            f.join();
        }
        for t in self.threads {
            let _ = t.join();
        }
        match Arc::try_unwrap(self.service) {
            Ok(s) => {
                if let Err(e) = s.shutdown() {
                    tracing::warn!(error = %e, "Raft node did not stop cleanly");
                }
            }
            Err(_) => tracing::warn!("Raft node still in use at shutdown"),
        }
    }
}
