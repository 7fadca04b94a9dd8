//! The API's HTTP server: its own accept loop over hyper, so that a flood
//! of connections can neither take the member's descriptors nor its memory:
//!
//! ```text
//!  accept ─┬ error: out of descriptors ─> pause (50 ms doubling to 1 s), a log line per 5 s
//!          ├ at max_connections: an idle connection of the address holding most
//!          │     (or the one idle longest, 1 s or more) is closed for it
//!          ├ still at max_connections, or its address at max_per_address
//!          │     ─> closed at once (counted, a log line per 5 s)
//!          └ connection ─> [TLS handshake, within the header timeout]
//!                        ─> HTTP/1.1: headers within header_timeout (idle keep-alive too)
//!                        ─> request (body and handler) within request_timeout, else 503 request_timeout
//! ```
//!
//! Plain HTTP is for loopback (or an explicit opt-in, checked where the
//! member's config is read); elsewhere the API speaks TLS (rustls) with
//! the member's certificate, so the bearer token never crosses the network
//! in clear.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use super::ServeError;

/// How the API server treats connections.
#[derive(Clone)]
pub struct ServeOptions {
    /// Connections held at once; past it a new one is closed at once.
    pub max_connections: usize,
    /// Connections one source address may hold at once (so one client
    /// cannot fill `max_connections` for everyone).
    pub max_per_address: usize,
    /// How long a client has to send a request's headers, counted from
    /// the connection's start or its previous answer (so an idle
    /// keep-alive connection is closed after it too), and to finish a TLS
    /// handshake.
    pub header_timeout: Duration,
    /// How long one request may take in all, its body and its handling
    /// included (503 `request_timeout` after it).
    pub request_timeout: Duration,
    /// TLS, with the member's certificate; `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The connection counters, for `/metrics`.
    pub stats: Arc<ServeStats>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_per_address: 32,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            tls: None,
            stats: Arc::default(),
        }
    }
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("max_connections", &self.max_connections)
            .field("max_per_address", &self.max_per_address)
            .field("header_timeout", &self.header_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Counters of the API's connections.
#[derive(Debug, Default)]
pub struct ServeStats {
    /// Connections open now.
    pub open: AtomicUsize,
    /// Connections closed at once at the cap.
    pub refused: AtomicU64,
    /// Failed accepts.
    pub accept_errors: AtomicU64,
    /// Failed TLS handshakes.
    pub tls_failures: AtomicU64,
    /// Idle connections closed to make room at the cap.
    pub evicted: AtomicU64,
}

impl ServeStats {
    /// Prometheus text of the counters.
    pub fn render(&self, max_connections: usize) -> String {
        format!(
            "# HELP trellis_api_connections Management API connections open.\n\
             # TYPE trellis_api_connections gauge\ntrellis_api_connections {}\n\
             # HELP trellis_api_max_connections The cap of management API connections.\n\
             # TYPE trellis_api_max_connections gauge\ntrellis_api_max_connections {max_connections}\n\
             # HELP trellis_api_connections_refused_total API connections closed at once at the cap.\n\
             # TYPE trellis_api_connections_refused_total counter\ntrellis_api_connections_refused_total {}\n\
             # HELP trellis_api_accept_errors_total Failed accepts of API connections.\n\
             # TYPE trellis_api_accept_errors_total counter\ntrellis_api_accept_errors_total {}\n\
             # HELP trellis_api_tls_failures_total Failed or timed-out TLS handshakes.\n\
             # TYPE trellis_api_tls_failures_total counter\ntrellis_api_tls_failures_total {}\n\
             # HELP trellis_api_connections_evicted_total Idle API connections closed to make room at the cap.\n\
             # TYPE trellis_api_connections_evicted_total counter\ntrellis_api_connections_evicted_total {}\n",
            self.open.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.accept_errors.load(Ordering::Relaxed),
            self.tls_failures.load(Ordering::Relaxed),
            self.evicted.load(Ordering::Relaxed),
        )
    }
}

/// A log line at most once per interval, with how many events it stands for.
struct Damped {
    every: Duration,
    next: Option<Instant>,
    pending: u64,
}

impl Damped {
    fn new(every: Duration) -> Self {
        Self {
            every,
            next: None,
            pending: 0,
        }
    }

    fn hit(&mut self) -> Option<u64> {
        self.pending += 1;
        let now = Instant::now();
        if self.next.is_some_and(|t| now < t) {
            return None;
        }
        self.next = Some(now + self.every);
        Some(std::mem::take(&mut self.pending))
    }
}

/// The key a client address is counted under: IPv4 as it is (IPv4-mapped
/// IPv6 too), IPv6 by its /64 prefix (one host usually holds a whole /64).
fn source_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// Connections held per source address.
type AddressCounts = std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>;

/// One connection counted against its address, until dropped.
struct PerAddress {
    counts: Arc<AddressCounts>,
    ip: std::net::IpAddr,
}

impl PerAddress {
    /// Counts a connection from `ip`, unless it holds `max` already.
    fn enter(counts: &Arc<AddressCounts>, ip: std::net::IpAddr, max: usize) -> Option<Self> {
        let mut map = counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Self {
            counts: Arc::clone(counts),
            ip,
        })
    }
}

impl Drop for PerAddress {
    fn drop(&mut self) {
        let mut map = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// A connection idle this long may be closed to make room at the cap.
const STALE: Duration = Duration::from_secs(1);

/// What a connection is doing: in a request, or idle since when.
#[derive(Debug)]
struct Activity {
    base: Instant,
    requests: AtomicUsize,
    /// Milliseconds after `base` its last request ended (or it began).
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new(now: Instant) -> Self {
        Self {
            base: now,
            requests: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    /// How long it has been idle, if it is.
    fn idle_for(&self, now: Instant) -> Option<Duration> {
        if self.requests.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = self.base + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(now.saturating_duration_since(since))
    }
}

/// A request in progress on a connection (idle again when dropped).
struct Busy(Arc<Activity>);

impl Busy {
    fn start(a: Arc<Activity>) -> Self {
        a.requests.fetch_add(1, Ordering::AcqRel);
        Self(a)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.idle_since_ms.store(ms, Ordering::Release);
        self.0.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The open connections, to pick one to close at the cap.
#[derive(Default)]
struct Idle {
    conns: Vec<(std::net::IpAddr, Arc<Activity>, tokio::task::AbortHandle)>,
}

impl Idle {
    fn insert(&mut self, ip: std::net::IpAddr, a: Arc<Activity>, abort: tokio::task::AbortHandle) {
        self.conns.retain(|(_, _, h)| !h.is_finished());
        self.conns.push((ip, a, abort));
    }

    /// Closes an idle connection to make room for one from `newcomer`;
    /// whether it did. Fair shares first: an idle connection of the
    /// address holding the most, when that is at least two more than the
    /// newcomer's (a flood from many addresses cannot keep a new address
    /// out); else the connection idle longest, if for [`STALE`] or more.
    /// Connections in a request are never closed.
    fn evict(&mut self, now: Instant, newcomer: std::net::IpAddr, counts: &AddressCounts) -> bool {
        self.conns.retain(|(_, _, h)| !h.is_finished());
        let counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
        let held = |ip: &std::net::IpAddr| counts.get(ip).copied().unwrap_or(0);
        let mine = held(&newcomer);
        let idle: Vec<(usize, usize, Duration)> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, (ip, a, _))| a.idle_for(now).map(|d| (i, held(ip), d)))
            .collect();
        let fair = idle
            .iter()
            .filter(|(_, n, _)| *n >= mine + 2)
            .max_by_key(|(_, n, d)| (*n, *d));
        let stale = idle
            .iter()
            .filter(|(_, _, d)| *d >= STALE)
            .max_by_key(|(_, _, d)| *d);
        match fair.or(stale) {
            Some(&(i, _, _)) => {
                let (_, _, h) = self.conns.swap_remove(i);
                h.abort();
                true
            }
            None => false,
        }
    }
}

/// What an admitted connection holds until it ends (or is aborted).
struct Held {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _address: PerAddress,
    stats: Arc<ServeStats>,
}

impl Held {
    fn new(
        permit: tokio::sync::OwnedSemaphorePermit,
        address: PerAddress,
        stats: Arc<ServeStats>,
    ) -> Self {
        stats.open.fetch_add(1, Ordering::Relaxed);
        Self {
            _permit: permit,
            _address: address,
            stats,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How often failed and refused accepts are logged at most.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` as `opts` says until `shutdown`
/// completes, then lets requests in flight finish (for up to 10 s).
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let router = router.layer(axum::middleware::from_fn_with_state(
        opts.request_timeout,
        request_deadline,
    ));
    let acceptor = opts.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(opts.max_connections));
    let per_address = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let idle = std::sync::Mutex::new(Idle::default());
    let (mut failed_log, mut refused_log) = (Damped::new(LOG_EVERY), Damped::new(LOG_EVERY));
    let mut pause = Duration::from_millis(50);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    pause = Duration::from_millis(50);
                    a
                }
                Err(e) => {
                    opts.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                    let out_of_resources = matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    );
                    let wait = if out_of_resources { pause } else { Duration::from_millis(10) };
                    if out_of_resources {
                        pause = (pause * 2).min(Duration::from_secs(1));
                    }
                    if let Some(n) = failed_log.hit() {
                        tracing::warn!(error = %e, failures = n, ?wait, "management API accepts failing; pausing accepts");
                    }
                    tokio::time::sleep(wait).await;
                    continue;
                }
            },
        };
        // At the cap, a connection idle for a second (an idle or
        // dribbling client, or a keep-alive one between requests) makes
        // room: a flood of idle connections cannot shut out an admin.
        let now = Instant::now();
        // The address's own cap first: a connection refused for it must
        // not make anyone else's room.
        let address = PerAddress::enter(&per_address, source_key(peer.ip()), opts.max_per_address);
        let mut permit = Arc::clone(&limit).try_acquire_owned().ok();
        if address.is_some()
            && permit.is_none()
            && idle.lock().unwrap_or_else(PoisonError::into_inner).evict(
                now,
                source_key(peer.ip()),
                &per_address,
            )
        {
            permit = tokio::time::timeout(
                Duration::from_millis(200),
                Arc::clone(&limit).acquire_owned(),
            )
            .await
            .ok()
            .and_then(Result::ok);
            if permit.is_some() {
                opts.stats.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        let admitted = permit.zip(address);
        let Some((permit, address)) = admitted else {
            opts.stats.refused.fetch_add(1, Ordering::Relaxed);
            if let Some(n) = refused_log.hit() {
                tracing::warn!(%peer, refused = n, max = opts.max_connections, per_address = opts.max_per_address, "management API connections refused at the caps (api_max_connections, api_max_connections_per_address) since the last report");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new(now));
        let service = {
            let (activity, router) = (Arc::clone(&activity), router.clone());
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let busy = Busy::start(Arc::clone(&activity));
                let call = tower::ServiceExt::oneshot(router.clone(), req);
                async move {
                    let response = call.await;
                    drop(busy);
                    response
                }
            })
        };
        let header_timeout = opts.header_timeout;
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .keep_alive(true);
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let stats = Arc::clone(&opts.stats);
        let held = Held::new(permit, address, Arc::clone(&stats));
        let task = tokio::spawn(async move {
            let _held = held;
            match acceptor {
                None => {
                    let conn = http.serve_connection(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn).await;
                }
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let conn = http.serve_connection(TokioIo::new(tls), service);
                            let _ = watcher.watch(conn).await;
                        }
                        Ok(Err(e)) => {
                            stats.tls_failures.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, error = %e, "API TLS handshake failed");
                        }
                        Err(_) => {
                            stats.tls_failures.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, "API TLS handshake timed out");
                        }
                    }
                }
            }
        });
        idle.lock().unwrap_or_else(PoisonError::into_inner).insert(
            source_key(peer.ip()),
            activity,
            task.abort_handle(),
        );
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("management API requests still running at shutdown were cut");
    }
    Ok(())
}

/// Ends a request that takes longer than `limit` in all (a body dribbled
/// byte by byte included) with 503 `request_timeout`.
async fn request_deadline(
    axum::extract::State(limit): axum::extract::State<Duration>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => super::ApiError::Timeout(limit).into_response(),
    }
}

/// A TLS configuration from a PEM certificate chain and private key.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert.to_owned(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert.to_owned(),
            reason: "holds no certificate".into(),
        });
    }
    let key_pem = read(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(ring_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key_der))
        .map_err(TlsError::Config)?;
    Ok(Arc::new(config))
}

/// The API's certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM.
    #[error("{}: {reason}", path.display())]
    Pem {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the certificate and key.
    #[error("the certificate and key do not make a TLS configuration")]
    Config(#[source] rustls::Error),
}

/// rustls on *ring* (also what the CLI's HTTP client uses): TLS 1.3 and
/// 1.2 with rustls's default suites. rustls marks it deprecated for want
/// of post-quantum key exchange, which its aws-lc-rs backend has; that
/// backend needs a large C build we do not take on for the management API.
#[allow(deprecated)]
pub fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

#[cfg(test)]
mod tests;
