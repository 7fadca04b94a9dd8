//! An in-memory backing store for tests and benchmarks: an anonymous memfd,
//! so the rings do I/O on it exactly as on a file (buffered, no O_DIRECT).

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{cvt, BackingStore};
use crate::StoreError;

/// Blocks in anonymous memory.
#[derive(Debug)]
pub struct MemoryStore {
    fd: OwnedFd,
    size: AtomicU64,
}

impl MemoryStore {
    /// Creates a zero-filled store of `size` bytes (pages are allocated on write).
    pub fn new(name: &str, size: u64) -> Result<Self, StoreError> {
        let err = |source| StoreError::Memory { size, source };
        let cname = CString::new(format!("trellis-{name}"))
            .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
        // SAFETY: `cname` is a valid NUL-terminated string for the call.
        let raw = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain syscall on the descriptor we own.
        cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), size as i64) }).map_err(err)?;
        Ok(Self {
            fd,
            size: AtomicU64::new(size),
        })
    }
}

impl BackingStore for MemoryStore {
    fn describe(&self) -> String {
        format!("memory ({} bytes)", self.size())
    }
    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }
    fn grow(&self, size: u64) -> std::io::Result<()> {
        if size > self.size() {
            super::extend(&self.fd, size)?;
            self.size.store(size, Ordering::Release);
        }
        Ok(())
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
    fn direct(&self) -> bool {
        false
    }
}
