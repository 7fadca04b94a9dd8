//! `trellisd`: one Trellis gateway member.
//!
//! Reads its configuration (or the embedded default), opens the backing
//! stores, starts the per-core iSCSI target and runs until SIGINT/SIGTERM,
//! then drains in-flight commands, flushes and exits 0. SIGHUP re-reads the
//! configuration file and applies it while running (devices come and go,
//! grow, switch read-only; targets, LUN maps, ACLs and CHAP change); a
//! configuration it cannot apply is logged and nothing changes.
#![forbid(unsafe_code)]

mod caw;
mod config;
mod control_plane;
mod exports;
mod failover;
mod metrics;
mod shared;
mod storage;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use trellis_iscsi::target::Target;

/// Trellis gateway member: serves virtual block devices over iSCSI.
///
/// Without --config it runs the embedded default: data directory
/// ./trellis-data, one 1 GiB sparse thin file-backed device `disk0`, target
/// iqn.2026-11.io.trellis:default with disk0 at LUN 0, portal 127.0.0.1:3260,
/// any initiator allowed.
///
/// SIGHUP reloads the --config file: devices may be added, removed, grown
/// (hosts see CAPACITY DATA HAS CHANGED) or switched read-only; targets,
/// LUN maps, ACLs and CHAP may change (REPORTED LUNS DATA HAS CHANGED).
#[derive(Debug, Parser)]
#[command(name = "trellisd", version, about, long_about)]
struct Args {
    /// TOML configuration file (devices, targets, LUN maps, portals, ACLs, CHAP).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory for file-backed devices with relative paths.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Portal to listen on, HOST:PORT (repeatable; replaces the configured portals).
    #[arg(long = "portal", value_name = "HOST:PORT")]
    portals: Vec<String>,
    /// Core threads (default: one per CPU).
    #[arg(long, value_name = "N")]
    cores: Option<usize>,
    /// Print the embedded default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Run as a witness: a Raft voter with no portals and no data path (for
    /// two-member sites); needs `[cluster]` with node_id, raft, api and
    /// api_token. Same as `witness = true` in `[cluster]`.
    #[arg(long)]
    witness: bool,
    /// Speak this control protocol version (MAJOR.MINOR) instead of this
    /// build's: rehearses a mixed-version cluster, where members of another
    /// major version are refused.
    #[arg(long, value_name = "MAJOR.MINOR", hide = true)]
    control_protocol: Option<String>,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Args::parse()) {
        eprintln!("trellisd: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    if args.print_default_config {
        print!("{}", config::DEFAULT_CONFIG);
        return Ok(());
    }
    // Every connection, store and Raft peer is a descriptor: take what the
    // hard limit allows rather than the 1024 shells hand out.
    match trellis_datapath::raise_nofile_limit() {
        Ok(((soft, hard), now)) => {
            tracing::info!(soft, hard, now, "open-file limit (RLIMIT_NOFILE)")
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let (name, text) = match &args.config {
        Some(path) => (
            path.display().to_string(),
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?,
        ),
        None => (
            "<embedded default>".to_owned(),
            config::DEFAULT_CONFIG.to_owned(),
        ),
    };
    let over = config::Overrides {
        data_dir: args.data_dir.clone(),
        portals: args.portals.clone(),
        cores: args.cores,
    };
    if args.witness || config::is_witness(&name, &text)? {
        return run_witness(&args, &name, &text, &over);
    }
    let (mut cfg, data_dir) = config::load(&name, &text, &over)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
        .context("cannot install signal handlers")?;
    let (cluster, control) = cluster_settings(&args, &name, &text, &over)?;
    if let Some(c) = &control {
        // Not created here: a missing directory is more likely shared
        // storage that is not mounted than one to make on the local disk.
        if !c.storage_dir.is_dir() {
            anyhow::bail!(
                "{name}: [cluster] storage_dir {} is not a directory (is the shared storage mounted? create it first)",
                c.storage_dir.display()
            );
        }
    }
    // This member as the replicated configuration lists it.
    let cluster_self = match (&cluster, &control) {
        (Some(n), Some(c)) => Some(control_plane::member(n, c, cfg.portals.clone())),
        _ => None,
    };
    // A cluster member's units share their SCSI state (reservations) with
    // the other members through the replicated log.
    let shared = match &control {
        Some(_) => Some(shared::SharedScsi::new()?),
        None => None,
    };
    if let Some(s) = &shared {
        // A cluster member serves nothing Active/Optimized before a role
        // is committed for it (Boot Service).
        cfg.initial_port_state = trellis_iscsi::scsi::AluaState::Transitioning;
        cfg.cluster = Some(Arc::new(s.clone()));
    }
    let targets: Vec<String> = cfg.targets.iter().map(|t| t.name.clone()).collect();
    let mut target = Target::start(cfg)?;
    let node = match cluster {
        Some(c) => {
            let links: Vec<String> = c.links.iter().map(|(l, a)| format!("{l}={a}")).collect();
            let node = trellis_control::node::Node::start(c)
                .context("cannot start the cluster control node")?;
            tracing::info!(member = %node.member(), links = ?links, "cluster control node started");
            Some(node)
        }
        None => None,
    };
    let plane = match (&control, &node, &cluster_self) {
        (Some(c), Some(n), Some(me)) => Some(control_plane::start(
            c,
            n,
            me,
            &data_dir,
            Some(Arc::clone(target.registry())),
            shared.clone(),
        )?),
        _ => None,
    };
    tracing::info!(
        portals = ?target.portals(),
        targets = ?targets,
        data_dir = %data_dir.display(),
        "trellisd serving"
    );
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        if hup.swap(false, Ordering::SeqCst) {
            if plane.is_some() {
                tracing::warn!("SIGHUP: this member's devices and targets come from the replicated configuration (change them with `trellis`); nothing to reload");
            } else {
                reload(args.config.as_deref(), &over, &target);
            }
        }
    }
    tracing::info!("signal received: stopping");
    if let Some(p) = plane {
        p.shutdown();
    }
    if let Some(n) = node {
        n.shutdown();
    }
    target.shutdown();
    tracing::info!("stopped cleanly");
    Ok(())
}

/// SIGHUP: re-reads the configuration file and applies what changed.
fn reload(path: Option<&std::path::Path>, over: &config::Overrides, target: &Target) {
    let Some(path) = path else {
        tracing::warn!("SIGHUP: running the embedded default, no file to reload");
        return;
    };
    let name = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(file = %name, error = %e, "SIGHUP: cannot read the configuration; nothing changed");
            return;
        }
    };
    let cfg = match config::load(&name, &text, over) {
        Ok((cfg, _)) => cfg,
        Err(e) => {
            tracing::error!(file = %name, "SIGHUP: {e:#}; nothing changed");
            return;
        }
    };
    match target.registry().reconfigure(&cfg) {
        Ok(changes) if changes.is_empty() => {
            tracing::info!(file = %name, "SIGHUP: configuration reloaded, nothing changed")
        }
        Ok(changes) => tracing::info!(file = %name, ?changes, "SIGHUP: configuration applied"),
        Err(e) => tracing::error!(file = %name, "SIGHUP: {e}; nothing changed"),
    }
}

/// `[cluster]`'s control node and Raft settings, with `--control-protocol`.
fn cluster_settings(
    args: &Args,
    name: &str,
    text: &str,
    over: &config::Overrides,
) -> Result<(
    Option<trellis_control::node::NodeConfig>,
    Option<config::ControlSettings>,
)> {
    let mut cluster = config::load_cluster(name, text)?;
    let mut control = config::load_control(name, text, over)?;
    if let Some(p) = &args.control_protocol {
        let p = config::parse_protocol(p).context("--control-protocol")?;
        if let Some(c) = &mut cluster {
            c.identity.protocol = p;
        }
        if let Some(c) = &mut control {
            c.protocol = p;
        }
    }
    Ok((cluster, control))
}

/// A witness: the control node, the Raft voter and the API, no target.
fn run_witness(args: &Args, name: &str, text: &str, over: &config::Overrides) -> Result<()> {
    let (Some(cluster), Some(control)) = cluster_settings(args, name, text, over)? else {
        anyhow::bail!("{name}: a witness needs [cluster] with node_id, raft, api and api_token");
    };
    let data_dir = config::data_dir(name, text, over)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }
    // No portals: a witness.
    let me = control_plane::member(&cluster, &control, Vec::new());
    let node = trellis_control::node::Node::start(cluster)
        .context("cannot start the cluster control node")?;
    let plane = control_plane::start(&control, &node, &me, &data_dir, None, None)?;
    tracing::info!(member = %me.id, data_dir = %data_dir.display(), "trellisd serving as a witness (Raft voter, no data path)");
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!("signal received: stopping");
    plane.shutdown();
    node.shutdown();
    tracing::info!("stopped cleanly");
    Ok(())
}
