//! Applying the replicated configuration to this member's exports: every
//! data member serves every device and target of the cluster, with the
//! device identities (UUID, so NAA and serial) of the configuration, and
//! lists the portals of the other live members in SendTargets.
//!
//! ```text
//!  ConfigReader (config index moved) ──> Applier::apply ─┬ devices: reuse the store served now,
//!                                                        │          or open it (shared storage)
//!                                                        ├ targets, ACLs, CHAP: plain conversion
//!                                                        └─> Registry::reconfigure
//!  membership (alive/suspect peers) + members' portals ─> peer_portals ─> Registry::set_peer_portals
//! ```
//!
//! The conversions ([`targets`], [`peer_portals`]) are pure; the
//! [`Applier`] opens stores and remembers which failed, to retry them.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use trellis_control::config::{Backing, ChapAuth, ClusterConfig, Device};
use trellis_control::membership::{MemberState, MemberStatus};
use trellis_control::MemberId;
use trellis_datapath::{BackingStore, DeviceSpec, MemoryStore, VirtualDevice};
use trellis_iscsi::login::ChapPolicy;
use trellis_iscsi::target::{AclEntry, GatewayConfig, Registry, TargetSpec};

use crate::storage::Storage;

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
    /// Where this member allows backings.
    storage: Storage,
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
    /// An applier for `registry`, opening backings as `storage` allows.
    pub fn new(registry: Arc<Registry>, storage: Storage) -> Self {
        Self {
            registry,
            storage,
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
                // Stores open read-write even for a read-only device: the
                // flag is enforced in SCSI, so it can be switched without
                // reopening.
                let s = self
                    .storage
                    .open(d)
                    .map_err(|why| anyhow!("backing {}: {why}", p.display()))?;
                tracing::info!(device = %d.name, store = %s.describe(), "backing store opened");
                Arc::new(s)
            }
        };
        VirtualDevice::new(spec, store).with_context(|| format!("device {}", d.name))
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
            announced: Vec::new(),
            data: None,
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
                set: trellis_control::config::DEFAULT_SET.into(),
                policy: Default::default(),
            }),
            Command::CreateDevice(Device {
                name: "d2".into(),
                uuid: Uuid::from_u128(2),
                size: 1 << 20,
                backing: Backing::default_for("d2"),
                block_size: 4096,
                thin: true,
                read_only: false,
                set: trellis_control::config::DEFAULT_SET.into(),
                policy: Default::default(),
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
}
