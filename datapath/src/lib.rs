//! Trellis data path: backing stores, the per-core io_uring engine, registered
//! I/O buffers and virtual devices.
//!
//! ```text
//! iscsi target (per core) --submit--> Ring (io_uring, one per core thread)
//!        ^                              |  owns each op + buffer until reaped
//!        +-------- Completion ----------+--> BackingStore fd (fixed file)
//! ```
//!
//! This is the only crate of the workspace with `unsafe` code: the ring and the
//! buffer pool. Everything above it uses the safe API here.

pub mod buf;
pub mod cores;
pub mod device;
mod error;
pub mod ring;
pub mod stats;
pub mod store;

pub use buf::{Buf, BufPool, PoolConfig, ALIGN};
pub use cores::{available_cores, nofile_limit, raise_nofile_limit, spawn_cores, Waker};
pub use device::{DeviceSpec, VirtualDevice};
pub use error::{DeviceError, RingError, StoreError};
pub use ring::{
    Completion, Payload, RecvBuf, Ring, RingConfig, SendMsg, SendSeg, StoreSlot, WriteFlags,
};
pub use stats::{IoKind, IoStats, IoTotals};
pub use store::{BackingStore, Extent, FileOpen, FileStore, MemoryStore, OWNER_XATTR};
