//! CDB dispatch: the SCSI layer's decision for READ(10) and WRITE(16) (the
//! per-command hot path, the ALUA state check included) and for INQUIRY (a
//! slow-path command, for scale); what each command pays to catch up with
//! its unit's shared state (`observe`), and the write fence check against a
//! clock read (with the clock read alone as its baseline).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use trellis_iscsi::scsi::{
    dispatch, AluaState, Command, LunDevice, LunShared, NexusState, PortContext, PortGroup,
    PortTable,
};

fn device() -> LunDevice {
    LunDevice {
        name: "bench".into(),
        block_size: 512,
        num_blocks: 2 << 20,
        read_only: false,
        naa: [0x60; 16],
        serial: "0123456789abcdef0123456789abcdef".into(),
        write_cache: false,
        max_transfer_blocks: 2048,
        optimal_transfer_blocks: 2048,
        rotational: false,
        thin: true,
        holes_read_zero: true,
        atomic_unit_blocks: 0,
    }
}

fn port() -> PortContext {
    PortContext {
        target_name: "iqn.2026-11.io.trellis:bench".into(),
        tpgt: 1,
        relative_port_id: 1,
        tpg_id: 1,
    }
}

/// A unit exported by three members, this one (group 1) active/optimized.
fn unit() -> LunShared {
    let lu = LunShared::new();
    let group = |id: u16, state| PortGroup {
        id,
        state,
        preferred: id == 1,
        relative_ports: vec![id],
    };
    lu.ports().set(
        PortTable {
            epoch: 1,
            groups: vec![
                group(1, AluaState::ActiveOptimized),
                group(2, AluaState::Standby),
                group(3, AluaState::Standby),
            ],
        },
        1,
    );
    lu
}

fn bench(c: &mut Criterion) {
    let dev = device();
    let port = port();
    let lu = unit();
    let luns = [0u64];
    let mut nexus = NexusState::attached(&lu, 1);
    nexus.observe(&lu);
    while nexus.next_ua().is_some() {}
    let mut read10 = [0u8; 16];
    read10[..10].copy_from_slice(&[0x28, 0, 0, 0x10, 0, 0, 0, 0, 8, 0]);
    let mut write16 = [0u8; 16];
    write16[0] = 0x8a;
    write16[9] = 0x40;
    write16[13] = 8;
    let mut inquiry = [0u8; 16];
    inquiry[..6].copy_from_slice(&[0x12, 0, 0, 0, 96, 0]);
    let mut g = c.benchmark_group("scsi_dispatch");
    for (name, cdb, edtl, read, write) in [
        ("read10", read10, 4096, true, false),
        ("write16", write16, 4096, false, true),
        ("inquiry", inquiry, 96, true, false),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let cmd = Command {
                    cdb: black_box(&cdb),
                    lun: 0,
                    expected_len: edtl,
                    read,
                    write,
                };
                black_box(dispatch(&cmd, &dev, &lu, &port, &luns, &mut nexus))
            })
        });
    }
    g.finish();
    // What every command pays for the unit's shared state before dispatch:
    // resets, reservations, mode changes and the ALUA port state (one
    // atomic word each), and the write fence a core checks per write.
    let mut g = c.benchmark_group("scsi_unit_state");
    g.bench_function("observe", |b| {
        b.iter(|| {
            nexus.observe(black_box(&lu));
            black_box(nexus.access_state())
        })
    });
    lu.ports().set_write_fence(Some(
        std::time::Instant::now() + std::time::Duration::from_secs(3600),
    ));
    g.bench_function("write_fence", |b| {
        b.iter(|| black_box(lu.ports().writable_at(black_box(std::time::Instant::now()))))
    });
    g.bench_function("clock", |b| b.iter(|| black_box(std::time::Instant::now())));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
