//! A device whose store cannot be registered on a core's ring (its table of
//! fixed files is full) is left out of that core's LUN tables, not served
//! half-way, and comes in by itself once a slot frees up. The target runs in
//! this process with a ring of one store slot; libiscsi's `iscsi-ls` is the
//! client.

// Test helpers: a panic is the test failing, with the message in hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use trellis_datapath::{DeviceSpec, MemoryStore, RingConfig, VirtualDevice};
use trellis_iscsi::session::ConnConfig;
use trellis_iscsi::target::{GatewayConfig, Target, TargetSpec};
use trellis_tests::{eventually, iscsi_tool, require_tool};

const TARGET: &str = "iqn.2026-12.io.trellis:registration-test";

fn device(name: &str, n: u128) -> VirtualDevice {
    let spec = DeviceSpec {
        name: name.to_owned(),
        uuid: uuid::Uuid::from_u128(n),
        size: 1 << 20,
        block_size: 512,
        read_only: false,
        thin: false,
    };
    VirtualDevice::new(spec, Arc::new(MemoryStore::new(name, 1 << 20).unwrap())).unwrap()
}

/// One core whose ring holds one store; `luns` maps LUNs to `devices`.
fn config(devices: Vec<VirtualDevice>, luns: Vec<(u16, usize)>) -> GatewayConfig {
    GatewayConfig {
        devices,
        targets: vec![TargetSpec {
            name: TARGET.to_owned(),
            alias: None,
            luns,
            acl: None,
        }],
        portals: vec![([127, 0, 0, 1], 0).into()],
        max_connections: trellis_iscsi::target::DEFAULT_MAX_CONNECTIONS,
        max_logins_per_address: trellis_iscsi::target::DEFAULT_MAX_LOGINS_PER_ADDRESS,
        discovery_chap: None,
        tpg_id: 1,
        relative_port_id: 1,
        initial_port_state: trellis_iscsi::scsi::AluaState::ActiveOptimized,
        conn: ConnConfig::default(),
        cores: 1,
        ring: RingConfig {
            max_stores: 1,
            ..RingConfig::default()
        },
        state_dir: None,
        cluster: None,
    }
}

/// The LUNs `iscsi-ls` lists on the target.
fn luns(target: &Target) -> Result<Vec<u16>, String> {
    let portal = format!("iscsi://{}", target.portals()[0]);
    let out = iscsi_tool("iscsi-ls", &["-s", &portal]).map_err(|e| format!("{e:#}"))?;
    if !out.contains(&format!("Target:{TARGET}")) {
        return Err(out);
    }
    Ok(out
        .split("Lun:")
        .skip(1)
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect())
}

#[test]
fn a_store_that_cannot_be_registered_waits_for_a_free_slot() {
    require_tool("iscsi-ls");
    let d1 = device("d1", 1);
    let d2 = device("d2", 2);
    let mut target = Target::start(config(vec![d1.clone()], vec![(0, 0)])).unwrap();
    assert_eq!(luns(&target), Ok(vec![0]));

    // d2 as LUN 1: the one slot is d1's, so the core leaves LUN 1 out (a
    // host sees LUN 0 only, never a LUN it cannot do I/O on).
    let both = config(vec![d1, d2.clone()], vec![(0, 0), (1, 1)]);
    target.registry().reconfigure(&both).unwrap();
    for _ in 0..4 {
        assert_eq!(luns(&target), Ok(vec![0]), "LUN 1 has no registered store");
        std::thread::sleep(Duration::from_millis(200));
    }

    // d1 goes: once no connection names its slot, the core releases it,
    // registers d2 on its retry, and LUN 1 is served.
    let only_d2 = config(vec![d2], vec![(1, 0)]);
    target.registry().reconfigure(&only_d2).unwrap();
    eventually("LUN 1 served", Duration::from_secs(10), || {
        let now = luns(&target)?;
        (now == vec![1]).then_some(()).ok_or(format!("{now:?}"))
    });
    target.shutdown();
}
