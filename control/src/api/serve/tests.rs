//! The API server over real sockets: idle and dribbling connections are
//! closed after the header timeout, a slow body after the request
//! timeout, a connection past the cap at once; TLS serves a client that
//! trusts the member's CA and nobody in clear.

// Test helpers: a panic is the test failing.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::api::testing::MemoryService;
use crate::api::{router, Local};

const TOKEN: &str = "serve-test-api-token";

/// Serves the API on a loopback port with `opts` on a runtime of its own;
/// its address. The server stops with the test process.
fn start(opts: ServeOptions) -> SocketAddr {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = std_listener.local_addr().unwrap();
    std_listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = TcpListener::from_std(std_listener).unwrap();
            let r = router(
                Arc::new(MemoryService::default()),
                TOKEN.into(),
                Local::default(),
            );
            serve_with(listener, r, opts, std::future::pending())
                .await
                .unwrap();
        });
    });
    addr
}

/// Whether the server closed `s` within `limit` (EOF or reset), reading
/// and discarding what it sent.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

fn health(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn idle_and_dribbling_connections_are_closed_after_the_header_timeout() {
    let addr = start(ServeOptions {
        header_timeout: Duration::from_millis(500),
        ..ServeOptions::default()
    });
    let mut idle = TcpStream::connect(addr).unwrap();
    let mut dribble = TcpStream::connect(addr).unwrap();
    // A keep-alive connection after its answer is idle too.
    let mut kept = TcpStream::connect(addr).unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let t0 = Instant::now();
    // Dribbling a header byte by byte does not keep it open.
    let head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    for b in head
        .iter()
        .chain(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter())
    {
        if dribble.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(40));
        if t0.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)),
        "idle connection"
    );
    assert!(
        closed_within(&mut dribble, Duration::from_secs(5)),
        "dribbling connection"
    );
    assert!(
        closed_within(&mut kept, Duration::from_secs(5)),
        "idle keep-alive connection"
    );
    assert!(health(addr).contains("200 OK"));
}

#[test]
fn a_slow_body_is_cut_at_the_request_timeout() {
    let addr = start(ServeOptions {
        request_timeout: Duration::from_millis(500),
        ..ServeOptions::default()
    });
    let mut s = TcpStream::connect(addr).unwrap();
    let body = br#"{"name": "d1", "size": 1048576}"#;
    write!(
        s,
        "POST /v1/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body[..3]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = [0u8; 4096];
    let n = s.read(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
}

/// A connection in the middle of a request (its body still coming).
fn busy(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v1/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    )
    .unwrap();
    s
}

/// Waits (up to 10 s) until `what` holds.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(10), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn connections_past_the_cap_are_closed_at_once() {
    let opts = ServeOptions {
        max_connections: 4,
        header_timeout: Duration::from_secs(30),
        request_timeout: Duration::from_secs(30),
        ..ServeOptions::default()
    };
    let stats = Arc::clone(&opts.stats);
    let addr = start(opts);
    // Four connections in the middle of a request: none may be closed for
    // a newcomer.
    let mut held: Vec<TcpStream> = (0..4).map(|_| busy(addr)).collect();
    wait_until("four open", || stats.open.load(Ordering::Relaxed) == 4);
    let mut fifth = TcpStream::connect(addr).unwrap();
    assert!(
        closed_within(&mut fifth, Duration::from_secs(5)),
        "the 5th at the cap"
    );
    assert_eq!(stats.refused.load(Ordering::Relaxed), 1);
    for s in &mut held {
        assert!(
            !closed_within(s, Duration::from_millis(50)),
            "busy ones are kept"
        );
    }
    drop(held);
    wait_until("all closed", || stats.open.load(Ordering::Relaxed) == 0);
    assert!(health(addr).contains("200 OK"));
    assert!(stats
        .render(4)
        .contains("trellis_api_connections_refused_total 1"));
}

#[test]
fn at_the_cap_an_idle_connection_makes_room() {
    let opts = ServeOptions {
        max_connections: 4,
        header_timeout: Duration::from_secs(30),
        ..ServeOptions::default()
    };
    let stats = Arc::clone(&opts.stats);
    let addr = start(opts);
    let mut idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    wait_until("four open", || stats.open.load(Ordering::Relaxed) == 4);
    // Idle for more than a second (a lower bound, whatever the load).
    std::thread::sleep(STALE + Duration::from_millis(200));
    assert!(
        health(addr).contains("200 OK"),
        "an admin gets in at the cap"
    );
    assert_eq!(stats.evicted.load(Ordering::Relaxed), 1);
    assert_eq!(stats.refused.load(Ordering::Relaxed), 0);
    let mut closed = 0;
    for s in &mut idle {
        if closed_within(s, Duration::from_millis(500)) {
            closed += 1;
        }
    }
    assert_eq!(closed, 1, "one idle connection was closed for it");
}

/// A TCP connection from 127.0.0.`src`.
fn connect_from(src: u8, to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: SocketAddr = ([127, 0, 0, src], 0).into();
    s.bind(&from.into()).unwrap();
    s.connect(&to.into()).unwrap();
    s.into()
}

#[test]
fn one_address_cannot_fill_the_cap() {
    let opts = ServeOptions {
        max_connections: 8,
        max_per_address: 3,
        header_timeout: Duration::from_secs(5),
        ..ServeOptions::default()
    };
    let stats = Arc::clone(&opts.stats);
    let addr = start(opts);
    let mut from2: Vec<TcpStream> = (0..4).map(|_| connect_from(2, addr)).collect();
    let closed: Vec<bool> = from2
        .iter_mut()
        .map(|s| closed_within(s, Duration::from_millis(300)))
        .collect();
    assert_eq!(closed.iter().filter(|c| **c).count(), 1, "{closed:?}");
    assert_eq!(stats.refused.load(Ordering::Relaxed), 1);
    // Another address still gets the API.
    assert!(health(addr).contains("200 OK"));
}

/// A CA and a certificate for 127.0.0.1 and localhost signed by it, as PEM
/// files in `dir`: (ca.pem, cert.pem, key.pem).
fn certificates(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "trellis test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[test]
fn tls_serves_clients_that_trust_the_ca_and_nobody_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let addr = start(ServeOptions {
        tls: Some(tls_config(&cert, &key).unwrap()),
        ..ServeOptions::default()
    });
    // A rustls client trusting the CA gets the API.
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_file(&ca).unwrap())
        .unwrap();
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(ring_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    write!(
        tls,
        "GET /v1/status HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // Plain HTTP to the TLS port gets no API answer.
    let plain = health(addr);
    assert!(!plain.contains("200 OK"), "{plain}");
    // A bad key file is a clear error.
    std::fs::write(dir.path().join("bad.pem"), "not a key").unwrap();
    let e = tls_config(&cert, &dir.path().join("bad.pem")).unwrap_err();
    assert!(e.to_string().contains("bad.pem"), "{e}");
}

#[test]
fn eviction_gives_a_new_address_a_share_and_spares_busy_connections() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let t0 = Instant::now();
    let ip = |n: u8| std::net::IpAddr::from([127, 0, 0, n]);
    let counts: Arc<AddressCounts> = Arc::default();
    let mut idle = Idle::default();
    let mut tasks = Vec::new();
    // Address 2 holds three idle connections, address 3 one busy one.
    for (n, busy) in [(2, false), (2, false), (2, false), (3, true)] {
        let a = Arc::new(Activity::new(t0));
        if busy {
            a.requests.fetch_add(1, Ordering::AcqRel);
        }
        let task = tokio::spawn(std::future::pending::<()>());
        idle.insert(ip(n), a, task.abort_handle());
        tasks.push(task);
        *counts.lock().unwrap().entry(ip(n)).or_insert(0) += 1;
    }
    let soon = t0 + Duration::from_millis(10);
    // Address 2 itself gets no fresh connection closed for it (3 < 3 + 2,
    // none idle for a second) ...
    assert!(!idle.evict(soon, ip(2), &counts));
    // ... but a new address does, at once: one of address 2's.
    assert!(idle.evict(soon, ip(1), &counts));
    assert_eq!(
        tasks.iter().filter(|t| t.is_finished()).count(),
        0,
        "aborts land when polled"
    );
    rt.block_on(tokio::task::yield_now());
    let aborted: Vec<usize> = (0..4).filter(|&i| tasks[i].is_finished()).collect();
    assert_eq!(aborted.len(), 1);
    assert!(aborted[0] < 3, "one of address 2's: {aborted:?}");
    // After a second idle, any address gets the longest-idle one; the
    // busy connection is never closed.
    let later = t0 + STALE + Duration::from_millis(10);
    assert!(idle.evict(later, ip(2), &counts));
    assert!(idle.evict(later, ip(2), &counts));
    assert!(
        !idle.evict(later, ip(2), &counts),
        "only the busy one is left"
    );
    rt.block_on(tokio::task::yield_now());
    assert!(!tasks[3].is_finished());
}
