//! The management API's Failover Set and port-policy bodies, converted
//! between [`trellis_api`] and the configuration's types.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use trellis_api::{
    AddSetMember, Composition as ApiComposition, CreateSet, EventList, FailbackMode,
    Others as ApiOthers, Policy as ApiPolicy, RoleList, RoleView, SetDevicePolicy, SetFailback,
    SetList, SetView, WriteResult,
};

use super::extract::{Body, IdempotencyKey, PathParams};
use super::handlers::not_found;
use super::{ApiError, AppState};
use crate::config::{
    Assignment, ClusterConfig, Command, Composition, Failback, FailoverSet, Object, Others,
    PortPolicy,
};

type ApiResult<T> = Result<T, ApiError>;

/// The failback delay of an automatic failback created without one.
pub const DEFAULT_FAILBACK_DELAY_SECS: u64 = 60;

/// The port policy `policy` with `others`; `others` only goes with
/// active-passive (a field error otherwise).
pub fn port_policy(policy: ApiPolicy, others: Option<ApiOthers>) -> Result<PortPolicy, ApiError> {
    match (policy, others) {
        (ApiPolicy::ActiveActive, Some(_)) => Err(ApiError::InvalidField {
            field: "others",
            reason: "applies to active-passive devices only".to_owned(),
        }),
        (ApiPolicy::ActiveActive, None) => Ok(PortPolicy::ActiveActive),
        (ApiPolicy::ActivePassive, o) => Ok(PortPolicy::ActivePassive {
            others: match o {
                None | Some(ApiOthers::Standby) => Others::Standby,
                Some(ApiOthers::NonOptimized) => Others::NonOptimized,
            },
        }),
    }
}

/// The API's form of `policy`.
pub fn policy_view(policy: PortPolicy) -> (ApiPolicy, Option<ApiOthers>) {
    match policy {
        PortPolicy::ActiveActive => (ApiPolicy::ActiveActive, None),
        PortPolicy::ActivePassive { others } => (
            ApiPolicy::ActivePassive,
            Some(match others {
                Others::Standby => ApiOthers::Standby,
                Others::NonOptimized => ApiOthers::NonOptimized,
            }),
        ),
    }
}

/// The failback `mode` with `delay_secs` (a field error for a delay with
/// manual failback).
pub fn failback(mode: FailbackMode, delay_secs: Option<u64>) -> Result<Failback, ApiError> {
    match (mode, delay_secs) {
        (FailbackMode::Manual, Some(_)) => Err(ApiError::InvalidField {
            field: "failback_delay_secs",
            reason: "applies to automatic failback only".to_owned(),
        }),
        (FailbackMode::Manual, None) => Ok(Failback::Manual),
        (FailbackMode::Auto, d) => Ok(Failback::Auto {
            delay_secs: d.unwrap_or(DEFAULT_FAILBACK_DELAY_SECS),
        }),
    }
}

/// The set `req` creates (validated by the configuration when applied).
pub fn into_set(req: CreateSet) -> Result<FailoverSet, ApiError> {
    Ok(FailoverSet {
        name: req.name,
        composition: match req.composition {
            ApiComposition::Single => Composition::Single,
            ApiComposition::NWay => Composition::NWay,
            ApiComposition::Hierarchical => Composition::Hierarchical,
        },
        members: req.members,
        failback: failback(
            req.failback.unwrap_or(FailbackMode::Manual),
            req.failback_delay_secs,
        )?,
    })
}

/// The view of `set` within `config`.
pub fn set_view(set: &FailoverSet, config: &ClusterConfig) -> SetView {
    let (failback, failback_delay_secs) = match set.failback {
        Failback::Manual => (FailbackMode::Manual, None),
        Failback::Auto { delay_secs } => (FailbackMode::Auto, Some(delay_secs)),
    };
    SetView {
        name: set.name.clone(),
        composition: match set.composition {
            Composition::Single => ApiComposition::Single,
            Composition::NWay => ApiComposition::NWay,
            Composition::Hierarchical => ApiComposition::Hierarchical,
        },
        members: set.members.clone(),
        failback,
        failback_delay_secs,
        builtin: set.name == crate::config::DEFAULT_SET,
        devices: config
            .devices
            .values()
            .filter(|d| d.set == set.name)
            .map(|d| d.name.clone())
            .collect(),
    }
}

/// `GET /v1/sets`.
pub(super) async fn list_sets(State(st): State<AppState>) -> Json<SetList> {
    let config = st.service.config();
    Json(SetList {
        sets: config
            .failover_sets()
            .iter()
            .map(|s| set_view(s, &config))
            .collect(),
    })
}

/// `GET /v1/sets/{name}`.
pub(super) async fn show_set(
    State(st): State<AppState>,
    PathParams(name): PathParams<String>,
) -> ApiResult<Json<SetView>> {
    let config = st.service.config();
    let set = config
        .failover_set(&name)
        .ok_or_else(|| not_found(Object::Set, &name))?;
    Ok(Json(set_view(&set, &config)))
}

/// `POST /v1/sets`: 201 with the set.
pub(super) async fn create_set(
    State(st): State<AppState>,
    key: IdempotencyKey,
    Body(req): Body<CreateSet>,
) -> ApiResult<impl IntoResponse> {
    let set = into_set(req)?;
    st.apply(&key, Command::CreateSet(set.clone())).await?;
    let config = st.service.config();
    Ok((StatusCode::CREATED, Json(set_view(&set, &config))))
}

/// `DELETE /v1/sets/{name}`.
pub(super) async fn delete_set(
    State(st): State<AppState>,
    PathParams(name): PathParams<String>,
    key: IdempotencyKey,
) -> ApiResult<Json<WriteResult>> {
    st.write(&key, Command::DeleteSet { name }).await
}

/// `POST /v1/sets/{name}/members`.
pub(super) async fn add_set_member(
    State(st): State<AppState>,
    PathParams(set): PathParams<String>,
    key: IdempotencyKey,
    Body(req): Body<AddSetMember>,
) -> ApiResult<Json<WriteResult>> {
    st.write(
        &key,
        Command::AddSetMember {
            set,
            member: req.member,
            position: req.position,
        },
    )
    .await
}

/// `DELETE /v1/sets/{name}/members/{member}`.
pub(super) async fn remove_set_member(
    State(st): State<AppState>,
    PathParams((set, member)): PathParams<(String, String)>,
    key: IdempotencyKey,
) -> ApiResult<Json<WriteResult>> {
    st.write(&key, Command::RemoveSetMember { set, member })
        .await
}

/// `POST /v1/sets/{name}/failback`.
pub(super) async fn set_failback(
    State(st): State<AppState>,
    PathParams(set): PathParams<String>,
    key: IdempotencyKey,
    Body(req): Body<SetFailback>,
) -> ApiResult<Json<WriteResult>> {
    let failback = failback(req.failback, req.delay_secs)?;
    st.write(&key, Command::SetFailback { set, failback }).await
}

/// `POST /v1/devices/{name}/policy`: `others` alone keeps the device
/// active-passive with that state for the others.
pub(super) async fn set_device_policy(
    State(st): State<AppState>,
    PathParams(name): PathParams<String>,
    key: IdempotencyKey,
    Body(req): Body<SetDevicePolicy>,
) -> ApiResult<Json<WriteResult>> {
    let policy = match (req.policy, req.others) {
        (None, None) => None,
        (p, o) => Some(port_policy(p.unwrap_or(ApiPolicy::ActivePassive), o)?),
    };
    if req.set.is_none() && policy.is_none() {
        return Err(ApiError::InvalidField {
            field: "set",
            reason: "give a set, a policy or the others' state to change".to_owned(),
        });
    }
    st.write(
        &key,
        Command::SetDevicePolicy {
            name,
            set: req.set,
            policy,
        },
    )
    .await
}

/// How an API client sees the committed `a` of `set`.
fn role_view(set: &str, a: &Assignment) -> RoleView {
    let name = |m: &crate::MemberId| m.0.clone();
    RoleView {
        set: set.to_owned(),
        epoch: a.epoch,
        primary: a.roles.primary.as_ref().map(name),
        secondary: a.roles.secondary.as_ref().map(name),
        alternates: a.roles.alternates.iter().map(name).collect(),
        outgoing: a.roles.outgoing.as_ref().map(name),
        since_ms: a.since_ms,
        why: a.why.clone(),
    }
}

/// `GET /v1/roles`: the committed roles of every set (epoch 0 where none
/// is committed yet).
pub(super) async fn list_roles(State(st): State<AppState>) -> Json<RoleList> {
    let config = st.service.config();
    let table = st.service.roles();
    Json(RoleList {
        roles: config
            .failover_sets()
            .iter()
            .map(|s| match table.sets.get(&s.name) {
                Some(a) => role_view(&s.name, a),
                None => RoleView {
                    set: s.name.clone(),
                    epoch: 0,
                    primary: None,
                    secondary: None,
                    alternates: Vec::new(),
                    outgoing: None,
                    since_ms: 0,
                    why: "no roles committed yet".to_owned(),
                },
            })
            .collect(),
    })
}

/// `GET /v1/events`: the replicated history of role assignments.
pub(super) async fn list_events(State(st): State<AppState>) -> Json<EventList> {
    let table = st.service.roles();
    Json(EventList {
        events: table
            .history
            .iter()
            .map(|e| role_view(&e.set, &e.assignment))
            .collect(),
    })
}

/// Drains (`drained`) or undrains member `id`.
async fn set_drained(
    st: AppState,
    id: String,
    key: IdempotencyKey,
    drained: bool,
) -> ApiResult<Json<WriteResult>> {
    let member = crate::MemberId(id);
    st.write(&key, Command::DrainMember { member, drained })
        .await
}

/// `POST /v1/members/{id}/drain`: the member's roles move away (a planned
/// handover: the new Primary Active/Optimized first).
pub(super) async fn drain_member(
    State(st): State<AppState>,
    PathParams(id): PathParams<String>,
    key: IdempotencyKey,
) -> ApiResult<Json<WriteResult>> {
    set_drained(st, id, key, true).await
}

/// `POST /v1/members/{id}/undrain`: the member may take roles again.
pub(super) async fn undrain_member(
    State(st): State<AppState>,
    PathParams(id): PathParams<String>,
    key: IdempotencyKey,
) -> ApiResult<Json<WriteResult>> {
    set_drained(st, id, key, false).await
}
