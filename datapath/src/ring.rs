//! One io_uring per core: disk I/O on backing stores and socket I/O for the
//! connections that live on that core.
//!
//! ```text
//!  caller ──read/write/send/recv(.., tag)──> Slot (owns buffer, iovecs, fd)
//!                                              │ user_data = slot index
//!                                              v
//!                                       SQ ─> kernel ─> CQ
//!                                              │
//!  caller <──── Completion { tag, result, payload } <── reap
//! ```
//!
//! Every in-flight operation lives in a slot of a fixed table until its CQE is
//! reaped: the buffer, the iovecs and `msghdr` that point into it, and a
//! reference to the socket. Slots never move (the table is allocated once), so
//! the kernel's pointers into them stay valid. A failed submission hands the
//! buffer back (`Err((e, payload))`). Short socket sends are resubmitted here;
//! the caller sees one completion for the whole message.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use io_uring::{opcode, squeue, types, IoUring};

use crate::buf::{Buf, BufPool, PoolConfig};
use crate::store::{zero_range, BackingStore};
use crate::RingError;

/// Index of a backing store registered with a ring (also its fixed-file index).
pub type StoreSlot = u32;

/// `RWF_ATOMIC` (Linux 6.11): the write is untorn or fails.
const RWF_ATOMIC: i32 = 0x40;

/// How a write reaches the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteFlags {
    /// Force unit access: durable when it completes (RWF_DSYNC).
    pub fua: bool,
    /// Untorn: all of it or none of it lands, even across a crash
    /// (RWF_ATOMIC; only on stores with an atomic write unit).
    pub atomic: bool,
}

/// Ring sizing.
#[derive(Debug, Clone)]
pub struct RingConfig {
    /// Submission queue entries (the completion queue is twice that).
    pub entries: u32,
    /// Operation slots: the most operations in flight at once.
    pub max_ops: usize,
    /// Most backing stores registered at once.
    pub max_stores: u32,
    /// The registered buffer pool.
    pub pool: PoolConfig,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            entries: 256,
            max_ops: 1024,
            max_stores: 256,
            pool: PoolConfig::default(),
        }
    }
}

/// One segment of a socket send: a range of the message's head or body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendSeg {
    /// `len` bytes of [`SendMsg::head`] from `start`.
    Head {
        /// First byte.
        start: u32,
        /// Length.
        len: u32,
    },
    /// `len` bytes of body buffer `buf` of [`SendMsg::bodies`] from `start`.
    Body {
        /// Index into [`SendMsg::bodies`].
        buf: u16,
        /// First byte.
        start: u32,
        /// Length.
        len: u32,
    },
}

/// A message to send on a socket, gathered from a heap head (PDU headers,
/// digests, small data) and pool buffers (bulk data, e.g. reads' buffers).
#[derive(Debug, Default)]
pub struct SendMsg {
    /// Header bytes and small payloads.
    pub head: Vec<u8>,
    /// Bulk data buffers.
    pub bodies: Vec<Buf>,
    /// Order in which ranges go on the wire.
    pub segs: Vec<SendSeg>,
}

/// A buffer a socket receive lands in.
#[derive(Debug)]
pub enum RecvBuf {
    /// A heap buffer (connection receive buffer).
    Heap(Vec<u8>),
    /// A pool buffer (data of a write command).
    Pool(Buf),
}

/// What an operation hands back on completion.
#[derive(Debug, Default)]
pub enum Payload {
    /// Nothing (flush, fallocate, eventfd).
    #[default]
    None,
    /// The pool buffer of a disk read or write.
    Buf(Buf),
    /// The buffer of a socket receive.
    Recv(RecvBuf),
    /// The message of a socket send.
    Send(SendMsg),
    /// The socket accepted.
    Accepted(OwnedFd),
}

/// A reaped operation.
#[derive(Debug)]
pub struct Completion {
    /// The caller's tag given at submission.
    pub tag: u64,
    /// Bytes transferred (or 0), or the negated errno.
    pub result: i32,
    /// The buffer or socket the operation owned.
    pub payload: Payload,
}

impl Completion {
    /// The result as an `io::Result` of a byte count.
    pub fn io_result(&self) -> io::Result<usize> {
        if self.result < 0 {
            Err(io::Error::from_raw_os_error(-self.result))
        } else {
            Ok(self.result as usize)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Free,
    Disk,
    ZeroRange {
        store: StoreSlot,
        offset: u64,
        len: u64,
    },
    Recv,
    Send,
    Accept,
    Event,
    Cancel,
}

struct Slot {
    kind: Kind,
    tag: u64,
    payload: Payload,
    fd: Option<Rc<dyn AsRawFd>>,
    iov: Vec<libc::iovec>,
    msg: libc::msghdr,
    sent: usize,
    total: usize,
    event: u64,
}

impl Slot {
    fn new() -> Self {
        Self {
            kind: Kind::Free,
            tag: 0,
            payload: Payload::None,
            fd: None,
            iov: Vec::with_capacity(8),
            // SAFETY: msghdr is plain data; all-zero is its empty value.
            msg: unsafe { std::mem::zeroed() },
            sent: 0,
            total: 0,
            event: 0,
        }
    }
}

/// A per-core io_uring with its registered buffer pool and stores.
pub struct Ring {
    // Dropped first: closing the ring releases the kernel's references to the
    // pool pages and the fixed files before they are freed below.
    uring: IoUring,
    slots: Box<[Slot]>,
    free: Vec<u32>,
    ready: VecDeque<Completion>,
    stores: Vec<Option<Arc<dyn BackingStore>>>,
    pool: BufPool,
    in_flight: usize,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("in_flight", &self.in_flight)
            .field("pool", &self.pool)
            .finish()
    }
}

fn syscall(op: &'static str) -> impl FnOnce(io::Error) -> RingError {
    move |source| RingError::Syscall { op, source }
}

impl Ring {
    /// Creates the ring, maps and registers the buffer pool, and reserves the
    /// fixed-file table. Call it on the thread that will drive the ring.
    pub fn new(cfg: &RingConfig) -> Result<Self, RingError> {
        let uring = build_uring(cfg.entries)?;
        let pool = BufPool::new(&cfg.pool)?;
        check_memlock(pool.bytes() as u64)?;
        let iovecs = pool.iovecs();
        // SAFETY: the iovecs describe the pool mapping, which lives as long as
        // `pool`; `Ring` drops `uring` (and with it the registration) before
        // `pool` (field order), so the kernel never uses freed pages.
        unsafe { uring.submitter().register_buffers(&iovecs) }.map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOMEM) {
                RingError::MemlockTooSmall {
                    needed: pool.bytes() as u64,
                    limit: memlock_limit(),
                }
            } else {
                RingError::Syscall {
                    op: "register_buffers",
                    source: e,
                }
            }
        })?;
        uring
            .submitter()
            .register_files_sparse(cfg.max_stores)
            .map_err(syscall("register_files_sparse"))?;
        let max_ops = cfg.max_ops.clamp(1, u32::MAX as usize);
        let slots: Box<[Slot]> = (0..max_ops).map(|_| Slot::new()).collect();
        let free = (0..max_ops as u32).rev().collect();
        Ok(Self {
            uring,
            slots,
            free,
            ready: VecDeque::new(),
            stores: vec![None; cfg.max_stores as usize],
            pool,
            in_flight: 0,
        })
    }

    /// The ring's buffer pool.
    pub fn pool(&self) -> &BufPool {
        &self.pool
    }

    /// Operation slots free for new submissions.
    pub fn free_slots(&self) -> usize {
        self.free.len()
    }

    /// Operations submitted and not yet reaped.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Registers a store as a fixed file; I/O to it names the returned slot.
    pub fn register_store(&mut self, store: Arc<dyn BackingStore>) -> Result<StoreSlot, RingError> {
        let idx = self
            .stores
            .iter()
            .position(Option::is_none)
            .ok_or(RingError::Busy)?;
        let fd = store.fd().as_raw_fd();
        self.uring
            .submitter()
            .register_files_update(idx as u32, &[fd])
            .map_err(syscall("register_files_update"))?;
        self.stores[idx] = Some(store);
        Ok(idx as StoreSlot)
    }

    /// Removes a store. The caller must have no I/O in flight to it.
    pub fn unregister_store(&mut self, slot: StoreSlot) -> Result<(), RingError> {
        let entry = self
            .stores
            .get_mut(slot as usize)
            .ok_or(RingError::NoSuchStore(slot))?;
        if entry.take().is_none() {
            return Err(RingError::NoSuchStore(slot));
        }
        self.uring
            .submitter()
            .register_files_update(slot, &[-1])
            .map_err(syscall("register_files_update"))?;
        Ok(())
    }

    /// The store registered at `slot`.
    pub fn store(&self, slot: StoreSlot) -> Result<&Arc<dyn BackingStore>, RingError> {
        self.stores
            .get(slot as usize)
            .and_then(Option::as_ref)
            .ok_or(RingError::NoSuchStore(slot))
    }

    /// Reads `buf.len()` bytes at `offset` of a store into `buf`.
    pub fn read(
        &mut self,
        store: StoreSlot,
        mut buf: Buf,
        offset: u64,
        tag: u64,
    ) -> Result<(), (RingError, Buf)> {
        if let Err(e) = self.check_disk(store, &buf) {
            return Err((e, buf));
        }
        let entry = opcode::ReadFixed::new(
            types::Fixed(store),
            buf.as_mut_ptr(),
            buf.len() as u32,
            buf.index(),
        )
        .offset(offset)
        .build();
        self.push(entry, Kind::Disk, tag, Payload::Buf(buf), None)
            .map_err(|(e, p)| (e, into_buf(p)))
    }

    /// Writes `buf` at `offset` of a store; `fua` adds RWF_DSYNC.
    pub fn write(
        &mut self,
        store: StoreSlot,
        buf: Buf,
        offset: u64,
        fua: bool,
        tag: u64,
    ) -> Result<(), (RingError, Buf)> {
        self.write_with(store, buf, offset, WriteFlags { fua, atomic: false }, tag)
    }

    /// Writes `buf` at `offset` of a store with `flags`: FUA adds
    /// RWF_DSYNC, atomic adds RWF_ATOMIC (the kernel refuses, EINVAL, a
    /// write that is not a naturally aligned power of two within the
    /// store's atomic unit limits, or a store without atomic writes).
    pub fn write_with(
        &mut self,
        store: StoreSlot,
        mut buf: Buf,
        offset: u64,
        flags: WriteFlags,
        tag: u64,
    ) -> Result<(), (RingError, Buf)> {
        if let Err(e) = self.check_disk(store, &buf) {
            return Err((e, buf));
        }
        let rw_flags =
            if flags.fua { libc::RWF_DSYNC } else { 0 } | if flags.atomic { RWF_ATOMIC } else { 0 };
        let entry = if flags.atomic {
            // The kernel takes RWF_ATOMIC only for a single user buffer, not
            // the bio_vec of a registered buffer: a plain WRITE of the same
            // (still pool-owned) memory.
            opcode::Write::new(types::Fixed(store), buf.as_mut_ptr(), buf.len() as u32)
                .offset(offset)
                .rw_flags(rw_flags)
                .build()
        } else {
            opcode::WriteFixed::new(
                types::Fixed(store),
                buf.as_mut_ptr(),
                buf.len() as u32,
                buf.index(),
            )
            .offset(offset)
            .rw_flags(rw_flags)
            .build()
        };
        self.push(entry, Kind::Disk, tag, Payload::Buf(buf), None)
            .map_err(|(e, p)| (e, into_buf(p)))
    }

    fn check_disk(&self, store: StoreSlot, buf: &Buf) -> Result<(), RingError> {
        self.store(store)?;
        if !self.pool.owns(buf) {
            return Err(RingError::BadRange {
                start: 0,
                end: buf.len(),
                cap: 0,
            });
        }
        Ok(())
    }

    /// Makes a store's completed writes durable (fdatasync).
    pub fn flush(&mut self, store: StoreSlot, tag: u64) -> Result<(), RingError> {
        self.store(store)?;
        let entry = opcode::Fsync::new(types::Fixed(store))
            .flags(types::FsyncFlags::DATASYNC)
            .build();
        self.push(entry, Kind::Disk, tag, Payload::None, None)
            .map_err(|(e, _)| e)
    }

    /// Deallocates `len` bytes at `offset` (punch hole).
    pub fn unmap(
        &mut self,
        store: StoreSlot,
        offset: u64,
        len: u64,
        tag: u64,
    ) -> Result<(), RingError> {
        self.store(store)?;
        let entry = opcode::Fallocate::new(types::Fixed(store), len)
            .offset(offset)
            .mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
            .build();
        self.push(entry, Kind::Disk, tag, Payload::None, None)
            .map_err(|(e, _)| e)
    }

    /// Zeroes `len` bytes at `offset`, keeping them allocated.
    pub fn write_zeroes(
        &mut self,
        store: StoreSlot,
        offset: u64,
        len: u64,
        tag: u64,
    ) -> Result<(), RingError> {
        self.store(store)?;
        let entry = opcode::Fallocate::new(types::Fixed(store), len)
            .offset(offset)
            .mode(libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE)
            .build();
        let kind = Kind::ZeroRange { store, offset, len };
        self.push(entry, kind, tag, Payload::None, None)
            .map_err(|(e, _)| e)
    }

    /// Hints that `len` bytes at `offset` (0: to the end) will be read soon
    /// (POSIX_FADV_WILLNEED: readahead into the page cache; a no-op for
    /// O_DIRECT stores).
    pub fn prefetch(
        &mut self,
        store: StoreSlot,
        offset: u64,
        len: u64,
        tag: u64,
    ) -> Result<(), RingError> {
        self.store(store)?;
        let len = libc::off_t::try_from(len).unwrap_or(libc::off_t::MAX);
        let entry = opcode::Fadvise::new(types::Fixed(store), len, libc::POSIX_FADV_WILLNEED)
            .offset(offset)
            .build();
        self.push(entry, Kind::Disk, tag, Payload::None, None)
            .map_err(|(e, _)| e)
    }

    /// Receives into `buf[start..end]` from a socket.
    pub fn recv(
        &mut self,
        sock: &Rc<dyn AsRawFd>,
        mut buf: RecvBuf,
        start: usize,
        end: usize,
        tag: u64,
    ) -> Result<(), (RingError, RecvBuf)> {
        let (ptr, cap) = match &mut buf {
            RecvBuf::Heap(v) => (v.as_mut_ptr(), v.len()),
            RecvBuf::Pool(b) => (b.as_mut_ptr(), b.len()),
        };
        if start > end || end > cap {
            return Err((RingError::BadRange { start, end, cap }, buf));
        }
        // SAFETY: `start <= end <= cap`, so the pointer stays inside the buffer.
        let ptr = unsafe { ptr.add(start) };
        let entry =
            opcode::Recv::new(types::Fd(sock.as_raw_fd()), ptr, (end - start) as u32).build();
        self.push(
            entry,
            Kind::Recv,
            tag,
            Payload::Recv(buf),
            Some(Rc::clone(sock)),
        )
        .map_err(|(e, p)| match p {
            Payload::Recv(b) => (e, b),
            _ => unreachable!("recv payload comes back as recv"),
        })
    }

    /// Sends a gathered message on a socket; completes once all of it is sent
    /// (or on error).
    pub fn send(
        &mut self,
        sock: &Rc<dyn AsRawFd>,
        msg: SendMsg,
        tag: u64,
    ) -> Result<(), (RingError, SendMsg)> {
        for seg in &msg.segs {
            let (start, len, cap) = match *seg {
                SendSeg::Head { start, len } => (start as usize, len as usize, msg.head.len()),
                SendSeg::Body { buf, start, len } => (
                    start as usize,
                    len as usize,
                    msg.bodies.get(usize::from(buf)).map_or(0, |b| b.len()),
                ),
            };
            if start + len > cap {
                return Err((
                    RingError::BadRange {
                        start,
                        end: start + len,
                        cap,
                    },
                    msg,
                ));
            }
        }
        let Some(idx) = self.free.pop() else {
            return Err((RingError::Busy, msg));
        };
        let slot = &mut self.slots[idx as usize];
        slot.payload = Payload::Send(msg);
        slot.fd = Some(Rc::clone(sock));
        slot.sent = 0;
        slot.iov.clear();
        let Payload::Send(msg) = &mut slot.payload else {
            unreachable!("payload was set just above")
        };
        let head = msg.head.as_mut_ptr();
        let mut total = 0;
        for seg in &msg.segs {
            let (base, start, len) = match *seg {
                SendSeg::Head { start, len } => (head, start, len),
                SendSeg::Body { buf, start, len } => {
                    (msg.bodies[usize::from(buf)].as_mut_ptr(), start, len)
                }
            };
            if len == 0 {
                continue;
            }
            slot.iov.push(libc::iovec {
                // SAFETY: bounds were checked against the buffers above.
                iov_base: unsafe { base.add(start as usize) }.cast(),
                iov_len: len as usize,
            });
            total += len as usize;
        }
        slot.total = total;
        slot.kind = Kind::Send;
        self.submit_send(idx, tag)
    }

    fn submit_send(&mut self, idx: u32, tag: u64) -> Result<(), (RingError, SendMsg)> {
        let slot = &mut self.slots[idx as usize];
        slot.tag = tag;
        slot.msg.msg_iov = slot.iov.as_mut_ptr();
        slot.msg.msg_iovlen = slot.iov.len();
        let fd = slot.fd.as_ref().map_or(-1, |f| f.as_raw_fd());
        let entry = opcode::SendMsg::new(types::Fd(fd), &slot.msg)
            .flags((libc::MSG_NOSIGNAL | libc::MSG_WAITALL) as u32)
            .build()
            .user_data(u64::from(idx));
        self.push_entry(idx, entry).map_err(|e| {
            let slot = &mut self.slots[idx as usize];
            let p = std::mem::take(&mut slot.payload);
            (e, into_send(p))
        })
    }

    /// Accepts one connection on a listening socket.
    pub fn accept(&mut self, listener: &Rc<dyn AsRawFd>, tag: u64) -> Result<(), RingError> {
        let entry = opcode::Accept::new(
            types::Fd(listener.as_raw_fd()),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .flags(libc::SOCK_CLOEXEC)
        .build();
        self.push(
            entry,
            Kind::Accept,
            tag,
            Payload::None,
            Some(Rc::clone(listener)),
        )
        .map_err(|(e, _)| e)
    }

    /// Waits for an eventfd to be signalled (reads its counter).
    pub fn wait_event(&mut self, efd: &Rc<dyn AsRawFd>, tag: u64) -> Result<(), RingError> {
        let Some(idx) = self.free.pop() else {
            return Err(RingError::Busy);
        };
        let slot = &mut self.slots[idx as usize];
        slot.kind = Kind::Event;
        slot.tag = tag;
        slot.fd = Some(Rc::clone(efd));
        let ptr = std::ptr::addr_of_mut!(slot.event).cast::<u8>();
        let entry = opcode::Read::new(types::Fd(efd.as_raw_fd()), ptr, 8)
            .build()
            .user_data(u64::from(idx));
        self.push_entry(idx, entry)
    }

    /// Asks the kernel to cancel every operation on a socket (their
    /// completions still arrive, with `-ECANCELED`).
    pub fn cancel_fd(&mut self, sock: &Rc<dyn AsRawFd>) -> Result<(), RingError> {
        let entry =
            opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(sock.as_raw_fd())).all())
                .build();
        self.push(entry, Kind::Cancel, u64::MAX, Payload::None, None)
            .map_err(|(e, _)| e)
    }

    fn push(
        &mut self,
        entry: squeue::Entry,
        kind: Kind,
        tag: u64,
        payload: Payload,
        fd: Option<Rc<dyn AsRawFd>>,
    ) -> Result<(), (RingError, Payload)> {
        let Some(idx) = self.free.pop() else {
            return Err((RingError::Busy, payload));
        };
        let slot = &mut self.slots[idx as usize];
        slot.kind = kind;
        slot.tag = tag;
        slot.payload = payload;
        slot.fd = fd;
        let entry = entry.user_data(u64::from(idx));
        self.push_entry(idx, entry).map_err(|e| {
            let slot = &mut self.slots[idx as usize];
            (e, std::mem::take(&mut slot.payload))
        })
    }

    fn push_entry(&mut self, idx: u32, entry: squeue::Entry) -> Result<(), RingError> {
        let mut pushed = false;
        for _ in 0..2 {
            // SAFETY: every pointer in `entry` targets memory owned by slot
            // `idx` (its payload buffer, iovecs, msghdr or event word) or by a
            // registered store/buffer; the slot keeps them, unmoved, until the
            // CQE with this user_data is reaped in `reap`.
            if unsafe { self.uring.submission().push(&entry) }.is_ok() {
                pushed = true;
                break;
            }
            // SQ full: hand what is queued to the kernel and retry once.
            if let Err(e) = self.uring.submit() {
                if e.raw_os_error() != Some(libc::EBUSY) {
                    break;
                }
            }
        }
        if !pushed {
            let slot = &mut self.slots[idx as usize];
            slot.kind = Kind::Free;
            slot.fd = None;
            self.free.push(idx);
            return Err(RingError::Busy);
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Submits queued operations and waits until at least `want` completions
    /// are ready or `timeout` passes. Returns how many are ready.
    pub fn submit_and_wait(
        &mut self,
        want: usize,
        timeout: Option<Duration>,
    ) -> Result<usize, RingError> {
        let want = if self.ready.is_empty() { want } else { 0 };
        let r = match timeout {
            Some(t) if want > 0 => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.uring.submitter().submit_with_args(want, &args)
            }
            _ => self.uring.submitter().submit_and_wait(want),
        };
        match r {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => {
                return Err(RingError::Syscall {
                    op: "enter",
                    source: e,
                })
            }
        }
        self.reap();
        Ok(self.ready.len())
    }

    /// Takes the next reaped completion.
    pub fn next_completion(&mut self) -> Option<Completion> {
        if self.ready.is_empty() {
            self.reap();
        }
        self.ready.pop_front()
    }

    fn reap(&mut self) {
        let mut resubmit: Vec<(u32, u64)> = Vec::new();
        let mut cq = self.uring.completion();
        cq.sync();
        for cqe in &mut cq {
            let idx = cqe.user_data() as u32;
            let Some(slot) = self.slots.get_mut(idx as usize) else {
                continue;
            };
            let mut result = cqe.result();
            match slot.kind {
                Kind::Free => continue,
                Kind::Send if result > 0 => {
                    slot.sent += result as usize;
                    if slot.sent < slot.total {
                        advance_iov(&mut slot.iov, result as usize);
                        resubmit.push((idx, slot.tag));
                        continue;
                    }
                    result = slot.total as i32;
                }
                Kind::ZeroRange { store, offset, len } if result == -libc::EOPNOTSUPP => {
                    // tmpfs and some block devices lack ZERO_RANGE: rare, so do it inline.
                    if let Some(Some(s)) = self.stores.get(store as usize) {
                        result = match zero_range(s.fd(), offset, len) {
                            Ok(()) => 0,
                            Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
                        };
                    }
                }
                Kind::Cancel => {
                    slot.kind = Kind::Free;
                    slot.fd = None;
                    self.free.push(idx);
                    self.in_flight -= 1;
                    continue;
                }
                _ => {}
            }
            let mut payload = std::mem::take(&mut slot.payload);
            if slot.kind == Kind::Accept && result >= 0 {
                // SAFETY: the kernel returned a new descriptor that nothing else owns.
                payload = Payload::Accepted(unsafe { OwnedFd::from_raw_fd(result as RawFd) });
            }
            slot.kind = Kind::Free;
            slot.fd = None;
            self.free.push(idx);
            self.in_flight -= 1;
            self.ready.push_back(Completion {
                tag: slot.tag,
                result,
                payload,
            });
        }
        drop(cq);
        for (idx, tag) in resubmit {
            self.in_flight -= 1;
            if let Err((e, msg)) = self.submit_send(idx, tag) {
                let slot = &mut self.slots[idx as usize];
                slot.kind = Kind::Free;
                slot.fd = None;
                self.free.push(idx);
                tracing::warn!(error = %e, "resubmitting a partial send failed");
                self.ready.push_back(Completion {
                    tag,
                    result: -libc::EIO,
                    payload: Payload::Send(msg),
                });
            }
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.in_flight == 0 {
            return;
        }
        // Buffers owned by in-flight operations must not be freed under the
        // kernel: cancel everything and wait for the completions.
        let entry = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(u64::MAX);
        // SAFETY: a cancel request carries no pointers.
        let _ = unsafe { self.uring.submission().push(&entry) };
        for _ in 0..100 {
            if self.in_flight == 0 {
                break;
            }
            let _ = self.submit_and_wait(1, Some(Duration::from_millis(50)));
            self.ready.clear();
        }
        if self.in_flight != 0 {
            // Leak the slots rather than free memory the kernel may still write.
            tracing::error!(
                in_flight = self.in_flight,
                "ring dropped with operations still in flight"
            );
            std::mem::forget(std::mem::take(&mut self.slots));
        }
    }
}

fn into_buf(p: Payload) -> Buf {
    match p {
        Payload::Buf(b) => b,
        _ => unreachable!("disk payload comes back as a buffer"),
    }
}

fn into_send(p: Payload) -> SendMsg {
    match p {
        Payload::Send(m) => m,
        _ => unreachable!("send payload comes back as a message"),
    }
}

fn advance_iov(iov: &mut Vec<libc::iovec>, mut n: usize) {
    let mut drop_count = 0;
    for v in iov.iter_mut() {
        if n >= v.iov_len {
            n -= v.iov_len;
            drop_count += 1;
        } else {
            // SAFETY: `n < iov_len`, so the pointer stays inside the segment.
            v.iov_base = unsafe { v.iov_base.cast::<u8>().add(n) }.cast();
            v.iov_len -= n;
            break;
        }
    }
    iov.drain(..drop_count);
}

/// Why io_uring_setup failed, in words an operator can act on.
fn unavailable(e: io::Error) -> RingError {
    let reason = match e.raw_os_error() {
        Some(libc::EPERM) => "permission denied: disabled by sysctl or seccomp".to_owned(),
        Some(libc::ENOSYS) => "the kernel has no io_uring".to_owned(),
        _ => e.to_string(),
    };
    RingError::Unavailable { reason, source: e }
}

fn build_uring(entries: u32) -> Result<IoUring, RingError> {
    let mut b = IoUring::builder();
    b.setup_cqsize(entries * 2)
        .setup_single_issuer()
        .setup_defer_taskrun();
    match b.build(entries) {
        Ok(u) => Ok(u),
        // Older kernels (< 6.1) lack DEFER_TASKRUN: plain ring.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::builder()
            .setup_cqsize(entries * 2)
            .build(entries)
            .map_err(unavailable),
        Err(e) => Err(unavailable(e)),
    }
}

fn memlock_limit() -> u64 {
    // SAFETY: `r` is a valid out-pointer for getrlimit.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return u64::MAX;
    }
    r.rlim_cur
}

fn check_memlock(needed: u64) -> Result<(), RingError> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    memlock_verdict(euid, memlock_limit(), needed)
}

/// Whether a pool of `needed` bytes may be registered: root (CAP_IPC_LOCK)
/// is not charged; others are charged against RLIMIT_MEMLOCK since Linux 5.12.
fn memlock_verdict(euid: u32, limit: u64, needed: u64) -> Result<(), RingError> {
    if euid == 0 || limit == libc::RLIM_INFINITY || needed <= limit {
        return Ok(());
    }
    Err(RingError::MemlockTooSmall { needed, limit })
}

#[cfg(test)]
mod tests;
