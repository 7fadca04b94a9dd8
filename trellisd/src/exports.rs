//! Applying the replicated configuration to this member's exports: every
//! data member serves every device and target of the cluster, with the
//! device identities (UUID, so NAA and serial) of the configuration, and
//! lists the portals of the other live members in SendTargets.
//!
//! ```text
//!  ConfigReader (applied index moved) ─> Applier::apply ─┬ devices: reuse the store served now,
//!                                                        │          or open it (shared storage)
//!                                                        ├ targets, ACLs, CHAP: plain conversion
//!                                                        └─> Registry::reconfigure
//!  membership (alive/suspect peers) + members' portals ─> peer_portals ─> Registry::set_peer_portals
//! ```
//!
//! The conversions ([`targets`], [`peer_portals`]) are pure; the
//! [`Applier`] opens stores and remembers which failed, to retry them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use trellis_control::config::{Backing, ChapAuth, ClusterConfig, ConfigError, Device};
use trellis_control::membership::{MemberState, MemberStatus};
use trellis_control::MemberId;
use trellis_datapath::{BackingStore, DeviceSpec, FileStore, MemoryStore, VirtualDevice};
use trellis_iscsi::login::ChapPolicy;
use trellis_iscsi::target::{AclEntry, GatewayConfig, Registry, TargetSpec};

/// CHAP of the configuration in the target's terms.
fn chap(auth: &ChapAuth) -> ChapPolicy {
    ChapPolicy {
        user: auth.chap.user.clone(),
        secret: auth.chap.secret.as_bytes().to_vec(),
        mutual: auth
            .mutual
            .as_ref()
            .map(|m| (m.user.clone(), m.secret.as_bytes().to_vec())),
    }
}

/// The targets of `cfg` with their LUNs naming devices by index into
/// `served` (device names); LUNs of devices not served here are left out.
/// An empty ACL admits no one, as in the configuration.
pub fn targets(cfg: &ClusterConfig, served: &[String]) -> Vec<TargetSpec> {
    cfg.targets
        .values()
        .map(|t| TargetSpec {
            name: t.iqn.clone(),
            alias: t.alias.clone(),
            luns: t
                .luns
                .iter()
                .filter_map(|(lun, dev)| Some((*lun, served.iter().position(|n| n == dev)?)))
                .collect(),
            acl: Some(
                t.acl
                    .values()
                    .map(|a| AclEntry {
                        initiator: a.initiator.clone(),
                        chap: a.auth.as_ref().map(chap),
                        luns: a.luns.as_ref().map(|m| m.iter().copied().collect()),
                    })
                    .collect(),
            ),
        })
        .collect()
}

/// Discovery CHAP of `cfg`.
pub fn discovery_chap(cfg: &ClusterConfig) -> Option<ChapPolicy> {
    cfg.discovery_auth.as_ref().map(chap)
}

/// The portals of the other data members that the failure detector holds
/// alive or suspect, as SendTargets lists them (`addr:port,tpgt`, the tag
/// being the member's port id), by member name. Members never heard from,
/// failed ones, witnesses and wildcard portals are left out.
pub fn peer_portals(cfg: &ClusterConfig, me: &MemberId, peers: &[MemberStatus]) -> Vec<String> {
    let live = |id: &MemberId| {
        peers.iter().any(|p| {
            &p.member == id && matches!(p.state, MemberState::Alive | MemberState::Suspect)
        })
    };
    cfg.members
        .values()
        .filter(|m| &m.id != me && !m.witness && live(&m.id))
        .filter_map(|m| Some((m, m.port_id()?)))
        .flat_map(|(m, tpgt)| {
            m.portals
                .iter()
                .filter(|p| !p.ip().is_unspecified())
                .map(move |p| format!("{p},{tpgt}"))
        })
        .collect()
}

/// Opens the replicated configuration's devices and hands the result to
/// the target.
#[derive(Debug)]
pub struct Applier {
    registry: Arc<Registry>,
    storage_dir: PathBuf,
    /// Devices that could not be opened, with why (logged once each).
    failed: BTreeMap<String, String>,
    /// Something did not apply (a device not opened or not grown, the
    /// target refusing the change): try again.
    retry: bool,
    /// The names of `failed`, for `/metrics`.
    unserved: Unserved,
}

/// The devices of the replicated configuration this member cannot serve
/// now (their backing could not be opened), by name.
pub type Unserved = Arc<std::sync::Mutex<Vec<String>>>;

impl Applier {
    /// An applier for `registry`; relative backings live in `storage_dir`.
    pub fn new(registry: Arc<Registry>, storage_dir: PathBuf) -> Self {
        Self {
            registry,
            storage_dir,
            failed: BTreeMap::new(),
            retry: false,
            unserved: Unserved::default(),
        }
    }

    /// The devices not served after the last [`Applier::apply`], kept
    /// current by it.
    pub fn unserved(&self) -> Unserved {
        Arc::clone(&self.unserved)
    }

    /// Whether something did not apply last time (worth a retry).
    pub fn has_failures(&self) -> bool {
        self.retry
    }

    /// Makes this member's exports those of `cfg`.
    pub fn apply(&mut self, cfg: &ClusterConfig) {
        self.retry = false;
        let current = self.registry.devices();
        let mut devices = Vec::new();
        let mut failed = BTreeMap::new();
        for d in cfg.devices.values() {
            match self.device(d, &current) {
                Ok(v) => devices.push(v),
                Err(e) => {
                    let why = format!("{e:#}");
                    if self.failed.get(&d.name) != Some(&why) {
                        tracing::error!(device = %d.name, error = %why, "cannot serve the device on this member (retrying every few seconds)");
                    }
                    failed.insert(d.name.clone(), why);
                }
            }
        }
        for name in self.failed.keys() {
            if !failed.contains_key(name) && cfg.devices.contains_key(name) {
                tracing::info!(device = %name, "device served now");
            }
        }
        self.retry |= !failed.is_empty();
        *self
            .unserved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = failed.keys().cloned().collect();
        self.failed = failed;
        let served: Vec<String> = devices.iter().map(|d| d.spec().name.clone()).collect();
        let new = GatewayConfig {
            devices,
            targets: targets(cfg, &served),
            discovery_chap: discovery_chap(cfg),
            ..self.registry.config().clone()
        };
        match self.registry.reconfigure(&new) {
            Ok(changes) if changes.is_empty() => {}
            Ok(changes) => {
                tracing::info!(?changes, "replicated configuration applied to the exports")
            }
            Err(e) => {
                self.retry = true;
                tracing::error!(error = %e, "replicated configuration not applied; exports unchanged (retrying)")
            }
        }
    }

    /// Device `d` bound to a store: the one served now if it is the same
    /// device (grown as needed), else opened.
    fn device(&mut self, d: &Device, current: &[VirtualDevice]) -> Result<VirtualDevice> {
        let mut spec = DeviceSpec {
            name: d.name.clone(),
            uuid: d.uuid,
            size: d.size,
            block_size: d.block_size,
            read_only: d.read_only,
            thin: d.thin,
        };
        if let Some(cur) = current
            .iter()
            .find(|c| c.spec().name == d.name && c.spec().uuid == d.uuid)
        {
            if let Err(e) = cur.store().grow(d.size) {
                // Keep serving it at the size it has rather than drop it,
                // and try again later.
                tracing::error!(device = %d.name, size = d.size, error = %e, "cannot grow the device; it keeps its size (retrying)");
                spec.size = cur.spec().size;
                self.retry = true;
            }
            return VirtualDevice::new(spec, Arc::clone(cur.store()))
                .with_context(|| format!("device {}", d.name));
        }
        let store: Arc<dyn BackingStore> = match &d.backing {
            Backing::Memory => Arc::new(MemoryStore::new(&d.name, d.size)?),
            Backing::Path(p) => {
                let path = resolve(&self.storage_dir, p);
                // Stores open read-write even for a read-only device: the
                // flag is enforced in SCSI, so it can be switched without
                // reopening.
                let create = !path.exists() || path.is_file();
                let s = FileStore::open_with(&path, false, create.then_some(d.size), true)?;
                tracing::info!(device = %d.name, store = %s.describe(), "backing store opened");
                Arc::new(s)
            }
        };
        VirtualDevice::new(spec, store).with_context(|| format!("device {}", d.name))
    }
}

/// Whether this member (`member`, relative backings under `storage_dir`)
/// can serve `d`'s backing: a memory backing, an existing regular file or
/// a block device at least as large as the device, either opened for
/// reading and writing, or a file that can be created in an existing
/// directory. Run by the API before a device is created or grown; every
/// data member opens the same path, so a refusal here is a typo or an
/// unmounted share, caught before the cluster holds a device that no
/// member serves.
pub fn check_backing(storage_dir: &Path, member: &str, d: &Device) -> Result<(), ConfigError> {
    use std::io::ErrorKind;
    use std::os::unix::fs::FileTypeExt;
    let Backing::Path(p) = &d.backing else {
        return Ok(());
    };
    let path = resolve(storage_dir, p);
    let refuse = |reason: String| ConfigError::InvalidBacking {
        device: d.name.clone(),
        path: p.display().to_string(),
        reason,
    };
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() || m.file_type().is_block_device() => {
            // Opened by the members' own opener, as they open it
            // (read-write, even for a read-only device), so a read-only
            // mount is caught here too.
            match FileStore::open(&path, false).map(|s| s.size()) {
                Err(e) => Err(refuse(format!(
                    "cannot be opened for reading and writing on member {member}: {e}"
                ))),
                // A block device is not grown like a file: it must hold the
                // device.
                Ok(size) if m.file_type().is_block_device() && size < d.size => {
                    Err(refuse(format!(
                        "is a block device of {size} bytes on member {member}, smaller than the device ({} bytes)",
                        d.size
                    )))
                }
                Ok(_) => Ok(()),
            }
        }
        Ok(m) if m.is_dir() => Err(refuse(format!(
            "is the directory {} on member {member}, not a file or block device",
            path.display()
        ))),
        Ok(_) => Err(refuse(format!(
            "is {} on member {member}, neither a regular file nor a block device",
            path.display()
        ))),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            let dir = path.parent().unwrap_or(storage_dir);
            if !dir.is_dir() {
                return Err(refuse(format!(
                    "would be created in {}, which is not a directory on member {member} (every data member opens this path: mount the shared storage there or fix the path)",
                    dir.display()
                )));
            }
            creatable_in(dir).map_err(|e| {
                refuse(format!(
                    "would be created in {}, where member {member} cannot create a file: {e}",
                    dir.display()
                ))
            })
        }
        Err(e) => Err(refuse(format!(
            "cannot be examined on member {member}: {e} ({})",
            path.display()
        ))),
    }
}

/// Whether a file can be created in `dir`: creates and removes a hidden
/// probe file (permissions alone do not tell: root passes them, a
/// read-only mount does not).
fn creatable_in(dir: &Path) -> std::io::Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let probe = dir.join(format!(".trellis-probe-{}-{nanos}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// A backing path: absolute as given, relative under `storage_dir`.
fn resolve(storage_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        storage_dir.join(p)
    }
}

#[cfg(test)]
mod tests {
    // Test helpers: a panic is the test failing.
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeSet;
    use std::time::Duration;

    use trellis_control::config::{ChapCredentials, Command, Member};
    use trellis_control::membership::{LinkState, LinkStatus};
    use trellis_control::LinkName;
    use uuid::Uuid;

    use super::*;

    const T1: &str = "iqn.2026-11.io.trellis:t1";
    const I1: &str = "iqn.1993-08.org.debian:01:host1";

    fn member(id: &str, node_id: u64, portals: &[&str], witness: bool) -> Member {
        Member {
            id: MemberId(id.into()),
            node_id,
            links: BTreeMap::from([(LinkName("a".into()), "127.0.1.1:7401".parse().unwrap())]),
            api: "127.0.0.1:8081".parse().unwrap(),
            portals: portals.iter().map(|p| p.parse().unwrap()).collect(),
            witness,
        }
    }

    fn status(id: &str, state: MemberState) -> MemberStatus {
        MemberStatus {
            member: MemberId(id.into()),
            state,
            since: Duration::ZERO,
            incarnation: Some(1),
            links: vec![LinkStatus {
                link: LinkName("a".into()),
                state: LinkState::Up,
                since: Duration::ZERO,
                last_heard: Some(Duration::ZERO),
            }],
        }
    }

    fn config() -> ClusterConfig {
        let mut c = ClusterConfig::default();
        let creds = |user: &str, secret: &str| ChapCredentials {
            user: user.into(),
            secret: secret.into(),
        };
        for cmd in [
            Command::UpsertMember(member("m1", 1, &["127.0.0.1:3261"], false)),
            Command::UpsertMember(member("m2", 2, &["127.0.0.1:3262", "[::1]:3262"], false)),
            Command::UpsertMember(member("m3", 3, &["0.0.0.0:3263"], false)),
            Command::UpsertMember(member("m4", 4, &["127.0.0.1:3264"], false)),
            Command::UpsertMember(member("w", 9, &[], true)),
            Command::CreateDevice(Device {
                name: "d1".into(),
                uuid: Uuid::from_u128(1),
                size: 1 << 20,
                backing: Backing::Memory,
                block_size: 512,
                thin: false,
                read_only: false,
            }),
            Command::CreateDevice(Device {
                name: "d2".into(),
                uuid: Uuid::from_u128(2),
                size: 1 << 20,
                backing: Backing::default_for("d2"),
                block_size: 4096,
                thin: true,
                read_only: false,
            }),
            Command::CreateTarget {
                iqn: T1.into(),
                alias: Some("one".into()),
            },
            Command::MapLun {
                target: T1.into(),
                lun: 0,
                device: "d1".into(),
            },
            Command::MapLun {
                target: T1.into(),
                lun: 3,
                device: "d2".into(),
            },
            Command::AllowInitiator {
                target: T1.into(),
                initiator: I1.into(),
                luns: Some(BTreeSet::from([3])),
                auth: Some(ChapAuth {
                    chap: creds("host1", "host-secret-123"),
                    mutual: Some(creds("t", "target-secret-1")),
                }),
            },
            Command::CreateTarget {
                iqn: "iqn.2026-11.io.trellis:closed".into(),
                alias: None,
            },
            Command::SetDiscoveryAuth {
                auth: Some(ChapAuth {
                    chap: creds("disc", "discovery-secret"),
                    mutual: None,
                }),
            },
        ] {
            c.apply(&cmd).unwrap();
        }
        c
    }

    #[test]
    fn targets_acls_and_chap_convert() {
        let c = config();
        let t = targets(&c, &["d2".into(), "d1".into()]);
        assert_eq!(t.len(), 2);
        let closed = &t[0];
        assert_eq!(closed.name, "iqn.2026-11.io.trellis:closed");
        assert_eq!(closed.acl, Some(vec![]), "an empty ACL admits no one");
        let t1 = &t[1];
        assert_eq!(t1.alias.as_deref(), Some("one"));
        assert_eq!(
            t1.luns,
            vec![(0, 1), (3, 0)],
            "LUNs name served devices by index"
        );
        let acl = t1.acl.as_ref().unwrap();
        assert_eq!(acl.len(), 1);
        assert_eq!(acl[0].initiator, I1);
        assert_eq!(acl[0].luns, Some(vec![3]));
        let chap = acl[0].chap.as_ref().unwrap();
        assert_eq!(
            (chap.user.as_str(), chap.secret.as_slice()),
            ("host1", b"host-secret-123".as_slice())
        );
        assert_eq!(chap.mutual, Some(("t".into(), b"target-secret-1".to_vec())));
        // A device not served here: its LUN is left out.
        let only_d1 = targets(&c, &["d1".into()]);
        assert_eq!(only_d1[1].luns, vec![(0, 0)]);
        assert_eq!(discovery_chap(&c).unwrap().user, "disc");
    }

    #[test]
    fn peer_portals_are_those_of_live_data_members() {
        let c = config();
        let peers = [
            status("m2", MemberState::Alive),
            status("m3", MemberState::Suspect),
            status("m4", MemberState::Failed),
            status("w", MemberState::Alive),
        ];
        assert_eq!(
            peer_portals(&c, &MemberId("m1".into()), &peers),
            vec!["127.0.0.1:3262,2", "[::1]:3262,2"],
            "m3's wildcard portal, failed m4 and the witness are left out"
        );
        // m1 as seen from m2: m1 never heard from is left out too.
        assert_eq!(
            peer_portals(&c, &MemberId("m2".into()), &peers),
            Vec::<String>::new()
        );
        let all = [status("m1", MemberState::Alive)];
        assert_eq!(
            peer_portals(&c, &MemberId("m2".into()), &all),
            vec!["127.0.0.1:3261,1"]
        );
    }

    #[test]
    fn backings_this_member_cannot_reach_are_refused_with_the_reason() {
        let storage = tempfile::tempdir().unwrap();
        let dir = storage.path();
        std::fs::write(dir.join("there.img"), [0u8; 512]).unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        let dev = |backing: Backing| Device {
            name: "d".into(),
            uuid: Uuid::from_u128(7),
            size: 1 << 20,
            backing,
            block_size: 512,
            thin: true,
            read_only: false,
        };
        let path = |p: &str| Backing::Path(p.into());
        let abs = |p: &str| Backing::Path(dir.join(p));
        for ok in [
            Backing::Memory,
            path("there.img"),
            path("new.img"),
            path("sub/new.img"),
            abs("there.img"),
            abs("new.img"),
        ] {
            assert_eq!(check_backing(dir, "m1", &dev(ok.clone())), Ok(()), "{ok:?}");
        }
        let refused = |b: Backing| match check_backing(dir, "m1", &dev(b.clone())) {
            Err(ConfigError::InvalidBacking { device, reason, .. }) => {
                assert_eq!(device, "d");
                assert!(reason.contains("member m1"), "{b:?}: {reason}");
                reason
            }
            other => panic!("{b:?}: {other:?}"),
        };
        assert!(refused(path("sub")).contains("directory"));
        assert!(refused(path("nowhere/new.img")).contains("not a directory"));
        assert!(
            refused(Backing::Path("/nonexistent-trellis/d.img".into())).contains("shared storage")
        );
        // A file where a directory should be.
        assert!(refused(path("there.img/d.img")).contains("not a directory"));
        // A character device is neither a file nor a block device.
        assert!(refused(Backing::Path("/dev/null".into())).contains("neither"));
    }

    /// `dir` bind-mounted read-only on a new directory, unmounted on drop.
    struct ReadOnlyView(tempfile::TempDir);

    impl ReadOnlyView {
        fn of(dir: &Path) -> Self {
            let at = tempfile::tempdir().unwrap();
            let mount = |args: &[&std::ffi::OsStr]| {
                let out = std::process::Command::new("mount")
                    .args(args)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "mount needs root: {out:?}");
            };
            mount(&["--bind".as_ref(), dir.as_os_str(), at.path().as_os_str()]);
            let view = Self(at);
            mount(&[
                "-o".as_ref(),
                "remount,bind,ro".as_ref(),
                view.0.path().as_os_str(),
            ]);
            view
        }
    }

    impl Drop for ReadOnlyView {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.0.path())
                .status();
        }
    }

    #[test]
    fn a_backing_members_cannot_write_is_refused_and_probes_leave_nothing() {
        let storage = tempfile::tempdir().unwrap();
        std::fs::write(storage.path().join("there.img"), [0u8; 512]).unwrap();
        let view = ReadOnlyView::of(storage.path());
        let dev = |p: PathBuf| Device {
            name: "d".into(),
            uuid: Uuid::from_u128(9),
            size: 1 << 20,
            backing: Backing::Path(p),
            block_size: 512,
            thin: true,
            read_only: true,
        };
        let reason = |p: PathBuf| match check_backing(storage.path(), "m1", &dev(p)) {
            Err(ConfigError::InvalidBacking { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        // Even a read-only device: members open the store read-write.
        let existing = reason(view.0.path().join("there.img"));
        assert!(
            existing.contains("cannot be opened for reading and writing on member m1"),
            "{existing}"
        );
        let new = reason(view.0.path().join("new.img"));
        assert!(
            new.contains("where member m1 cannot create a file"),
            "{new}"
        );
        // Writable, the same paths pass, and the probe is gone again.
        for p in ["there.img", "new.img"] {
            assert_eq!(check_backing(storage.path(), "m1", &dev(p.into())), Ok(()));
        }
        let left: Vec<_> = std::fs::read_dir(storage.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["there.img"]);
    }

    /// A loop device over a file of `size` bytes, detached on drop.
    struct Loop {
        path: String,
        // Removed after the device is detached.
        _file: tempfile::NamedTempFile,
    }

    impl Loop {
        fn new(size: u64) -> Self {
            let file = tempfile::NamedTempFile::new().unwrap();
            file.as_file().set_len(size).unwrap();
            let out = std::process::Command::new("losetup")
                .args(["--find", "--show"])
                .arg(file.path())
                .output()
                .expect("losetup (util-linux) runs");
            assert!(out.status.success(), "losetup needs root: {out:?}");
            Self {
                path: String::from_utf8(out.stdout).unwrap().trim().to_owned(),
                _file: file,
            }
        }
    }

    impl Drop for Loop {
        fn drop(&mut self) {
            let _ = std::process::Command::new("losetup")
                .args(["-d", &self.path])
                .status();
        }
    }

    #[test]
    fn a_block_device_backing_must_hold_the_device() {
        let dev = Loop::new(4 << 20);
        let device = |size: u64| Device {
            name: "san".into(),
            uuid: Uuid::from_u128(8),
            size,
            backing: Backing::Path(dev.path.clone().into()),
            block_size: 512,
            thin: false,
            read_only: false,
        };
        let dir = Path::new("/");
        assert_eq!(check_backing(dir, "m2", &device(4 << 20)), Ok(()));
        assert_eq!(check_backing(dir, "m2", &device(1 << 20)), Ok(()));
        match check_backing(dir, "m2", &device(8 << 20)) {
            Err(ConfigError::InvalidBacking { reason, .. }) => assert!(
                reason.contains("block device of 4194304 bytes on member m2")
                    && reason.contains("smaller than the device (8388608 bytes)"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
    }
}
