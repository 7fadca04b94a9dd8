//! What the COMPARE AND WRITE block locks cost an ordinary write: taking and
//! releasing its lock words (`scsi::blocklock`) with no COMPARE AND WRITE
//! anywhere, with one holding another word, and with a second thread doing
//! the same on other blocks at the same time (the words are shared by every
//! core). The baseline is the same loop without the lock calls.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use trellis_iscsi::scsi::blocklock::{mask, BlockLocks, Exclusive, STRIPE_BLOCKS};

/// LBAs of 4 KiB writes spread over 1 GiB of 512-byte blocks.
fn lbas() -> Vec<u64> {
    (0..1024u64).map(|i| (i * 7919 * 8) % (1 << 21)).collect()
}

fn bench(c: &mut Criterion) {
    let lbas = lbas();
    let mut g = c.benchmark_group("write lock words");
    g.bench_function("no locks (baseline)", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % lbas.len();
            black_box(mask(lbas[i], lbas[i] + 8))
        })
    });
    let locks = BlockLocks::default();
    g.bench_function("uncontended", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % lbas.len();
            let m = mask(lbas[i], lbas[i] + 8);
            assert!(locks.try_shared(m));
            locks.release_shared(black_box(m));
        })
    });
    // A COMPARE AND WRITE holds the word of blocks 0..8; writes skip it.
    let held = mask(0, 8);
    assert_eq!(locks.try_exclusive(held), Exclusive::Taken);
    let free: Vec<u64> = lbas
        .iter()
        .copied()
        .filter(|&l| mask(l, l + 8) & held == 0)
        .collect();
    g.bench_function("CAW holding another word", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % free.len();
            let m = mask(free[i], free[i] + 8);
            assert!(locks.try_shared(m));
            locks.release_shared(black_box(m));
        })
    });
    locks.release_exclusive(held);
    // Another core writes other blocks all the time.
    let shared = Arc::new(BlockLocks::default());
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut lba = STRIPE_BLOCKS * 32;
            while !stop.load(Ordering::Relaxed) {
                let m = mask(lba, lba + 8);
                if shared.try_shared(m) {
                    shared.release_shared(m);
                }
                lba = (lba + 8) % (1 << 21);
            }
        })
    };
    g.bench_function("another core writing too", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % lbas.len();
            let m = mask(lbas[i], lbas[i] + 8);
            assert!(shared.try_shared(m));
            shared.release_shared(black_box(m));
        })
    });
    stop.store(true, Ordering::Relaxed);
    let _ = other.join();
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
