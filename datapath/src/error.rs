//! Error types of the data path, one per layer.

use std::io;
use std::path::PathBuf;

/// Opening or operating a backing store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing file or device could not be opened.
    #[error("cannot open backing store {path}")]
    Open {
        /// Path that was opened.
        path: PathBuf,
        /// Underlying cause.
        #[source]
        source: io::Error,
    },
    /// The backing store's size could not be read or set.
    #[error("cannot size backing store {path}")]
    Size {
        /// Path of the store.
        path: PathBuf,
        /// Underlying cause.
        #[source]
        source: io::Error,
    },
    /// An in-memory store could not be created.
    #[error("cannot create in-memory store of {size} bytes")]
    Memory {
        /// Requested size.
        size: u64,
        /// Underlying cause.
        #[source]
        source: io::Error,
    },
}

/// Setting up or driving an io_uring ring failed.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// io_uring cannot be used in this process at all.
    #[error(
        "io_uring is unavailable ({reason}); check `sysctl kernel.io_uring_disabled` \
         (must be 0, or 1 with the process in `kernel.io_uring_group`) and any seccomp \
         profile of the container or service manager"
    )]
    Unavailable {
        /// What the kernel said.
        reason: String,
        /// Underlying cause.
        #[source]
        source: io::Error,
    },
    /// The registered buffer pool does not fit under RLIMIT_MEMLOCK.
    #[error(
        "the I/O buffer pool needs {needed} bytes of locked memory but RLIMIT_MEMLOCK is \
         {limit} bytes; raise it (`ulimit -l`, LimitMEMLOCK= in systemd) or shrink the pool"
    )]
    MemlockTooSmall {
        /// Bytes the pool needs pinned.
        needed: u64,
        /// The current soft limit.
        limit: u64,
    },
    /// Mapping the buffer pool's memory failed.
    #[error("cannot allocate the I/O buffer pool ({bytes} bytes)")]
    PoolAlloc {
        /// Size of the pool.
        bytes: usize,
        /// Underlying cause.
        #[source]
        source: io::Error,
    },
    /// A ring system call failed.
    #[error("io_uring {op} failed")]
    Syscall {
        /// Which call.
        op: &'static str,
        /// Underlying cause.
        #[source]
        source: io::Error,
    },
    /// Every operation slot of the ring is in use; try again after reaping.
    #[error("the ring has no free operation slot")]
    Busy,
    /// The store slot is not registered with this ring.
    #[error("store slot {0} is not registered with this ring")]
    NoSuchStore(u32),
    /// The requested range does not fit in the buffer.
    #[error("range {start}..{end} exceeds buffer of {cap} bytes")]
    BadRange {
        /// Range start.
        start: usize,
        /// Range end.
        end: usize,
        /// Buffer capacity.
        cap: usize,
    },
}

/// A virtual device specification is invalid.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Logical block size must be 512 or 4096.
    #[error("logical block size {0} is not supported (use 512 or 4096)")]
    BlockSize(u32),
    /// Size must be a positive multiple of the block size.
    #[error("device size {size} is not a positive multiple of the block size {block_size}")]
    Size {
        /// Requested size in bytes.
        size: u64,
        /// Logical block size.
        block_size: u32,
    },
    /// The backing store is smaller than the device.
    #[error("backing store holds {store} bytes, device needs {size}")]
    StoreTooSmall {
        /// Store size.
        store: u64,
        /// Device size.
        size: u64,
    },
    /// The backing store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
