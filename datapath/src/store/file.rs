//! A regular file or block device as a backing store, opened with O_DIRECT
//! where the filesystem allows it.

use std::fs::OpenOptions;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{cvt, fd_size, BackingStore};
use crate::StoreError;

/// A file or block device.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    fd: OwnedFd,
    size: u64,
    direct: bool,
    block_device: bool,
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

    /// Opens with every option: `create` as in [`FileStore::create`]; with
    /// `try_direct` false the store is buffered from the start.
    pub fn open_with(
        path: &Path,
        read_only: bool,
        create: Option<u64>,
        try_direct: bool,
    ) -> Result<Self, StoreError> {
        let open = |direct: bool| {
            let mut o = OpenOptions::new();
            o.read(true).write(!read_only);
            if create.is_some() {
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
        if let Some(want) = create {
            if !block_device && size < want {
                use std::os::fd::AsRawFd;
                // SAFETY: plain syscall on the descriptor we just opened.
                cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), want as i64) }).map_err(size_err)?;
                size = want;
            }
        }
        Ok(Self {
            path: path.to_owned(),
            fd,
            size,
            direct,
            block_device,
        })
    }

    /// Path the store was opened from.
    pub fn path(&self) -> &Path {
        &self.path
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
        self.size
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
}
