//! Per-device I/O counters, kept per core so the hot path never shares a
//! cache line with another core: each core adds to its own padded slot
//! with relaxed atomics, and a reader (`/metrics`) sums the slots.
//!
//! ```text
//!  core 0 ─ add ─> [slot 0]  ┐
//!  core 1 ─ add ─> [slot 1]  ├─ snapshot() sums ─> IoTotals
//!  ...                       ┘
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

/// What the data path did on a device, summed over every core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoTotals {
    /// Reads submitted.
    pub read_ops: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Writes submitted (write zeroes included).
    pub write_ops: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Cache flushes.
    pub flush_ops: u64,
    /// Unmaps (hole punches).
    pub unmap_ops: u64,
    /// Operations that completed with an error.
    pub errors: u64,
}

/// One core's counters, alone on its cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot {
    read_ops: AtomicU64,
    read_bytes: AtomicU64,
    write_ops: AtomicU64,
    write_bytes: AtomicU64,
    flush_ops: AtomicU64,
    unmap_ops: AtomicU64,
    errors: AtomicU64,
}

/// What kind of operation [`IoStats::record`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    /// A read of this many bytes.
    Read(u64),
    /// A write (or write zeroes) of this many bytes.
    Write(u64),
    /// A cache flush.
    Flush,
    /// An unmap.
    Unmap,
    /// Anything else (prefetch, extent lookup): not counted.
    Other,
}

/// Counters of one device, one slot per core.
#[derive(Debug)]
pub struct IoStats {
    slots: Box<[Slot]>,
}

impl IoStats {
    /// Counters for a device served by `cores` core threads.
    pub fn new(cores: usize) -> Self {
        Self {
            slots: (0..cores.max(1)).map(|_| Slot::default()).collect(),
        }
    }

    fn slot(&self, core: usize) -> &Slot {
        // Cores past the configured count share the last slot (correct,
        // just not contention-free).
        &self.slots[core.min(self.slots.len() - 1)]
    }

    /// Counts an operation submitted on `core`.
    pub fn record(&self, core: usize, kind: IoKind) {
        let s = self.slot(core);
        let add = |c: &AtomicU64, n: u64| {
            c.fetch_add(n, Ordering::Relaxed);
        };
        match kind {
            IoKind::Read(bytes) => {
                add(&s.read_ops, 1);
                add(&s.read_bytes, bytes);
            }
            IoKind::Write(bytes) => {
                add(&s.write_ops, 1);
                add(&s.write_bytes, bytes);
            }
            IoKind::Flush => add(&s.flush_ops, 1),
            IoKind::Unmap => add(&s.unmap_ops, 1),
            IoKind::Other => {}
        }
    }

    /// Counts an operation of `core` that completed with an error.
    pub fn record_error(&self, core: usize) {
        self.slot(core).errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The sums over every core.
    pub fn snapshot(&self) -> IoTotals {
        let mut t = IoTotals::default();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for s in self.slots.iter() {
            t.read_ops += get(&s.read_ops);
            t.read_bytes += get(&s.read_bytes);
            t.write_ops += get(&s.write_ops);
            t.write_bytes += get(&s.write_bytes);
            t.flush_ops += get(&s.flush_ops);
            t.unmap_ops += get(&s.unmap_ops);
            t.errors += get(&s.errors);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn counts_from_every_core_add_up() {
        let stats = Arc::new(IoStats::new(2));
        let threads: Vec<_> = (0..3)
            .map(|core| {
                let s = Arc::clone(&stats);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        s.record(core, IoKind::Read(4096));
                        s.record(core, IoKind::Write(512));
                    }
                    s.record(core, IoKind::Flush);
                    s.record(core, IoKind::Unmap);
                    s.record(core, IoKind::Other);
                    s.record_error(core);
                })
            })
            .collect();
        for t in threads {
            t.join().expect("counter thread");
        }
        assert_eq!(
            stats.snapshot(),
            IoTotals {
                read_ops: 3000,
                read_bytes: 3000 * 4096,
                write_ops: 3000,
                write_bytes: 3000 * 512,
                flush_ops: 3,
                unmap_ops: 3,
                errors: 3,
            }
        );
        assert_eq!(std::mem::align_of::<Slot>(), 128);
    }
}
