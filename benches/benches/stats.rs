//! What the per-device I/O counters cost a disk operation: one counter
//! update on the submitting core's own slot, alone, and while another
//! thread updates its own slot of the same device (the slots are padded
//! apart, so this should cost the same). The `/metrics` read (a sum over
//! the slots) is measured too; it runs per scrape, not per I/O.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use trellis_datapath::{IoKind, IoStats};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("device I/O counters");
    let stats = Arc::new(IoStats::new(2));
    g.bench_function("record a 4 KiB read", |b| {
        b.iter(|| stats.record(black_box(0), IoKind::Read(black_box(4096))))
    });
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (stats, stop) = (Arc::clone(&stats), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                stats.record(1, IoKind::Write(4096));
            }
        })
    };
    g.bench_function("record while another core records", |b| {
        b.iter(|| stats.record(black_box(0), IoKind::Read(black_box(4096))))
    });
    stop.store(true, Ordering::Relaxed);
    let _ = other.join();
    g.bench_function("snapshot for /metrics", |b| {
        b.iter(|| black_box(stats.snapshot()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
