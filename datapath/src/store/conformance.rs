//! Conformance suite every [`BackingStore`] must pass, through the synchronous
//! methods and through a [`Ring`]. Each implementation runs [`run_all`].

use std::sync::Arc;

use super::BackingStore;
use crate::ring::{Completion, Payload};
use crate::{PoolConfig, Ring, RingConfig};

const BLOCK: usize = 4096;

/// Runs every check against stores made by `make` (each check gets a fresh
/// 1 MiB store).
pub(crate) fn run_all(make: &dyn Fn() -> Arc<dyn BackingStore>) {
    sync_round_trip(make());
    sync_unmap_and_zeroes(make());
    sync_read_past_end_fails(make());
    ring_round_trip(make());
    ring_unmap_zeroes_flush(make());
    sync_extents(make());
    ring_prefetch(make());
    sync_grow(make());
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn sync_round_trip(s: Arc<dyn BackingStore>) {
    assert!(s.size() >= 1 << 20, "{}", s.describe());
    let mut buf = vec![0u8; BLOCK];
    s.read_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|b| *b == 0), "new store reads zeros");
    // O_DIRECT stores need aligned buffers: use a pool buffer.
    let pool = crate::BufPool::new(&PoolConfig {
        classes: vec![(2 * BLOCK, 2)],
    })
    .unwrap();
    let mut w = pool.get(2 * BLOCK).unwrap();
    w.copy_from_slice(&pattern(7, 2 * BLOCK));
    s.write_at(&w, 8 * BLOCK as u64, false).unwrap();
    s.write_at(&w[..BLOCK], 100 * BLOCK as u64, true).unwrap();
    s.flush().unwrap();
    let mut r = pool.get(2 * BLOCK).unwrap();
    s.read_at(&mut r, 8 * BLOCK as u64).unwrap();
    assert_eq!(&r[..], &w[..]);
    r.set_len(BLOCK);
    s.read_at(&mut r, 100 * BLOCK as u64).unwrap();
    assert_eq!(&r[..], &w[..BLOCK]);
}

fn sync_unmap_and_zeroes(s: Arc<dyn BackingStore>) {
    let pool = crate::BufPool::new(&PoolConfig {
        classes: vec![(4 * BLOCK, 1)],
    })
    .unwrap();
    let mut w = pool.get(4 * BLOCK).unwrap();
    w.fill(0xab);
    s.write_at(&w, 0, false).unwrap();
    s.unmap(0, BLOCK as u64).unwrap();
    s.write_zeroes(2 * BLOCK as u64, BLOCK as u64).unwrap();
    s.read_at(&mut w, 0).unwrap();
    if s.holes_read_zero() {
        assert!(
            w[..BLOCK].iter().all(|b| *b == 0),
            "unmapped block reads zeros"
        );
    }
    assert!(
        w[BLOCK..2 * BLOCK].iter().all(|b| *b == 0xab),
        "neighbour untouched"
    );
    assert!(
        w[2 * BLOCK..3 * BLOCK].iter().all(|b| *b == 0),
        "zeroed block reads zeros"
    );
    assert!(
        w[3 * BLOCK..].iter().all(|b| *b == 0xab),
        "neighbour untouched"
    );
}

fn sync_read_past_end_fails(s: Arc<dyn BackingStore>) {
    let pool = crate::BufPool::new(&PoolConfig {
        classes: vec![(BLOCK, 1)],
    })
    .unwrap();
    let mut r = pool.get(BLOCK).unwrap();
    assert!(s.read_at(&mut r, s.size()).is_err());
}

/// Growing keeps the data, adds zeros at the end, never shrinks.
fn sync_grow(s: Arc<dyn BackingStore>) {
    let pool = crate::BufPool::new(&PoolConfig {
        classes: vec![(BLOCK, 2)],
    })
    .unwrap();
    let old = s.size();
    let mut w = pool.get(BLOCK).unwrap();
    w.copy_from_slice(&pattern(9, BLOCK));
    s.write_at(&w, old - BLOCK as u64, false).unwrap();
    s.grow(old + 4 * BLOCK as u64).unwrap();
    assert_eq!(s.size(), old + 4 * BLOCK as u64);
    let mut r = pool.get(BLOCK).unwrap();
    s.read_at(&mut r, old - BLOCK as u64).unwrap();
    assert_eq!(
        &r[..],
        &pattern(9, BLOCK)[..],
        "data before the old end kept"
    );
    s.read_at(&mut r, old + 3 * BLOCK as u64).unwrap();
    assert!(r.iter().all(|&b| b == 0), "the grown part reads as zeros");
    s.grow(old).unwrap();
    assert_eq!(
        s.size(),
        old + 4 * BLOCK as u64,
        "growing to less is a no-op"
    );
}

fn wait(ring: &mut Ring) -> Completion {
    loop {
        if let Some(c) = ring.next_completion() {
            return c;
        }
        ring.submit_and_wait(1, None).unwrap();
    }
}

fn small_ring() -> Ring {
    Ring::new(&RingConfig {
        entries: 16,
        max_ops: 16,
        max_stores: 4,
        pool: PoolConfig {
            classes: vec![(BLOCK, 8), (64 * BLOCK, 2)],
        },
    })
    .unwrap()
}

fn ring_round_trip(s: Arc<dyn BackingStore>) {
    let mut ring = small_ring();
    let slot = ring.register_store(s.clone()).unwrap();
    // 32 writes in flight at once (more than the SQ holds), then read back.
    for i in 0..8u64 {
        let mut b = ring.pool().get(BLOCK).unwrap();
        b.copy_from_slice(&pattern(i as u8, BLOCK));
        ring.write(slot, b, i * 3 * BLOCK as u64, i % 2 == 0, i)
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..8 {
        let c = wait(&mut ring);
        assert_eq!(c.result, BLOCK as i32, "write {} result", c.tag);
        assert!(matches!(c.payload, Payload::Buf(_)));
        seen.push(c.tag);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..8).collect::<Vec<_>>());
    assert_eq!(ring.pool().free_count(), 10, "buffers return to the pool");
    for i in 0..8u64 {
        let b = ring.pool().get(BLOCK).unwrap();
        ring.read(slot, b, i * 3 * BLOCK as u64, 100 + i)
            .map_err(|(e, _)| e)
            .unwrap();
    }
    for _ in 0..8 {
        let c = wait(&mut ring);
        let i = c.tag - 100;
        let Payload::Buf(b) = c.payload else {
            panic!("read returns its buffer")
        };
        assert_eq!(c.result, BLOCK as i32);
        assert_eq!(&b[..], &pattern(i as u8, BLOCK)[..], "block {i}");
    }
    // A large transfer uses the large class.
    let mut big = ring.pool().get(64 * BLOCK).unwrap();
    big.copy_from_slice(&pattern(99, 64 * BLOCK));
    ring.write(slot, big, 64 * BLOCK as u64, false, 7)
        .map_err(|(e, _)| e)
        .unwrap();
    assert_eq!(wait(&mut ring).result, 64 * BLOCK as i32);
    let mut check = vec![0u8; 64 * BLOCK];
    let pool = crate::BufPool::new(&PoolConfig {
        classes: vec![(64 * BLOCK, 1)],
    })
    .unwrap();
    let mut aligned = pool.get(64 * BLOCK).unwrap();
    s.read_at(&mut aligned, 64 * BLOCK as u64).unwrap();
    check.copy_from_slice(&aligned);
    assert_eq!(
        check,
        pattern(99, 64 * BLOCK),
        "ring write visible to sync read"
    );
    ring.unregister_store(slot).unwrap();
    let b = ring.pool().get(BLOCK).unwrap();
    assert!(
        ring.read(slot, b, 0, 0).is_err(),
        "unregistered slot refused"
    );
}

fn ring_unmap_zeroes_flush(s: Arc<dyn BackingStore>) {
    let mut ring = small_ring();
    let slot = ring.register_store(s.clone()).unwrap();
    let mut b = ring.pool().get(4 * BLOCK).unwrap();
    b.fill(0x5a);
    ring.write(slot, b, 0, false, 1)
        .map_err(|(e, _)| e)
        .unwrap();
    assert_eq!(wait(&mut ring).result, 4 * BLOCK as i32);
    ring.unmap(slot, 0, BLOCK as u64, 2).unwrap();
    assert_eq!(wait(&mut ring).result, 0);
    ring.write_zeroes(slot, 2 * BLOCK as u64, BLOCK as u64, 3)
        .unwrap();
    assert_eq!(wait(&mut ring).result, 0);
    ring.flush(slot, 4).unwrap();
    assert_eq!(wait(&mut ring).result, 0);
    let b = ring.pool().get(4 * BLOCK).unwrap();
    ring.read(slot, b, 0, 5).map_err(|(e, _)| e).unwrap();
    let c = wait(&mut ring);
    let Payload::Buf(b) = c.payload else {
        panic!("read returns its buffer")
    };
    if s.holes_read_zero() {
        assert!(b[..BLOCK].iter().all(|x| *x == 0));
    }
    assert!(b[BLOCK..2 * BLOCK].iter().all(|x| *x == 0x5a));
    assert!(b[2 * BLOCK..3 * BLOCK].iter().all(|x| *x == 0));
    assert!(b[3 * BLOCK..].iter().all(|x| *x == 0x5a));
}

fn sync_extents(s: Arc<dyn BackingStore>) {
    let size = s.size();
    // Past the end: nothing.
    assert_eq!(s.extent_at(size).unwrap().len, 0);
    let pool = crate::BufPool::new(&PoolConfig {
        classes: vec![(BLOCK, 1)],
    })
    .unwrap();
    let mut w = pool.get(BLOCK).unwrap();
    w.fill(0x11);
    s.write_at(&w, 64 * BLOCK as u64, false).unwrap();
    let at = |off: u64| s.extent_at(off).unwrap();
    // Written data is always reported mapped, up to at most the end.
    let e = at(64 * BLOCK as u64);
    assert!(e.mapped, "{}", s.describe());
    assert!(e.len >= 1 && 64 * BLOCK as u64 + e.len <= size);
    let e = at(64 * BLOCK as u64 + 100);
    assert!(e.mapped);
    // Every extent stays inside the store and is never empty.
    for off in [0, BLOCK as u64, 63 * BLOCK as u64, size - 1] {
        let e = at(off);
        assert!(e.len >= 1 && off + e.len <= size, "{off}: {e:?}");
    }
    // A punched range is a hole where the store tracks holes; a hole never
    // reaches into the written block.
    s.unmap(0, 64 * BLOCK as u64).unwrap();
    let e = at(0);
    if !e.mapped {
        assert!(e.len <= 64 * BLOCK as u64, "{e:?}");
    }
}

fn ring_prefetch(s: Arc<dyn BackingStore>) {
    let mut ring = small_ring();
    let slot = ring.register_store(s.clone()).unwrap();
    ring.prefetch(slot, 0, 8 * BLOCK as u64, 9).unwrap();
    let c = wait(&mut ring);
    assert_eq!((c.tag, c.result), (9, 0));
    ring.prefetch(slot, BLOCK as u64, 0, 10).unwrap();
    assert_eq!(wait(&mut ring).result, 0);
    assert!(ring.store(slot).is_ok());
}

mod suites {
    use super::*;
    use crate::{FileStore, MemoryStore};

    #[test]
    fn memory_store() {
        run_all(&|| Arc::new(MemoryStore::new("conf", 1 << 20).unwrap()));
    }

    #[test]
    fn file_store_direct() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let n = std::cell::Cell::new(0);
        run_all(&|| {
            n.set(n.get() + 1);
            let s = FileStore::create(&dir.path().join(format!("d{}", n.get())), 1 << 20).unwrap();
            Arc::new(s)
        });
    }

    #[test]
    fn file_store_buffered() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let n = std::cell::Cell::new(0);
        run_all(&|| {
            n.set(n.get() + 1);
            let path = dir.path().join(format!("d{}", n.get()));
            let s = FileStore::open_with(&path, false, Some(1 << 20), false).unwrap();
            assert!(!s.direct());
            Arc::new(s)
        });
    }

    #[test]
    fn file_store_on_tmpfs() {
        // tmpfs refuses O_DIRECT before Linux 6.6 (buffered fallback) and
        // accepts it after; the store works either way.
        if !std::path::Path::new("/dev/shm").is_dir() {
            return;
        }
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let n = std::cell::Cell::new(0);
        run_all(&|| {
            n.set(n.get() + 1);
            let s = FileStore::create(&dir.path().join(format!("d{}", n.get())), 1 << 20).unwrap();
            Arc::new(s)
        });
    }
}

#[cfg(test)]
mod shared_file {
    // Test helpers: a panic is the test failing.
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use crate::{BackingStore, FileStore};

    /// Two members open the same file; one grows it past what the other
    /// asks for later: the second grow must not cut the file back.
    #[test]
    fn growing_a_shared_file_never_truncates_it() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let path = dir.path().join("shared.img");
        // Buffered: the test's buffers are not O_DIRECT-aligned.
        let a = Arc::new(FileStore::open_with(&path, false, Some(1 << 20), false).unwrap());
        let b = FileStore::open_with(&path, false, Some(1 << 20), false).unwrap();
        assert_eq!(a.path(), Some(path.as_path()));
        a.grow(4 << 20).unwrap();
        a.write_at(&[9u8; 4096], (4 << 20) - 4096, false).unwrap();
        b.grow(2 << 20).unwrap();
        assert_eq!(b.size(), 2 << 20);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 << 20);
        let mut back = vec![0u8; 4096];
        a.read_at(&mut back, (4 << 20) - 4096).unwrap();
        assert!(
            back.iter().all(|&x| x == 9),
            "data past the smaller size survives"
        );
    }
}
