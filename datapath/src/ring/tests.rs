//! Socket and bookkeeping tests of the ring (disk I/O is covered by the
//! store conformance suite).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::rc::Rc;

use super::*;

fn ring() -> Ring {
    Ring::new(&RingConfig {
        entries: 8,
        max_ops: 8,
        max_stores: 2,
        pool: PoolConfig {
            classes: vec![(4096, 4)],
        },
    })
    .unwrap()
}

fn wait(ring: &mut Ring) -> Completion {
    loop {
        if let Some(c) = ring.next_completion() {
            return c;
        }
        ring.submit_and_wait(1, None).unwrap();
    }
}

#[test]
fn accept_recv_send_over_tcp() {
    let mut ring = ring();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let l: Rc<dyn AsRawFd> = Rc::new(listener);
    ring.accept(&l, 1).unwrap();
    let mut client = TcpStream::connect(addr).unwrap();
    let c = wait(&mut ring);
    assert_eq!(c.tag, 1);
    let Payload::Accepted(fd) = c.payload else {
        panic!("accept yields a socket")
    };
    let sock: Rc<dyn AsRawFd> = Rc::new(TcpStream::from(fd));

    client.write_all(b"hello ring").unwrap();
    ring.recv(&sock, RecvBuf::Heap(vec![0; 64]), 4, 64, 2)
        .map_err(|(e, _)| e)
        .unwrap();
    let c = wait(&mut ring);
    assert_eq!(c.result, 10);
    let Payload::Recv(RecvBuf::Heap(v)) = c.payload else {
        panic!("recv returns its buffer")
    };
    assert_eq!(&v[4..14], b"hello ring");

    // A gathered send from head and body, larger than the socket buffer so
    // the kernel sends it in pieces.
    let mut body = ring.pool().get(4096).unwrap();
    body.fill(b'b');
    let msg = SendMsg {
        head: b"HEAD-tail".to_vec(),
        bodies: vec![body],
        segs: vec![
            SendSeg::Head { start: 0, len: 5 },
            SendSeg::Body {
                buf: 0,
                start: 0,
                len: 4096,
            },
            SendSeg::Head { start: 5, len: 4 },
        ],
    };
    ring.send(&sock, msg, 3).map_err(|(e, _)| e).unwrap();
    let c = wait(&mut ring);
    assert_eq!(c.result, 5 + 4096 + 4);
    let Payload::Send(m) = c.payload else {
        panic!("send returns its message")
    };
    assert_eq!(m.head, b"HEAD-tail");
    let mut got = vec![0u8; 5 + 4096 + 4];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got[..5], b"HEAD-");
    assert!(got[5..4101].iter().all(|b| *b == b'b'));
    assert_eq!(&got[4101..], b"tail");
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn bad_ranges_hand_buffers_back() {
    let mut ring = ring();
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let sock: Rc<dyn AsRawFd> = Rc::new(a);
    let Err((RingError::BadRange { .. }, RecvBuf::Heap(v))) =
        ring.recv(&sock, RecvBuf::Heap(vec![0; 8]), 0, 9, 1)
    else {
        panic!("out-of-range recv is refused")
    };
    assert_eq!(v.len(), 8);
    let msg = SendMsg {
        head: vec![1, 2],
        bodies: vec![],
        segs: vec![SendSeg::Body {
            buf: 0,
            start: 0,
            len: 1,
        }],
    };
    assert!(ring.send(&sock, msg, 1).is_err());
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn slots_run_out_and_come_back() {
    let mut ring = ring();
    let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    let sock: Rc<dyn AsRawFd> = Rc::new(a);
    for i in 0..8 {
        ring.recv(&sock, RecvBuf::Heap(vec![0; 1]), 0, 1, i)
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let Err((RingError::Busy, _)) = ring.recv(&sock, RecvBuf::Heap(vec![0; 1]), 0, 1, 9) else {
        panic!("ninth op has no slot")
    };
    ring.submit_and_wait(0, None).unwrap();
    b.write_all(&[0u8; 8]).unwrap();
    for _ in 0..8 {
        assert_eq!(wait(&mut ring).result, 1);
    }
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn eventfd_wakes_the_ring() {
    let mut ring = ring();
    // SAFETY-free: std gives us no eventfd, a pipe's read end works the same.
    let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    let ev: Rc<dyn AsRawFd> = Rc::new(a);
    ring.wait_event(&ev, 42).unwrap();
    ring.submit_and_wait(0, None).unwrap();
    b.write_all(&7u64.to_ne_bytes()).unwrap();
    let c = wait(&mut ring);
    assert_eq!((c.tag, c.result), (42, 8));
}

#[test]
fn dropping_a_ring_with_pending_ops_cancels_them() {
    let mut ring = ring();
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let sock: Rc<dyn AsRawFd> = Rc::new(a);
    ring.recv(&sock, RecvBuf::Heap(vec![0; 16]), 0, 16, 1)
        .map_err(|(e, _)| e)
        .unwrap();
    ring.submit_and_wait(0, None).unwrap();
    assert_eq!(ring.in_flight(), 1);
    drop(ring);
}

#[test]
fn memlock_limit_is_checked_for_unprivileged_users() {
    let pool = 14 << 20;
    assert!(
        memlock_verdict(0, 8 << 20, pool).is_ok(),
        "root is not charged"
    );
    assert!(memlock_verdict(1000, libc::RLIM_INFINITY, pool).is_ok());
    assert!(memlock_verdict(1000, 64 << 20, pool).is_ok());
    let err = memlock_verdict(1000, 8 << 20, pool).unwrap_err();
    assert!(
        matches!(err, RingError::MemlockTooSmall { needed, limit } if needed == pool && limit == 8 << 20)
    );
    let msg = err.to_string();
    assert!(
        msg.contains("RLIMIT_MEMLOCK") && msg.contains("ulimit -l"),
        "{msg}"
    );
}

#[test]
fn unavailable_io_uring_says_what_to_check() {
    for (errno, why) in [
        (libc::EPERM, "disabled by sysctl or seccomp"),
        (libc::ENOSYS, "the kernel has no io_uring"),
    ] {
        let msg = unavailable(std::io::Error::from_raw_os_error(errno)).to_string();
        assert!(msg.contains(why), "{msg}");
        assert!(
            msg.contains("kernel.io_uring_disabled") && msg.contains("seccomp"),
            "{msg}"
        );
    }
}
