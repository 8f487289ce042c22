//! The command endpoints: every write from the API goes through the platform's command path
//! (`ironplant_runtime::commands`, docs/commands.md).
//!
//! - `POST /api/v1/tags/{path}/write` with `{"value": 320, "reason": "…", "select": 18}`:
//!   decides, writes and waits for the read-back. `200` verified, `202` pending a second
//!   person (two-person rule), `502` written but not verified (`failed`) or not written
//!   (`device_error`), `409` superseded by a newer command; all with `{"command": {…}}`.
//!   Refusals have the error shape with the refusal's code: `403` `not_authorised`, `404`
//!   `unknown_tag`, `400` `bad_value_type`/`envelope_not_numeric`, `409` every other check
//!   (envelope, interlocks, select-before-operate, two-person).
//! - `POST /api/v1/tags/{path}/select` with `{"value": 4, "reason": "…"}` (value optional):
//!   select-before-operate, `200` `{"selection": {…}}`; `DELETE …/select` drops it.
//! - `GET /api/v1/commands`: two-person commands waiting for a second person (those whose tag
//!   the caller may read).
//! - `POST /api/v1/commands/{id}/confirm|reject` with `{"reason": "…"}`.
//!
//! Authorisation is the one policy's: the role's write_setpoints and the caller's write
//! prefixes give the verdict the command path checks first (so a refusal is audited like any
//! other). The requester is the caller's user and role; the session of select-before-operate
//! is the token (a login session or an API token: `token:<id>`), or the user for Basic
//! authentication (`basic:<user>`), which has no session of its own.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ironplant_control::command::{
    Authorisation, CommandId, CommandRequest, Denial, Origin, Pending, Refusal, Requester, Role,
    SelectToken,
};
use ironplant_core::wire::{ValueIn, ValueJson};
use ironplant_core::{TagPath, Value};
use ironplant_runtime::commands::CommandResult;
use ironplant_security::users::AuthMethod;
use ironplant_security::Permission;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{permission_name, Caller};
use crate::{ApiError, ApiState, JsonBody};

fn bad(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn value_json(v: &Value) -> serde_json::Value {
    serde_json::to_value(ValueJson(Some(v))).unwrap_or(serde_json::Value::Null)
}

/// The policy's verdict on the caller writing `tag`.
fn verdict(caller: &Caller, tag: &str) -> Authorisation {
    if !caller.allows(Permission::WriteSetpoints) {
        return Authorisation::Denied(Denial::Role {
            role: caller.role().to_string(),
            permission: permission_name(Permission::WriteSetpoints).to_owned(),
        });
    }
    if !caller.access.can_write(tag) {
        return Authorisation::Denied(Denial::Other(
            "the tag is outside the tag prefixes you may write".to_owned(),
        ));
    }
    Authorisation::Allowed
}

/// The caller as the command path knows it.
fn requester(caller: &Caller) -> Requester {
    let role = caller
        .role()
        .to_string()
        .parse::<Role>()
        .unwrap_or(Role::Viewer);
    match &caller.identity {
        None => Requester::user("anonymous", role, "anonymous"),
        Some(i) => {
            let session = match &i.via {
                AuthMethod::Token { id } => format!("token:{id}"),
                AuthMethod::Password => format!("basic:{}", i.user),
                AuthMethod::Certificate => format!("certificate:{}", i.user),
            };
            Requester::user(&i.user, role, &session)
        }
    }
}

/// A refusal in the error shape, with its status (see the module docs).
fn refused(r: &Refusal) -> ApiError {
    let status = match r.code() {
        "not_authorised" => StatusCode::FORBIDDEN,
        "unknown_tag" | "unknown_pending" => StatusCode::NOT_FOUND,
        "bad_value_type" | "envelope_not_numeric" => StatusCode::BAD_REQUEST,
        _ => StatusCode::CONFLICT,
    };
    ApiError::new(status, r.code(), r.to_string())
}

fn pending_json(p: &Pending) -> serde_json::Value {
    json!({
        "id": p.id.0,
        "tag": p.tag.as_str(),
        "value": value_json(&p.value),
        "requested_by": p.requested_by,
        "needs_role": p.needs_role.as_str(),
        "expires": p.expires_at.to_rfc3339(),
    })
}

/// A command's result as `(status, {"command": {…}})`, or a refusal.
fn outcome(r: &CommandResult) -> Result<Response, ApiError> {
    let (status, body) = match r {
        CommandResult::Refused(r) => return Err(refused(r)),
        CommandResult::Pending(p) => {
            let mut b = pending_json(p);
            b["result"] = json!("pending");
            b["message"] = json!(format!(
                "waiting for a second person ({} or above) to confirm command {}",
                p.needs_role, p.id
            ));
            (StatusCode::ACCEPTED, b)
        }
        CommandResult::Verified {
            id,
            tag,
            value,
            after,
        } => (
            StatusCode::OK,
            json!({
                "id": id.0, "tag": tag.as_str(), "result": "verified",
                "value": value_json(value),
                "after_ms": u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
            }),
        ),
        CommandResult::Failed {
            id,
            tag,
            commanded,
            last_seen,
            why,
        } => (
            StatusCode::BAD_GATEWAY,
            json!({
                "id": id.0, "tag": tag.as_str(), "result": "failed",
                "value": value_json(commanded),
                "last_seen": last_seen.as_ref().map_or(serde_json::Value::Null, value_json),
                "message": why,
            }),
        ),
        CommandResult::DeviceError { id, tag, message } => (
            StatusCode::BAD_GATEWAY,
            json!({"id": id.0, "tag": tag.as_str(), "result": "device_error", "message": message}),
        ),
        CommandResult::Superseded { id, tag, by } => (
            StatusCode::CONFLICT,
            json!({
                "id": id.0, "tag": tag.as_str(), "result": "superseded",
                "message": format!("command {by} on the same tag was accepted before this one was verified"),
            }),
        ),
    };
    Ok((status, Json(json!({ "command": body }))).into_response())
}

fn tag_of(path: &str) -> Result<TagPath, ApiError> {
    TagPath::parse(path).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            format!("{path:?} is not a valid tag path: {e}"),
        )
    })
}

/// Splits `<tag>/<action>` (the route is `/api/v1/tags/{*path}`).
fn split_action(path: &str) -> Result<(TagPath, &str), ApiError> {
    let path = path.trim_end_matches('/');
    let (tag, action) = path.rsplit_once('/').ok_or_else(|| not_an_action(path))?;
    Ok((tag_of(tag)?, action))
}

fn not_an_action(path: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no such endpoint for {path:?}: write a tag with POST /api/v1/tags/<tag>/write, select it with POST (or cancel with DELETE) /api/v1/tags/<tag>/select"
        ),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteBody {
    value: Option<ValueIn>,
    #[serde(default)]
    reason: String,
    /// The id of this session's selection (select-before-operate), checked if given.
    select: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SelectBody {
    value: Option<ValueIn>,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    #[serde(default)]
    #[allow(dead_code)]
    // Read for the body's shape; the path's audit record has no field for it.
    reason: String,
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8], example: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "the body must be JSON like {example}: {e} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// `POST /api/v1/tags/{path}/write` and `POST /api/v1/tags/{path}/select`.
pub(crate) async fn post_tag(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let (tag, action) = split_action(&path)?;
    let who = requester(&caller);
    let authorisation = verdict(&caller, tag.as_str());
    let c = &st.runtime.commands;
    match action {
        "write" => {
            let b: WriteBody = parse(&body, r#"{"value": 320, "reason": "33cl run"}"#)?;
            let value = match b.value {
                Some(ValueIn(Value::Null)) | None => {
                    return Err(bad(
                        "the body has no \"value\": the value to write, e.g. {\"value\": 320, \"reason\": \"33cl run\"}".to_owned(),
                    ))
                }
                Some(ValueIn(v)) => v,
            };
            if let (Some(id), Some(session)) = (b.select, &who.session) {
                if !c.is_selection(&tag, session, CommandId(id)) {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "select_mismatch",
                        format!(
                            "write to {tag} refused: select-before-operate: selection {id} is not this session's selection of the tag; select it again"
                        ),
                    ));
                }
            }
            let r = c
                .submit(CommandRequest {
                    tag,
                    info: None,
                    value,
                    requester: who,
                    authorisation,
                    reason: b.reason,
                    origin: Origin::Rest,
                })
                .await;
            outcome(&r)
        }
        "select" => {
            let b: SelectBody = parse(&body, r#"{"value": 4, "reason": "recipe change"}"#)?;
            let t = c
                .select(CommandRequest {
                    tag,
                    info: None,
                    value: b.value.map_or(Value::Null, |v| v.0),
                    requester: who,
                    authorisation,
                    reason: b.reason,
                    origin: Origin::Rest,
                })
                .map_err(|r| refused(&r))?;
            Ok(Json(json!({ "selection": selection_json(&t) })).into_response())
        }
        _ => Err(not_an_action(&path)),
    }
}

fn selection_json(t: &SelectToken) -> serde_json::Value {
    json!({
        "id": t.id.0,
        "tag": t.tag.as_str(),
        "session": t.session,
        "value": t.value.as_ref().map_or(serde_json::Value::Null, value_json),
        "expires": t.expires_at.to_rfc3339(),
    })
}

/// `DELETE /api/v1/tags/{path}/select`.
pub(crate) async fn delete_tag(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<String>,
) -> Result<Response, ApiError> {
    let (tag, action) = split_action(&path)?;
    if action != "select" {
        return Err(not_an_action(&path));
    }
    caller.require_write(tag.as_str())?;
    let held = st
        .runtime
        .commands
        .cancel_select(&tag, &requester(&caller), Origin::Rest);
    Ok(Json(json!({ "cancelled": held })).into_response())
}

/// `GET /api/v1/commands`.
pub(crate) async fn list(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ReadTags)?;
    let pending: Vec<serde_json::Value> = st
        .runtime
        .commands
        .pending()
        .iter()
        .filter(|p| caller.access.can_read(p.tag.as_str()))
        .map(pending_json)
        .collect();
    Ok(Json(json!({ "pending": pending })).into_response())
}

/// `POST /api/v1/commands/{id}/confirm` and `…/reject`.
pub(crate) async fn decide(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((id, action)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let _: DecisionBody = parse(&body, r#"{"reason": "checked on site"}"#)?;
    let id = id.parse::<u64>().map(CommandId).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_pending",
            format!("{id:?} is not a command id (the number of a pending command, GET /api/v1/commands)"),
        )
    })?;
    let c = &st.runtime.commands;
    let tag = c.pending().into_iter().find(|p| p.id == id).map(|p| p.tag);
    let authorisation = match &tag {
        Some(t) => verdict(&caller, t.as_str()),
        // Unknown to the path: it answers unknown_pending.
        None => Authorisation::Allowed,
    };
    let who = requester(&caller);
    match action.as_str() {
        "confirm" => outcome(&c.confirm(id, &who, &authorisation).await),
        "reject" => {
            let r = c
                .reject(id, &who, &authorisation)
                .map_err(|r| refused(&r))?;
            Ok(Json(json!({"command": {
                "id": id.0, "tag": r.tag.as_str(), "result": "rejected", "message": r.to_string(),
            }}))
            .into_response())
        }
        other => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no command operation {other:?}; use confirm or reject"),
        )),
    }
}

fn seconds(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// `GET /api/v1/commands/points`: every writable tag the caller may read, with its current
/// value (the tag's JSON) and what a write to it is subject to: the operating envelope, each
/// interlock's state now (with the values it depends on), select-before-operate, the
/// two-person rule, and whether this caller may write it at all. What the HMI shows before
/// anyone operates.
pub(crate) async fn points(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ReadTags)?;
    let rt = &st.runtime;
    let metas: Vec<ironplant_core::TagMeta> = rt
        .namespace
        .read()
        .tags()
        .filter(|m| m.writable && caller.access.can_read(m.path.as_str()))
        .cloned()
        .collect();
    let now = ironplant_core::Timestamp::now();
    let mut out = Vec::with_capacity(metas.len());
    for meta in &metas {
        let sample = rt.bus.current(meta.id);
        let mut point =
            serde_json::to_value(ironplant_core::wire::TagJson::new(meta, sample.as_ref()))
                .unwrap_or_else(|_| json!({}));
        let (policy, interlocks) = rt.commands.point(&meta.path, now);
        let e = &policy.envelope;
        let extra = json!({
            "envelope": {
                "min": e.min,
                "max": e.max,
                "max_step": e.max_step,
                "max_rate": e.max_rate,
                "min_interval": e.min_interval.map(seconds),
            },
            "interlocks": interlocks.iter().map(|i| json!({
                "name": i.name,
                "state": match i.state {
                    ironplant_control::command::InterlockState::Holds => "holds",
                    ironplant_control::command::InterlockState::Violated => "violated",
                    ironplant_control::command::InterlockState::BadInput => "bad_input",
                },
                "detail": i.detail,
            })).collect::<Vec<_>>(),
            "select_before_operate": policy.select_before_operate.map(seconds),
            "two_person": policy.two_person.as_ref().map(|t| json!({
                "role": t.role.to_string(),
                "timeout": seconds(t.timeout),
            })),
            "can_write": matches!(verdict(&caller, meta.path.as_str()), Authorisation::Allowed),
        });
        if let (Some(p), serde_json::Value::Object(x)) = (point.as_object_mut(), extra) {
            p.extend(x);
        }
        out.push(point);
    }
    Ok(Json(json!({ "points": out })).into_response())
}
