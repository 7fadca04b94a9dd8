//! trellisd's TOML configuration, its embedded default, and validation into
//! the target's [`GatewayConfig`].
//!
//! Errors name the file, the line and what is wrong.

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use toml::Spanned;
use trellis_control::config::RaftAddress;
use trellis_control::discovery::Identity;
use trellis_control::node::NodeConfig;
use trellis_control::wire::ClusterKey;
use trellis_control::{ClusterId, LinkName, MemberId, ProtocolVersion};
use trellis_datapath::{
    BackingStore, DeviceSpec, FileStore, MemoryStore, RingConfig, VirtualDevice,
};
use trellis_iscsi::login::ChapPolicy;
use trellis_iscsi::session::ConnConfig;
use trellis_iscsi::target::{AclEntry, GatewayConfig, TargetSpec};
use uuid::Uuid;

/// The configuration used when trellisd runs without `--config`.
pub const DEFAULT_CONFIG: &str = r#"# Embedded default: one 1 GiB sparse (thin) file-backed device on loopback.
data_dir = "./trellis-data"
portals = ["127.0.0.1:3260"]

[[device]]
name = "disk0"
size = "1GiB"
path = "disk0.img"
thin = true

[[target]]
name = "iqn.2026-11.io.trellis:default"
luns = [{ lun = 0, device = "disk0" }]
"#;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    data_dir: Option<PathBuf>,
    #[serde(default)]
    portals: Vec<Spanned<String>>,
    #[serde(default)]
    cores: usize,
    #[serde(default)]
    iscsi: IscsiSection,
    #[serde(default, rename = "device")]
    devices: Vec<DeviceSection>,
    #[serde(default, rename = "target")]
    targets: Vec<TargetSection>,
    discovery: Option<ChapSection>,
    cluster: Option<ClusterSection>,
}

/// `[cluster]`: this member's place in a cluster (absent: a lone gateway).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterSection {
    /// The cluster's name; members of other clusters are refused.
    id: Spanned<String>,
    /// This member's name, unique in the cluster.
    member: Spanned<String>,
    /// The shared cluster key (at least 16 characters).
    key: Spanned<String>,
    /// Control addresses, one per redundant network (two or more).
    links: Vec<Spanned<LinkSection>>,
    /// Static addresses of other members, for networks without multicast.
    #[serde(default)]
    seeds: Vec<Spanned<SeedSection>>,
    /// Advertise and browse with DNS-SD over mDNS on the links.
    #[serde(default = "yes")]
    mdns: bool,
    /// This member's Raft node id (with `raft`, `api`, `api_token`: the
    /// replicated configuration and the management API run here).
    node_id: Option<u64>,
    /// Where this member serves Raft: one address, or one per storage
    /// network (a list), so Raft and the leases survive losing a network.
    raft: Option<Spanned<Addresses>>,
    /// Where this member serves the management API.
    api: Option<Spanned<String>>,
    /// The token API clients must present.
    api_token: Option<Spanned<String>>,
    /// The initial voters, to form a new cluster (every voter lists the
    /// same set; ignored once the cluster exists). A member not among them
    /// joins the cluster through them as a learner.
    #[serde(default)]
    voters: Vec<Spanned<VoterSection>>,
    /// A witness: a Raft voter with no portals and no data path.
    #[serde(default)]
    witness: bool,
    /// Where this member reaches the cluster's shared storage: device
    /// backings with relative paths live here (default: the data
    /// directory). The replicated configuration may put device files
    /// nowhere else.
    storage_dir: Option<PathBuf>,
    /// Block devices the replicated configuration may export (absolute
    /// paths; `*` and `?` match within a component, e.g.
    /// `/dev/disk/by-id/wwn-*`); none by default.
    #[serde(default)]
    block_devices: Vec<Spanned<PathBuf>>,
    /// The API's TLS certificate chain (PEM); with `api_tls_key`.
    api_tls_cert: Option<PathBuf>,
    /// The API's TLS private key (PEM).
    api_tls_key: Option<PathBuf>,
    /// Serve the API in plain HTTP on a non-loopback address (the token
    /// then crosses the network in clear): an explicit opt-in.
    #[serde(default)]
    api_plaintext: bool,
    /// API connections held at once.
    api_max_connections: Option<usize>,
    /// API connections one source address may hold at once.
    api_max_connections_per_address: Option<usize>,
    /// Seconds a client has to send a request's headers (or finish the
    /// TLS handshake); an idle connection is closed after it too.
    api_header_timeout_secs: Option<u64>,
    /// Seconds one API request may take in all.
    api_request_timeout_secs: Option<u64>,
}

impl ClusterSection {
    /// This data member's port id (target port group, relative target port,
    /// portal group tag): its `node_id`, which must fit 1..=65535; `None`
    /// without a node id.
    fn port_id(&self, src: &Source<'_>) -> Result<Option<u16>> {
        match self.node_id {
            None => Ok(None),
            Some(id) => u16::try_from(id)
                .ok()
                .filter(|&id| id != 0)
                .map(Some)
                .ok_or_else(|| {
                    anyhow!(
                        "{}: node_id {id} must be 1..=65535 (it is also this member's target port group id)",
                        src.at(&self.id)
                    )
                }),
        }
    }

    /// Whether this member runs the replicated configuration (and so takes
    /// its devices and targets from it).
    fn replicated(&self) -> bool {
        self.node_id.is_some()
            || self.raft.is_some()
            || self.api.is_some()
            || self.api_token.is_some()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VoterSection {
    id: u64,
    raft: Addresses,
}

/// `"IP:PORT"` or `["IP:PORT", ...]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Addresses {
    One(String),
    Many(Vec<String>),
}

impl Addresses {
    /// The Raft address these name: each must be an `IP:PORT` that is not
    /// a wildcard, with no repeats; `what` names them in an error.
    fn raft_address(&self, what: &str) -> Result<RaftAddress> {
        let list = match self {
            Addresses::One(a) => std::slice::from_ref(a),
            Addresses::Many(v) => v.as_slice(),
        };
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for a in list {
            let addr: SocketAddr = a
                .parse()
                .map_err(|_| anyhow!("{what}: bad raft address {a:?} (expected IP:PORT)"))?;
            if addr.ip().is_unspecified() {
                bail!("{what}: raft address {addr} is a wildcard; give the address the other members reach this one at");
            }
            if addrs.contains(&addr) {
                bail!("{what}: raft address {addr} is listed twice");
            }
            addrs.push(addr);
        }
        RaftAddress::new(addrs).ok_or_else(|| anyhow!("{what}: raft lists no address"))
    }
}

/// The replicated configuration and management API settings of `[cluster]`.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    /// Raft node id.
    pub node_id: u64,
    /// Raft address (one per network).
    pub raft: RaftAddress,
    /// Management API address.
    pub api: SocketAddr,
    /// API token.
    pub api_token: String,
    /// Initial voters.
    pub voters: std::collections::BTreeMap<u64, RaftAddress>,
    /// Where relative device backings live (shared storage), and the only
    /// place device files may be.
    pub storage_dir: PathBuf,
    /// Patterns of the block devices devices may be backed by.
    pub block_devices: Vec<PathBuf>,
    /// How the API serves: TLS, caps, timeouts.
    pub api_serve: ApiServe,
    /// The cluster key, which authenticates Raft connections too.
    pub key: ClusterKey,
    /// The control protocol spoken (Raft refuses other majors too).
    pub protocol: ProtocolVersion,
}

/// How the management API serves connections.
#[derive(Debug, Clone)]
pub struct ApiServe {
    /// TLS certificate chain and key (PEM files); `None`: plain HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Connections held at once.
    pub max_connections: usize,
    /// Connections one source address may hold.
    pub max_per_address: usize,
    /// Time for a request's headers (and idle keep-alive).
    pub header_timeout: std::time::Duration,
    /// Time for a whole request.
    pub request_timeout: std::time::Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkSection {
    name: String,
    addr: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedSection {
    link: String,
    addr: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IscsiSection {
    max_recv_data_segment_length: Option<u32>,
    max_burst_length: Option<u32>,
    first_burst_length: Option<u32>,
    max_outstanding_r2t: Option<u32>,
    immediate_data: Option<bool>,
    initial_r2t: Option<bool>,
    cmdsn_window: Option<u32>,
    nop_interval_secs: Option<u64>,
    nop_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    max_logins_per_address: Option<usize>,
    max_protocol_errors: Option<u32>,
    target_portal_group_tag: Option<u16>,
    target_port_group: Option<u16>,
    relative_target_port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceSection {
    name: Spanned<String>,
    size: Spanned<Size>,
    path: Option<PathBuf>,
    #[serde(default)]
    memory: bool,
    uuid: Option<Spanned<String>>,
    #[serde(default = "default_block_size")]
    block_size: Spanned<u32>,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    thin: bool,
    #[serde(default = "yes")]
    direct: bool,
}

fn default_block_size() -> Spanned<u32> {
    Spanned::new(0..0, 512)
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetSection {
    name: Spanned<String>,
    alias: Option<String>,
    #[serde(default)]
    luns: Vec<Spanned<LunSection>>,
    acl: Option<Vec<AclSection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LunSection {
    lun: u16,
    device: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AclSection {
    initiator: Spanned<String>,
    chap_user: Option<String>,
    chap_secret: Option<String>,
    mutual_user: Option<String>,
    mutual_secret: Option<String>,
    luns: Option<Vec<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChapSection {
    chap_user: Option<String>,
    chap_secret: Option<String>,
    mutual_user: Option<String>,
    mutual_secret: Option<String>,
}

/// Command-line overrides applied on top of the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--portal` (replaces the file's portals when given).
    pub portals: Vec<String>,
    /// `--cores`.
    pub cores: Option<usize>,
}

/// Where the config came from, for messages.
struct Source<'a> {
    name: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn line(&self, span: std::ops::Range<usize>) -> usize {
        self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn at<T>(&self, s: &Spanned<T>) -> String {
        if s.span().end == 0 {
            self.name.to_owned()
        } else {
            format!("{}:{}", self.name, self.line(s.span()))
        }
    }
}

/// Parses, validates and opens everything the configuration names.
pub fn load(name: &str, text: &str, over: &Overrides) -> Result<(GatewayConfig, PathBuf)> {
    let src = Source { name, text };
    let file: File = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| format!(":{}", src.line(s)))
            .unwrap_or_default();
        anyhow!("{name}{line}: {}", e.message())
    })?;
    let data_dir = chosen_data_dir(file.data_dir.clone(), over);
    private_dir(&data_dir)?;

    let portal_texts: Vec<(String, String)> = if over.portals.is_empty() {
        file.portals
            .iter()
            .map(|p| (p.get_ref().clone(), src.at(p)))
            .collect()
    } else {
        over.portals
            .iter()
            .map(|p| (p.clone(), "--portal".to_owned()))
            .collect()
    };
    if portal_texts.is_empty() {
        bail!(
            "{name}: no portals: add `portals = [\"127.0.0.1:3260\"]` or pass --portal HOST:PORT"
        );
    }
    let mut portals = Vec::new();
    for (p, at) in &portal_texts {
        portals.push(parse_portal(p).with_context(|| format!("{at}: bad portal {p:?}"))?);
    }

    // A member of a cluster with the replicated configuration takes its
    // devices, targets and discovery CHAP from it, and its port ids from
    // its node id.
    let replicated = file.cluster.as_ref().filter(|c| c.replicated());
    if let Some(c) = replicated {
        let at = src.at(&c.id);
        let local = [
            (!file.devices.is_empty(), "[[device]]"),
            (!file.targets.is_empty(), "[[target]]"),
            (file.discovery.is_some(), "[discovery]"),
        ];
        if let Some((_, what)) = local.iter().find(|(present, _)| *present) {
            bail!(
                "{at}: this member runs the replicated configuration ([cluster] with node_id, raft, api, api_token), which holds the cluster's devices, targets and CHAP: remove {what} from {name} and create them with `trellis device create`, `trellis target create`, ..."
            );
        }
        let i = &file.iscsi;
        if i.target_portal_group_tag.is_some()
            || i.target_port_group.is_some()
            || i.relative_target_port.is_some()
        {
            bail!(
                "{name}: [iscsi] target_portal_group_tag, target_port_group and relative_target_port are set from node_id in a cluster member (unique cluster-wide); remove them"
            );
        }
    }
    let port_id = match replicated {
        Some(c) => c.port_id(&src)?,
        None => None,
    };

    let mut devices = Vec::new();
    let mut names = Vec::new();
    for d in &file.devices {
        let at = src.at(&d.name);
        let name = d.name.get_ref();
        if names.contains(name) {
            bail!("{at}: device {name:?} is defined twice");
        }
        devices.push(open_device(d, &data_dir).with_context(|| format!("{at}: device {name:?}"))?);
        names.push(name.clone());
    }

    let mut targets = Vec::new();
    let mut seen = HashSet::new();
    for t in &file.targets {
        let at = src.at(&t.name);
        let tname = t.name.get_ref();
        if !tname.starts_with("iqn.") && !tname.starts_with("eui.") && !tname.starts_with("naa.") {
            bail!("{at}: target name {tname:?} is not an iSCSI name (iqn., eui. or naa.)");
        }
        if !seen.insert(tname.clone()) {
            bail!("{at}: target {tname:?} is defined twice");
        }
        let mut luns = Vec::new();
        for l in &t.luns {
            let lat = src.at(l);
            let l = l.get_ref();
            let Some(dev) = names.iter().position(|n| *n == l.device) else {
                bail!(
                    "{lat}: target {tname:?} LUN {} names unknown device {:?}",
                    l.lun,
                    l.device
                );
            };
            if luns.iter().any(|(n, _)| *n == l.lun) {
                bail!("{lat}: target {tname:?} maps LUN {} twice", l.lun);
            }
            if l.lun > 16383 {
                bail!("{lat}: LUN {} is out of range (0..=16383)", l.lun);
            }
            luns.push((l.lun, dev));
        }
        let acl = match &t.acl {
            None => None,
            Some(list) => Some(
                list.iter()
                    .map(|a| {
                        let chap = chap_policy(
                            a.initiator.get_ref(),
                            &a.chap_user,
                            &a.chap_secret,
                            &a.mutual_user,
                            &a.mutual_secret,
                        )
                        .with_context(|| {
                            format!(
                                "{}: ACL for {:?}",
                                src.at(&a.initiator),
                                a.initiator.get_ref()
                            )
                        })?;
                        Ok(AclEntry {
                            initiator: a.initiator.get_ref().clone(),
                            chap,
                            luns: a.luns.clone(),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
        };
        targets.push(TargetSpec {
            name: tname.clone(),
            alias: t.alias.clone(),
            luns,
            acl,
        });
    }
    let discovery_chap = match &file.discovery {
        None => None,
        Some(d) => chap_policy(
            "discovery",
            &d.chap_user,
            &d.chap_secret,
            &d.mutual_user,
            &d.mutual_secret,
        )
        .with_context(|| format!("{name}: [discovery]"))?,
    };

    let mut conn = ConnConfig::default();
    let i = &file.iscsi;
    let l = &mut conn.limits;
    // Data segments land in a per-connection receive buffer: 64 KiB keeps
    // memory flat as sessions grow while large transfers still stream.
    l.max_recv_data_segment_length = i.max_recv_data_segment_length.unwrap_or(64 * 1024);
    if let Some(v) = i.max_burst_length {
        l.max_burst_length = v;
    }
    l.first_burst_length = i.first_burst_length.unwrap_or(64 * 1024);
    if let Some(v) = i.max_outstanding_r2t {
        l.max_outstanding_r2t = v;
    }
    if let Some(v) = i.immediate_data {
        l.immediate_data = v;
    }
    l.initial_r2t = i.initial_r2t.unwrap_or(true);
    if let Some(v) = i.cmdsn_window {
        l.cmdsn_window = v;
    }
    if let Some(v) = i.target_portal_group_tag.or(port_id) {
        l.target_portal_group_tag = v;
    }
    if !(512..=16_777_215).contains(&l.max_recv_data_segment_length) {
        bail!("{name}: [iscsi] max_recv_data_segment_length must be 512..=16777215");
    }
    if let Some(s) = i.nop_interval_secs {
        conn.nop_interval = std::time::Duration::from_secs(s.max(1));
    }
    if let Some(s) = i.nop_timeout_secs {
        conn.nop_timeout = std::time::Duration::from_secs(s.max(1));
    }
    if let Some(n) = i.max_protocol_errors {
        conn.max_protocol_errors = n;
    }
    let max_connections = match i.max_connections {
        Some(0) => bail!("{name}: [iscsi] max_connections must be at least 1"),
        Some(n) => n,
        None => default_max_connections(portals.len()),
    };
    let max_logins_per_address = match i.max_logins_per_address {
        Some(0) => bail!("{name}: [iscsi] max_logins_per_address must be at least 1"),
        Some(n) => n,
        None => trellis_iscsi::target::DEFAULT_MAX_LOGINS_PER_ADDRESS,
    };
    let cfg = GatewayConfig {
        devices,
        targets,
        max_connections,
        max_logins_per_address,
        portals,
        discovery_chap,
        tpg_id: i.target_port_group.or(port_id).unwrap_or(1),
        relative_port_id: i.relative_target_port.or(port_id).unwrap_or(1),
        initial_port_state: trellis_iscsi::scsi::AluaState::ActiveOptimized,
        conn,
        cores: over.cores.unwrap_or(file.cores),
        ring: RingConfig::default(),
        state_dir: Some(data_dir.clone()),
        cluster: None,
    };
    Ok((cfg, data_dir))
}

/// Descriptors kept out of the portals' budget: stores, Raft, the API's
/// connections, logs.
const FD_RESERVE: u64 = 512;

/// The default cap of connections per portal: 1024, or less where the
/// open-file limit cannot hold that many on every portal besides the
/// member's other descriptors (then a flood is refused at the cap rather
/// than running the process out of descriptors).
fn default_max_connections(portals: usize) -> usize {
    let default = trellis_iscsi::target::DEFAULT_MAX_CONNECTIONS;
    let Ok((soft, _)) = trellis_datapath::nofile_limit() else {
        return default;
    };
    let budget = soft.saturating_sub(FD_RESERVE) / portals.max(1) as u64;
    let cap = usize::try_from(budget)
        .unwrap_or(usize::MAX)
        .clamp(16, default);
    if cap < default {
        tracing::warn!(
            open_files = soft,
            cap,
            "the open-file limit holds {cap} connections per portal, not {default}: raise the hard RLIMIT_NOFILE (LimitNOFILE= in systemd) for more"
        );
    }
    cap
}

fn parse_portal(p: &str) -> Result<SocketAddr> {
    if let Ok(a) = p.parse::<SocketAddr>() {
        return Ok(a);
    }
    let with_port = if p.contains(':') {
        p.to_owned()
    } else {
        format!("{p}:3260")
    };
    with_port
        .to_socket_addrs()
        .context("expected HOST:PORT, e.g. 127.0.0.1:3260 or [::1]:3260")?
        .next()
        .ok_or_else(|| anyhow!("{p} resolves to no address"))
}

/// Whether `[cluster]` says `witness = true`.
pub fn is_witness(name: &str, text: &str) -> Result<bool> {
    let file: File = toml::from_str(text).map_err(|e| anyhow!("{name}: {}", e.message()))?;
    Ok(file.cluster.is_some_and(|c| c.witness))
}

/// `p` as a path that stays right when the daemon's working directory
/// changes: relative paths are taken from the current one.
fn from_cwd(p: &PathBuf) -> PathBuf {
    if p.is_relative() {
        std::env::current_dir().map_or_else(|_| p.clone(), |cwd| cwd.join(p))
    } else {
        p.clone()
    }
}

/// `--data-dir`, else the file's `data_dir`, else ./trellis-data.
fn chosen_data_dir(from_file: Option<PathBuf>, over: &Overrides) -> PathBuf {
    over.data_dir
        .clone()
        .or(from_file)
        .unwrap_or_else(|| PathBuf::from("./trellis-data"))
}

/// The data directory (`--data-dir`, else `data_dir`, else ./trellis-data),
/// created if missing.
pub fn data_dir(name: &str, text: &str, over: &Overrides) -> Result<PathBuf> {
    let file: File = toml::from_str(text).map_err(|e| anyhow!("{name}: {}", e.message()))?;
    let dir = chosen_data_dir(file.data_dir, over);
    private_dir(&dir)?;
    Ok(dir)
}

/// Creates the data directory `dir` (and missing parents) with mode 0700.
/// An existing one open to others is narrowed (group and other bits
/// cleared, special bits kept) when it holds this member's state from an
/// older install (a configuration database, UUID or reservation files);
/// any other directory is left as it is, with a warning.
fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("cannot examine data directory {}", dir.display()))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    let ours = dir.join("control.redb").exists()
        || std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.ends_with(".uuid") || name.ends_with(".pr")
            })
        });
    if ours {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & !0o077))
            .with_context(|| {
                format!("cannot narrow data directory {} to mode 700", dir.display())
            })?;
        tracing::info!(dir = %dir.display(), old = format!("{mode:o}"), "data directory narrowed to mode 700");
    } else {
        tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), "the data directory is open to other users; Trellis keeps secrets and reservation keys there: chmod 700 it or choose a directory of its own");
    }
    Ok(())
}

/// The Raft and API settings of `[cluster]`, if it has `node_id`, `raft`,
/// `api` and `api_token` (all four or none); errors name the file and line.
pub fn load_control(name: &str, text: &str, over: &Overrides) -> Result<Option<ControlSettings>> {
    let src = Source { name, text };
    let file: File = toml::from_str(text).map_err(|e| anyhow!("{name}: {}", e.message()))?;
    let Some(c) = file.cluster else {
        return Ok(None);
    };
    let (Some(node_id), Some(raft), Some(api), Some(token)) =
        (c.node_id, &c.raft, &c.api, &c.api_token)
    else {
        if c.replicated() {
            bail!(
                "{}: [cluster] needs all of node_id, raft, api and api_token for the replicated configuration, or none",
                src.at(&c.id)
            );
        }
        return Ok(None);
    };
    let addr = |s: &Spanned<String>, what: &str| -> Result<SocketAddr> {
        s.get_ref().parse().map_err(|_| {
            anyhow!(
                "{}: bad {what} address {:?} (expected IP:PORT)",
                src.at(s),
                s.get_ref()
            )
        })
    };
    if token.get_ref().len() < 16 {
        bail!(
            "{}: api_token must be at least 16 characters",
            src.at(token)
        );
    }
    let mut voters = std::collections::BTreeMap::new();
    for v in &c.voters {
        let at = src.at(v);
        let v = v.get_ref();
        let a = v.raft.raft_address(&format!("{at}: voter {}", v.id))?;
        voters.insert(v.id, a);
    }
    if !c.witness {
        c.port_id(&src)?;
    }
    let data_dir = chosen_data_dir(file.data_dir, over);
    let storage_dir = c.storage_dir.as_ref().map_or(data_dir, from_cwd);
    let mut block_devices = Vec::new();
    for p in &c.block_devices {
        crate::storage::check_pattern(p.get_ref()).map_err(|e| anyhow!("{}: {e}", src.at(p)))?;
        block_devices.push(p.get_ref().clone());
    }

    let key = ClusterKey::new(c.key.get_ref().as_bytes())
        .map_err(|e| anyhow!("{}: {e}", src.at(&c.key)))?;
    let api_addr = addr(api, "api")?;
    let tls = match (&c.api_tls_cert, &c.api_tls_key) {
        (Some(cert), Some(key)) => Some((from_cwd(cert), from_cwd(key))),
        (None, None) => None,
        _ => bail!(
            "{}: [cluster] api_tls_cert and api_tls_key go together (the API's certificate chain and its private key, PEM)",
            src.at(api)
        ),
    };
    if tls.is_none() && !api_addr.ip().is_loopback() && !c.api_plaintext {
        bail!(
            "{}: api {api_addr} is not a loopback address: give the API a certificate (api_tls_cert, api_tls_key) so the token does not cross the network in clear, or set api_plaintext = true to serve plain HTTP anyway",
            src.at(api)
        );
    }
    let positive = |v: Option<u64>, default: u64, what: &str| -> Result<std::time::Duration> {
        match v {
            Some(0) => bail!("{}: [cluster] {what} must be at least 1", src.at(api)),
            v => Ok(std::time::Duration::from_secs(v.unwrap_or(default))),
        }
    };
    let api_serve = ApiServe {
        tls,
        max_connections: match c.api_max_connections {
            Some(n) if n == 0 || n > 1_000_000 => bail!(
                "{}: [cluster] api_max_connections must be 1..=1000000, not {n}",
                src.at(api)
            ),
            v => v.unwrap_or(256),
        },
        max_per_address: match c.api_max_connections_per_address {
            Some(0) => bail!(
                "{}: [cluster] api_max_connections_per_address must be at least 1",
                src.at(api)
            ),
            v => v.unwrap_or(32),
        },
        header_timeout: positive(c.api_header_timeout_secs, 10, "api_header_timeout_secs")?,
        request_timeout: positive(c.api_request_timeout_secs, 60, "api_request_timeout_secs")?,
    };
    let raft_addr = raft.get_ref().raft_address(&src.at(raft))?;
    Ok(Some(ControlSettings {
        key,
        protocol: ProtocolVersion::CURRENT,
        node_id,
        raft: raft_addr,
        api: api_addr,
        api_token: token.get_ref().clone(),
        api_serve,
        voters,
        storage_dir,
        block_devices,
    }))
}

/// The control node settings of `[cluster]`, if the file has one; errors
/// name the file and line.
pub fn load_cluster(name: &str, text: &str) -> Result<Option<NodeConfig>> {
    let src = Source { name, text };
    let file: File = toml::from_str(text).map_err(|e| anyhow!("{name}: {}", e.message()))?;
    let Some(c) = file.cluster else {
        return Ok(None);
    };
    let key = ClusterKey::new(c.key.get_ref().as_bytes())
        .map_err(|e| anyhow!("{}: {e}", src.at(&c.key)))?;
    let mut links = Vec::new();
    for l in &c.links {
        let at = src.at(l);
        let l = l.get_ref();
        let addr = l.addr.parse::<SocketAddr>().map_err(|_| {
            anyhow!(
                "{at}: link {:?}: bad address {:?} (expected IP:PORT)",
                l.name,
                l.addr
            )
        })?;
        links.push((LinkName(l.name.clone()), addr));
    }
    if links.len() < 2 {
        bail!(
            "{}: a cluster member needs two or more links (one per redundant network), {} given",
            src.at(&c.id),
            links.len()
        );
    }
    let mut seeds = Vec::new();
    for s in &c.seeds {
        let at = src.at(s);
        let s = s.get_ref();
        if !links.iter().any(|(l, _)| l.0 == s.link) {
            bail!(
                "{at}: seed {:?} is on link {:?}, which this member does not have",
                s.addr,
                s.link
            );
        }
        seeds.push((LinkName(s.link.clone()), s.addr.clone()));
    }
    // Grows with every start, so peers tell a restart from a delay.
    let incarnation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64);
    Ok(Some(NodeConfig {
        identity: Identity {
            member: MemberId(c.member.get_ref().clone()),
            cluster: ClusterId(c.id.get_ref().clone()),
            key,
            software: format!("trellisd {}", env!("CARGO_PKG_VERSION")),
            protocol: ProtocolVersion::CURRENT,
            incarnation,
        },
        links,
        seeds,
        discovery: trellis_control::discovery::Config::default(),
        membership: trellis_control::membership::Config::default(),
        mdns: c.mdns,
    }))
}

/// Parses a control protocol version, `MAJOR.MINOR`.
pub fn parse_protocol(s: &str) -> Result<ProtocolVersion> {
    let (major, minor) = s
        .split_once('.')
        .ok_or_else(|| anyhow!("control protocol {s:?}: expected MAJOR.MINOR, e.g. 1.0"))?;
    let num = |t: &str| {
        t.parse::<u16>()
            .map_err(|_| anyhow!("control protocol {s:?}: {t:?} is not a number 0..=65535"))
    };
    Ok(ProtocolVersion {
        major: num(major)?,
        minor: num(minor)?,
    })
}

/// Parses "1GiB", "512MiB", "4096", "10G".
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow!("size {s:?} does not start with a number"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        u => bail!("unknown size unit {u:?} (use B, KiB, MiB, GiB or TiB)"),
    };
    n.checked_mul(mult)
        .ok_or_else(|| anyhow!("size {s:?} is too large"))
}

fn open_device(d: &DeviceSection, data_dir: &Path) -> Result<VirtualDevice> {
    let size = match d.size.get_ref() {
        Size::Bytes(b) => *b,
        Size::Text(t) => parse_size(t)?,
    };
    let block_size = *d.block_size.get_ref();
    let name = d.name.get_ref();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!("name must be non-empty and use only letters, digits, '-', '_' and '.'");
    }
    let uuid = match &d.uuid {
        Some(u) => {
            Uuid::parse_str(u.get_ref()).with_context(|| format!("bad uuid {:?}", u.get_ref()))?
        }
        None => persistent_uuid(data_dir, name)?,
    };
    let store: Arc<dyn BackingStore> = match (&d.path, d.memory) {
        (Some(_), true) => bail!("give either `path` or `memory = true`, not both"),
        (None, true) => Arc::new(MemoryStore::new(name, size)?),
        (None, false) => bail!("needs a backing store: `path = \"FILE\"` or `memory = true`"),
        (Some(p), false) => {
            let path = if p.is_absolute() {
                p.clone()
            } else {
                data_dir.join(p)
            };
            let create = !path.exists() || is_regular(&path);
            let s = FileStore::open_with(&path, d.read_only, create.then_some(size), d.direct)?;
            tracing::info!(device = %name, store = %s.describe(), "backing store opened");
            Arc::new(s)
        }
    };
    let spec = DeviceSpec {
        name: name.clone(),
        uuid,
        size,
        block_size,
        read_only: d.read_only,
        thin: d.thin,
    };
    Ok(VirtualDevice::new(spec, store)?)
}

fn is_regular(p: &Path) -> bool {
    std::fs::metadata(p).map(|m| m.is_file()).unwrap_or(false)
}

/// A device without a configured UUID keeps the one stored beside its data,
/// so its SCSI identity survives restarts.
fn persistent_uuid(data_dir: &Path, name: &str) -> Result<Uuid> {
    let path = data_dir.join(format!("{name}.uuid"));
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            Uuid::parse_str(s.trim()).with_context(|| format!("{} holds no UUID", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let u = Uuid::new_v4();
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| writeln!(f, "{u}"))
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(u)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn chap_policy(
    who: &str,
    user: &Option<String>,
    secret: &Option<String>,
    mutual_user: &Option<String>,
    mutual_secret: &Option<String>,
) -> Result<Option<ChapPolicy>> {
    let check = |s: &str| -> Result<()> {
        if s.len() < 12 || s.len() > 255 {
            bail!(
                "CHAP secrets must be 12 to 255 characters (RFC 7143 recommends at least 96 bits)"
            );
        }
        Ok(())
    };
    match (user, secret) {
        (None, None) => {
            if mutual_user.is_some() || mutual_secret.is_some() {
                bail!("mutual CHAP needs chap_user and chap_secret too");
            }
            Ok(None)
        }
        (Some(u), Some(s)) => {
            check(s)?;
            let mutual = match (mutual_user, mutual_secret) {
                (None, None) => None,
                (Some(mu), Some(ms)) => {
                    check(ms)?;
                    if ms == s {
                        bail!("the mutual secret must differ from the initiator's secret");
                    }
                    Some((mu.clone(), ms.as_bytes().to_vec()))
                }
                _ => bail!("mutual CHAP needs both mutual_user and mutual_secret"),
            };
            Ok(Some(ChapPolicy {
                user: u.clone(),
                secret: s.as_bytes().to_vec(),
                mutual,
            }))
        }
        _ => bail!("{who}: CHAP needs both chap_user and chap_secret"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let over = Overrides {
            data_dir: Some(dir.path().to_owned()),
            ..Overrides::default()
        };
        format!("{:#}", load("t.toml", text, &over).unwrap_err())
    }

    #[test]
    fn cluster_sections_load_and_bad_ones_say_where() {
        for i in 1..=3 {
            let path = format!(
                "{}/../examples/three-members/m{i}.toml",
                env!("CARGO_MANIFEST_DIR")
            );
            let text = std::fs::read_to_string(&path).unwrap();
            let c = load_cluster(&path, &text)
                .unwrap()
                .expect("a [cluster] section");
            assert_eq!(c.identity.member.0, format!("m{i}"));
            assert_eq!(c.links.len(), 2);
            assert_eq!(c.seeds.len(), 4);
        }
        assert!(load_cluster("t.toml", DEFAULT_CONFIG).unwrap().is_none());
        let base = "[cluster]\nid = \"c\"\nmember = \"m1\"\n";
        let two = "links = [{ name = \"a\", addr = \"127.0.1.1:7401\" }, { name = \"b\", addr = \"127.0.2.1:7401\" }]\n";
        let e = |t: &str| format!("{:#}", load_cluster("t.toml", t).unwrap_err());
        let short = e(&format!("{base}key = \"short\"\n{two}"));
        assert!(short.starts_with("t.toml:4: cluster key"), "{short}");
        let one = e(&format!(
            "{base}key = \"0123456789abcdefgh\"\nlinks = [{{ name = \"a\", addr = \"127.0.1.1:7401\" }}]\n"
        ));
        assert!(one.contains("two or more links"), "{one}");
        let seed = e(&format!(
            "{base}key = \"0123456789abcdefgh\"\n{two}seeds = [{{ link = \"c\", addr = \"127.0.3.1:7401\" }}]\n"
        ));
        assert!(
            seed.contains("t.toml:6: seed") && seed.contains("link \"c\""),
            "{seed}"
        );
        let addr = e(&format!(
            "{base}key = \"0123456789abcdefgh\"\nlinks = [{{ name = \"a\", addr = \"nowhere\" }}, {{ name = \"b\", addr = \"127.0.2.1:7401\" }}]\n"
        ));
        assert!(addr.contains("t.toml:5: link \"a\": bad address"), "{addr}");
    }

    #[test]
    fn the_examples_load() {
        let dir = format!("{}/../examples", env!("CARGO_MANIFEST_DIR"));
        for (file, witness) in [
            ("three-members/m1.toml", false),
            ("two-members-witness/m1.toml", false),
            ("two-members-witness/m2.toml", false),
            ("two-members-witness/w.toml", true),
        ] {
            let path = format!("{dir}/{file}");
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(is_witness(&path, &text).unwrap(), witness, "{file}");
            assert!(load_cluster(&path, &text).unwrap().is_some(), "{file}");
            let c = load_control(&path, &text, &Overrides::default())
                .unwrap()
                .expect("raft and api settings");
            assert_eq!(c.voters.len(), 3, "{file}");
        }
        let e = format!(
            "{:#}",
            load_control("t.toml", "[cluster]\nid = \"c\"\nmember = \"m\"\nkey = \"0123456789abcdefg\"\nlinks = []\nnode_id = 1\n", &Overrides::default())
                .unwrap_err()
        );
        assert!(
            e.contains("needs all of node_id, raft, api and api_token"),
            "{e}"
        );
    }

    #[test]
    fn raft_takes_one_address_per_network() {
        let base = "[cluster]\nid = \"c\"\nmember = \"m\"\nkey = \"0123456789abcdefg\"\n\
                    links = []\nnode_id = 1\napi = \"127.0.0.1:8080\"\napi_token = \"0123456789abcdef\"\n";
        let load =
            |extra: &str| load_control("t.toml", &format!("{base}{extra}"), &Overrides::default());
        let c = load(
            "raft = [\"10.1.0.1:7501\", \"10.2.0.1:7501\"]\n\
             voters = [{ id = 1, raft = [\"10.1.0.1:7501\", \"10.2.0.1:7501\"] }, { id = 2, raft = \"10.2.0.2:7501\" }]\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.raft.to_string(), "10.1.0.1:7501,10.2.0.1:7501");
        assert_eq!(c.voters[&1], c.raft);
        assert_eq!(c.voters[&2].to_string(), "10.2.0.2:7501");
        for (raft, want) in [
            (
                "[\"10.1.0.1:7501\", \"10.1.0.1:7501\"]",
                "10.1.0.1:7501 is listed twice",
            ),
            ("[]", "raft lists no address"),
            ("[\"0.0.0.0:7501\"]", "is a wildcard"),
            ("[\"10.1.0.1\"]", "bad raft address \"10.1.0.1\""),
        ] {
            let e = format!("{:#}", load(&format!("raft = {raft}\n")).unwrap_err());
            assert!(e.contains("t.toml:") && e.contains(want), "{raft}: {e}");
        }
        let e = format!(
            "{:#}",
            load("raft = \"10.1.0.1:7501\"\nvoters = [{ id = 2, raft = [\"x\"] }]\n").unwrap_err()
        );
        assert!(e.contains("voter 2: bad raft address \"x\""), "{e}");
    }

    #[test]
    fn the_api_speaks_tls_off_loopback_and_limits_are_checked() {
        let base = "[cluster]\nid = \"c\"\nmember = \"m\"\nkey = \"0123456789abcdefg\"\n\
                    links = []\nnode_id = 1\nraft = \"127.0.0.1:7501\"\napi_token = \"0123456789abcdef\"\n";
        let load =
            |extra: &str| load_control("t.toml", &format!("{base}{extra}"), &Overrides::default());
        let err = |extra: &str| format!("{:#}", load(extra).unwrap_err());
        // Loopback: plain HTTP is fine; the defaults.
        let c = load("api = \"127.0.0.1:8080\"\n").unwrap().unwrap();
        assert!(c.api_serve.tls.is_none());
        assert_eq!(
            (c.api_serve.max_connections, c.api_serve.max_per_address),
            (256, 32)
        );
        // Elsewhere: TLS, or an explicit opt-in.
        let e = err("api = \"10.0.0.1:8080\"\n");
        assert!(
            e.contains("t.toml:")
                && e.contains("is not a loopback address")
                && e.contains("api_plaintext"),
            "{e}"
        );
        assert!(load("api = \"10.0.0.1:8080\"\napi_plaintext = true\n").is_ok());
        let tls = load("api = \"10.0.0.1:8080\"\napi_tls_cert = \"/etc/trellis/c.pem\"\napi_tls_key = \"/etc/trellis/k.pem\"\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            tls.api_serve.tls,
            Some(("/etc/trellis/c.pem".into(), "/etc/trellis/k.pem".into()))
        );
        let e = err("api = \"127.0.0.1:8080\"\napi_tls_cert = \"c.pem\"\n");
        assert!(e.contains("go together"), "{e}");
        for zero in [
            "api_max_connections",
            "api_max_connections_per_address",
            "api_header_timeout_secs",
            "api_request_timeout_secs",
        ] {
            let e = err(&format!("api = \"127.0.0.1:8080\"\n{zero} = 0\n"));
            assert!(
                e.contains(zero) && (e.contains("at least 1") || e.contains("1..=")),
                "{e}"
            );
        }
        let e = err("api = \"127.0.0.1:8080\"\nblock_devices = [\"dev/sd*\"]\n");
        assert!(e.contains("is not absolute"), "{e}");
    }

    #[test]
    fn default_config_loads() {
        let dir = tempfile::tempdir().unwrap();
        let over = Overrides {
            data_dir: Some(dir.path().to_owned()),
            portals: vec!["127.0.0.1:0".into()],
            cores: Some(1),
        };
        let (cfg, _) = load("default", DEFAULT_CONFIG, &over).unwrap();
        assert_eq!(cfg.devices.len(), 1);
        assert_eq!(cfg.devices[0].spec().size, 1 << 30);
        assert_eq!(cfg.targets[0].name, "iqn.2026-11.io.trellis:default");
        assert_eq!(cfg.targets[0].luns, vec![(0, 0)]);
        assert!(cfg.targets[0].acl.is_none());
        // The UUID persists beside the data.
        let u1 = cfg.devices[0].spec().uuid;
        let (cfg2, _) = load("default", DEFAULT_CONFIG, &over).unwrap();
        assert_eq!(cfg2.devices[0].spec().uuid, u1);
        let meta = std::fs::metadata(dir.path().join("disk0.img")).unwrap();
        assert_eq!(meta.len(), 1 << 30);
        // Private files in a private directory, created where missing.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("disk0.img")), 0o600);
        assert_eq!(mode(&dir.path().join("disk0.uuid")), 0o600);
        let nested = dir.path().join("a/b");
        let over = Overrides {
            data_dir: Some(nested.clone()),
            ..over
        };
        load("default", DEFAULT_CONFIG, &over).unwrap();
        assert_eq!(mode(&nested), 0o700);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        let e = err("portals = [\"127.0.0.1:3260\"]\n[[device]]\nname = \"a\"\nsize = \"1XB\"\nmemory = true\n");
        assert!(e.starts_with("t.toml:3: device \"a\""), "{e}");
        assert!(e.contains("unknown size unit"), "{e}");
        let e = err("portals = [\"127.0.0.1:3260\"]\nbogus = 1\n");
        assert!(e.starts_with("t.toml:2:"), "{e}");
        assert!(e.contains("bogus"), "{e}");
        let e = err(
            "portals = [\"127.0.0.1:3260\"]\n[[target]]\nname = \"iqn.2026-11.x:y\"\nluns = [{ lun = 0, device = \"nope\" }]\n",
        );
        assert!(e.starts_with("t.toml:4:"), "{e}");
        assert!(e.contains("unknown device \"nope\""), "{e}");
        let e = err("portals = [\"not a portal\"]\n");
        assert!(e.starts_with("t.toml:1: bad portal"), "{e}");
        let e = err("portals = [\"127.0.0.1:3260\"]\n[[target]]\nname = \"target1\"\n");
        assert!(e.contains("not an iSCSI name"), "{e}");
        let e = err("portals = [\"127.0.0.1:3260\"]\n[[device]]\nname = \"a\"\nsize = 1000\nmemory = true\n");
        assert!(e.contains("not a positive multiple"), "{e}");
        let e = err(
            "portals = [\"127.0.0.1:3260\"]\n[[target]]\nname = \"iqn.2026-11.x:y\"\n[[target.acl]]\ninitiator = \"iqn.i\"\nchap_user = \"u\"\nchap_secret = \"short\"\n",
        );
        assert!(e.contains("t.toml:5: ACL for \"iqn.i\""), "{e}");
        assert!(e.contains("12 to 255"), "{e}");
    }

    #[test]
    fn protocol_versions() {
        assert_eq!(
            parse_protocol("2.1").unwrap(),
            ProtocolVersion { major: 2, minor: 1 }
        );
        for bad in ["2", "a.b", "1.70000", ""] {
            let e = format!("{:#}", parse_protocol(bad).unwrap_err());
            assert!(e.contains("control protocol"), "{e}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
