//! Backing stores: where a virtual device's blocks live.
//!
//! Every store is a file descriptor the per-core rings can do I/O on: a
//! regular file or block device ([`FileStore`], O_DIRECT where the filesystem
//! allows it) or an anonymous in-memory file ([`MemoryStore`], memfd). The
//! synchronous methods serve start-up, slow paths and the conformance suite;
//! the hot path goes through [`crate::Ring`] on [`BackingStore::fd`].

mod file;
mod memory;

use std::fmt::Debug;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

pub use file::{FileOpen, FileStore, OWNER_XATTR};
pub use memory::MemoryStore;

/// A store of blocks addressed by byte offset.
pub trait BackingStore: Send + Sync + Debug {
    /// What this store is, for logs ("file /var/lib/x.img (O_DIRECT)").
    fn describe(&self) -> String;
    /// Size in bytes.
    fn size(&self) -> u64;
    /// The file or block device holding the blocks; `None` for a store
    /// that is its own (memory). Two stores with the same path share their
    /// blocks.
    fn path(&self) -> Option<&std::path::Path> {
        None
    }
    /// The descriptor the ring submits I/O to.
    fn fd(&self) -> BorrowedFd<'_>;
    /// Whether I/O bypasses the page cache (buffers must be aligned).
    fn direct(&self) -> bool;
    /// Whether unmapped (punched) ranges read back as zeros.
    fn holes_read_zero(&self) -> bool {
        true
    }
    /// Grows the store to at least `size` bytes (a no-op when it already is
    /// that large): a regular file or memfd is extended (sparse); a block
    /// device must have been grown underneath (its size is re-read).
    fn grow(&self, size: u64) -> io::Result<()> {
        if size <= self.size() {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this store cannot grow",
        ))
    }
    /// The size in bytes of a write the store makes untorn with RWF_ATOMIC
    /// (statx STATX_WRITE_ATOMIC, the smallest atomic unit); `None` when it
    /// cannot (no hardware or filesystem support, buffered I/O).
    fn atomic_write_unit(&self) -> Option<u32> {
        None
    }
    /// Reads `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let fd = self.fd().as_raw_fd();
        let mut done = 0;
        while done < buf.len() {
            let rest = &mut buf[done..];
            // SAFETY: `rest` is a live, exclusively borrowed slice of `rest.len()` bytes.
            let n = unsafe {
                libc::pread(
                    fd,
                    rest.as_mut_ptr().cast(),
                    rest.len(),
                    (offset + done as u64) as i64,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past end of store",
                ));
            }
            done += n as usize;
        }
        Ok(())
    }
    /// Writes `buf` at `offset`; `fua` makes it durable before returning.
    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        let fd = self.fd().as_raw_fd();
        let iov = libc::iovec {
            iov_base: buf.as_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let flags = if fua { libc::RWF_DSYNC } else { 0 };
        // SAFETY: `iov` points at `buf`, which outlives the call.
        let n = unsafe { libc::pwritev2(fd, &iov, 1, offset as i64, flags) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short write to store",
            ));
        }
        Ok(())
    }
    /// Makes completed writes durable (fdatasync).
    fn flush(&self) -> io::Result<()> {
        // SAFETY: plain syscall on a descriptor we own.
        cvt(unsafe { libc::fdatasync(self.fd().as_raw_fd()) })
    }
    /// Deallocates a range (punch hole); reads of it return zeros.
    fn unmap(&self, offset: u64, len: u64) -> io::Result<()> {
        fallocate(
            self.fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    }
    /// Writes zeros over a range, keeping it allocated.
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        zero_range(self.fd(), offset, len)
    }
    /// The allocation extent `offset` lies in (SEEK_DATA / SEEK_HOLE): whether
    /// it is mapped and how many bytes from `offset` share that state (up to
    /// the end of the store). Stores without hole tracking report mapped.
    fn extent_at(&self, offset: u64) -> io::Result<Extent> {
        seek_extent(self.fd(), offset, self.size())
    }
}

/// A run of bytes with one allocation state, from [`BackingStore::extent_at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Backed by allocated storage (false: a hole, which reads as zeros where
    /// [`BackingStore::holes_read_zero`]).
    pub mapped: bool,
    /// Bytes from the queried offset with this state (at least 1 unless the
    /// offset is at or past the end).
    pub len: u64,
}

/// [`Extent`] at `offset` of a descriptor of `size` bytes via lseek(2).
/// Where SEEK_DATA is unsupported (EINVAL: some block devices, old
/// filesystems) the whole rest is reported mapped.
pub fn seek_extent(fd: BorrowedFd<'_>, offset: u64, size: u64) -> io::Result<Extent> {
    if offset >= size {
        return Ok(Extent {
            mapped: true,
            len: 0,
        });
    }
    let seek = |whence: i32| -> io::Result<Option<u64>> {
        // SAFETY: lseek on a borrowed, open descriptor; it moves only the file
        // position, which no store user relies on (all I/O is positioned).
        let r = unsafe { libc::lseek(fd.as_raw_fd(), offset as i64, whence) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENXIO) => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(r as u64))
    };
    let rest = size - offset;
    let data = match seek(libc::SEEK_DATA) {
        Ok(d) => d,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            return Ok(Extent {
                mapped: true,
                len: rest,
            })
        }
        Err(e) => return Err(e),
    };
    match data {
        // No data at or after `offset`: a hole to the end.
        None => Ok(Extent {
            mapped: false,
            len: rest,
        }),
        // Data starts later: a hole up to it.
        Some(d) if d > offset => Ok(Extent {
            mapped: false,
            len: d.min(size) - offset,
        }),
        // In data: mapped up to the next hole (the end counts as one).
        Some(_) => {
            let hole = seek(libc::SEEK_HOLE)?.unwrap_or(size);
            Ok(Extent {
                mapped: true,
                len: hole.clamp(offset + 1, size) - offset,
            })
        }
    }
}

/// Zeroes a range with FALLOC_FL_ZERO_RANGE, or punch-hole-then-allocate where
/// the filesystem lacks it (tmpfs).
pub fn zero_range(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    match fallocate(
        fd,
        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
        offset,
        len,
    ) {
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            fallocate(
                fd,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            )?;
            fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, offset, len)
        }
        r => r,
    }
}

fn fallocate(fd: BorrowedFd<'_>, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall on a borrowed, open descriptor.
    cvt(unsafe { libc::fallocate(fd.as_raw_fd(), mode, offset as i64, len as i64) })
}

pub(crate) fn cvt(r: i32) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Size of an open file or block device.
/// Extends regular file or memfd `fd` to `size` bytes (never shrinks).
pub(crate) fn extend(fd: &OwnedFd, size: u64) -> io::Result<()> {
    let size = i64::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: plain syscall on a descriptor the caller owns.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), size) })
}

pub(crate) fn fd_size(fd: &OwnedFd) -> io::Result<(u64, bool)> {
    // SAFETY: `st` is plain data the kernel fills; zeroed is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer for the duration of the call.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    if st.st_mode & libc::S_IFMT == libc::S_IFBLK {
        let mut size: u64 = 0;
        // SAFETY: BLKGETSIZE64 writes one u64 to the pointer we pass.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), BLKGETSIZE64, &mut size) })?;
        Ok((size, true))
    } else {
        Ok((st.st_size as u64, false))
    }
}

/// `_IOR(0x12, 114, size_t)`
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;

#[cfg(test)]
pub(crate) mod conformance;
