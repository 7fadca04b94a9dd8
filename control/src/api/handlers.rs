//! One handler per endpoint: reads build views from this member's replica;
//! writes turn the request into a [`Command`] and wait for Raft.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;
use trellis_api::{
    AclList, AclView, AllowInitiator, CreateDevice, CreateTarget, DeviceList, MapLun, MemberList,
    ResizeDevice, StatusView, TargetList, TargetView, WriteResult,
};

use super::extract::{Body, IdempotencyKey, PathParams};
use super::views::{chap_auth, device_view, into_device, member_list, status_view};
use super::{metrics as prom, ApiError, AppState};
use crate::config::{Command, ConfigError, Device, Object, Response};
use crate::service::ServiceError;

type ApiResult<T> = Result<T, ApiError>;

impl AppState {
    /// Applies `cmd` through Raft, at most once under `key`.
    pub(super) async fn apply(&self, key: &IdempotencyKey, cmd: Command) -> ApiResult<Response> {
        Ok(self.service.write(key.wrap(cmd)).await?)
    }

    /// [`AppState::apply`], answering what the command did.
    pub(super) async fn write(
        &self,
        key: &IdempotencyKey,
        cmd: Command,
    ) -> ApiResult<Json<WriteResult>> {
        let result = self.apply(key, cmd).await?;
        Ok(Json(WriteResult {
            result: result.into(),
        }))
    }
}

pub(super) fn not_found(object: Object, name: &str) -> ApiError {
    ConfigError::NotFound {
        object,
        name: name.to_owned(),
    }
    .into()
}

/// `GET /health`: the process answers (no token needed).
pub(super) async fn health() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// `GET /metrics`.
pub(super) async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    let mut text = prom::render(&st.service.raft(), &st.service.members());
    let extra = (st.local.metrics)();
    text.push_str(&extra);
    if !text.ends_with('\n') {
        text.push('\n');
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// `GET /v1/status`.
pub(super) async fn status(State(st): State<AppState>) -> Json<StatusView> {
    let s = &st.service;
    Json(status_view(&s.config(), &s.raft(), &s.members()))
}

/// `GET /v1/members`.
pub(super) async fn members(State(st): State<AppState>) -> Json<MemberList> {
    let s = &st.service;
    let own = st.local.announcer.as_ref().and_then(|a| a.state());
    Json(member_list(&s.config(), &s.raft(), &s.members(), own))
}

/// `GET /v1/devices`.
pub(super) async fn list_devices(State(st): State<AppState>) -> Json<DeviceList> {
    let config = st.service.config();
    let devices = config
        .devices
        .values()
        .map(|d| device_view(d, &config))
        .collect();
    Json(DeviceList { devices })
}

/// `POST /v1/devices`: 201 with the device (its uuid generated when not
/// given: from the idempotency key when there is one, so that a resent
/// request names the same device).
pub(super) async fn create_device(
    State(st): State<AppState>,
    key: IdempotencyKey,
    Body(req): Body<CreateDevice>,
) -> ApiResult<impl IntoResponse> {
    let keyed = key
        .0
        .as_deref()
        .map(|k| st.service.keyed_device_uuid(k, &req.name));
    let device = into_device(req, keyed)?;
    // A name the replica holds already is answered by the command itself
    // without a check: a resend of a keyed create that applied (its first
    // answer again, even if the share is gone meanwhile) or a 409.
    if !st.service.config().devices.contains_key(&device.name) {
        // The device's own rules (name, sizes) first: cheaper, and the
        // clearer answer.
        device.check()?;
        check_backing(&st, &device).await?;
    }
    st.apply(&key, Command::CreateDevice(device.clone()))
        .await?;
    let config = st.service.config();
    Ok((StatusCode::CREATED, Json(device_view(&device, &config))))
}

/// Runs this member's backing check of `device` (new, or grown) on a
/// thread of its own, within its time limit. Not on the runtime's
/// blocking pool: a check stuck on a hung share must neither hold a pool
/// slot nor keep the runtime (and so the daemon) from stopping. Running
/// out of time is 503, worth another try or another member.
async fn check_backing(st: &AppState, device: &Device) -> ApiResult<()> {
    let limit = st.local.check_timeout;
    let (check, d) = (st.local.check_backing.clone(), device.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("trellis-backing-check".into())
        .spawn(move || {
            let _ = tx.send(check(&d));
        })
        .map_err(|e| ServiceError::Internal(format!("cannot start the backing check: {e}")))?;
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(checked)) => Ok(checked?),
        Ok(Err(_)) => {
            Err(ServiceError::Internal("the backing check ended without an answer".into()).into())
        }
        Err(_) => {
            let member = match st.local.member.as_str() {
                "" => "this member".to_owned(),
                m => format!("member {m}"),
            };
            Err(ServiceError::Unavailable(format!(
                "device {}: backing {:?} could not be examined within {limit:?} on {member} (a hung share?); nothing was written",
                device.name,
                device.backing.to_string()
            ))
            .into())
        }
    }
}

/// `POST /v1/devices/{name}/resize`: a grown device's backing is checked
/// like a new one's.
pub(super) async fn resize_device(
    State(st): State<AppState>,
    PathParams(name): PathParams<String>,
    key: IdempotencyKey,
    Body(req): Body<ResizeDevice>,
) -> ApiResult<Json<WriteResult>> {
    // The backing must hold the new size too (a block device is not grown).
    // An unknown device or a shrink is left to the command's own checks.
    let current = st.service.config().devices.get(&name).cloned();
    if let Some(d) = current.filter(|d| req.size > d.size) {
        let grown = Device {
            size: req.size,
            ..d
        };
        grown.check()?;
        check_backing(&st, &grown).await?;
    }
    st.write(
        &key,
        Command::ResizeDevice {
            name,
            size: req.size,
        },
    )
    .await
}

/// `DELETE /v1/devices/{name}`.
pub(super) async fn delete_device(
    State(st): State<AppState>,
    PathParams(name): PathParams<String>,
    key: IdempotencyKey,
) -> ApiResult<Json<WriteResult>> {
    st.write(&key, Command::DeleteDevice { name }).await
}

/// `GET /v1/targets`.
pub(super) async fn list_targets(State(st): State<AppState>) -> Json<TargetList> {
    let config = st.service.config();
    Json(TargetList {
        targets: config.targets.values().map(TargetView::from).collect(),
    })
}

/// `POST /v1/targets`: 201 with the target.
pub(super) async fn create_target(
    State(st): State<AppState>,
    key: IdempotencyKey,
    Body(req): Body<CreateTarget>,
) -> ApiResult<impl IntoResponse> {
    let create = Command::CreateTarget {
        iqn: req.iqn.clone(),
        alias: req.alias.clone(),
    };
    st.apply(&key, create).await?;
    let config = st.service.config();
    let view = config.targets.get(&req.iqn).map_or_else(
        || TargetView {
            iqn: req.iqn.clone(),
            alias: req.alias.clone(),
            luns: Vec::new(),
            initiators: 0,
        },
        TargetView::from,
    );
    Ok((StatusCode::CREATED, Json(view)))
}

/// `DELETE /v1/targets/{iqn}`.
pub(super) async fn delete_target(
    State(st): State<AppState>,
    PathParams(iqn): PathParams<String>,
    key: IdempotencyKey,
) -> ApiResult<Json<WriteResult>> {
    st.write(&key, Command::DeleteTarget { iqn }).await
}

/// `POST /v1/targets/{iqn}/luns`.
pub(super) async fn map_lun(
    State(st): State<AppState>,
    PathParams(target): PathParams<String>,
    key: IdempotencyKey,
    Body(req): Body<MapLun>,
) -> ApiResult<Json<WriteResult>> {
    st.write(
        &key,
        Command::MapLun {
            target,
            lun: req.lun,
            device: req.device,
        },
    )
    .await
}

/// `DELETE /v1/targets/{iqn}/luns/{lun}`.
pub(super) async fn unmap_lun(
    State(st): State<AppState>,
    PathParams((target, lun)): PathParams<(String, u16)>,
    key: IdempotencyKey,
) -> ApiResult<Json<WriteResult>> {
    st.write(&key, Command::UnmapLun { target, lun }).await
}

/// `GET /v1/targets/{iqn}/acl`: without CHAP secrets.
pub(super) async fn list_acl(
    State(st): State<AppState>,
    PathParams(iqn): PathParams<String>,
) -> ApiResult<Json<AclList>> {
    let config = st.service.config();
    let target = config
        .targets
        .get(&iqn)
        .ok_or_else(|| not_found(Object::Target, &iqn))?;
    Ok(Json(AclList {
        target: iqn.clone(),
        acl: target.acl.values().map(AclView::from).collect(),
    }))
}

/// `POST /v1/targets/{iqn}/acl`.
pub(super) async fn allow_initiator(
    State(st): State<AppState>,
    PathParams(target): PathParams<String>,
    key: IdempotencyKey,
    Body(mut req): Body<AllowInitiator>,
) -> ApiResult<Json<WriteResult>> {
    let auth = chap_auth(&mut req)?;
    st.write(
        &key,
        Command::AllowInitiator {
            target,
            initiator: req.initiator,
            luns: req.luns,
            auth,
        },
    )
    .await
}

/// `DELETE /v1/targets/{iqn}/acl/{initiator}`.
pub(super) async fn deny_initiator(
    State(st): State<AppState>,
    PathParams((target, initiator)): PathParams<(String, String)>,
    key: IdempotencyKey,
) -> ApiResult<Json<WriteResult>> {
    st.write(&key, Command::DenyInitiator { target, initiator })
        .await
}

/// Any path that is not an endpoint.
pub(super) async fn no_route() -> ApiError {
    ApiError::NoRoute
}

/// An endpoint asked with a method it does not take.
pub(super) async fn wrong_method() -> ApiError {
    ApiError::WrongMethod
}
