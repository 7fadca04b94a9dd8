//! 4096-aligned I/O buffers from a per-core pool.
//!
//! One anonymous mapping is carved into fixed-size buffers of a few size
//! classes. The ring registers every buffer with the kernel once, so disk I/O
//! uses `READ_FIXED`/`WRITE_FIXED` and never pins pages per request. A [`Buf`]
//! returns to its pool's free list when dropped; the pool lives on one core
//! (it is `!Send`), so the free lists need no lock.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::rc::Rc;

use crate::RingError;

/// Alignment of every buffer: enough for O_DIRECT on 512 and 4096 byte sectors.
pub const ALIGN: usize = 4096;

/// Size classes of a buffer pool: `(buffer size, count)` pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// `(size, count)` per class; sizes are multiples of [`ALIGN`].
    pub classes: Vec<(usize, usize)>,
}

impl Default for PoolConfig {
    /// 128 x 16 KiB + 32 x 128 KiB + 8 x 1 MiB = 14 MiB per core.
    fn default() -> Self {
        Self {
            classes: vec![(16 << 10, 128), (128 << 10, 32), (1 << 20, 8)],
        }
    }
}

impl PoolConfig {
    /// Total bytes of the pool.
    pub fn bytes(&self) -> usize {
        self.classes.iter().map(|(s, c)| s * c).sum()
    }

    /// Number of buffers.
    pub fn count(&self) -> usize {
        self.classes.iter().map(|(_, c)| c).sum()
    }

    /// Largest buffer: the largest single transfer the engine can carry.
    pub fn max_buf(&self) -> usize {
        self.classes.iter().map(|(s, _)| *s).max().unwrap_or(0)
    }
}

struct Class {
    size: usize,
    free: Vec<u16>,
}

struct PoolInner {
    base: NonNull<u8>,
    bytes: usize,
    /// Start offset and class of every buffer, indexed by buffer index.
    layout: Vec<(usize, u8)>,
    classes: RefCell<Vec<Class>>,
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // SAFETY: `base`/`bytes` describe the mapping made in `BufPool::new`;
        // every `Buf` holds an `Rc<PoolInner>`, so none is alive here, and the
        // ring that registered the pages holds one too and is gone as well.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.bytes);
        }
    }
}

/// A per-core pool of aligned buffers.
#[derive(Clone)]
pub struct BufPool {
    inner: Rc<PoolInner>,
}

impl fmt::Debug for BufPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufPool")
            .field("bytes", &self.inner.bytes)
            .field("buffers", &self.inner.layout.len())
            .finish()
    }
}

impl BufPool {
    /// Maps the pool's memory. Sizes are rounded up to [`ALIGN`].
    pub fn new(cfg: &PoolConfig) -> Result<Self, RingError> {
        let mut classes: Vec<(usize, usize)> = cfg
            .classes
            .iter()
            .filter(|(s, c)| *s > 0 && *c > 0)
            .map(|(s, c)| (s.div_ceil(ALIGN) * ALIGN, *c))
            .collect();
        classes.sort_unstable();
        let bytes: usize = classes.iter().map(|(s, c)| s * c).sum::<usize>().max(ALIGN);
        if classes.iter().map(|(_, c)| c).sum::<usize>() > usize::from(u16::MAX)
            || classes.len() > 255
        {
            return Err(RingError::PoolAlloc {
                bytes,
                source: io::Error::new(io::ErrorKind::InvalidInput, "too many buffers"),
            });
        }
        // SAFETY: an anonymous private mapping with no address hint has no
        // preconditions; the result is checked against MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(RingError::PoolAlloc {
                bytes,
                source: io::Error::last_os_error(),
            });
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| RingError::PoolAlloc {
            bytes,
            source: io::Error::other("mmap returned null"),
        })?;
        let mut layout = Vec::new();
        let mut out = Vec::new();
        let mut off = 0;
        for (ci, (size, count)) in classes.iter().enumerate() {
            let mut free = Vec::with_capacity(*count);
            for _ in 0..*count {
                free.push(layout.len() as u16);
                layout.push((off, ci as u8));
                off += size;
            }
            // Hand out low indices first.
            free.reverse();
            out.push(Class { size: *size, free });
        }
        Ok(Self {
            inner: Rc::new(PoolInner {
                base,
                bytes,
                layout,
                classes: RefCell::new(out),
            }),
        })
    }

    /// Takes a buffer of at least `len` bytes (the smallest class that has one
    /// free), with its length set to `len`; `None` when none is free or `len`
    /// exceeds the largest class.
    pub fn get(&self, len: usize) -> Option<Buf> {
        let mut classes = self.inner.classes.borrow_mut();
        for class in classes.iter_mut() {
            if class.size < len {
                continue;
            }
            if let Some(index) = class.free.pop() {
                let (off, _) = self.inner.layout[usize::from(index)];
                // SAFETY: `off` lies inside the mapping (layout was built from
                // the class sizes that sum to `bytes`).
                let ptr = unsafe { NonNull::new_unchecked(self.inner.base.as_ptr().add(off)) };
                return Some(Buf {
                    ptr,
                    cap: class.size,
                    len,
                    index,
                    pool: Rc::clone(&self.inner),
                });
            }
        }
        None
    }

    /// Largest buffer this pool hands out.
    pub fn max_buf(&self) -> usize {
        self.inner
            .classes
            .borrow()
            .iter()
            .map(|c| c.size)
            .max()
            .unwrap_or(0)
    }

    /// Buffers currently free, over all classes.
    pub fn free_count(&self) -> usize {
        self.inner
            .classes
            .borrow()
            .iter()
            .map(|c| c.free.len())
            .sum()
    }

    /// One iovec per buffer, in index order, for `IORING_REGISTER_BUFFERS`.
    pub(crate) fn iovecs(&self) -> Vec<libc::iovec> {
        let classes = self.inner.classes.borrow();
        self.inner
            .layout
            .iter()
            .map(|(off, ci)| libc::iovec {
                // SAFETY: `off` is inside the mapping (see `get`).
                iov_base: unsafe { self.inner.base.as_ptr().add(*off) }.cast(),
                iov_len: classes[usize::from(*ci)].size,
            })
            .collect()
    }

    /// Total bytes mapped.
    pub fn bytes(&self) -> usize {
        self.inner.bytes
    }

    /// Whether `buf` came from this pool.
    pub(crate) fn owns(&self, buf: &Buf) -> bool {
        Rc::ptr_eq(&self.inner, &buf.pool)
    }
}

/// An aligned buffer from a [`BufPool`]; derefs to its first `len` bytes.
pub struct Buf {
    ptr: NonNull<u8>,
    cap: usize,
    len: usize,
    index: u16,
    pool: Rc<PoolInner>,
}

impl fmt::Debug for Buf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buf")
            .field("index", &self.index)
            .field("len", &self.len)
            .field("cap", &self.cap)
            .finish()
    }
}

impl Buf {
    /// Capacity of the underlying buffer.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Sets the visible length; clamped to the capacity.
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.cap);
    }

    /// Index of the buffer in the ring's registered buffer table.
    pub(crate) fn index(&self) -> u16 {
        self.index
    }

    /// Pointer to the start of the buffer, for the kernel.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the buffer is `cap >= len` bytes inside the live mapping (the
        // `Rc` keeps it mapped), initialised (anonymous mappings start zeroed),
        // and this `Buf` is its only owner while it is out of the pool.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let (_, ci) = self.pool.layout[usize::from(self.index)];
        self.pool.classes.borrow_mut()[usize::from(ci)]
            .free
            .push(self.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_recycled() {
        let pool = BufPool::new(&PoolConfig {
            classes: vec![(4096, 2), (8192, 1)],
        })
        .unwrap();
        let a = pool.get(100).unwrap();
        let b = pool.get(4096).unwrap();
        assert_eq!(a.as_ptr() as usize % ALIGN, 0);
        assert_eq!(b.as_ptr() as usize % ALIGN, 0);
        assert_eq!(a.len(), 100);
        // Small class exhausted: the next small request spills to 8 KiB.
        let c = pool.get(10).unwrap();
        assert_eq!(c.capacity(), 8192);
        assert!(pool.get(1).is_none());
        assert!(pool.get(16384).is_none());
        drop(a);
        assert_eq!(pool.free_count(), 1);
        let d = pool.get(4096).unwrap();
        assert_eq!(d.capacity(), 4096);
        drop((b, c, d));
        assert_eq!(pool.free_count(), 3);
    }

    #[test]
    fn writes_stay_in_their_buffer() {
        let pool = BufPool::new(&PoolConfig {
            classes: vec![(4096, 2)],
        })
        .unwrap();
        let mut a = pool.get(4096).unwrap();
        let mut b = pool.get(4096).unwrap();
        a.fill(0xaa);
        b.fill(0x55);
        assert!(a.iter().all(|x| *x == 0xaa));
        assert!(b.iter().all(|x| *x == 0x55));
        assert_eq!(pool.iovecs().len(), 2);
    }
}
