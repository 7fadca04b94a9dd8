//! Ring submission path: one 4 KiB read and one 4 KiB write through the
//! per-core io_uring (registered buffer, fixed file) on an in-memory store,
//! submit to reap; and a batch of 32 in flight (QD32). The store is a memfd,
//! so this measures our submission/completion overhead plus a page-cache copy,
//! not a disk.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use trellis_datapath::ring::Payload;
use trellis_datapath::{MemoryStore, PoolConfig, Ring, RingConfig};

fn ring() -> (Ring, u32) {
    let mut ring = Ring::new(&RingConfig {
        entries: 64,
        max_ops: 64,
        max_stores: 4,
        pool: PoolConfig {
            classes: vec![(4096, 64)],
        },
    })
    .expect("io_uring ring");
    let store = Arc::new(MemoryStore::new("bench", 64 << 20).expect("memfd store"));
    let slot = ring.register_store(store).expect("register store");
    (ring, slot)
}

fn reap(ring: &mut Ring, n: usize) {
    let mut got = 0;
    while got < n {
        match ring.next_completion() {
            Some(c) => {
                assert!(c.result >= 0, "I/O failed: {}", c.result);
                if let Payload::Buf(b) = c.payload {
                    drop(b);
                }
                got += 1;
            }
            None => {
                ring.submit_and_wait(1, None).expect("submit");
            }
        }
    }
}

fn bench(c: &mut Criterion) {
    let (mut ring, slot) = ring();
    let mut g = c.benchmark_group("ring");
    g.throughput(Throughput::Elements(1));
    let mut off = 0u64;
    g.bench_function("read_4k_qd1", |b| {
        b.iter(|| {
            let buf = ring.pool().get(4096).expect("buffer");
            off = (off + 4096) % (64 << 20);
            ring.read(slot, buf, off, 1)
                .map_err(|(e, _)| e)
                .expect("read");
            reap(&mut ring, 1);
        })
    });
    g.bench_function("write_4k_qd1", |b| {
        b.iter(|| {
            let buf = ring.pool().get(4096).expect("buffer");
            off = (off + 4096) % (64 << 20);
            ring.write(slot, buf, off, false, 2)
                .map_err(|(e, _)| e)
                .expect("write");
            reap(&mut ring, 1);
        })
    });
    g.throughput(Throughput::Elements(32));
    g.bench_function("read_4k_qd32_batch", |b| {
        b.iter(|| {
            for i in 0..32u64 {
                let buf = ring.pool().get(4096).expect("buffer");
                off = (off + 4096) % (64 << 20);
                ring.read(slot, buf, off, i)
                    .map_err(|(e, _)| e)
                    .expect("read");
            }
            reap(&mut ring, 32);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
