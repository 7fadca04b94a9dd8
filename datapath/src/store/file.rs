//! A regular file or block device as a backing store, opened with O_DIRECT
//! where the filesystem allows it.

use std::fs::OpenOptions;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicU64, Ordering};

use super::{cvt, extend, fd_size, BackingStore};
use crate::StoreError;

/// A file or block device.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    fd: OwnedFd,
    size: AtomicU64,
    direct: bool,
    block_device: bool,
    atomic_unit: Option<u32>,
}

impl FileStore {
    /// Opens an existing file or block device read-write (or read-only).
    /// Tries O_DIRECT first; where the filesystem refuses it (tmpfs) falls back
    /// to buffered I/O with a warning.
    pub fn open(path: &Path, read_only: bool) -> Result<Self, StoreError> {
        Self::open_with(path, read_only, None, true)
    }

    /// Opens `path`, creating a sparse regular file of `size` bytes if it does
    /// not exist, and growing a smaller regular file to `size`.
    pub fn create(path: &Path, size: u64) -> Result<Self, StoreError> {
        Self::open_with(path, false, Some(size), true)
    }

    /// Opens with every option: `create` as in [`FileStore::create`] (a
    /// read-only store ignores it: the file must exist and be large
    /// enough); with `try_direct` false the store is buffered from the start.
    pub fn open_with(
        path: &Path,
        read_only: bool,
        create: Option<u64>,
        try_direct: bool,
    ) -> Result<Self, StoreError> {
        let open = |direct: bool| {
            let mut o = OpenOptions::new();
            o.read(true).write(!read_only);
            // A read-only store opens what exists; it never creates or
            // extends.
            if create.is_some() && !read_only {
                o.create(true);
            }
            if direct {
                o.custom_flags(libc::O_DIRECT);
            }
            o.open(path)
        };
        let err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let first = if try_direct { open(true) } else { open(false) };
        let (file, direct) = match first {
            Ok(f) => (f, try_direct),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::warn!(
                    path = %path.display(),
                    "filesystem refuses O_DIRECT; using buffered I/O for this store"
                );
                (open(false).map_err(err)?, false)
            }
            Err(e) => return Err(err(e)),
        };
        let fd = OwnedFd::from(file);
        let size_err = |source| StoreError::Size {
            path: path.to_owned(),
            source,
        };
        let (mut size, block_device) = fd_size(&fd).map_err(size_err)?;
        if let Some(want) = create.filter(|_| !read_only) {
            if !block_device && size < want {
                use std::os::fd::AsRawFd;
                // SAFETY: plain syscall on the descriptor we just opened.
                cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), want as i64) }).map_err(size_err)?;
                size = want;
            }
        }
        let atomic_unit = if direct { atomic_write_unit(&fd) } else { None };
        Ok(Self {
            path: path.to_owned(),
            fd,
            size: AtomicU64::new(size),
            direct,
            block_device,
            atomic_unit,
        })
    }
}

impl BackingStore for FileStore {
    fn describe(&self) -> String {
        format!(
            "{} {} ({})",
            if self.block_device {
                "block device"
            } else {
                "file"
            },
            self.path.display(),
            if self.direct { "O_DIRECT" } else { "buffered" }
        )
    }
    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }
    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }
    fn grow(&self, size: u64) -> std::io::Result<()> {
        if self.block_device {
            // A block device is grown by whoever owns it; take its new size.
            let (now, _) = fd_size(&self.fd)?;
            self.size.store(now, Ordering::Release);
            if now < size {
                return Err(std::io::Error::other(format!(
                    "block device is {now} bytes; grow it to {size} first"
                )));
            }
        } else if size > self.size() {
            // Other members may share the file and have grown it further
            // already: extend it only where it is shorter, never truncate.
            let (now, _) = fd_size(&self.fd)?;
            if now < size {
                extend(&self.fd, size)?;
            }
            self.size.store(size, Ordering::Release);
        }
        Ok(())
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
    fn direct(&self) -> bool {
        self.direct
    }
    fn holes_read_zero(&self) -> bool {
        // Punched holes in regular files read as zeros; a block device's
        // discard may not (unless it reports so; not probed yet).
        !self.block_device
    }
    fn atomic_write_unit(&self) -> Option<u32> {
        self.atomic_unit
    }
}

/// `STATX_WRITE_ATOMIC` (Linux 6.11).
const STATX_WRITE_ATOMIC: u32 = 0x0001_0000;
/// Offsets in `struct statx` of `stx_mask` and of
/// `stx_atomic_write_unit_min` / `_max` (Linux 6.11 uapi).
const STX_MASK_AT: usize = 0;
const STX_ATOMIC_MIN_AT: usize = 168;
const STX_ATOMIC_MAX_AT: usize = 172;

/// The smallest untorn write unit of `fd` for direct I/O with RWF_ATOMIC,
/// from statx; `None` when the kernel, filesystem or device has none. Read
/// from the raw structure so that it does not depend on the libc crate
/// knowing the 6.11 fields.
fn atomic_write_unit(fd: &OwnedFd) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 256];
    // SAFETY: statx writes at most sizeof(struct statx) = 256 bytes into
    // `buf`, which is 256 bytes long; the empty path with AT_EMPTY_PATH
    // names the open descriptor itself.
    let r = unsafe {
        libc::syscall(
            libc::SYS_statx,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            STATX_WRITE_ATOMIC,
            buf.as_mut_ptr(),
        )
    };
    if r != 0 {
        return None;
    }
    let word = |at: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&buf[at..at + 4]);
        u32::from_ne_bytes(w)
    };
    let (min, max) = (word(STX_ATOMIC_MIN_AT), word(STX_ATOMIC_MAX_AT));
    (word(STX_MASK_AT) & STATX_WRITE_ATOMIC != 0 && min > 0 && max >= min).then_some(min)
}
