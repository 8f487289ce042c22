//! The alarm endpoints (ISA-18.2, `ironplant_runtime::alarms`):
//!
//! - `GET /api/v1/alarms[?all=true]`: the alarm summary (active alarms by priority, newest
//!   first), or every configured alarm with its state. Needs read_tags; an alarm is listed only
//!   if the caller may read its tag.
//! - `GET /api/v1/alarms/kpi?from=&to=`: the ISA-18.2 performance report (default: the last
//!   24 hours). Needs read_tags, and reads not limited by scopes (it counts every alarm).
//! - `POST /api/v1/alarms/{id}/{operation}` with `{"comment": "...", "duration": "2h"}`:
//!   `ack`, `shelve` (with `duration`), `unshelve` and `reset` (a latched alarm) need
//!   ack_alarms; `remove` and `return` (out of service, a maintenance decision) need
//!   change_config. All need the alarm's tag readable, a comment, and are done as the caller's
//!   user (the transition event names them).
//!
//! Times are RFC 3339 strings, values in the one wire format.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ironplant_control::alarm::{AlarmError, AlarmView};
use ironplant_core::wire::ValueJson;
use ironplant_core::Timestamp;
use ironplant_runtime::alarms::{Alarms, Operation};
use ironplant_security::Permission;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::history::parse_time;
use crate::{ApiError, ApiState, JsonBody};

/// One alarm as the API shows it.
#[derive(Serialize)]
pub struct AlarmJson<'a> {
    id: &'a str,
    tag: &'a str,
    kind: &'a str,
    state: &'a str,
    priority: u8,
    message: &'a str,
    consequence: &'a str,
    response: &'a str,
    class: &'a str,
    value: ValueJson<'a>,
    limit: Option<f64>,
    condition: bool,
    acknowledged: bool,
    since: String,
    active_since: Option<String>,
    shelved_until: Option<String>,
    shelved_by: Option<&'a str>,
    out_of_service_by: Option<&'a str>,
    comment: Option<&'a str>,
    latching: bool,
}

fn ts(us: i64) -> String {
    Timestamp(us).to_rfc3339()
}

impl<'a> AlarmJson<'a> {
    pub fn new(v: &'a AlarmView) -> AlarmJson<'a> {
        AlarmJson {
            id: &v.id,
            tag: &v.tag,
            kind: v.kind,
            state: v.state,
            priority: v.priority,
            message: &v.message,
            consequence: &v.consequence,
            response: &v.response,
            class: &v.class,
            value: ValueJson(v.value.as_ref()),
            limit: v.limit,
            condition: v.condition,
            acknowledged: v.acknowledged,
            since: ts(v.since),
            active_since: v.active_since.map(ts),
            shelved_until: v.shelved_until.map(ts),
            shelved_by: v.shelved_by.as_deref(),
            out_of_service_by: v.out_of_service_by.as_deref(),
            comment: v.comment.as_deref(),
            latching: v.latching,
        }
    }
}

/// Replaces the µs timestamps at `keys` of `v` by RFC 3339 strings.
fn rfc3339(v: &mut serde_json::Value, keys: &[&str]) {
    for k in keys {
        if let Some(us) = v.get(*k).and_then(serde_json::Value::as_i64) {
            v[*k] = serde_json::Value::String(ts(us));
        }
    }
}

fn bad(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn alarms(st: &ApiState) -> Result<Arc<Alarms>, ApiError> {
    st.runtime.alarms.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_alarms",
            "this platform has no alarms configured; add [[alarm]] sections to the config (see docs/alarms.md)",
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    all: Option<bool>,
}

/// `GET /api/v1/alarms`.
pub(crate) async fn list(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    p: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ReadTags)?;
    let Query(p) = p.map_err(|e| bad(format!("cannot read the query string: {e}")))?;
    let a = alarms(&st)?;
    let views = if p.all.unwrap_or(false) {
        a.all()
    } else {
        a.active()
    };
    let shown: Vec<AlarmJson<'_>> = views
        .iter()
        .filter(|v| caller.access.can_read(&v.tag))
        .map(AlarmJson::new)
        .collect();
    Ok(Json(serde_json::json!({ "alarms": shown })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KpiParams {
    from: Option<String>,
    to: Option<String>,
}

/// `GET /api/v1/alarms/kpi`.
pub(crate) async fn kpi(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    p: Result<Query<KpiParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ReadTags)?;
    if !caller.access.reads_unlimited() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the alarm performance report counts every alarm of the site; your reads are limited to some tag prefixes",
        ));
    }
    let Query(p) = p.map_err(|e| bad(format!("cannot read the query string: {e}")))?;
    let now = Timestamp::now();
    let time = |name: &str, v: &Option<String>, default: Timestamp| match v {
        None => Ok(default),
        Some(v) => parse_time(v, now).map_err(|e| bad(format!("{name}={v:?}: {e}"))),
    };
    let from = time("from", &p.from, Timestamp(now.0 - 86_400_000_000))?;
    let to = time("to", &p.to, now)?;
    if from >= to {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_range",
            format!("from {from} is not before to {to}"),
        ));
    }
    // The report reads the event store: off the async workers.
    let a = alarms(&st)?;
    let report = tokio::task::spawn_blocking(move || a.kpi(from, to))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the alarm report failed: {e}"),
            )
        })?;
    let mut v = serde_json::to_value(&report).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot render the report: {e}"),
        )
    })?;
    // Times in the one wire format (RFC 3339), like every other answer.
    rfc3339(&mut v, &["from", "to"]);
    for f in v["floods"].as_array_mut().into_iter().flatten() {
        rfc3339(f, &["start", "end"]);
    }
    for s in v["standing"].as_array_mut().into_iter().flatten() {
        rfc3339(s, &["active_since"]);
    }
    Ok(Json(v).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OperationBody {
    comment: Option<String>,
    duration: Option<String>,
}

/// `POST /api/v1/alarms/{id}/{operation}`.
pub(crate) async fn operate(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((id, operation)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let body: OperationBody = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "the body must be JSON like {{\"comment\": \"why\", \"duration\": \"2h\"}} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let (op, needs) = match operation.as_str() {
        "ack" => (Operation::Ack, Permission::AckAlarms),
        "shelve" => {
            let d = body.duration.as_deref().ok_or_else(|| {
                bad("shelve needs a duration, e.g. {\"duration\": \"2h\", \"comment\": \"sensor replaced\"}".into())
            })?;
            let d = humantime::parse_duration(d)
                .map_err(|e| bad(format!("duration {d:?}: {e}; e.g. 30m, 2h")))?;
            (Operation::Shelve(d), Permission::AckAlarms)
        }
        "unshelve" => (Operation::Unshelve, Permission::AckAlarms),
        "reset" => (Operation::Reset, Permission::AckAlarms),
        "remove" => (Operation::RemoveFromService, Permission::ChangeConfig),
        "return" => (Operation::ReturnToService, Permission::ChangeConfig),
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                "no alarm operation {other:?}; use ack, shelve, unshelve, reset, remove or return"
            ),
            ))
        }
    };
    caller.require(needs)?;
    let a = alarms(&st)?;
    let view = a
        .get(&id)
        .ok_or_else(|| alarm_error(AlarmError::UnknownAlarm(id.clone())))?;
    caller.require_read(&view.tag)?;
    let user = caller.user().unwrap_or("api").to_owned();
    let comment = body.comment.unwrap_or_default();
    a.operate(&id, &op, &user, &comment).map_err(alarm_error)?;
    let after = a
        .get(&id)
        .ok_or_else(|| alarm_error(AlarmError::UnknownAlarm(id.clone())))?;
    Ok(Json(serde_json::json!({ "alarm": AlarmJson::new(&after) })).into_response())
}

fn alarm_error(e: AlarmError) -> ApiError {
    match e {
        AlarmError::UnknownAlarm(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "alarm_not_found", e.to_string())
        }
        AlarmError::MissingUser { .. }
        | AlarmError::MissingComment { .. }
        | AlarmError::ShelveTooLong { .. }
        | AlarmError::ShelveZero => bad(e.to_string()),
        _ => ApiError::new(StatusCode::CONFLICT, "alarm_state", e.to_string()),
    }
}
