//! Thread-per-core: one pinned thread per core, each driving its own ring.

use std::io;
use std::thread::JoinHandle;

/// Number of CPUs this process may run on.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Spawns one named thread per core index in `0..count`, pinned to that CPU
/// where the affinity mask allows, running `body(core)`.
pub fn spawn_cores<F>(name: &str, count: usize, body: F) -> io::Result<Vec<JoinHandle<()>>>
where
    F: Fn(usize) + Send + Sync + Clone + 'static,
{
    let cpus = allowed_cpus();
    (0..count)
        .map(|core| {
            let body = body.clone();
            let cpu = cpus.get(core % cpus.len().max(1)).copied();
            std::thread::Builder::new()
                .name(format!("{name}-{core}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        pin_to(cpu);
                    }
                    body(core);
                })
        })
        .collect()
}

fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid out-pointer of the size we pass.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE.
        .filter(|cpu| unsafe { libc::CPU_ISSET(*cpu, &set) })
        .collect()
}

fn pin_to(cpu: usize) {
    // SAFETY: as in `allowed_cpus`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` comes from the allowed set, below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is valid for the call; failure only leaves us unpinned.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        tracing::debug!(cpu, "could not pin core thread");
    }
}

/// An eventfd another thread signals to wake a core's ring.
#[derive(Debug)]
pub struct Waker {
    fd: std::os::fd::OwnedFd,
}

impl Waker {
    /// Creates the eventfd (blocking: the ring polls it).
    pub fn new() -> io::Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: eventfd has no memory preconditions; the result is checked.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        Ok(Self { fd })
    }

    /// Signals the eventfd (the ring's pending read completes).
    pub fn wake(&self) {
        use std::os::fd::AsRawFd;
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64; EAGAIN (counter full) means
        // a wake-up is already pending, which is all we want.
        unsafe {
            libc::write(self.fd.as_raw_fd(), std::ptr::addr_of!(one).cast(), 8);
        }
    }
}

impl std::os::fd::AsRawFd for Waker {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// The process's open-file limit (RLIMIT_NOFILE): `(soft, hard)`.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid out-pointer for getrlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((r.rlim_cur, r.rlim_max))
}

/// Raises the soft open-file limit to the hard one; the limits before,
/// `(soft, hard)`, and the soft limit now.
pub fn raise_nofile_limit() -> io::Result<((u64, u64), u64)> {
    let (soft, hard) = nofile_limit()?;
    if soft >= hard {
        return Ok(((soft, hard), soft));
    }
    let r = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: `r` is a valid rlimit for setrlimit to read.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(((soft, hard), hard))
}
