//! The management API (SPEC.md §3, "Management API"): HTTP/JSON on every
//! member, authenticated with the cluster API token. Any member answers any
//! request: reads come from its replica, writes go through
//! [`ClusterService::write`] (forwarded to the Raft leader), so clients can
//! spread requests across members and move on when one is down.
//!
//! ```text
//!  request ─> auth (Bearer token, constant time) ─> extract (JSON body, path) ─> handler
//!                                                                                 │
//!     reads:  ClusterService::config / raft / members ─> views (JSON, no secrets) │
//!     writes: request body (+ Idempotency-Key) ─> Command ─> ClusterService::write ─> {"result": ...}
//!  every failure ─> ApiError ─> {"error": {"code", "message"}} + HTTP status (error.rs only)
//! ```
//!
//! - [`router`] builds the axum router; [`serve`] and [`serve_listener`] run it.
//! - The request and response bodies (the CLI's contract) are
//!   [`trellis_api`]'s, shared with the CLI; [`views`] builds the views from
//!   the configuration and turns requests into its types.
//! - [`ApiError`]: the one place errors become HTTP statuses.
//! - [`testing::MemoryService`]: a single-member in-memory [`ClusterService`]
//!   for tests and demos.
//!
//! Endpoints (all but `/health` need `Authorization: Bearer <token>`):
//!
//! | method and path                            | what                                   |
//! |--------------------------------------------|----------------------------------------|
//! | `GET /health`                              | liveness, `{"status": "ok"}`           |
//! | `GET /metrics`                             | Prometheus text                        |
//! | `GET /v1/status`                           | Raft and cluster summary               |
//! | `GET /v1/members`                          | members and their links                |
//! | `GET, POST /v1/devices`                    | list, create (backing checked here)    |
//! | `POST /v1/devices/{name}/resize`           | grow (backing checked here)            |
//! | `DELETE /v1/devices/{name}`                | delete an unmapped device              |
//! | `GET, POST /v1/targets`                    | list, create                           |
//! | `DELETE /v1/targets/{iqn}`                 | delete with its LUNs and ACL           |
//! | `POST /v1/targets/{iqn}/luns`              | map a device as a LUN                  |
//! | `DELETE /v1/targets/{iqn}/luns/{lun}`      | unmap                                  |
//! | `GET, POST /v1/targets/{iqn}/acl`          | list (no CHAP secrets), allow          |
//! | `DELETE /v1/targets/{iqn}/acl/{initiator}` | deny                                   |
//!
//! Every write (POST, DELETE) takes an optional `Idempotency-Key` header:
//! the write is applied at most once under that key, and sending it again,
//! to this member or another, answers what the first attempt did (see
//! [`crate::config::once`]). A client resends a write whose answer it lost
//! with the same key; a new write needs a new key.

mod auth;
mod error;
mod extract;
mod failover;
mod handlers;
mod metrics;
mod serve;
pub mod testing;
pub mod views;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::{delete, get, post};
use axum::Router;
use tokio::net::TcpListener;

pub use auth::Token;
pub use error::ApiError;
pub use serve::{ring_provider, serve_with, tls_config, ServeOptions, ServeStats, TlsError};

use crate::config::{ConfigError, Device};
use crate::service::ClusterService;

/// Produces Prometheus text lines (the data path's counters) appended to
/// `/metrics`.
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

/// Checks, before a device is created or grown, that this member reaches
/// its backing; a refusal is [`ConfigError::InvalidBacking`] and nothing is
/// written.
pub type BackingCheck = Arc<dyn Fn(&Device) -> Result<(), ConfigError> + Send + Sync>;

/// What the member serving the API adds to the replicated state: its data
/// path's view. A witness (no data path) has [`Local::default`]: no extra
/// metrics, every backing accepted.
#[derive(Clone)]
pub struct Local {
    /// Lines appended to `/metrics`.
    pub metrics: MetricsSource,
    /// Run on `POST /v1/devices` (a name not in the replica yet) and on a
    /// resize that grows a device (as of this member's replica). Every
    /// data member opens a device's backing at the same path (shared
    /// storage), so one that the member taking the request cannot reach
    /// is a typo or an unmounted share: refusing it beats a device that no
    /// member serves.
    pub check_backing: BackingCheck,
    /// How long `check_backing` may take before the request gets 503 (it
    /// runs on a thread of its own: a stat on a hung network share may
    /// block for ever, and must not take the API with it).
    pub check_timeout: std::time::Duration,
    /// This member's id, for messages ("" for none).
    pub member: String,
    /// What this member announces in its heartbeats (its sessions and
    /// health, shown for it in `member list`); None for a witness.
    pub announcer: Option<crate::node::Announcer>,
}

impl Default for Local {
    fn default() -> Self {
        Self {
            metrics: Arc::new(String::new),
            check_backing: Arc::new(|_| Ok(())),
            check_timeout: std::time::Duration::from_secs(5),
            member: String::new(),
            announcer: None,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    service: Arc<dyn ClusterService>,
    local: Local,
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// The management API over `service`, requiring `token` on every endpoint
/// but `/health`, with `local` for this member's own part (its metrics,
/// its check of new devices' backings). An empty token refuses every
/// authenticated request.
pub fn router(service: Arc<dyn ClusterService>, token: String, local: Local) -> Router {
    let state = AppState { service, local };
    let token = Token::new(&token);
    let authenticated = Router::new()
        .route("/metrics", get(handlers::metrics))
        .route("/v1/status", get(handlers::status))
        .route("/v1/members", get(handlers::members))
        .route(
            "/v1/devices",
            get(handlers::list_devices).post(handlers::create_device),
        )
        .route("/v1/devices/{name}", delete(handlers::delete_device))
        .route("/v1/devices/{name}/resize", post(handlers::resize_device))
        .route(
            "/v1/devices/{name}/policy",
            post(failover::set_device_policy),
        )
        .route(
            "/v1/sets",
            get(failover::list_sets).post(failover::create_set),
        )
        .route(
            "/v1/sets/{name}",
            get(failover::show_set).delete(failover::delete_set),
        )
        .route("/v1/sets/{name}/members", post(failover::add_set_member))
        .route(
            "/v1/sets/{name}/members/{member}",
            delete(failover::remove_set_member),
        )
        .route("/v1/sets/{name}/failback", post(failover::set_failback))
        .route("/v1/roles", get(failover::list_roles))
        .route("/v1/events", get(failover::list_events))
        .route("/v1/members/{id}/drain", post(failover::drain_member))
        .route("/v1/members/{id}/undrain", post(failover::undrain_member))
        .route(
            "/v1/targets",
            get(handlers::list_targets).post(handlers::create_target),
        )
        .route("/v1/targets/{iqn}", delete(handlers::delete_target))
        .route("/v1/targets/{iqn}/luns", post(handlers::map_lun))
        .route("/v1/targets/{iqn}/luns/{lun}", delete(handlers::unmap_lun))
        .route(
            "/v1/targets/{iqn}/acl",
            get(handlers::list_acl).post(handlers::allow_initiator),
        )
        .route(
            "/v1/targets/{iqn}/acl/{initiator}",
            delete(handlers::deny_initiator),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            token,
            auth::require_token,
        ));
    Router::new()
        .route("/health", get(handlers::health))
        .merge(authenticated)
        .fallback(handlers::no_route)
        .method_not_allowed_fallback(handlers::wrong_method)
        .with_state(state)
}

/// Why the API server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("management API server failed")]
    Serve(#[source] std::io::Error),
}

/// Serves `router` on `addr` until the process stops.
pub async fn serve(addr: SocketAddr, router: Router) -> Result<(), ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    serve_listener(listener, router, std::future::pending()).await
}

/// Serves `router` on a bound `listener` until `shutdown` completes, then
/// lets in-flight requests finish.
pub async fn serve_listener(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with(listener, router, ServeOptions::default(), shutdown).await
}

#[cfg(test)]
mod tests;
