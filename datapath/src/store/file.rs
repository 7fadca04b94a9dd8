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
    /// Whether [`BackingStore::grow`] may extend the file.
    extend: bool,
}

/// The extended attribute that names the device a file was created for
/// (its UUID): a member extends only a file that carries its device's tag.
pub const OWNER_XATTR: &std::ffi::CStr = c"user.trellis.device";

/// How [`FileStore::open_opts`] opens a path. The default opens an existing
/// file or block device read-write, O_DIRECT where allowed, following
/// symbolic links.
#[derive(Debug, Clone, Copy)]
pub struct FileOpen {
    /// Open for reading only (never creates or extends).
    pub read_only: bool,
    /// Create a missing file (mode 0600, sparse) of this size, and extend a
    /// smaller regular file to it.
    pub create: Option<u64>,
    /// With `create`: the file must not exist yet (O_EXCL).
    pub create_new: bool,
    /// Refuse a symbolic link as the last component (O_NOFOLLOW).
    pub no_follow: bool,
    /// Open a block device exclusively (O_EXCL): refused (EBUSY) while it
    /// is mounted or held exclusively by another opener.
    pub exclusive: bool,
    /// Try O_DIRECT first (with a buffered fallback).
    pub direct: bool,
}

impl Default for FileOpen {
    fn default() -> Self {
        Self {
            read_only: false,
            create: None,
            create_new: false,
            no_follow: false,
            exclusive: false,
            direct: true,
        }
    }
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

    /// Opens with the common options: `create` as in [`FileStore::create`]
    /// (a read-only store ignores it: the file must exist and be large
    /// enough); with `try_direct` false the store is buffered from the start.
    pub fn open_with(
        path: &Path,
        read_only: bool,
        create: Option<u64>,
        try_direct: bool,
    ) -> Result<Self, StoreError> {
        Self::open_opts(
            path,
            FileOpen {
                read_only,
                create,
                direct: try_direct,
                ..FileOpen::default()
            },
        )
    }

    /// Opens `path` as `opts` says.
    pub fn open_opts(path: &Path, opts: FileOpen) -> Result<Self, StoreError> {
        let create = opts.create.filter(|_| !opts.read_only);
        let open = |direct: bool, create_new: bool| {
            let mut o = OpenOptions::new();
            o.read(true).write(!opts.read_only);
            // A read-only store opens what exists; it never creates or
            // extends.
            if create.is_some() {
                if create_new {
                    o.create_new(true);
                } else {
                    o.create(true);
                }
                o.mode(0o600);
            }
            let mut flags = 0;
            if direct {
                flags |= libc::O_DIRECT;
            }
            if opts.no_follow {
                flags |= libc::O_NOFOLLOW;
            }
            // O_EXCL without O_CREAT: exclusive on a block device.
            if opts.exclusive && create.is_none() {
                flags |= libc::O_EXCL;
            }
            o.custom_flags(flags);
            o.open(path)
        };
        let err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let (file, direct) = match open(opts.direct, opts.create_new) {
            Ok(f) => (f, opts.direct),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && opts.direct => {
                tracing::warn!(
                    path = %path.display(),
                    "filesystem refuses O_DIRECT; using buffered I/O for this store"
                );
                // The refused try created a new file already.
                (open(false, false).map_err(err)?, false)
            }
            Err(e) => return Err(err(e)),
        };
        let fd = OwnedFd::from(file);
        let size_err = |source| StoreError::Size {
            path: path.to_owned(),
            source,
        };
        let (mut size, block_device) = fd_size(&fd).map_err(size_err)?;
        if let Some(want) = create {
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
            extend: true,
        })
    }

    /// Whether [`BackingStore::grow`] may extend the file (it may unless
    /// told otherwise).
    pub fn set_extend(&mut self, extend: bool) {
        self.extend = extend;
    }

    /// Whether the store is a block device (else a regular file).
    pub fn is_block_device(&self) -> bool {
        self.block_device
    }

    /// The device tag ([`OWNER_XATTR`]) the file carries, if any; `None`
    /// also where the filesystem keeps no extended attributes.
    pub fn owner_tag(&self) -> Option<String> {
        use std::os::fd::AsRawFd;
        let mut buf = [0u8; 128];
        // SAFETY: fgetxattr writes at most `buf.len()` bytes into `buf`,
        // which lives across the call; the name is a NUL-terminated C string.
        let n = unsafe {
            libc::fgetxattr(
                self.fd.as_raw_fd(),
                OWNER_XATTR.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let n = usize::try_from(n).ok()?;
        String::from_utf8(buf[..n].to_vec()).ok()
    }

    /// Tags the file as created for device `tag` ([`OWNER_XATTR`]).
    pub fn set_owner_tag(&self, tag: &str) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: fsetxattr reads `tag.len()` bytes from `tag`, which lives
        // across the call; the name is a NUL-terminated C string.
        let r = unsafe {
            libc::fsetxattr(
                self.fd.as_raw_fd(),
                OWNER_XATTR.as_ptr(),
                tag.as_ptr().cast(),
                tag.len(),
                0,
            )
        };
        cvt(r)
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
            if !self.extend {
                return Err(std::io::Error::other(format!(
                    "{} was not created by Trellis for this device (no {} tag): it is never extended; grow it yourself, or tag it",
                    self.path.display(),
                    OWNER_XATTR.to_string_lossy()
                )));
            }
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
